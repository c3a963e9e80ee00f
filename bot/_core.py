"""The bot's per-process state (``Core``), shared by the handlers and the delivery
loops, and the tool log messages it keeps while turns run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from telegram.error import BadRequest
from telegram.ext import Application, ContextTypes

from protocol import AsyncClient, ConnectionFailed, ProtocolError, RemoteError

from . import _hosts as hosts
from . import _markdown as markdown
from ._config import BotConfig
from ._link import Link
from ._live import KV_PREVIEWS, LiveReplies
from ._pacing import spare_now

log = logging.getLogger("claude_telegram_bot")


TOOL_EDIT_EVERY = 1.5
TOOL_LOG_UTF16 = 4000  # under Telegram's 4096, counted as Telegram counts

class Core:
    """Per-process state shared by the handlers and the delivery loop."""

    def __init__(self, config: BotConfig) -> None:
        self.config = config
        self.client = AsyncClient(config.runtime_dir, timeout=15.0)
        self.link = Link(self.client, config.roots, config.shared)
        self.refused: set[int] = set()
        self.typing: dict[int, asyncio.Task[None]] = {}
        self.tools: dict[int | str, ToolLog] = {}  # by message id (a follow-up's: by session)
        self.delivery: asyncio.Task[None] | None = None
        # parts of a multi-part reply Telegram already accepted: event id -> count, also
        # kept in the supervisor (KV_PROGRESS) so a restarted bot resumes at the next part
        self.parts_sent: dict[int, int] = {}
        self.live = LiveReplies()  # answers being written
        self.live.save = self._save_previews
        #: a turn's last answer as sent (chat, Telegram message id, Claude's text), until
        #: its result: an API error the CLI also wrote as the answer becomes one message
        self.last_answer: dict[int, tuple[int, int, str]] = {}
        #: the later parts of one message (an album, a cut paste) by its first update's id,
        #: while that update is handled (see ``_merge``)
        self.merged: dict[int, list[Any]] = {}


    async def _save_previews(self, previews: list[list[int]]) -> None:
        try:
            await self.link.kv_set(KV_PREVIEWS, previews)
        except (ProtocolError, RemoteError, OSError) as exc:  # at worst a preview outlives a restart
            log.warning("could not store the open previews: %s", exc)

    async def session_dir(self, session: str) -> str | None:
        """A session's directory as it is now (``/cd`` moves it: not kept here), or None
        if there is no such session, the supervisor does not answer, or it is on another
        machine (no file of it is read here)."""
        if hosts.is_remote(session):
            return None
        try:
            return (await self.link.status(session))["cwd"]
        except (RemoteError, ConnectionFailed):
            return None


class ToolLog:
    """One Telegram message per turn listing its tool calls, edited at most every
    ``TOOL_EDIT_EVERY`` seconds (rapid tool calls are coalesced into one edit), and only
    with the rate limit to spare (``_pacing``: in a group, answers first); the turn's end
    shows every line."""

    def __init__(self, chat: int, header: str | None = None) -> None:
        self.chat = chat
        self.lines: list[str] = [header] if header else []  # header: whose turn, if not the chat's session
        self.message_id: int | None = None
        self.shown = 0
        self.last_edit = 0.0

    async def add(self, app: Application[Any, Any, Any, Any, Any, Any], line: str) -> None:
        self.lines.append(line)
        if self.message_id is None:
            msg = await app.bot.send_message(self.chat, "\n".join(self.lines), disable_notification=True)
            self.message_id, self.shown, self.last_edit = msg.message_id, len(self.lines), time.monotonic()
        elif time.monotonic() - self.last_edit >= TOOL_EDIT_EVERY and spare_now(app, self.chat):
            await self.flush(app)  # (without room to spare: the next line, or the turn's end, shows it)

    async def flush(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        if self.message_id is None or self.shown == len(self.lines):
            return
        text = markdown.utf16_tail("\n".join(self.lines), TOOL_LOG_UTF16)
        try:
            await app.bot.edit_message_text(text, chat_id=self.chat, message_id=self.message_id)
        except BadRequest as exc:
            if "not modified" not in exc.message.lower():
                # e.g. the message was deleted: go on in a new one rather than go quiet
                log.warning("cannot edit the tool log (%s); starting a new one", exc.message)
                msg = await app.bot.send_message(self.chat, text, disable_notification=True)
                self.message_id = msg.message_id
        self.shown, self.last_edit = len(self.lines), time.monotonic()


def core_of(context: ContextTypes.DEFAULT_TYPE) -> Core:
    core: Core = context.application.bot_data["core"]
    return core
