"""The supervisor: composes the parts, each of which owns one job —

- ``ControlServer`` (``_control``): the clients' socket; decode, validate, reply.
- ``Ops`` (``_ops``): one small handler per protocol op.
- ``SubscriptionHub`` (``_hub``): subscriptions, windows, cursors, fan-out.
- ``EventLog`` (``_eventlog``): record → store → publish, the disk-full buffer.
- ``KeeperPool`` (``_pool``): message queues and keeper processes (``KeeperHandle``).
- start-up lives in ``_startup``; what a previous supervisor left, in ``_succession``;
  recovering the store after it is ``Core.recover``.

``build_core`` (``_core``) wires the socket-free parts together, so tests can drive the
whole lifecycle in-process with a fake fork server, a recording keeper link and a
``FakeClock``; ``Supervisor`` adds the sockets, signals and the loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import zmq
import zmq.asyncio

from protocol import (
    CONTROL_SOCKET,
    ErrorCode,
    control_endpoint,
    counted,
)

from .. import _wire
from .._clock import Clock, LoopClock, TimerHandle, wait_for
from .._configkeys import Config
from .._errors import OpError, StoreError
from .._os import System, sd_notify
from .._wire import STOP_GRACE
from ._control import ControlServer, bind_private
from ._core import build_core
from ._pool import ForkServer
from ._store import Store
from ._succession import reap_stale, restart_problem

log = logging.getLogger("supervisord_claude")

PRUNE_EVERY = 3600.0
#: event runs pruned in one transaction (a loop turn) at most
PRUNE_STEP = 500
STORE_CHECK_EVERY = 2.0  # how often the store file is checked (deleted, replaced)
STORE_NAG_EVERY = 60.0
SWEEP_EVERY = 30.0  # subscriptions of clients that left are forgotten at least this often
#: keeper reports handled in one loop turn at most (each event of a run counts)
MAX_KEEPER_BATCH = 4096
#: under steady traffic the keeper socket is read at most this often (``KeeperSocket``): what
#: comes sooner after a read waits for the rest of it. 100 sessions streaming send ~1,000
#: frames of live text a second, one wake-up each without it
READ_GATHER = 0.010
#: what comes this soon after a read means steady traffic: the socket starts to gather
READ_BUSY = 0.002
#: how long start-up waits for the keepers a previous supervisor left to introduce themselves
ADOPT_WINDOW = 3.0
ADOPT_POLL = 0.02
#: the fork server may die this often within FORK_SERVER_DEATH_WINDOW seconds and be
#: started anew; one more death and the supervisor gives up (exits 1, keepers kept)
MAX_FORK_SERVER_DEATHS = 3
FORK_SERVER_DEATH_WINDOW = 60.0


class ForkServerLink(ForkServer, Protocol):
    @property
    def pid(self) -> int | None: ...

    def fileno(self) -> int: ...

    def reports(self) -> list[_wire.Message] | None: ...

    def respawn(self) -> None: ...


class KeeperSocket:
    """The keepers' ROUTER socket. Nothing on it is ever dropped (no high-water mark).

    A plain socket, read by a reader on its file descriptor rather than through
    zmq.asyncio: a wake-up through zmq.asyncio's ``poll`` (its future, poller and extra
    loop turns) cost the loop about 90 µs more, and 100 sessions streaming make about a
    thousand wake-ups a second of live text alone (docs/benchmarks.md, "the supervisor's
    CPU per wake-up"). The descriptor signals only that the socket's state may have
    changed, and any operation on the socket (a send too) may take that signal: so what
    is waiting is checked again after each read and after each send (a signal with
    nothing come is no traffic: the pool's ack after every read would otherwise look
    like some).

    Under steady traffic it gathers: what comes within READ_BUSY of a read waits until
    READ_GATHER after it (the reader off meanwhile) and goes with what else came, in one
    batch; while the pauses gather more than one report it goes on reading only at their
    ends, READ_GATHER apart — a wake-up costs the loop 40 to 55 µs whatever it reads
    (docs/benchmarks.md, "the supervisor's wake-ups gathered"). Otherwise what comes is
    read at once; a read that stops at the batch limit goes on at the next loop turn."""

    def __init__(self, ctx: zmq.asyncio.Context, config: Config, clock: Clock | None = None) -> None:
        self.path = config.runtime_dir / _wire.KEEPER_SOCKET
        self.sock: zmq.Socket[bytes] = zmq.Socket(ctx, zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sock.setsockopt(zmq.LINGER, 500)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        bind_private(self.sock, self.path)
        self.clock = clock or LoopClock()
        self._on_messages: Callable[[list[tuple[bytes, _wire.Message]]], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._failed: asyncio.Future[None] | None = None  # (what ends ``serve``: handling failed)
        self._signal_armed = False
        self._backlog_armed = False
        #: when the last read that found something began (on ``clock``)
        self._read_at = float("-inf")
        #: the gathering pause: the read it ends with (the descriptor's reader is off meanwhile)
        self._gathering: TimerHandle | None = None

    def send(self, ident: bytes, msg: _wire.Message) -> bool:
        try:
            self.sock.send_multipart([ident, _wire.encode(msg)], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            # (normal for an ack to a keeper that has just said bye and left; a command that
            # cannot be delivered is logged by the pool, naming the session)
            log.debug("cannot reach keeper %s: %s", ident.hex(), exc)
            return False
        finally:
            self._signal_soon()  # (the send may have taken the signal of frames that came)
        return True

    async def serve(self, on_messages: Callable[[list[tuple[bytes, _wire.Message]]], None]) -> None:
        """Hand over everything that arrives, in order, a batch per loop turn (so the event
        log stores a burst in one transaction), until cancelled (or handling fails)."""
        loop = asyncio.get_running_loop()
        self._fd = int(self.sock.get(zmq.FD))
        self._on_messages, self._loop, self._failed = on_messages, loop, loop.create_future()
        loop.add_reader(self._fd, self._on_signal)
        try:
            self._read()  # (what came before the reader was added)
            await self._failed
        finally:
            if self._gathering is not None:
                self._gathering.cancel()
                self._gathering = None
            else:
                loop.remove_reader(self._fd)
            self._on_messages = None

    @property
    def gathering(self) -> bool:
        """Whether what arrives now waits for the end of a gathering pause."""
        return self._gathering is not None

    def _signal_soon(self) -> None:
        if self._loop is not None and not self._signal_armed:
            self._signal_armed = True
            self._loop.call_soon(self._on_signal)

    def _on_signal(self) -> None:
        """Something may have come: if it has, read it now, or at the end of a gathering
        pause when the last read was less than READ_BUSY ago. The descriptor signals our
        own sends too (and ``send`` schedules this after each): a signal with nothing come
        starts no pause — else the pool's ack after every read would start one, the next
        report after a quiet spell waiting up to READ_GATHER."""
        self._signal_armed = False
        if self._gathering is not None or self._loop is None or self._on_messages is None:
            return  # (the pause's end reads whatever is there by then)
        if not int(self.sock.get(zmq.EVENTS)) & zmq.POLLIN:
            return  # (that check re-arms the descriptor: what comes later signals)
        if self.clock.monotonic() - self._read_at >= READ_BUSY:
            self._read()
            return
        self._loop.remove_reader(self._fd)  # (frames coming meanwhile would wake it in vain)
        self._gather()

    def _gather(self) -> None:
        wait = max(0.0, self._read_at + READ_GATHER - self.clock.monotonic())
        self._gathering = self.clock.call_later(wait, self._gathered)

    def _gathered(self) -> None:
        self._gathering = None
        if self._loop is None or self._on_messages is None:
            return
        if self._read() > 1 and self._gathering is None and self._on_messages is not None:
            self._gather()  # (still steady: the next read at the next pause's end, the reader off)
        else:
            self._loop.add_reader(self._fd, self._on_signal)

    def _read_backlog(self) -> None:
        self._backlog_armed = False
        self._read()

    def _read(self) -> int:
        """Hand over what has come; how many reports that was."""
        on_messages, failed = self._on_messages, self._failed
        if on_messages is None or failed is None or failed.done():
            return 0
        try:
            started = self.clock.monotonic()
            batch, full = self._take()
            if batch:
                self._read_at = started
                on_messages(batch)
            if int(self.sock.get(zmq.EVENTS)) & zmq.POLLIN:
                if full and self._loop is not None and not self._backlog_armed:
                    # a backlog: on the next loop turn, after the other sockets' turn (in a
                    # burst, subscribers' acks keep them near the newest events)
                    self._backlog_armed = True
                    self._loop.call_soon(self._read_backlog)
                else:  # come meanwhile (the descriptor may not signal it)
                    self._signal_soon()
        except Exception as exc:
            failed.set_exception(exc)
            return 0
        return len(batch)

    def _take(self) -> tuple[list[tuple[bytes, _wire.Message]], bool]:
        """What has arrived, in order, up to MAX_KEEPER_BATCH reports; and whether it
        stopped at that limit."""
        batch: list[tuple[bytes, _wire.Message]] = []
        reports = 0  # (a run of events counts as its events)
        while reports < MAX_KEEPER_BATCH:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) != 2:
                log.warning("keeper socket: unexpected %d-frame message dropped", len(frames))
                continue
            for msg in _wire.decode_all(frames[1]):
                if isinstance(msg, _wire.WireError):
                    log.warning("keeper socket: bad message dropped: %s", msg)
                else:
                    batch.append((frames[0], msg))
                    reports += len(msg.events) // 3 if type(msg) is _wire.KeeperEvents else 1
        return batch, reports >= MAX_KEEPER_BATCH

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
        self.sock.close(0)


class Supervisor:
    def __init__(self, config: Config, store: Store, system: System, fork: ForkServerLink,
                 clock: Clock | None = None, wall: Callable[[], float] = time.time,
                 adoptable: dict[int, str] | None = None) -> None:
        self.adoptable = dict(adoptable or {})
        self.restarting = False
        #: what the process exits with: 1 once it gave up (see ``_give_up``)
        self.exit_status = 0
        self._fork_server_deaths: collections.deque[float] = collections.deque()
        self.config = config
        self.store = store
        self.system = system
        self.fork = fork
        self.clock = clock or LoopClock()
        self.wall = wall
        self.stopping = False
        self._swept = 0.0
        self.stopped = asyncio.Event()
        self._all_gone = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.ctx: zmq.asyncio.Context | None = None
        self.control: ControlServer | None = None
        self.keepers: KeeperSocket | None = None

    def _task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("internal task failed", exc_info=task.exception())

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.ctx = zmq.asyncio.Context()
        self.keepers = KeeperSocket(self.ctx, self.config, self.clock)
        self.control = ControlServer(self.ctx, self.config.runtime_dir / CONTROL_SOCKET, self.config.max_connections,
                                     self.clock)
        self.core = build_core(self.config, self.store, self.system, self.clock, self.wall, self.fork,
                               self.keepers, self.control.send, self.request_shutdown, self.request_restart,
                               self._watch_exit, self._all_gone.set)
        self.core.ops.limit_sources.append(self.control.limits)
        loop.add_reader(self.fork.fileno(), self._on_forkserver)
        self._task(self.keepers.serve(self.core.pool.on_keeper_messages))
        await self._adopt()
        self.control.bind()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_shutdown)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self._task(self.control.serve(self.core.ops.handle, self.core.ops.after_reply, self.core.hub))
        self._task(self.control.serve_connections())
        self._task(self.control.serve_stalled())
        self._task(self._prune_loop())
        self._task(self._watch_store())
        self.core.requeue_owed()
        self.core.ops.scheduler.start()  # (runs missed while it was off: once each, now)
        log.info(
            "supervisor ready: instance %s, control %s, %s",
            self.core.instance,
            control_endpoint(self.config.runtime_dir),
            counted(len(self.store.list_sessions(True)), "session"),
        )
        sd_notify(f"READY=1\nSTATUS=serving {len(self.core.pool.with_keepers())} live sessions\nMAINPID={os.getpid()}")
        await self.stopped.wait()

    async def _adopt(self) -> None:
        """Take over the keepers a previous supervisor left (each introduces itself when
        it reconnects), reap those that do not within ADOPT_WINDOW, recover the rest."""
        pool = self.core.pool
        pool.expect(self.adoptable)
        deadline = self.clock.monotonic() + (ADOPT_WINDOW if pool.awaiting_adoption else 0)
        while pool.awaiting_adoption and self.clock.monotonic() < deadline:
            await self.clock.sleep(ADOPT_POLL)
        stale, adopted = pool.stop_adopting()
        reaped, orphans = await asyncio.to_thread(reap_stale, self.system, self.core.instance, stale, set(adopted))
        # (kept word for word, "1 keepers" too: the docs name this line, and scripts grep it)
        log.info("Adopted %d keepers, reaped %d stale", len(adopted), reaped)
        if orphans:
            log.info("Reaped %d orphaned Claude processes", orphans)
        self.core.recover(adopted)

    def _watch_exit(self, pid: int) -> None:
        """An adopted keeper is no child of our fork server: a pidfd says when it exits."""
        loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            loop.call_soon(self.core.pool.on_exit, pid, None)
            return

        def exited() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            self.core.pool.on_exit(pid, None)
        loop.add_reader(fd, exited)

    def _on_forkserver(self) -> None:
        reports = self.fork.reports()
        if reports is None:  # the fork server is gone
            asyncio.get_running_loop().remove_reader(self.fork.fileno())
            if not self.stopping:
                self._fork_server_died()
            return
        for msg in reports:
            self.core.pool.on_fork_report(msg)

    def _fork_server_died(self) -> None:
        """Its keepers live on (re-parented): keep them and their turns, watch their exits
        ourselves, and start a new fork server — unless it keeps dying, then give up."""
        died = self.fork.pid
        self.core.pool.on_fork_server_lost()
        now = self.clock.monotonic()
        deaths = self._fork_server_deaths
        deaths.append(now)
        while deaths and now - deaths[0] > FORK_SERVER_DEATH_WINDOW:
            deaths.popleft()
        if len(deaths) > MAX_FORK_SERVER_DEATHS:
            self._give_up(f"the fork server died {len(deaths)} times within {FORK_SERVER_DEATH_WINDOW:g} s")
            return
        try:
            self.fork.respawn()
        except OSError as exc:
            self._give_up(f"the fork server died and a new one cannot be started: {exc}")
            return
        asyncio.get_running_loop().add_reader(self.fork.fileno(), self._on_forkserver)
        log.error("the fork server (pid %s) died; started a new one (pid %s); %d keepers go on", died,
                  self.fork.pid, self.core.pool.running)

    def _give_up(self, why: str) -> None:
        """Exit 1 without stopping a keeper (as a crash would, so a service manager restarts
        the supervisor — systemd's Restart=on-failure — and the new one adopts them)."""
        if self.stopping:
            return
        log.critical("%s: giving up (exit status 1); the keepers and their turns go on and wait for the next"
                     " supervisor (orphan_timeout %g s)", why, self.config.orphan_timeout)
        self.exit_status = 1
        self.stopping = True
        self.core.ops.stopping = True
        sd_notify(f"STOPPING=1\nSTATUS=giving up: {why}")
        self._stop_serving()

    async def _watch_store(self) -> None:
        """Write a deleted store file back from the open database; say loudly, and keep
        saying, when it is replaced under us or cannot be restored (ops refuse new work
        then; see ``Ops.handle``)."""
        said_at: float | None = None
        while True:
            problem = self.store.file_problem()
            if problem is not None:
                try:
                    if self.store.restore_deleted():
                        log.warning("%s; restored it from the open database: nothing is lost", problem)
                        problem = None
                except StoreError as exc:
                    problem = f"{problem}; {exc}"
            now = self.clock.monotonic()
            if problem is not None and (said_at is None or now - said_at >= STORE_NAG_EVERY):
                log.critical("%s: new work is refused; what is still written goes to the old file and will"
                             " be lost. Stop the supervisor and restore the store.", problem)
                said_at = now
            await self.clock.sleep(STORE_CHECK_EVERY)
            if self.clock.monotonic() - self._swept >= SWEEP_EVERY:
                self._swept = self.clock.monotonic()
                dropped = self.core.hub.sweep()
                if dropped:
                    log.info("forgot the subscriptions of %s that left", counted(dropped, "client"))

    async def _prune_loop(self) -> None:
        """Keep the event log bounded: drop what is older than the retention period and
        acked by every named consumer, at start and then hourly."""
        while True:
            cutoff = self.wall() - self.config.event_retention_days * 86400
            pruned = 0
            try:
                # in steps, serving in between: months of events go without stalling anyone
                while step := self.store.prune(cutoff, max_runs=PRUNE_STEP):
                    pruned += step
                    await asyncio.sleep(0)
            except StoreError as exc:
                log.warning("could not prune old events: %s", exc)
            if pruned:
                log.info("pruned %d events older than %g days", pruned, self.config.event_retention_days)
            await self.clock.sleep(PRUNE_EVERY)

    # shutdown and restart ------------------------------------------------------------

    def request_restart(self) -> None:
        """Restart in place (SIGHUP, the restart op): stop serving without stopping any
        keeper; ``run`` then re-executes the supervisor, which adopts them. Refused
        (``restart_refused``) if the code installed now would not start."""
        if self.stopping:
            return
        problem = restart_problem()
        if problem is not None:
            log.error("restart refused: the code installed now would not start (%s); this supervisor goes on",
                      problem)
            raise OpError(ErrorCode.RESTART_REFUSED, f"the code installed now would not start ({problem});"
                          " this supervisor goes on: fix the installation, then restart")
        log.info("restart requested: keepers and their Claude keep running")
        sd_notify("RELOADING=1\nSTATUS=restarting in place")
        self.stopping = self.restarting = True
        self.core.ops.stopping = True
        self.clock.call_later(0.05, self._stop_serving)  # after the reply is sent

    def _on_sighup(self) -> None:
        with contextlib.suppress(OpError):  # refused: logged, and this supervisor goes on
            self.request_restart()

    def _stop_serving(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.stopped.set()

    def request_shutdown(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.core.ops.stopping = True
        sd_notify("STOPPING=1\nSTATUS=stopping every session")
        self._task(self._shutdown())

    async def _shutdown(self) -> None:
        """Stop every keeper, record it, end. It always ends: whatever fails on the way
        (a full disk, a bug) is logged, and the process exits and frees the lock."""
        pool = self.core.pool
        try:
            log.info("shutting down: stopping %s", counted(pool.running, "keeper"))
            if pool.stop_all():
                try:
                    await wait_for(self.clock, self._all_gone.wait(), STOP_GRACE + 3.0)
                except TimeoutError:
                    log.warning("keepers still running after %.0fs; killing them", STOP_GRACE + 3.0)
                    pool.kill_all()
                    await self.clock.sleep(0.2)
            self.core.events.flush()
            if self.core.events.waiting:
                log.error("%d events could not be stored (disk full?) and are lost", self.core.events.waiting)
            self.core.mark_stopped()
        except Exception:
            log.exception("shutdown could not record everything; stopping anyway")
            pool.kill_all()
        finally:
            for task in list(self._tasks):
                if task is not asyncio.current_task():
                    task.cancel()
            self.stopped.set()

    def close(self) -> None:
        if self.control is not None:
            self.control.close()
        if self.keepers is not None:
            self.keepers.close()
        if self.ctx is not None:
            self.ctx.term()


__all__ = ["KeeperSocket", "Supervisor"]
