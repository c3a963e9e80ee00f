#!/usr/bin/env python3
"""A fake ``claude`` speaking the stream-json protocol, for the fast test tier.

It keeps a per-session history file (like Claude's ``.jsonl``) under ``$HOME`` so resume
is real: ``--resume`` of an unknown id fails the way the real CLI does. What a turn does
is chosen by words in the user's text:

  sleep:N   wait N seconds before answering (an interrupt cuts it short)
  waitfile:P  answer only once the file P exists (a test decides when the turn ends)
  stream:N  with --include-partial-messages, write the answer's text deltas over N seconds
            (always written, at once without it, as stream_event lines before the answer)
  crash     exit with status 3 in the middle of the turn
  hugeline  write the turn's result as one stdout line over 64 MiB
  badlines  write malformed lines (not JSON, cut short, fields of the wrong shape) before
            the answer
  badresult end the turn with a result whose every field has the wrong type
  refused   a turn whose result lists a Bash call refused by Claude Code's own rules
            (``permission_denials``), as in a mode that does not ask
  bigline:N an answer of N MiB in one line (under the keeper's limit)
  flood:N   N MiB of stream_event lines the keeper ignores, before the answer
  tool      a tool_use + tool_result before the answer
  apierror  an HTTP 400 from the API, as the CLI reports it: an assistant text "API Error: …"
            then a result with is_error and the same text
  long:N    an answer of about N characters, with a fenced code block
  tools:N   N tool calls in a row before the answer
  burst:N   N short assistant messages written at once before the answer
  stuck:P   a Bash tool call (``curl …``) that hangs without output or CPU until the file P
            exists (then its result and the answer); an interrupt ends it ("aborted_tools")
  busy:P    the same, but the tool call burns CPU meanwhile (``pytest -q``): a long test run
  sendfile:NAME  write NAME into the outbox its --append-system-prompt names (as Claude
            sends the user a file)
  needperm  ask for permission to run Bash ``touch x`` (needs --permission-prompt-tool
            stdio; not asked if --allowedTools has a rule for it) and answer "permission:
            allow", "permission: allow always <rules>" (updatedPermissions),
            "permission: allowed by rule" or "permission: deny (<message>)"; an interrupt
            while it waits ends the turn with terminal_reason "aborted_tools"
  needtool:T  ask for permission to use T (Bash, Write or Edit) with a big input
            (TOOL_INPUTS: a 5000-character command, a 40-line file, a two-line edit) and
            answer "permission: allow" or "permission: deny"
  neededit:P  ask for permission to Edit the file P (relative to its directory) unless an
            ``Edit(//<dir>/**)`` rule holds it (then "permission: allowed by rule"); answer
            as needperm does
  askq      AskUserQuestion "Pick a colour" (Red / Blue) and answer "answers: <json>"
  askmulti  AskUserQuestion with two questions, the second multi-select
  planexit  ExitPlanMode (the request's input is empty, the plan is in the tool call, as
            the CLI does) and answer "plan: approved, mode <mode>" or "plan: rejected (...)";
            with "planmd" the plan is written in Markdown (a heading, bold, code)
  joinpoint:P  a model request in the middle of the turn, once the file P exists: messages
            written meanwhile join this turn (echoed, with --replay-user-messages, and
            answered in it: " | steered: <text>"), as the CLI does after a tool result;
            messages written after it wait for the next turn. Without it, a message written
            during a turn is the next turn. With --replay-user-messages every user message
            is echoed (``isReplay``, the ``uuid`` it was written with) when it is taken
  bgtask:P  after the answer, once the file P exists, a turn of Claude's own that no message
            began (as the CLI does when a background task ends): "follow-up: …"
  showfiles  add what it was given: "[image <sha256 prefix>]" per image, and the content of
            each file named by an "[Attached file saved at P]" note, "[file NAME: content]"
            (read as Claude's Read tool would, during the turn)
  otherwise "echo: <text> (history: K earlier messages)"

Environment: FAKE_CLAUDE_IGNORE_SIGTERM=1 ignores SIGTERM; FAKE_CLAUDE_LOG=<file> gets
one JSON line per start ({event: "start", pid, argv, cwd}), one per user line read from
stdin ({event: "inbox", pid, text}), and one per user message taken into the conversation
({event: "received", pid, text}, or "joined" for one taken mid-turn at a joinpoint;
written after the message is in the history file, so a test that sees it knows Claude
has the message). To make timing assumptions in tests fail
loudly, FAKE_CLAUDE_START_DELAY=<s> delays start-up (before stdin is read) and
FAKE_CLAUDE_LINE_DELAY=<s> delays every line written to stdout. FAKE_CLAUDE_DELTA_LOG=<file>
gets "<monotonic time> <session id> <characters of the answer written so far>" after each
text delta (scripts/bench measures how stale the bot's live answer is with it).

Started without ``-p`` it plays Claude Code's interactive terminal UI (``claudectl
attach``): each line read from its terminal (stdin) is a prompt, answered on stdout as
"● echo: <text> (history: K earlier messages)"; ``/exit`` or end of input ends it (exit
0). It keeps the history above and also writes the conversation as the real CLI does,
``$HOME/.claude/projects/<cwd>/<id>.jsonl`` (``user`` / ``assistant`` entries), and
``$HOME/.claude/sessions/<pid>.json`` while it runs.

Like the real CLI, ``total_cost_usd`` is cumulative for the conversation and carries on
across ``--resume`` (each turn costs $0.001); ``--max-budget-usd X`` ends the turn whose
cost, counted since this process started, passes X with ``error_max_budget_usd`` (and
every later one); ``--resume A --fork-session --session-id B`` continues a copy of A as B.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import re
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

out_lock = threading.Lock()
interrupted = threading.Event()
answers: dict[str, dict] = {}
answered = threading.Condition()


LINE_DELAY = float(os.environ.get("FAKE_CLAUDE_LINE_DELAY") or 0)
DELTA_LOG = os.environ.get("FAKE_CLAUDE_DELTA_LOG")
#: what ``needtool:<T>`` asks to run: inputs too big to show whole in a prompt
TOOL_INPUTS: dict[str, dict] = {
    "Bash": {"command": "echo " + "x" * 5000 + " && rm -rf build"},
    "Write": {"file_path": "/tmp/notes.txt", "content": "".join(f"line {i}\n" for i in range(1, 41))},
    "Edit": {"file_path": "/tmp/app.py", "old_string": "def f():\n    return 1\n",
             "new_string": "def f():\n    return 2\n"},
}


#: what "badlines" writes: not JSON, cut short, not an object, and objects of every
#: type with fields of the wrong shape
MALFORMED_LINES = [
    "this is not JSON", '{"type": "assistant", "message": {"content": [', "\x00\x01\x02", "[1, 2, 3]", "null",
    '"a string"', "1e999999", '{"type": 5}', '{"type": ["assistant"]}', '{"type": "assistant", "message": "x"}',
    '{"type": "assistant", "message": {"content": "x"}}', '{"type": "assistant", "message": {"content": [5, null]}}',
    '{"type": "assistant", "message": {"content": [{"type": "tool_use", "id": 5, "input": "x"}]}}',
    '{"type": "user", "message": "x"}', '{"type": "user", "message": {"content": [{"type": "tool_result", "content": 5}]}}',
    '{"type": "system", "subtype": "init", "session_id": 5, "model": [], "permissionMode": []}',
    '{"type": "system", "permissionMode": {}}', '{"type": "stream_event", "event": "x"}',
    '{"type": "stream_event", "event": {"type": "content_block_delta", "delta": {"type": "text_delta", "text": 5}}}',
    '{"type": "control_request", "request": "x"}', '{"type": "control_request", "request_id": 5, "request": {}}',
    '{"type": "control_request", "request_id": "r", "request": {"subtype": "can_use_tool", "tool_name": 5,'
    ' "input": "x", "permission_suggestions": "x"}}',
    '{"type": "control_response", "response": "x"}',
]


def emit(obj: dict) -> None:
    emit_line(json.dumps(obj) + "\n")


def emit_line(line: str) -> None:
    """Write one line already built (``emit`` builds it from an object)."""
    with out_lock:
        if LINE_DELAY:
            time.sleep(LINE_DELAY)
        sys.stdout.write(line)
        sys.stdout.flush()


def log_event(**fields: object) -> None:
    if os.environ.get("FAKE_CLAUDE_LOG"):
        with open(os.environ["FAKE_CLAUDE_LOG"], "a") as f:
            f.write(json.dumps({"pid": os.getpid(), **fields}) + "\n")


def arg(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def history_path(session_id: str) -> Path:
    project = re.sub(r"[^A-Za-z0-9]", "-", os.getcwd())
    return Path(os.environ["HOME"]) / ".fake-claude" / "projects" / project / f"{session_id}.jsonl"


def text_of(content: object) -> tuple[str, int]:
    if isinstance(content, str):
        return content, 0
    texts, images = [], 0
    for block in content or []:
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "image":
            images += 1
    return "\n".join(texts), images


def main() -> int:
    argv = sys.argv[1:]
    if os.environ.get("FAKE_CLAUDE_IGNORE_SIGTERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log_event(event="start", argv=argv, cwd=os.getcwd())
    if os.environ.get("FAKE_CLAUDE_START_DELAY"):
        time.sleep(float(os.environ["FAKE_CLAUDE_START_DELAY"]))
    model = arg(argv, "--model") or "fake-default-model"
    mode = arg(argv, "--permission-mode") or "default"
    rules: list[str] = []
    if "--allowedTools" in argv:  # variadic, as in the CLI: up to the next option
        for word in argv[argv.index("--allowedTools") + 1:]:
            if word.startswith("--"):
                break
            rules.append(word)
    resume = arg(argv, "--resume")
    session_id = resume or arg(argv, "--session-id") or str(uuid.uuid4())
    if resume and "--fork-session" in argv:  # a copy of the conversation under a new id
        session_id = arg(argv, "--session-id") or str(uuid.uuid4())
        source = history_path(resume)
        if source.exists():
            history_path(session_id).write_text(source.read_text())
            if source.with_suffix(".cost").exists():
                history_path(session_id).with_suffix(".cost").write_text(source.with_suffix(".cost").read_text())
    hist = history_path(session_id)
    if resume and not hist.exists():
        sys.stderr.write(f"No conversation found with session ID: {resume}\n")
        emit({"type": "result", "subtype": "error_during_execution", "is_error": True,
              "result": "", "session_id": resume, "total_cost_usd": 0, "duration_ms": 0,
              "num_turns": 0})
        return 1
    if not resume and hist.exists():
        sys.stderr.write(f"Error: Session ID {session_id} is already in use.\n")
        return 1
    hist.parent.mkdir(parents=True, exist_ok=True)
    if "-p" not in argv:
        return terminal_ui(session_id, hist)
    # as the real CLI does in print mode too: which conversation this process has open
    marker = Path(os.environ["HOME"]) / ".claude" / "sessions" / f"{os.getpid()}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"pid": os.getpid(), "sessionId": session_id, "cwd": os.getcwd(), "kind": "print"}))
    try:
        return serve(argv, session_id, hist, model, mode, rules, resume)
    finally:
        marker.unlink(missing_ok=True)


def serve(argv: list[str], session_id: str, hist: Path, model: str, mode: str, rules: list[str],
          resume: str | None) -> int:
    """Print mode: one turn per user line read."""
    inbox: queue.Queue[dict | None] = queue.Queue()

    def reader() -> None:
        for line in sys.stdin:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("type") == "control_request":
                sub = msg.get("request", {}).get("subtype")
                if sub == "interrupt":
                    interrupted.set()
                emit({"type": "control_response", "response": {
                    "subtype": "success", "request_id": msg.get("request_id"), "response": {}}})
            elif msg.get("type") == "control_response":
                response = msg.get("response", {})
                with answered:
                    answers[response.get("request_id")] = response.get("response", {})
                    answered.notify_all()
            elif msg.get("type") == "user":
                # read (a test that sees this knows a message written mid-turn is here)
                log_event(event="inbox", text=text_of(msg["message"]["content"])[0])
                inbox.put(msg)
        inbox.put(None)

    threading.Thread(target=reader, daemon=True).start()
    budget = arg(argv, "--max-budget-usd")
    spent_here = 0.0  # (what --max-budget-usd counts: this process's turns)
    cost_file = hist.with_suffix(".cost")
    cost = float(cost_file.read_text()) if resume and cost_file.exists() else 0.0
    turns = 0
    while True:
        msg = inbox.get()
        if msg is None:
            return 0
        interrupted.clear()
        started = time.monotonic()
        text, images = text_of(msg["message"]["content"])
        earlier = len(hist.read_text().splitlines()) if hist.exists() else 0
        with hist.open("a") as f:
            f.write(json.dumps({"role": "user", "text": text}) + "\n")
        log_event(event="received", text=text)
        emit({"type": "system", "subtype": "init", "session_id": session_id, "model": model,
              "cwd": os.getcwd(), "tools": ["Bash", "Read", "AskUserQuestion", "ExitPlanMode"],
              "permissionMode": mode})
        replay = "--replay-user-messages" in argv
        if replay:
            emit({**msg, "isReplay": True})
        joined: list[str] = []
        join_gate = re.search(r"joinpoint:(\S+)", text)
        if join_gate:  # the model request after a tool: what was written meanwhile joins the turn
            while not os.path.exists(join_gate.group(1)) and not interrupted.wait(0.05):
                pass
            while True:
                try:
                    steered = inbox.get_nowait()
                except queue.Empty:
                    break
                if steered is None:
                    inbox.put(None)
                    break
                if replay:
                    emit({**steered, "isReplay": True})
                joined.append(text_of(steered["message"]["content"])[0])
                with hist.open("a") as f:
                    f.write(json.dumps({"role": "user", "text": joined[-1]}) + "\n")
                log_event(event="joined", text=joined[-1])
        turns += 1
        cost += 0.001
        # atomically: a kill -9 mid-write must not leave an empty file (as the CLI's own
        # session files survive one)
        cost_file.with_suffix(".tmp").write_text(repr(cost))
        os.replace(cost_file.with_suffix(".tmp"), cost_file)
        spent_here += 0.001

        def result(subtype: str, is_error: bool, answer: str, **extra: object) -> None:
            emit({"type": "result", "subtype": subtype, "is_error": is_error, "result": answer,
                  "session_id": session_id, "total_cost_usd": round(cost, 6),
                  "duration_ms": int((time.monotonic() - started) * 1000), "num_turns": turns,
                  **extra})

        if budget is not None and spent_here > float(budget) + 1e-9:
            result("error_max_budget_usd", True, "", errors=[f"Reached maximum budget (${budget})"],
                   terminal_reason="budget_exhausted")
            continue

        sleep = re.search(r"sleep:(\d+(?:\.\d+)?)", text)
        if sleep and interrupted.wait(float(sleep.group(1))):
            emit({"type": "user", "message": {"role": "user", "content": [
                {"type": "text", "text": "[Request interrupted by user]"}]}})
            result("error_during_execution", True, "", terminal_reason="aborted_streaming")
            continue
        gate = re.search(r"waitfile:(\S+)", text)
        if gate:
            while not os.path.exists(gate.group(1)) and not interrupted.wait(0.05):
                pass
        if "hugeline" in text:  # one stdout line over the keeper's 64 MiB limit, then the result
            with out_lock:
                sys.stdout.write('{"type": "result", "subtype": "success", "is_error": false, "result": "')
                chunk = "x" * (1 << 20)
                for _ in range(65):
                    sys.stdout.write(chunk)
                sys.stdout.write('"}\n')
                sys.stdout.flush()
            while not interrupted.wait(1):  # the keeper should stop us now
                pass
            continue
        if "badlines" in text:  # lines no Claude should write, before a normal answer
            with out_lock:
                sys.stdout.write("".join(line + "\n" for line in MALFORMED_LINES))
                sys.stdout.flush()
        if "badresult" in text:  # the turn's result with every field of the wrong type
            emit({"type": "result", "subtype": 5, "is_error": "no", "result": {"not": "text"},
                  "total_cost_usd": "free", "duration_ms": [1], "num_turns": "three", "session_id": 7,
                  "terminal_reason": {}, "errors": 42, "permission_denials": "none", "api_error_status": "x"})
            continue
        if "refused" in text:
            result("success", False, "I could not run that.", terminal_reason="completed",
                   permission_denials=[{"tool_name": "Bash", "tool_use_id": "toolu_r",
                                        "tool_input": {"command": "rm -rf /"}}])
            continue
        big = re.search(r"bigline:(\d+)", text)
        if big:
            answer = "y" * (int(big.group(1)) << 20)
            say_big = {"type": "assistant", "message": {"role": "assistant", "content": [
                {"type": "text", "text": answer}]}}
            emit(say_big)
            result("success", False, answer)
            continue
        flood = re.search(r"flood:(\d+)", text)
        if flood:
            ping = json.dumps({"type": "stream_event", "event": {"type": "ping", "pad": "z" * 4000}}) + "\n"
            with out_lock:
                for _ in range((int(flood.group(1)) << 20) // len(ping)):
                    sys.stdout.write(ping)
                sys.stdout.flush()
        if "crash" in text:
            sys.stderr.write("fake claude: crashing as asked\n")
            sys.stderr.flush()
            os._exit(3)
        if "apierror" in text:  # as the CLI does: the error as an answer too, then the result
            emit({"type": "assistant", "message": {"model": "<synthetic>", "role": "assistant", "content": [
                {"type": "text", "text": "API Error: 400 invalid_request_error"}]},
                  "is_api_error_message": True, "api_error_status": 400})
            result("success", True, "API Error: 400 invalid_request_error",
                   terminal_reason="api_error", api_error_status=400)
            continue
        outbox = re.search(r"into (\S+/outbox)\b", arg(argv, "--append-system-prompt") or "")
        for sendfile in re.findall(r"sendfile:(\S+)", text):
            if outbox:  # as Claude would, if its appended system prompt names an outbox
                Path(outbox.group(1)).mkdir(parents=True, exist_ok=True)
                Path(outbox.group(1), sendfile).write_bytes(f"file {sendfile}\n".encode())
        if re.search(r"\btool\b", text):
            emit({"type": "assistant", "message": {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls -la"}}]}})
            emit({"type": "user", "message": {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "file-a\nfile-b"}]}})
        hang = re.search(r"\b(stuck|busy):(\S+)", text)
        if hang:  # a tool call that writes nothing for a while: hung (no CPU) or busy (CPU)
            burn = hang.group(1) == "busy"
            command = "pytest -q" if burn else "curl https://example.invalid/slow"
            emit({"type": "assistant", "message": {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_h", "name": "Bash", "input": {"command": command}}]}})
            while not os.path.exists(hang.group(2)) and not interrupted.is_set():
                if burn:
                    spin_until = time.monotonic() + 0.05
                    while time.monotonic() < spin_until:
                        pass
                else:
                    interrupted.wait(0.2)
            if interrupted.is_set():
                result("error_during_execution", True, "", terminal_reason="aborted_tools")
                continue
            emit({"type": "user", "message": {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_h", "content": "done"}]}})
        burst = re.search(r"burst:(\d+)", text)
        if burst:
            lines = [json.dumps({"type": "assistant", "message": {"role": "assistant", "content": [
                {"type": "text", "text": f"b{i}"}]}}) for i in range(int(burst.group(1)))]
            with out_lock:
                sys.stdout.write("\n".join(lines) + "\n")
                sys.stdout.flush()
        many = re.search(r"tools:(\d+)", text)
        aborted = False
        for i in range(int(many.group(1)) if many else 0):
            if interrupted.is_set():  # as the CLI: an interrupt ends the turn between tools
                result("error_during_execution", True, "", terminal_reason="aborted_tools")
                aborted = True
                break
            emit({"type": "assistant", "message": {"role": "assistant", "content": [
                {"type": "tool_use", "id": f"toolu_m{i}", "name": "Read", "input": {"file_path": f"/tmp/f{i}"}}]}})
            emit({"type": "user", "message": {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": f"toolu_m{i}", "content": "ok"}]}})
        if aborted:
            continue

        def ask(tool: str, tool_input: dict, asked_input: dict, **extra: object) -> dict | None:
            """A can_use_tool request; the decision, or None after an interrupt (turn ended)."""
            request_id = f"perm-{uuid.uuid4()}"
            tool_use_id = f"toolu_{uuid.uuid4().hex[:8]}"
            emit({"type": "assistant", "message": {"role": "assistant", "content": [
                {"type": "tool_use", "id": tool_use_id, "name": tool, "input": tool_input}]}})
            emit({"type": "control_request", "request_id": request_id, "request": {
                "subtype": "can_use_tool", "tool_name": tool, "input": asked_input,
                "tool_use_id": tool_use_id, **extra}})
            with answered:
                while request_id not in answers and not interrupted.is_set():
                    answered.wait(0.1)
            if interrupted.is_set() and request_id not in answers:
                # what the real CLI does for an interrupt while a tool waits
                result("error_during_execution", True, "", terminal_reason="aborted_tools",
                       errors=["[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=tool_use"])
                return None
            return answers.pop(request_id)

        def say(answer: str) -> None:
            emit({"type": "assistant", "message": {"role": "assistant", "content": [
                {"type": "text", "text": answer}]}})
            result("success", False, answer)

        asked_tool = re.search(r"needtool:(\w+)", text)
        if asked_tool and asked_tool.group(1) in TOOL_INPUTS:
            tool_input = TOOL_INPUTS[asked_tool.group(1)]
            decision = ask(asked_tool.group(1), tool_input, tool_input)
            if decision is not None:
                say(f"permission: {decision.get('behavior')}")
            continue
        edit = re.search(r"neededit:(\S+)", text)
        if edit:
            path = os.path.normpath(os.path.join(os.getcwd(), edit.group(1)))
            held = [r for r in rules if r.startswith("Edit(//") and path.startswith(r[6:].removesuffix("/**)") + "/")]
            if held:
                say(f"permission: allowed by rule {held[0]}")
                continue
            edit_input = {"file_path": path, "old_string": "a", "new_string": "b"}
            decision = ask("Edit", edit_input, edit_input)
            if decision is None:
                continue
            for update in decision.get("updatedPermissions") or []:
                if update.get("type") == "addRules" and update.get("behavior") == "allow":
                    rules += [f"{r['toolName']}({r['ruleContent']})" for r in update["rules"] if r.get("ruleContent")]
            say(f"permission: {decision.get('behavior')}")
            continue
        if "needperm" in text:
            if "--permission-prompt-tool" not in argv:
                say("permission: not asked (no prompt tool)")
                continue
            if any(r in ("Bash", "Bash(touch x)", "Bash(touch:*)", "Bash(touch *)") for r in rules):
                say("permission: allowed by rule")
                continue
            suggestion = {"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "touch x"}],
                          "behavior": "allow", "destination": "localSettings"}
            decision = ask("Bash", {"command": "touch x"}, {"command": "touch x"},
                           permission_suggestions=[suggestion, {"type": "setMode", "mode": "acceptEdits",
                                                                "destination": "session"}])
            if decision is None:
                continue
            if decision.get("behavior") != "allow":
                say(f"permission: deny ({decision.get('message')})")
                continue
            for update in decision.get("updatedPermissions") or []:
                if update.get("type") == "addRules" and update.get("behavior") == "allow":
                    rules += [f"{r['toolName']}({r['ruleContent']})" if r.get("ruleContent") else r["toolName"]
                              for r in update["rules"]]
            always = [u for u in decision.get("updatedPermissions") or [] if u.get("type") == "addRules"]
            say("permission: allow" + (f" always {json.dumps(always, sort_keys=True)}" if always else ""))
            continue
        if "askq" in text or "askmulti" in text:
            questions = [{"question": "Pick a colour", "header": "Colour", "multiSelect": False, "options": [
                {"label": "Red", "description": "warm"}, {"label": "Blue", "description": "cool"}]}]
            if "askmulti" in text:
                questions.append({"question": "Which extras?", "header": "Extras", "multiSelect": True,
                                  "options": [{"label": "Tests", "description": ""},
                                              {"label": "Docs", "description": ""},
                                              {"label": "Bench", "description": ""}]})
            decision = ask("AskUserQuestion", {"questions": questions}, {"questions": questions},
                           requires_user_interaction=True)
            if decision is None:
                continue
            if decision.get("behavior") != "allow":
                say(f"answers: none ({decision.get('message')})")
                continue
            say("answers: " + json.dumps((decision.get("updatedInput") or {}).get("answers"), sort_keys=True))
            continue
        if "planexit" in text:
            plan = ("## Steps\n1. Write **hello.txt**\n2. Run `pytest -q`" if "planmd" in text
                    else "1. Write hello.txt\n2. Run the tests")
            decision = ask("ExitPlanMode", {"plan": plan}, {},
                           requires_user_interaction=True)
            if decision is None:
                continue
            if decision.get("behavior") != "allow":
                say(f"plan: rejected ({decision.get('message')})")
                continue
            mode = "default"
            for update in decision.get("updatedPermissions") or []:
                if update.get("type") == "setMode":
                    mode = update["mode"]
            emit({"type": "system", "subtype": "status", "permissionMode": mode, "session_id": session_id})
            say(f"plan: approved, mode {mode}")
            continue
        long = re.search(r"long:(\d+)", text)
        if long:
            size = int(long.group(1))
            para = "Some **bold** words and `code`. " * 4 + "\n\n"
            body = "```python\n" + "\n".join(f"x_{i} = {i}" for i in range(size // 40)) + "\n```\n\n"
            answer = (para * (size // (2 * len(para)) + 1))[: size // 2] + "\n\n" + body
        else:
            answer = f"echo: {text} (history: {earlier} earlier messages; model {model})"
            if joined:
                answer += " | steered: " + " / ".join(joined)
            if images:
                answer += f" [images: {images}]"
            if "showfiles" in text:
                for block in msg["message"]["content"] if isinstance(msg["message"]["content"], list) else []:
                    if block.get("type") == "image":
                        digest = hashlib.sha256(base64.b64decode(block["source"]["data"])).hexdigest()[:16]
                        answer += f" [image {digest}]"
                for path in re.findall(r"\[Attached file saved at (.+?)\]", text):
                    with open(path, "rb") as f:  # (at most 200 bytes: whatever the path is)
                        answer += f" [file {Path(path).name}: {f.read(200).decode(errors='replace')}]"
        if "--include-partial-messages" in argv:  # the answer as it is written, as the CLI does
            stream = re.search(r"stream:(\d+(?:\.\d+)?)", text)
            if stream:  # the framing lines the CLI also writes (ignored by the keeper)
                emit({"type": "stream_event", "event": {"type": "message_start"}, "session_id": session_id})
                emit({"type": "stream_event", "event": {"type": "content_block_start", "index": 0,
                      "content_block": {"type": "text", "text": ""}}, "session_id": session_id})
            size = 12 if stream else 48  # fewer lines for plain answers: floods stay quick
            write_deltas(session_id, [answer[i:i + size] for i in range(0, len(answer), size)],
                         float(stream.group(1)) if stream else 0.0)
            if stream:
                emit({"type": "stream_event", "event": {"type": "content_block_stop", "index": 0},
                      "session_id": session_id})
        emit({"type": "assistant", "message": {"role": "assistant", "content": [
            {"type": "text", "text": answer}]}})
        with hist.open("a") as f:
            f.write(json.dumps({"role": "assistant", "text": answer}) + "\n")
        result("success", False, answer, terminal_reason="completed")
        background = re.search(r"bgtask:(\S+)", text)
        if background:  # a background task ends later: Claude starts a turn of its own
            threading.Thread(target=follow_up, args=(background.group(1), session_id, cost), daemon=True).start()


def terminal_ui(session_id: str, hist: Path) -> int:
    """Claude Code's interactive TUI, as far as a test of ``claudectl attach`` needs."""
    home = Path(os.environ["HOME"]) / ".claude"
    transcript = home / "projects" / re.sub(r"[^A-Za-z0-9]", "-", os.getcwd()) / f"{session_id}.jsonl"
    transcript.parent.mkdir(parents=True, exist_ok=True)
    marker = home / "sessions" / f"{os.getpid()}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"pid": os.getpid(), "sessionId": session_id, "cwd": os.getcwd(),
                                  "kind": "interactive"}))

    def entry(kind: str, content: object) -> None:
        with transcript.open("a") as f:
            f.write(json.dumps({"type": kind, "sessionId": session_id, "cwd": os.getcwd(), "uuid": str(uuid.uuid4()),
                                "message": {"role": kind, "content": content}}) + "\n")

    print(f"fake claude TUI on {session_id}", flush=True)
    try:
        for line in sys.stdin:
            text = line.strip()
            if text == "/exit":
                break
            if not text:
                continue
            earlier = len(hist.read_text().splitlines()) if hist.exists() else 0
            entry("user", text)
            answer = f"echo: {text} (history: {earlier} earlier messages)"
            with hist.open("a") as f:
                f.write(json.dumps({"role": "user", "text": text}) + "\n")
                f.write(json.dumps({"role": "assistant", "text": answer}) + "\n")
            entry("assistant", [{"type": "text", "text": answer}])
            print(f"● {answer}", flush=True)
    finally:
        marker.unlink(missing_ok=True)
    print(f"claude --resume {session_id}", flush=True)
    return 0


def write_deltas(session_id: str, pieces: list[str], seconds: float) -> None:
    """The answer's text deltas, spread evenly over ``seconds`` (at once if 0), until an
    interrupt. Cheap per piece, as scripts/bench runs a hundred of these at a model's pace
    beside what it measures: each line is the same as ``emit`` would write, but built
    from a template (one ``json.dumps`` of the piece's text), and the pieces keep to a
    schedule on the monotonic clock, so time spent writing does not slow the pace."""
    head = json.dumps({"type": "stream_event", "event": {"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": "\0"}}, "session_id": session_id}).split('"\\u0000"')
    # (when each prefix of the answer was written, for scripts/bench: one write a piece)
    log = open(DELTA_LOG, "ab", buffering=0) if DELTA_LOG else None  # noqa: SIM115 (closed below)
    try:
        interval = seconds / len(pieces) if pieces else 0.0
        start = time.monotonic()
        written = 0
        for number, piece in enumerate(pieces, 1):
            if interval and interrupted.wait(max(0.0, start + number * interval - time.monotonic())):
                break
            emit_line(head[0] + json.dumps(piece) + head[1] + "\n")
            written += len(piece)
            if log:
                log.write(f"{time.monotonic()} {session_id} {written}\n".encode())
    finally:
        if log:
            log.close()


def follow_up(gate: str, session_id: str, cost: float) -> None:
    """What the CLI writes when a background task ends after its turn did: a turn no user
    message began (its result says so in ``origin``)."""
    while not os.path.exists(gate):
        time.sleep(0.05)
    emit({"type": "system", "subtype": "task_notification", "task_id": "bg1", "status": "completed",
          "summary": "Background command completed (exit code 0)", "session_id": session_id})
    answer = "follow-up: the background task finished"
    emit({"type": "assistant", "message": {"role": "assistant", "content": [{"type": "text", "text": answer}]}})
    emit({"type": "result", "subtype": "success", "is_error": False, "result": answer, "session_id": session_id,
          "total_cost_usd": round(cost, 6), "duration_ms": 1, "num_turns": 1, "terminal_reason": "completed",
          "origin": {"kind": "task-notification", "producer": "session-task"}})


if __name__ == "__main__":
    sys.exit(main())
