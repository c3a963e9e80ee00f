"""A fake Anthropic Messages API on 127.0.0.1 for the real-``claude`` conformance tier.

Serves ``POST /v1/messages`` as a server-sent-event stream and records every request.
What it answers is decided by words in the newest user text of the conversation:

  (default)        "echo: <text> | turns=<number of user messages in the request>"
  readfile:<path>  a ``Read`` tool call for <path>; after the tool result arrives,
                   "tool said: <first line of the result>"
  readattached     the same for the file an "[Attached file saved at <path>]" note names
  writefile:<path> a ``Write`` tool call creating <path> (asks permission in default mode)
  bash:<command>   a ``Bash`` tool call running <command> (``+`` stands for a space: paths may hold ``_``)
  bgbash:<command> the same with ``run_in_background``: Claude Code runs it on and, when it
                   ends, starts a turn of its own that no user message began, answered
                   "follow-up: <the notification's summary>"
  webfetch:<url>   a ``WebFetch`` call for <url> (prompt "summarise"); after the tool result
                   arrives, "tool said: <first line of the result>"
  askq:<q>         an ``AskUserQuestion`` call: question <q> (``+`` for spaces), options
                   "Red" and "Blue"; ``askmulti:<q>`` the same, multi-select
  planexit         an ``ExitPlanMode`` call with a short plan
  slow:<seconds>   text streamed in small pieces over that many seconds
  http400          an HTTP 400 invalid_request_error

Requests that are not conversation turns (Claude Code's own side requests, recognisable
by having no such words) get the default echo too; tests look at ``turn_requests``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _user_texts(body: dict[str, Any]) -> list[str]:
    texts = []
    for msg in body.get("messages", []):
        if msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        for block in content or []:
            if block.get("type") == "text" and not block.get("text", "").startswith("<system-reminder>"):
                texts.append(block["text"])
    return texts


def _last_tool_result(body: dict[str, Any]) -> str | None:
    # the newest user message (Claude Code may put a system note after it, e.g. on leaving plan mode)
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    if not users:
        return None
    content = users[-1].get("content")
    if not isinstance(content, list):
        return None
    for block in content:
        if block.get("type") == "tool_result":
            inner = block.get("content")
            if isinstance(inner, list):
                inner = "\n".join(b.get("text", "") for b in inner if isinstance(b, dict))
            return str(inner)
    return None


class FakeAnthropic:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                self.do_HEAD()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                with server._lock:
                    server.requests.append({"path": self.path, "body": body})
                if not self.path.startswith("/v1/messages"):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                server._answer(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> FakeAnthropic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # recorded traffic ---------------------------------------------------------------

    def turn_requests(self) -> list[dict[str, Any]]:
        """Requests that carry the conversation (they have tools and messages)."""
        with self._lock:
            return [r["body"] for r in self.requests if r["body"].get("tools") and r["body"].get("messages")]

    def wait_requests(self, n: int, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reqs = self.turn_requests()
            if len(reqs) >= n:
                return reqs
            time.sleep(0.05)
        raise AssertionError(f"fake API saw {len(self.turn_requests())} turn requests, expected {n}")

    # answers ------------------------------------------------------------------------

    def _answer(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        texts = _user_texts(body)
        last = texts[-1] if texts else ""
        model = body.get("model", "unknown")
        tool_result = _last_tool_result(body)
        newest = body.get("messages", [])[-1:]
        content = newest[0].get("content") if newest else ""
        raw = content if isinstance(content, str) else "\n".join(
            b.get("text", "") for b in content or [] if isinstance(b, dict))
        notice = re.search(r"<task-notification>.*?<summary>(.*?)</summary>", raw, re.S)
        if notice:
            # Claude Code's own turn after a background task ended (no user message began it)
            self._stream(handler, model, text=f"follow-up: {notice.group(1)}")
            return
        if "http400" in last and tool_result is None:
            payload = json.dumps({"type": "error", "error": {"type": "invalid_request_error",
                                                             "message": "fake: bad request"}}).encode()
            handler.send_response(400)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            return
        read = re.search(r"readfile:(\S+)", last) or (
            re.search(r"\[Attached file saved at (.+?)\]", last) if "readattached" in last else None)
        if read and tool_result is None:
            self._stream(handler, model, tool=("Read", {"file_path": read.group(1)}))
            return
        write = re.search(r"writefile:(\S+)", last)
        if write and tool_result is None:
            self._stream(handler, model, tool=("Write", {"file_path": write.group(1),
                                                         "content": "written by claude\n"}))
            return
        fetch = re.search(r"webfetch:(\S+)", last)
        if fetch and tool_result is None:
            self._stream(handler, model, tool=("WebFetch", {"url": fetch.group(1), "prompt": "summarise"}))
            return
        background = re.search(r"bgbash:(\S+)", last)
        if background and tool_result is None:
            self._stream(handler, model, tool=("Bash", {"command": background.group(1).replace("+", " "),
                                                        "description": "run in the background",
                                                        "run_in_background": True}))
            return
        bash = re.search(r"(?<!bg)bash:(\S+)", last)
        if bash and tool_result is None:
            self._stream(handler, model, tool=("Bash", {"command": bash.group(1).replace("+", " "),
                                                        "description": "run a command"}))
            return
        ask = re.search(r"ask(q|multi):(\S+)", last)
        if ask and tool_result is None:
            question = ask.group(2).replace("+", " ")
            self._stream(handler, model, tool=("AskUserQuestion", {"questions": [{
                "question": question, "header": "Colour", "multiSelect": ask.group(1) == "multi",
                "options": [{"label": "Red", "description": "warm"}, {"label": "Blue", "description": "cool"}]}]}))
            return
        if "planexit" in last and tool_result is None:
            self._stream(handler, model, tool=("ExitPlanMode", {"plan": "1. Write hello.txt\n2. Done"}))
            return
        if tool_result is not None:
            first = tool_result.strip().splitlines()[0] if tool_result.strip() else ""
            self._stream(handler, model, text=f"tool said: {first}")
            return
        slow = re.search(r"slow:(\d+(?:\.\d+)?)", last)
        text = f"echo: {last} | turns={len(texts)} | model={model}"  # Markdown in `last` stays Markdown
        self._stream(handler, model, text=text, duration=float(slow.group(1)) if slow else 0.0)

    def _stream(self, handler: BaseHTTPRequestHandler, model: str, text: str = "",
                tool: tuple[str, dict[str, Any]] | None = None, duration: float = 0.0) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Connection", "close")
        handler.end_headers()

        def event(name: str, data: dict[str, Any]) -> None:
            handler.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
            handler.wfile.flush()

        try:
            event("message_start", {"type": "message_start", "message": {
                "id": f"msg_{time.monotonic_ns()}", "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": 10, "output_tokens": 1}}})
            if tool is not None:
                name, tool_input = tool
                event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
                    "type": "tool_use", "id": f"toolu_{time.monotonic_ns()}", "name": name, "input": {}}})
                event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                    "type": "input_json_delta", "partial_json": json.dumps(tool_input)}})
                event("content_block_stop", {"type": "content_block_stop", "index": 0})
                stop = "tool_use"
            else:
                event("content_block_start", {"type": "content_block_start", "index": 0,
                                              "content_block": {"type": "text", "text": ""}})
                pieces = [text[i:i + 8] for i in range(0, len(text), 8)] or [""]
                if duration:
                    # stream slowly: the whole text after `duration` seconds
                    steps = max(1, int(duration / 0.1))
                    for _ in range(steps):
                        time.sleep(duration / steps)
                        event("ping", {"type": "ping"})
                for piece in pieces:
                    event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                  "delta": {"type": "text_delta", "text": piece}})
                event("content_block_stop", {"type": "content_block_stop", "index": 0})
                stop = "end_turn"
            event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                    "usage": {"output_tokens": 5}})
            event("message_stop", {"type": "message_stop"})
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (e.g. an interrupt)


if __name__ == "__main__":  # manual use: python tests/fake_anthropic.py
    api = FakeAnthropic().start()
    print(api.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        api.stop()
