"""One live session as the supervisor holds it: ``LiveSession``, the one owner of what
the supervisor knows of a session while it lives — the messages that wait for Claude,
its keeper process (``KeeperHandle``), what that keeper last said the session does,
the permission requests its Claude waits on — and the one way to its keeper.

The op handlers and the terminal side ask and act through it (``KeeperPool.session``);
the pool owns the processes (spawning, the fork server's reports, the keeper socket's
messages, exits) and keeps each session's ``LiveSession`` current.

A handle's life is its ``Phase``, changed only by ``KeeperHandle.change_phase`` against
``PHASE_EDGES``. The two orders in which a keeper's last words can arrive — its bye
before the fork server's exit report, or after it — are both phases, so no combination
of flags decides what a dying keeper means.
"""

from __future__ import annotations

import collections
import enum
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from protocol import SessionState

from .. import _wire
from .._clock import Clock, TimerHandle
from .._os import System
from .._permissions import PendingRequest
from ._attachments import copied_bytes
from ._store import QUEUED, Message, Store

log = logging.getLogger("supervisord_claude")
#: a session state by its wire name
_STATES = {state.value: state for state in SessionState}


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
    #: how long it may take to say hello (adopted: to send its reports again, ``resend_until``)
    start_timer: TimerHandle | None = None
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
    #: what it last said the session does (its last ``state`` event; its hello's, if adopted)
    state: SessionState | None = None
    #: adopted: the number of its last report when it said hello, until every report up
    #: to it is handled and stored. Its reports the previous supervisor had not stored say
    #: which messages it took (written to Claude, answered, failed): until they are, a
    #: message the store still calls queued may be one Claude has had, and none is handed
    #: to it (Claude would get it twice). None: nothing to wait for
    resend_until: int | None = None

    def holds(self) -> list[int]:
        """The messages it has from us and Claude has not started on or taken: those it
        holds (``forwarded``) and those it wrote mid-turn (``steered``)."""
        return [*self.forwarded, *self.steered]

    def reported(self, state: str) -> None:
        self.state = _STATES.get(state, self.state)

    def change_phase(self, new: Phase) -> None:
        if new not in PHASE_EDGES[self.phase]:
            raise IllegalPhase(f"keeper of {self.session}: {self.phase.value} -> {new.value}")
        self.phase = new


def message_bytes(text: str, attachments: list[str]) -> int:
    """What a waiting message holds: its text (in the store and the keeper) and its
    attachment copies (on disk)."""
    return len(text.encode()) + copied_bytes(attachments)


def _to_wire(msg: Message, steer: bool) -> _wire.QueuedMessage:
    return _wire.QueuedMessage(msg.id, msg.text, tuple(msg.attachments), steer)


class KeeperLink(Protocol):
    """The keeper socket: sends one message to a keeper by routing id; False if not."""

    def send(self, ident: bytes, msg: _wire.Message) -> bool: ...


@dataclass(frozen=True)
class Shared:
    """What every live session uses (the pool's)."""

    store: Store
    link: KeeperLink
    clock: Clock
    system: System
    #: how long an interrupt may wait for its keeper's word (``interrupt_timeout``)
    interrupt_timeout: float


class Delivery(enum.Enum):
    """What became of the session's waiting messages when it was asked to move them on."""

    NOTHING = "nothing"  # none waits
    SENT = "sent"  # handed to its keeper
    #: its keeper is starting (they go on hello), leaving (a new one starts after it), or
    #: adopted and its reports from before the restart are not stored yet (``resend_until``)
    WAITS = "waits"
    NEEDS_KEEPER = "needs-keeper"  # it has none: the pool starts one


class LiveSession:
    """One session while the supervisor holds anything of it: its waiting messages, its
    current keeper (``keeper``, None between keepers) and what that keeper reported.
    ``queue`` and ``keeper`` are changed by the pool only; everyone else asks and acts
    through the methods."""

    def __init__(self, name: str, shared: Shared) -> None:
        self.name = name
        self._shared = shared
        #: messages accepted and not handed to a keeper yet, in the order they go
        self.queue: collections.deque[int] = collections.deque()
        self.keeper: KeeperHandle | None = None
        #: waiting messages sent with ``queue``: they wait for a turn of their own instead
        #: of steering a running one (kept in memory: after a restart they steer)
        self.own_turn: set[int] = set()
        #: what each waiting message holds (``message_bytes``), by id, as far as known
        self._sizes: dict[int, int] = {}

    # what it is -------------------------------------------------------------------------

    @property
    def state(self) -> SessionState | None:
        """What its keeper last said the session does; None with no keeper."""
        return self.keeper.state if self.keeper is not None else None

    @property
    def busy(self) -> bool:
        """Claude is answering a message in it (its keeper said so)."""
        return self.state is SessionState.BUSY

    @property
    def has_keeper(self) -> bool:
        return self.keeper is not None

    @property
    def starting(self) -> bool:
        """It has a keeper that has not said hello yet."""
        return self.keeper is not None and self.keeper.ident is None

    @property
    def steers(self) -> bool:
        """Its keeper writes a message sent mid-turn to Claude at once (one of the
        release before an upgrade queues every message)."""
        return self.keeper is not None and self.keeper.wire_version >= _wire.STEERING_SINCE

    @property
    def quiet(self) -> bool:
        """Its keeper is connected, takes messages and holds none (can be suspended
        without a word lost)."""
        return self.keeper is not None and self.keeper.phase is Phase.READY and not self.keeper.forwarded

    def pids(self) -> dict[str, int | None]:
        keeper = self.keeper
        return {"keeper_pid": keeper.pid, "claude_pid": keeper.claude_pid} if keeper else {}

    def memory(self) -> dict[str, int | None]:
        """What its keeper and its Claude hold (None: not known)."""
        keeper, system = self.keeper, self._shared.system
        return {"claude_memory": system.memory(keeper.claude_pid) if keeper and keeper.claude_pid else None,
                "keeper_memory": system.memory(keeper.pid) if keeper and keeper.pid else None}

    # its messages -----------------------------------------------------------------------

    def waiting(self) -> list[int]:
        """Its messages Claude has not started on: queued here, held by its keeper, or
        written mid-turn and not taken by Claude yet (steered)."""
        keeper = self.keeper
        return [*self.queue, *(keeper.holds() if keeper else ())]

    def queued(self) -> int:
        return len(self.waiting())

    def queued_bytes(self) -> int:
        """What its waiting messages hold together (see ``message_bytes``)."""
        total = 0
        for message_id in self.waiting():
            size = self._sizes.get(message_id)
            if size is None:  # (queued before a restart)
                msg = self._shared.store.get_message(message_id)
                size = self._sizes[message_id] = message_bytes(msg.text, msg.attachments) if msg else 0
            total += size
        return total

    def steered(self) -> list[int]:
        """Its messages written to Claude mid-turn that it has not taken yet: they join
        the running turn or become the next one (they can no longer be dropped)."""
        return list(self.keeper.steered) if self.keeper is not None else []

    def add(self, message_id: int, size: int | None = None, own_turn: bool = False) -> None:
        """A message accepted for it waits at the end of its queue."""
        if size is not None:
            self._sizes[message_id] = size
        if own_turn:
            self.own_turn.add(message_id)
        self.queue.append(message_id)

    def put_back(self, ids: Iterable[int]) -> None:
        """Messages a keeper did not take go first again, in the order given."""
        self.queue.extendleft(reversed([i for i in ids if i not in self.queue]))

    def take_queued(self) -> list[int]:
        """Empty its queue (what its keeper holds stays); returns what was in it."""
        ids = list(self.queue)
        self.queue.clear()
        return ids

    def done(self, message_id: int) -> None:
        """A message's turn event is stored: it is no longer in flight."""
        if self.keeper is not None and message_id in self.keeper.forwarded:
            self.keeper.forwarded.remove(message_id)
        self._sizes.pop(message_id, None)
        self.own_turn.discard(message_id)

    def hand_over(self, keeper: KeeperHandle) -> list[_wire.QueuedMessage]:
        """Take its queued messages for ``keeper`` (those still queued in the store):
        they are the keeper's to answer from now on."""
        messages = []
        while self.queue:
            msg = self._shared.store.get_message(self.queue.popleft())
            if msg is not None and msg.status == QUEUED:
                keeper.forwarded.append(msg.id)
                messages.append(_to_wire(msg, msg.id not in self.own_turn))
        return messages

    def deliver(self) -> Delivery:
        """Move its queued messages towards Claude: to a keeper that takes messages now;
        one starting gets them on hello, one leaving leaves them for the next."""
        if not self.queue:
            return Delivery.NOTHING
        keeper = self.keeper
        if keeper is None:
            return Delivery.NEEDS_KEEPER
        if keeper.phase is not Phase.READY or keeper.resend_until is not None:
            return Delivery.WAITS
        assert keeper.ident is not None
        for message in self.hand_over(keeper):
            self._shared.link.send(keeper.ident, _wire.Deliver(message))
        return Delivery.SENT

    # its keeper -------------------------------------------------------------------------

    def command(self, msg: _wire.Message) -> bool:
        """Send a command to its keeper; one that has not said hello yet gets it as soon
        as it does. False if it has no keeper that can take it."""
        keeper = self.keeper
        if keeper is None or keeper.phase in (Phase.SAID_BYE, Phase.EXIT_REPORTED, Phase.GONE):
            return False
        if keeper.ident is None:
            keeper.outbox.append(msg)
            return True
        if self._shared.link.send(keeper.ident, msg):
            return True
        log.warning("cannot reach the keeper of %s (pid %s) with %s", self.name, keeper.pid, type(msg).__name__)
        return False

    def interrupt(self, on_report: Callable[[dict[str, Any]], None]) -> bool:
        """Ask its keeper to interrupt the turn; ``on_report`` gets ``{confirmed, detail}``
        once the keeper says what became of it, or when ``interrupt_timeout`` has passed
        without a word. False if no keeper can take it."""
        keeper = self.keeper
        if keeper is None or not self.command(_wire.Interrupt()):
            return False
        if keeper.wire_version < _wire.INTERRUPT_REPORTS_SINCE:
            on_report({"confirmed": False, "detail": "sent to Claude; its keeper, started before the supervisor was"
                       " upgraded, cannot report whether Claude confirmed it"})
            return True
        keeper.interrupt_waiters.append(on_report)
        if keeper.interrupt_timer is None:
            seconds = self._shared.interrupt_timeout
            keeper.interrupt_timer = self._shared.clock.call_later(seconds, lambda: interrupt_reported(
                keeper, False, f"no confirmation within {seconds:g} s (the session's keeper or its Claude may be"
                " stopped or overloaded); the interrupt may still take effect once it goes on"))
        return True

    # what its Claude waits on ----------------------------------------------------------

    def pending(self, request_id: str) -> PendingRequest | None:
        """The permission request its Claude waits on, if it still does."""
        return self.keeper.permissions.get(request_id) if self.keeper is not None else None

    def pending_requests(self) -> list[PendingRequest]:
        return list(self.keeper.permissions.values()) if self.keeper is not None else []

    def answer(self, permit: _wire.Permit) -> bool:
        """Send the answer to a pending request (once: a second answer finds none);
        False, and nothing sent, for a request its Claude does not wait on."""
        keeper = self.keeper
        if keeper is None or keeper.permissions.pop(permit.request_id, None) is None:
            return False
        return self.command(permit)


def interrupt_reported(keeper: KeeperHandle, confirmed: bool, detail: str, answered_next: tuple[int, ...] = ()) -> None:
    """Tell whoever waits on the keeper's interrupt what became of it."""
    if keeper.interrupt_timer is not None:
        keeper.interrupt_timer.cancel()
        keeper.interrupt_timer = None
    waiters, keeper.interrupt_waiters = keeper.interrupt_waiters, []
    for report in waiters:
        report({"confirmed": confirmed, "detail": detail, "next": list(answered_next)})
