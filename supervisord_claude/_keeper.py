"""The session keeper: one process per live session, owning its Claude child and idle timer.

Forked by the fork server. It connects a DEALER socket to the supervisor's keeper socket,
starts ``claude -p`` in stream-json mode in its own process group, writes one queued user
message at a time to Claude's stdin, turns Claude's stdout into events for the supervisor,
and suspends (stops Claude and exits) when the idle timer expires.

Wire format to the supervisor (msgpack maps, field ``t`` says what it is):
  keeper -> supervisor  hello{pid} | claude{pid} | started{} | event{kind, body}
                        | rejected{ids} | bye{state, reason}
  supervisor -> keeper  send{id, text, attachments} | interrupt{} | suspend{reason}
                        | stop{reason} | timeout{seconds} | model{model}
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import msgpack
import setproctitle
import zmq
import zmq.asyncio

from protocol import EventKind, Reason, SessionState, keeper_endpoint

from . import _claude
from ._clock import Clock, IdleTimer, LoopClock
from ._sockets import send_now

log = logging.getLogger("supervisord_claude.keeper")

#: SIGTERM to Claude's process group, this long, then SIGKILL.
STOP_GRACE = 5.0
STDOUT_LIMIT = 64 * 1024 * 1024
STDERR_TAIL = 20


def keeper_title(instance: str, session: str) -> str:
    return f"supervisord-claude[{instance}]: keeper {session}"


@dataclass
class QueuedMessage:
    id: int
    text: str
    attachments: list[str]


class Keeper:
    def __init__(self, spec: dict[str, Any], death_fd: int | None, clock: Clock | None = None):
        self.spec = spec
        self.session: str = spec["session"]
        self.death_fd = death_fd
        self.clock = clock or LoopClock()
        self.state = SessionState.STARTING
        self.started: bool = bool(spec.get("started"))
        self.model: str | None = spec.get("model")
        self.queue: collections.deque[QueuedMessage] = collections.deque()
        self.current: QueuedMessage | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self.init_seen = False
        self.resume_failure: str | None = None
        self.pending_model: str | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        # Claude's total_cost_usd is cumulative for the conversation, across --resume: the
        # last total seen is the baseline for the next result's cost delta
        self.last_cost = float(spec.get("cost_baseline") or 0.0)
        self._fresh_retried = False
        self.permissions: dict[str, Any] = {}  # pending can_use_tool requests: id -> input
        self.stopping = False
        self.done = asyncio.Event()
        self.exit_code = 0
        self.timer = IdleTimer(self.clock, float(spec["idle_timeout"]), self._idle_expired)
        self._ctrl_ids = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        for m in spec.get("messages") or ():
            self.queue.append(QueuedMessage(int(m["id"]), str(m["text"]), list(m["attachments"])))
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None

    # plumbing -------------------------------------------------------------------------

    def _spawn_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _send(self, t: str, **fields: Any) -> None:
        if self._sock is None:
            return
        try:
            send_now(self._sock, [msgpack.packb({"t": t, **fields}, use_bin_type=True)])
        except zmq.ZMQError as exc:
            log.warning("keeper %s: cannot reach the supervisor: %s", self.session, exc)

    def emit(self, kind: EventKind, **body: Any) -> None:
        self._send("event", kind=kind.value, body=body)

    def _turn(self) -> dict[str, Any]:
        """``message_id`` of the message Claude is answering, for events of its turn."""
        return {"message_id": self.current.id} if self.current is not None else {}

    def set_state(self, state: SessionState, reason: Reason, **extra: Any) -> None:
        self.state = state
        self.emit(EventKind.STATE, state=state.value, reason=reason.value, **extra)

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
        self._sock.connect(keeper_endpoint(self.spec["runtime_dir"]))
        self._send("hello", pid=os.getpid())
        self._spawn_task(self._command_loop())
        await self._start_claude(Reason.MESSAGE if self.spec.get("resume") else Reason.REQUESTED,
                                 idle_for=self.spec.get("idle_for"))
        await self.done.wait()
        for task in list(self._tasks):
            task.cancel()
        self._sock.close()
        self._ctx.term()
        return self.exit_code

    async def _start_claude(self, reason: Reason, idle_for: float | None = None) -> None:
        resume = self.started
        spec = _claude.LaunchSpec(
            claude_bin=self.spec["claude_bin"],
            cwd=self.spec["cwd"],
            session_id=self.spec["session_id"],
            resume=resume,
            model=self.model,
            system_prompt=self.spec.get("system_prompt"),
            permission_prompts=bool(self.spec.get("permission_prompts")),
            extra_args=tuple(self.spec.get("extra_args") or ()),
        )
        extra: dict[str, Any] = {}
        if resume and idle_for is not None:
            extra["idle_for"] = idle_for
        if self.queue:  # the message that caused this start, so a front end can answer its sender
            extra["message_id"] = self.queue[0].id
        self.set_state(SessionState.RESUMING if resume else SessionState.STARTING, reason, **extra)
        self.init_seen = False
        self.resume_failure = None
        self.stderr_tail.clear()
        env = _claude.build_env(os.environ, self.spec["instance"], self.session)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *_claude.build_argv(spec),
                cwd=spec.cwd,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                limit=STDOUT_LIMIT,
            )
        except OSError as exc:
            self.proc = None
            self.emit(EventKind.ERROR, message=f"Could not start Claude: {exc}")
            self._fail_all(f"Could not start Claude: {exc}")
            await self._finish(SessionState.FAILED,
                               Reason.RESUME_FAILED if resume else Reason.CRASHED, code=1)
            return
        self._send("claude", pid=self.proc.pid)
        proc = self.proc
        stderr = self._spawn_task(self._read_stderr(proc))
        self._spawn_task(self._read_stdout(proc, stderr))
        if self.current is not None:
            # carried over from a Claude that exited before it read it (see _on_claude_exit)
            self._write(self._line_of(self.current))
            self.set_state(SessionState.BUSY, Reason.MESSAGE)
        self._pump()
        if self.current is None and not self.queue:
            self._become_idle(reason)

    def _become_idle(self, reason: Reason) -> None:
        if self.state != SessionState.IDLE:
            self.set_state(SessionState.IDLE, reason)
        self.timer.start()

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
            log.warning("keeper %s: supervisor died; stopping Claude", self.session)
            self._sock_close_quietly()
            self._spawn_task(self.stop(Reason.SHUTDOWN))

    def _sock_close_quietly(self) -> None:
        if self._sock is not None:
            self._sock.setsockopt(zmq.LINGER, 0)

    async def _command_loop(self) -> None:
        assert self._sock is not None
        while True:
            data = await self._sock.recv()
            try:
                cmd = msgpack.unpackb(data, raw=False)
                self._handle_command(cmd)
            except Exception:
                log.exception("keeper %s: bad command from supervisor", self.session)

    def _handle_command(self, cmd: dict[str, Any]) -> None:
        t = cmd.get("t")
        if t == "send":
            msg = QueuedMessage(int(cmd["id"]), str(cmd["text"]), list(cmd.get("attachments") or []))
            if self.stopping or self.state in (SessionState.SUSPENDING, SessionState.SUSPENDED):
                # lost the race with suspension: the supervisor re-delivers it after resume
                self._send("rejected", ids=[msg.id])
                return
            self.timer.cancel()
            self.queue.append(msg)
            self._pump()
        elif t == "interrupt":
            if self.current is not None and self.proc is not None and self.proc.stdin is not None:
                self._ctrl_ids += 1
                self._write(_claude.control_line(f"interrupt-{self._ctrl_ids}", "interrupt"))
        elif t == "suspend":
            reason = Reason(cmd.get("reason", Reason.REQUESTED.value))
            if self.current is None and not self.queue:
                self._spawn_task(self.suspend(reason))
        elif t == "stop":
            self._spawn_task(self.stop(Reason(cmd.get("reason", Reason.SHUTDOWN.value))))
        elif t == "permit":
            request_id = str(cmd["request_id"])
            if request_id in self.permissions:
                tool_input = self.permissions.pop(request_id)
                allow = bool(cmd["allow"])
                self._write(_claude.permission_line(request_id, allow, tool_input, cmd.get("message")))
                self.emit(EventKind.PERMISSION_RESOLVED, request_id=request_id, allow=allow,
                          message=cmd.get("message"), **self._turn())
        elif t == "timeout":
            self.timer.set_timeout(float(cmd["seconds"]))
        elif t == "model":
            self.pending_model = str(cmd["model"])
            if self.current is None:
                self._spawn_task(self._apply_model())

    # messages and turns ---------------------------------------------------------------

    def _write(self, line: bytes) -> bool:
        proc = self.proc
        if proc is None or proc.stdin is None or proc.stdin.is_closing():
            return False
        try:
            proc.stdin.write(line)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def _pump(self) -> None:
        """Hand the next queued message to Claude if none is in flight."""
        if self.current is not None or not self.queue or self.stopping or self.proc is None:
            return
        if self.pending_model is not None:
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
        self.emit(EventKind.USER, message_id=msg.id, text=msg.text, attachments=msg.attachments)
        if self.state != SessionState.BUSY:
            self.set_state(SessionState.BUSY, Reason.MESSAGE)
        self._write(line)

    @staticmethod
    def _line_of(msg: QueuedMessage) -> bytes:
        return _claude.user_line(msg.text, msg.attachments)

    async def _read_stdout(self, proc: asyncio.subprocess.Process, stderr: asyncio.Task[Any]) -> None:
        assert proc.stdout is not None
        while True:
            try:
                line = await proc.stdout.readline()
            except (ValueError, asyncio.LimitOverrunError):
                self.stderr_tail.append("stdout line over the size limit")
                continue
            if not line:
                break
            self._on_line(line)
        code = await proc.wait()
        # what Claude said on stderr before it exited decides how its exit is reported
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(stderr), 2.0)
        if proc is self.proc:
            await self._on_claude_exit(code)

    async def _read_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        while True:
            line = await proc.stderr.readline()
            if not line:
                return
            text = line.decode(errors="replace").rstrip()
            if text:
                self.stderr_tail.append(text[:500])

    def _on_line(self, line: bytes) -> None:
        parsed = _claude.parse_line(line)
        if parsed.init_session_id is not None:
            self.init_seen = True
            if not self.started:
                self.started = True
                self._send("started", session_id=parsed.init_session_id)
        for kind, body in parsed.events:
            self.emit(kind, **body, **self._turn())
        if parsed.permission is not None:
            request_id = parsed.permission["request_id"]
            self.permissions[request_id] = parsed.permission["input"]
            self.timer.cancel()
            self.emit(EventKind.PERMISSION_REQUEST, **parsed.permission, **self._turn())
        if parsed.result is not None:
            self._on_result(parsed.result)

    def _on_result(self, result: dict[str, Any]) -> None:
        if self.started and not self.init_seen:
            # e.g. "No conversation found": the process exits next; report it then
            self.resume_failure = "; ".join(result.get("errors") or []) or result.get("text") or "resume failed"
            return
        cost = result.get("cost_usd")
        delta = 0.0
        if isinstance(cost, (int, float)):
            delta = cost - self.last_cost if cost >= self.last_cost else float(cost)
            self.last_cost = float(cost)
        msg = self.current
        self.current = None
        for request_id in list(self.permissions):  # the turn ended; nothing waits any more
            del self.permissions[request_id]
            self.emit(EventKind.PERMISSION_RESOLVED, request_id=request_id, allow=False, message="turn ended")
        self.emit(EventKind.RESULT, message_id=msg.id if msg else None, cost_delta=delta, **result)
        if self.pending_model is not None:
            self._spawn_task(self._apply_model())
            return
        self._pump()
        if self.current is None and not self.queue:
            self._become_idle(Reason.TURN)

    async def _apply_model(self) -> None:
        if self.pending_model is None or self.stopping:
            return
        self.model = self.pending_model
        self.pending_model = None
        self.timer.cancel()
        await self._stop_claude()
        await self._start_claude(Reason.MODEL_CHANGE)

    async def _on_claude_exit(self, code: int) -> None:
        if self.stopping:
            return
        self.proc = None
        self.timer.cancel()
        tail = " | ".join(self.stderr_tail)
        if not self.started and not self.init_seen and not self._fresh_retried and "already in use" in tail:
            # an earlier Claude saved this conversation (it had the first message) but died
            # before its init line reached a keeper: it exists, so resume it
            log.info("keeper %s: conversation exists already; resuming it", self.session)
            self._fresh_retried = True
            self.started = True
            self._send("started", session_id=self.spec["session_id"])
            await self._start_claude(Reason.MESSAGE)
            return
        if self.started and not self.init_seen:
            # Claude prints the reason both in its result and on stderr; say it once
            parts = [self.resume_failure] if self.resume_failure else []
            parts += [line for line in self.stderr_tail if line not in (self.resume_failure or "")]
            reason_text = "; ".join(parts) or f"exit code {code}"
            text = f"Resume failed: {reason_text}"
            self._emit_error(text, code)
            self._fail_all(text)
            await self._finish(SessionState.FAILED, Reason.RESUME_FAILED, code=1)
            return
        text = f"Claude exited unexpectedly (exit code {code})" + (f": {tail}" if tail else "")
        self._emit_error(text, code)
        self._fail_all(text)
        await self._finish(SessionState.FAILED, Reason.CRASHED, code=1)

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
        if self.current is not None or self.queue or self.permissions or self.stopping:
            self.timer.start()  # busy or asking: try again later, never suspend mid-turn
            return
        self._spawn_task(self.suspend(Reason.IDLE_TIMEOUT))

    async def suspend(self, reason: Reason) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.timer.cancel()
        self.set_state(SessionState.SUSPENDING, reason)
        await self._stop_claude()
        await self._finish(SessionState.SUSPENDED, reason)

    async def stop(self, reason: Reason) -> None:
        """Stop for shutdown or archive: queued messages go back to the supervisor."""
        if self.stopping:
            return
        self.stopping = True
        self.timer.cancel()
        if self.queue:
            self._send("rejected", ids=[m.id for m in self.queue])
            self.queue.clear()
        self.set_state(SessionState.SUSPENDING, reason)
        await self._stop_claude()
        if self.current is not None:
            why = "supervisor shutdown" if reason is Reason.SHUTDOWN else "session archived"
            self.emit(
                EventKind.MESSAGE_FAILED,
                message_id=self.current.id,
                reason=f"Claude was stopped before it finished answering ({why})",
            )
            self.current = None
        await self._finish(SessionState.SUSPENDED, reason)

    async def _stop_claude(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except TimeoutError:
                log.warning("keeper %s: Claude ignored SIGTERM for %.0fs; SIGKILL", self.session, STOP_GRACE)
        try:  # whatever Claude left in its group (tool subprocesses) goes too
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        await proc.wait()

    async def _finish(self, state: SessionState, reason: Reason, code: int = 0) -> None:
        self.state = state
        self.emit(EventKind.STATE, state=state.value, reason=reason.value)
        self._send("bye", state=state.value, reason=reason.value)
        self.exit_code = code
        self.done.set()


def main(spec: dict[str, Any], death_fd: int | None) -> int:
    """Entry point in the forked child."""
    setproctitle.setproctitle(keeper_title(spec["instance"], spec["session"]))
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s keeper[{spec['session']}] %(levelname)s %(message)s",
        force=True,
    )
    if death_fd is not None:
        os.set_blocking(death_fd, False)
    keeper = Keeper(spec, death_fd)
    return asyncio.run(keeper.run())
