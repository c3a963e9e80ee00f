"""What every op handler has (``OpsBase``): the parts it works over — the store, the keeper
pool and its ``LiveSession``s, the subscription hub, the event log, the terminal side —
and the checks several areas share (the session named, a permission mode allowed, the
queue's limits, a session held by a terminal). The handlers are in ``_opsessions``,
``_opmessages``, ``_opprompts``, ``_opsubscriptions`` and ``_opadmin``; ``_ops.Ops`` puts
them together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from protocol import (
    ErrorCode,
    Op,
    PermissionMode,
    SessionState,
)

from .._clock import Clock
from .._configkeys import Config
from .._errors import OpError
from .._os import System
from ._attachments import Attachments
from ._budgets import Budgets
from ._eventlog import EventLog
from ._hub import SubscriptionHub
from ._pool import KeeperPool
from ._schedules import Scheduler
from ._store import SessionRecord, Store
from ._terminal import Terminals

#: read-only ops and acks (so no delivered event is re-sent after a restart)
ALLOWED_WHILE_STOPPING = frozenset(
    {Op.HELLO, Op.STATUS, Op.LIST, Op.PING, Op.ACK, Op.UNSUBSCRIBE, Op.KV_GET, Op.CONSUMERS, Op.SHUTDOWN,
     Op.RULES, Op.SCHEDULES, Op.BUDGET}
)


class OpsBase:
    """The parts (set by ``Ops.__init__``) and the shared checks."""

    config: Config
    instance: str
    store: Store
    pool: KeeperPool
    hub: SubscriptionHub
    events: EventLog
    budgets: Budgets
    attachments: Attachments
    system: System
    clock: Clock
    wall: Callable[[], float]
    request_shutdown: Callable[[], None]
    request_restart: Callable[[], None]
    stopping: bool
    limit_sources: list[Callable[[], dict[str, dict[str, int | None]]]]
    _started_monotonic: float
    _tasks: set[asyncio.Task[None]]
    scheduler: Scheduler
    activity_of: Callable[[str], dict[str, Any] | None]
    terminals: Terminals

    def _session(self, name: str, allow_archived: bool = False) -> SessionRecord:
        rec = self.store.get_session(name)
        if rec is None:
            raise OpError(ErrorCode.NOT_FOUND, f"no session named '{name}'")
        if rec.state is SessionState.ARCHIVED and not allow_archived:
            raise OpError(ErrorCode.ARCHIVED, f"session '{name}' is archived")
        return rec

    def _check_mode(self, mode: PermissionMode) -> None:
        if mode is PermissionMode.BYPASS and not self.config.allow_bypass:
            raise OpError(ErrorCode.BAD_REQUEST, "mode 'bypass' is not allowed here (the supervisor's config"
                          " needs allow_bypass = true)")

    def _held_conversations(self) -> dict[str, str]:
        """Conversation id -> the name of the session of ours that continues it."""
        return {rec.session_id: rec.name for rec in self.store.list_sessions(True)}

    def _queue_limit(self) -> dict[str, int]:
        return {"messages": self.config.max_queued_messages, "bytes": self.config.max_queued_bytes}

    def _terminal(self, session: str) -> dict[str, Any] | None:
        term = self.terminals.of(session)
        return term.public() if term is not None else None

    def _refuse_attached(self, session: str) -> None:
        term = self.terminals.of(session)
        where = f" ({term.tty or 'no tty'}, pid {term.pid})" if term is not None else ""
        raise OpError(ErrorCode.BUSY, f"session '{session}' is open in a terminal{where}; it is the terminal's until"
                      " that Claude exits")
