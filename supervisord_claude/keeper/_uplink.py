"""A keeper's link to its supervisor: numbered reports kept until acked, the Hello on every
connection, the resend after a Welcome, and the wait for a new supervisor when the old
one died (see ``_wire`` for the messages).

The keeper decides what to report; this decides when it can go, and keeps it until the
supervisor has stored it. What is reported in one loop turn goes as one frame (messages
back to back: see ``_wire.decode_all``), so a burst of Claude output costs a send per
turn, not per line; and the events among it go as runs (``_wire.KeeperEvents``, one
message for up to ``RUN_EVENTS`` events), so the supervisor reads a message per run, not
per line. A run is kept, and sent again after a reconnect, as one piece: it is dropped
once the supervisor acked its last event (a supervisor that stored part of it skips
that part when it comes again).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import logging
from collections.abc import Callable
from typing import Any

import zmq

from .. import _wire
from .._clock import Clock, TimerHandle
from .._sockets import send_now

log = logging.getLogger("supervisord_claude.keeper")

#: what a keeper keeps for a supervisor that is not there (its reports until acked);
#: past this it interrupts the turn rather than grow without bound
UNACKED_LIMIT = 64 * 1024 * 1024
#: a frame of reports is sent once it holds this much, without waiting for the loop turn
FRAME_BYTES = 256 * 1024
#: live text (``Delta``) goes at most this often: Claude's pieces in between go as one.
#: Each is a message for the supervisor to read and one for it to send to each live
#: subscriber; a Telegram draft is updated twice a second at most
LIVE_EVERY = 0.1


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
        #: what the supervisor has not acked: (the number of its last report, the message)
        self._unacked: collections.deque[tuple[int, bytes]] = collections.deque()
        #: the run of events being gathered (``_wire.run_item`` each), and its bytes
        self._run: list[bytes] = []
        self._run_bytes = 0
        self.unacked_bytes = 0
        self._over_limit = False
        self._orphan_timer: TimerHandle | None = None
        #: encoded messages for the next frame (sent at the end of this loop turn)
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._flush_armed = False
        #: live text not sent yet (``_hold_live``), its timer, and when live text last went
        self._held_live: _wire.Delta | None = None
        self._live_timer: TimerHandle | None = None
        self._live_sent_at = float("-inf")

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

    def _queue(self, data: bytes) -> None:
        """Into the frame that leaves at the end of this loop turn (or now, when full)."""
        self._outbox.append(data)
        self._outbox_bytes += len(data)
        if self._outbox_bytes >= FRAME_BYTES:
            self.flush()
        elif not self._flush_armed:
            self._flush_armed = True
            self.clock.call_later(0, self.flush)

    def flush(self) -> None:
        self._flush_armed = False
        self._close_run()
        if self._outbox:
            frame = b"".join(self._outbox)
            self._outbox.clear()
            self._outbox_bytes = 0
            self._raw_send(frame)

    def send(self, msg: _wire.Message) -> None:
        """A report: numbered and kept until acked. Live text: held, then sent if it can
        be (``_hold_live``). Anything else: sent if it can be. All in order, in this loop
        turn's frame."""
        if type(msg) is _wire.Delta:
            self._hold_live(msg)
            return
        if self._held_live is not None:
            self._release_live()  # (the text written before goes first)
        if type(msg) is _wire.KeeperEvent:
            self._add_to_run(_wire.run_item_packed(msg.kind, msg.message_id, msg.packed))
            return
        self._close_run()  # (what came before goes first)
        if not isinstance(msg, _wire.Numbered):
            if self.state is Link.LINKED:
                self._queue(_wire.encode(msg))
            return
        self._sent_n += 1
        self._keep(self._sent_n, _wire.encode(msg, n=self._sent_n))

    def send_event(self, kind: str, body: dict[str, Any]) -> None:
        """``send(KeeperEvent(kind, body))`` without making the message object: this is
        the path of every line of Claude's output."""
        if self._held_live is not None:
            self._release_live()
        self._add_to_run(_wire.run_item(kind, body))

    def _hold_live(self, delta: _wire.Delta) -> None:
        """Live text goes at most every LIVE_EVERY seconds: the pieces Claude writes in
        between go together, as one Delta (its first piece after a pause goes at once).
        Every report after it waits for it, so the text is never sent after the event
        that completes it."""
        held = self._held_live
        if held is not None and held.message_id != delta.message_id:
            self._release_live()
            held = None
        self._held_live = delta if held is None else _wire.Delta(delta.message_id, held.text + delta.text)
        if self._live_timer is None:
            wait = self._live_sent_at + LIVE_EVERY - self.clock.monotonic()
            if wait > 0:
                self._live_timer = self.clock.call_later(wait, self._release_live)
            else:  # into this loop turn's frame
                self._release_live()

    def _release_live(self) -> None:
        if self._live_timer is not None:
            self._live_timer.cancel()
            self._live_timer = None
        held, self._held_live = self._held_live, None
        if held is not None and self.state is Link.LINKED:  # (lost live text is no loss: not kept)
            self._close_run()  # (what came before it goes first)
            self._live_sent_at = self.clock.monotonic()
            self._queue(_wire.encode(held))

    def _add_to_run(self, item: bytes) -> None:
        """An event into the run being gathered (numbered now, in order with every other
        report); the run goes at the end of the loop turn, or once it is full."""
        self._sent_n += 1
        self._run.append(item)
        self._run_bytes += len(item)
        self.unacked_bytes += len(item)  # (counted from now: it is kept from now)
        if len(self._run) >= _wire.RUN_EVENTS or self._run_bytes >= _wire.RUN_BYTES:
            self._close_run()
        else:
            if not self._flush_armed:
                self._flush_armed = True
                self.clock.call_later(0, self.flush)
            if self.state is not Link.LINKED:
                self._check_bound()

    def _close_run(self) -> None:
        if self._run:
            run, self._run = self._run, []
            self.unacked_bytes -= self._run_bytes
            self._run_bytes = 0
            self._keep(self._sent_n, _wire.encode_run(self._sent_n - len(run) + 1, run))

    def _keep(self, n: int, data: bytes) -> None:
        self._unacked.append((n, data))
        self.unacked_bytes += len(data)
        if self.state is Link.LINKED:
            self._queue(data)
        else:
            self._check_bound()

    def _check_bound(self) -> None:
        if self.unacked_bytes > UNACKED_LIMIT and not self._over_limit:
            self._over_limit = True
            log.error("keeper %s: %d bytes wait for a supervisor", self.session, self.unacked_bytes)
            self.on_over_limit()

    def acked(self, upto: int) -> None:
        while self._unacked and self._unacked[0][0] <= upto:
            self.unacked_bytes -= len(self._unacked.popleft()[1])
        if self.unacked_bytes <= UNACKED_LIMIT // 2:
            self._over_limit = False

    def connected(self) -> None:
        """A (new) supervisor is there: introduce ourselves; reports wait for its Welcome
        (which asks for every one it has not stored: what waited to be sent is among them)."""
        self._close_run()
        self.state = Link.CONNECTING
        self._outbox.clear()
        self._outbox_bytes = 0
        # (with the number of its last report: the supervisor knows what was done with its
        # messages once it has stored every report up to it)
        self._raw_send(_wire.encode(dataclasses.replace(self.hello(), last_n=self._sent_n)))

    def welcome(self, resend_from: int) -> None:
        self._close_run()
        self.acked(resend_from - 1)
        self.state = Link.LINKED
        if self._orphan_timer is not None:
            self._orphan_timer.cancel()
            self._orphan_timer = None
            log.info("keeper %s: adopted by a new supervisor", self.session)
        for _, data in self._unacked:
            self._queue(data)
        self.flush()

    def orphaned(self) -> None:
        if self.state is Link.ORPHANED:
            return
        self.state = Link.ORPHANED
        # (at every planned restart too: only a supervisor that does not come back is worth a warning)
        log.info("keeper %s: supervisor gone; Claude keeps running for %.0f s while a new one may come",
                    self.session, self.orphan_timeout)
        self._orphan_timer = self.clock.call_later(self.orphan_timeout, self._expired)

    def _expired(self) -> None:
        self._orphan_timer = None
        log.warning("keeper %s: no supervisor came; stopping Claude", self.session)
        if self.sock is not None:
            self.sock.setsockopt(zmq.LINGER, 0)
        self.on_orphan_expired()
