"""Files back to the user: what Claude put in its session's outbox (sent after each answer
to the chat that asked, then moved to ``outbox/sent``), and ``/get <path>`` from the
session's directory. Paths are confined to that directory: no ``..``, no symlink out."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

from telegram.error import BadRequest
from telegram.ext import Application

from protocol import OUTBOX_DIR

log = logging.getLogger("claude_telegram_bot")

#: what the Bot API takes as an upload, and as a photo
MAX_SEND_BYTES = 50 * 1024 * 1024
MAX_PHOTO_BYTES = 10 * 1024 * 1024
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
SENT_DIR = "sent"


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be sent, or None (an ordinary file within the upload limit)."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return "is not an ordinary file"
    if st.st_size > MAX_SEND_BYTES:
        return f"is {st.st_size // (1024 * 1024)} MB; Telegram takes at most {MAX_SEND_BYTES // (1024 * 1024)} MB"
    if st.st_size == 0:
        return "is empty"
    return None


def confined(root: str, name: str) -> Path | str:
    """``name`` (relative to ``root``, or absolute inside it) as a path that stays inside
    ``root`` once every symlink is followed, or why not."""
    base = Path(root).resolve()
    target = (base / name).resolve()
    if target != base and base not in target.parents:
        return f"{name} is outside the session's directory"
    return target


def outbox_files(cwd: str) -> list[Path]:
    """The files waiting in a session's outbox, oldest first (symlinks and directories
    are left alone)."""
    outbox = Path(cwd) / OUTBOX_DIR
    try:
        entries = list(os.scandir(outbox))
    except OSError:
        return []
    files = [Path(e.path) for e in entries if e.is_file(follow_symlinks=False)]
    return sorted(files, key=lambda p: (p.stat().st_mtime, p.name))


async def send_file(app: Application[Any, Any, Any, Any, Any, Any], chat: int, path: Path,
                    caption: str | None = None) -> str | None:
    """Send one file (a photo if it is an image Telegram shows, else a document); the
    reason it could not be, or None."""
    problem = file_problem(path)
    if problem is not None:
        return f"{path.name} {problem}"
    try:
        with path.open("rb") as f:
            if path.suffix.lower() in PHOTO_SUFFIXES and path.stat().st_size <= MAX_PHOTO_BYTES:
                await app.bot.send_photo(chat, f, caption=caption, filename=path.name)
            else:
                await app.bot.send_document(chat, f, caption=caption, filename=path.name)
    except OSError as exc:
        return f"{path.name} cannot be read ({exc.strerror or exc})"
    return None


async def deliver_outbox(app: Application[Any, Any, Any, Any, Any, Any], chat: int, cwd: str) -> None:
    """Send what is in the outbox and move each sent file to ``outbox/sent``. A file that
    cannot be sent (too big, refused by Telegram) is moved too, and the chat told why, so
    it is not tried forever; network trouble raises, and the file is tried again."""
    for path in outbox_files(cwd):
        try:
            problem = await send_file(app, chat, path)
        except BadRequest as exc:
            problem = f"{path.name} was refused by Telegram ({exc.message})"
        if problem is not None:
            await app.bot.send_message(chat, f"📎 {problem}.")
        sent = path.parent / SENT_DIR
        sent.mkdir(exist_ok=True)
        try:
            path.rename(sent / path.name)
        except OSError as exc:
            log.warning("cannot move %s out of the outbox: %s", path, exc)
