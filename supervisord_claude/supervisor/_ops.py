"""The op handlers: one small method per protocol op, over the store, the keeper pool,
the subscription hub and the event log. Validation already happened (``protocol``);
what cannot be carried out raises ``OpError`` with a code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protocol import (
    MAX_KV_KEYS,
    PROTOCOL_VERSION,
    ErrorCode,
    EventKind,
    Op,
    PermissionMode,
    Reason,
    Request,
    SessionState,
    control_endpoint,
)

from .. import __version__, _claude, _wire
from .. import _permissions as permissions
from .._config import Config
from .._errors import OpError
from .._wire import DROPPED
from ._attachments import mib_text
from ._backup import backup_store, check_target
from ._budgets import ALL as ALL_SESSIONS
from ._control import LaterReply
from ._eventlog import EventLog
from ._gitdiff import working_tree_diff
from ._hub import SubscriptionHub
from ._pool import KeeperPool, message_bytes
from ._schedules import Scheduler, zone
from ._store import SessionRecord, Store
from ._terminal import Terminals, conversations, open_conversations

log = logging.getLogger("supervisord_claude")

#: read-only ops and acks (so no delivered event is re-sent after a restart)
ALLOWED_WHILE_STOPPING = frozenset(
    {Op.HELLO, Op.STATUS, Op.LIST, Op.PING, Op.ACK, Op.UNSUBSCRIBE, Op.KV_GET, Op.CONSUMERS, Op.SHUTDOWN,
     Op.RULES, Op.SCHEDULES, Op.BUDGET}
)


class Ops:
    def __init__(self, config: Config, instance: str, store: Store, pool: KeeperPool, hub: SubscriptionHub,
                 events: EventLog, wall: Callable[[], float], started_at: float,
                 request_shutdown: Callable[[], None], request_restart: Callable[[], None]) -> None:
        self.config = config
        self.instance = instance
        self.store = store
        self.pool = pool
        self.hub = hub
        self.events = events
        self.wall = wall
        self.started_at = started_at
        # uptime is counted on the monotonic clock: a wall clock stepped back must not make it negative
        self._started_monotonic = pool.clock.monotonic()
        self.request_shutdown = request_shutdown
        self.request_restart = request_restart
        self.stopping = False
        #: what is near a limit, for ``status``: each source gives {name: {used, limit}}
        self.limit_sources: list[Callable[[], dict[str, dict[str, int | None]]]] = []
        self._tasks: set[asyncio.Task[None]] = set()  # (replies being worked out: kept from the GC)
        #: schedules: each run is a send like any other (started once the store is recovered)
        self.scheduler = Scheduler(store, pool.clock, wall, self._scheduled_send, config.timezone)
        #: what a session's running turn does now (the watcher's ``activity``), or None
        self.activity_of: Callable[[str], dict[str, Any] | None] = lambda session: None
        #: sessions open in Claude Code's own terminal UI (``attach``)
        self.terminals = Terminals(store, pool, events, pool.system, pool.clock, wall)

    def handle(self, ident: bytes, req: Request) -> dict[str, Any] | LaterReply:
        if self.stopping and req.op not in ALLOWED_WHILE_STOPPING:
            raise OpError(ErrorCode.SHUTTING_DOWN, "the supervisor is shutting down")
        if req.op not in ALLOWED_WHILE_STOPPING:
            # before any write: work accepted into a deleted store would be lost without a word
            problem = self.store.file_problem()
            if problem is not None:
                raise OpError(ErrorCode.STORAGE, f"{problem}; nothing new is accepted. Stop the supervisor"
                              " (claudectl shutdown) and restore the file from a backup, or start afresh")
        handler = getattr(self, f"op_{req.op.value}")
        result: dict[str, Any] | LaterReply = handler(ident, **req.args)
        return result

    def after_reply(self, ident: bytes, req: Request, result: dict[str, Any]) -> None:
        if req.op is Op.SUBSCRIBE:  # the events follow the reply that names the subscription
            sub = self.hub.subs.get(result["sub"])
            if sub is not None:  # (gone if the client left before its reply could be sent)
                self.hub.pump(sub)

    def _session(self, name: str, allow_archived: bool = False) -> SessionRecord:
        rec = self.store.get_session(name)
        if rec is None:
            raise OpError(ErrorCode.NOT_FOUND, f"no session named '{name}'")
        if rec.state is SessionState.ARCHIVED and not allow_archived:
            raise OpError(ErrorCode.ARCHIVED, f"session '{name}' is archived")
        return rec

    # ops --------------------------------------------------------------------------------

    def op_hello(self, ident: bytes, client: str | None = None) -> dict[str, Any]:
        return {"server": "supervisord-claude", "version": __version__, "protocol": PROTOCOL_VERSION,
                "instance": self.instance}

    def op_status(self, ident: bytes, session: str | None = None) -> dict[str, Any]:
        if session is not None:
            rec = self._session(session, allow_archived=True)
            handle = self.pool.handle_of(session)
            out: dict[str, Any] = rec.public(self.config.idle_timeout)
            out["keeper_pid"] = handle.pid if handle else None
            out["claude_pid"] = handle.claude_pid if handle else None
            out["queued"] = self.pool.queued(session)
            out["queued_bytes"] = self.pool.queued_bytes(session)
            out["queue_limit"] = self._queue_limit()
            out["pending"] = [{"request_id": r.request_id, "tool_name": r.tool_name, "questions": r.questions()}
                              for r in self.pool.pending_requests(session)]
            out["activity"] = self.activity_of(session)
            out["terminal"] = self._terminal(session)
            return out
        sessions = self.store.list_sessions(True)
        by_state: dict[str, int] = {}
        for rec in sessions:
            by_state[rec.state.value] = by_state.get(rec.state.value, 0) + 1
        claude = []
        for name, handle in sorted(self.pool.handles.items()):
            claude.append({"session": name, "keeper_pid": handle.pid, "claude_pid": handle.claude_pid,
                           "claude_memory": self.pool.system.memory(handle.claude_pid) if handle.claude_pid else None,
                           "keeper_memory": self.pool.system.memory(handle.pid) if handle.pid else None})
        pending = [{"session": name, "request_id": r.request_id, "tool_name": r.tool_name}
                   for name in sorted(self.pool.handles) for r in self.pool.pending_requests(name)]
        return {
            "pid": os.getpid(),
            "version": __version__,
            "instance": self.instance,
            "uptime": self.pool.clock.monotonic() - self._started_monotonic,
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
            "queues": [{"session": name, "messages": self.pool.queued(name), "bytes": self.pool.queued_bytes(name)}
                       for name in sorted(set(self.pool.queues) | set(self.pool.handles)) if self.pool.queued(name)],
            "clients": self.hub.clients(),
            "memory": self.pool.system.memory(os.getpid()),
            "limits": {name: use for source in self.limit_sources for name, use in source().items()},
            "turns": [{"session": name, **activity} for name in sorted(self.pool.handles)
                      if (activity := self.activity_of(name)) is not None],
        }

    def op_list(self, ident: bytes, all: bool = False) -> dict[str, Any]:
        recs = self.store.list_sessions(include_archived=all)
        return {"sessions": [{**r.public(self.config.idle_timeout), "activity": self.activity_of(r.name),
                              **({"terminal": self._terminal(r.name)} if self.terminals.holds(r.name) else {})}
                             for r in recs]}

    def _check_mode(self, mode: PermissionMode) -> None:
        if mode is PermissionMode.BYPASS and not self.config.allow_bypass:
            raise OpError(ErrorCode.BAD_REQUEST, "mode 'bypass' is not allowed here (the supervisor's config"
                          " needs allow_bypass = true)")

    def op_create(self, ident: bytes, session: str, model: str | None = None, cwd: str | None = None,
                  persona: str | None = None, mode: PermissionMode | None = None, conversation: str | None = None,
                  force: bool = False) -> dict[str, Any]:
        if self.store.get_session(session) is not None:
            raise OpError(ErrorCode.EXISTS, f"a session named '{session}' already exists")
        continued = self._conversation_to_continue(conversation, cwd, force) if conversation is not None else None
        mode = mode or self.config.permission_mode
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

    def _held_conversations(self) -> dict[str, str]:
        """Conversation id -> the name of the session of ours that continues it."""
        return {rec.session_id: rec.name for rec in self.store.list_sessions(True)}

    def _conversation_to_continue(self, conversation: str, cwd: str | None, force: bool) -> str:
        """The id of the conversation a new session continues (``latest``: the newest in
        ``cwd``); refused if a session of ours holds it, or a running ``claude`` has it
        open (unless ``force``)."""
        if cwd is None:
            raise OpError(ErrorCode.BAD_REQUEST, "a conversation is continued in its own directory: give 'cwd'")
        if not os.path.isdir(cwd):
            raise OpError(ErrorCode.BAD_REQUEST, f"cwd {cwd} is not an existing directory")
        found = conversations(cwd, self.pool.system, self._held_conversations(), self.instance)
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

    def _queue_limit(self) -> dict[str, int]:
        return {"messages": self.config.max_queued_messages, "bytes": self.config.max_queued_bytes}

    def _check_queue_room(self, session: str, size: int) -> None:
        """Refuse (queue_full) a message the session's queue has no room for: past the
        count, or past the bytes (an empty queue takes any one message)."""
        count, held = self.pool.queued(session), self.pool.queued_bytes(session)
        limit = self.config
        if count >= limit.max_queued_messages or (count and held + size > limit.max_queued_bytes):
            raise OpError(ErrorCode.QUEUE_FULL,
                          f"the queue of session '{session}' is full: {count} messages ({mib_text(held)}) wait for"
                          f" Claude, and it takes {limit.max_queued_messages} messages or"
                          f" {mib_text(limit.max_queued_bytes)} (max_queued_messages, max_queued_mib). Nothing"
                          f" was sent: send it again once Claude has answered some, or drop them"
                          f" (claudectl drop-queued {session})")

    def op_send(self, ident: bytes, session: str, text: str, attachments: list[str] | None = None,
                origin: str | None = None, idempotency_key: str | None = None, queue: bool = False) -> dict[str, Any]:
        rec = self._session(session)
        files = attachments or []
        if not text.strip() and not files:
            raise OpError(ErrorCode.BAD_REQUEST, "a message needs text or an attachment")
        known = self.store.message_by_key(session, idempotency_key) if idempotency_key is not None else None
        if known is not None:  # a retry of a message it has: its answer, whatever the queue holds now
            return {"message_id": known, "seq": rec.last_seq, "state": rec.state.value, "duplicate": True,
                    "ahead": 0, "steering": False}
        self._check_queue_room(session, 0)  # (before anything is copied)
        self.pool.budgets.check(session)  # past a daily cap no new turn starts
        taken = self.pool.attachments.take(session, files)
        try:
            size = message_bytes(text, []) + taken.size
            self._check_queue_room(session, size)
            message_id, created = self.store.add_message(session, text, taken.paths, origin, idempotency_key,
                                                         own_turn=queue)
        except BaseException:
            taken.discard()
            raise
        steering = created and not queue and self._turn_runs(session)
        if created:
            self.pool.attachments.hold(message_id, taken)
            self.pool.enqueue(session, message_id, size, own_turn=queue)
        else:
            taken.discard()
        # messages of this session that Claude answers before this one: those not handed to
        # it yet (this one among them), and the one it is answering; none for a message that
        # joins the running turn
        ahead = 0
        if created and not steering:
            answering = self.store.get_session(session)
            ahead = self.pool.queued(session) - 1 + (answering is not None and answering.state is SessionState.BUSY)
        reply: dict[str, Any] = {"message_id": message_id, "seq": rec.last_seq, "state": rec.state.value,
                                 "duplicate": not created, "ahead": ahead, "steering": steering}
        warning = self.pool.budgets.warning(session) if created else None
        if warning:
            reply["budget_warning"] = warning
        if self.terminals.holds(session):  # kept: answered once the terminal closes
            reply["terminal"] = self._terminal(session)
        return reply

    def _turn_runs(self, session: str) -> bool:
        """Whether a message sent now joins a turn: the session is answering, or a message
        before it waits to begin one (Claude is starting); and its keeper steers (a keeper
        of the release before an upgrade queues every message)."""
        rec = self.store.get_session(session)
        handle = self.pool.handle_of(session)
        if rec is None or handle is None or handle.wire_version < _wire.STEERING_SINCE:
            return False
        return rec.state is SessionState.BUSY or self.pool.queued(session) > 0

    def op_interrupt(self, ident: bytes, session: str) -> LaterReply:
        """Replied once the keeper says what became of it: ``{confirmed, detail}`` —
        confirmed by Claude (its control_response), or why not (at most
        ``interrupt_timeout`` later)."""
        rec = self._session(session)
        reply = LaterReply()
        if rec.state is not SessionState.BUSY or not self.pool.interrupt(session, reply.resolve):
            queued = self.pool.queued(session)
            if queued:
                raise OpError(ErrorCode.NOT_BUSY, f"session '{session}' has {queued} message(s) queued that Claude"
                              " has not started on yet (it is starting); nothing to interrupt yet")
            raise OpError(ErrorCode.NOT_BUSY, f"session '{session}' is not answering anything")
        return reply

    def op_drop_queued(self, ident: bytes, session: str) -> dict[str, Any]:
        """Every message of the session Claude has not started on is reported not
        delivered ("dropped"); the one it is answering goes on."""
        self._session(session)
        waiting = list(self.pool.queues.pop(session, ()))
        self.events.fail_messages(session, waiting, DROPPED)
        # those the keeper holds: it reports each one itself (a message_failed event)
        self.pool.command(session, _wire.DropQueued())
        # those Claude already has in its input (steered, not taken yet) cannot be dropped:
        # they join the running turn, or are its next
        return {"kept": self.pool.steered(session)}

    def op_suspend(self, ident: bytes, session: str) -> dict[str, Any]:
        rec = self._session(session)
        if self.terminals.holds(session):
            self._refuse_attached(session)
        handle = self.pool.handle_of(session)
        if handle is None:
            return {"state": rec.state.value}
        if rec.state is SessionState.BUSY:
            raise OpError(ErrorCode.BUSY, f"session '{session}' is answering; interrupt it first")
        if self.pool.queued(session):
            raise OpError(ErrorCode.BUSY, f"session '{session}' has {self.pool.queued(session)} message(s) queued;"
                          " they are answered first (suspend after them)")
        if handle.ident is None:
            raise OpError(ErrorCode.BUSY, f"session '{session}' is still starting; try again")
        self.pool.command(session, _wire.Suspend(Reason.REQUESTED.value))
        return {"state": SessionState.SUSPENDING.value}

    def op_set_timeout(self, ident: bytes, session: str, minutes: int) -> dict[str, Any]:
        self._session(session)
        seconds = minutes * 60.0
        self.events.record(session, EventKind.SETTINGS, {"idle_timeout": seconds})
        self.pool.command(session, _wire.SetTimeout(seconds))  # a starting keeper gets it on hello
        return {"idle_timeout": seconds}

    def op_set_model(self, ident: bytes, session: str, model: str) -> dict[str, Any]:
        self._session(session)
        self.events.record(session, EventKind.SETTINGS, {"model": model})
        self.pool.command(session, _wire.SetModel(model))
        return {"model": model}

    def op_set_mode(self, ident: bytes, session: str, mode: PermissionMode) -> dict[str, Any]:
        rec = self._session(session)
        self._check_mode(mode)
        if rec.permission_mode == mode.value:
            return {"mode": mode.value, "changed": False}
        self.events.record(session, EventKind.SETTINGS, {"mode": mode.value})
        # a live Claude restarts with --resume once its turn is over; otherwise the next start has it
        self.pool.command(session, _wire.SetMode(mode.value))
        return {"mode": mode.value, "changed": True}

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
        if rec.state.live or self.pool.queued(session):
            raise OpError(ErrorCode.BUSY, f"session '{session}' is running; suspend it first (claudectl suspend"
                          f" {session})")
        session_id = str(uuid.uuid4())
        self.store.update_session(session, session_id=session_id, started=0, claude_cost=0.0, **fields)
        self.store.set_fork_source(session, None)  # (a fork not started yet starts afresh instead)
        self.events.record(session, EventKind.STATE, {"state": SessionState.SUSPENDED.value,
                                                      "reason": Reason.REQUESTED.value, "detail": detail})
        return {"session_id": session_id, **fields}

    # the terminal (Claude Code's own TUI) ---------------------------------------------------

    def _terminal(self, session: str) -> dict[str, Any] | None:
        term = self.terminals.of(session)
        return term.public() if term is not None else None

    def _refuse_attached(self, session: str) -> None:
        term = self.terminals.of(session)
        where = f" ({term.tty or 'no tty'}, pid {term.pid})" if term is not None else ""
        raise OpError(ErrorCode.BUSY, f"session '{session}' is open in a terminal{where}; it is the terminal's until"
                      " that Claude exits")

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
        system = self.pool.system
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
        return {"conversations": conversations(cwd, self.pool.system, self._held_conversations(), self.instance)}

    def op_subscribe(self, ident: bytes, session: str | None = None, after: int | None = None,
                     consumer: str | None = None, window: int | None = None,
                     live: bool = False, batch: bool = False) -> dict[str, Any]:
        if session is not None:
            self._session(session, allow_archived=True)
            start = self.store.event_id_at_seq(session, after) if after is not None else None
        else:
            start = after
        if start is None:
            start = self.store.get_cursor(consumer) if consumer else self.store.last_event_id()
        sub = self.hub.subscribe(ident, session, start, consumer, window, live, batch)
        return {"sub": sub.sub_id, "position": start}

    def op_ack(self, ident: bytes, sub: int, upto: int) -> dict[str, Any]:
        self.hub.ack(ident, sub, upto)
        return {}

    def op_unsubscribe(self, ident: bytes, sub: int) -> dict[str, Any]:
        self.hub.unsubscribe(ident, sub)
        return {}

    def op_ping(self, ident: bytes, sub: int | None = None) -> dict[str, Any]:
        if sub is not None:
            self.hub.pump(self.hub.own(ident, sub))
        return {"time": self.wall()}

    def _pending(self, session: str, request_id: str) -> permissions.PendingRequest:
        self._session(session)
        req = self.pool.pending(session, request_id)
        if req is None:
            raise OpError(ErrorCode.NOT_FOUND, f"no pending request {request_id} in '{session}' (answered"
                          " already, timed out, or its Claude stopped)")
        return req

    def _send_answer(self, session: str, permit: _wire.Permit) -> None:
        if not self.pool.answer(session, permit):
            raise OpError(ErrorCode.NOT_FOUND, f"no pending request {permit.request_id} in '{session}'")

    def op_permit(self, ident: bytes, session: str, request_id: str, allow: bool, message: str | None = None,
                  always: bool = False, mode: PermissionMode | None = None,
                  directory: str | None = None) -> dict[str, Any]:
        req = self._pending(session, request_id)
        if directory is not None and not always:
            raise OpError(ErrorCode.BAD_REQUEST, "'directory' is where 'always' allows a file tool, with 'always'")
        plan = req.tool_name == permissions.PLAN_TOOL
        if not allow:
            if always or mode is not None:
                raise OpError(ErrorCode.BAD_REQUEST, "'always' and 'mode' go with allow, not deny")
            text = message or ("The user wants to keep planning: revise the plan." if plan else None)
            decision = _claude.deny_decision(text)
            self._send_answer(session, _wire.Permit(request_id, decision, {"allow": False, "by": "user",
                                                                            "message": decision["message"]}))
            return {"allow": False}
        if req.tool_name == permissions.QUESTION_TOOL:
            raise OpError(ErrorCode.BAD_REQUEST, "a question is answered with 'answer' (its labels), or denied")
        if always and plan:
            raise OpError(ErrorCode.BAD_REQUEST, "a plan is approved once; 'always' is for tool calls")
        if mode is not None and not plan:
            raise OpError(ErrorCode.BAD_REQUEST, "'mode' goes with approving a plan (ExitPlanMode)")
        updates: list[dict[str, Any]] = []
        rules: list[str] = []
        report: dict[str, Any] = {"allow": True, "by": "user"}
        if always:
            update, rules = permissions.always_allow(req, self._session(session).cwd, directory)
            if not rules:
                raise OpError(ErrorCode.BAD_REQUEST, f"a {req.tool_name} call here has no scope 'always' could"
                              " be kept to (never every command or every file): allow it once instead")
            updates.append(update)
            report["always"] = rules
        if plan:  # approved: Claude leaves plan mode, into the mode the user picked
            mode = mode or PermissionMode.ASK
            if mode is PermissionMode.PLAN:
                raise OpError(ErrorCode.BAD_REQUEST, "approving a plan leaves plan mode: pick ask or accept-edits")
            self._check_mode(mode)
            updates.append(permissions.set_mode_update(mode))
            report["mode"] = mode.value
        self._send_answer(session, _wire.Permit(request_id, _claude.allow_decision(req.input, updates), report,
                                                rules=tuple(rules), mode=mode.value if mode else None))
        settings: dict[str, Any] = {}
        if rules:
            rec = self._session(session)
            settings["allowed_tools"] = permissions.merged_rules(rec.allowed_tools, rules)
        if mode is not None:
            settings["mode"] = mode.value
        if settings:
            self.events.record(session, EventKind.SETTINGS, settings)
        return {"allow": True, **({"always": rules} if rules else {}), **({"mode": mode.value} if mode else {})}

    def op_answer(self, ident: bytes, session: str, request_id: str, answers: list[list[str]]) -> dict[str, Any]:
        req = self._pending(session, request_id)
        updated, chosen = permissions.answered_input(req, answers)
        self._send_answer(session, _wire.Permit(request_id, _claude.allow_decision(updated),
                                                {"allow": True, "by": "user", "answers": chosen}))
        return {"answers": chosen}

    # always-allow rules -------------------------------------------------------------------

    def op_rules(self, ident: bytes, session: str) -> dict[str, Any]:
        """The session's always-allow rules, numbered from 1 in the order they were given."""
        return {"rules": list(self._session(session, allow_archived=True).allowed_tools)}

    def op_remove_rule(self, ident: bytes, session: str, index: int | None = None,
                       rule: str | None = None) -> dict[str, Any]:
        """Forget one rule (by its number, or by its text): kept in the store at once, and
        a live Claude restarts with the rest (``--resume``) once no turn runs."""
        rec = self._session(session)
        rules = list(rec.allowed_tools)
        if (index is None) == (rule is None):
            raise OpError(ErrorCode.BAD_REQUEST, "give the rule's 'index' or its text ('rule'), one of them")
        if rule is not None:
            if rule not in rules:
                raise OpError(ErrorCode.NOT_FOUND, f"session '{session}' has no rule {rule}")
            index = rules.index(rule) + 1
        assert index is not None
        if not 1 <= index <= len(rules):
            raise OpError(ErrorCode.NOT_FOUND, f"session '{session}' has {len(rules)} rule(s); no rule {index}")
        removed = rules.pop(index - 1)
        self.events.record(session, EventKind.SETTINGS, {"allowed_tools": rules})
        self.pool.command(session, _wire.SetRules(tuple(rules)))
        return {"removed": removed, "rules": rules}

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

    # the session's git changes -----------------------------------------------------------

    def op_diff(self, ident: bytes, session: str, path: str | None = None) -> LaterReply:
        """The session's git working-tree changes (``_gitdiff``), replied once git has
        answered (it runs as a subprocess, never blocking the loop)."""
        cwd = self._session(session, allow_archived=True).cwd
        reply = LaterReply()

        async def run() -> None:
            try:
                reply.resolve(await working_tree_diff(self.pool.clock, cwd, path))
            except OpError as exc:
                reply.reject(exc)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return reply

    # schedules ----------------------------------------------------------------------------

    def _scheduled_send(self, session: str, text: str, origin: str | None, key: str) -> None:
        self.op_send(b"", session=session, text=text, origin=origin, idempotency_key=key)

    def op_schedule_add(self, ident: bytes, session: str, when: str, prompt: str | None = None,
                        origin: str | None = None, tz: str | None = None) -> dict[str, Any]:
        """A schedule: ``when`` is a cron expression or a plain form (``weekdays 9:00``),
        followed by the prompt unless ``prompt`` is given."""
        self._session(session)
        return self.scheduler.add(session, when, prompt, origin, tz).public()

    def op_schedules(self, ident: bytes, session: str | None = None) -> dict[str, Any]:
        return {"schedules": [s.public() for s in self.scheduler.store.schedules()
                              if session is None or s.session == session]}

    def op_schedule_set(self, ident: bytes, schedule: int, paused: bool) -> dict[str, Any]:
        return self.scheduler.set_paused(schedule, paused).public()

    def op_schedule_remove(self, ident: bytes, schedule: int) -> dict[str, Any]:
        return self.scheduler.remove(schedule).public()

    # budgets ------------------------------------------------------------------------------

    def op_budget(self, ident: bytes, session: str | None = None) -> dict[str, Any]:
        """Spend today and this month per session (one, or every one not archived) and in
        total, with the daily caps."""
        if session is not None:
            names = [self._session(session, allow_archived=True).name]
        else:
            names = [r.name for r in self.store.list_sessions(include_archived=False)]
        return self.pool.budgets.report(names)

    def op_set_budget(self, ident: bytes, usd: float | None, session: str | None = None,
                      tz: str | None = None) -> dict[str, Any]:
        """Set (or with ``usd: null`` clear) a session's daily cap, or without ``session``
        the daily cap for all sessions; ``tz``: the zone its day is counted in from now on.
        Live Claudes get what is left at once (restarted with ``--resume`` after their turn)."""
        if session is not None:
            self._session(session)
        if tz is not None:
            zone(tz)  # (bad_request for an unknown one, before anything changes)
            self.store.set_budget_zone(session or ALL_SESSIONS, tz)
        self.store.set_budget(session or ALL_SESSIONS, usd)
        self._budgets_changed()
        return self.pool.budgets.report([session] if session is not None else [])

    def _budgets_changed(self) -> None:
        """Give the live Claudes what is left of the caps now."""
        self.pool.budgets.rebalance([name for name in sorted(self.pool.handles) if self.pool.handle_of(name)])

    def op_kv_get(self, ident: bytes, key: str) -> dict[str, Any]:
        return {"value": self.store.kv_get(key)}

    def op_kv_set(self, ident: bytes, key: str, value: Any) -> dict[str, Any]:
        if not self.store.kv_set(key, value, max_keys=MAX_KV_KEYS):
            raise OpError(ErrorCode.BAD_REQUEST, f"the kv holds {MAX_KV_KEYS} keys, its limit; delete some first")
        return {}

    def op_kv_delete(self, ident: bytes, key: str) -> dict[str, Any]:
        return {"existed": self.store.kv_delete(key)}

    def op_consumers(self, ident: bytes) -> dict[str, Any]:
        """The named consumers' cursors; ``stale``: not moved for the retention period, so
        no longer holding events back from pruning."""
        cutoff = self.wall() - self.config.event_retention_days * 86400
        return {"consumers": [{"consumer": name, "position": position, "moved": moved,
                               "stale": moved is not None and moved < cutoff}
                              for name, position, moved in self.store.cursor_details()]}

    def op_remove_consumer(self, ident: bytes, consumer: str) -> dict[str, Any]:
        if not self.store.remove_cursor(consumer):
            raise OpError(ErrorCode.NOT_FOUND, f"no consumer named {consumer!r} (claudectl consumers lists them)")
        log.info("consumer %s removed: it holds no events back", consumer, extra={"consumer": consumer})
        return {"consumer": consumer}

    def op_backup(self, ident: bytes, path: str, force: bool = False) -> LaterReply:
        """A consistent copy of the store at ``path`` (``_backup``), made in a worker
        thread: replied once it is written, checked and durable."""
        target = Path(path)
        check_target(target, force)
        reply = LaterReply()

        def finished(copied: asyncio.Future[dict[str, Any]]) -> None:
            if copied.cancelled():  # (the loop is closing)
                reply.reject(OpError(ErrorCode.SHUTTING_DOWN, "the supervisor stopped before the backup was done"))
                return
            error = copied.exception()
            if error is None:
                log.info("store backed up to %s", target, extra={"path": str(target)})
                reply.resolve(copied.result())
            elif isinstance(error, OpError):
                log.error("backup to %s failed: %s", target, error.message)
                reply.reject(error)
            else:  # a bug: answered all the same
                log.error("backup to %s failed: %r", target, error)
                reply.reject(OpError(ErrorCode.INTERNAL, f"the backup failed ({error!r}); see the supervisor log"))

        asyncio.get_running_loop().run_in_executor(None, backup_store, self.store.path, target) \
            .add_done_callback(finished)
        return reply

    def op_restart(self, ident: bytes) -> dict[str, Any]:
        self.request_restart()  # after this reply; keepers and their Claude keep running
        return {"pid": os.getpid()}

    def op_shutdown(self, ident: bytes) -> dict[str, Any]:
        self.request_shutdown()  # after this reply: the shutdown runs as its own task
        return {}

    # the daily driver's remainder (issue #27) ------------------------------------------------

    def op_budget_allow(self, ident: bytes, usd: float, session: str | None = None) -> dict[str, Any]:
        """Raise a cap once: ``usd`` more may be spent today by ``session`` (without it: by
        all sessions together), on top of what was spent; the cap is back tomorrow."""
        if session is not None:
            self._session(session)
        self.pool.budgets.allow(session or ALL_SESSIONS, usd)
        self._budgets_changed()
        return self.pool.budgets.report([session] if session is not None else [])

    def op_add_rule(self, ident: bytes, session: str, tool: str, scope: str) -> dict[str, Any]:
        """Always allow ``tool`` in ``scope`` from now on: a file tool in a directory, a Bash
        command prefix, WebFetch for a domain (``permissions.user_rule``). Kept in the store
        at once; a live Claude restarts with it (``--resume``) once no turn runs."""
        rec = self._session(session)
        rule = permissions.user_rule(tool, scope, rec.cwd)
        rules = permissions.merged_rules(rec.allowed_tools, [rule])
        self.events.record(session, EventKind.SETTINGS, {"allowed_tools": rules})
        self.pool.command(session, _wire.SetRules(tuple(rules)))
        return {"added": rule, "rules": rules}


__all__ = ["ALLOWED_WHILE_STOPPING", "Ops", "control_endpoint"]
