"""Sessions open in Claude Code's own terminal UI (``claudectl attach``), and the
conversations Claude Code keeps on disk.

- Conversation files: ``$HOME/.claude/projects/<cwd, each non-alphanumeric character
  '-'>/<id>.jsonl`` (the supervisor's HOME is its sessions' HOME). ``conversations``
  lists them for a directory; ``open_conversations`` says which a running ``claude``
  has open (it writes ``$HOME/.claude/sessions/<pid>.json`` while it runs).
- ``Terminals``: a session on its way to a terminal and then in it. ``attach`` claims
  the session for a process (claudectl's child, which becomes the TUI); its keeper is
  stopped — its running turn allowed to end, or at once with ``now`` — and the session
  becomes ATTACHED: no keeper, no ``claude -p``, no idle timer; messages wait in the
  session's queue (the pool asks ``Terminals.holds``). The TUI's process is watched (polled through
  ``System``, by pid and start time) and its conversation's transcript tailed into the
  event log, each event marked ``from: "terminal"``. When that process ends the session
  is suspended again, and what waits is answered at once, in order.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol import EventKind, PermissionMode, Reason, SessionState, mode_fields

from .. import _claude, _wire
from .._clock import Clock, TimerHandle
from .._config import Config
from .._os import System
from ._control import LaterReply
from ._eventlog import EventLog
from ._pool import KeeperPool
from ._store import SessionRecord, Store

log = logging.getLogger("supervisord_claude")

#: how often an attached TUI's process and transcript are looked at
POLL = 0.25
#: what ``conversations`` reads (in the supervisor's loop): of each file its first part,
#: of a directory its newest conversations
SCAN_BYTES = 4 * 1024 * 1024
MAX_LISTED = 50
#: what one look at an attached TUI's transcript reads at most
TAIL_BYTES = 4 * 1024 * 1024
#: what is shown of a tool result from the terminal (as for Claude's own, see _claude)
MAX_TOOL_RESULT_CHARS = _claude.MAX_TOOL_RESULT_CHARS
#: where a terminal event came from (the field every one of them carries)
FROM_TERMINAL = {"from": "terminal"}
#: what the TUI does not take from the supervisor's environment: the terminal's own
#: variables (it keeps those of the terminal it runs in), the service manager's, our
#: marker (a process carrying it is reaped as ours), the bot's token (no use to Claude)
NOT_FOR_THE_TUI = frozenset({
    "TERM", "COLORTERM", "TERM_PROGRAM", "TERM_PROGRAM_VERSION", "TMUX", "TMUX_PANE", "STY", "WINDOW",
    "COLUMNS", "LINES", "DISPLAY", "WAYLAND_DISPLAY", "SSH_TTY", "SSH_CONNECTION", "SSH_CLIENT",
    "SSH_AUTH_SOCK", "PWD", "OLDPWD", "SHLVL", "_", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID",
    "INVOCATION_ID", "JOURNAL_STREAM", _claude.INSTANCE_ENV, "TELEGRAM_BOT_TOKEN",
})


# conversations on disk ---------------------------------------------------------------------

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


# the attached state -------------------------------------------------------------------------

@dataclass
class Terminal:
    """One session claimed by a terminal: on its way (``reply`` not sent yet) or attached."""

    session: str
    pid: int
    start: int | None  # the process's start time: with the pid, it names one process
    tty: str | None
    since: float
    reply: LaterReply | None = None
    attached: bool = False
    cwd: str = ""
    conversation: str = ""  # its session id
    transcript: Path | None = None
    offset: int = 0
    partial: bytes = b""  # the transcript's last line, while it is being written

    def public(self) -> dict[str, Any]:
        return {"pid": self.pid, "tty": self.tty, "since": self.since, "attached": self.attached}


class Terminals:
    """Every session claimed by a terminal; the pool asks it which sessions it holds."""

    def __init__(self, config: Config, store: Store, pool: KeeperPool, events: EventLog, system: System,
                 clock: Clock, wall: Callable[[], float],
                 environ: Callable[[], dict[str, str]] = lambda: dict(os.environ)) -> None:
        self.config = config
        self.store = store
        self.pool = pool
        self.events = events
        self.system = system
        self.clock = clock
        self.wall = wall
        self.environ = environ
        self.claims: dict[str, Terminal] = {}
        self._timer: TimerHandle | None = None

    def holds(self, session: str) -> bool:
        return session in self.claims

    def of(self, session: str) -> Terminal | None:
        return self.claims.get(session)

    def settle(self, session: str) -> None:
        """A claim whose process is gone ends now (not at the next look)."""
        term = self.claims.get(session)
        if term is not None and not self.alive(term):
            self._ended(term)

    def alive(self, term: Terminal) -> bool:
        return self.system.alive(term.pid) and (term.start is None or self.system.start_time(term.pid) == term.start)

    # attach -----------------------------------------------------------------------------

    def claim(self, rec: SessionRecord, pid: int, tty: str | None, now: bool, reply: LaterReply) -> None:
        """Claim the session for ``pid`` (the caller checked it is free); ``reply`` gets
        what to run once no keeper of ours holds the conversation."""
        term = Terminal(rec.name, pid, self.system.start_time(pid), tty, self.wall(), reply=reply)
        self.claims[rec.name] = term
        self._arm()
        live = self.pool.session(rec.name)
        if not live.has_keeper:
            self._attach(term)
        elif now:  # its running message is reported not delivered; the queued ones wait
            live.command(_wire.Stop(Reason.ATTACHED.value))
        else:
            self._maybe_suspend(term, rec.state.value)

    def state_reported(self, session: str, state: str) -> None:
        """(the pool's listener) A keeper said what the session does."""
        term = self.claims.get(session)
        if term is not None and not term.attached:
            self.events.flush()  # (the turn's events stored: the messages it answered are off the keeper)
            self._maybe_suspend(term, state)

    def _maybe_suspend(self, term: Terminal, state: str) -> None:
        """Once the keeper answered what it was handed and is idle, it is suspended
        (what comes meanwhile waits in the pool, held)."""
        live = self.pool.session(term.session)
        if not live.quiet or state != SessionState.IDLE.value:
            return
        live.command(_wire.Suspend(Reason.ATTACHED.value))

    def keeper_gone(self, session: str) -> None:
        """(the pool's listener) The session's keeper is gone."""
        term = self.claims.get(session)
        if term is not None and not term.attached and not self.pool.session(session).has_keeper:
            self._attach(term)

    def _attach(self, term: Terminal) -> None:
        rec = self.store.get_session(term.session)
        if rec is None or rec.state is SessionState.ARCHIVED:
            self._release(term, "the session is gone")
            return
        term.attached = True
        term.cwd, term.conversation = rec.cwd, rec.session_id
        term.transcript = transcript_path(rec.cwd, rec.session_id)
        term.offset = _size(term.transcript)
        self.events.record(term.session, EventKind.STATE, {
            "state": SessionState.ATTACHED.value, "reason": Reason.ATTACHED.value, "pid": term.pid,
            "tty": term.tty, "since": term.since, "start": term.start,
            "detail": f"open in a terminal ({term.tty or 'no tty'}, pid {term.pid})"})
        log.info("session %s is open in a terminal (pid %d, %s)", term.session, term.pid, term.tty or "no tty",
                 extra={"session": term.session})
        if term.reply is not None:
            term.reply.resolve({"state": SessionState.ATTACHED.value, "attached": True, **self.launch(rec)})
            term.reply = None

    def launch(self, rec: SessionRecord) -> dict[str, Any]:
        """What the terminal runs: the TUI's argv, cwd and environment — the session's,
        passed explicitly (the supervisor's environment is its Claude's)."""
        spec = _claude.LaunchSpec(
            claude_bin=self.config.claude_bin, cwd=rec.cwd, session_id=rec.session_id,
            resume=rec.started or transcript_path(rec.cwd, rec.session_id).exists(), model=rec.model,
            system_prompt=self.pool.system_prompt(rec), permission_mode=PermissionMode(rec.permission_mode),
            # (not the attachments directory its keeper adds: the TUI would ask at every start
            # whether to trust it; a file from there is read after asking, as any outside one)
            allowed_tools=tuple(rec.allowed_tools), extra_args=tuple(self.config.claude_args))
        env = {k: v for k, v in self.environ().items() if k not in NOT_FOR_THE_TUI}
        env[_claude.SESSION_ENV] = rec.name
        return {"argv": _claude.build_tui_argv(spec), "cwd": rec.cwd, "env": env, "session_id": rec.session_id,
                "model": rec.model, **mode_fields(rec.permission_mode)}

    def _release(self, term: Terminal, why: str) -> None:
        """The claim ends before the session was attached (claudectl went away)."""
        self.claims.pop(term.session, None)
        if term.reply is not None:
            rec = self.store.get_session(term.session)
            term.reply.resolve({"state": rec.state.value if rec else None, "attached": False, "detail": why})
            term.reply = None
        log.info("attach of %s given up: %s", term.session, why, extra={"session": term.session})
        self.pool.dispatch(term.session)

    def _detach(self, term: Terminal, why: str) -> None:
        """The TUI's process ended: the session goes back to the supervisor."""
        while self._tail(term):  # (all it wrote, however much)
            pass
        self.claims.pop(term.session, None)
        rec = self.store.get_session(term.session)
        if rec is None:
            return
        if not rec.started and term.transcript is not None and term.transcript.exists():
            self.store.update_session(term.session, started=1)
        self.events.record(term.session, EventKind.STATE, {
            "state": SessionState.SUSPENDED.value, "reason": Reason.DETACHED.value, "detail": why})
        self.pool.dispatch(term.session)

    # watching -----------------------------------------------------------------------------

    def _arm(self) -> None:
        if self._timer is None and self.claims:
            self._timer = self.clock.call_later(POLL, self._poll)

    def _poll(self) -> None:
        self._timer = None
        for term in list(self.claims.values()):
            if self.claims.get(term.session) is not term:
                continue
            if not self.alive(term):
                self._ended(term)
            elif term.attached:
                self._tail(term)
        self._arm()

    def _ended(self, term: Terminal) -> None:
        if term.attached:
            self._detach(term, f"the terminal closed (pid {term.pid} ended)")
        else:
            self._release(term, f"pid {term.pid} ended before the session was free")

    def _tail(self, term: Terminal) -> bool:
        """Put what was written to the conversation's transcript since the last look into
        the event log, as said in the terminal (a piece at a time: True if there may be
        more)."""
        if term.transcript is None:
            return False
        if not term.offset and not term.transcript.exists():  # (named after where Claude really runs)
            term.transcript = transcript_path(term.cwd, term.conversation)
        try:
            with term.transcript.open("rb") as f:
                f.seek(term.offset)
                chunk = f.read(TAIL_BYTES)
        except OSError:
            return False
        if not chunk:
            return False
        term.offset += len(chunk)
        lines = (term.partial + chunk).split(b"\n")
        term.partial = lines.pop()
        with self.events.batch():
            for line in lines:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict):
                    for kind, body in transcript_events(entry):
                        self.events.record(term.session, kind, body)
        return len(chunk) == TAIL_BYTES

    # restarts ---------------------------------------------------------------------------

    def restore(self) -> None:
        """After a restart: each session the store calls attached is watched again (its
        TUI may well still run), or handed back at once if its process is gone."""
        for rec in self.store.list_sessions():
            if rec.state is not SessionState.ATTACHED:
                continue
            body = self.store.last_event_body(rec.name, EventKind.STATE) or {}
            pid, start = body.get("pid"), body.get("start")
            term = Terminal(rec.name, pid if isinstance(pid, int) else 0, start if isinstance(start, int) else None,
                            body.get("tty") if isinstance(body.get("tty"), str) else None,
                            float(body.get("since") or self.wall()), attached=True, cwd=rec.cwd,
                            conversation=rec.session_id)
            term.transcript = transcript_path(rec.cwd, rec.session_id)
            term.offset = _size(term.transcript)
            self.claims[rec.name] = term
            if term.pid <= 0 or not self.alive(term):
                self._detach(term, "the terminal closed while the supervisor was away")
        self._arm()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0

