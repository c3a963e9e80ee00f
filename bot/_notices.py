"""What a chat is told when a turn goes wrong: a message not delivered (with Retry, or a
fresh conversation after a failed resume) and a turn that seems stuck (stop it, or keep
waiting).
"""

from __future__ import annotations

from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters
from telegram.ext import Application

from protocol import MessageFailedEvent, StalledEvent

from . import _hosts as hosts
from . import _render as render
from ._activity import INTERRUPT_BUTTON, KEEP_WAITING_BUTTON, stalled_text
from ._core import Core
from ._link import parse_origin
from ._send import buttons


async def tell_stalled(app: Application[Any, Any, Any, Any, Any, Any], core: Core, chat: int,
                       event: StalledEvent) -> None:
    """A turn that seems stuck: one quiet message, threaded to the message that began it,
    with buttons to stop it or keep waiting — unless it went on or ended meanwhile (the
    bot was down when it stalled): then it is no news."""
    session = str(event.get("session"))
    activity = (await core.link.status(session)).get("activity") or {}
    if activity.get("doing") != "stalled" or activity.get("message_id") != event.get("message_id"):
        return
    origin = parse_origin(event.get("origin"))
    thread = ReplyParameters(origin[1], allow_sending_without_reply=True) if origin and origin[1] else None
    buttons = InlineKeyboardMarkup([[InlineKeyboardButton(INTERRUPT_BUTTON, callback_data=f"cancel:{session}"),
                                     InlineKeyboardButton(KEEP_WAITING_BUTTON, callback_data=f"wait:{session}")]])
    sent = await app.bot.send_message(chat, stalled_text(event), reply_markup=buttons,
                                      reply_parameters=thread, disable_notification=True)
    await core.link.note_author(chat, [sent.message_id], session)


def retry_markup(message_id: Any, session: str) -> InlineKeyboardMarkup | None:
    """The Retry button of a failed message (named with its host: ``hosts.message_key``)."""
    if not isinstance(message_id, int):
        return None
    key = hosts.message_key(message_id, session)
    return InlineKeyboardMarkup([[InlineKeyboardButton(render.RETRY_BUTTON, callback_data=f"retry:{key}")]])


async def tell_failed(app: Application[Any, Any, Any, Any, Any, Any], core: Core, chat: int,
                      event: MessageFailedEvent, label: str | None) -> None:
    """One notice per failure, threaded to the message that failed, with what can be
    done: a failed resume offers a fresh conversation (once per chat, however many
    messages waited for it), anything else a Retry; a drop the user asked for is quiet.
    ``label`` heads a notice about a session that is not the chat's active one."""
    session, message_id = str(event.get("session")), event.get("message_id")
    reason = str(event.get("reason") or "")
    origin = parse_origin(event.get("origin"))
    thread = ReplyParameters(origin[1], allow_sending_without_reply=True) if origin and origin[1] else None
    resume_failed = reason.startswith(render.RESUME_FAILED_PREFIX)
    if isinstance(message_id, int):  # before its button is shown: a press can come at once
        await core.link.keep_failed(chat, hosts.message_key(message_id, session),
                                    "resume" if resume_failed else "retry")
    if resume_failed:
        if not await core.link.first_resume_notice(chat, session):
            return
        fresh = await buttons(core.link, [[(render.FRESH_BUTTON.format(name=session), f"fresh:{session}")]])
        await app.bot.send_message(chat, render.resume_failed_text(session, reason[len(render.RESUME_FAILED_PREFIX):]),
                                   reply_markup=fresh, reply_parameters=thread)
        return
    await app.bot.send_message(chat, render.tagged(label, f"❌ Message not delivered: {reason}"),
                               reply_markup=retry_markup(message_id, session),
                               reply_parameters=thread, disable_notification=reason.startswith(render.DROPPED_PREFIX))
