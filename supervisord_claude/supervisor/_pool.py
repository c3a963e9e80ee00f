"""The keeper pool: the per-session message queues, one ``KeeperHandle`` per keeper
process (``_live``), the fork-server link and the keeper socket.
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
from .._config import Config
from .._os import System
from .._permissions import PendingRequest
from .._wire import keeper_title
from ._attachments import Attachments
from ._budgets import Budgets
from ._eventlog import EventLog
from ._live import (
    CONNECTED,
    AfterExit,
    Delivery,
    KeeperHandle,
    KeeperLink,
    LiveSession,
    Phase,
    Shared,
    interrupt_reported,
)
from ._store import DONE, FAILED, QUEUED, WRITTEN, SessionRecord, Store

log = logging.getLogger("supervisord_claude")
#: an event kind by its wire name (an unknown one raises KeyError: the report is dropped)
_KINDS = {kind.value: kind for kind in EventKind}

#: how long a keeper's bye may trail the fork server's report of its exit
BYE_GRACE = 1.0


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


class KeeperPool:
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
        came (those an adopted keeper holds are its own); each session's are moved on."""
        held = {i for live in self._sessions.values() if live.keeper for i in live.keeper.forwarded}
        owed = self.store.messages(None, QUEUED)
        self._attachments.sweep(((m.id, m.attachments) for m in owed + self.store.messages(None, WRITTEN)),
                                (s.name for s in self.store.list_sessions()))
        for msg in owed:
            if msg.id not in held:  # (sent with queue: it still waits for a turn of its own)
                self.session(msg.session).add(msg.id, own_turn=msg.own_turn)
        for name in sorted(self._sessions):
            self.dispatch(name)

    def archive_after_exit(self, session: str) -> bool:
        """Stop the session's keeper and archive the session once it has exited; False
        if it has no keeper (archive it now)."""
        handle = self._handle(session)
        if handle is None:
            return False
        handle.then = AfterExit.ARCHIVE
        self.session(session).command(_wire.Stop(Reason.REQUESTED.value))
        return True

    def archive_now(self, session: str) -> None:
        live = self._sessions.pop(session, None)
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
        if live is None or not live.queue or self._stopping or self._listener.holds(session):
            return
        if live.deliver() is Delivery.NEEDS_KEEPER:
            self._spawn(live)

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
            budget_usd=self._budgets.left(rec.name),
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

    # reports of the fork server ---------------------------------------------------------

    def on_fork_report(self, msg: _wire.Message) -> None:
        if isinstance(msg, _wire.Spawned):
            handle = self._by_token.pop(msg.token, None)
            if handle is None:
                return
            handle.pid = msg.pid
            self._by_pid[msg.pid] = handle
            if handle.phase is Phase.SPAWNING:
                handle.change_phase(Phase.STARTING)
                started = handle
                handle.start_timer = self.clock.call_later(self.config.keeper_start_timeout,
                                                           lambda: self._hello_overdue(started))
            log.info("keeper for %s started (pid %d)", handle.session, msg.pid)
        elif isinstance(msg, _wire.SpawnFailed):
            handle = self._by_token.pop(msg.token, None)
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
        for handle in list(self._by_pid.values()):
            if not handle.adopted and handle.phase is not Phase.EXIT_REPORTED:
                handle.adopted = True
                assert handle.pid is not None
                self._listener.watch_exit(handle.pid)
        for handle in list(self._by_token.values()):
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
        strays = [pid for pid, t in self.system.processes_titled(title) if t == title and pid not in self._by_pid]
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
        self.session(handle.session).put_back(ids)
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
        handle = self._by_pid.get(pid)
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
        handle = self._by_pid.get(pid)
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
                handle.reported(str(msg.body.get("state")))
                self._listener.state_reported(handle.session, str(msg.body.get("state")))
        elif isinstance(msg, _wire.Delta):
            origin = self.events.origin_of(msg.message_id) if msg.message_id is not None else None
            self._listener.delta(handle.session, msg.message_id, msg.text, origin)
        elif isinstance(msg, _wire.InterruptReport):
            interrupt_reported(handle, msg.confirmed, msg.detail, msg.next)
        elif isinstance(msg, _wire.ClaudeStarted):
            handle.claude_pid = msg.pid
        elif isinstance(msg, _wire.ConversationStarted):
            self.store.update_session(handle.session, started=1)
        elif isinstance(msg, _wire.Rejected):
            if handle.phase is Phase.READY:
                handle.change_phase(Phase.DRAINING)
            handle.forwarded = [i for i in handle.forwarded if i not in msg.ids]
            self.session(handle.session).put_back(msg.ids)
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
            handle = self._by_pid.get(pid)
            if handle is not None and handle.ident is not None:
                self._link.send(handle.ident, _wire.Ack(handle.last_n))

    def _resend_from(self, session: str, pid: int) -> int:
        rec = self.store.get_session(session)
        return rec.keeper_n + 1 if rec is not None and rec.keeper_pid == pid else 1

    def _on_hello(self, ident: bytes, msg: _wire.Hello) -> None:
        if self._adoptable.get(msg.pid) == msg.session and self._handle(msg.session) is None:
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
        handle = self._by_pid.get(msg.pid)
        if handle is None:
            # the hello can overtake the fork server's "spawned" report
            session = ident.decode(errors="replace").rsplit(":", 1)[0] if b":" in ident else None
            candidate = self._handle(session) if session else None
            if candidate is None or candidate.phase is not Phase.SPAWNING:
                log.warning("hello from an unknown keeper pid %s", msg.pid)
                return
            handle = candidate
            handle.pid = msg.pid
            self._by_pid[msg.pid] = handle
            if handle.adopted:  # forked by a fork server that died since: no exit report will come
                self._listener.watch_exit(msg.pid)
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
            self._link.send(ident, command)
        self.dispatch(handle.session)

    def _welcome(self, handle: KeeperHandle) -> None:
        assert handle.ident is not None and handle.pid is not None
        resend_from = self._resend_from(handle.session, handle.pid)
        handle.last_n = resend_from - 1
        self._link.send(handle.ident, _wire.Welcome(resend_from))

    def _adopt(self, ident: bytes, msg: _wire.Hello) -> None:
        """Take over a keeper a previous supervisor left: no new process, no new Claude."""
        del self._adoptable[msg.pid]
        self._tokens += 1
        handle = KeeperHandle(msg.session, self._tokens, pid=msg.pid, ident=ident, claude_pid=msg.claude_pid,
                              adopted=True, wire_version=msg.version)
        handle.change_phase(Phase.STARTING)
        handle.change_phase(Phase.READY)
        handle.reported(msg.state)
        if msg.state == SessionState.SUSPENDING.value:
            handle.change_phase(Phase.DRAINING)
        handle.forwarded = ([msg.current] if msg.current is not None else []) + list(msg.queued)
        handle.steered = list(msg.steered)
        for body in msg.pending:  # still answerable after the restart
            with contextlib.suppress(KeyError, TypeError, ValueError):
                request = PendingRequest.from_event(body)
                handle.permissions[request.request_id] = request
        live = self.session(msg.session)
        # what it holds is its own; the rest waits for it as usual
        live.queue = collections.deque(i for i in live.queue if i not in handle.forwarded)
        live.keeper = handle
        self._by_pid[msg.pid] = handle
        if msg.resumed:
            self.store.update_session(msg.session, started=1)
        self._welcome(handle)
        self._listener.watch_exit(msg.pid)
        self._listener.adopted(msg.session, msg.state == SessionState.BUSY.value, msg.current, list(msg.pending))
        log.info("adopted the keeper of %s (pid %d, Claude pid %s, %s, wire version %d)", msg.session, msg.pid,
                 msg.claude_pid, msg.state, msg.version)
        self.dispatch(msg.session)

    # exits ------------------------------------------------------------------------------

    def _forget(self, handle: KeeperHandle) -> None:
        live = self._sessions.get(handle.session)
        if live is not None and live.keeper is handle:
            live.keeper = None
        if handle.pid is not None and self._by_pid.get(handle.pid) is handle:
            del self._by_pid[handle.pid]
        self._by_token.pop(handle.token, None)

    def _gone(self, handle: KeeperHandle) -> None:
        if handle.phase is Phase.GONE:
            return
        for timer in (handle.grace, handle.start_timer):
            if timer is not None:
                timer.cancel()
        status = "unknown" if handle.exit_status is None else str(handle.exit_status)
        connected = handle.ident is not None
        if handle.interrupt_waiters:
            interrupt_reported(handle, False, f"the session's keeper exited (status {status})")
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
                self.session(session).put_back(sorted(leftover))
            self.dispatch(session)
            self._listener.keeper_gone(session)
        if not self._by_pid and not self.with_keepers():
            self._listener.all_keepers_gone()

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
