"""How the delivery loop schedules its work: one worker per session, and the acks.

The loop reads the subscription and never waits for Telegram itself: each event goes to
its session's worker (``Workers``), which shows its session's events one after the other,
in order — so a chat whose Telegram calls are slow holds up only its own sessions, and
the live text of every other chat goes on. A worker ends when its session has nothing
waiting; the next event starts one again.

Acks stay cumulative and come only after delivery (``Progress``): the supervisor is told
"up to here" once every event up to there is shown. An event shown while an earlier one
(another session's) is still on its way is written to the kv (``KV_DELIVERED``) before its
session's next stored event is shown, so a bot killed then does not show it again (nor
out of order); the next run skips those. Writes and acks of events shown at about the
same time go as one (group commit).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from protocol import ProtocolError, Subscription

log = logging.getLogger("claude_telegram_bot")

#: the events shown beyond the acked cursor (ids): skipped by the bot's next run
KV_DELIVERED = "telegram.delivery.done"
#: how long the acks wait, after the supervisor did not take them, before trying again
RETRY_ACK_AFTER = 1.0


class Progress:
    """The events received, in the order they came, until the supervisor has their ack;
    which of them are shown; the cumulative ack and the kv record of those shown ahead of
    it. ``delivered`` returns once that is stored."""

    def __init__(self, kv_set: Callable[[str, Any], Awaitable[None]]) -> None:
        self._kv_set = kv_set
        self.sub: Subscription | None = None  # (the current one: set again after a reconnect)
        #: [event id, shown] for each event received and not yet acked, in order
        self._received: collections.deque[list[Any]] = collections.deque()
        self.last_received: int | None = None
        self.acked: int | None = None
        self._recorded: list[int] = []  # what KV_DELIVERED holds, as far as this run knows
        self._waiting: list[asyncio.Future[None]] = []
        self.flusher: asyncio.Task[None] | None = None

    def received(self, event_id: int) -> None:
        self._received.append([event_id, False])
        self.last_received = event_id

    def shown_before(self, event_id: int) -> None:
        """An event the bot's previous run showed (``KV_DELIVERED``): received and done."""
        self.received(event_id)
        self._mark(event_id)
        self._kick()

    async def delivered(self, event_id: int) -> None:
        """``event_id`` is shown: returns once the supervisor has the ack that covers it,
        or the kv the record of it."""
        self._mark(event_id)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(done)
        self._kick()
        await done

    def resubscribed(self, sub: Subscription) -> None:
        self.sub = sub
        self._kick()  # an ack the previous subscription did not take

    def _mark(self, event_id: int) -> None:
        for entry in self._received:  # (few: the events on their way now)
            if entry[0] == event_id:
                entry[1] = True
                return

    def _kick(self) -> None:
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.create_task(self._flush(), name="delivery_acks")

    async def _flush(self) -> None:
        while self._waiting or (self.sub is not None and self._ack_due() is not None):
            waiting, self._waiting = self._waiting, []
            try:
                await self._store()
            except (ProtocolError, OSError) as exc:
                log.warning("could not record delivered events (%s); trying again", exc)
                self._waiting = waiting + self._waiting
                await asyncio.sleep(RETRY_ACK_AFTER)
                continue
            for done in waiting:
                if not done.done():
                    done.set_result(None)

    def _ack_due(self) -> int | None:
        """The newest event id every event up to which is shown, if not yet acked."""
        upto = None
        for event_id, shown in self._received:
            if not shown:
                break
            upto = event_id
        return upto

    async def _store(self) -> None:
        upto = self._ack_due()
        shown = [event_id for event_id, done in self._received if done]
        # shown ahead of the ack: on record first (with every one the ack will cover, so
        # that a kill between the two loses none of them)
        if any(upto is None or event_id > upto for event_id in shown) and shown != self._recorded:
            await self._kv_set(KV_DELIVERED, shown)
            self._recorded = shown
        if upto is not None and self.sub is not None:
            await self.sub.ack(upto)
            self.acked = upto
            while self._received and self._received[0][0] <= upto:
                self._received.popleft()


def _joined(waiting: dict[str, Any], piece: dict[str, Any]) -> bool:
    """Add a piece of live text to the one waiting before it, if it continues it (a
    session whose stored events are slow to show gets its live text as one piece)."""
    if "id" in waiting or "id" in piece or waiting.get("message_id") != piece.get("message_id"):
        return False
    text = str(waiting.get("text") or "")
    if int(piece.get("offset") or 0) != int(waiting.get("offset") or 0) + len(text):
        return False
    waiting["text"] = text + str(piece.get("text") or "")
    return True


Work = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class _Queue:
    items: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)
    task: asyncio.Task[None] | None = None


class Workers:
    """One worker per session, each taking its session's events in order: ``show`` for
    a stored event (then ``progress.delivered``), ``live`` for a piece of live text (after
    the stored events before it, which may end the text it continues)."""

    def __init__(self, show: Work, live: Work, progress: Progress) -> None:
        self._show, self._live, self.progress = show, live, progress
        self._queues: dict[str, _Queue] = {}

    def __len__(self) -> int:
        return len(self._queues)

    def take(self, event: dict[str, Any]) -> None:
        """Hand an event to its session's worker (started if it has none)."""
        session = str(event.get("session"))
        if "id" in event:
            self.progress.received(event["id"])
        queue = self._queues.get(session)
        if queue is None:
            queue = self._queues[session] = _Queue()
        if not (queue.items and _joined(queue.items[-1], event)):
            queue.items.append(event)
        if queue.task is None:
            queue.task = asyncio.create_task(self._work(session, queue), name=f"delivery[{session}]")

    async def _work(self, session: str, queue: _Queue) -> None:
        # the record that an event was shown is awaited before the session's next stored
        # event (a kill -9 then shows none of them twice, nor out of order), not before
        # its live text
        recording: asyncio.Future[None] | None = None
        while queue.items or (recording is not None and not recording.done()):
            if not queue.items:
                assert recording is not None
                await recording  # (more may come meanwhile: the loop goes on with it)
                continue
            event = queue.items[0]
            if "id" in event:
                if recording is not None:
                    await recording
                await self._show(event)
                queue.items.popleft()
                recording = asyncio.ensure_future(self.progress.delivered(event["id"]))
            else:
                queue.items.popleft()
                try:
                    await self._live(event)
                except Exception:  # best effort: the stored text completes it
                    log.exception("live text of %s not shown", session)
        del self._queues[session]  # (nothing waits: the next event starts a new worker)

    async def stop(self) -> None:
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        if self.progress.flusher is not None:
            tasks.append(self.progress.flusher)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
