"""A keeper's link to its supervisor: numbered reports kept until acked, the Hello on every
connection, the resend after a Welcome, and the wait for a new supervisor when the old
one died (see ``_wire`` for the messages).

The keeper decides what to report; this decides when it can go, and keeps it until the
supervisor has stored it.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import logging
from collections.abc import Callable
from typing import Any

import zmq

from . import _wire
from ._clock import Clock, TimerHandle
from ._sockets import send_now

log = logging.getLogger("supervisord_claude.keeper")

#: what a keeper keeps for a supervisor that is not there (its reports until acked);
#: past this it interrupts the turn rather than grow without bound
UNACKED_LIMIT = 64 * 1024 * 1024


class Link(enum.Enum):
    CONNECTING = "connecting"  # said Hello, waits for Welcome: reports are only kept
    LINKED = "linked"  # reports are sent (and kept until acked)
    ORPHANED = "orphaned"  # the supervisor died: keep Claude running, wait for the next one


class Uplink:
    def __init__(self, session: str, clock: Clock, orphan_timeout: float, hello: Callable[[], _wire.Hello],
                 on_over_limit: Callable[[], None], on_orphan_expired: Callable[[], None]) -> None:
        self.session = session
        self.clock = clock
        self.orphan_timeout = orphan_timeout
        self.hello = hello
        self.on_over_limit = on_over_limit
        self.on_orphan_expired = on_orphan_expired
        self.state = Link.CONNECTING
        self.sock: Any = None
        self._sent_n = 0
        self._unacked: collections.deque[tuple[int, bytes]] = collections.deque()
        self.unacked_bytes = 0
        self._over_limit = False
        self._orphan_timer: TimerHandle | None = None

    @property
    def linked(self) -> bool:
        return self.state is Link.LINKED

    def _raw_send(self, data: bytes) -> None:
        if self.sock is None:
            return
        try:
            send_now(self.sock, [data])
        except zmq.ZMQError as exc:
            log.warning("keeper %s: cannot reach the supervisor: %s", self.session, exc)

    def send(self, msg: _wire.Message) -> None:
        """A report: numbered and kept until acked. Anything else: sent if it can be."""
        if not isinstance(msg, _wire.Numbered):
            self._raw_send(_wire.encode(msg))
            return
        self._sent_n += 1
        data = _wire.encode(dataclasses.replace(msg, n=self._sent_n))
        self._unacked.append((self._sent_n, data))
        self.unacked_bytes += len(data)
        if self.state is Link.LINKED:
            self._raw_send(data)
        elif self.unacked_bytes > UNACKED_LIMIT and not self._over_limit:
            self._over_limit = True
            log.error("keeper %s: %d bytes wait for a supervisor", self.session, self.unacked_bytes)
            self.on_over_limit()

    def acked(self, upto: int) -> None:
        while self._unacked and self._unacked[0][0] <= upto:
            self.unacked_bytes -= len(self._unacked.popleft()[1])
        if self.unacked_bytes <= UNACKED_LIMIT // 2:
            self._over_limit = False

    def connected(self) -> None:
        """A (new) supervisor is there: introduce ourselves; reports wait for its Welcome."""
        self.state = Link.CONNECTING
        self._raw_send(_wire.encode(self.hello()))

    def welcome(self, resend_from: int) -> None:
        self.acked(resend_from - 1)
        self.state = Link.LINKED
        if self._orphan_timer is not None:
            self._orphan_timer.cancel()
            self._orphan_timer = None
            log.info("keeper %s: adopted by a new supervisor", self.session)
        for _, data in self._unacked:
            self._raw_send(data)

    def orphaned(self) -> None:
        if self.state is Link.ORPHANED:
            return
        self.state = Link.ORPHANED
        log.warning("keeper %s: supervisor gone; Claude keeps running for %.0f s while a new one may come",
                    self.session, self.orphan_timeout)
        self._orphan_timer = self.clock.call_later(self.orphan_timeout, self._expired)

    def _expired(self) -> None:
        self._orphan_timer = None
        log.warning("keeper %s: no supervisor came; stopping Claude", self.session)
        if self.sock is not None:
            self.sock.setsockopt(zmq.LINGER, 0)
        self.on_orphan_expired()
