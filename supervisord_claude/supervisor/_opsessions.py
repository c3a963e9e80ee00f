"""The ops on sessions themselves: status and list, create (also to continue a
conversation on disk), fork, suspend, settings (idle timeout, model, mode), archive,
a fresh conversation or directory, and the terminal (attach, conversations).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

from protocol import (
    ErrorCode,
    EventKind,
    PermissionMode,
    Reason,
    SessionState,
    mode_fields,
)

from .. import __version__, _wire
from .._errors import OpError
from ._control import LaterReply
from ._conversations import conversations, open_conversations
from ._opbase import OpsBase


class SessionOps(OpsBase):
    """Sessions: what they are and what they are set to."""

    def op_status(self, ident: bytes, session: str | None = None) -> dict[str, Any]:
        if session is not None:
            rec = self._session(session, allow_archived=True)
            live = self.pool.session(session)
            out: dict[str, Any] = rec.public(self.config.idle_timeout)
            out["keeper_pid"] = live.pids().get("keeper_pid")
            out["claude_pid"] = live.pids().get("claude_pid")
            out["queued"] = live.queued()
            out["queued_bytes"] = live.queued_bytes()
            out["queue_limit"] = self._queue_limit()
            out["pending"] = [{"request_id": r.request_id, "tool_name": r.tool_name, "questions": r.questions()}
                              for r in live.pending_requests()]
            out["activity"] = self.activity_of(session)
            out["terminal"] = self._terminal(session)
            return out
        sessions = self.store.list_sessions(True)
        by_state: dict[str, int] = {}
        for rec in sessions:
            by_state[rec.state.value] = by_state.get(rec.state.value, 0) + 1
        keepers = self.pool.with_keepers()
        claude = [{"session": each.name, **each.pids(), **each.memory()} for each in keepers]
        pending = [{"session": each.name, "request_id": r.request_id, "tool_name": r.tool_name}
                   for each in keepers for r in each.pending_requests()]
        return {
            "pid": os.getpid(),
            "version": __version__,
            "instance": self.instance,
            "uptime": self.clock.monotonic() - self._started_monotonic,
            "runtime_dir": str(self.config.runtime_dir),
            "state_dir": str(self.config.state_dir),
            "sessions_dir": str(self.config.base_cwd),
            "claude_bin": self.config.claude_bin,
            "default_idle_timeout": self.config.idle_timeout,
            "sessions": len([s for s in sessions if s.state is not SessionState.ARCHIVED]),
            "live": self.pool.running,
            "subscriptions": len(self.hub),
            "last_event_id": self.store.last_event_id(),
            "consumers": self.store.cursors(),
            "personas": sorted(self.config.personas),
            "store_problem": self.store.file_problem(),
            "by_state": by_state,
            "claude_processes": claude,
            "cost_today": self.store.cost_on(self.wall()),
            "cost_today_by_session": self.store.session_costs_on(self.wall()),
            "pending_permissions": pending,
            "queue_limit": self._queue_limit(),
            "queues": [{"session": each.name, "messages": each.queued(), "bytes": each.queued_bytes()}
                       for each in self.pool.waiting()],
            "clients": self.hub.clients(),
            "memory": self.system.memory(os.getpid()),
            "limits": {name: use for source in self.limit_sources for name, use in source().items()},
            "turns": [{"session": each.name, **activity} for each in keepers
                      if (activity := self.activity_of(each.name)) is not None],
        }

    def op_list(self, ident: bytes, all: bool = False) -> dict[str, Any]:
        recs = self.store.list_sessions(include_archived=all)
        return {"sessions": [{**r.public(self.config.idle_timeout), "activity": self.activity_of(r.name),
                              **({"terminal": self._terminal(r.name)} if self.terminals.holds(r.name) else {})}
                             for r in recs]}

    def op_create(self, ident: bytes, session: str, model: str | None = None, cwd: str | None = None,
                  persona: str | None = None, permission_mode: PermissionMode | None = None,
                  conversation: str | None = None,
                  force: bool = False) -> dict[str, Any]:
        if self.store.get_session(session) is not None:
            raise OpError(ErrorCode.EXISTS, f"a session named '{session}' already exists")
        continued = self._conversation_to_continue(conversation, cwd, force) if conversation is not None else None
        mode = permission_mode or self.config.permission_mode
        self._check_mode(mode)
        if persona is not None and persona not in self.config.personas:
            known = ", ".join(sorted(self.config.personas)) or "none configured"
            raise OpError(ErrorCode.BAD_REQUEST, f"unknown persona '{persona}' (known: {known})")
        if cwd is not None and not os.path.isdir(cwd):
            raise OpError(ErrorCode.BAD_REQUEST, f"cwd {cwd} is not an existing directory")
        made: Path | None = None
        if cwd is None:
            path = self.config.base_cwd / session
            if not path.exists():
                made = path
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OpError(ErrorCode.BAD_REQUEST,
                              f"cannot create the session directory {path}: {exc.strerror or exc}") from None
            cwd = str(path)
        if model is None and persona is not None:
            model = self.config.personas[persona].model
        try:
            rec = self.store.create_session(session, continued or str(uuid.uuid4()), cwd, model or self.config.model,
                                            persona, mode.value)
        except BaseException:
            if made is not None:  # a failed create leaves nothing behind
                with contextlib.suppress(OSError):
                    made.rmdir()
            raise
        if continued is not None:  # its first start resumes the conversation
            self.store.update_session(session, started=1)
        self.events.record(session, EventKind.STATE, {
            "state": SessionState.SUSPENDED.value, "reason": Reason.REQUESTED.value,
            "detail": f"created to continue conversation {continued}" if continued else "created"})
        created = self.store.get_session(session)
        return (created or rec).public(self.config.idle_timeout)

    def _conversation_to_continue(self, conversation: str, cwd: str | None, force: bool) -> str:
        """The id of the conversation a new session continues (``latest``: the newest in
        ``cwd``); refused if a session of ours holds it, or a running ``claude`` has it
        open (unless ``force``)."""
        if cwd is None:
            raise OpError(ErrorCode.BAD_REQUEST, "a conversation is continued in its own directory: give 'cwd'")
        if not os.path.isdir(cwd):
            raise OpError(ErrorCode.BAD_REQUEST, f"cwd {cwd} is not an existing directory")
        found = conversations(cwd, self.system, self._held_conversations(), self.instance)
        chosen = found[:1] if conversation == "latest" else [c for c in found if c["session_id"] == conversation]
        if not chosen:
            raise OpError(ErrorCode.NOT_FOUND, f"no Claude Code conversation {conversation!r} in {cwd} (claudectl"
                          f" conversations --cwd {cwd} lists them)")
        info = chosen[0]
        if info["held_by"] is not None:
            raise OpError(ErrorCode.EXISTS, f"session '{info['held_by']}' continues conversation"
                          f" {info['session_id']} already")
        if info["open_pid"] is not None and not force:
            raise OpError(ErrorCode.BUSY, f"conversation {info['session_id']} is open in a running claude (pid"
                          f" {info['open_pid']}); two Claudes on one conversation mix it up. Close that one first,"
                          " or force it")
        return str(info["session_id"])

    def op_suspend(self, ident: bytes, session: str) -> dict[str, Any]:
        rec = self._session(session)
        if self.terminals.holds(session):
            self._refuse_attached(session)
        live = self.pool.session(session)
        if not live.has_keeper:
            return {"state": rec.state.value}
        if live.busy:
            raise OpError(ErrorCode.BUSY, f"session '{session}' is answering; interrupt it first")
        if live.queued():
            raise OpError(ErrorCode.BUSY, f"session '{session}' has {live.queued()} message(s) queued;"
                          " they are answered first (suspend after them)")
        if live.starting:
            raise OpError(ErrorCode.BUSY, f"session '{session}' is still starting; try again")
        live.command(_wire.Suspend(Reason.REQUESTED.value))
        return {"state": SessionState.SUSPENDING.value}

    def op_set_timeout(self, ident: bytes, session: str, minutes: int) -> dict[str, Any]:
        self._session(session)
        seconds = minutes * 60.0
        self.events.record(session, EventKind.SETTINGS, {"idle_timeout": seconds})
        self.pool.session(session).command(_wire.SetTimeout(seconds))  # a starting keeper gets it on hello
        return {"idle_timeout": seconds}

    def op_set_model(self, ident: bytes, session: str, model: str) -> dict[str, Any]:
        self._session(session)
        self.events.record(session, EventKind.SETTINGS, {"model": model})
        self.pool.session(session).command(_wire.SetModel(model))
        return {"model": model}

    def op_set_mode(self, ident: bytes, session: str, permission_mode: PermissionMode) -> dict[str, Any]:
        mode = permission_mode
        rec = self._session(session)
        self._check_mode(mode)
        if rec.permission_mode == mode.value:
            return {**mode_fields(mode.value), "changed": False}
        self.events.record(session, EventKind.SETTINGS, {"permission_mode": mode.value})
        # a live Claude restarts with --resume once its turn is over; otherwise the next start has it
        self.pool.session(session).command(_wire.SetMode(mode.value))
        return {**mode_fields(mode.value), "changed": True}

    def op_archive(self, ident: bytes, session: str) -> dict[str, Any]:
        self._session(session)
        if self.terminals.holds(session):
            self._refuse_attached(session)
        if self.pool.archive_after_exit(session):
            return {"state": SessionState.SUSPENDING.value}
        self.pool.archive_now(session)
        return {"state": SessionState.ARCHIVED.value}

    def op_unarchive(self, ident: bytes, session: str) -> dict[str, Any]:
        rec = self._session(session, allow_archived=True)
        if rec.state is not SessionState.ARCHIVED:
            raise OpError(ErrorCode.BAD_REQUEST, f"session '{session}' is not archived")
        self.events.record(session, EventKind.STATE, {"state": SessionState.SUSPENDED.value,
                                                      "reason": Reason.REQUESTED.value, "detail": "unarchived"})
        return {"state": SessionState.SUSPENDED.value}

    def op_new_conversation(self, ident: bytes, session: str) -> dict[str, Any]:
        """The user's explicit choice (e.g. after the old conversation could not be
        resumed): the session keeps its name and directory, Claude starts afresh."""
        return self._fresh(session, {}, "fresh conversation")

    def op_set_cwd(self, ident: bytes, session: str, cwd: str) -> dict[str, Any]:
        """Move a session to another directory. Claude keeps a conversation per directory,
        so it starts a fresh one there (the user confirms that before asking)."""
        if not os.path.isdir(cwd):
            raise OpError(ErrorCode.BAD_REQUEST, f"cwd {cwd} is not an existing directory")
        return self._fresh(session, {"cwd": cwd}, f"moved to {cwd}: fresh conversation")

    def _fresh(self, session: str, fields: dict[str, Any], detail: str) -> dict[str, Any]:
        rec = self._session(session)
        if self.terminals.holds(session):
            self._refuse_attached(session)
        if rec.state.live or self.pool.session(session).queued():
            raise OpError(ErrorCode.BUSY, f"session '{session}' is running; suspend it first (claudectl suspend"
                          f" {session})")
        session_id = str(uuid.uuid4())
        self.store.update_session(session, session_id=session_id, started=0, claude_cost=0.0, **fields)
        self.pool.fresh_conversation(session)
        self.store.set_fork_source(session, None)  # (a fork not started yet starts afresh instead)
        self.events.record(session, EventKind.STATE, {"state": SessionState.SUSPENDED.value,
                                                      "reason": Reason.REQUESTED.value, "detail": detail})
        return {"session_id": session_id, **fields}

    # the terminal (Claude Code's own TUI) ---------------------------------------------------

    def op_attach(self, ident: bytes, session: str, pid: int, tty: str | None = None,
                  now: bool = False) -> LaterReply:
        """Claim the session for ``pid`` (the process that becomes Claude Code's TUI): its
        keeper is stopped (its running turn allowed to end; ``now``: at once), then the
        reply says what to run. Until ``pid`` ends no Claude of ours touches the
        conversation; messages wait."""
        rec = self._session(session)
        self.terminals.settle(session)
        if self.terminals.holds(session):
            self._refuse_attached(session)
        system = self.system
        if not system.alive(pid) or system.uid(pid) != os.getuid():
            raise OpError(ErrorCode.BAD_REQUEST, f"pid {pid} is not a running process of yours")
        open_pid = open_conversations(system, self.instance).get(rec.session_id)
        if open_pid is not None:
            raise OpError(ErrorCode.BUSY, f"the conversation of '{session}' is open in a running claude (pid"
                          f" {open_pid}); close that one first: two Claudes on one conversation mix it up")
        reply = LaterReply()
        self.terminals.claim(rec, pid, tty, now, reply)
        return reply

    def op_conversations(self, ident: bytes, cwd: str | None = None) -> dict[str, Any]:
        """Claude Code's conversations on disk for ``cwd`` (every directory's without it)."""
        return {"conversations": conversations(cwd, self.system, self._held_conversations(), self.instance)}

    # forks --------------------------------------------------------------------------------

    def op_fork(self, ident: bytes, session: str, name: str) -> dict[str, Any]:
        """A new session ``name`` that continues a copy of ``session``'s conversation (its
        first Claude starts with ``--resume <id> --fork-session --session-id <new id>``):
        same directory, model, persona, mode and always-allow rules; what is said in one is
        not seen by the other."""
        rec = self._session(session)
        if self.store.get_session(name) is not None:
            raise OpError(ErrorCode.EXISTS, f"a session named '{name}' already exists")
        if not os.path.isdir(rec.cwd):
            raise OpError(ErrorCode.BAD_REQUEST, f"the directory of '{session}' ({rec.cwd}) is gone")
        fork = self.store.create_session(name, str(uuid.uuid4()), rec.cwd, rec.model, rec.persona,
                                         rec.permission_mode)
        # Claude's running total carries on in the copy (measured with 2.1.327)
        self.store.update_session(name, allowed_tools=rec.allowed_tools, claude_cost=rec.claude_cost)
        if rec.started:  # (a session Claude never saw has no conversation to copy: a fresh one)
            self.store.set_fork_source(name, rec.session_id)
        self.events.record(name, EventKind.STATE, {"state": SessionState.SUSPENDED.value,
                                                   "reason": Reason.REQUESTED.value, "detail": f"fork of {session}"})
        return {**fork.public(self.config.idle_timeout), "fork_of": session, "copied": rec.started}
