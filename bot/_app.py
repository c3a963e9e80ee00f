"""The Telegram application: thin PTB handlers, the update poller and ``serve``.

Nothing here owns a session. Messages go to the supervisor; replies come back through
``_delivery``.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import re
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from telegram import BotCommand, CallbackQuery, LinkPreviewOptions, Message, MessageEntity, Update
from telegram.error import InvalidToken, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    Defaults,
    ExtBot,
    MessageHandler,
    TypeHandler,
    filters,
)

from protocol import ConnectionFailed, ErrorCode, RemoteError

from . import _commands as commands
from . import _daily as daily
from . import _files as files
from . import _hosts as hosts
from . import _merge as merge
from . import _render as render
from . import _requests as requests
from ._config import BotConfig
from ._delivery import Core, buttons, delivery_loop, send_reply
from ._hostdelivery import host_delivery

log = logging.getLogger("claude_telegram_bot")

POLL_TIMEOUT = 30
STOP_DEADLINE = 10
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str | None, fallback: str) -> str:
    """A file name that cannot leave the upload directory or hide itself."""
    base = Path(name or "").name
    base = SAFE_NAME.sub("_", base).lstrip(".")[:100]
    return base or fallback


class TopicBot(ExtBot[Any]):
    """The bot, sending into the forum topic being handled (``commands.current_thread``):
    a reply, an answer, a prompt or a file goes where its conversation is, without every
    call saying so."""

    @staticmethod
    def _topic(kwargs: dict[str, Any]) -> dict[str, Any]:
        thread = commands.current_thread.get()
        if thread is not None and kwargs.get("message_thread_id") is None:
            kwargs["message_thread_id"] = thread
        return kwargs

    async def send_message(self, *args: Any, **kwargs: Any) -> Any:
        return await super().send_message(*args, **self._topic(kwargs))

    async def send_document(self, *args: Any, **kwargs: Any) -> Any:
        return await super().send_document(*args, **self._topic(kwargs))

    async def send_photo(self, *args: Any, **kwargs: Any) -> Any:
        return await super().send_photo(*args, **self._topic(kwargs))

    async def send_chat_action(self, *args: Any, **kwargs: Any) -> Any:
        return await super().send_chat_action(*args, **self._topic(kwargs))

    async def send_message_draft(self, *args: Any, **kwargs: Any) -> Any:
        return await super().send_message_draft(*args, **self._topic(kwargs))


def core_of(context: ContextTypes.DEFAULT_TYPE) -> Core:
    core: Core = context.application.bot_data["core"]
    return core


# handlers --------------------------------------------------------------------------------


async def guard(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Deny by default: only allowlisted user ids get past this (group -1) handler."""
    core = core_of(context)
    user = update.effective_user
    if user is not None and user.id in core.config.allowed_users:
        commands.current_user.set(user.id)  # whose sessions the commands of this update see
        message = update.effective_message
        commands.current_thread.set(message.message_thread_id if message is not None and message.is_topic_message
                                    else None)  # a forum topic is a place of its own
        return
    who = user.id if user else 0
    log.warning("refused update %s from user %s", update.update_id, who)
    if update.callback_query is not None:
        with contextlib.suppress(TelegramError):
            await update.callback_query.answer(render.REFUSAL)
    elif update.effective_chat is not None and who not in core.refused:
        core.refused.add(who)  # one short refusal, not one per message
        with contextlib.suppress(TelegramError):
            await context.bot.send_message(update.effective_chat.id, render.REFUSAL)
    raise ApplicationHandlerStop


async def on_help(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The bot's commands, then Claude Code's (with the active session's custom ones)."""
    assert update.effective_chat is not None
    chat = update.effective_chat.id
    core = core_of(context)
    cwd = None
    with contextlib.suppress(RemoteError, ConnectionFailed):  # the bot's own list needs no supervisor
        active = await core.link.active(chat)
        cwd = await core.session_dir(active) if active else None
    names = commands.claude_commands(cwd)
    await context.bot.send_message(chat, f"{render.HELP_TEXT}\n\n{render.claude_commands_text(names)}")


async def on_start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, render.START_TEXT)


async def spent(update: Update, context: ContextTypes.DEFAULT_TYPE) -> bool:
    """A message's buttons work once: a press after the first is answered "already done"
    (and the buttons go) — True then, and the caller does nothing."""
    query = update.callback_query
    assert query is not None and update.effective_chat is not None
    if query.message is None or await core_of(context).link.first_press(update.effective_chat.id,
                                                                        query.message.message_id):
        return False
    await query.answer(render.ALREADY_DONE)
    with contextlib.suppress(TelegramError):
        await query.edit_message_reply_markup(None)
    return True


async def show_choice(query: CallbackQuery) -> None:
    """A pressed message keeps its text and shows what was chosen ("→ Create session
    'main'") in place of its buttons, so it no longer reads as an open question."""
    message = query.message
    if not isinstance(message, Message):  # too old for Telegram to show it
        return
    text, markup = message.text, message.reply_markup
    label = next((b.text for row in (markup.inline_keyboard if markup else ()) for b in row
                  if b.callback_data == query.data), None)
    if text and label and render.utf16_len(text) + render.utf16_len(label) < render.MAX_MESSAGE_UTF16 - 8:
        with contextlib.suppress(TelegramError):
            await query.edit_message_text(f"{text}\n\n→ {label}", entities=message.entities, reply_markup=None)
            return
    with contextlib.suppress(TelegramError):
        await query.edit_message_reply_markup(None)


async def pressed_data(update: Update, context: ContextTypes.DEFAULT_TYPE) -> str | None:
    """What the pressed button stands for (its data, a shortened one read back); None
    once the press was answered as expired (a token this bot no longer knows)."""
    query = update.callback_query
    assert query is not None
    data = await core_of(context).link.pressed(query.data or "")
    if data is None:
        await query.answer(render.BUTTON_EXPIRED)
        with contextlib.suppress(TelegramError):
            await query.edit_message_reply_markup(None)
    return data


async def answer_button(update: Update, context: ContextTypes.DEFAULT_TYPE,
                        run: Callable[[commands.Link, str, str], Awaitable[commands.Reply]],
                        early: str | None = None) -> bool:
    """A button that runs one command on ``<kind>:<argument>``: its reply is shown in the
    chat and as the button's answer, and the buttons go. A message's buttons work once
    (False: this press found them spent and did nothing). ``early`` answers the press at
    once, for a command that takes a while."""
    query = update.callback_query
    assert query is not None and update.effective_chat is not None
    data = await pressed_data(update, context)
    if data is None or await spent(update, context):
        return False
    kind, _, argument = data.partition(":")
    if early is not None:
        await query.answer(early)
    try:
        reply = await run(core_of(context).link, kind, argument)
    except (RemoteError, ConnectionFailed) as exc:
        reply = commands.error_reply(exc)
    if early is None:
        await query.answer(reply.text[:190])
    await show_choice(query)
    await send_reply(context.application, update.effective_chat.id, reply)
    return True


async def on_new_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The button under a first message sent before any session: make one, then send it
    the message that was waiting (if this bot still holds it)."""
    assert update.effective_chat is not None
    chat = update.effective_chat.id
    if not await answer_button(update, context, lambda link, _, name: commands.first_session(link, chat, name)):
        return
    core = core_of(context)
    waiting = core.first_messages.pop(chat, [])
    if waiting and await core.link.active(chat) is not None:
        for parts, text in waiting:
            if text is None:  # a file (or an album): saved into the new session's uploads/ now
                await receive_file(parts[0], context, parts)
            else:
                await forward(parts[0], context, text, None)


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
        await send_reply(context.application, chat, commands.error_reply(exc))
        return
    if active is None:
        await context.bot.send_message(chat, render.NO_ACTIVE)
    elif problem is not None:
        await context.bot.send_message(chat, f"📎 {problem}.")


async def on_queue(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/queue <text>``: a message that waits for the answer Claude is writing to end and
    gets one of its own (whatever ``[telegram] while_busy`` says)."""
    message = update.effective_message
    assert message is not None and update.effective_chat is not None
    text = (message.text or "").partition(" ")[2].strip()
    if not text:
        await context.bot.send_message(update.effective_chat.id, "Usage: /queue <text> (it waits for Claude's"
                                       " current answer to end, then gets its own)")
        return
    await forward(update, context, text, None, queue=True)


async def on_fresh_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The user chose a fresh conversation for a session whose old one could not resume."""
    assert update.effective_chat is not None
    chat = update.effective_chat.id
    await answer_button(update, context, lambda link, _, name: commands.fresh_conversation(link, chat, name))


async def on_retry_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Retry under a failure: the failed message is sent again (once, however often pressed)."""
    assert update.effective_chat is not None
    chat = update.effective_chat.id
    await answer_button(update, context, lambda link, _, message: commands.retry(
        link, chat, hosts.parse_message_key(message)))


async def on_cancel_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/cancel's question: stop this answer, or stop it and drop what is queued."""
    await answer_button(update, context, lambda link, kind, name: commands.interrupt(
        link, name, drop_queued=kind == "cancelall"))


async def on_keep_waiting_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Under a turn that seems stuck: the user waits on. Nothing to ask the supervisor (it
    says a stall once per silence); the message shows the choice."""
    query = update.callback_query
    assert query is not None
    if await spent(update, context):
        return
    await query.answer(render.KEPT_WAITING)
    await show_choice(query)


async def on_archive_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/archive's question about a busy session answered: archive it now."""
    assert update.effective_chat is not None
    chat = update.effective_chat.id
    await answer_button(update, context, lambda link, _, name: commands.archive_now(link, chat, name))


async def on_setting_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A /model or /mode button: the command with the picked value."""
    assert update.effective_chat is not None
    chat = update.effective_chat.id
    await answer_button(update, context, lambda link, kind, value: commands.COMMANDS[kind](link, chat, [value]))


async def on_cd_pick_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A directory offered by a bare /cd: asked about as /cd <dir> would be."""
    assert update.effective_chat is not None
    chat = update.effective_chat.id
    await answer_button(update, context, lambda link, _, where: commands.cd(link, chat, [where]))


async def on_resume_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A conversation offered by /resume: a session continuing it."""
    assert update.effective_chat is not None
    chat = update.effective_chat.id
    await answer_button(update, context,
                        lambda link, _, conversation: commands.continue_conversation(link, chat, conversation))


async def on_move_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/cd's question answered: suspend if needed, then move (takes a moment)."""
    await answer_button(update, context, lambda link, _, name: commands.move(link, name), early="Moving…")


async def on_edited(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """An edited message: Claude has the first version; say so rather than stay silent."""
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, render.EDITED, disable_notification=True)


async def on_daily_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """``/rules``, ``/budget``, ``/diff``, ``/every``, ``/schedules``, ``/fork`` (``_daily``):
    a reply, then any documents (``/diff``'s whole diff)."""
    assert update.effective_message is not None and update.effective_chat is not None
    chat = update.effective_chat.id
    name = (update.effective_message.text or "").split()[0][1:].split("@")[0].lower()
    try:
        answer = await daily.COMMANDS[name](core_of(context).link, chat, list(context.args or []))
    except (RemoteError, ConnectionFailed) as exc:
        answer = commands.error_reply(exc)
    reply, documents = (answer.reply, answer.documents) if isinstance(answer, daily.Answer) else (answer, [])
    await send_reply(context.application, chat, reply)
    for doc in documents:
        await context.bot.send_document(chat, doc.data, filename=doc.filename, caption=doc.caption or None,
                                        disable_notification=True)


async def on_budget_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The button under a message held by a daily cap: raise the cap once, send it."""
    assert update.effective_chat is not None
    chat = update.effective_chat.id
    await answer_button(update, context, lambda link, _, token: daily.raise_and_send(link, chat, token))


async def on_schedule_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A /schedules button: pause, resume or remove that schedule."""
    await answer_button(update, context, lambda link, _, data: daily.schedule_button(link, data))


async def on_rule_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A /rules button: remove that rule."""
    await answer_button(update, context, lambda link, _, data: daily.remove_rule(link, data))


async def on_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_message is not None and update.effective_chat is not None
    text = update.effective_message.text or ""
    name = text.split()[0][1:].split("@")[0].lower()
    handler = commands.COMMANDS[name]
    await run_command(context, update.effective_chat.id, handler, list(context.args or []))


async def run_command(context: ContextTypes.DEFAULT_TYPE, chat: int, handler: Any, args: list[str]) -> None:
    core = core_of(context)
    try:
        reply = await handler(core.link, chat, args)
    except (RemoteError, ConnectionFailed) as exc:
        reply = commands.error_reply(exc)
    await send_reply(context.application, chat, reply)


async def on_unknown(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A /command that is not the bot's: Claude Code's own (built-in or the project's) goes
    to Claude as typed; anything else waits for a "Send it to Claude" press."""
    message = update.effective_message
    assert message is not None and update.effective_chat is not None
    chat, text = update.effective_chat.id, message.text or ""
    first, _, rest = text.partition(" ")
    word = first[1:].split("@")[0]
    text = f"/{word} {rest}".rstrip() if rest else f"/{word}"  # without a group chat's @botname
    core = core_of(context)
    try:
        active = await core.link.active(chat, SEND_ATTEMPT)
    except (RemoteError, ConnectionFailed):
        active = None  # asked again by forward(), which waits for the supervisor
    cwd = await core.session_dir(active) if active else None
    if word in commands.claude_commands(cwd):
        await forward(update, context, text, None)
        return
    await core.link.hold(chat, message.message_id, update.update_id, text)
    await send_reply(context.application, chat, commands.Reply(
        render.not_ours_text(word[:40]), buttons=[(render.SEND_TO_CLAUDE_BUTTON, f"claude:{message.message_id}")]))


async def on_send_to_claude_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The button under a /word that is not a command: it goes to Claude as it is."""
    query = update.callback_query
    assert query is not None and update.effective_chat is not None
    data = await pressed_data(update, context)
    if data is None or await spent(update, context):
        return
    chat = update.effective_chat.id
    argument = data.partition(":")[2]
    held = await core_of(context).link.take_held(chat, int(argument)) if argument.isdigit() else None
    await query.answer("Sent to Claude." if held is not None else render.HELD_GONE)
    await show_choice(query)
    if held is None:
        await context.bot.send_message(chat, render.HELD_GONE)
        return
    await send_held(context, chat, int(argument), *held)


async def send_held(context: ContextTypes.DEFAULT_TYPE, chat: int, message_id: int, update_id: int,
                    text: str) -> None:
    """Send a message the bot held, as if it had gone at once (its update's key: once)."""
    await send_to_claude(context, chat, message_id, update_id, text, None)


async def on_deny_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Text typed while a tool call waited, used as the reason to deny it."""
    query = update.callback_query
    assert query is not None and update.effective_chat is not None
    data = await pressed_data(update, context)
    if data is None or await spent(update, context):
        return
    chat = update.effective_chat.id
    _, token, message_id = [*data.split(":"), "", ""][:3]
    core = core_of(context)
    held = await core.link.take_held(chat, int(message_id)) if message_id.isdigit() else None
    if held is None:
        said = render.HELD_GONE
    else:
        try:
            said = await requests.deny_with(core.link, token, held[1])
        except (RemoteError, ConnectionFailed) as exc:
            said = commands.error_reply(exc).text
    await query.answer(said[:190])
    await show_choice(query)
    await context.bot.send_message(chat, said)


async def on_switch_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A /sessions list's button: switch, then show the list as it is now (→ moved)."""
    query = update.callback_query
    assert query is not None and update.effective_chat is not None
    chat = update.effective_chat.id
    if not await answer_button(update, context, lambda link, _, name: commands.switch(link, chat, [name])):
        return
    with contextlib.suppress(RemoteError, ConnectionFailed, TelegramError):
        chosen = (query.data or "").partition(":")[2]
        listing = await commands.sessions(core_of(context).link, chat, [], showing=chosen)
        [now, *_] = render.markdown_chunks(listing.text)
        await query.edit_message_text(now.text, entities=[MessageEntity(**e) for e in now.entities])


async def on_sessions_page_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A /sessions list's page button: the list shows that page, in place, with its
    buttons (page buttons work again and again: they only show)."""
    query = update.callback_query
    assert query is not None and update.effective_chat is not None
    try:
        listing = await commands.sessions(core_of(context).link, update.effective_chat.id,
                                          [(query.data or "").partition(":")[2]])
    except (RemoteError, ConnectionFailed) as exc:
        await query.answer(commands.error_reply(exc).text[:190])
        return
    await query.answer()
    [page, *_] = render.markdown_chunks(listing.text)
    with contextlib.suppress(TelegramError):
        await query.edit_message_text(page.text, entities=[MessageEntity(**e) for e in page.entities],
                                      reply_markup=await buttons(core_of(context).link,
                                                                 [[button] for button in listing.buttons]))


async def on_permission_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A button of a permission prompt, question or plan. The prompt itself is edited when
    the supervisor reports the request resolved (see ``_requests.close``)."""
    query = update.callback_query
    assert query is not None
    core = core_of(context)
    try:
        said, redraw, token = await requests.press(core.link, query.data or "")
    except ConnectionFailed as exc:
        await query.answer(commands.error_reply(exc).text[:190])
        return
    await query.answer(said[:190])
    if redraw is not None and token is not None:
        await requests.redraw(query, redraw, token)
    elif said == render.STALE_PROMPT:
        with contextlib.suppress(TelegramError):
            await query.edit_message_reply_markup(None)  # nothing to press any more


async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Text goes to the chat's active session; a reply goes to the session that wrote the
    message it quotes; a waiting question takes it only as ``requests.typed_answer`` says.
    A long paste Telegram cut in parts comes as one text (see ``_merge``)."""
    message = update.effective_message
    assert message is not None and update.effective_chat is not None
    core = core_of(context)
    parts = [update, *core.merged.pop(update.update_id, [])]
    chat, text = update.effective_chat.id, merge.joined_text(parts)
    replied = message.reply_to_message
    try:
        # asked as briefly as a send: a supervisor that is there but does not answer holds
        # the message up one attempt, not the default
        writer = await core.link.author(chat, replied.message_id) if replied is not None else None
        if writer is not None and not await core.link.visible(writer):
            writer = None
        typed = await requests.typed_answer(core.link, chat, text, replied.message_id if replied else None,
                                            writer, SEND_ATTEMPT)
    except RemoteError as exc:
        await send_reply(context.application, chat, commands.error_reply(exc))
        return
    except ConnectionFailed:
        writer, typed = None, requests.Typed()  # no supervisor: forward() keeps the message until it is back
    if typed.said is not None:
        await context.bot.send_message(chat, typed.said, reply_to_message_id=message.message_id)
        return
    if typed.offer is not None and typed.session is not None and core.config.while_busy == "steer":
        # a tool call waits: the text joins the answer (Claude reads it once the prompt is
        # answered); the acknowledgement offers it as the reason to deny the call instead
        await core.link.hold(chat, message.message_id, update.update_id, text)
        await forward(update, context, text, None, session=typed.session, deny_offer=typed.offer)
        return
    if typed.offer is not None and typed.session is not None:  # a tool call waits: a reason to deny it?
        await core.link.hold(chat, message.message_id, update.update_id, text)
        await send_reply(context.application, chat, commands.Reply(render.deny_or_send_text(typed.session), buttons=[
            (render.DENY_WITH_REASON_BUTTON, f"deny:{typed.offer}:{message.message_id}"),
            (render.SEND_AS_MESSAGE_BUTTON, f"claude:{message.message_id}")]))
        return
    quoted = (replied.text or replied.caption) if replied is not None else None
    if quoted:  # a reply to an earlier message: Claude sees what it answers
        text = render.quoted(quoted) + text
    await forward(update, context, text, None, session=writer)
    active = await core.link.active(chat) if writer is not None else None
    if writer is not None and writer != active:
        await send_reply(context.application, chat, commands.Reply(render.routed_text(writer, active), quiet=True))
    if typed.waiting is not None:
        await send_reply(context.application, chat, commands.Reply(render.still_asking_text(typed.waiting),
                                                                  quiet=True))


async def on_file(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_chat is not None
    try:
        await receive_file(update, context)
    except (RemoteError, ConnectionFailed) as exc:
        await send_reply(context.application, update.effective_chat.id, commands.error_reply(exc))


async def receive_file(update: Update, context: ContextTypes.DEFAULT_TYPE, parts: list[Update] | None = None) -> None:
    """Save a photo or document (or an album's: ``parts``) into the session's uploads/ and
    send them to Claude as one message."""
    assert update.effective_chat is not None
    core = core_of(context)
    chat = update.effective_chat.id
    parts = parts or [update, *core.merged.pop(update.update_id, [])]  # an album's photos or files
    active = await core.link.active(chat)
    if active is None:  # kept, and sent once the offered session exists
        offered = chat in core.first_messages
        core.first_messages.setdefault(chat, []).append((parts, None))
        if not offered:
            await send_reply(context.application, chat, await commands.first_offer(core.link))
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


SEND_ATTEMPT = 5.0
SEND_RETRY_EVERY = 2.0


async def forward(update: Update, context: ContextTypes.DEFAULT_TYPE, text: str, attachments: list[str] | None,
                  session: str | None = None, queue: bool | None = None, deny_offer: str | None = None) -> None:
    """Send the message of ``update`` to ``session`` (by default the chat's active one):
    ``send_to_claude``."""
    assert update.effective_chat is not None
    message = update.effective_message
    await send_to_claude(context, update.effective_chat.id, message.message_id if message is not None else None,
                         update.update_id, text, attachments, session, update, queue, deny_offer)


async def send_to_claude(context: ContextTypes.DEFAULT_TYPE, chat: int, message_id: int | None, update_id: int,
                         text: str, attachments: list[str] | None, session: str | None = None,
                         update: Update | None = None, queue: bool | None = None,
                         deny_offer: str | None = None) -> None:
    """Send a message to ``session`` (by default the chat's active one). While the
    supervisor does not answer, the same request (the update's idempotency key) is sent
    again until it does: the user is told it waits, and the message reaches Claude exactly
    once. Later updates wait behind it, so their order is kept; an update is confirmed to
    Telegram only after this returns. With no session yet, the message is kept for the
    "Create session" button (if its ``update`` is at hand). ``queue``: wait for a turn of
    its own if Claude is answering (default: as ``[telegram] while_busy`` says);
    ``deny_offer``: the prompt (token) of a tool call that waits, which the
    acknowledgement of a steered message offers to deny with its text instead."""
    core = core_of(context)
    key = f"tg:{context.bot.id}:{update_id}"
    told = False
    while True:
        try:
            reply = await commands.send(core.link, chat, text, attachments, key, timeout=SEND_ATTEMPT,
                                        message_id=message_id, session=session,
                                        queue=core.config.while_busy == "queue" if queue is None else queue)
            break
        except (RemoteError, ConnectionFailed) as exc:
            if isinstance(exc, hosts.HostUnreachable):  # another machine: kept for it, delaying no one
                await hold_for_host(context, chat, message_id, text, attachments, key, session, exc)
                return
            # away, or stopping / restarting in place: kept and sent again until it takes it
            if isinstance(exc, RemoteError) and exc.code == ErrorCode.QUEUE_FULL:
                reply = commands.Reply(render.QUEUE_FULL)  # said plainly: this one was not sent
                break
            if isinstance(exc, RemoteError) and exc.code == ErrorCode.BUDGET_EXCEEDED:
                # held here, with a button that raises the cap once and sends it
                reply = await daily.hold_over_budget(core.link, chat, session, text, attachments, key, message_id,
                                                     exc.message)
                break
            if isinstance(exc, RemoteError) and exc.code != ErrorCode.SHUTTING_DOWN:
                reply = commands.error_reply(exc)
                break
            if not told:
                told = True
                with contextlib.suppress(TelegramError):
                    await context.bot.send_message(chat, render.SEND_WAITING)
            await asyncio.sleep(SEND_RETRY_EVERY)
    if reply is None and told:
        reply = commands.Reply(render.SEND_ACCEPTED)
    if reply is not None and reply.text.startswith(render.STEERED) and deny_offer is not None \
            and message_id is not None:
        reply = commands.Reply(reply.text, quiet=True, buttons=[
            (render.DENY_INSTEAD_BUTTON, f"deny:{deny_offer}:{message_id}")])
    if reply is not None and reply.text == render.NO_ACTIVE_OFFER and update is None:
        reply = commands.Reply(render.HELD_NO_SESSION)  # (a held message whose session went away)
    elif reply is not None and reply.text == render.NO_ACTIVE_OFFER and attachments is None:
        offered = chat in core.first_messages
        core.first_messages.setdefault(chat, []).append(([update], text))  # sent once a session exists (the button)
        if offered:  # one offer holds them all
            return
    if reply is not None:
        await send_reply(context.application, chat, reply)


async def hold_for_host(context: ContextTypes.DEFAULT_TYPE, chat: int, message_id: int | None, text: str,
                        attachments: list[str] | None, key: str, session: str | None,
                        exc: ConnectionFailed) -> None:
    """A message for a session of a host that is unreachable: kept (``hosts.hold``) and
    sent once the host is back; the chat is told, and later updates go on at once."""
    core = core_of(context)
    target = session or await core.link.active(chat)
    assert target is not None
    fields: dict[str, Any] = {"session": target, "text": text, "idempotency_key": key,
                              "origin": commands.origin_of(chat, message_id)}
    if attachments:
        fields["attachments"] = attachments
    await hosts.hold(core.link, hosts.split(target)[1], fields)
    with contextlib.suppress(TelegramError):
        await context.bot.send_message(chat, hosts.waiting_text(str(exc)))


VOICE_TIMEOUT = 300.0


async def on_voice(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A voice note: transcribed by the configured command, echoed ("🎤 …"), sent as text."""
    message = update.effective_message
    assert message is not None and update.effective_chat is not None and message.voice is not None
    chat = update.effective_chat.id
    core = core_of(context)
    command = core.config.voice_command
    if not command:
        await context.bot.send_message(chat, render.VOICE_NOT_SET_UP)
        return
    with tempfile.TemporaryDirectory(prefix="voice-") as tmp:
        path = Path(tmp) / f"{message.voice.file_unique_id}.ogg"
        try:
            await (await message.voice.get_file()).download_to_drive(path)
        except TelegramError as exc:
            await context.bot.send_message(chat, f"Could not download the voice note ({exc.message}). Nothing was sent.")
            return
        text, problem = await transcribe(command, path)
    if problem is not None:
        await context.bot.send_message(chat, f"Could not transcribe the voice note: {problem}. Nothing was sent.")
        return
    await context.bot.send_message(chat, f"🎤 {text}", disable_notification=True)
    await forward(update, context, text, None)


async def transcribe(command: tuple[str, ...], path: Path) -> tuple[str, str | None]:
    """(text, None) or ("", why not): the command runs without a shell, the file's path last."""
    try:
        proc = await asyncio.create_subprocess_exec(*command, str(path), stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        return "", f"{command[0]} cannot be run ({exc.strerror or exc})"
    try:
        out, err = await asyncio.wait_for(proc.communicate(), VOICE_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return "", f"{command[0]} took over {VOICE_TIMEOUT:.0f} s"
    if proc.returncode != 0:
        last = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return "", f"{command[0]} failed: {last[0][:200]}"
    text = " ".join(out.decode(errors="replace").split())
    return (text, None) if text else ("", "no speech was recognised")


async def on_unsupported(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Voice notes, videos, stickers and the like: say what is supported, send nothing."""
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, render.UNSUPPORTED)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    log.error("handler failed", exc_info=context.error)


HOLD_POLL_EVERY = 0.2  # while a part is held: how often to look for the next one
MAX_RETRY_DELAY = 30.0  # seconds between two tries to reach Telegram, at most


def retry_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` failed tries in a row to reach Telegram: 1, 2,
    4 ... 30 — so an outage of hours logs about two lines a minute."""
    return min(MAX_RETRY_DELAY, 0.5 * 2.0**failures)


async def poll_updates(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Fetch Telegram updates and handle them one at a time, confirming each (by the next
    ``getUpdates`` offset) only after its handlers finished. PTB's own poller confirms a
    batch as soon as it is queued, so a crash could lose messages Telegram already
    forgot; here an update that was not fully handled is fetched again after a restart
    (its idempotency key keeps it from reaching Claude twice).

    A part that more may follow (an album's photo, a cut part of a long paste: see
    ``_merge``) is held, unconfirmed, for ``merge_window`` seconds after the last part, and
    looked for with short polls (a long poll would return at once: the held part is still
    there); then the parts are handled as one update, their first."""
    core: Core = app.bot_data["core"]
    window = core.config.merge_window
    offset: int | None = None  # None: start with whatever Telegram still holds for us
    failures = 0
    held: list[Update] = []
    last_part = 0.0
    while True:
        try:
            updates = await app.bot.get_updates(
                offset=held[0].update_id if held else offset, timeout=0 if held else POLL_TIMEOUT,
                allowed_updates=["message", "edited_message", "callback_query"]
            )
            if failures:
                log.info("Telegram answers again (after %d failed tries)", failures)
            failures = 0
        except InvalidToken:
            raise  # revoked: no try can succeed (serve stops the bot)
        except TelegramError as exc:
            failures += 1
            delay = retry_delay(failures)
            log.warning("getUpdates failed (%s); retrying in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            continue
        for update in updates:
            if held and update.update_id <= held[-1].update_id:
                continue  # (fetched again while held)
            if held and merge.continues(held, update):
                held.append(update)
                last_part = time.monotonic()
                continue
            if held:
                offset = await _handle_parts(app, core, held)
                held = []
            if window > 0 and merge.may_continue(update):
                held, last_part = [update], time.monotonic()
                continue
            await app.process_update(update)
            offset = update.update_id + 1
        if held and time.monotonic() - last_part >= window:
            offset = await _handle_parts(app, core, held)
            held = []
        elif held:
            await asyncio.sleep(HOLD_POLL_EVERY)


async def _handle_parts(app: Application[Any, Any, Any, Any, Any, Any], core: Core, parts: list[Update]) -> int:
    """Handle the parts of one message as its first update; the next offset."""
    if len(parts) > 1:
        core.merged[parts[0].update_id] = parts[1:]
    await app.process_update(parts[0])
    core.merged.pop(parts[0].update_id, None)  # (a handler that did not take them)
    return parts[-1].update_id + 1


async def reach_telegram(app: Application[Any, Any, Any, Any, Any, Any], stop: asyncio.Event) -> bool:
    """Initialize the application (its HTTP client; ``getMe``), trying again with backoff
    while Telegram cannot be reached — one line per try. False: stopped meanwhile.
    Raises InvalidToken: no try can succeed with a token Telegram rejects."""
    failures = 0
    while True:
        try:
            await app.initialize()
            if failures:
                log.info("Telegram answers again (after %d failed tries)", failures)
            return True
        except InvalidToken:
            raise
        except TelegramError as exc:
            failures += 1
            delay = retry_delay(failures)
            # (the bot's base_url holds the token: the configured root does not)
            log.warning("cannot reach Telegram at %s (%s); trying again in %.0f s",
                        app.bot_data["core"].config.api_url, exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return False


async def serve(config: BotConfig) -> None:
    """Run until SIGTERM/SIGINT: handlers, the update poller and the delivery loop. Raises
    InvalidToken when Telegram rejects the token, at start or later (revoked)."""
    app = build(config)
    core: Core = app.bot_data["core"]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if not await reach_telegram(app, stop):
        await core.client.close()
        return
    async with app:  # (initialized above) shutdown: the HTTP client
        await app.start()
        tasks = [asyncio.create_task(poll_updates(app), name="poll_updates"),
                 asyncio.create_task(delivery_loop(app, core), name="delivery_loop")]
        core.delivery = tasks[1]
        remotes = core.link.remotes
        for host, client in remotes.clients.items() if remotes is not None else ():  # one loop per host
            tasks.append(asyncio.create_task(host_delivery(app, core, host, client), name=f"delivery_{host}"))
            tasks.append(asyncio.create_task(hosts.send_waiting(core.link, host), name=f"waiting_{host}"))
        log.info("bot @%s running; allowed users: %s", app.bot.username,
                 ", ".join(map(str, sorted(config.allowed_users))) or "nobody")
        try:  # the "/" menu
            await app.bot.set_my_commands([BotCommand(name, text) for name, text in render.MENU])
        except TelegramError as exc:
            log.warning("could not set the command menu: %s", exc)
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([stopping, tasks[0]], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        poller = tasks[0]
        # (the poller ends only when Telegram rejects the token or on a bug: either is
        # raised once everything is stopped, so the bot exits non-zero saying which)
        failure = poller.exception() if poller.done() and not poller.cancelled() else None
        log.info("stopping")
        # nothing here can be lost by stopping hard (replies are acked only once sent), so
        # a stop that hangs is cut short; the stacks say where it hung
        faulthandler.dump_traceback_later(STOP_DEADLINE - 2, exit=False)
        for task in [*tasks, *core.typing.values()]:
            task.cancel()
        try:
            await asyncio.wait_for(_stop(app, core, tasks), STOP_DEADLINE)
        except TimeoutError:
            log.error("stopping took over %d s; exiting anyway", STOP_DEADLINE)
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    log.error("still running: %r", task)
            logging.shutdown()
            os._exit(1)
        finally:
            faulthandler.cancel_dump_traceback_later()
        if failure is not None:
            raise failure


async def _stop(app: Application[Any, Any, Any, Any, Any, Any], core: Core, tasks: list[asyncio.Task[None]]) -> None:
    # cancelled again until they end: on Python 3.11 a cancel that meets a reply arriving
    # at the same moment is swallowed by asyncio.wait_for (fixed in 3.12), and the task
    # goes on waiting for the next event
    pending = {t for t in tasks if not t.done()}
    while pending:
        _, pending = await asyncio.wait(pending, timeout=0.5)
        for task in pending:
            log.info("%s went on after it was cancelled; cancelling it again", task.get_name())
            task.cancel()
    await app.stop()
    await core.client.close()
    if core.link.remotes is not None:
        await core.link.remotes.close()


def build(config: BotConfig) -> Application[Any, Any, Any, Any, Any, Any]:
    bot = TopicBot(
        config.token, base_url=config.base_url, base_file_url=config.base_file_url,
        rate_limiter=AIORateLimiter(max_retries=5),
        # links in answers are not unfurled into previews (Claude cites many)
        defaults=Defaults(link_preview_options=LinkPreviewOptions(is_disabled=True)),
    )
    app = ApplicationBuilder().bot(bot).updater(None).build()  # our own poller: see poll_updates
    app.bot_data["core"] = core = Core(config)
    if len(config.hosts) > 1:  # other machines' supervisors, through ssh
        core.link.remotes = hosts.Remotes(config.hosts)
    app.add_handler(TypeHandler(Update, guard), group=-1)
    app.add_handler(MessageHandler(filters.UpdateType.EDITED, on_edited))
    app.add_handler(CommandHandler("start", on_start))
    app.add_handler(CommandHandler("help", on_help))
    app.add_handler(CommandHandler("get", on_get))
    app.add_handler(CommandHandler("queue", on_queue))
    app.add_handler(CommandHandler(list(commands.COMMANDS), on_command))
    app.add_handler(CommandHandler(list(daily.COMMANDS), on_daily_command))
    app.add_handler(MessageHandler(filters.COMMAND, on_unknown))
    app.add_handler(CallbackQueryHandler(on_switch_button, pattern=r"^switch:"))
    app.add_handler(CallbackQueryHandler(on_sessions_page_button, pattern=r"^sessions:"))
    app.add_handler(CallbackQueryHandler(on_new_button, pattern=r"^new:"))
    app.add_handler(CallbackQueryHandler(on_fresh_button, pattern=r"^fresh:"))
    app.add_handler(CallbackQueryHandler(on_retry_button, pattern=r"^retry:"))
    app.add_handler(CallbackQueryHandler(on_cancel_button, pattern=r"^cancel(all)?:"))
    app.add_handler(CallbackQueryHandler(on_move_button, pattern=r"^cd:"))
    app.add_handler(CallbackQueryHandler(on_send_to_claude_button, pattern=r"^claude:"))
    app.add_handler(CallbackQueryHandler(on_deny_button, pattern=r"^deny:"))
    app.add_handler(CallbackQueryHandler(on_setting_button, pattern=r"^(model|mode):"))
    app.add_handler(CallbackQueryHandler(on_cd_pick_button, pattern=r"^cdpick:"))
    app.add_handler(CallbackQueryHandler(on_resume_button, pattern=r"^resume:"))
    app.add_handler(CallbackQueryHandler(on_archive_button, pattern=r"^archive:"))
    app.add_handler(CallbackQueryHandler(on_keep_waiting_button, pattern=r"^wait:"))
    app.add_handler(CallbackQueryHandler(on_permission_button, pattern=r"^perm:"))
    app.add_handler(CallbackQueryHandler(on_rule_button, pattern=r"^rr:"))
    app.add_handler(CallbackQueryHandler(on_budget_button, pattern=r"^bud:"))
    app.add_handler(CallbackQueryHandler(on_schedule_button, pattern=r"^sch:"))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, on_text))
    app.add_handler(MessageHandler(filters.PHOTO | filters.Document.ALL, on_file))
    app.add_handler(MessageHandler(filters.VOICE, on_voice))
    app.add_handler(MessageHandler(
        filters.AUDIO | filters.VIDEO | filters.VIDEO_NOTE | filters.Sticker.ALL
        | filters.ANIMATION | filters.LOCATION | filters.CONTACT | filters.POLL, on_unsupported))
    app.add_error_handler(on_error)
    return app
