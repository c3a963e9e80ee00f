"""The subscription hub: who is subscribed to what, their windows, cursors and fan-out.

Events are read back from the store (never held here), so a subscriber that is slow or
reconnects gets exactly what it has not acked, in order. What one subscriber may have in
flight is bounded by its window.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from protocol import ErrorCode, encode

from ._errors import ClientGone, ClientSlow, OpError
from ._store import Store

DEFAULT_WINDOW = 256
MAX_WINDOW = 4096

#: sends one frame to a client; raises ClientSlow (try later) or ClientGone
Send = Callable[[bytes, bytes], None]


@dataclass
class Subscription:
    sub_id: int
    ident: bytes
    session: str | None
    consumer: str | None
    window: int
    sent: int  # global id of the last event sent
    inflight: collections.deque[int] = field(default_factory=collections.deque)


class SubscriptionHub:
    def __init__(self, store: Store, send: Send) -> None:
        self.store = store
        self.send = send
        self.subs: dict[int, Subscription] = {}
        # random start: a client that outlived a previous supervisor never sees its old
        # subscription ids reused for new subscriptions
        self._ids = secrets.randbelow(1 << 40)

    def __len__(self) -> int:
        return len(self.subs)

    def subscribe(self, ident: bytes, session: str | None, start: int, consumer: str | None,
                  window: int | None) -> Subscription:
        self._ids += 1
        sub = Subscription(
            sub_id=self._ids,
            ident=ident,
            session=session,
            consumer=consumer,
            window=min(window or DEFAULT_WINDOW, MAX_WINDOW),
            sent=start,
        )
        self.subs[sub.sub_id] = sub
        return sub

    def own(self, ident: bytes, sub_id: int) -> Subscription:
        sub = self.subs.get(sub_id)
        if sub is None or sub.ident != ident:
            raise OpError(ErrorCode.NO_SUBSCRIPTION, f"no subscription {sub_id} on this connection")
        return sub

    def ack(self, ident: bytes, sub_id: int, upto: int) -> None:
        sub = self.own(ident, sub_id)
        while sub.inflight and sub.inflight[0] <= upto:
            sub.inflight.popleft()
        if sub.consumer:
            self.store.set_cursor(sub.consumer, min(upto, sub.sent))
        self.pump(sub)

    def unsubscribe(self, ident: bytes, sub_id: int) -> None:
        self.own(ident, sub_id)
        del self.subs[sub_id]

    def drop_client(self, ident: bytes) -> None:
        for sub_id in [s.sub_id for s in self.subs.values() if s.ident == ident]:
            del self.subs[sub_id]

    def publish(self, event: dict[str, Any]) -> None:
        for sub in list(self.subs.values()):
            if sub.session is None or sub.session == event["session"]:
                self.pump(sub)

    def pump(self, sub: Subscription) -> None:
        """Send stored events after ``sub.sent`` while the subscriber's window has room."""
        while len(sub.inflight) < sub.window and sub.sub_id in self.subs:
            batch = self.store.events_after(sub.sent, sub.session, limit=sub.window - len(sub.inflight))
            if not batch:
                return
            for event in batch:
                frame = encode({"type": "event", "sub": sub.sub_id, "event": event})
                try:
                    self.send(sub.ident, frame)
                except ClientGone:
                    self.drop_client(sub.ident)
                    return
                except ClientSlow:
                    return  # the next ack or ping resumes
                sub.sent = event["id"]
                sub.inflight.append(event["id"])
