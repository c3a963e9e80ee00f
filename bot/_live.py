"""Answers shown while Claude writes them: in a private chat as a Telegram draft
(``sendMessageDraft``, one ``draft_id`` per reply), elsewhere as one message that is edited.

Updates are throttled (at most one per ``LIVE_EVERY`` seconds per chat, and only with the
bot's rate limit to spare: ``_pacing``; the text is the newest when the update goes) and sent as plain text — a partial answer often has unclosed Markdown,
and plain text is never refused — showing the tail when it is longer than a message. The
final answer is not sent from here: it comes once, with its entities, from the stored
``assistant_text`` event; ``finish`` then removes the preview.

The previews (edited messages) this bot has open are kept in the supervisor's kv
(``KV_PREVIEWS``): a bot killed mid-answer and restarted goes on editing the same one, and
removes it when the answer arrives, so an answer never shows twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from telegram.error import BadRequest, TelegramError
from telegram.ext import Application

from . import _markdown as markdown
from ._pacing import spare_turn

log = logging.getLogger("claude_telegram_bot")

KV_PREVIEWS = "telegram.live.previews"  # [[turn's message id, chat, preview message id], ...]
LIVE_EVERY = 0.5  # seconds between two updates of a chat's live answer
LIVE_UTF16 = 4000
_CURSOR = " ▍"


@dataclass
class LiveReply:
    chat: int
    draft_id: int
    label: str | None = None  # "[name]" when the session is not the chat's active one
    text: str = ""
    shown: str = ""
    preview_id: int | None = None  # the edited message (not in private chats)
    task: asyncio.Task[None] | None = None
    broken: bool = False  # Telegram refused an update: show nothing more of this one
    sent_at: list[float] = field(default_factory=list)

    @property
    def private(self) -> bool:
        return self.chat > 0  # Telegram: users' chats have positive ids, groups negative


class LiveReplies:
    def __init__(self) -> None:
        self.replies: dict[int, LiveReply] = {}  # by the turn's message id
        self._last: dict[int, float] = {}  # chat -> when it was last updated
        #: the previews open, by the turn's message id: (chat, preview message id)
        self.previews: dict[int, tuple[int, int]] = {}
        #: stores ``previews`` (set by the delivery loop, which loads them at start)
        self.save: Callable[[list[list[int]]], Awaitable[None]] | None = None

    def load(self, saved: Any) -> None:
        """The previews a previous run of the bot left open."""
        if isinstance(saved, list):
            self.previews = {int(t[0]): (int(t[1]), int(t[2])) for t in saved
                             if isinstance(t, list) and len(t) == 3}

    async def _store(self) -> None:
        if self.save is not None:
            await self.save([[turn, chat, preview] for turn, (chat, preview) in self.previews.items()])

    def update(self, app: Application[Any, Any, Any, Any, Any, Any], chat: int, event: dict[str, Any],
               label: str | None = None) -> None:
        """Show more of an answer being written; ``label`` heads it (whose it is)."""
        message_id = event.get("message_id")
        if not isinstance(message_id, int):
            return
        reply = self.replies.get(message_id)
        if reply is None:
            reply = self.replies[message_id] = LiveReply(chat, draft_id=message_id, label=label)
            if message_id in self.previews:  # opened before a restart: go on in it
                reply.preview_id = self.previews[message_id][1]
        offset, piece = int(event.get("offset") or 0), str(event.get("text") or "")
        reply.text = reply.text[:offset] + piece  # offset 0: the text so far, again
        if reply.task is None or reply.task.done():
            reply.task = asyncio.create_task(self._show(app, reply))

    async def _show(self, app: Application[Any, Any, Any, Any, Any, Any], reply: LiveReply) -> None:
        while reply.text != reply.shown and not reply.broken:
            wait = self._last.get(reply.chat, 0.0) + LIVE_EVERY - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await spare_turn(app, chat=reply.chat)  # (many chats at once: the newest text when its turn comes)
            if reply.broken:
                break
            head = f"{reply.label}\n" if reply.label else ""
            showing = reply.text  # (more may come while it is sent: the loop sends that too)
            text = head + markdown.utf16_tail(showing, LIVE_UTF16 - len(_CURSOR) - markdown.utf16_len(head)) + _CURSOR
            self._last[reply.chat] = time.monotonic()
            try:
                if reply.private:
                    await app.bot.send_message_draft(reply.chat, reply.draft_id, text)
                elif reply.preview_id is None:
                    reply.preview_id = (await app.bot.send_message(reply.chat, text)).message_id
                    self.previews[reply.draft_id] = (reply.chat, reply.preview_id)
                    await self._store()
                else:
                    await app.bot.edit_message_text(text, chat_id=reply.chat, message_id=reply.preview_id)
            except BadRequest as exc:
                if "not modified" not in exc.message.lower():
                    log.warning("live answer in chat %s refused (%s); the final answer still comes", reply.chat,
                                exc.message)
                    reply.broken = True
            except TelegramError as exc:  # network trouble: the next update may get through
                log.info("live answer update failed: %s", exc)
            reply.sent_at.append(time.monotonic())
            reply.shown = showing

    def writing(self, chat: int) -> bool:
        """Whether an answer is being shown in ``chat`` as it is written."""
        return any(reply.chat == chat and not reply.broken for reply in self.replies.values())

    async def finish(self, app: Application[Any, Any, Any, Any, Any, Any], message_id: int | None) -> None:
        """The complete text is about to be sent: stop showing the live one."""
        if not isinstance(message_id, int):
            return
        reply = self.replies.pop(message_id, None)
        if reply is not None and reply.task is not None:
            reply.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reply.task
        opened = self.previews.pop(message_id, None)  # (perhaps by the bot's previous run)
        preview = (reply.chat, reply.preview_id) if reply is not None and reply.preview_id is not None else opened
        if preview is not None:
            with contextlib.suppress(TelegramError):
                await app.bot.delete_message(*preview)
        if opened is not None:
            await self._store()
