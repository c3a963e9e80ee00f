"""Files the user sends (photos, documents, an album as one message), saved into the
session's uploads/ and sent to Claude; and /get, a file of the session's directory back.
Both through the supervisor of the session's machine (``_files``), local or not.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from protocol import ConnectionFailed, RemoteError

from . import _files as files
from . import _hosts as hosts
from . import _merge as merge
from . import _render as render
from . import _sessions as sessions
from ._core import core_of
from ._messages import forward
from ._reply import error_reply
from ._send import send_reply

SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str | None, fallback: str) -> str:
    """A file name that cannot leave the upload directory or hide itself."""
    base = Path(name or "").name
    base = SAFE_NAME.sub("_", base).lstrip(".")[:100]
    return base or fallback


async def on_get(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/get <path>``: a file from the active session's directory, on whichever machine
    it is (never from outside that directory)."""
    assert update.effective_chat is not None
    chat = update.effective_chat.id
    core = core_of(context)
    name = " ".join(context.args or [])
    if not name:
        await context.bot.send_message(chat, "Usage: /get <path in the session's directory>")
        return
    try:
        active = await core.link.active(chat)
        problem = await files.get(context.application, core.link, chat, active, name) if active else None
    except (RemoteError, ConnectionFailed) as exc:
        await send_reply(context.application, chat, error_reply(exc))
        return
    if active is None:
        await context.bot.send_message(chat, render.NO_ACTIVE)
    elif problem is not None:
        await context.bot.send_message(chat, f"📎 {problem}.")


async def on_file(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_chat is not None
    try:
        await receive_file(update, context)
    except (RemoteError, ConnectionFailed) as exc:
        await send_reply(context.application, update.effective_chat.id, error_reply(exc))


async def receive_file(update: Update, context: ContextTypes.DEFAULT_TYPE, parts: list[Update] | None = None) -> None:
    """Save a photo or document (or an album's: ``parts``) into the session's uploads/ and
    send them to Claude as one message."""
    assert update.effective_chat is not None
    core = core_of(context)
    chat = update.effective_chat.id
    parts = parts or [update, *core.merged.pop(update.update_id, [])]  # an album's photos or files
    active = await core.link.active(chat)
    if active is None:  # kept (in the supervisor), and sent once the offered session exists
        if not await core.link.keep_first(chat, [part.to_dict() for part in parts], None):
            await send_reply(context.application, chat, await sessions.first_offer(core.link))
        return
    try:
        saved = [await save_file(part, context, active) for part in parts]
    except hosts.HostUnreachable as exc:  # (a file is not kept for a host that is down: it may be large)
        await context.bot.send_message(chat, files.not_sent_text(str(exc)))
        return
    paths = [path for path in saved if path is not None]
    if paths:
        await forward(update, context, merge.joined_caption(parts), paths)


async def save_file(update: Update, context: ContextTypes.DEFAULT_TYPE, active: str) -> str | None:
    """A photo or document saved into the session's uploads/ (through its machine's
    supervisor: ``files.upload``): its path there, or None once the user was told why not."""
    message = update.effective_message
    assert message is not None and update.effective_chat is not None
    core = core_of(context)
    chat = update.effective_chat.id
    if message.photo:
        item: Any = message.photo[-1]  # the largest size
        name = f"photo-{item.file_unique_id}.jpg"
    else:
        item = message.document
        assert item is not None
        name = f"{update.update_id}-{safe_filename(item.file_name, item.file_unique_id)}"
    limit = core.config.max_file_bytes
    if item.file_size and item.file_size > limit:
        await context.bot.send_message(
            chat, f"File too large ({item.file_size // (1024 * 1024)} MB); the limit is {limit // (1024 * 1024)} MB. Nothing was sent."
        )
        return None
    try:
        tg_file = await item.get_file()
        content = bytes(await tg_file.download_as_bytearray())
    except TelegramError as exc:
        await context.bot.send_message(chat, f"Could not download the file ({exc.message}). Nothing was sent.")
        return None
    if len(content) > limit:
        await context.bot.send_message(chat, f"File too large; the limit is {limit // (1024 * 1024)} MB. Nothing was sent.")
        return None
    try:
        return await files.upload(core.link, active, name, content)
    except RemoteError as exc:  # (e.g. over the supervisor's max_attachment_mib)
        await context.bot.send_message(chat, f"Could not save {name}: {exc.message}. Nothing was sent.")
        return None
