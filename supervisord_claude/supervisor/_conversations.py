"""The conversations Claude Code keeps on disk, as the supervisor reads them.

- Conversation files: ``$HOME/.claude/projects/<cwd, each non-alphanumeric character
  '-'>/<id>.jsonl`` (the supervisor's HOME is its sessions' HOME). ``conversations``
  lists them for a directory; ``open_conversations`` says which a running ``claude``
  has open (it writes ``$HOME/.claude/sessions/<pid>.json`` while it runs).
- ``transcript_events``: what one transcript entry says, as session events from the
  terminal (each marked ``from: "terminal"``); ``_terminal`` tails an attached TUI's
  transcript through it.

Reads files only; nothing here runs in a loop of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from protocol import EventKind

from .. import _claude
from .._os import System

#: what ``conversations`` reads (in the supervisor's loop): of each file its first part,
#: of a directory its newest conversations
SCAN_BYTES = 4 * 1024 * 1024
MAX_LISTED = 50
#: what is shown of a tool result from the terminal (as for Claude's own, see _claude)
MAX_TOOL_RESULT_CHARS = _claude.MAX_TOOL_RESULT_CHARS
#: where a terminal event came from (the field every one of them carries)
FROM_TERMINAL = {"from": "terminal"}


def claude_home() -> Path:
    return Path.home() / ".claude"


def project_dir(cwd: str, home: Path | None = None) -> Path:
    """Where Claude Code keeps the conversations of ``cwd``."""
    return (home or claude_home()) / "projects" / re.sub(r"[^A-Za-z0-9]", "-", cwd)


def transcript_path(cwd: str, session_id: str, home: Path | None = None) -> Path:
    path = project_dir(cwd, home) / f"{session_id}.jsonl"
    if not path.exists():  # Claude names the directory by the path it runs in (links resolved)
        real = project_dir(os.path.realpath(cwd), home) / f"{session_id}.jsonl"
        if real.exists():
            return real
    return path


def open_conversations(system: System, instance: str | None = None, home: Path | None = None) -> dict[str, int]:
    """The conversations a running ``claude`` has open: session id -> its pid (from
    ``sessions/<pid>.json``, the pid alive and started when the file says). ``claude -p``
    writes one too: our own (marked with ``instance``) are left out."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for path in ((home or claude_home()) / "sessions").glob("*.json"):
            try:
                info = json.loads(path.read_text())
                pid, session_id = int(info["pid"]), str(info["sessionId"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            started = info.get("procStart")
            if not system.alive(pid) or (started is not None and str(system.start_time(pid)) != str(started)):
                continue
            if instance is not None and system.environ(pid).get(_claude.INSTANCE_ENV) == instance:
                continue
            found[session_id] = pid
    return found


def _user_text(entry: dict[str, Any]) -> str | None:
    """What a person typed, from a transcript ``user`` entry (None for tool results,
    Claude Code's own notes and commands)."""
    if entry.get("isMeta") or entry.get("isSidechain"):
        return None
    content = (entry.get("message") or {}).get("content")
    if isinstance(content, list):
        content = "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    if not isinstance(content, str) or not content.strip() or content.lstrip().startswith("<"):
        return None  # (<command-name>, <local-command-stdout>, <system-reminder>: not typed)
    return content


def _entries(path: Path, limit: int = SCAN_BYTES) -> Iterator[dict[str, Any]]:
    """The entries of the first ``limit`` bytes of a transcript."""
    try:
        with path.open("rb") as f:
            for line in f.read(limit).splitlines():
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if isinstance(entry, dict):
                        yield entry
    except OSError:
        return


def describe_conversation(path: Path) -> dict[str, Any]:
    """One conversation file: id, last activity, messages (typed prompts and answers; in
    its first ``SCAN_BYTES`` only: then ``counted_all`` is false), its first prompt and
    Claude Code's summary of it, if any."""
    messages = 0
    first: str | None = None
    summary: str | None = None
    cwd: str | None = None
    for entry in _entries(path):
        kind = entry.get("type")
        if kind == "summary" and isinstance(entry.get("summary"), str):
            summary = entry["summary"]
        elif kind == "user":
            text = _user_text(entry)
            if text is not None:
                messages += 1
                first = first or text
            cwd = cwd or entry.get("cwd")
        elif kind == "assistant" and not entry.get("isSidechain"):
            content = (entry.get("message") or {}).get("content")
            if isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "text" for b in content):
                messages += 1
    try:
        stat = path.stat()
    except OSError:
        return {"session_id": path.stem, "cwd": cwd, "last_active": 0.0, "messages": messages,
                "counted_all": True, "first_prompt": first[:300] if first else None, "summary": summary}
    return {"session_id": path.stem, "cwd": cwd, "last_active": stat.st_mtime, "messages": messages,
            "counted_all": stat.st_size <= SCAN_BYTES, "first_prompt": first[:300] if first else None,
            "summary": summary}


def conversations(cwd: str | None, system: System, held: dict[str, str], instance: str | None = None,
                  home: Path | None = None) -> list[dict[str, Any]]:
    """The conversations Claude Code keeps for ``cwd`` (for every directory without it),
    newest first, ``MAX_LISTED`` at most; ``held``: conversation id -> the name of our
    session holding it."""
    if cwd is not None:
        directories = {project_dir(cwd, home), project_dir(os.path.realpath(cwd), home)}
    else:
        directories = set()
        with contextlib.suppress(OSError):
            directories = set(((home or claude_home()) / "projects").iterdir())
    open_now = open_conversations(system, instance, home)
    paths: list[tuple[float, Path]] = []
    for directory in directories:
        with contextlib.suppress(OSError):
            for path in directory.glob("*.jsonl"):
                with contextlib.suppress(OSError):
                    paths.append((path.stat().st_mtime, path))
    out = []
    for _, path in sorted(paths, reverse=True)[:MAX_LISTED]:
        info = describe_conversation(path)
        info["cwd"] = info["cwd"] or cwd
        info["held_by"] = held.get(path.stem)
        info["open_pid"] = open_now.get(path.stem)
        out.append(info)
    return out


def transcript_events(entry: dict[str, Any]) -> list[tuple[EventKind, dict[str, Any]]]:
    """What one transcript entry says, as session events from the terminal."""
    if entry.get("isSidechain") or entry.get("isMeta"):
        return []
    kind = entry.get("type")
    content = (entry.get("message") or {}).get("content")
    out: list[tuple[EventKind, dict[str, Any]]] = []
    if kind == "user":
        text = _user_text(entry)
        if text is not None:
            out.append((EventKind.USER, {"text": text, "attachments": [], **FROM_TERMINAL}))
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                out.append((EventKind.TOOL_RESULT, {
                    "tool_use_id": block.get("tool_use_id"), "content": _tool_result_text(block.get("content")),
                    "is_error": bool(block.get("is_error")), **FROM_TERMINAL}))
    elif kind == "assistant":
        for block in content if isinstance(content, list) else []:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and str(block.get("text", "")).strip():
                out.append((EventKind.ASSISTANT_TEXT, {"text": str(block["text"]), **FROM_TERMINAL}))
            elif block.get("type") == "tool_use":
                out.append((EventKind.TOOL_USE, {"tool_use_id": block.get("id"), "name": block.get("name"),
                                                 "input": block.get("input"), **FROM_TERMINAL}))
    return out


def _tool_result_text(content: Any) -> str:
    if isinstance(content, list):
        content = "\n".join(str(b.get("text", "")) if isinstance(b, dict) and b.get("type") == "text"
                            else f"[{b.get('type', 'block') if isinstance(b, dict) else 'block'}]" for b in content)
    text = content if isinstance(content, str) else json.dumps(content)
    if len(text) > MAX_TOOL_RESULT_CHARS:
        text = text[:MAX_TOOL_RESULT_CHARS] + f"… [{len(text) - MAX_TOOL_RESULT_CHARS} more]"
    return text
