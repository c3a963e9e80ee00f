"""Non-blocking sends on zmq.asyncio sockets that fail synchronously.

With ``NOBLOCK`` pyzmq tries the send at once and stores any error in the returned
future; retrieve it here so callers can handle EAGAIN / EHOSTUNREACH like a plain socket.
"""

from __future__ import annotations

from typing import Any

import zmq


def send_now(sock: Any, frames: list[bytes]) -> None:
    """Send a multipart message now or raise ``zmq.ZMQError``."""
    result = sock.send_multipart(frames, zmq.NOBLOCK)
    if hasattr(result, "done") and result.done():
        exc = result.exception()
        if exc is not None:
            raise exc
