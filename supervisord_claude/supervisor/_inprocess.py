"""The control socket's request path for clients in this process (``protocol``'s
``InProcessClient``): a frame goes through ``ControlServer.on_frames`` — decode, validate,
the op, the reply — as one from the socket does, and what would be sent on the socket
(replies, events, live text) is handed to that client's ``deliver``. With ``build_core``
this is a supervisor without processes or sockets, for tests of its clients' logic.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from protocol import encode

from .._clock import Clock
from .._errors import ClientGone
from ._clientlimits import InputWarnings
from ._control import ControlServer
from ._core import Core


class InProcessControl(ControlServer):
    """``ControlServer``'s request path without its socket (none is made: only what
    ``on_frames`` and ``error`` use is set up here)."""

    def __init__(self, clock: Clock) -> None:  # (no ControlServer.__init__: it binds a socket)
        self.clock = clock
        self.warnings = InputWarnings(clock.monotonic)
        self.slow_warnings = InputWarnings(clock.monotonic, about="clients that do not read")
        self.replies_dropped = 0
        self.clients: dict[bytes, Callable[[bytes], None]] = {}
        self._numbers = itertools.count(1)
        self.core: Core | None = None

    def answer_with(self, core: Core) -> None:
        """Answer with this core (made by ``build_core`` with ``send`` below)."""
        self.core = core

    def connect(self, deliver: Callable[[bytes], None]) -> bytes:
        ident = b"in-process-%d" % next(self._numbers)
        self.clients[ident] = deliver
        return ident

    def frame(self, ident: bytes, frame: bytes) -> None:
        assert self.core is not None, "answer_with(core) first"
        self.on_frames(ident, [frame], self.core.ops.handle, self.core.ops.after_reply)

    def disconnect(self, ident: bytes) -> None:
        if self.clients.pop(ident, None) is not None and self.core is not None:
            self.core.hub.drop_client(ident)

    def reply(self, ident: bytes, msg: dict[str, object]) -> None:
        deliver = self.clients.get(ident)
        if deliver is not None:
            deliver(encode(msg))

    def send(self, ident: bytes, frame: bytes) -> None:
        deliver = self.clients.get(ident)
        if deliver is None:
            raise ClientGone()
        deliver(frame)
