"""The subscription hub: who is subscribed to what, their windows, cursors and fan-out.

Events are read back from the store (never held here: the store keeps its newest ones in
memory), so a subscriber that is slow or reconnects gets exactly what it has not acked, in
order. What one subscriber may have in flight is bounded by its window (in events). Events
come as slices of their stored runs (``_storeruns.RunSlice``), and a frame carries the
stored bytes as they are: an ``events`` frame a slice of a run's ``data``, with no Python
per event.

Live text (the answer as Claude writes it) is not stored: the hub holds each running
turn's text so far, and a subscriber that asked for it (``live``) and has every stored
event gets the text so far once, then each new piece — after, never before, the stored
events it has not seen.

A live subscriber may ask for its live text coalesced (``live_every``, in ms): then the
hub keeps which sessions' text grew for it and sends, at most once every ``live_every``
(and once its pipe has room again), one ``lives`` frame with each of those sessions'
newest text since what it was sent — one frame for every session, where a subscriber of
all sessions would otherwise get a frame per session per piece. What it sends and when
is otherwise as above (only once it has every stored event; the stored text completes it).

Why it is over ~400 lines: the two ways of sending live text (a frame a piece, coalesced)
share each subscriber's cursor and the rule above; a module of their own would need the
hub's subscriber state handed over.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from protocol import MAX_LIVE_EVERY_MS, MAX_SUBSCRIPTIONS_PER_CLIENT, ErrorCode, encode, encode_event
from protocol._codec import encode_events_parts

from .._clock import Clock, TimerHandle
from .._errors import ClientGone, ClientSlow, OpError
from ._store import Store
from ._storeruns import RunSlice, StoredRun

DEFAULT_WINDOW = 256
MAX_WINDOW = 4096
#: what one subscription may have sent and not acked, in bytes, whatever its window: a
#: subscriber that stops reading costs the supervisor at most this much
MAX_INFLIGHT_BYTES = 4 * 1024 * 1024
#: an ``events`` frame is closed once it holds this many bytes (a client takes 8 MiB)
BATCH_FRAME_BYTES = 256 * 1024

log = logging.getLogger("supervisord_claude")

KEEPALIVE = encode({"type": "keepalive"})

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
    #: what was sent and not acked, in order: (first id, last id, events, bytes) of each
    #: slice of a run sent (its ids are one run's: consecutive)
    inflight: collections.deque[tuple[int, int, int]] = field(default_factory=collections.deque)
    inflight_events: int = 0
    inflight_bytes: int = 0
    live: bool = False
    #: events go several to a frame (``events``) instead of one (``event``)
    batch: bool = False
    #: session -> (``LiveText.number`` of its live text, characters of it sent)
    live_sent: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: live text coalesced: at most one ``lives`` frame this often (seconds); None: a
    #: ``live`` frame per session per piece
    live_every: float | None = None
    #: (coalesced) the sessions whose live text it may not have yet
    live_due: set[str] = field(default_factory=set)
    #: (coalesced) when its last ``lives`` frame went, and the timer of the next
    live_last: float = float("-inf")
    live_timer: TimerHandle | None = None


@dataclass
class LiveText:
    """A running turn's answer so far."""

    message_id: int | None
    origin: str | None
    text: str = ""
    #: False for the piece a keeper was writing when this supervisor adopted it: what it
    #: holds is only what was written since, so its offsets are not the answer's — it is
    #: not sent live (a client would put it in the wrong place), the stored text completes it
    from_start: bool = True
    #: which piece of live text this is (the hub's count): a turn's next piece of text —
    #: after a tool, say — has the turn's message id too, and is sent from its start
    number: int = 0


#: the stored events that end a turn's live text
_ENDS_LIVE_TEXT = frozenset({"assistant_text", "result", "message_failed"})


class SubscriptionHub:
    def __init__(self, store: Store, send: Send, clock: Clock | None = None) -> None:
        self.store = store
        self.send = send
        #: paces coalesced live text (without one, e.g. a test driving the hub: at once)
        self.clock = clock
        self.subs: dict[int, Subscription] = {}
        self.live_text: dict[str, LiveText] = {}
        #: session -> the message an adopted keeper was answering (``began_before``)
        self._began_before: dict[str, int | None] = {}
        #: the sessions whose live text grew in this loop turn (sent at its end)
        self._live_written: set[str] = set()
        self._live_count = 0  # (``LiveText.number``)
        # random start: a client that outlived a previous supervisor never sees its old
        # subscription ids reused for new subscriptions
        self._ids = secrets.randbelow(1 << 40)

    def __len__(self) -> int:
        return len(self.subs)

    def subscribe(self, ident: bytes, session: str | None, start: int, consumer: str | None,
                  window: int | None, live: bool = False, batch: bool = False,
                  live_every_ms: int | None = None) -> Subscription:
        self.sweep(keep=ident)  # a new subscription: first forget those of clients that left
        if sum(1 for s in self.subs.values() if s.ident == ident) >= MAX_SUBSCRIPTIONS_PER_CLIENT:
            raise OpError(ErrorCode.BAD_REQUEST, f"a connection may hold {MAX_SUBSCRIPTIONS_PER_CLIENT}"
                          " subscriptions; unsubscribe one first")
        self._ids += 1
        sub = Subscription(
            sub_id=self._ids,
            ident=ident,
            session=session,
            consumer=consumer,
            window=min(window or DEFAULT_WINDOW, MAX_WINDOW),
            sent=start,
            live=live,
            batch=batch,
            live_every=None if live_every_ms is None else min(live_every_ms, MAX_LIVE_EVERY_MS) / 1000,
        )
        self.subs[sub.sub_id] = sub
        return sub

    def clients(self) -> list[dict[str, Any]]:
        """The connected clients that hold subscriptions: how many each, and their
        consumer names (a client that only sends requests is not counted)."""
        by_client: dict[bytes, list[Subscription]] = {}
        for sub in self.subs.values():
            by_client.setdefault(sub.ident, []).append(sub)
        return [{"subscriptions": len(subs), "consumers": sorted({s.consumer for s in subs if s.consumer}),
                 "unacked": sum(s.inflight_events for s in subs)} for subs in by_client.values()]

    def own(self, ident: bytes, sub_id: int) -> Subscription:
        sub = self.subs.get(sub_id)
        if sub is None or sub.ident != ident:
            raise OpError(ErrorCode.NO_SUBSCRIPTION, f"no subscription {sub_id} on this connection")
        return sub

    def ack(self, ident: bytes, sub_id: int, upto: int) -> None:
        sub = self.own(ident, sub_id)
        inflight = sub.inflight
        while inflight and inflight[0][0] <= upto:
            first, last, size = inflight.popleft()
            if last <= upto:
                sub.inflight_events -= last - first + 1
                sub.inflight_bytes -= size
            else:  # a slice acked in part: its bytes are counted in proportion
                acked = upto - first + 1
                left = size * (last - upto) // (last - first + 1)
                sub.inflight_events -= acked
                sub.inflight_bytes -= size - left
                inflight.appendleft((upto + 1, last, left))
                break
        if sub.consumer:
            self.store.set_cursor(sub.consumer, min(upto, sub.sent))
        self.pump(sub)

    def unsubscribe(self, ident: bytes, sub_id: int) -> None:
        self._forget(self.own(ident, sub_id))

    def resume(self, ident: bytes) -> None:
        """A client's pipe has room again: its subscriptions go on."""
        for sub in [s for s in self.subs.values() if s.ident == ident]:
            self._pump_guarded(sub)

    def drop_client(self, ident: bytes) -> None:
        for sub in [s for s in self.subs.values() if s.ident == ident]:
            self._forget(sub)

    def _forget(self, sub: Subscription) -> None:
        self.subs.pop(sub.sub_id, None)
        if sub.live_timer is not None:
            sub.live_timer.cancel()
            sub.live_timer = None

    def sweep(self, keep: bytes | None = None) -> int:
        """Forget the subscriptions of clients that are gone: each subscribed client gets
        a ``keepalive`` frame (clients ignore frame types they do not know), and one that
        is no longer connected fails it. Returns how many clients were dropped."""
        dropped = 0
        for ident in {s.ident for s in self.subs.values()} - {keep}:
            try:
                self.send(ident, KEEPALIVE)
            except ClientGone:
                self.drop_client(ident)
                dropped += 1
            except ClientSlow:
                pass  # connected, just not reading
            except Exception:
                log.exception("keepalive to a client failed; its subscriptions are dropped")
                self.drop_client(ident)
                dropped += 1
        return dropped

    def publish(self, runs: list[StoredRun]) -> None:
        """Stored runs of events are out: end the live text they complete, then give each
        subscriber that wants any of them one pump (which reads them back in order)."""
        if self._live_written and runs:  # the text written before these events goes first
            self._send_live_written(before=runs[0].first_id)
        sessions: set[str] = set()
        for run in runs:
            session = run.session
            sessions.add(session)
            live = self.live_text.get(session)
            if live is not None and run.kinds is not None and run.message_ids is not None:
                for kind, message_id in zip(run.kinds, run.message_ids, strict=True):
                    if kind in _ENDS_LIVE_TEXT and live.message_id == message_id:
                        del self.live_text[session]
                        break
        for sub in list(self.subs.values()):
            if sub.session is None or sub.session in sessions:
                self._pump_guarded(sub)

    def _pump_guarded(self, sub: Subscription) -> None:
        """Pump one subscription; whatever goes wrong with it, the others still get the
        event (and the event stays stored: a subscriber that resubscribes gets it)."""
        try:
            self.pump(sub)
        except Exception:
            log.exception("subscription %d failed; dropped", sub.sub_id)
            self._forget(sub)

    def delta(self, session: str, message_id: int | None, text: str, origin: str | None) -> None:
        """A piece of the answer being written: held, and sent to live subscribers at the
        end of this loop turn (the pieces of a session that came in one turn go as one
        frame: under load, fewer frames, not a growing lag)."""
        live = self.live_text.get(session)
        if live is None or live.message_id != message_id:
            began_before = session in self._began_before and self._began_before.pop(session) == message_id
            self._live_count += 1
            live = self.live_text[session] = LiveText(message_id, origin, from_start=not began_before,
                                                      number=self._live_count)
        live.text += text
        first = not self._live_written
        self._live_written.add(session)
        if first:
            try:
                asyncio.get_running_loop().call_soon(self._send_live_written)
            except RuntimeError:  # no loop (a test driving the hub): at once
                self._send_live_written()

    def began_before(self, session: str, message_id: int | None) -> None:
        """An adopted keeper is answering ``message_id``: the piece it is writing began
        under the previous supervisor (see ``LiveText.from_start``)."""
        self._began_before[session] = message_id

    def _send_live_written(self, before: int | None = None) -> None:
        """Send what was written since the last loop turn to the live subscribers that
        have every stored event (every one before the id ``before``: events stored after
        this text was written)."""
        sessions, self._live_written = self._live_written, set()
        for sub in list(self.subs.values()):
            if not sub.live:
                continue
            mine = sessions if sub.session is None else sessions & {sub.session}
            if not mine:
                continue
            if sub.live_every is not None:
                self._coalesce(sub, mine)
            elif self._caught_up(sub, before):
                for session in mine:
                    self._send_live(sub, session)

    def _caught_up(self, sub: Subscription, before: int | None = None) -> bool:
        """Whether the subscriber was sent every stored event (before the id ``before``)."""
        unsent = self.store.runs_after(sub.sent, sub.session, limit=1)
        return not unsent or (before is not None and unsent[0].first_id >= before)

    def _live_event(self, sub: Subscription, session: str) -> tuple[dict[str, Any], tuple[int, int]] | None:
        """The session's live text that ``sub`` was not sent, as an ``assistant_delta``
        event, and what ``sub.live_sent`` holds once it is sent (None: nothing new, or
        nothing that can be sent live)."""
        live = self.live_text.get(session)
        if live is None or not live.from_start:
            return None
        known = sub.live_sent.get(session)
        start = known[1] if known is not None and known[0] == live.number else 0
        if start >= len(live.text):
            return None
        event = {"kind": "assistant_delta", "session": session, "message_id": live.message_id,
                 "offset": start, "text": live.text[start:]}
        if live.origin:
            event["origin"] = live.origin
        return event, (live.number, len(live.text))

    def _send_live(self, sub: Subscription, session: str) -> None:
        found = self._live_event(sub, session)
        if found is None:
            return
        event, sent = found
        try:
            self.send(sub.ident, encode({"type": "live", "sub": sub.sub_id, "event": event}))
        except ClientGone:
            self.drop_client(sub.ident)
            return
        except ClientSlow:
            return  # live text is best effort; the complete text is a stored event
        sub.live_sent[session] = sent

    def _coalesce(self, sub: Subscription, sessions: Iterable[str]) -> None:
        """(A coalescing subscriber) ``sessions``' live text may have grown: it goes with
        the next ``lives`` frame — now, if the last went ``live_every`` ago."""
        sub.live_due.update(sessions)
        if sub.live_timer is not None:
            return  # (the next frame is on its way)
        assert sub.live_every is not None
        wait = sub.live_last + sub.live_every - self.clock.monotonic() if self.clock is not None else 0.0
        if wait <= 0:
            self._send_lives(sub)
        else:
            assert self.clock is not None
            sub_id = sub.sub_id
            sub.live_timer = self.clock.call_later(wait, lambda: self._live_timer_fired(sub_id))

    def _live_timer_fired(self, sub_id: int) -> None:
        sub = self.subs.get(sub_id)
        if sub is None:
            return
        sub.live_timer = None
        try:
            self._send_lives(sub)
        except Exception:
            log.exception("live text of subscription %d failed; dropped", sub_id)
            self._forget(sub)

    def _send_lives(self, sub: Subscription) -> None:
        """One ``lives`` frame (or a few, of about BATCH_FRAME_BYTES each) with the newest
        text of each due session — only once the subscriber has every stored event (the
        pump comes back here when it has). A full pipe keeps them due: ``resume``."""
        if not sub.live_due or not self._caught_up(sub):
            return
        found = [f for f in (self._live_event(sub, session) for session in sorted(sub.live_due)) if f is not None]
        frames: list[list[tuple[dict[str, Any], tuple[int, int]]]] = []
        size = BATCH_FRAME_BYTES
        for event, sent in found:
            if size >= BATCH_FRAME_BYTES:
                frames.append([])
                size = 0
            frames[-1].append((event, sent))
            size += len(event["text"]) * 4  # (at most, in UTF-8)
        for frame in frames:
            try:
                self.send(sub.ident, encode({"type": "lives", "sub": sub.sub_id, "events": [e for e, _ in frame]}))
            except ClientGone:
                self.drop_client(sub.ident)
                return
            except ClientSlow:
                return  # still due: sent once its pipe has room (``resume`` pumps it)
            for event, sent in frame:
                sub.live_sent[event["session"]] = sent
                sub.live_due.discard(event["session"])
        sub.live_due.clear()  # (the rest had nothing new)
        if found and self.clock is not None:
            sub.live_last = self.clock.monotonic()

    def pump(self, sub: Subscription) -> None:
        """Send stored events after ``sub.sent`` while the subscriber's window has room;
        once it has them all, the live text so far."""
        while sub.inflight_events < sub.window and sub.inflight_bytes < MAX_INFLIGHT_BYTES \
                and sub.sub_id in self.subs:
            batch = self.store.runs_after(sub.sent, sub.session, limit=sub.window - sub.inflight_events)
            if not batch:
                if sub.live:
                    sessions = [sub.session] if sub.session else list(self.live_text)
                    if sub.live_every is not None:
                        self._coalesce(sub, [s for s in sessions if s is not None and s in self.live_text])
                        return
                    for session in sessions:
                        if session is not None and session in self.live_text:
                            self._send_live(sub, session)
                return
            for frame, members in self._frames_of(sub, batch):
                try:
                    self.send(sub.ident, frame)
                except ClientGone:
                    self.drop_client(sub.ident)
                    return
                except ClientSlow:
                    return  # its pipe is full: ``resume`` once it has room
                sub.sent = members[-1][1]
                sub.inflight.extend(members)
                sub.inflight_events += sum(last - first + 1 for first, last, _ in members)
                sub.inflight_bytes += sum(size for _, _, size in members)
                if sub.inflight_bytes >= MAX_INFLIGHT_BYTES:
                    return
        if sub.live_due and sub.live_every is not None and sub.sub_id in self.subs:
            self._coalesce(sub, ())  # (its window is full, but it may have every stored event)

    @staticmethod
    def _frames_of(sub: Subscription, parts: list[RunSlice]) -> list[tuple[bytes, list[tuple[int, int, int]]]]:
        """The frames that carry the events of ``parts``, each with the (first id, last id,
        bytes) of the slices it holds: one ``event`` frame each, or ``events`` frames of
        about BATCH_FRAME_BYTES at most, each the stored bytes of whole slices of runs."""
        frames: list[tuple[bytes, list[tuple[int, int, int]]]] = []
        if not sub.batch:
            for part in parts:
                run = part.run
                data, ends, begin = run.data, run.ends, run.start_of(part.start)
                for i in range(part.start, part.stop):
                    end = ends[i]
                    frames.append((encode_event(sub.sub_id, data[begin:end]), [(run.first_id + i, run.first_id + i,
                                                                                end - begin)]))
                    begin = end
            return frames
        pieces: list[memoryview] = []
        members: list[tuple[int, int, int]] = []
        count = size = 0
        for part in parts:
            run = part.run
            ends, start, view = run.ends, part.start, memoryview(run.data)
            while start < part.stop:
                begin = run.start_of(start)
                # as many of its events as fit in the frame (one at least)
                stop = max(start + 1, min(part.stop, bisect.bisect_right(ends, begin + BATCH_FRAME_BYTES - size,
                                                                         start, part.stop)))
                end = ends[stop - 1]
                pieces.append(view[begin:end])  # (a view: the frame is the one copy)
                members.append((run.first_id + start, run.first_id + stop - 1, end - begin))
                count += stop - start
                size += end - begin
                start = stop
                if size >= BATCH_FRAME_BYTES or start < part.stop:
                    frames.append((encode_events_parts(sub.sub_id, count, pieces), members))
                    pieces, members, count, size = [], [], 0, 0
        if pieces:
            frames.append((encode_events_parts(sub.sub_id, count, pieces), members))
        return frames
