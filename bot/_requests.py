"""Claude's requests in a chat, over the wire: posting a prompt, a button press, a typed
answer, and editing the prompt once the request is resolved. What the prompts say and
how taps add up is in ``_prompts``.
"""

from __future__ import annotations

import contextlib
import html
import logging
from dataclasses import dataclass
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import ParseMode
from telegram.error import BadRequest, TelegramError
from telegram.ext import Application

from protocol import (
    ConnectionFailed,
    PermissionRequestEvent,
    PermissionResolvedEvent,
    ReminderEvent,
    RemoteError,
)

from . import _activity as activity
from . import _prompts as prompts
from . import _render as render
from ._link import Link, parse_origin

log = logging.getLogger("claude_telegram_bot")

App = Application[Any, Any, Any, Any, Any, Any]


def markup(rows: prompts.Keyboard) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=data) for label, data in row]
                                 for row in rows])


async def _load(link: Link, token: str) -> prompts.Prompt | None:
    value = await link.kv_get(prompts.KV_PROMPT.format(token=token))
    return prompts.Prompt.from_kv(value)


async def _save(link: Link, token: str, prompt: prompts.Prompt) -> None:
    await link.kv_set(prompts.KV_PROMPT.format(token=token), prompt.to_kv())


async def show(app: App, link: Link, chat: int, event: PermissionRequestEvent) -> None:
    """Post a ``permission_request`` with its buttons. Its state is stored before it is
    sent (a press or a typed answer can come at once) and again with the message id (to
    edit it later)."""
    prompt, token = prompts.build(event, chat)
    if prompt.session != await link.active(chat):  # whose it is, when not the chat's session
        prompt.text = f"<b>[{html.escape(prompt.session)}]</b>\n{prompt.text}"
    await _save(link, token, prompt)
    # before the user can see it: text typed at once is about it
    await link.kv_put(prompts.KV_WAITING.format(chat=chat), {**await _waiting(link, chat), prompt.session: token})
    origin = parse_origin(event.get("origin"))
    sent = await app.bot.send_message(chat, prompt.text, parse_mode=ParseMode.HTML,
                                      reply_markup=markup(prompts.keyboard(prompt, token)),
                                      reply_to_message_id=origin[1] if origin else None,
                                      allow_sending_without_reply=True)  # threaded to the message that caused it
    prompt.message_id = sent.message_id
    await _save(link, token, prompt)
    await link.note_author(chat, [sent.message_id], prompt.session)
    raw = event.get("input")
    cut = prompts.whole(prompt.tool, raw if isinstance(raw, dict) else {})
    if cut is not None:  # all of it, to read before pressing Allow
        await app.bot.send_document(chat, cut[1].encode(), filename=cut[0], caption=render.WHOLE_CAPTION,
                                    reply_to_message_id=sent.message_id, allow_sending_without_reply=True,
                                    disable_notification=True)


async def close(app: App, link: Link, event: PermissionResolvedEvent) -> None:
    """A request was resolved (here, elsewhere, by the timeout or by Claude stopping):
    its prompt shows how, without buttons; a timeout is also said in the chat."""
    token = prompts.token_of(str(event.get("session")), str(event.get("request_id")))
    prompt = await _load(link, token)
    if prompt is None:
        return
    if prompt.message_id is not None:
        with contextlib.suppress(BadRequest):  # deleted, or already edited
            await app.bot.edit_message_text(f"{prompt.text}\n\n{prompts.outcome(event)}", chat_id=prompt.chat,
                                            message_id=prompt.message_id, parse_mode=ParseMode.HTML)
    if event.get("by") == "timeout":
        await app.bot.send_message(prompt.chat, f"⏱ Claude's request was denied: {event.get('message')}",
                                   reply_to_message_id=prompt.message_id, allow_sending_without_reply=True)
    await link.kv_delete(prompts.KV_PROMPT.format(token=token))
    await _forget_waiting(link, prompt.chat, prompt.session, token)


async def remind(app: App, link: Link, event: ReminderEvent) -> None:
    """A prompt has waited long for an answer: one quiet message under it — unless it was
    answered meanwhile (the bot was down when the reminder came), or was never shown."""
    session, request_id = str(event.get("session")), str(event.get("request_id"))
    prompt = await _load(link, prompts.token_of(session, request_id))
    if prompt is None:
        return
    pending = (await link.status(session)).get("pending") or []
    if not any(p.get("request_id") == request_id for p in pending):
        return
    await app.bot.send_message(prompt.chat, activity.reminder_text(event), reply_to_message_id=prompt.message_id,
                               allow_sending_without_reply=True, disable_notification=True)


async def _waiting(link: Link, chat: int, timeout: float | None = None) -> dict[str, str]:
    """Session -> token of the prompt waiting for typed text in this chat."""
    value = await link.kv_cached(prompts.KV_WAITING.format(chat=chat), timeout)
    return {k: v for k, v in value.items() if isinstance(v, str)} if isinstance(value, dict) else {}


async def _forget_waiting(link: Link, chat: int, session: str, token: str) -> None:
    waiting = await _waiting(link, chat)
    if waiting.get(session) == token:
        del waiting[session]
        await link.kv_put(prompts.KV_WAITING.format(chat=chat), waiting or None)


async def _answer(link: Link, prompt: prompts.Prompt) -> None:
    await link.answer(prompt.session, prompt.request_id, prompt.picks)


async def press(link: Link, data: str) -> tuple[str, prompts.Prompt | None, str | None]:
    """Carry out one button press: (the short answer on the button, the prompt when its
    buttons must be redrawn, the token). A press on a stale prompt changes nothing."""
    _, token, *action = data.split(":")
    prompt = await _load(link, token)
    if prompt is None or not action:
        return prompts.STALE, None, token
    what = action[0]
    try:
        if what in ("y", "n", "a"):
            directory = None
            if what == "a" and action[1:2] and action[1].isdigit() and 0 < int(action[1]) < len(prompt.dirs):
                directory = prompt.dirs[int(action[1])]  # (a narrower directory the user picked)
            await link.permit(prompt.session, prompt.request_id, what != "n", always=what == "a", directory=directory,
                              message="The user denied this from Telegram." if what == "n" else None)
        elif what == "p":
            mode = "accept-edits" if action[1:] == ["edits"] else "ask"
            await link.permit(prompt.session, prompt.request_id, True, permission_mode=mode)
        elif what == "k":
            await link.permit(prompt.session, prompt.request_id, False)
        elif what == "q" and len(action) == 3 and action[1].isdigit() and action[2].isdigit():
            if not prompts.pick(prompt, int(action[1]), int(action[2])):
                await _save(link, token, prompt)
                return "Picked", prompt, token
            await _answer(link, prompt)
        elif what == "d":
            if not prompt.complete():
                return "Pick an answer for every question first.", None, token
            await _answer(link, prompt)
        else:
            return "Unknown button.", None, token
    except RemoteError as exc:
        if exc.code == "not_found":
            with contextlib.suppress(RemoteError, ConnectionFailed):
                await link.kv_delete(prompts.KV_PROMPT.format(token=token))
            return prompts.STALE, None, token
        return f"⚠️ {exc.message}", None, token
    return prompts.toast(what), None, token


@dataclass
class Typed:
    """What typed text did about a waiting prompt: ``said`` is the acknowledgement when it
    answered a question or sent a plan back with feedback; ``offer`` the prompt (token)
    of a tool call it may be the reason to deny (the user picks); ``waiting`` names a
    session whose prompt still waits when the text went elsewhere (the chat is told)."""

    said: str | None = None
    offer: str | None = None
    session: str | None = None
    waiting: str | None = None


async def typed_answer(link: Link, chat: int, text: str, reply_to: int | None, writer: str | None,
                       timeout: float | None = None) -> Typed:
    """A prompt waiting in this chat takes typed text when the text is a reply to it, or
    (not a reply to another session's message) while its session is the chat's active
    one; other text is an ordinary message. A question takes it as its answer, a plan as
    feedback (Claude keeps planning), a tool call as a possible reason to deny it.
    ``writer``: the session that wrote the message replied to. ``timeout`` bounds the
    first look (a supervisor that is away is found out that fast)."""
    waiting = await _waiting(link, chat, timeout)
    if not waiting:
        return Typed()
    found: tuple[str, prompts.Prompt, str] | None = None
    for session, token in waiting.items():
        prompt = await _load(link, token)
        if prompt is None:
            await _forget_waiting(link, chat, session, token)
        elif reply_to is not None and reply_to == prompt.message_id:
            found = token, prompt, "you replied to it"
        elif writer is None and found is None and session == await link.active(chat):
            found = token, prompt, "this chat's session"
    if found is None:
        left = await _waiting(link, chat)
        return Typed(waiting=next(iter(left))) if left else Typed()
    token, prompt, how = found
    try:
        if prompt.is_plan:
            await link.permit(prompt.session, prompt.request_id, False,
                              message=f"The user wants changes to the plan: {text}")
            return Typed(f"✏️ Claude keeps planning in '{prompt.session}', with your words as feedback ({how}).")
        if not prompt.is_question:
            return Typed(offer=token, session=prompt.session)
        if not prompts.typed(prompt, text):
            await _save(link, token, prompt)
            return Typed("Noted. Answer the remaining question(s), then tap Done.")
        await _answer(link, prompt)
    except RemoteError as exc:
        if exc.code != "not_found":
            raise
        await _forget_waiting(link, chat, prompt.session, token)
        return Typed()  # the prompt is gone: the text goes to Claude as a message
    return Typed(f"✅ Answer sent to Claude's question in '{prompt.session}' ({how}).")


async def deny_with(link: Link, token: str, reason: str) -> str:
    """The "Deny with this reason" button under text typed while a tool call waits."""
    prompt = await _load(link, token)
    if prompt is None:
        return prompts.STALE
    try:
        await link.permit(prompt.session, prompt.request_id, False, message=f"The user denied this: {reason}")
    except RemoteError as exc:
        if exc.code == "not_found":
            return prompts.STALE
        raise
    return f"🚫 Denied in '{prompt.session}', with your reason."


async def redraw(query: Any, prompt: prompts.Prompt, token: str) -> None:
    with contextlib.suppress(TelegramError):
        await query.edit_message_reply_markup(markup(prompts.keyboard(prompt, token)))
