"""One live session's keeper as the supervisor sees it: ``KeeperHandle``, whose life is
its ``Phase``, changed only by ``KeeperHandle.change_phase`` against ``PHASE_EDGES``.

The two orders in which a keeper's last words can arrive — its bye before the fork
server's exit report, or after it — are both phases, so no combination of flags decides
what a dying keeper means.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import _wire
from .._clock import TimerHandle
from .._permissions import PendingRequest


class Phase(enum.Enum):
    SPAWNING = "spawning"  # the fork server was asked; no pid yet
    STARTING = "starting"  # forked; its hello has not arrived
    READY = "ready"  # connected; takes messages
    DRAINING = "draining"  # connected; takes no more messages (suspending or stopping)
    SAID_BYE = "said-bye"  # said goodbye; its exit is not reported yet
    EXIT_REPORTED = "exit-reported"  # its process is gone; its last words may be in flight
    GONE = "gone"  # done with: off the pool


P = Phase
PHASE_EDGES: dict[Phase, frozenset[Phase]] = {
    # the keeper's hello can overtake the fork server's "spawned"; a fork can fail
    P.SPAWNING: frozenset({P.STARTING, P.READY, P.GONE}),
    P.STARTING: frozenset({P.READY, P.GONE}),
    P.READY: frozenset({P.DRAINING, P.SAID_BYE, P.EXIT_REPORTED}),
    P.DRAINING: frozenset({P.SAID_BYE, P.EXIT_REPORTED}),
    P.SAID_BYE: frozenset({P.GONE}),
    P.EXIT_REPORTED: frozenset({P.GONE}),
    P.GONE: frozenset(),
}
CONNECTED = frozenset({P.READY, P.DRAINING})


class AfterExit(enum.Enum):
    NOTHING = "nothing"
    ARCHIVE = "archive"


class IllegalPhase(RuntimeError):
    """A phase change that PHASE_EDGES does not allow: a bug, never input."""


@dataclass
class KeeperHandle:
    """The supervisor's view of one keeper process."""

    session: str
    token: int
    phase: Phase = Phase.SPAWNING
    pid: int | None = None
    ident: bytes | None = None  # its routing id, once it said hello
    claude_pid: int | None = None
    #: messages handed to this keeper that are not written, answered or failed yet
    forwarded: list[int] = field(default_factory=list)
    #: permission requests its Claude waits on, by request id
    permissions: dict[str, PendingRequest] = field(default_factory=dict)
    outbox: list[_wire.Message] = field(default_factory=list)  # commands waiting for its hello
    then: AfterExit = AfterExit.NOTHING
    bye: _wire.Bye | None = None
    exit_status: int | None = None
    grace: TimerHandle | None = None  # how long its bye may trail its exit
    start_timer: TimerHandle | None = None  # how long it may take to say hello
    last_n: int = 0  # the number of its last report handled (see _wire: Numbered)
    #: not a child of our (live) fork server — taken over from a previous supervisor, or
    #: its fork server died: its exit is watched by pidfd (``KeeperPool.watch_exit``)
    adopted: bool = False
    overdue: bool = False  # killed because it did not say hello in time
    #: what it speaks: a keeper adopted after an upgrade may speak an older wire
    wire_version: int = _wire.WIRE_VERSION
    #: messages it wrote to Claude mid-turn that Claude has not taken yet (steered)
    steered: list[int] = field(default_factory=list)
    #: what waits to hear whether its interrupt was confirmed, and how long it may wait
    interrupt_waiters: list[Callable[[dict[str, Any]], None]] = field(default_factory=list)
    interrupt_timer: TimerHandle | None = None

    def change_phase(self, new: Phase) -> None:
        if new not in PHASE_EDGES[self.phase]:
            raise IllegalPhase(f"keeper of {self.session}: {self.phase.value} -> {new.value}")
        self.phase = new
