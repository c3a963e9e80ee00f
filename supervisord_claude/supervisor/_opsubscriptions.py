"""The ops on subscriptions: subscribe, ack, unsubscribe, ping, and the named consumers'
cursors."""

from __future__ import annotations

import logging
from typing import Any

from protocol import ErrorCode

from .._errors import OpError
from ._opbase import OpsBase

log = logging.getLogger("supervisord_claude")


class SubscriptionOps(OpsBase):
    """Events to clients."""

    def op_subscribe(self, ident: bytes, session: str | None = None, after_seq: int | None = None,
                     after_id: int | None = None, consumer: str | None = None, window: int | None = None,
                     live: bool = False, batch: bool = False, live_every: int | None = None) -> dict[str, Any]:
        """One session's events after its sequence number ``after_seq``, or all sessions'
        after the global event id ``after_id`` (v1's ``after`` is either: ``_vocabulary``);
        ``live_every`` (ms, with ``live``): the live text coalesced (``_hub``)."""
        if live_every is not None and not live:
            raise OpError(ErrorCode.BAD_REQUEST, "'live_every' paces live text: give 'live': true with it")
        if session is not None:
            if after_id is not None:
                raise OpError(ErrorCode.BAD_REQUEST, "'after_id' counts all sessions' events: with 'session',"
                              " give 'after_seq' (that session's sequence number)")
            self._session(session, allow_archived=True)
            start = self.store.event_id_at_seq(session, after_seq) if after_seq is not None else None
        else:
            if after_seq is not None:
                raise OpError(ErrorCode.BAD_REQUEST, "'after_seq' counts one session's events: give 'session',"
                              " or 'after_id' (a global event id)")
            start = after_id
        if start is None:
            start = self.store.get_cursor(consumer) if consumer else self.store.last_event_id()
        sub = self.hub.subscribe(ident, session, start, consumer, window, live, batch, live_every)
        return {"sub": sub.sub_id, "position": start}

    def op_ack(self, ident: bytes, sub: int, upto: int) -> dict[str, Any]:
        self.hub.ack(ident, sub, upto)
        return {}

    def op_unsubscribe(self, ident: bytes, sub: int) -> dict[str, Any]:
        self.hub.unsubscribe(ident, sub)
        return {}

    def op_ping(self, ident: bytes, sub: int | None = None) -> dict[str, Any]:
        if sub is not None:
            self.hub.pump(self.hub.own(ident, sub))
        return {"time": self.wall()}

    def op_consumers(self, ident: bytes) -> dict[str, Any]:
        """The named consumers' cursors; ``stale``: not moved for the retention period, so
        no longer holding events back from pruning."""
        cutoff = self.wall() - self.config.event_retention_days * 86400
        return {"consumers": [{"consumer": name, "position": position, "moved": moved,
                               "stale": moved is not None and moved < cutoff}
                              for name, position, moved in self.store.cursor_details()]}

    def op_remove_consumer(self, ident: bytes, consumer: str) -> dict[str, Any]:
        if not self.store.remove_cursor(consumer):
            raise OpError(ErrorCode.NOT_FOUND, f"no consumer named {consumer!r} (claudectl consumers lists them)")
        log.info("consumer %s removed: it holds no events back", consumer, extra={"consumer": consumer})
        return {"consumer": consumer}
