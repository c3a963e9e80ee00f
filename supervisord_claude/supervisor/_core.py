"""The supervisor's socket-free parts wired together (``build_core`` → ``Core``): the
store, the event log, the subscription hub, the keeper pool with its ``LiveSession``s,
the terminal side, the op handlers and the watcher; what the pool tells the others
(``CoreListener``) and what the event log tells them (``CoreEventListener``); recovering the store after a restart (``Core.recover``). Tests drive
the whole lifecycle in-process with it (a fake fork server, a recording keeper link, a
``FakeClock``); ``_supervisor.Supervisor`` adds the sockets, signals and the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from protocol import (
    EventKind,
    Reason,
    SessionState,
    instance_id,
)

from .._clock import Clock
from .._configkeys import Config
from .._os import System
from ._attachments import ATTACHMENTS_DIR, Attachments
from ._budgets import Budgets
from ._eventlog import EventLog
from ._hub import Send, SubscriptionHub
from ._live import KeeperLink
from ._ops import Ops
from ._pool import ForkServer, KeeperPool
from ._store import WRITTEN, Store
from ._terminal import Terminals
from ._watch import REPLAY_EVENTS, Watcher


@dataclass
class Core:
    """The supervisor's socket-free parts, wired together."""

    config: Config
    instance: str
    store: Store
    events: EventLog
    hub: SubscriptionHub
    pool: KeeperPool
    ops: Ops
    watch: Watcher

    def requeue_owed(self) -> None:
        """Messages accepted before a restart are still owed, in the order they came
        (those an adopted keeper holds are its own). Sessions open in a terminal are
        watched again first: what waits for them waits on."""
        self.ops.terminals.restore()
        self.pool.requeue_owed()

    def recover(self, adopted: frozenset[str] = frozenset()) -> None:
        """After a restart only adopted keepers run: every other live session is suspended,
        and every message Claude was answering in one is reported failed (to its sender:
        the event log adds its origin), each an event like any other."""
        with self.events.batch():
            for rec in self.store.list_sessions(True):
                if rec.state.live and rec.name not in adopted:
                    self.events.record(rec.name, EventKind.STATE,
                                       {"state": SessionState.SUSPENDED.value, "reason": Reason.STARTUP.value})
            for msg in self.store.messages(None, WRITTEN):
                if msg.session not in adopted:  # (an adopted keeper is still answering it)
                    self.events.record(msg.session, EventKind.MESSAGE_FAILED, {
                        "message_id": msg.id,
                        "reason": "the supervisor stopped while Claude was answering; send it again"})

    def mark_stopped(self) -> None:
        """After shutdown: a session the store still calls live gets its suspension as an
        event, like every other state change."""
        for rec in self.store.list_sessions(True):
            if rec.state.live:
                self.events.record(rec.name, EventKind.STATE,
                                   {"state": SessionState.SUSPENDED.value, "reason": Reason.SHUTDOWN.value})


class CoreListener:
    """What the pool tells the rest of the core (``PoolListener``): live text to the hub
    and the watcher, adopted turns to the watcher, states and exits to the terminal side,
    exits to watch and the last keeper gone to the supervisor."""

    def __init__(self, store: Store, hub: SubscriptionHub, watch: Watcher, watch_exit: Callable[[int], None],
                 all_gone: Callable[[], None]) -> None:
        self._store = store
        self._hub = hub
        self._watch = watch
        self._watch_exit = watch_exit
        self._all_gone = all_gone
        #: the terminal side acts through the pool, which tells it of states and exits:
        #: the one cycle of the core, closed by ``build_core`` once both exist
        self.terminals: Terminals | None = None

    def holds(self, session: str) -> bool:
        return self.terminals is not None and self.terminals.holds(session)

    def state_reported(self, session: str, state: str) -> None:
        if self.terminals is not None:
            self.terminals.state_reported(session, state)

    def keeper_gone(self, session: str) -> None:
        if self.terminals is not None:
            self.terminals.keeper_gone(session)

    def all_keepers_gone(self) -> None:
        self._all_gone()

    def watch_exit(self, pid: int) -> None:
        self._watch_exit(pid)

    def delta(self, session: str, message_id: int | None, text: str, origin: str | None) -> None:
        self._watch.output(session, message_id)
        self._hub.delta(session, message_id, text, origin)

    def adopted(self, session: str, busy: bool, message_id: int | None, pending: list[dict[str, Any]]) -> None:
        """The watcher sees an adopted keeper's turn as the previous supervisor did."""
        rec = self._store.get_session(session)
        if rec is not None and (busy or pending):
            start = self._store.event_id_at_seq(session, max(0, rec.last_seq - REPLAY_EVENTS))
            self._watch.replay(session, [(e.kind, e.message_id, e.body, e.ts)
                                         for e in self._store.stored_after(start, session, REPLAY_EVENTS)])
        self._watch.adopted(session, busy, message_id, pending)
        if busy:
            self._hub.began_before(session, message_id)


class CoreEventListener:
    """What the event log tells the rest of the core (``EventListener``): every event
    recorded to the watcher, messages done to the pool and the pool's pids to its log
    lines. The pool records through the event log, so it is given here once both exist
    (``build_core``): until then nothing is done, and there are no pids."""

    def __init__(self, watch: Watcher) -> None:
        self._watch = watch
        self.pool: KeeperPool | None = None

    def recorded(self, session: str, kind: EventKind, message_id: int | None, body: dict[str, Any] | None,
                 packed: bytes | None) -> None:
        self._watch.event(session, kind, message_id, body, packed)

    def message_done(self, session: str, message_id: int) -> None:
        if self.pool is not None:
            self.pool.message_done(session, message_id)

    def pids_of(self, session: str) -> dict[str, int | None]:
        return self.pool.pids_of(session) if self.pool is not None else {}


def build_core(config: Config, store: Store, system: System, clock: Clock, wall: Callable[[], float],
               fork: ForkServer, link: KeeperLink, send: Send,
               request_shutdown: Callable[[], None], request_restart: Callable[[], None],
               watch_exit: Callable[[int], None] = lambda pid: None,
               all_keepers_gone: Callable[[], None] = lambda: None) -> Core:
    """``watch_exit``: watch an adopted keeper's exit (a pidfd in the supervisor);
    ``all_keepers_gone``: the last keeper is gone (a shutdown waits for it)."""
    instance = instance_id(config.runtime_dir)
    hub = SubscriptionHub(store, send, clock)
    # (the room of the cap for all is shared by the sessions whose keeper holds messages;
    # the budgets ask the pool only once keepers run: it exists then)
    budgets = Budgets(config, store, wall, busy=lambda: pool.answering(),
                      give=lambda session, usd: pool.give_budget(session, usd))
    attachments = Attachments(config.state_dir / ATTACHMENTS_DIR, config.max_attachment_bytes)
    # (the watcher asks the pool for Claude's pid only once turns run: the pool exists then)
    # (the watcher records its own events through the event log, which tells it of every
    # event: it is given a way to the event log, which exists before its first event)
    watch = Watcher(clock, wall, system, lambda session, kind, body: events.record(session, kind, body),
                    lambda session: pool.pids_of(session).get("claude_pid"),
                    config.stall_after, config.stall_cpu_percent, config.remind_after, config.permission_timeout)
    told = CoreEventListener(watch)
    events = EventLog(store, clock, wall, hub.publish, told)
    listener = CoreListener(store, hub, watch, watch_exit, all_keepers_gone)
    pool = KeeperPool(config, instance, store, events, system, clock, wall, fork, link, budgets, attachments,
                      listener)
    terminals = Terminals(config, store, pool, events, system, clock, wall)
    listener.terminals = terminals
    told.pool = pool
    ops = Ops(config, instance, store, pool, hub, events, terminals, budgets, attachments, system, clock, wall,
              request_shutdown, request_restart, watch.activity)
    return Core(config, instance, store, events, hub, pool, ops, watch)


__all__ = ["Core", "CoreEventListener", "CoreListener", "build_core"]
