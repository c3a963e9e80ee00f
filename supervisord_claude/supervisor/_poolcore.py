"""The keeper pool's core (``PoolCore``): its parts, each session's ``LiveSession``
(what the op handlers ask and act through), the adoption window at start-up, moving a
session's messages towards Claude — to its keeper, or a new one forked with them — and
stopping every keeper at shutdown. The fork server's reports and keeper exits are
``_poolexits``; the keepers' messages, ``_pool``.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from typing import Any, Protocol

from protocol import EventKind, Reason, SessionState

from .. import _wire
from .._claude import outbox_prompt
from .._clock import Clock
from .._configkeys import Config
from .._os import System
from ._attachments import Attachments
from ._budgets import Budgets
from ._eventlog import EventLog
from ._live import (
    AfterExit,
    Delivery,
    KeeperHandle,
    KeeperLink,
    LiveSession,
    Shared,
)
from ._store import DONE, FAILED, QUEUED, WRITTEN, SessionRecord, Store

log = logging.getLogger("supervisord_claude")


class ForkServer(Protocol):
    """Where keepers come from (the real one, or a fake in tests)."""

    def spawn(self, token: int, spec: _wire.KeeperSpec) -> None: ...


class PoolListener(Protocol):
    """What the rest of the supervisor is told by the pool, and the one thing it asks
    (given to the pool when it is made: ``build_core``'s)."""

    def holds(self, session: str) -> bool:
        """The terminal side holds the session (open in Claude Code's own terminal UI, or
        on its way there): it gets no keeper and no message."""

    def state_reported(self, session: str, state: str) -> None:
        """A keeper reported the session's state (stored and published already)."""

    def keeper_gone(self, session: str) -> None:
        """The session's keeper is gone and nothing was archived."""

    def all_keepers_gone(self) -> None: ...

    def watch_exit(self, pid: int) -> None:
        """Watch the exit of a keeper that is no child of our fork server (adopted, or its
        fork server died): a pidfd in the supervisor."""

    def delta(self, session: str, message_id: int | None, text: str, origin: str | None) -> None:
        """Live text of a running turn."""

    def adopted(self, session: str, busy: bool, message_id: int | None, pending: list[dict[str, Any]]) -> None:
        """A keeper a previous supervisor left was taken over: whether it answers a message
        (which), and the requests its Claude waits on."""


class PoolCore:
    def __init__(self, config: Config, instance: str, store: Store, events: EventLog, system: System,
                 clock: Clock, wall: Callable[[], float], fork: ForkServer, link: KeeperLink,
                 budgets: Budgets, attachments: Attachments, listener: PoolListener) -> None:
        self.config = config
        self.instance = instance
        self.store = store
        self.events = events
        self.system = system
        self.clock = clock
        self.wall = wall
        self._budgets = budgets  # (what each Claude may spend: --max-budget-usd)
        self._attachments = attachments
        self._fork = fork
        self._link = link
        self._listener = listener
        self._shared = Shared(store, link, clock, system, config.interrupt_timeout)
        self._sessions: dict[str, LiveSession] = {}
        self._by_pid: dict[int, KeeperHandle] = {}
        self._by_token: dict[int, KeeperHandle] = {}
        self._tokens = 0
        self._stopping = False
        #: during start-up: pid -> session of keepers a previous supervisor left, to adopt
        self._adoptable: dict[int, str] = {}
        self._to_ack: set[int] = set()
        #: sessions whose conversation exists, which the store failed to record (see
        #: ``KeeperPool._conversation_started``; forgotten when the session starts a fresh
        #: one: ``fresh_conversation``)
        self._unstored_started: set[str] = set()
        #: messages the user dropped while what the session's adopted keeper did with them
        #: was not known yet, by session (see ``drop_queued``)
        self._drop_when_known: dict[str, set[int]] = {}
        self._ack_armed = False

    # the live sessions ------------------------------------------------------------------

    def session(self, name: str) -> LiveSession:
        """The session's owner object (made the first time it is asked for)."""
        live = self._sessions.get(name)
        if live is None:
            live = self._sessions[name] = LiveSession(name, self._shared)
        return live

    def _handle(self, session: str) -> KeeperHandle | None:
        live = self._sessions.get(session)
        return live.keeper if live is not None else None

    def with_keepers(self) -> list[LiveSession]:
        """The sessions that have a keeper, by name."""
        return [live for _, live in sorted(self._sessions.items()) if live.keeper is not None]

    def keeper_names(self) -> list[str]:
        """The sessions that have a keeper."""
        return [name for name, live in self._sessions.items() if live.keeper is not None]

    def answering(self) -> list[str]:
        """The sessions whose keeper holds messages (a turn running or waiting): they share
        the room of the daily cap for all (``Budgets.left``)."""
        return [name for name, live in self._sessions.items() if live.keeper is not None and live.keeper.forwarded]

    def give_budget(self, session: str, usd: float | None) -> None:
        """What the session's Claude may spend now: it takes it before its next turn."""
        self.session(session).command(_wire.SetBudget(usd))

    def waiting(self) -> list[LiveSession]:
        """The sessions with messages Claude has not started on, by name."""
        return [live for _, live in sorted(self._sessions.items()) if live.queued()]

    def pids_of(self, session: str) -> dict[str, int | None]:
        live = self._sessions.get(session)
        return live.pids() if live is not None else {}

    @property
    def running(self) -> int:
        """Keeper processes that exist (forked and not reported gone)."""
        return len(self._by_pid)

    def enqueue(self, session: str, message_id: int, size: int | None = None, own_turn: bool = False) -> None:
        self.session(session).add(message_id, size, own_turn)
        self.dispatch(session)

    def requeue_owed(self) -> None:
        """After a restart: messages accepted before it are still owed, in the order they
        came (those an adopted keeper holds or steered are its own: handed to it again,
        Claude would get them twice); each session's are moved on — to an adopted keeper
        once its reports from before the restart are stored (``KeeperHandle.resend_until``:
        one it took and reported to the previous supervisor, which died before storing
        that, is not owed; ``hand_over`` skips it then)."""
        held = {i for live in self._sessions.values() if live.keeper for i in live.keeper.holds()}
        owed = self.store.messages(None, QUEUED)
        self._attachments.sweep(((m.id, m.attachments) for m in owed + self.store.messages(None, WRITTEN)),
                                (s.name for s in self.store.list_sessions()))
        for msg in owed:
            if msg.id not in held:  # (sent with queue: it still waits for a turn of its own)
                self.session(msg.session).add(msg.id, own_turn=msg.own_turn)
        for name in sorted(self._sessions):
            self.dispatch(name)

    def drop_queued(self, session: str) -> None:
        """The user drops the session's messages that wait here (``DROPPED``; those its
        keeper holds, it drops itself). While its adopted keeper's reports from before the
        restart are not stored (``KeeperHandle.resend_until``), a message the store calls
        queued may be one Claude has had: they are dropped once that is known (``dispatch``),
        each one Claude had left to its answer."""
        live = self.session(session)
        if live.keeper is not None and live.keeper.resend_until is not None:
            self._drop_when_known.setdefault(session, set()).update(live.queue)
        else:
            self.events.fail_messages(session, live.take_queued(), _wire.DROPPED)

    def _drop_known(self, live: LiveSession) -> None:
        """What the user dropped while it was not known: now the store says which of those
        are still owed, and those are dropped."""
        ids = self._drop_when_known.pop(live.name)
        dropped = [i for i in live.queue if i in ids]
        live.queue = collections.deque(i for i in live.queue if i not in ids)
        owed = [i for i in dropped if (msg := self.store.get_message(i)) is not None and msg.status == QUEUED]
        self.events.fail_messages(live.name, owed, _wire.DROPPED)

    def archive_after_exit(self, session: str) -> bool:
        """Stop the session's keeper and archive the session once it has exited; False
        if it has no keeper (archive it now)."""
        handle = self._handle(session)
        if handle is None:
            return False
        handle.then = AfterExit.ARCHIVE
        self.session(session).command(_wire.Stop(Reason.REQUESTED.value))
        return True

    def fresh_conversation(self, session: str) -> None:
        """The session starts a fresh conversation (its new ``session_id`` and ``started``
        0 are stored): that its old one exists, should that still wait for the store
        (``_unstored_started``), is forgotten — the next Claude would be started with
        ``--resume`` of the new id (which fails), and the write tried again would mark the
        fresh one started. (An archived session keeps its conversation: not forgotten.)"""
        self._unstored_started.discard(session)

    def archive_now(self, session: str) -> None:
        live = self._sessions.pop(session, None)
        self._drop_when_known.pop(session, None)  # (every message of it fails now)
        ids = live.take_queued() if live is not None else []
        self.events.fail_messages(session, ids, f"session '{session}' was archived")
        self._attachments.drop_session(session)
        self.events.record(session, EventKind.STATE,
                           {"state": SessionState.ARCHIVED.value, "reason": Reason.REQUESTED.value})

    def message_done(self, session: str, message_id: int) -> None:
        """The event log stored a message's turn event: it is no longer in flight (and
        once its turn is over, its attachment copies join what the session keeps)."""
        live = self._sessions.get(session)
        if live is not None:
            live.done(message_id)
        self._budgets.rebalance(self.keeper_names())  # (a turn's cost counted, or one session less waiting)
        if self._attachments.holds(message_id):
            msg = self.store.get_message(message_id)
            if msg is None or msg.status in (DONE, FAILED):
                self._attachments.release(message_id)

    # start-up: keepers a previous supervisor left ---------------------------------------

    def expect(self, adoptable: dict[int, str]) -> None:
        """Keepers a previous supervisor left (pid -> session): each is taken over when it
        says hello, until ``stop_adopting``."""
        self._adoptable = dict(adoptable)

    @property
    def awaiting_adoption(self) -> bool:
        return bool(self._adoptable)

    def stop_adopting(self) -> tuple[list[int], frozenset[str]]:
        """The adoption window closed: the pids that never said hello (to reap), and the
        sessions whose keeper was adopted."""
        stale, self._adoptable = sorted(self._adoptable), {}
        return stale, frozenset(live.name for live in self._sessions.values() if live.keeper and live.keeper.adopted)

    # dispatch -------------------------------------------------------------------------

    def dispatch(self, session: str) -> None:
        """Move queued messages towards Claude: to the live keeper, or start one."""
        live = self._sessions.get(session)
        if live is None:
            return
        if session in self._drop_when_known and (live.keeper is None or live.keeper.resend_until is None):
            self._drop_known(live)
        if not live.queue or self._stopping or self._listener.holds(session):
            return
        if live.deliver() is Delivery.NEEDS_KEEPER:
            self._spawn(live)
        self._budgets.rebalance(self.keeper_names())  # (one more session may be waiting for an answer)

    def _spawn(self, live: LiveSession) -> None:
        session = live.name
        rec = self.store.get_session(session)
        if rec is None or rec.state is SessionState.ARCHIVED:
            self.events.fail_messages(session, live.take_queued(), f"session '{session}' was archived")
            return
        if not os.path.isdir(rec.cwd):  # removed, or the state dir holding it moved
            problem = (f"the directory of session '{session}', {rec.cwd}, does not exist; restore it, or move the"
                       f" session to another (claudectl cd {session} DIR, or /cd in Telegram)")
            log.warning("not starting %s: its directory %s does not exist", session, rec.cwd,
                        extra={"session": session})
            self.events.fail_messages(session, live.take_queued(), problem)
            return
        self._tokens += 1
        handle = KeeperHandle(session, self._tokens)
        messages = live.hand_over(handle)
        budget = self._budgets.left(rec.name)
        self._budgets.given(rec.name, budget)
        spec = _wire.KeeperSpec(
            session=rec.name,
            instance=self.instance,
            runtime_dir=str(self.config.runtime_dir),
            claude_bin=self.config.claude_bin,
            cwd=rec.cwd,
            session_id=rec.session_id,
            started=rec.started or rec.name in self._unstored_started,
            idle_timeout=rec.idle_timeout or self.config.idle_timeout,
            model=rec.model,
            system_prompt=self.system_prompt(rec),
            extra_args=self.claude_args(session),
            permission_mode=rec.permission_mode,
            allowed_tools=tuple(rec.allowed_tools),
            permission_timeout=self.config.permission_timeout,
            # how long the session saw no activity (the end of its last turn), not how long
            # it was suspended: what a user means by "idle for 15 min"
            idle_for=max(0.0, self.wall() - rec.last_active) if rec.started else None,
            cost_baseline=rec.claude_cost,
            orphan_timeout=self.config.orphan_timeout,
            messages=tuple(messages),
            budget_usd=budget,
            fork_from=self.store.fork_source(rec.name),
        )
        live.keeper = handle
        self._by_token[handle.token] = handle
        self._fork.spawn(handle.token, spec)

    def system_prompt(self, rec: SessionRecord) -> str:
        """What every Claude of the session is told besides Claude Code's own prompt: its
        persona, and where files for the user go (the outbox)."""
        persona = self.config.personas.get(rec.persona) if rec.persona else None
        return "\n\n".join(p for p in (persona.prompt if persona else None, outbox_prompt(rec.cwd)) if p)

    def claude_args(self, session: str) -> tuple[str, ...]:
        """The configured extra arguments, and the session's attachments directory (Claude
        reads the copies of files that are not images there, by path)."""
        attachments = self._attachments.session_dir(session)
        with contextlib.suppress(OSError):
            attachments.mkdir(mode=0o700, parents=True, exist_ok=True)
        return (*self.config.claude_args, "--add-dir", str(attachments))

    # shutdown ---------------------------------------------------------------------------

    def stop_all(self) -> int:
        """Ask every keeper to stop (shutdown); returns how many there are."""
        self._stopping = True
        live = self.with_keepers()
        for each in live:
            each.command(_wire.Stop(Reason.SHUTDOWN.value))
        return len(live)

    def kill_all(self) -> None:
        for pid, handle in list(self._by_pid.items()):
            self.system.kill(pid, signal.SIGKILL)
            if handle.claude_pid:
                self.system.killpg(handle.claude_pid, signal.SIGKILL)

    def describe(self) -> dict[str, Any]:
        return {live.name: live.keeper.phase.value for live in self.with_keepers() if live.keeper}
