"""The Claude Code driver: command line, environment, stdin lines and stdout parsing.

Pure functions only; the keeper owns the process. Facts about the CLI this relies on are
in ``../shared/claude-code-cli.md`` and checked by the ``claude_cli`` test tier.
"""

from __future__ import annotations

import base64
import errno
import json
import mimetypes
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from protocol import EventKind, PermissionMode

#: Environment marker put on every Claude child (and so on its own children):
#: reaping finds them by it after a keeper died without cleaning up.
INSTANCE_ENV = "SUPERVISORD_CLAUDE_INSTANCE"
SESSION_ENV = "SUPERVISORD_CLAUDE_SESSION"

#: our permission modes as Claude Code names them (``--permission-mode``, ``permissionMode``)
CLAUDE_MODES: dict[PermissionMode, str] = {
    PermissionMode.ASK: "default",
    PermissionMode.ACCEPT_EDITS: "acceptEdits",
    PermissionMode.PLAN: "plan",
    PermissionMode.BYPASS: "bypassPermissions",
}
_OUR_MODES = {v: k for k, v in CLAUDE_MODES.items()}

IMAGE_TYPES = {"image/png", "image/jpeg", "image/gif", "image/webp"}
MAX_IMAGE_BYTES = 5 * 1024 * 1024
MAX_TOOL_RESULT_CHARS = 4000
#: the longest answer text an event carries (a 50 MB line would otherwise become one
#: 50 MB event for every client, and 12,000 Telegram messages)
MAX_ANSWER_CHARS = 200_000


def _capped(text: str, limit: int = MAX_ANSWER_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n\n… [cut: {len(text) - limit} more characters]"


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start Claude for one session."""

    claude_bin: str
    cwd: str
    session_id: str
    resume: bool
    model: str | None = None
    system_prompt: str | None = None
    permission_mode: PermissionMode = PermissionMode.ASK
    #: rules allowed for this session ("Bash(npm test:*)", "WebFetch"): no prompt for them
    allowed_tools: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()
    #: stream_event lines with the text as it is written (live answers)
    partial_messages: bool = True
    #: Claude Code stops a turn whose cost (since this process started) passes it
    max_budget_usd: float | None = None
    #: a new conversation that starts as a copy of this one (``--fork-session``)
    fork_from: str | None = None


def build_argv(spec: LaunchSpec) -> list[str]:
    argv = [
        spec.claude_bin,
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
        # Claude echoes each user message when it takes it into the conversation: how the
        # keeper knows whether a message written mid-turn joined that turn or the next
        "--replay-user-messages",
    ]
    if spec.partial_messages:
        argv.append("--include-partial-messages")
    if spec.model:
        argv += ["--model", spec.model]
    if spec.system_prompt:
        argv += ["--append-system-prompt", spec.system_prompt]
    # --resume names the exact conversation; --continue would pick the newest one in the
    # cwd and silently start a new one when there is none.
    # Claude asks on stdout (control_request can_use_tool) and waits for our answer;
    # without it -p mode refuses every tool that writes, and AskUserQuestion does not exist
    argv += ["--permission-prompt-tool", "stdio", "--permission-mode", CLAUDE_MODES[spec.permission_mode]]
    if spec.allowed_tools:  # variadic: the next "--" option ends it
        argv += ["--allowedTools", *spec.allowed_tools]
    if spec.max_budget_usd is not None:
        argv += ["--max-budget-usd", f"{spec.max_budget_usd:.6f}"]
    if spec.fork_from and not spec.resume:  # (verified with 2.1.327: the copy gets the id given)
        argv += ["--resume", spec.fork_from, "--fork-session", "--session-id", spec.session_id]
    else:
        argv += ["--resume", spec.session_id] if spec.resume else ["--session-id", spec.session_id]
    argv += list(spec.extra_args)
    return argv


def build_tui_argv(spec: LaunchSpec) -> list[str]:
    """Claude Code's interactive terminal UI on the session's conversation, with what its
    ``claude -p`` would have: the TUI's own defaults (its model, its "auto" permission
    mode) are not the session's, so each is passed explicitly. In the ask mode its
    prompts are answered in the terminal."""
    argv = [spec.claude_bin]
    if spec.model:
        argv += ["--model", spec.model]
    if spec.system_prompt:
        argv += ["--append-system-prompt", spec.system_prompt]
    argv += ["--permission-mode", CLAUDE_MODES[spec.permission_mode]]
    if spec.allowed_tools:
        argv += ["--allowedTools", *spec.allowed_tools]
    argv += ["--resume", spec.session_id] if spec.resume else ["--session-id", spec.session_id]
    argv += list(spec.extra_args)
    return argv


def build_env(base: Mapping[str, str], instance: str, session: str) -> dict[str, str]:
    env = dict(base)
    env[INSTANCE_ENV] = instance
    env[SESSION_ENV] = session
    return env


def read_attachment(path: str, limit: int) -> bytes | None:
    """An attachment's bytes, or None if it holds more than ``limit`` (it goes by path).
    Opened without following a link or blocking, and read only if it is an ordinary file:
    whatever is at the path, the keeper neither hangs nor reads without end (OSError)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not an ordinary file", path)
        if st.st_size > limit:
            return None
        data = f.read(limit + 1)
    return data if len(data) <= limit else None


def user_line(text: str, attachments: Sequence[str] = (), uuid: str | None = None) -> bytes:
    """One stdin line carrying a user message (images inline, other files by path; each
    must be an ordinary file: OSError otherwise). Claude's echo of it carries ``uuid``."""
    content: str | list[dict[str, Any]] = text
    if attachments:
        blocks: list[dict[str, Any]] = []
        notes: list[str] = []
        for path in attachments:
            media_type = mimetypes.guess_type(path)[0] or ""
            image = None
            if media_type in IMAGE_TYPES:
                image = read_attachment(path, MAX_IMAGE_BYTES)
            elif not stat.S_ISREG(os.lstat(path).st_mode):  # (Claude reads it)
                raise OSError(errno.EINVAL, "not an ordinary file", path)
            if image is not None:
                data = base64.b64encode(image).decode()
                blocks.append(
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": media_type, "data": data},
                    }
                )
            else:
                notes.append(f"[Attached file saved at {path}]")
        body = "\n".join([*notes, text]) if notes else text
        if body:
            blocks.append({"type": "text", "text": body})
        content = blocks
    msg = {
        "type": "user",
        "message": {"role": "user", "content": content},
        "parent_tool_use_id": None,
    }
    if uuid is not None:
        msg["uuid"] = uuid
    return (json.dumps(msg) + "\n").encode()


def allow_decision(tool_input: Any, updated_permissions: Sequence[Any] = ()) -> dict[str, Any]:
    """Run the tool with ``tool_input`` (for AskUserQuestion: the input plus its answers);
    ``updated_permissions`` are PermissionUpdate maps (addRules, setMode) for Claude to apply."""
    decision: dict[str, Any] = {"behavior": "allow", "updatedInput": tool_input}
    if updated_permissions:
        decision["updatedPermissions"] = list(updated_permissions)
    return decision


def deny_decision(message: str | None) -> dict[str, Any]:
    return {"behavior": "deny", "message": message or "The user denied this tool use."}


def permission_line(request_id: str, decision: dict[str, Any]) -> bytes:
    """The control_response answering a ``can_use_tool`` request."""
    msg = {
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": decision},
    }
    return (json.dumps(msg) + "\n").encode()


def control_line(request_id: str, subtype: str) -> bytes:
    msg = {"type": "control_request", "request_id": request_id, "request": {"subtype": subtype}}
    return (json.dumps(msg) + "\n").encode()


#: ``terminal_reason`` values of a turn the user interrupted
INTERRUPTED_REASONS = frozenset({"aborted_streaming", "aborted_tools"})


class Parsed:
    """What one stdout line means to the keeper. (Not a dataclass: what a line does not
    say is the class's default, so a line costs one small object and one list; a burst is
    thousands of lines a second.)"""

    init_session_id: str | None = None
    result: dict[str, Any] | None = None
    permission: dict[str, Any] | None = None
    delta: str | None = None  # text of the answer as it is being written
    mode: PermissionMode | None = None  # the permission mode Claude reports it is in
    model: str | None = None  # the model Claude says it runs (its init line)
    #: Claude's answer to one of our control requests: (request_id, error or None)
    control_response: tuple[str, str | None] | None = None
    #: Claude took a user message into the conversation (its echo, --replay-user-messages):
    #: the uuid it was written with ("" when Claude made one: several messages taken as one)
    replay: str | None = None
    #: the line says nothing but its events (an answer's blocks, tools' results): most
    #: lines of a burst, which the machine takes by a shorter way
    plain = False

    def __init__(self) -> None:
        self.events: list[tuple[EventKind, dict[str, Any]]] = []

    def __repr__(self) -> str:
        return f"Parsed({vars(self)!r})"


def _tool_result_text(content: Any) -> str:
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for block in content:
            if isinstance(block, dict) and block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif isinstance(block, dict):
                parts.append(f"[{block.get('type', 'block')}]")
        text = "\n".join(parts)
    else:
        text = json.dumps(content)
    if len(text) > MAX_TOOL_RESULT_CHARS:
        text = text[:MAX_TOOL_RESULT_CHARS] + f"… [{len(text) - MAX_TOOL_RESULT_CHARS} more]"
    return text


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


#: (an enum member read from its class costs ~0.2 µs on Python 3.11: once per line here)
_ASSISTANT_TEXT = EventKind.ASSISTANT_TEXT


def parse_line(line: bytes) -> Parsed:
    """Interpret one line of ``claude --output-format stream-json``; unknown lines are
    ignored. Every field is checked for its shape (a line is never trusted: a malformed
    one is skipped or its odd fields dropped, and a ``result`` always ends its turn)."""
    out = Parsed()
    # orjson (several times faster), and ``json`` for what orjson refuses but ``json``
    # takes (NaN, lone surrogates), so no line is lost to the faster parser
    try:
        msg = orjson.loads(line)
    except orjson.JSONDecodeError:
        try:
            msg = json.loads(line)
        except ValueError:
            return out
    if not isinstance(msg, dict):
        return out
    kind = msg.get("type")
    if kind == "stream_event":
        event = _map(msg.get("event"))
        if event.get("type") == "content_block_delta":
            delta = _map(event.get("delta"))
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                out.delta = delta["text"]
    elif kind == "system":
        if msg.get("subtype") == "init":
            out.init_session_id = _str(msg.get("session_id"))
            out.model = _str(msg.get("model"))
        # init and status lines say which mode Claude is in (it leaves plan mode by itself
        # once ExitPlanMode is allowed)
        mode = _str(msg.get("permissionMode"))
        out.mode = _OUR_MODES.get(mode) if mode is not None else None
    elif kind == "assistant":
        out.plain = True
        events = out.events
        message = msg.get("message")
        content = message.get("content") if isinstance(message, dict) else None  # (_map, _list inlined)
        for block in content if isinstance(content, list) else ():
            if not isinstance(block, dict):
                continue
            block_type = block.get("type")
            if block_type == "text" and (text := block.get("text")):
                events.append((_ASSISTANT_TEXT, {"text": text if type(text) is str and len(text) <= MAX_ANSWER_CHARS
                                                 else _capped(str(text))}))
            elif block_type == "tool_use":
                events.append(
                    (
                        EventKind.TOOL_USE,
                        {
                            "tool_use_id": _str(block.get("id")),
                            "name": _str(block.get("name")),
                            "input": block.get("input"),
                        },
                    )
                )
    elif kind == "user":
        if msg.get("isReplay") is True:
            uuid = msg.get("uuid")
            out.replay = uuid if isinstance(uuid, str) else ""
            return out
        out.plain = True
        for block in _list(_map(msg.get("message")).get("content")):
            if isinstance(block, dict) and block.get("type") == "tool_result":
                out.events.append(
                    (
                        EventKind.TOOL_RESULT,
                        {
                            "tool_use_id": _str(block.get("tool_use_id")),
                            "content": _tool_result_text(block.get("content")),
                            "is_error": bool(block.get("is_error")),
                        },
                    )
                )
    elif kind == "control_request":
        request = _map(msg.get("request"))
        if request.get("subtype") == "can_use_tool" and isinstance(msg.get("request_id"), str):
            out.permission = {
                "request_id": msg["request_id"],
                "tool_name": _str(request.get("tool_name")),
                "input": request.get("input"),
                "tool_use_id": _str(request.get("tool_use_id")),
                "suggestions": [s for s in _list(request.get("permission_suggestions")) if isinstance(s, dict)],
            }
    elif kind == "control_response":
        response = msg.get("response") or {}
        if isinstance(response, dict) and isinstance(response.get("request_id"), str):
            ok = response.get("subtype") == "success"
            out.control_response = (response["request_id"], None if ok else str(response.get("error") or
                                                                                 response.get("subtype")))
    elif kind == "result":
        text = _str(msg.get("result"))
        reason = _str(msg.get("terminal_reason"))
        status = _number(msg.get("api_error_status"))
        out.result = {
            "is_error": msg.get("is_error") is True,
            "subtype": _str(msg.get("subtype")),
            "text": _capped(text) if text is not None else "",
            "cost_usd": _number(msg.get("total_cost_usd")),
            "duration_ms": _number(msg.get("duration_ms")),
            "num_turns": _number(msg.get("num_turns")),
            "session_id": _str(msg.get("session_id")),
            "terminal_reason": reason,
            # an interrupt mid-answer ends "aborted_streaming", mid-tool (or while a
            # permission prompt waits) "aborted_tools": both are the user's own stop
            "interrupted": reason in INTERRUPTED_REASONS,
            "api_error_status": int(status) if status is not None else None,
            "errors": [str(e) for e in _list(msg.get("errors")) if e],
            # tools Claude Code's own rules or mode refused in this turn
            "permission_denials": [
                {"tool_name": _str(d.get("tool_name")), "tool_use_id": _str(d.get("tool_use_id"))}
                for d in _list(msg.get("permission_denials")) if isinstance(d, dict)
            ],
        }
    return out


def outbox_prompt(cwd: str) -> str:
    """What every Claude is told (appended to its system prompt) about sending files."""
    return (f"To send the user a file (an image, a document, a report), write or copy it into {cwd}/outbox"
            " (make the directory if needed); it is delivered to them when your answer is complete.")
