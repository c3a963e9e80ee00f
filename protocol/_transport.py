"""An in-process transport for ``AsyncClient``: its frames go to a server in the same
process instead of over the control socket — httpx's ``MockTransport`` idea. Tests run
the bot's and claudectl's logic against the supervisor's real core this way (decode,
validate, the op, the store, the reply, the events), without a process or a socket
(``supervisord_claude.supervisor._inprocess.InProcessControl`` is that server).

Everything above the socket is ``AsyncClient``'s own: requests, replies, subscriptions,
acks. What a socket adds (the peer's absence, a full pipe, reconnection) is not here:
socket-level tests keep covering it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, Protocol, cast

from ._aclient import AsyncClient


class InProcessServer(Protocol):
    def connect(self, deliver: Callable[[bytes], None]) -> bytes:
        """A new client, whose frames (replies, events) go to ``deliver``; its identity."""
        ...

    def frame(self, ident: bytes, frame: bytes) -> None:
        """A request frame from that client."""
        ...

    def disconnect(self, ident: bytes) -> None: ...


class _Pipe:
    """What ``AsyncClient`` sends on and receives from, in place of its socket."""

    def __init__(self, server: InProcessServer) -> None:
        self.server = server
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.ident = server.connect(self.inbox.put_nowait)

    async def send(self, frame: bytes) -> None:
        self.server.frame(self.ident, frame)

    async def recv(self) -> bytes:
        return await self.inbox.get()

    def close(self, linger: int | None = None) -> None:
        self.server.disconnect(self.ident)


class InProcessClient(AsyncClient):
    """An ``AsyncClient`` connected to ``server`` in this process."""

    def __init__(self, server: InProcessServer, *, timeout: float = 10.0) -> None:
        super().__init__("/in-process", timeout=timeout)
        self.server = server

    async def connect(self, wait: float = 0.0) -> InProcessClient:
        # (AsyncClient reads and writes its socket only by send and recv)
        self._sock = cast(Any, _Pipe(self.server))
        self._peer_up = True
        self._reader = asyncio.create_task(self._read_loop())
        return self

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None
