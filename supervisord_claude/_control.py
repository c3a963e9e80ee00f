"""The control server: the clients' ROUTER socket — receive, decode, validate, hand the
request to the op handlers, reply. It never dies on input: every request that could be
read gets a reply carrying its id, whatever happens while handling it.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

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

from ._errors import ClientGone, ClientSlow, OpError, StoreError
from ._sockets import send_now

log = logging.getLogger("supervisord_claude")

class LaterReply:
    """A result its handler learns only later (an interrupt, once Claude confirmed it or
    the wait ran out): the reply is sent when it is resolved, once."""

    def __init__(self) -> None:
        self.result: dict[str, Any] | None = None
        self._then: Callable[[dict[str, Any]], None] | None = None

    def resolve(self, result: dict[str, Any]) -> None:
        if self.result is None:
            self.result = result
            if self._then is not None:
                self._then(result)

    def then(self, send: Callable[[dict[str, Any]], None]) -> None:
        self._then = send
        if self.result is not None:
            send(self.result)


#: carries out one valid request; returns its result (now, or later)
Handler = Callable[[bytes, Request], "dict[str, Any] | LaterReply"]

#: warnings about bad client input: at most this many per LOG_PERIOD seconds (a client
#: sending garbage in a loop must not fill the disk with the supervisor's log)
LOG_BURST = 10
LOG_PERIOD = 60.0


class InputWarnings:
    """Rate-limited warnings about client input; what was held back is counted and said."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.window_start = clock()
        self.logged = 0
        self.suppressed = 0

    def warn(self, message: str, *args: Any) -> None:
        now = self.clock()
        if now - self.window_start >= LOG_PERIOD:
            if self.suppressed:
                log.warning("%d more warnings about client input were not logged in the last %.0f s",
                            self.suppressed, now - self.window_start)
            self.window_start, self.logged, self.suppressed = now, 0, 0
        if self.logged < LOG_BURST:
            self.logged += 1
            log.warning(message, *args)
        else:
            self.suppressed += 1


def bind_private(sock: zmq.Socket[Any], path: Path) -> None:
    """Bind an ipc socket that only this user can connect to (0600)."""
    path.unlink(missing_ok=True)
    old = os.umask(0o177)
    try:
        sock.bind(f"ipc://{path}")
    finally:
        os.umask(old)
    os.chmod(path, 0o600)


class ControlServer:
    def __init__(self, ctx: zmq.asyncio.Context, path: Path) -> None:
        self.path = path
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sock.setsockopt(zmq.MAXMSGSIZE, HARD_MAX_FRAME_BYTES)
        self.sock.setsockopt(zmq.LINGER, 500)
        # a reply is never dropped, however many events a client has not read yet; what a
        # subscriber can have in flight is bounded by its window instead
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.on_gone: Callable[[bytes], None] = lambda ident: None
        self.warnings = InputWarnings()

    def bind(self) -> None:
        """Start taking clients (after start-up and adoption are done)."""
        bind_private(self.sock, self.path)

    def close(self) -> None:
        self.path.unlink(missing_ok=True)
        self.sock.close(0)

    def send(self, ident: bytes, frame: bytes) -> None:
        """Send one frame to a client now; ``ClientSlow`` or ``ClientGone`` if not."""
        try:
            send_now(self.sock, [ident, frame])
        except zmq.ZMQError as exc:
            if exc.errno == errno.EHOSTUNREACH:
                raise ClientGone() from None
            raise ClientSlow(str(exc)) from None

    def reply(self, ident: bytes, msg: dict[str, Any]) -> None:
        try:
            self.send(ident, encode(msg))
        except ClientGone:
            self.on_gone(ident)
        except ClientSlow as exc:  # cannot happen without a high-water mark; say so if it does
            log.warning("reply to a client dropped: %s", exc)

    def error(self, ident: bytes, req_id: Any, code: ErrorCode, message: str) -> None:
        self.reply(ident, {"type": "reply", "id": req_id, "ok": False,
                           "error": {"code": code.value, "message": message}})

    async def serve(self, handle: Handler, after_reply: Callable[[bytes, Request, dict[str, Any]], None]) -> None:
        while True:
            frames = await self.sock.recv_multipart()
            ident = frames[0]
            try:
                self.on_frames(ident, frames[1:], handle, after_reply)
            except Exception:  # the daemon never dies on input (the request id is lost here)
                log.exception("unexpected error while handling a client request")
                self.error(ident, None, ErrorCode.INTERNAL, "internal error; see the supervisor log")

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
            result.then(lambda later: self.reply(ident, {"type": "reply", "id": req_id, "ok": True, "result": later}))
            return
        self.reply(ident, {"type": "reply", "id": req_id, "ok": True, "result": result})
        after_reply(ident, request, result)
