"""The session keeper: one process per live session, owning its Claude child and idle timer.

Forked by the fork server. It connects a DEALER socket to the supervisor's keeper socket,
starts ``claude -p`` in stream-json mode in its own process group, writes one queued user
message at a time to Claude's stdin, turns Claude's stdout into events for the supervisor,
and suspends (stops Claude and exits) when the idle timer expires. The messages it
exchanges with the supervisor are typed in ``_wire``; ``_uplink`` numbers its reports and
keeps them until the supervisor stored them, across supervisor restarts.

Its lifecycle is ``state`` alone, changed only by ``change_state``, which checks the edge
against ``EDGES`` (as supervisord's ``Subprocess.change_state`` does).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import setproctitle
import zmq
import zmq.asyncio

from protocol import EventKind, PermissionMode, Reason, SessionState, configure_logging

from . import _claude, _wire
from . import _permissions as permissions
from ._clock import Clock, IdleTimer, LoopClock, TimerHandle
from ._os import System
from ._uplink import Uplink
from ._wire import QueuedMessage

log = logging.getLogger("supervisord_claude.keeper")

#: SIGTERM to Claude's process group, this long, then SIGKILL.
STOP_GRACE = 5.0
STDOUT_LIMIT = 64 * 1024 * 1024
STDERR_TAIL = 20

S = SessionState
#: the legal transitions of a keeper's session; a keeper is forked for a suspended (or
#: failed) session and ends suspended or failed
EDGES: dict[SessionState, frozenset[SessionState]] = {
    S.SUSPENDED: frozenset({S.STARTING, S.RESUMING, S.SUSPENDING}),
    S.STARTING: frozenset({S.IDLE, S.BUSY, S.RESUMING, S.SUSPENDING, S.FAILED}),
    S.RESUMING: frozenset({S.IDLE, S.BUSY, S.SUSPENDING, S.FAILED}),
    # a model change restarts Claude: starting again (never-started) or resuming
    S.IDLE: frozenset({S.BUSY, S.STARTING, S.RESUMING, S.SUSPENDING, S.FAILED}),
    S.BUSY: frozenset({S.IDLE, S.STARTING, S.RESUMING, S.SUSPENDING, S.FAILED}),
    S.SUSPENDING: frozenset({S.SUSPENDED, S.FAILED}),
    S.FAILED: frozenset(),
}
#: states in which the keeper is on its way out and takes no new work (SUSPENDED is
#: also where it begins, so ``ending`` also looks at ``done``)
ENDING = frozenset({S.SUSPENDING, S.FAILED})


#: why a message the user dropped was not delivered
DROPPED = "dropped at your request before Claude saw it"


class IllegalTransition(RuntimeError):
    """A transition that ``EDGES`` does not allow: a bug, never input."""


def keeper_title(instance: str, session: str) -> str:
    return f"supervisord-claude[{instance}]: keeper {session}"


@dataclass
class ClaudeRun:
    """One Claude process and what the keeper learned from it."""

    proc: asyncio.subprocess.Process
    init_seen: bool = False  # Claude confirmed the conversation (its init line)
    resume_failure: str | None = None
    overflow: bool = False  # a stdout line over STDOUT_LIMIT was dropped
    stderr_tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=STDERR_TAIL))


@dataclass
class WaitingRequest:
    """A permission request Claude waits on: its event body and its timeout."""

    body: dict[str, Any]
    timer: TimerHandle | None = None


class Keeper:
    def __init__(self, spec: _wire.KeeperSpec, death_fd: int | None, clock: Clock | None = None,
                 system: System | None = None) -> None:
        self.spec = spec
        self.session = spec.session
        self.death_fd = death_fd
        self.clock = clock or LoopClock()
        self.system = system or System()
        self.state = SessionState.SUSPENDED  # until Claude is started
        self.started = spec.started
        self.model = spec.model
        self.queue: collections.deque[QueuedMessage] = collections.deque(spec.messages)
        self.current: QueuedMessage | None = None
        self.claude: ClaudeRun | None = None
        self.mode = PermissionMode(spec.permission_mode)
        self.claude_model: str | None = None
        self.allowed_tools = list(spec.allowed_tools)
        #: launch settings changed while Claude was busy: applied (by a restart) after the turn
        self.pending_changes: dict[str, Any] = {}
        # Claude's total_cost_usd is cumulative for the conversation, across --resume: the
        # last total seen is the baseline for the next result's cost delta
        self.last_cost = spec.cost_baseline
        self.permissions: dict[str, WaitingRequest] = {}  # can_use_tool requests Claude waits on
        self._tool_inputs: dict[str, Any] = {}  # this turn's tool_use inputs, by tool_use id
        self.done = asyncio.Event()
        self.exit_code = 0
        self.timer = IdleTimer(self.clock, spec.idle_timeout, self._idle_expired)
        self._fresh_retried = False
        self.uplink = Uplink(self.session, self.clock, spec.orphan_timeout, self.hello,
                             on_over_limit=self._supervisor_away_too_long,
                             on_orphan_expired=self._no_supervisor_came)
        self._ctrl_ids = 0
        #: interrupts the supervisor waits to hear about: their control request ids
        self._interrupts_asked: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None

    # plumbing -------------------------------------------------------------------------

    def _spawn_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def send(self, msg: _wire.Message) -> None:
        """Report to the supervisor (see ``_uplink``: numbered, kept until acked)."""
        self.uplink.send(msg)

    def _no_supervisor_came(self) -> None:
        self._spawn_task(self.stop(Reason.SHUTDOWN))

    def _supervisor_away_too_long(self) -> None:
        if self.current is not None:
            self._interrupt()
            self.emit(EventKind.ERROR, message="The supervisor was away for too long: the answer was"
                      " interrupted (its output so far is kept)", **self._turn())

    def hello(self) -> _wire.Hello:
        return _wire.Hello(
            pid=os.getpid(), version=_wire.WIRE_VERSION, session=self.session,
            claude_pid=self.claude.proc.pid if self.claude is not None else None, state=self.state.value,
            current=self.current.id if self.current else None, queued=tuple(m.id for m in self.queue),
            resumed=self.started, pending=tuple(w.body for w in self.permissions.values()),
        )

    def _orphaned(self) -> None:
        if not self.done.is_set():
            self.uplink.orphaned()

    def emit(self, kind: EventKind, **body: Any) -> None:
        self.uplink.send_event(kind.value, body)

    def _turn(self) -> dict[str, Any]:
        """``message_id`` of the message Claude is answering, for events of its turn."""
        return {"message_id": self.current.id} if self.current is not None else {}

    @property
    def ending(self) -> bool:
        return self.state in ENDING or self.done.is_set()

    def change_state(self, new: SessionState, reason: Reason, **extra: Any) -> None:
        """The only writer of ``state``: check the edge, then tell the supervisor."""
        if new not in EDGES[self.state]:
            raise IllegalTransition(f"keeper {self.session}: {self.state} -> {new} ({reason})")
        self.state = new
        self.emit(EventKind.STATE, state=new.value, reason=reason.value, **extra)

    # lifecycle ------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_sigterm)
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
        await self._start_claude(Reason.MESSAGE if self.started else Reason.REQUESTED, idle_for=self.spec.idle_for)
        await self.done.wait()
        self.uplink.flush()  # the last reports (the Bye) go before the socket closes
        for task in list(self._tasks):
            task.cancel()
        self._sock.disable_monitor()
        monitor.close(0)
        self._sock.close()
        self._ctx.term()
        return self.exit_code

    async def _start_claude(self, reason: Reason, idle_for: float | None = None) -> None:
        resume = self.started
        launch = _claude.LaunchSpec(
            claude_bin=self.spec.claude_bin,
            cwd=self.spec.cwd,
            session_id=self.spec.session_id,
            resume=resume,
            model=self.model,
            system_prompt=self.spec.system_prompt,
            permission_mode=self.mode,
            allowed_tools=tuple(self.allowed_tools),
            extra_args=self.spec.extra_args,
        )
        extra: dict[str, Any] = {}
        if resume and idle_for is not None:
            extra["idle_for"] = idle_for
        first = self.current or (self.queue[0] if self.queue else None)
        if first is not None:  # the message that caused this start, so a front end can answer its sender
            extra["message_id"] = first.id
        self.change_state(SessionState.RESUMING if resume else SessionState.STARTING, reason, **extra)
        env = _claude.build_env(os.environ, self.spec.instance, self.session)
        try:
            proc = await asyncio.create_subprocess_exec(
                *_claude.build_argv(launch),
                cwd=launch.cwd,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                limit=STDOUT_LIMIT,
            )
        except OSError as exc:
            if self.ending:
                return
            self.claude = None
            self.emit(EventKind.ERROR, message=f"Could not start Claude: {exc}")
            self._fail_all(f"Could not start Claude: {exc}")
            self._finish(SessionState.FAILED, Reason.RESUME_FAILED if resume else Reason.CRASHED, code=1)
            return
        if self.ending:  # stopped while Claude was being started
            self.system.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            return
        run = self.claude = ClaudeRun(proc)
        self.send(_wire.ClaudeStarted(proc.pid))
        stderr = self._spawn_task(self._read_stderr(run))
        self._spawn_task(self._read_stdout(run, stderr))
        if self.current is not None:
            # carried over from a Claude that exited before it read it (see _on_claude_exit)
            self._write(self._line_of(self.current))
            self.change_state(SessionState.BUSY, Reason.MESSAGE)
        self._pump()
        if self.current is None and not self.queue:
            self._become_idle(reason)

    def _become_idle(self, reason: Reason) -> None:
        if self.state is not SessionState.IDLE:
            self.change_state(SessionState.IDLE, reason)
        self.timer.start()

    async def _watch_link(self, monitor: zmq.asyncio.Socket) -> None:
        from zmq.utils.monitor import parse_monitor_message

        while True:
            event = parse_monitor_message(await monitor.recv_multipart())
            if event["event"] == zmq.EVENT_CONNECTED:
                self.uplink.connected()
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._orphaned()  # (an adopted keeper has no death pipe to its new supervisor)

    def _on_sigterm(self) -> None:
        self._spawn_task(self.stop(Reason.SHUTDOWN))

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
            data = await self._sock.recv()
            try:
                self.handle(_wire.decode(data))
            except Exception:
                log.exception("keeper %s: bad command from supervisor", self.session)

    def handle(self, cmd: _wire.Message) -> None:
        """Carry out one command of the supervisor."""
        if isinstance(cmd, _wire.Ack):
            self.uplink.acked(cmd.upto)
        elif isinstance(cmd, _wire.Welcome):
            self.uplink.welcome(cmd.resend_from)
        elif isinstance(cmd, _wire.Deliver):
            if self.ending:
                # lost the race with suspension: the supervisor re-delivers it after resume
                self.send(_wire.Rejected((cmd.message.id,)))
                return
            self.timer.cancel()
            self.queue.append(cmd.message)
            self._pump()
        elif isinstance(cmd, _wire.Interrupt):
            self._interrupt(report=True)
        elif isinstance(cmd, _wire.DropQueued):
            for msg in self.queue:
                self.emit(EventKind.MESSAGE_FAILED, message_id=msg.id, reason=DROPPED)
            self.queue.clear()
        elif isinstance(cmd, _wire.Suspend):
            if self.current is None and not self.queue:
                self._spawn_task(self.suspend(Reason(cmd.reason)))
        elif isinstance(cmd, _wire.Stop):
            self._spawn_task(self.stop(Reason(cmd.reason)))
        elif isinstance(cmd, _wire.Permit):
            self._answer(cmd)
        elif isinstance(cmd, _wire.SetTimeout):
            self.timer.set_timeout(cmd.seconds)
        elif isinstance(cmd, _wire.SetModel):
            self._change_launch(model=cmd.model)
        elif isinstance(cmd, _wire.SetMode):
            self._change_launch(mode=PermissionMode(cmd.mode))
        else:
            log.warning("keeper %s: unexpected %s from the supervisor", self.session, type(cmd).__name__)

    # permission requests --------------------------------------------------------------

    def _on_permission_request(self, request: dict[str, Any]) -> None:
        body = dict(request)
        tool_input = body.get("input")
        if not tool_input and body.get("tool_use_id") in self._tool_inputs:
            # ExitPlanMode's request comes without the plan; Claude's tool call has it
            body["tool_use_input"] = self._tool_inputs[body["tool_use_id"]]
        if body.get("tool_name") not in (permissions.QUESTION_TOOL, permissions.PLAN_TOOL):
            # what "always allow" would add, for a front end to show before it is pressed
            body["always"] = permissions.always_allow(permissions.PendingRequest.from_event(body), self.spec.cwd)[1]
        body.update(self._turn())
        request_id = str(body["request_id"])
        waiting = self.permissions[request_id] = WaitingRequest(body)
        timeout = self.spec.permission_timeout
        waiting.timer = self.clock.call_later(timeout, lambda: self._permission_timed_out(request_id))
        self.timer.cancel()  # never suspended while Claude waits for the user
        self.emit(EventKind.PERMISSION_REQUEST, **body)

    def _answer(self, cmd: _wire.Permit) -> None:
        waiting = self.permissions.pop(cmd.request_id, None)
        if waiting is None:
            return  # answered meanwhile (timed out, or the turn ended)
        if waiting.timer is not None:
            waiting.timer.cancel()
        self._write(_claude.permission_line(cmd.request_id, cmd.decision))
        for rule in cmd.rules:
            if rule not in self.allowed_tools:
                self.allowed_tools.append(rule)
        if cmd.mode is not None:
            self.mode = PermissionMode(cmd.mode)  # Claude switches itself (a setMode update)
        self.emit(EventKind.PERMISSION_RESOLVED, request_id=cmd.request_id, **cmd.report, **self._turn())

    def _permission_timed_out(self, request_id: str) -> None:
        waiting = self.permissions.pop(request_id, None)
        if waiting is None:
            return
        seconds = self.spec.permission_timeout
        amount = f"{seconds:g} seconds" if seconds < 90 else f"{seconds / 60:g} minutes"
        text = f"No answer within {amount}: denied."
        self._write(_claude.permission_line(request_id, _claude.deny_decision(text)))
        self.emit(EventKind.PERMISSION_RESOLVED, request_id=request_id, allow=False, by="timeout", message=text,
                  **self._turn())

    def _drop_permissions(self, why: str) -> None:
        """Claude no longer waits (its turn ended, or it stopped): the requests are void."""
        for request_id, waiting in list(self.permissions.items()):
            del self.permissions[request_id]
            if waiting.timer is not None:
                waiting.timer.cancel()
            self.emit(EventKind.PERMISSION_RESOLVED, request_id=request_id, allow=False, by="claude",
                      message=why, **self._turn())

    def _change_launch(self, **changes: Any) -> None:
        """A model or mode change: Claude is restarted with --resume once no turn runs."""
        self.pending_changes.update(changes)
        if self.current is None:
            self._spawn_task(self._apply_changes())

    # messages and turns ---------------------------------------------------------------

    def _interrupt(self, report: bool = False) -> None:
        """Ask Claude to stop its turn; with ``report``, tell the supervisor what became
        of it (once Claude confirmed it, or at once why it could not be asked)."""
        if self.current is None or self.claude is None:
            if report:
                self.send(_wire.InterruptReport(False, "Claude was not answering anything any more when it"
                                                       " arrived (the turn had ended)"))
            return
        self._ctrl_ids += 1
        request_id = f"interrupt-{self._ctrl_ids}"
        if not self._write(_claude.control_line(request_id, "interrupt")):
            if report:
                self.send(_wire.InterruptReport(False, "Claude's input is closed (it is exiting)"))
            return
        if report:
            self._interrupts_asked.add(request_id)

    def _interrupt_answered(self, request_id: str, error: str | None) -> None:
        if request_id in self._interrupts_asked:
            self._interrupts_asked.discard(request_id)
            self.send(_wire.InterruptReport(error is None, "confirmed by Claude" if error is None
                                            else f"Claude refused it: {error}"))

    def _interrupts_void(self, why: str) -> None:
        """Claude is gone: the interrupts it did not confirm never will be."""
        for _ in self._interrupts_asked:
            self.send(_wire.InterruptReport(False, why))
        self._interrupts_asked.clear()

    def _write(self, line: bytes) -> bool:
        run = self.claude
        stdin = run.proc.stdin if run is not None else None
        if stdin is None or stdin.is_closing():
            return False
        try:
            stdin.write(line)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    @staticmethod
    def _line_of(msg: QueuedMessage) -> bytes:
        return _claude.user_line(msg.text, msg.attachments)

    def _pump(self) -> None:
        """Hand the next queued message to Claude if none is in flight."""
        if self.current is not None or not self.queue or self.ending or self.claude is None:
            return
        if self.pending_changes:
            return
        msg = self.queue.popleft()
        try:
            line = self._line_of(msg)
        except OSError as exc:
            self.emit(EventKind.MESSAGE_FAILED, message_id=msg.id,
                      reason=f"cannot read attachment: {exc.strerror or exc}")
            self._pump()
            if self.current is None and not self.queue:
                self._become_idle(Reason.TURN)
            return
        self.current = msg
        # reported before the write: a keeper killed in between leaves the message marked
        # as handed over, so it is reported failed rather than delivered twice
        self.emit(EventKind.USER, message_id=msg.id, text=msg.text, attachments=list(msg.attachments))
        if self.state is not SessionState.BUSY:
            self.change_state(SessionState.BUSY, Reason.MESSAGE)
        self._write(line)

    async def _read_stdout(self, run: ClaudeRun, stderr: asyncio.Task[Any]) -> None:
        proc = run.proc
        assert proc.stdout is not None
        while True:
            try:
                line = await proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                # the line is lost, and it may have been the turn's result: the turn could
                # never end, so say so and stop this Claude (the next message resumes it)
                if not run.overflow:
                    run.overflow = True
                    log.error("keeper %s: Claude wrote a line over %d bytes; stopping it", self.session, STDOUT_LIMIT)
                    self.system.killpg(proc.pid, signal.SIGKILL)
                continue
            if not line:
                break
            if not run.overflow:
                try:
                    self._on_line(run, line)
                except Exception:  # a bug on one line must not stop reading Claude (the turn would hang)
                    log.exception("keeper %s: a line of Claude's output could not be handled: %.200r", self.session,
                                  line)
        code = await proc.wait()
        # what Claude said on stderr before it exited decides how its exit is reported
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(stderr), 2.0)
        if run is self.claude:
            await self._on_claude_exit(run, code)

    async def _read_stderr(self, run: ClaudeRun) -> None:
        assert run.proc.stderr is not None
        while True:
            try:
                line = await run.proc.stderr.readline()
            except (ValueError, asyncio.LimitOverrunError):
                continue
            if not line:
                return
            text = line.decode(errors="replace").rstrip()
            if text:
                run.stderr_tail.append(text[:500])

    def _on_line(self, run: ClaudeRun, line: bytes) -> None:
        parsed = _claude.parse_line(line)
        if parsed.init_session_id is not None:
            run.init_seen = True
            if not self.started:
                self.started = True
                self.send(_wire.ConversationStarted(parsed.init_session_id))
        if parsed.delta and self.uplink.linked:  # live only: lost deltas are no loss
            self.send(_wire.Delta(self.current.id if self.current else None, parsed.delta))
        if parsed.model is not None and parsed.model != self.claude_model:
            self.claude_model = parsed.model  # what a front end shows as "the model"
            self.emit(EventKind.SETTINGS, claude_model=parsed.model)
        if parsed.mode is not None and parsed.mode is not self.mode:
            self.mode = parsed.mode  # e.g. Claude left plan mode by itself
            self.emit(EventKind.SETTINGS, mode=parsed.mode.value)
        for kind, body in parsed.events:
            if kind is EventKind.TOOL_USE and isinstance(body.get("tool_use_id"), str):
                self._tool_inputs[body["tool_use_id"]] = body.get("input")
            self.emit(kind, **body, **self._turn())
        if parsed.control_response is not None:
            self._interrupt_answered(*parsed.control_response)
        if parsed.permission is not None:
            self._on_permission_request(parsed.permission)
        if parsed.result is not None:
            self._on_result(run, parsed.result)

    def _on_result(self, run: ClaudeRun, result: dict[str, Any]) -> None:
        if self.started and not run.init_seen:
            # e.g. "No conversation found": the process exits next; report it then
            run.resume_failure = "; ".join(result.get("errors") or []) or result.get("text") or "resume failed"
            return
        cost = result.get("cost_usd")
        delta = 0.0
        if isinstance(cost, (int, float)):
            delta = cost - self.last_cost if cost >= self.last_cost else float(cost)
            self.last_cost = float(cost)
        msg = self.current
        self._drop_permissions("the turn ended")
        self._tool_inputs.clear()
        self.current = None
        self.emit(EventKind.RESULT, message_id=msg.id if msg else None, cost_delta=delta, **result)
        if self.pending_changes:
            self._spawn_task(self._apply_changes())
            return
        self._pump()
        if self.current is None and not self.queue:
            self._become_idle(Reason.TURN)

    async def _apply_changes(self) -> None:
        if not self.pending_changes or self.ending or self.current is not None:
            return
        changes, self.pending_changes = self.pending_changes, {}
        self.model = changes.get("model", self.model)
        self.mode = changes.get("mode", self.mode)
        self.timer.cancel()
        await self._stop_claude()
        if not self.ending:  # a stop may have come meanwhile
            await self._start_claude(Reason.MODEL_CHANGE if "model" in changes else Reason.MODE_CHANGE)

    async def _on_claude_exit(self, run: ClaudeRun, code: int) -> None:
        if self.ending:
            return
        self.claude = None
        self._interrupts_void(f"Claude exited (exit code {code}) before it confirmed the interrupt")
        self._drop_permissions("Claude exited")
        self.timer.cancel()
        tail = " | ".join(run.stderr_tail)
        if not self.started and not run.init_seen and not self._fresh_retried and "already in use" in tail:
            # an earlier Claude saved this conversation (it had the first message) but died
            # before its init line reached a keeper: it exists, so resume it
            log.info("keeper %s: conversation exists already; resuming it", self.session)
            self._fresh_retried = True
            self.started = True
            self.send(_wire.ConversationStarted(self.spec.session_id))
            await self._start_claude(Reason.MESSAGE)
            return
        if run.overflow:
            text = f"Claude wrote an output line over the {STDOUT_LIMIT // (1024 * 1024)} MiB limit; it was stopped"
            self._emit_error(text, code)
            self._fail_all(text)
            self._finish(SessionState.FAILED, Reason.CRASHED, code=1)
            return
        if self.started and not run.init_seen:
            # Claude prints the reason both in its result and on stderr; say it once
            parts = [run.resume_failure] if run.resume_failure else []
            parts += [line for line in run.stderr_tail if line not in (run.resume_failure or "")]
            reason_text = "; ".join(parts) or f"exit code {code}"
            text = f"Resume failed: {reason_text}"
            # the failed state names the message it was resumed for, so a front end shows
            # its offer (a fresh conversation) where that message came from
            first = self.current or (self.queue[0] if self.queue else None)
            self._emit_error(text, code)
            self._fail_all(text)
            self._finish(SessionState.FAILED, Reason.RESUME_FAILED, code=1, detail=reason_text,
                         **({"message_id": first.id} if first is not None else {}))
            return
        text = f"Claude exited unexpectedly (exit code {code})" + (f": {tail}" if tail else "")
        self._emit_error(text, code)
        self._fail_all(text)
        self._finish(SessionState.FAILED, Reason.CRASHED, code=1)

    def _emit_error(self, text: str, code: int) -> None:
        first = self.current or (self.queue[0] if self.queue else None)
        extra = {"message_id": first.id} if first else {}
        self.emit(EventKind.ERROR, message=text, exit_code=code, **extra)

    def _fail_all(self, reason: str) -> None:
        for msg in ([self.current] if self.current else []) + list(self.queue):
            self.emit(EventKind.MESSAGE_FAILED, message_id=msg.id, reason=reason)
        self.current = None
        self.queue.clear()

    # stopping -------------------------------------------------------------------------

    def _idle_expired(self) -> None:
        if self.current is not None or self.queue or self.permissions or self.ending:
            self.timer.start()  # busy or asking: try again later, never suspend mid-turn
            return
        self._spawn_task(self.suspend(Reason.IDLE_TIMEOUT))

    async def suspend(self, reason: Reason) -> None:
        if self.ending:
            return
        if self.current is not None or self.queue or self.permissions:
            # a message came between the decision and now (this runs as its own task): it
            # is answered first; the idle timer starts again when the turn ends
            return
        self.timer.cancel()
        self.change_state(SessionState.SUSPENDING, reason)
        await self._stop_claude()
        self._finish(SessionState.SUSPENDED, reason)

    async def stop(self, reason: Reason) -> None:
        """Stop for shutdown or archive: queued messages go back to the supervisor."""
        if self.ending:
            return
        self.timer.cancel()
        if self.queue:
            self.send(_wire.Rejected(tuple(m.id for m in self.queue)))
            self.queue.clear()
        self.change_state(SessionState.SUSPENDING, reason)
        await self._stop_claude()
        if self.current is not None:
            why = "supervisor shutdown" if reason is Reason.SHUTDOWN else "session archived"
            self.emit(
                EventKind.MESSAGE_FAILED,
                message_id=self.current.id,
                reason=f"Claude was stopped before it finished answering ({why})",
            )
            self.current = None
        self._finish(SessionState.SUSPENDED, reason)

    async def _stop_claude(self) -> None:
        run, self.claude = self.claude, None
        if run is None:
            return
        self._interrupts_void("Claude was stopped before it confirmed the interrupt")
        self._drop_permissions("Claude was stopped")
        proc = run.proc
        if proc.returncode is None:
            self.system.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                log.warning("keeper %s: Claude ignored SIGTERM for %.0fs; SIGKILL", self.session, STOP_GRACE)
        # whatever Claude left in its group (tool subprocesses) goes too
        self.system.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()

    def _finish(self, state: SessionState, reason: Reason, code: int = 0, **extra: Any) -> None:
        self.change_state(state, reason, **extra)
        self.send(_wire.Bye(state.value, reason.value))
        self.exit_code = code
        self.done.set()


#: fault injection for the test suite: while the file this names exists, a new keeper
#: hangs before it connects (as a keeper stuck in start-up would)
FAULT_HANG_ENV = "SUPERVISORD_CLAUDE_FAULT_KEEPER_HANG"


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
    keeper = Keeper(spec, death_fd)
    return asyncio.run(keeper.run())
