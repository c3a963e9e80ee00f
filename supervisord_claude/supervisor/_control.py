"""The control server: the clients' ROUTER socket — receive, decode, validate, hand the
request to the op handlers, reply. It never dies on input: every request that could be
read gets a reply carrying its id, whatever happens while handling it.

It applies what clients may cost the supervisor (``_clientlimits``): how many may be
connected at once (``ConnectionGate``) and what may wait for one client to read
(``ClientPipe``): a client that does not read loses its own replies, never anyone else's
service.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from protocol import (
    HARD_MAX_FRAME_BYTES,
    ErrorCode,
    FrameError,
    Request,
    ValidationError,
    decode,
    encode,
    request_id_of,
    validate_request,
)

from .._clock import Clock, LoopClock
from .._errors import ClientGone, ClientSlow, OpError, StoreError
from .._sockets import send_now
from ._clientlimits import (
    ACCEPT_BACKLOG,
    GATE_CHECK_EVERY,
    HELD_REPLIES,
    HELD_REPLY_BYTES,
    PIPE_BYTES,
    PIPE_FRAMES,
    REQUEST_FRAMES,
    RETRY_BACKOFF_MAX,
    RETRY_EVERY,
    ClientPipe,
    ConnectionGate,
    InputWarnings,
)
from ._hub import KEEPALIVE

log = logging.getLogger("supervisord_claude")

class LaterReply:
    """A result its handler learns only later (an interrupt, once Claude confirmed it or
    the wait ran out; a backup, once copied): the reply is sent when it is resolved — or
    the error when it is rejected — once."""

    def __init__(self) -> None:
        self.result: dict[str, Any] | None = None
        self.error: OpError | None = None
        self._then: Callable[[dict[str, Any]], None] | None = None
        self._fail: Callable[[OpError], None] | None = None

    def resolve(self, result: dict[str, Any]) -> None:
        if self.result is None and self.error is None:
            self.result = result
            if self._then is not None:
                self._then(result)

    def reject(self, error: OpError) -> None:
        if self.result is None and self.error is None:
            self.error = error
            if self._fail is not None:
                self._fail(error)

    def then(self, send: Callable[[dict[str, Any]], None], fail: Callable[[OpError], None] | None = None) -> None:
        self._then, self._fail = send, fail
        if self.result is not None:
            send(self.result)
        elif self.error is not None and fail is not None:
            fail(self.error)


#: carries out one valid request; returns its result (now, or later)
Handler = Callable[[bytes, Request], "dict[str, Any] | LaterReply"]

def bind_private(sock: zmq.Socket[Any], path: Path) -> None:
    """Bind an ipc socket that only this user can connect to (0600)."""
    path.unlink(missing_ok=True)
    old = os.umask(0o177)
    try:
        sock.bind(f"ipc://{path}")
    finally:
        os.umask(old)
    os.chmod(path, 0o600)


class ClientListener(Protocol):
    """What the control server tells about its clients (the hub: their subscriptions)."""

    def drop_client(self, ident: bytes) -> None:
        """The client left: what it subscribed to goes."""

    def resume(self, ident: bytes) -> None:
        """The client's pipe has room again after it was full: its subscriptions go on."""


class _NoListener:
    def drop_client(self, ident: bytes) -> None:
        pass

    def resume(self, ident: bytes) -> None:
        pass


_NO_LISTENER = _NoListener()


class ControlServer:
    def __init__(self, ctx: zmq.asyncio.Context, path: Path, max_connections: int,
                 clock: Clock | None = None) -> None:
        self.path = path
        self.sock = ctx.socket(zmq.ROUTER)
        self.clock = clock or LoopClock()
        self.gate = ConnectionGate(path, max_connections, self.clock.monotonic)
        # the monitor counts connections from the first one (set before bind)
        monitor_addr = f"inproc://control-monitor-{id(self)}"
        self.sock.monitor(monitor_addr, zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        self.monitor = ctx.socket(zmq.PAIR)
        self.monitor.setsockopt(zmq.RCVHWM, 0)  # a lost event would skew the count
        self.monitor.connect(monitor_addr)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sock.setsockopt(zmq.MAXMSGSIZE, HARD_MAX_FRAME_BYTES)
        self.sock.setsockopt(zmq.LINGER, 500)
        self.sock.setsockopt(zmq.SNDHWM, PIPE_FRAMES)
        self.sock.setsockopt(zmq.RCVHWM, REQUEST_FRAMES)
        self.sock.setsockopt(zmq.BACKLOG, ACCEPT_BACKLOG)
        self.pipes: dict[bytes, ClientPipe] = {}
        self.stalled: set[bytes] = set()
        self._stalled_now = asyncio.Event()
        self.replies_dropped = 0
        #: who is told of a client leaving or its pipe having room (given by ``serve``)
        self._clients: ClientListener = _NO_LISTENER
        self.warnings = InputWarnings(self.clock.monotonic)
        self.slow_warnings = InputWarnings(self.clock.monotonic, about="clients that do not read")

    def bind(self) -> None:
        """Start taking clients (after start-up and adoption are done)."""
        bind_private(self.sock, self.path)
        self.gate.bound()

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
        self.gate.close()
        self.monitor.close(0)
        self.sock.close(0)

    def limits(self) -> dict[str, dict[str, int | None]]:
        """What clients use of what is bounded (for ``status``)."""
        return {**self.gate.limits(),
                "clients_not_reading": {"used": len(self.stalled), "limit": None},
                "replies_dropped": {"used": self.replies_dropped, "limit": None}}

    async def serve_connections(self) -> None:
        """Count connections as they come and go; close or open the door."""
        drain: zmq.Socket[bytes] = zmq.Socket.shadow(self.monitor.underlying)  # plain non-blocking reads
        while True:
            await self.monitor.poll(int(GATE_CHECK_EVERY * 1000))
            while True:  # a burst: count it all, then decide once
                try:
                    frames = drain.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                event = parse_monitor_message(frames)
                self.gate.on_event(int(event["event"]), int(event["value"]))
            self.gate.check()
            if len(self.pipes) > 2 * self.gate.connections + 64:  # clients have left
                self.sweep_pipes()

    def _push(self, ident: bytes, pipe: ClientPipe, frame: bytes, probe: bool = False) -> bool:
        """Send one frame if the client's pipe has room (a probe's few bytes always have,
        if ZeroMQ takes it); False if not; ``ClientGone`` if it left."""
        if not probe and not pipe.has_room(len(frame)):
            return False
        try:
            send_now(self.sock, [ident, frame])
        except zmq.ZMQError as exc:
            if exc.errno == errno.EHOSTUNREACH:
                raise ClientGone() from None
            if exc.errno == errno.EAGAIN:
                return False
            raise ClientSlow(str(exc)) from None
        pipe.sent(len(frame))
        return True

    def _stall(self, ident: bytes, pipe: ClientPipe) -> None:
        if not pipe.stalled:
            pipe.stalled = True
            self.stalled.add(ident)
            self._stalled_now.set()

    def _forget(self, ident: bytes) -> None:
        self.pipes.pop(ident, None)
        self.stalled.discard(ident)

    def send(self, ident: bytes, frame: bytes) -> None:
        """Send one frame (an event, live text) to a client now; ``ClientSlow`` if its
        pipe is full (it is tried again, and the listener's ``resume`` says when it has room) or
        ``ClientGone``."""
        pipe = self.pipes.setdefault(ident, ClientPipe())
        try:
            if pipe.replies or not self._push(ident, pipe, frame):
                self._stall(ident, pipe)
                raise ClientSlow("the client's pipe is full")
        except ClientGone:
            self._forget(ident)
            raise

    def reply(self, ident: bytes, msg: dict[str, Any]) -> None:
        """Send a reply, or hold it until the client's pipe has room; a client that holds
        HELD_REPLIES unread already loses it (and only it)."""
        frame = encode(msg)
        pipe = self.pipes.setdefault(ident, ClientPipe())
        try:
            if not pipe.replies and self._push(ident, pipe, frame):
                return
        except ClientGone:
            self._forget(ident)
            self._clients.drop_client(ident)
            return
        except ClientSlow as exc:
            log.warning("reply to a client dropped: %s", exc)
            return
        # (one reply waits whatever its size: a big one, e.g. the list of thousands of
        # sessions, is not lost by a client that reads; the next waits behind it)
        if not pipe.replies or (len(pipe.replies) < HELD_REPLIES
                                and pipe.reply_bytes + len(frame) <= HELD_REPLY_BYTES):
            pipe.replies.append(frame)
            pipe.reply_bytes += len(frame)
            self._stall(ident, pipe)
            return
        pipe.dropped += 1
        self.replies_dropped += 1
        self.slow_warnings.warn("a client is not reading its replies: %d dropped so far (its pipe holds"
                                " %d KiB and %d replies wait)", pipe.dropped, pipe.held // 1024,
                                len(pipe.replies))

    def _unstall(self, ident: bytes, pipe: ClientPipe) -> bool:
        """Send the replies that wait; True once the client's pipe has room again.

        A keepalive (clients ignore it) that goes through proves room, and as the pipe
        holds only the last PIPE_FRAMES frames, each pushes an old frame out of the count:
        a client that was slow and reads again gets under the byte bound this way."""
        proved = False
        for _ in range(2 * PIPE_FRAMES):  # (bounded work per try; the next try goes on)
            if pipe.replies and pipe.has_room(len(pipe.replies[0])):
                frame = pipe.replies[0]
                if not self._push(ident, pipe, frame):
                    return False
                pipe.replies.popleft()
                pipe.reply_bytes -= len(frame)
            elif pipe.replies or not proved or pipe.held > PIPE_BYTES // 2:
                if not self._push(ident, pipe, KEEPALIVE, probe=True):
                    return False
            else:
                return True
            proved = True
        return False

    def retry_stalled(self) -> None:
        """Try again every client whose pipe was full."""
        for ident in list(self.stalled):
            pipe = self.pipes.get(ident)
            if pipe is not None:
                pipe.tries += 1
                if pipe.tries % min(RETRY_BACKOFF_MAX, 1 << (pipe.tries.bit_length() - 1)):
                    continue  # (tries 1, 2, 4, 8, ... then every RETRY_BACKOFF_MAX-th)
            try:
                if pipe is not None and not self._unstall(ident, pipe):
                    continue
            except ClientGone:
                self._forget(ident)
                self._clients.drop_client(ident)
                continue
            except ClientSlow:
                continue
            self.stalled.discard(ident)
            if pipe is not None:
                pipe.stalled, pipe.tries = False, 0
                self._clients.resume(ident)

    def sweep_pipes(self) -> None:
        """Forget what is kept for clients that left (a keepalive fails for them)."""
        for ident, pipe in list(self.pipes.items()):
            if pipe.stalled:
                continue  # (retried anyway)
            try:
                if not self._push(ident, pipe, KEEPALIVE, probe=True):
                    self._stall(ident, pipe)
            except ClientGone:
                self._forget(ident)
            except ClientSlow:
                pass

    async def serve_stalled(self) -> None:
        """While some client's pipe is full, try it again every RETRY_EVERY."""
        while True:
            await self._stalled_now.wait()
            while self.stalled:
                await self.clock.sleep(RETRY_EVERY)
                self.retry_stalled()
            self._stalled_now.clear()

    def error(self, ident: bytes, req_id: Any, code: ErrorCode, message: str) -> None:
        self.reply(ident, {"type": "reply", "id": req_id, "ok": False,
                           "error": {"code": code.value, "message": message}})

    async def serve(self, handle: Handler, after_reply: Callable[[bytes, Request, dict[str, Any]], None],
                    clients: ClientListener) -> None:
        """Answer requests with ``handle`` (then ``after_reply``); tell ``clients`` (the
        hub) of clients that leave or have room again."""
        self._clients = clients
        while True:
            frames = await self.sock.recv_multipart()
            ident = frames[0]
            try:
                self.on_frames(ident, frames[1:], handle, after_reply)
            except Exception:  # the daemon never dies on input (the request id is lost here)
                log.exception("unexpected error while handling a client request")
                self.error(ident, None, ErrorCode.INTERNAL, "internal error; see the supervisor log")
            # a receive that finds a request waiting does not yield: let the connection
            # count (and the keepers) have their turn in a flood of requests
            await asyncio.sleep(0)

    def on_frames(self, ident: bytes, frames: list[bytes], handle: Handler,
                  after_reply: Callable[[bytes, Request, dict[str, Any]], None]) -> None:
        if len(frames) != 1:
            self.warnings.warn("client sent %d frames in one message; expected 1", len(frames))
            self.error(ident, None, ErrorCode.BAD_FRAME, "a request is exactly one frame")
            return
        try:
            msg = decode(frames[0])
        except FrameError as exc:
            self.warnings.warn("bad frame from a client: %s", exc.message)
            self.error(ident, None, exc.code, exc.message)
            return
        req_id = request_id_of(msg)
        try:
            request = validate_request(msg)
            result = handle(ident, request)
        except (ValidationError, OpError) as exc:
            self.error(ident, req_id, exc.code, exc.message)
            return
        except StoreError as exc:
            log.error("store error: %s", exc)
            self.error(ident, req_id, ErrorCode.STORAGE, f"the supervisor's store failed: {exc}")
            return
        except Exception as exc:  # a bug or an OS error: answer this request, keep serving
            log.exception("unexpected error while handling %r", msg.get("op"))
            self.error(ident, req_id, ErrorCode.INTERNAL,
                       f"internal error ({type(exc).__name__}: {exc}); see the supervisor log")
            return
        if isinstance(result, LaterReply):
            result.then(lambda later: self.reply(ident, {"type": "reply", "id": req_id, "ok": True, "result": later}),
                        lambda exc: self.error(ident, req_id, exc.code, exc.message))
            return
        self.reply(ident, {"type": "reply", "id": req_id, "ok": True, "result": result})
        after_reply(ident, request, result)
