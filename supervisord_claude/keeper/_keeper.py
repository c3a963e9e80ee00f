"""The session keeper: one process per live session, owning its Claude child and idle timer.

Forked by the fork server. It connects a DEALER socket to the supervisor's keeper socket,
starts ``claude -p`` in stream-json mode in its own process group, writes one queued user
message at a time to Claude's stdin, turns Claude's stdout into events for the supervisor,
and suspends (stops Claude and exits) when the idle timer expires.

What to do is decided by ``_machine.KeeperMachine`` (the session's logic, without
I/O); ``Keeper`` is the adapter that runs it: it feeds the machine what the supervisor
says, what Claude writes and how it ends, and the timers' expiries, and carries out the
actions it returns with Claude's process (start, stdin, stdout/stderr readers, stop), the
clock, and the link to the supervisor (socket, monitor, death pipe; ``_uplink`` numbers
the reports and keeps them until the supervisor stored them, across supervisor restarts).
The messages it exchanges with the supervisor are typed in ``_wire``. Every event goes to
the machine guarded (``feed``; a line of Claude's output has its own guard): a bug raised
stops Claude and fails the session clearly (``_internal_error``) rather than leave it
stuck; a frame it cannot decode is input, logged and ignored.

Why it is over ~400 lines: Claude's process (start, the readers, stop) and the link to
the supervisor share the loop, the guard and the machine's actions; they would split into
two adapters (the process, the link) behind ``do``.
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
from functools import partial
from typing import Any

import setproctitle
import zmq
import zmq.asyncio

from protocol import Reason, SessionState, configure_logging

from .. import _claude, _wire
from .._clock import Clock, LoopClock, TimerHandle, wait_for
from .._os import System
from ._actions import (
    Action,
    ArmTimer,
    CancelTimer,
    Emit,
    Finish,
    Report,
    StartClaude,
    StopClaude,
    Write,
)
from ._machine import DROPPED, EDGES, IllegalTransition, KeeperMachine
from ._runs import STDOUT_LIMIT
from ._turns import ReadMessage, message_line
from ._uplink import Link, Uplink

log = logging.getLogger("supervisord_claude.keeper")

#: what is read of Claude's stdout at once at most (what the pipe holds, usually less;
#: never more than STDOUT_LIMIT: see _read_stdout)
STDOUT_CHUNK = 1024 * 1024

#: a read of this much found Claude's stdout pipe full (what a Linux pipe holds unless
#: told otherwise): Claude writes faster than the keeper reads, more is there already
PIPE_FULL = 64 * 1024

STOP_GRACE = _wire.STOP_GRACE
keeper_title = _wire.keeper_title
STDERR_TAIL = 20
#: a keeper that ends while its hello waits for an answer (it failed as it said it) waits
#: this long for the Welcome, so the reports that say why go out
WELCOME_WAIT = 5.0

__all__ = ["DROPPED", "EDGES", "STOP_GRACE", "IllegalTransition", "Keeper", "KeeperMachine", "keeper_title", "main"]


class Keeper:
    """Runs a ``KeeperMachine``: feeds it what happens and carries out what it returns."""

    def __init__(self, spec: _wire.KeeperSpec, death_fd: int | None, clock: Clock | None = None,
                 system: System | None = None, read_message: ReadMessage = message_line) -> None:
        self.spec = spec
        self.session = spec.session
        self.death_fd = death_fd
        self.clock = clock or LoopClock()
        self.system = system or System()
        self.machine = KeeperMachine(spec, read_message)
        self.procs: dict[int, asyncio.subprocess.Process] = {}  # Claude processes by run, until they exit
        self.timers: dict[str, TimerHandle] = {}
        self.done = asyncio.Event()
        self.exit_code = 0
        #: the machine raised (``_internal_error``): the keeper is ending
        self.machine_failed = False
        self.uplink = Uplink(self.session, self.clock, spec.orphan_timeout, self._hello,
                             on_over_limit=lambda: self.feed(self.machine.supervisor_away_too_long),
                             on_orphan_expired=lambda: self.feed(self.machine.stop, Reason.SHUTDOWN))
        self._tasks: set[asyncio.Task[Any]] = set()
        self._welcomed = asyncio.Event()  # (the supervisor welcomed its last hello: see run)
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None

    def _spawn_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        # a task that died of a bug is said at once (asyncio would say it only when the
        # task is collected, if ever), and fails the session: a start, Claude's output or
        # the supervisor's commands no longer heard would leave it stuck
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._internal_error(exc, f" in a task ({getattr(task.get_coro(), '__qualname__', task.get_name())})")

    def feed(self, event: Callable[..., list[Action]], *args: Any) -> None:
        """Feed the machine one event and carry out what it returns; a bug raised on the
        way fails the session (``_internal_error``)."""
        try:
            self.do(event(*args))
        except Exception as exc:
            self._internal_error(exc)

    def _internal_error(self, exc: BaseException, during: str = "") -> None:
        """The machine, or the carrying out of its actions, raised: a bug, never input.
        What the machine holds can no longer be trusted, and a session left as it is
        would hang (a turn never answered, a message never handed to Claude): it fails
        clearly instead. Claude is stopped at once (SIGKILL to its group), every timer is
        cancelled, and the machine says why and fails every message it holds
        (``KeeperMachine.internal_error``); the keeper ends. Should that raise too, the
        keeper ends without its Bye (the supervisor then reports its messages as for a
        killed keeper)."""
        for proc in self.procs.values():  # (again at a later error: a Claude that started meanwhile)
            if proc.returncode is None:
                self.system.killpg(proc.pid, signal.SIGKILL)
        if self.machine_failed:  # (e.g. a line Claude wrote before it was stopped: not heard)
            log.debug("keeper %s: after the internal error%s: %r", self.session, during, exc)
            return
        self.machine_failed = True
        log.error("keeper %s: internal error (a bug)%s; the session fails and Claude is stopped", self.session,
                  during, exc_info=exc)
        for key in list(self.timers):
            self._cancel_timer(key)
        try:
            self.do(self.machine.internal_error(f"{type(exc).__name__}: {exc}"[:300]))
        except Exception:
            log.exception("keeper %s: the internal error could not be reported; ending", self.session)
        if not self.done.is_set():
            self.exit_code = 1
            self.done.set()

    def _hello(self) -> _wire.Hello:
        """What the keeper says on each connection: the machine's hello. Should making it
        raise (a bug), the session fails as on any bug, and the keeper introduces itself
        all the same by what stays true — who it is, that it failed, whether the
        conversation exists — so the supervisor takes it on and hears why from its reports
        (kept until then: they go after the Welcome, which ``run`` waits for) rather than
        find a keeper that never spoke."""
        self._welcomed.clear()  # (a hello on a new connection waits for a Welcome of its own)
        try:
            return self.machine.hello(os.getpid())
        except Exception as exc:
            self._internal_error(exc, " while it said hello")
            return _wire.Hello(pid=os.getpid(), version=_wire.WIRE_VERSION, session=self.session,
                               state=SessionState.FAILED.value, started=self.machine.started)

    def do(self, actions: list[Action]) -> None:
        """Carry out the machine's actions, in order."""
        for action in actions:
            if isinstance(action, Emit):
                self.uplink.send_event(action.kind, action.body)  # (a StrEnum: its value; .value is slow)
            elif isinstance(action, Report):
                self.uplink.send(action.msg)
            elif isinstance(action, Write):
                if not self._write(action.line) and action.interrupt_id is not None:
                    self.do(self.machine.interrupt_not_written(action.interrupt_id))
            elif isinstance(action, ArmTimer):
                self._cancel_timer(action.key)
                self.timers[action.key] = self.clock.call_later(action.delay, partial(self._timer_fired, action.key))
            elif isinstance(action, CancelTimer):
                self._cancel_timer(action.key)
            elif isinstance(action, StartClaude):
                self._spawn_task(self._start_claude(action))
            elif isinstance(action, StopClaude):
                self._spawn_task(self._stop_claude(action, self.procs.get(action.run)))
            elif isinstance(action, Finish):
                self.exit_code = action.exit_code
                self.done.set()

    def _timer_fired(self, key: str) -> None:
        self.timers.pop(key, None)
        self.feed(self.machine.timer_fired, key)

    def _cancel_timer(self, key: str) -> None:
        handle = self.timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    # the link to the supervisor -------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, lambda: self.feed(self.machine.stop, Reason.SHUTDOWN))
        if self.death_fd is not None:
            loop.add_reader(self.death_fd, self._on_death_pipe)
        self._ctx = zmq.asyncio.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 2000)
        # never drop an event: no high-water mark on the way to the supervisor (Claude's
        # output rate is bounded by the API; a burst just queues here)
        self._sock.setsockopt(zmq.SNDHWM, 0)
        self._sock.setsockopt(zmq.RCVHWM, 0)
        self._sock.setsockopt(zmq.ROUTING_ID, f"{self.session}:{os.getpid()}".encode())
        self.uplink.sock = self._sock
        monitor = self._sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self._sock.connect(_wire.keeper_endpoint(self.spec.runtime_dir))
        self._spawn_task(self._watch_link(monitor))
        self._spawn_task(self._command_loop())
        self.feed(self.machine.start)
        await self.done.wait()
        if self.uplink.state is Link.CONNECTING:  # (it said hello: its reports go once it is welcomed)
            with contextlib.suppress(TimeoutError):
                await wait_for(self.clock, self._welcomed.wait(), WELCOME_WAIT)
        self.uplink.flush()  # the last reports (the Bye) go before the socket closes
        for task in list(self._tasks):
            task.cancel()
        self._sock.disable_monitor()
        monitor.close(0)
        self._sock.close()
        self._ctx.term()
        return self.exit_code

    def _orphaned(self) -> None:
        if not self.done.is_set():
            self.uplink.orphaned()

    async def _watch_link(self, monitor: zmq.asyncio.Socket) -> None:
        from zmq.utils.monitor import parse_monitor_message

        while True:
            event = parse_monitor_message(await monitor.recv_multipart())
            if event["event"] == zmq.EVENT_CONNECTED:
                self.uplink.connected()
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._orphaned()  # (an adopted keeper has no death pipe to its new supervisor)

    def _on_death_pipe(self) -> None:
        assert self.death_fd is not None
        try:
            data = os.read(self.death_fd, 1)
        except BlockingIOError:
            return
        if not data:
            asyncio.get_running_loop().remove_reader(self.death_fd)
            self._orphaned()

    async def _command_loop(self) -> None:
        assert self._sock is not None
        while True:
            self.on_frame(await self._sock.recv())

    def on_frame(self, data: bytes) -> None:
        """A frame from the supervisor. One that is not a message is input, not a bug:
        logged and ignored (as is a command with a value the machine cannot take: see
        ``_machine.unusable``); a bug while handling a message fails the session."""
        try:
            cmd = _wire.decode(data)
        except _wire.WireError as exc:
            log.error("keeper %s: bad command from supervisor ignored: %s", self.session, exc)
            return
        self.feed(self.handle, cmd)

    def handle(self, cmd: _wire.Message) -> list[Action]:
        """One message of the supervisor: the link's own, or a command for the machine
        (the actions it returns)."""
        if isinstance(cmd, _wire.Ack):
            self.uplink.acked(cmd.upto)
        elif isinstance(cmd, _wire.Welcome):
            self.uplink.welcome(cmd.resend_from)
            self._welcomed.set()
        else:
            return self.machine.command(cmd)
        return []

    # Claude's process -----------------------------------------------------------------

    async def _start_claude(self, start: StartClaude) -> None:
        env = _claude.build_env(os.environ, self.spec.instance, self.session)
        try:
            proc = await asyncio.create_subprocess_exec(
                *start.argv, cwd=start.cwd, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True, limit=STDOUT_LIMIT,
            )
        except OSError as exc:
            self.feed(self.machine.claude_start_failed, start.run, str(exc))
            return
        self.procs[start.run] = proc
        self.feed(self._claude_started, start.run, proc)

    def _claude_started(self, run: int, proc: asyncio.subprocess.Process) -> list[Action]:
        """Claude ``run`` runs: the machine's actions for it, and its output read if it
        is the running one (its readers start before the actions are carried out)."""
        actions = self.machine.claude_started(run, proc.pid)
        if (running := self.machine.runs.running) is not None and running.number == run:
            tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
            stderr = self._spawn_task(self._read_stderr(proc, tail))
            self._spawn_task(self._read_stdout(run, proc, stderr, tail))
        return actions

    def _write(self, line: bytes) -> bool:
        run = self.machine.runs.running
        proc = self.procs.get(run.number) if run is not None else None
        stdin = proc.stdin if proc is not None else None
        if stdin is None or stdin.is_closing():
            return False
        try:
            stdin.write(line)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    async def _read_stdout(self, run: int, proc: asyncio.subprocess.Process, stderr: asyncio.Task[Any],
                           stderr_tail: collections.deque[str]) -> None:
        """Claude's output, a line at a time into the machine. Read as what the pipe holds
        (``STDOUT_CHUNK`` at most) and cut into lines here, which go to the machine
        together: a line costs no coroutine and no call of its own (a burst is thousands
        of lines a second)."""
        assert proc.stdout is not None
        overflow = False
        partial: list[bytes] = []  # a line that goes on in the next chunk, in pieces
        partial_bytes = 0
        while chunk := await proc.stdout.read(STDOUT_CHUNK):
            if overflow:
                continue  # (Claude is being stopped: what it still writes is not read)
            end = chunk.rfind(b"\n")
            if end < 0:
                partial.append(chunk)
                partial_bytes += len(chunk)
                if partial_bytes > STDOUT_LIMIT:
                    overflow = self._overflow(proc)
                continue
            lines = chunk[:end]
            if partial:
                partial.append(lines)
                lines = b"".join(partial)
                partial.clear()
            partial_bytes = len(chunk) - end - 1
            if partial_bytes:
                partial.append(chunk[end + 1:])
            batch = lines.split(b"\n")
            # (only the first can be over the limit: it may go on from earlier reads, and
            # the others are within this one, of STDOUT_CHUNK at most)
            if len(batch[0]) > STDOUT_LIMIT:
                overflow = self._overflow(proc)
                continue
            self._claude_lines(run, batch)
            # in a burst its frame waits for the next reads (``Uplink.behind``); once the
            # pipe is drained what it gave goes at once
            self.uplink.behind = len(chunk) >= PIPE_FULL
            if not self.uplink.behind:
                self.uplink.flush()
        self.uplink.behind = False
        if partial and not overflow:
            self._claude_line(run, b"".join(partial))  # (its last line, without a newline)
        code = await proc.wait()
        # what Claude said on stderr before it exited decides how its exit is reported
        with contextlib.suppress(TimeoutError):
            await wait_for(self.clock, asyncio.shield(stderr), 2.0)
        self.procs.pop(run, None)
        self.feed(self.machine.claude_exited, run, code, tuple(stderr_tail), overflow)

    def _claude_lines(self, run: int, lines: list[bytes]) -> None:
        """Lines read at once, each as ``_claude_line`` takes it, into the machine in one
        call (in a burst a call for each line cost a tenth of the keeper's time). A bug on
        any of them fails the session as on one line; what the lines before it said is
        said."""
        rest = iter(lines)
        try:
            self.do(self.machine.claude_outputs(run, map(_claude.parse_line, rest)))
        except Exception as exc:  # (as in _claude_line)
            at = len(lines) - sum(1 for _ in rest) - 1  # (the last line taken: the one it failed on)
            self._internal_error(exc, f" on a line of Claude's output ({at + 1} of {len(lines)} read at once):"
                                 f" {lines[at][:200]!r}")

    def _claude_line(self, run: int, line: bytes) -> None:
        try:
            self.do(self.machine.claude_output(run, _claude.parse_line(line)))
        except Exception as exc:  # a bug: the session fails clearly (left as it is, the turn could hang)
            self._internal_error(exc, f" on a line of Claude's output: {line[:200]!r}")

    def _overflow(self, proc: asyncio.subprocess.Process) -> bool:
        """A line over STDOUT_LIMIT: it is lost, and it may have been the turn's result: the
        turn could never end, so say so and stop this Claude (the next message resumes it)."""
        log.error("keeper %s: Claude wrote a line over %d bytes; stopping it", self.session, STDOUT_LIMIT)
        self.system.killpg(proc.pid, signal.SIGKILL)
        return True

    async def _read_stderr(self, proc: asyncio.subprocess.Process, tail: collections.deque[str]) -> None:
        assert proc.stderr is not None
        while True:
            try:
                line = await proc.stderr.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue
            if not line:
                return
            text = line.decode(errors="replace").rstrip()
            if text:
                tail.append(text[:500])

    async def _stop_claude(self, stop: StopClaude, proc: asyncio.subprocess.Process | None) -> None:
        if proc is not None:
            if not stop.at_once and proc.returncode is None:
                self.system.killpg(proc.pid, signal.SIGTERM)
                try:
                    await wait_for(self.clock, proc.wait(), STOP_GRACE)
                except TimeoutError:
                    log.warning("keeper %s: Claude ignored SIGTERM for %.0fs; SIGKILL", self.session, STOP_GRACE)
            # whatever Claude left in its group (tool subprocesses) goes too
            self.system.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        if stop.at_once:
            self.procs.pop(stop.run, None)
        else:
            self.feed(self.machine.claude_stopped, stop.run)


#: fault injection for the test suite: while the file this names exists, a new keeper
#: hangs before it connects (as a keeper stuck in start-up would)
FAULT_HANG_ENV = "SUPERVISORD_CLAUDE_FAULT_KEEPER_HANG"
#: fault injection for the test suite: a message whose text holds this variable's value
#: makes the keeper's machine raise when it is read for Claude (as a bug would)
FAULT_BUG_ENV = "SUPERVISORD_CLAUDE_FAULT_KEEPER_BUG"
#: fault injection for the test suite: while the file this names exists, the keeper's
#: machine raises when it makes the keeper's hello (as a bug would)
FAULT_HELLO_BUG_ENV = "SUPERVISORD_CLAUDE_FAULT_KEEPER_HELLO_BUG"


def _tripped_by(trigger: str) -> ReadMessage:
    def read_message(msg: _wire.QueuedMessage, echo_id: str | None) -> bytes:
        if trigger in msg.text:
            raise RuntimeError(f"a fault injected by {FAULT_BUG_ENV}")
        return message_line(msg, echo_id)
    return read_message


def main(spec: _wire.KeeperSpec, death_fd: int | None) -> int:
    """Entry point in the forked child."""
    setproctitle.setproctitle(keeper_title(spec.instance, spec.session))
    hang = os.environ.get(FAULT_HANG_ENV)
    while hang and os.path.exists(hang):
        time.sleep(0.05)
    # as the supervisor logs (its --log-format and --log-level reach us in the environment)
    configure_logging(f"keeper[{spec.session}]")
    if death_fd is not None:
        os.set_blocking(death_fd, False)
    trigger = os.environ.get(FAULT_BUG_ENV)
    keeper = Keeper(spec, death_fd, read_message=_tripped_by(trigger) if trigger else message_line)
    if hello_fault := os.environ.get(FAULT_HELLO_BUG_ENV):
        hello = keeper.machine.hello

        def hello_tripped(pid: int) -> _wire.Hello:
            if os.path.exists(hello_fault):
                raise RuntimeError(f"a fault injected by {FAULT_HELLO_BUG_ENV}")
            return hello(pid)
        keeper.machine.hello = hello_tripped  # type: ignore[method-assign]
    return asyncio.run(keeper.run())
