"""The op handlers: one small method per protocol op, over the store, the keeper pool,
the subscription hub and the event log. Validation already happened (``protocol``);
what cannot be carried out raises ``OpError`` with a code.

The handlers live by area, one module each (``_opsessions``, ``_opmessages``,
``_opprompts``, ``_opsubscriptions``, ``_opadmin``, ``_opdaily``; the files of a session's directory:
``_files``) over ``_opbase.OpsBase``; ``Ops`` puts
them together, with the parts and the dispatch of a request to its ``op_<name>``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from protocol import (
    ErrorCode,
    Op,
    Request,
    control_endpoint,
)

from .._clock import Clock
from .._configkeys import Config
from .._errors import OpError
from .._os import System
from ._attachments import Attachments
from ._budgets import Budgets
from ._control import LaterReply
from ._eventlog import EventLog
from ._files import FileOps
from ._hub import SubscriptionHub
from ._opadmin import AdminOps
from ._opbase import ALLOWED_WHILE_STOPPING
from ._opdaily import DailyOps
from ._opmessages import MessageOps
from ._opprompts import PromptOps
from ._opsessions import SessionOps
from ._opsubscriptions import SubscriptionOps
from ._pool import KeeperPool
from ._schedules import Scheduler
from ._store import Store
from ._terminal import Terminals

log = logging.getLogger("supervisord_claude")


class Ops(SessionOps, MessageOps, PromptOps, SubscriptionOps, AdminOps, FileOps, DailyOps):
    def __init__(self, config: Config, instance: str, store: Store, pool: KeeperPool, hub: SubscriptionHub,
                 events: EventLog, terminals: Terminals, budgets: Budgets, attachments: Attachments, system: System,
                 clock: Clock, wall: Callable[[], float], request_shutdown: Callable[[], None],
                 request_restart: Callable[[], None],
                 activity_of: Callable[[str], dict[str, Any] | None] = lambda session: None) -> None:
        self.config = config
        self.instance = instance
        self.store = store
        self.pool = pool
        self.hub = hub
        self.events = events
        self.budgets = budgets
        self.attachments = attachments
        self.system = system
        self.clock = clock
        self.wall = wall
        # uptime is counted on the monotonic clock: a wall clock stepped back must not make it negative
        self._started_monotonic = clock.monotonic()
        self.request_shutdown = request_shutdown
        self.request_restart = request_restart
        self.stopping = False
        #: what is near a limit, for ``status``: each source gives {name: {used, limit}}
        self.limit_sources: list[Callable[[], dict[str, dict[str, int | None]]]] = []
        self._tasks: set[asyncio.Task[None]] = set()  # (replies being worked out: kept from the GC)
        #: schedules: each run is a send like any other (started once the store is recovered)
        self.scheduler = Scheduler(store, clock, wall, self._scheduled_send, config.timezone)
        #: what a session's running turn does now (the watcher's ``activity``), or None
        self.activity_of = activity_of
        #: sessions open in Claude Code's own terminal UI (``attach``)
        self.terminals = terminals

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


__all__ = ["ALLOWED_WHILE_STOPPING", "Ops", "control_endpoint"]
