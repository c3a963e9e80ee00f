"""The keeper pool: the per-session message queues, one ``KeeperHandle`` per keeper
process, the fork-server link and the keeper socket.

A handle's life is its ``Phase``, changed only by ``KeeperHandle.change_phase`` against
``PHASE_EDGES``. The two orders in which a keeper's last words can arrive — its bye
before the fork server's exit report, or after it — are both phases, so no combination
of flags decides what a dying keeper means.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from protocol import EventKind, Reason, SessionState

from .. import _wire
from .._claude import outbox_prompt
from .._clock import Clock, TimerHandle
from .._config import Config
from .._os import System
from .._permissions import PendingRequest
from .._wire import keeper_title
from ._attachments import ATTACHMENTS_DIR, Attachments, copied_bytes
from ._budgets import Budgets
from ._eventlog import EventLog
from ._store import DONE, FAILED, QUEUED, WRITTEN, Message, SessionRecord, Store

log = logging.getLogger("supervisord_claude")
#: an event kind by its wire name (an unknown one raises KeyError: the report is dropped)
_KINDS = {kind.value: kind for kind in EventKind}

#: how long a keeper's bye may trail the fork server's report of its exit
BYE_GRACE = 1.0


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


def message_bytes(text: str, attachments: list[str]) -> int:
    """What a waiting message holds: its text (in the store and the keeper) and its
    attachment copies (on disk)."""
    return len(text.encode()) + copied_bytes(attachments)


def _to_wire(msg: Message, steer: bool) -> _wire.QueuedMessage:
    return _wire.QueuedMessage(msg.id, msg.text, tuple(msg.attachments), steer)


class ForkServer(Protocol):
    """Where keepers come from (the real one, or a fake in tests)."""

    def spawn(self, token: int, spec: _wire.KeeperSpec) -> None: ...


class KeeperLink(Protocol):
    """The keeper socket: sends one message to a keeper by routing id; False if not."""

    def send(self, ident: bytes, msg: _wire.Message) -> bool: ...


class KeeperPool:
    def __init__(self, config: Config, instance: str, store: Store, events: EventLog, system: System,
                 clock: Clock, wall: Callable[[], float], fork: ForkServer, link: KeeperLink) -> None:
        self.config = config
        self.instance = instance
        self.store = store
        self.events = events
        self.system = system
        self.clock = clock
        self.wall = wall
        # (what each Claude may spend: --max-budget-usd; the sessions holding messages share the cap for all)
        self.budgets = Budgets(config, store, wall, busy=lambda: [s for s, h in self.handles.items() if h.forwarded],
                               give=lambda session, usd: self.command(session, _wire.SetBudget(usd)))
        self.fork = fork
        self.link = link
        self.queues: dict[str, collections.deque[int]] = {}
        #: what each waiting message holds (``message_bytes``), by id, as far as asked
        self._sizes: dict[int, int] = {}
        #: waiting messages sent with ``queue``: they wait for a turn of their own instead
        #: of steering a running one (kept in memory: after a restart they steer)
        self.own_turn: set[int] = set()
        self.attachments = Attachments(config.state_dir / ATTACHMENTS_DIR, config.max_attachment_bytes)
        self.handles: dict[str, KeeperHandle] = {}  # the session's current keeper
        self.by_pid: dict[int, KeeperHandle] = {}
        self.by_token: dict[int, KeeperHandle] = {}
        self._tokens = 0
        self.stopping = False
        self.on_all_gone: Callable[[], None] = lambda: None
        #: during start-up: pid -> session of keepers a previous supervisor left, to adopt
        self.adoptable: dict[int, str] = {}
        #: watches an adopted keeper's exit (it is no child of ours): pidfd in the supervisor
        self.watch_exit: Callable[[int], None] = lambda pid: None
        #: live text of a running turn (the subscription hub's)
        self.on_delta: Callable[[str, int | None, str, str | None], None] = lambda *a: None
        self._to_ack: set[int] = set()
        self._ack_armed = False
        #: an adopted keeper's session: (session, busy, the message it answers, the
        #: requests its Claude waits on) — for the watcher
        self.on_adopted: Callable[[str, bool, int | None, list[dict[str, Any]]], None] = lambda *a: None
        #: the terminal side (``_terminal.Terminals``): a session it holds (open in Claude
        #: Code's own terminal UI, or on its way there) gets no keeper and no message
        self.held: Callable[[str], bool] = lambda session: False
        #: told of each state a keeper reports, and of each keeper gone, by session
        self.on_state: Callable[[str, str], None] = lambda session, state: None
        self.on_keeper_gone: Callable[[str], None] = lambda session: None

    # what the op handlers ask ---------------------------------------------------------

    def handle_of(self, session: str) -> KeeperHandle | None:
        return self.handles.get(session)

    def pids_of(self, session: str) -> dict[str, int | None]:
        handle = self.handles.get(session)
        return {"keeper_pid": handle.pid, "claude_pid": handle.claude_pid} if handle else {}

    def _waiting(self, session: str) -> list[int]:
        """The session's messages Claude has not started on: queued here, held by its
        keeper, or written mid-turn and not taken by Claude yet (steered)."""
        handle = self.handles.get(session)
        return [*self.queues.get(session, ()), *(handle.forwarded if handle else ()),
                *(handle.steered if handle else ())]

    def queued(self, session: str) -> int:
        return len(self._waiting(session))

    def queued_bytes(self, session: str) -> int:
        """What the session's waiting messages hold together (see ``message_bytes``)."""
        total = 0
        for message_id in self._waiting(session):
            size = self._sizes.get(message_id)
            if size is None:  # (queued before a restart)
                msg = self.store.get_message(message_id)
                size = self._sizes[message_id] = message_bytes(msg.text, msg.attachments) if msg else 0
            total += size
        return total

    @property
    def running(self) -> int:
        """Keeper processes that exist (forked and not reported gone)."""
        return len(self.by_pid)

    def enqueue(self, session: str, message_id: int, size: int | None = None, own_turn: bool = False) -> None:
        if size is not None:
            self._sizes[message_id] = size
        if own_turn:
            self.own_turn.add(message_id)
        self.queues.setdefault(session, collections.deque()).append(message_id)
        self.dispatch(session)

    def command(self, session: str, msg: _wire.Message) -> bool:
        """Send a command to the session's keeper; one that has not said hello yet gets
        it as soon as it does. False if the session has no keeper that can take it."""
        handle = self.handles.get(session)
        if handle is None or handle.phase in (Phase.SAID_BYE, Phase.EXIT_REPORTED, Phase.GONE):
            return False
        if handle.ident is None:
            handle.outbox.append(msg)
            return True
        if self.link.send(handle.ident, msg):
            return True
        log.warning("cannot reach the keeper of %s (pid %s) with %s", session, handle.pid, type(msg).__name__)
        return False

    def interrupt(self, session: str, on_report: Callable[[dict[str, Any]], None]) -> bool:
        """Ask the session's keeper to interrupt its turn; ``on_report`` gets
        ``{confirmed, detail}`` once the keeper says what became of it, or when
        ``interrupt_timeout`` has passed without a word. False if no keeper can take it."""
        handle = self.handles.get(session)
        if handle is None or not self.command(session, _wire.Interrupt()):
            return False
        if handle.wire_version < _wire.INTERRUPT_REPORTS_SINCE:
            on_report({"confirmed": False, "detail": "sent to Claude; its keeper, started before the supervisor was"
                       " upgraded, cannot report whether Claude confirmed it"})
            return True
        handle.interrupt_waiters.append(on_report)
        if handle.interrupt_timer is None:
            seconds = self.config.interrupt_timeout
            handle.interrupt_timer = self.clock.call_later(seconds, lambda: self._interrupt_reported(
                handle, False, f"no confirmation within {seconds:g} s (the session's keeper or its Claude may be"
                " stopped or overloaded); the interrupt may still take effect once it goes on"))
        return True

    def _interrupt_reported(self, handle: KeeperHandle, confirmed: bool, detail: str,
                            answered_next: tuple[int, ...] = ()) -> None:
        if handle.interrupt_timer is not None:
            handle.interrupt_timer.cancel()
            handle.interrupt_timer = None
        waiters, handle.interrupt_waiters = handle.interrupt_waiters, []
        for report in waiters:
            report({"confirmed": confirmed, "detail": detail, "next": list(answered_next)})

    def steered(self, session: str) -> list[int]:
        """The session's messages written to Claude mid-turn that it has not taken yet:
        they join the running turn or become the next one (they can no longer be dropped)."""
        handle = self.handles.get(session)
        return list(handle.steered) if handle is not None else []

    def pending(self, session: str, request_id: str) -> PendingRequest | None:
        """The permission request Claude waits on in that session, if it still does."""
        handle = self.handles.get(session)
        return handle.permissions.get(request_id) if handle is not None else None

    def pending_requests(self, session: str) -> list[PendingRequest]:
        handle = self.handles.get(session)
        return list(handle.permissions.values()) if handle is not None else []

    def answer(self, session: str, permit: _wire.Permit) -> bool:
        """Send the answer to a pending request (once: a second answer finds none)."""
        handle = self.handles.get(session)
        if handle is None or handle.permissions.pop(permit.request_id, None) is None:
            return False
        return self.command(session, permit)

    def archive_after_exit(self, session: str) -> bool:
        """Stop the session's keeper and archive the session once it has exited; False
        if it has no keeper (archive it now)."""
        handle = self.handles.get(session)
        if handle is None:
            return False
        handle.then = AfterExit.ARCHIVE
        self.command(session, _wire.Stop(Reason.REQUESTED.value))
        return True

    def archive_now(self, session: str) -> None:
        ids = list(self.queues.pop(session, ()))
        self.events.fail_messages(session, ids, f"session '{session}' was archived")
        self.attachments.drop_session(session)
        self.events.record(session, EventKind.STATE,
                           {"state": SessionState.ARCHIVED.value, "reason": Reason.REQUESTED.value})

    def message_done(self, session: str, message_id: int) -> None:
        """The event log stored a message's turn event: it is no longer in flight (and
        once its turn is over, its attachment copies join what the session keeps)."""
        handle = self.handles.get(session)
        if handle is not None and message_id in handle.forwarded:
            handle.forwarded.remove(message_id)
        self._sizes.pop(message_id, None)
        self.own_turn.discard(message_id)
        self.budgets.rebalance(list(self.handles))  # (a turn's cost counted, or one session less waiting)
        if self.attachments.holds(message_id):
            msg = self.store.get_message(message_id)
            if msg is None or msg.status in (DONE, FAILED):
                self.attachments.release(message_id)

    # dispatch -------------------------------------------------------------------------

    def dispatch(self, session: str) -> None:
        """Move queued messages towards Claude: to the live keeper, or start one."""
        queue = self.queues.get(session)
        if not queue or self.stopping or self.held(session):
            return
        handle = self.handles.get(session)
        if handle is None:
            self._spawn(session)
        elif handle.phase is Phase.READY:
            assert handle.ident is not None
            while queue:
                msg = self.store.get_message(queue.popleft())
                if msg is None or msg.status != QUEUED:
                    continue
                handle.forwarded.append(msg.id)
                self.link.send(handle.ident, _wire.Deliver(_to_wire(msg, msg.id not in self.own_turn)))
        # otherwise the keeper is starting (it gets them on hello) or on its way out
        # (a new one starts once it has exited)
        self.budgets.rebalance(list(self.handles))  # (one more session may be waiting for an answer)

    def _spawn(self, session: str) -> None:
        queue = self.queues.get(session) or collections.deque()
        rec = self.store.get_session(session)
        if rec is None or rec.state is SessionState.ARCHIVED:
            self.events.fail_messages(session, list(queue), f"session '{session}' was archived")
            self.queues.pop(session, None)
            return
        if not os.path.isdir(rec.cwd):  # removed, or the state dir holding it moved
            problem = (f"the directory of session '{session}', {rec.cwd}, does not exist; restore it, or move the"
                       f" session to another (claudectl cd {session} DIR, or /cd in Telegram)")
            log.warning("not starting %s: its directory %s does not exist", session, rec.cwd,
                        extra={"session": session})
            self.events.fail_messages(session, list(queue), problem)
            self.queues.pop(session, None)
            return
        self._tokens += 1
        handle = KeeperHandle(session, self._tokens)
        messages = []
        while queue:
            msg = self.store.get_message(queue.popleft())
            if msg is not None and msg.status == QUEUED:
                messages.append(_to_wire(msg, msg.id not in self.own_turn))
                handle.forwarded.append(msg.id)
        budget = self.budgets.left(rec.name)
        self.budgets.given(rec.name, budget)
        spec = _wire.KeeperSpec(
            session=rec.name,
            instance=self.instance,
            runtime_dir=str(self.config.runtime_dir),
            claude_bin=self.config.claude_bin,
            cwd=rec.cwd,
            session_id=rec.session_id,
            started=rec.started,
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
        self.handles[session] = handle
        self.by_token[handle.token] = handle
        self.fork.spawn(handle.token, spec)

    def system_prompt(self, rec: SessionRecord) -> str:
        """What every Claude of the session is told besides Claude Code's own prompt: its
        persona, and where files for the user go (the outbox)."""
        persona = self.config.personas.get(rec.persona) if rec.persona else None
        return "\n\n".join(p for p in (persona.prompt if persona else None, outbox_prompt(rec.cwd)) if p)

    def claude_args(self, session: str) -> tuple[str, ...]:
        """The configured extra arguments, and the session's attachments directory (Claude
        reads the copies of files that are not images there, by path)."""
        attachments = self.attachments.session_dir(session)
        with contextlib.suppress(OSError):
            attachments.mkdir(mode=0o700, parents=True, exist_ok=True)
        return (*self.config.claude_args, "--add-dir", str(attachments))

    # reports of the fork server ---------------------------------------------------------

    def on_fork_report(self, msg: _wire.Message) -> None:
        if isinstance(msg, _wire.Spawned):
            handle = self.by_token.pop(msg.token, None)
            if handle is None:
                return
            handle.pid = msg.pid
            self.by_pid[msg.pid] = handle
            if handle.phase is Phase.SPAWNING:
                handle.change_phase(Phase.STARTING)
                started = handle
                handle.start_timer = self.clock.call_later(self.config.keeper_start_timeout,
                                                           lambda: self._hello_overdue(started))
            log.info("keeper for %s started (pid %d)", handle.session, msg.pid)
        elif isinstance(msg, _wire.SpawnFailed):
            handle = self.by_token.pop(msg.token, None)
            if handle is None:
                return
            log.error("could not fork a keeper for %s: %s", handle.session, msg.error)
            handle.change_phase(Phase.GONE)
            self._forget(handle)
            self.events.fail_messages(handle.session, handle.forwarded,
                                      f"could not start a session keeper: {msg.error}")
        elif isinstance(msg, _wire.Exited):
            self.on_exit(msg.pid, msg.status)

    def on_fork_server_lost(self) -> None:
        """The fork server died. Its keepers live on, re-parented, but nobody reports their
        exits now: watch each like an adopted keeper. A spawn it was asked for and never
        answered may or may not have happened: its hello settles it, or its start timeout."""
        for handle in list(self.by_pid.values()):
            if not handle.adopted and handle.phase is not Phase.EXIT_REPORTED:
                handle.adopted = True
                assert handle.pid is not None
                self.watch_exit(handle.pid)
        for handle in list(self.by_token.values()):
            if handle.phase is Phase.SPAWNING:
                handle.adopted = True  # its Spawned report will never come
                lost = handle
                handle.start_timer = self.clock.call_later(self.config.keeper_start_timeout,
                                                           lambda: self._spawn_lost(lost))

    def _spawn_lost(self, handle: KeeperHandle) -> None:
        """A spawn the dead fork server never answered, and no hello came. If it did fork a
        keeper (by its title), that one hung: kill it and report its messages not delivered
        (as for any keeper that does not say hello in time); if it did not, the messages
        were never taken: start the session anew with them."""
        if handle.phase is not Phase.SPAWNING:
            return
        handle.start_timer = None
        title = keeper_title(self.instance, handle.session)
        strays = [pid for pid, t in self.system.processes_titled(title) if t == title and pid not in self.by_pid]
        for pid in strays:
            self.system.kill(pid, signal.SIGKILL)
        handle.change_phase(Phase.GONE)
        self._forget(handle)
        ids, handle.forwarded = handle.forwarded, []
        if strays:
            log.error("the keeper of %s, forked just before the fork server died, did not connect; killed",
                      handle.session)
            self.events.fail_messages(handle.session, ids, f"the session keeper did not start within"
                                                           f" {self.config.keeper_start_timeout:g} s")
            return
        log.warning("the fork server died before it started a keeper for %s; starting one now", handle.session)
        queue = self.queues.setdefault(handle.session, collections.deque())
        queue.extendleft(reversed([i for i in ids if i not in queue]))
        self.dispatch(handle.session)

    def _hello_overdue(self, handle: KeeperHandle) -> None:
        """A keeper that never says hello would hold its messages for ever: kill it, and
        its messages are reported not delivered (see ``_gone``)."""
        if handle.phase is Phase.STARTING and handle.pid is not None:
            log.error("the keeper of %s (pid %d) did not connect within %.0f s; killing it", handle.session,
                      handle.pid, self.config.keeper_start_timeout)
            handle.overdue = True
            self.system.kill(handle.pid, signal.SIGKILL)

    def on_exit(self, pid: int, status: int | None) -> None:
        """A keeper process is gone (reported by the fork server, or seen through the pidfd
        of an adopted keeper, whose status we cannot know: its bye tells)."""
        handle = self.by_pid.get(pid)
        if handle is None:
            return
        handle.exit_status = status
        if handle.phase in CONNECTED:
            # its last messages (events, bye) come over the keeper socket, which this
            # report can overtake: wait for the bye a moment before calling it killed
            handle.change_phase(Phase.EXIT_REPORTED)
            handle.grace = self.clock.call_later(BYE_GRACE, lambda: self._gone(handle))
        else:
            self._gone(handle)

    # messages of keepers ----------------------------------------------------------------

    def _by_ident(self, ident: bytes) -> KeeperHandle | None:
        # a keeper's routing id is "<session>:<pid>" (set by the keeper)
        try:
            pid = int(ident.rsplit(b":", 1)[1])
        except (IndexError, ValueError):
            return None
        handle = self.by_pid.get(pid)
        return handle if handle is not None and handle.ident == ident else None

    def on_keeper_messages(self, batch: list[tuple[bytes, _wire.Message]]) -> None:
        """What the keepers sent since the last loop turn, in order: their events stored in
        one transaction; anything else handled after every event before it is stored and
        published (a delta, a bye, a rejection follow what came first)."""
        with self.events.batch():
            for ident, msg in batch:
                if not isinstance(msg, _wire.KeeperEvent):
                    self.events.flush()
                try:
                    self.on_keeper_message(ident, msg)
                except Exception:
                    log.exception("keeper socket: bad message dropped")

    def on_keeper_message(self, ident: bytes, msg: _wire.Message) -> None:
        if isinstance(msg, _wire.Hello):
            self._on_hello(ident, msg)
            return
        handle = self._by_ident(ident)
        if handle is None:
            log.debug("%s from an unknown keeper dropped", type(msg).__name__)
            return
        if isinstance(msg, _wire.Numbered):
            if msg.n <= handle.last_n:
                return  # sent again after a reconnect: handled already
            handle.last_n = msg.n
            self._ack_soon(handle)
        if isinstance(msg, _wire.KeeperEvent):
            kind = _KINDS[msg.kind]
            if kind is EventKind.PERMISSION_REQUEST:
                request = PendingRequest.from_event(msg.body)
                handle.permissions[request.request_id] = request
            elif kind is EventKind.PERMISSION_RESOLVED:
                handle.permissions.pop(str(msg.body.get("request_id")), None)
            elif kind is EventKind.STEERED and msg.message_id is not None:
                handle.steered.append(msg.message_id)
            elif kind in (EventKind.TAKEN, EventKind.USER, EventKind.MESSAGE_FAILED) \
                    and msg.message_id in handle.steered:
                handle.steered.remove(msg.message_id)
            assert handle.pid is not None
            self.events.record_packed(handle.session, kind, msg.packed, msg.message_id, (handle.pid, msg.n))
            if kind is EventKind.STATE and msg.body.get("state") == SessionState.SUSPENDING.value \
                    and handle.phase is Phase.READY:
                handle.change_phase(Phase.DRAINING)
            if kind is EventKind.STATE:
                self.on_state(handle.session, str(msg.body.get("state")))
        elif isinstance(msg, _wire.Delta):
            origin = self.events.origin_of(msg.message_id) if msg.message_id is not None else None
            self.on_delta(handle.session, msg.message_id, msg.text, origin)
        elif isinstance(msg, _wire.InterruptReport):
            self._interrupt_reported(handle, msg.confirmed, msg.detail, msg.next)
        elif isinstance(msg, _wire.ClaudeStarted):
            handle.claude_pid = msg.pid
        elif isinstance(msg, _wire.ConversationStarted):
            self.store.update_session(handle.session, started=1)
        elif isinstance(msg, _wire.Rejected):
            if handle.phase is Phase.READY:
                handle.change_phase(Phase.DRAINING)
            handle.forwarded = [i for i in handle.forwarded if i not in msg.ids]
            queue = self.queues.setdefault(handle.session, collections.deque())
            queue.extendleft(reversed([i for i in msg.ids if i not in queue]))
        elif isinstance(msg, _wire.Bye):
            handle.bye = msg
            if handle.phase is Phase.EXIT_REPORTED:
                self._gone(handle)
            elif handle.phase in CONNECTED:
                handle.change_phase(Phase.SAID_BYE)
        else:
            log.warning("unexpected %s from the keeper of %s", type(msg).__name__, handle.session)

    def _ack_soon(self, handle: KeeperHandle) -> None:
        """Ack a keeper's reports once per loop turn (not one ack per report)."""
        assert handle.pid is not None
        self._to_ack.add(handle.pid)
        if not self._ack_armed:
            self._ack_armed = True
            self.clock.call_later(0, self._send_acks)

    def _send_acks(self) -> None:
        self._ack_armed = False
        if self.events.waiting:  # not stored yet (disk full): the keepers keep them for us
            self.clock.call_later(1.0, self._send_acks)
            self._ack_armed = True
            return
        pids, self._to_ack = self._to_ack, set()
        for pid in pids:
            handle = self.by_pid.get(pid)
            if handle is not None and handle.ident is not None:
                self.link.send(handle.ident, _wire.Ack(handle.last_n))

    def _resend_from(self, session: str, pid: int) -> int:
        rec = self.store.get_session(session)
        return rec.keeper_n + 1 if rec is not None and rec.keeper_pid == pid else 1

    def _on_hello(self, ident: bytes, msg: _wire.Hello) -> None:
        if self.adoptable.get(msg.pid) == msg.session and msg.session not in self.handles:
            # a keeper a previous supervisor left, maybe of the release before an upgrade
            if msg.version in _wire.ADOPTABLE_WIRE_VERSIONS:
                self._adopt(ident, msg)
            else:  # left adoptable: reaped when the adoption window closes
                log.warning("the keeper of %s (pid %d) speaks wire version %d; this release adopts %s:"
                            " it is stopped", msg.session, msg.pid, msg.version,
                            ", ".join(map(str, sorted(_wire.ADOPTABLE_WIRE_VERSIONS))))
            return
        if msg.version != _wire.WIRE_VERSION:  # forked by our own fork server: our code
            log.warning("keeper pid %d speaks wire version %d, not %d: not taken on", msg.pid, msg.version,
                        _wire.WIRE_VERSION)
            return
        handle = self.by_pid.get(msg.pid)
        if handle is None:
            # the hello can overtake the fork server's "spawned" report
            session = ident.decode(errors="replace").rsplit(":", 1)[0] if b":" in ident else None
            candidate = self.handles.get(session) if session else None
            if candidate is None or candidate.phase is not Phase.SPAWNING:
                log.warning("hello from an unknown keeper pid %s", msg.pid)
                return
            handle = candidate
            handle.pid = msg.pid
            self.by_pid[msg.pid] = handle
            if handle.adopted:  # forked by a fork server that died since: no exit report will come
                self.watch_exit(msg.pid)
        if handle.phase not in (Phase.SPAWNING, Phase.STARTING):
            log.warning("second hello from the keeper of %s ignored", handle.session)
            return
        handle.ident = ident
        if handle.start_timer is not None:
            handle.start_timer.cancel()
            handle.start_timer = None
        handle.change_phase(Phase.READY)
        self._welcome(handle)
        outbox, handle.outbox = handle.outbox, []
        for command in outbox:
            self.link.send(ident, command)
        self.dispatch(handle.session)

    def _welcome(self, handle: KeeperHandle) -> None:
        assert handle.ident is not None and handle.pid is not None
        resend_from = self._resend_from(handle.session, handle.pid)
        handle.last_n = resend_from - 1
        self.link.send(handle.ident, _wire.Welcome(resend_from))

    def _adopt(self, ident: bytes, msg: _wire.Hello) -> None:
        """Take over a keeper a previous supervisor left: no new process, no new Claude."""
        del self.adoptable[msg.pid]
        self._tokens += 1
        handle = KeeperHandle(msg.session, self._tokens, pid=msg.pid, ident=ident, claude_pid=msg.claude_pid,
                              adopted=True, wire_version=msg.version)
        handle.change_phase(Phase.STARTING)
        handle.change_phase(Phase.READY)
        if msg.state == SessionState.SUSPENDING.value:
            handle.change_phase(Phase.DRAINING)
        handle.forwarded = ([msg.current] if msg.current is not None else []) + list(msg.queued)
        handle.steered = list(msg.steered)
        for body in msg.pending:  # still answerable after the restart
            with contextlib.suppress(KeyError, TypeError, ValueError):
                request = PendingRequest.from_event(body)
                handle.permissions[request.request_id] = request
        queue = self.queues.get(msg.session)
        if queue:  # what it holds is its own; the rest waits for it as usual
            self.queues[msg.session] = collections.deque(i for i in queue if i not in handle.forwarded)
        self.handles[msg.session] = handle
        self.by_pid[msg.pid] = handle
        if msg.resumed:
            self.store.update_session(msg.session, started=1)
        self._welcome(handle)
        self.watch_exit(msg.pid)
        self.on_adopted(msg.session, msg.state == SessionState.BUSY.value, msg.current, list(msg.pending))
        log.info("adopted the keeper of %s (pid %d, Claude pid %s, %s, wire version %d)", msg.session, msg.pid,
                 msg.claude_pid, msg.state, msg.version)
        self.dispatch(msg.session)

    # exits ------------------------------------------------------------------------------

    def _forget(self, handle: KeeperHandle) -> None:
        if self.handles.get(handle.session) is handle:
            del self.handles[handle.session]
        if handle.pid is not None and self.by_pid.get(handle.pid) is handle:
            del self.by_pid[handle.pid]
        self.by_token.pop(handle.token, None)

    def _gone(self, handle: KeeperHandle) -> None:
        if handle.phase is Phase.GONE:
            return
        for timer in (handle.grace, handle.start_timer):
            if timer is not None:
                timer.cancel()
        status = "unknown" if handle.exit_status is None else str(handle.exit_status)
        connected = handle.ident is not None
        if handle.interrupt_waiters:
            self._interrupt_reported(handle, False, f"the session's keeper exited (status {status})")
        handle.change_phase(Phase.GONE)
        self._forget(handle)
        session = handle.session
        if handle.exit_status is None:  # (an adopted keeper is not our child: its status is not ours to read)
            log.info("keeper for %s (pid %s) exited", session, handle.pid)
        else:
            log.info("keeper for %s (pid %s) exited with status %s", session, handle.pid, status)
        leftover = list(handle.forwarded)
        handle.forwarded.clear()
        if handle.bye is None:
            # it was killed: it could not stop its Claude, nor report its turn
            if handle.claude_pid is not None:
                self.system.killpg(handle.claude_pid, signal.SIGKILL)
            written = [m.id for m in self.store.messages(session, WRITTEN)]
            self.events.fail_messages(session, written,
                                      f"the session keeper died (exit status {status}) while Claude was answering")
            self.events.record(session, EventKind.STATE,
                               {"state": SessionState.FAILED.value, "reason": Reason.KILLED.value})
            if not connected:
                self.events.fail_messages(session, leftover,
                                          f"the session keeper did not start within"
                                          f" {self.config.keeper_start_timeout:g} s" if handle.overdue else
                                          f"the session keeper died (exit status {status}) before starting Claude")
                leftover = []
        if handle.then is AfterExit.ARCHIVE:
            self.events.fail_messages(session, leftover, f"session '{session}' was archived")
            self.archive_now(session)
        else:
            if leftover:  # handed over but never taken: they go first, in order
                queue = self.queues.setdefault(session, collections.deque())
                queue.extendleft(reversed(sorted(i for i in leftover if i not in queue)))
            self.dispatch(session)
            self.on_keeper_gone(session)
        if not self.by_pid and not self.handles:
            self.on_all_gone()

    # shutdown ---------------------------------------------------------------------------

    def stop_all(self) -> int:
        """Ask every keeper to stop (shutdown); returns how many there are."""
        self.stopping = True
        for session in list(self.handles):
            self.command(session, _wire.Stop(Reason.SHUTDOWN.value))
        return len(self.handles)

    def kill_all(self) -> None:
        for pid, handle in list(self.by_pid.items()):
            self.system.kill(pid, signal.SIGKILL)
            if handle.claude_pid:
                self.system.killpg(handle.claude_pid, signal.SIGKILL)

    def describe(self) -> dict[str, Any]:
        return {name: h.phase.value for name, h in self.handles.items()}
