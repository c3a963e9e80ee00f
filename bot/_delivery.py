"""Delivery of the supervisor's events to Telegram: the durable consumer ``telegram-bot``.

Replies come back as stored events, are sent to the chat that asked (the event's
``origin``) and are acked only after Telegram accepted them — so a bot that is killed and
restarted picks up exactly where Telegram last said yes. A long answer's parts resume at
the first part Telegram has not accepted. This module owns the consumer: ``delivery_loop``
reads the subscription (reconnecting, loading what a previous run kept) and hands each
event to its session's worker (``_workers``: order, acks); ``deliver_until_done`` retries
an event while Telegram or the supervisor cannot be reached. How each kind of event is
shown: ``_show`` (``deliver``, ``HANDLERS``); live pieces of an answer: ``_live``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import Application

from protocol import ErrorCode, ProtocolError, RemoteError, Subscription

from ._core import Core
from ._live import KV_PREVIEWS
from ._requests import App
from ._restarts import Restarts
from ._send import KV_PROGRESS, parts_sent_of
from ._show import chat_of, deliver, in_topic, label_of
from ._workers import KV_DELIVERED, Progress, Workers

log = logging.getLogger("claude_telegram_bot")

CONSUMER = "telegram-bot"


async def deliver_until_done(app: App, core: Core, event: dict[str, Any]) -> None:
    """Show a stored event, trying again while Telegram or the supervisor cannot be
    reached; an event Telegram refuses (a blocked chat, a bad request) is skipped."""
    while True:
        try:
            await deliver(app, core, event)
            return
        except Forbidden:
            log.warning("chat of event %s blocked the bot; skipping", event["id"])
            return
        except BadRequest as exc:
            log.error("Telegram refused event %s: %s; skipping", event["id"], exc)
            return
        except TelegramError as exc:  # network trouble: try the same event again
            log.warning("sending event %s failed (%s); retrying", event["id"], exc)
            await asyncio.sleep(2)
        except asyncio.CancelledError:
            raise
        except (ProtocolError, OSError) as exc:  # the supervisor went away mid-event
            log.warning("showing event %s: lost the supervisor (%s); retrying", event["id"], exc)
            await asyncio.sleep(1)
        except Exception:
            log.exception("showing event %s failed; retrying", event["id"])
            await asyncio.sleep(1)


async def show_live(app: App, core: Core, event: dict[str, Any]) -> None:
    """A piece of the answer as it is written: shown (a draft, or a preview), never acked."""
    chat = chat_of(event)
    if chat is not None:
        in_topic(event)
        with contextlib.suppress(ProtocolError, OSError):  # (its label: the next piece has it)
            core.live.update(app, chat, event, await label_of(core, chat, event))


#: stored events the bot may have received and not yet shown (Telegram slow for some chats)
DELIVERY_WINDOW = 1024
#: the live text of every session comes coalesced, one frame at most this often (ms): the
#: bot wakes for frames, not for each session's pieces (100 sessions writing: 40 frames a
#: second instead of up to a thousand); a draft's text is at most this much older for it
#: (50 ms added 30 ms to the drafts' p50 at 25 chats: docs/benchmarks.md)
LIVE_EVERY_MS = 25


async def _subscribe(core: Core, after: int | None) -> Subscription:
    """The ``telegram-bot`` subscription, live text coalesced (a supervisor that does not
    know ``live_every`` yet, e.g. an older one on another host: a frame per piece)."""
    try:
        return await core.client.subscribe(consumer=CONSUMER, after=after, live=True, window=DELIVERY_WINDOW,
                                           live_every=LIVE_EVERY_MS)
    except RemoteError as exc:
        if exc.code != ErrorCode.BAD_REQUEST or "live_every" not in exc.message:
            raise
        return await core.client.subscribe(consumer=CONSUMER, after=after, live=True, window=DELIVERY_WINDOW)


async def delivery_loop(app: Application[Any, Any, Any, Any, Any, Any], core: Core) -> None:
    """Read the ``telegram-bot`` subscription and hand each event to its session's worker
    (``_workers``): this loop never waits for Telegram, so no chat waits for another."""
    progress = Progress(core.link.kv_set)
    workers = Workers(lambda event: deliver_until_done(app, core, event),
                      lambda event: show_live(app, core, event), progress)
    sub = None
    loaded = False
    shown_before: set[int] = set()  # what the previous run showed ahead of its last ack
    restarts = Restarts("delivery loop")
    try:
        while True:
            try:
                if not core.client.connected:
                    await core.client.connect(wait=3600)  # the supervisor may start after us
                if not loaded:
                    saved = await core.link.kv_get(KV_PROGRESS)
                    core.parts_sent = parts_sent_of(saved)
                    core.live.load(await core.link.kv_get(KV_PREVIEWS))
                    done = await core.link.kv_get(KV_DELIVERED)
                    shown_before = {int(i) for i in done if isinstance(i, int)} if isinstance(done, list) else set()
                    loaded = True
                if sub is not None:
                    sub.discard()
                after = progress.last_received
                sub = await _subscribe(core, after)
                progress.resubscribed(sub)
                log.info("delivering events after %s", "the stored cursor" if after is None else after)
                while True:
                    event = await sub.next()
                    if event is None:
                        continue
                    if "id" in event and event["id"] in shown_before:
                        shown_before.discard(event["id"])
                        progress.shown_before(event["id"])
                    else:
                        workers.take(event)
            except asyncio.CancelledError:
                raise
            except (ProtocolError, OSError) as exc:
                log.warning("lost the supervisor (%s); reconnecting", exc)
                await asyncio.sleep(1)
            except Exception as exc:
                await restarts.failed(exc)
    finally:
        await workers.stop()
