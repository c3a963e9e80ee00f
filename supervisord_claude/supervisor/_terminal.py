"""Sessions open in Claude Code's own terminal UI (``claudectl attach``).

- ``Terminals``: a session on its way to a terminal and then in it. ``attach`` claims
  the session for a process (claudectl's child, which becomes the TUI); its keeper is
  stopped — its running turn allowed to end, or at once with ``now`` — and the session
  becomes ATTACHED: no keeper, no ``claude -p``, no idle timer; messages wait in the
  session's queue (the pool asks ``Terminals.holds``). The TUI's process is watched (polled through
  ``System``, by pid and start time) and its conversation's transcript tailed into the
  event log, each event marked ``from: "terminal"``. When that process ends the session
  is suspended again, and what waits is answered at once, in order.

The conversation files on disk and what a transcript entry says are ``_conversations``'s.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol import EventKind, PermissionMode, Reason, SessionState, mode_fields

from .. import _claude, _wire
from .._clock import Clock, TimerHandle
from .._configkeys import Config
from .._os import System
from ._control import LaterReply
from ._conversations import transcript_events, transcript_path
from ._eventlog import EventLog
from ._pool import KeeperPool
from ._store import SessionRecord, Store

log = logging.getLogger("supervisord_claude")

#: how often an attached TUI's process and transcript are looked at
POLL = 0.25
#: what one look at an attached TUI's transcript reads at most
TAIL_BYTES = 4 * 1024 * 1024
#: what the TUI does not take from the supervisor's environment: the terminal's own
#: variables (it keeps those of the terminal it runs in), the service manager's, our
#: marker (a process carrying it is reaped as ours), the bot's token (no use to Claude)
NOT_FOR_THE_TUI = frozenset({
    "TERM", "COLORTERM", "TERM_PROGRAM", "TERM_PROGRAM_VERSION", "TMUX", "TMUX_PANE", "STY", "WINDOW",
    "COLUMNS", "LINES", "DISPLAY", "WAYLAND_DISPLAY", "SSH_TTY", "SSH_CONNECTION", "SSH_CLIENT",
    "SSH_AUTH_SOCK", "PWD", "OLDPWD", "SHLVL", "_", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID",
    "INVOCATION_ID", "JOURNAL_STREAM", _claude.INSTANCE_ENV, "TELEGRAM_BOT_TOKEN",
})


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

