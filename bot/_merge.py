"""Telegram messages that are one message to Claude: the photos or files of one album
(one ``media_group_id``, the caption on one of them) and the parts Telegram makes of one
long paste (each cut at its 4096-character limit, sent back to back by one user).

The poller (``_app.poll_updates``) holds such a part for ``merge_window`` seconds to see
whether the next one follows; the handler of the first part then sends them all as one.
Plain functions on python-telegram-bot's ``Update``: no I/O here.
"""

from __future__ import annotations

from telegram import Message, Update

from ._markdown import MAX_MESSAGE_UTF16, utf16_len

#: a text this long may be a part Telegram cut from a longer paste (clients cut at a
#: space or line break shortly before the limit)
SPLIT_PART_UTF16 = MAX_MESSAGE_UTF16 - 400


def _long_text(message: Message) -> bool:
    text = message.text
    return text is not None and not text.startswith("/") and utf16_len(text) >= SPLIT_PART_UTF16


def _has_file(message: Message) -> bool:
    return bool(message.photo) or message.document is not None


def may_continue(update: Update) -> bool:
    """Could more of this message follow (an album part, a cut part of a paste)?"""
    message = update.message
    if message is None:
        return False
    return (message.media_group_id is not None and _has_file(message)) or _long_text(message)


def continues(held: list[Update], update: Update) -> bool:
    """Is ``update`` the next part of the message whose parts are ``held``?"""
    first, last, message = held[0].message, held[-1].message, update.message
    if first is None or last is None or message is None:
        return False
    if (message.chat_id, message.message_thread_id) != (first.chat_id, first.message_thread_id):
        return False
    if message.from_user is None or first.from_user is None or message.from_user.id != first.from_user.id:
        return False
    if first.media_group_id is not None:
        return message.media_group_id == first.media_group_id and _has_file(message)
    return _long_text(last) and message.text is not None and not message.text.startswith("/")


def joined_text(parts: list[Update]) -> str:
    """The parts of a paste as one text (Telegram drops the space or line break it cut at)."""
    return "\n".join(u.message.text or "" for u in parts if u.message is not None)


def joined_caption(parts: list[Update]) -> str:
    """An album's caption (clients put it on one photo; any others are kept too)."""
    return "\n".join(u.message.caption for u in parts if u.message is not None and u.message.caption)
