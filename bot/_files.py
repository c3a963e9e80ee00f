"""Files between the chat and a session's directory, on whichever machine the session is:
uploads (saved under the session's ``uploads/``), what Claude put in its session's outbox
(sent after each answer to the chat that asked, then moved to ``outbox/sent``), and
``/get <path>`` from the session's directory. Every byte goes through the supervisor of
the session's machine (``put_file``, ``read_file``, ``list_dir``, ``outbox_sent``: one
path for local sessions and ``name@host`` ones alike), which confines paths to the
session's directory: no ``..``, no symlink out."""

from __future__ import annotations

import logging
from pathlib import PurePosixPath
from typing import Any

from telegram.error import BadRequest
from telegram.ext import Application

from protocol import FILE_CHUNK_BYTES, OUTBOX_DIR, AsyncOps, RemoteError

log = logging.getLogger("claude_telegram_bot")

#: what the Bot API takes as an upload, and as a photo
MAX_SEND_BYTES = 50 * 1024 * 1024
MAX_PHOTO_BYTES = 10 * 1024 * 1024
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})


#: what this module needs of the bot's ``_link.Link``: the typed ops (requests routed by host)
Requester = AsyncOps


def not_sent_text(problem: str) -> str:
    """A file for a host that is unreachable: not kept (unlike a text), the chat told."""
    return f"⚠️ {problem.rstrip('.')}. The file was not sent (files are not kept for a host that is down): send it" \
        " again once it is back."


async def upload(link: Requester, session: str, name: str, content: bytes) -> str:
    """Save ``content`` as ``uploads/<name>`` of the session (on its machine), in pieces
    one request can carry; the path there, which ``send`` takes as an attachment.
    ``RemoteError`` says why not (over the limit, a name it refuses)."""
    offset = 0
    while True:
        piece = content[offset:offset + FILE_CHUNK_BYTES]
        more = offset + len(piece) < len(content)
        saved = await link.put_file(session, name, piece, offset=offset, more=more)
        if not more:
            return str(saved["path"])
        offset += len(piece)


async def fetch(link: Requester, session: str, path: str) -> tuple[str, bytes] | str:
    """A file of the session's directory as (name, content), read in pieces; or why it
    cannot be sent (outside the directory, missing, too big for Telegram, empty, changed
    while it was read)."""
    try:
        first = await link.read_file(session, path)
    except RemoteError as exc:
        return exc.message
    name, size = str(first["name"]), int(first["size"])
    if size > MAX_SEND_BYTES:
        return f"{name} is {size // (1024 * 1024)} MB; Telegram takes at most {MAX_SEND_BYTES // (1024 * 1024)} MB"
    if size == 0:
        return f"{name} is empty"
    pieces = [bytes(first["data"])]
    read = len(pieces[0])
    while read < size:
        try:
            more = await link.read_file(session, first["path"], offset=read)
        except RemoteError as exc:
            return exc.message
        if more["size"] != size or more["mtime_ns"] != first["mtime_ns"] or not more["data"]:
            return f"{name} changed while it was read; try again"
        pieces.append(bytes(more["data"]))
        read += len(more["data"])
    return name, b"".join(pieces)


async def send_file(app: Application[Any, Any, Any, Any, Any, Any], chat: int, name: str, content: bytes,
                    caption: str | None = None) -> None:
    """Send one file: a photo if it is an image Telegram shows, else a document."""
    if PurePosixPath(name).suffix.lower() in PHOTO_SUFFIXES and len(content) <= MAX_PHOTO_BYTES:
        await app.bot.send_photo(chat, content, caption=caption, filename=name)
    else:
        await app.bot.send_document(chat, content, caption=caption, filename=name)


async def get(app: Application[Any, Any, Any, Any, Any, Any], link: Requester, chat: int, session: str,
              path: str) -> str | None:
    """``/get``: send a file of the session's directory; why not, or None once sent."""
    fetched = await fetch(link, session, path)
    if isinstance(fetched, str):
        return fetched
    await send_file(app, chat, *fetched)
    return None


async def deliver_outbox(app: Application[Any, Any, Any, Any, Any, Any], chat: int, link: Requester,
                         session: str) -> None:
    """Send what is in the session's outbox (oldest first; links and directories are left
    alone) and move each sent file to ``outbox/sent``. A file that cannot be sent (too
    big, refused by Telegram) is moved too, and the chat told why, so it is not tried
    forever; network trouble raises, and the file is tried again."""
    try:
        listing = await link.list_dir(session=session, path=OUTBOX_DIR)
    except RemoteError:  # (no outbox, or none it may read)
        return
    waiting = sorted((e for e in listing["entries"] if e["kind"] == "file"), key=lambda e: (e["mtime"], e["name"]))
    for entry in waiting:
        fetched = await fetch(link, session, f"{OUTBOX_DIR}/{entry['name']}")
        problem = fetched if isinstance(fetched, str) else None
        if not isinstance(fetched, str):
            try:
                await send_file(app, chat, *fetched)
            except BadRequest as exc:
                problem = f"{entry['name']} was refused by Telegram ({exc.message})"
        if problem is not None:
            await app.bot.send_message(chat, f"📎 {problem}.")
        try:
            await link.outbox_sent(session, entry["name"])
        except RemoteError as exc:
            log.warning("cannot move %s out of the outbox of %s: %s", entry["name"], session, exc.message)
