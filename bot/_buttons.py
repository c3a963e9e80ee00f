"""Button presses: each button works once (a second press is answered "already done"), its
data may be a token for data too long for Telegram, and what was chosen stays on the
message; then the command the button stands for runs (permission prompts: ``_requests``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from telegram import CallbackQuery, Message, MessageEntity, Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from protocol import ConnectionFailed, RemoteError

from . import _activity as activity
from . import _commands as commands
from . import _daily as daily
from . import _desk as desk
from . import _dirs as dirs
from . import _hosts as hosts
from . import _markdown as markdown
from . import _render as render
from . import _requests as requests
from . import _sessions as sessions
from . import _talk as talk
from ._core import core_of
from ._link import Link
from ._messages import forward, send_held
from ._reply import Reply, error_reply
from ._send import buttons, send_reply
from ._uploads import receive_file


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
    if text and label and markdown.utf16_len(text) + markdown.utf16_len(label) < markdown.MAX_MESSAGE_UTF16 - 8:
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
                        run: Callable[[Link, str, str], Awaitable[Reply]],
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
        reply = error_reply(exc)
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
    if not await answer_button(update, context, lambda link, _, name: sessions.first_session(link, chat, name)):
        return
    core = core_of(context)
    waiting = await core.link.take_first(chat)
    if waiting and await core.link.active(chat) is not None:
        for kept, text in waiting:
            parts = [Update.de_json(part, context.bot) for part in kept]
            if text is None:  # a file (or an album): saved into the new session's uploads/ now
                await receive_file(parts[0], context, parts)
            else:
                await forward(parts[0], context, text, None)


async def on_fresh_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The user chose a fresh conversation for a session whose old one could not resume."""
    assert update.effective_chat is not None
    chat = update.effective_chat.id
    await answer_button(update, context, lambda link, _, name: talk.fresh_conversation(link, chat, name))


async def on_retry_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Retry under a failure: the failed message is sent again (once, however often pressed)."""
    assert update.effective_chat is not None
    chat = update.effective_chat.id
    await answer_button(update, context, lambda link, _, message: talk.retry(
        link, chat, hosts.parse_message_key(message)))


async def on_cancel_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/cancel's question: stop this answer, or stop it and drop what is queued."""
    await answer_button(update, context, lambda link, kind, name: talk.interrupt(
        link, name, drop_queued=kind == "cancelall"))


async def on_keep_waiting_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Under a turn that seems stuck: the user waits on. Nothing to ask the supervisor (it
    says a stall once per silence); the message shows the choice."""
    query = update.callback_query
    assert query is not None
    if await spent(update, context):
        return
    await query.answer(activity.KEPT_WAITING)
    await show_choice(query)


async def on_archive_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/archive's question about a busy session answered: archive it now."""
    assert update.effective_chat is not None
    chat = update.effective_chat.id
    await answer_button(update, context, lambda link, _, name: sessions.archive_now(link, chat, name))


async def on_setting_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A /model or /mode button: the command with the picked value."""
    assert update.effective_chat is not None
    chat = update.effective_chat.id
    await answer_button(update, context, lambda link, kind, value: commands.COMMANDS[kind](link, chat, [value]))


async def on_cd_pick_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A directory offered by a bare /cd: asked about as /cd <dir> would be."""
    assert update.effective_chat is not None
    chat = update.effective_chat.id
    await answer_button(update, context, lambda link, _, where: dirs.cd(link, chat, [where]))


async def on_resume_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A conversation offered by /resume: a session continuing it."""
    assert update.effective_chat is not None
    chat = update.effective_chat.id
    await answer_button(update, context,
                        lambda link, _, conversation: desk.continue_conversation(link, chat, conversation))


async def on_move_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/cd's question answered: suspend if needed, then move (takes a moment)."""
    await answer_button(update, context, lambda link, _, name: dirs.move(link, name), early="Moving…")


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
            said = error_reply(exc).text
    await query.answer(said[:190])
    await show_choice(query)
    await context.bot.send_message(chat, said)


async def on_switch_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A /sessions list's button: switch, then show the list as it is now (→ moved)."""
    query = update.callback_query
    assert query is not None and update.effective_chat is not None
    chat = update.effective_chat.id
    if not await answer_button(update, context, lambda link, _, name: sessions.switch(link, chat, [name])):
        return
    with contextlib.suppress(RemoteError, ConnectionFailed, TelegramError):
        chosen = (query.data or "").partition(":")[2]
        listing = await sessions.sessions(core_of(context).link, chat, [], showing=chosen)
        [now, *_] = markdown.markdown_chunks(listing.text)
        await query.edit_message_text(now.text, entities=[MessageEntity(**e) for e in now.entities])


async def on_sessions_page_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A /sessions list's page button: the list shows that page, in place, with its
    buttons (page buttons work again and again: they only show)."""
    query = update.callback_query
    assert query is not None and update.effective_chat is not None
    try:
        listing = await sessions.sessions(core_of(context).link, update.effective_chat.id,
                                          [(query.data or "").partition(":")[2]])
    except (RemoteError, ConnectionFailed) as exc:
        await query.answer(error_reply(exc).text[:190])
        return
    await query.answer()
    [page, *_] = markdown.markdown_chunks(listing.text)
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
        await query.answer(error_reply(exc).text[:190])
        return
    await query.answer(said[:190])
    if redraw is not None and token is not None:
        await requests.redraw(query, redraw, token)
    elif said == render.STALE_PROMPT:
        with contextlib.suppress(TelegramError):
            await query.edit_message_reply_markup(None)  # nothing to press any more
