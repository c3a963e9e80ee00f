"""How each kind of event is shown in its chat: ``deliver`` and its table ``HANDLERS``.

``deliver`` takes one stored event to the chat (and forum topic) it belongs to — its
``origin``, or for a turn no message started (Claude's own) where the session was last
used — and hands it to its kind's handler: ``HANDLERS``, with the kinds shown nothing for in
``IGNORED`` (``KINDS``: a ``_kinds`` table, as ``_desk``'s). Each handler takes its kind's
``TypedDict`` (``Delivery``, or ``Shown`` once its chat is known), so mypy checks the fields
it reads. Also here: "typing…" while a turn runs, and the session's last place. Reading the
subscription, retrying and acking: ``_delivery``; the sending itself: ``_send``; failure
notices: ``_notices``; state: ``_core``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from telegram.constants import ChatAction
from telegram.error import TelegramError
from telegram.ext import Application

from protocol import (
    AssistantTextEvent,
    ErrorEvent,
    EventKind,
    MessageFailedEvent,
    PermissionRequestEvent,
    PermissionResolvedEvent,
    ReminderEvent,
    ResultEvent,
    StalledEvent,
    StateEvent,
    ToolResultEvent,
    ToolUseEvent,
    UserEvent,
)

from . import _desk as desk
from . import _files as files
from . import _hosts as hosts
from . import _render as render
from . import _requests as requests
from ._core import Core, ToolLog
from ._kinds import KindTable
from ._link import KV_OWNER, current_thread, parse_origin
from ._notices import retry_markup, tell_failed, tell_stalled
from ._pacing import Turn, spare_turn
from ._requests import App
from ._send import send_answer, send_chunk

TYPING_EVERY = 4.5


def chat_of(event: dict[str, Any]) -> int | None:
    parsed = parse_origin(event.get("origin"))
    return parsed[0] if parsed is not None else None


def in_topic(event: dict[str, Any]) -> None:
    """What is sent for this event goes to the forum topic its message came from (the
    bot adds ``message_thread_id``; tasks started now, like "typing…", keep it)."""
    parsed = parse_origin(event.get("origin"))
    current_thread.set(parsed[2] if parsed is not None else None)


async def keep_typing(app: Application[Any, Any, Any, Any, Any, Any], core: Core, chat: int) -> None:
    """"typing…" in ``chat`` while a turn runs: not while its answer is shown as it is
    written (the draft says it), and only with the rate limit to spare (``_pacing``)."""
    while True:
        if not core.live.writing(chat):
            await spare_turn(app, Turn.TYPING, chat)
            if not core.live.writing(chat):  # (its answer may have begun meanwhile)
                with contextlib.suppress(TelegramError):
                    await app.bot.send_chat_action(chat, ChatAction.TYPING)
        await asyncio.sleep(TYPING_EVERY)


def stop_typing(core: Core, message_id: int | None) -> None:
    if message_id is None:
        return
    task = core.typing.pop(message_id, None)
    if task is not None:
        task.cancel()


KV_PLACE = "telegram.place.{session}"
#: what a turn that no message started (Claude's own, e.g. after a background task ended)
#: consists of: these events come without a message id, hence without an origin
FOLLOW_UP_KINDS = frozenset({EventKind.ASSISTANT_TEXT, EventKind.TOOL_USE, EventKind.PERMISSION_REQUEST,
                             EventKind.RESULT, EventKind.REMINDER, EventKind.STALLED})


async def follow_up_origin(core: Core, session: str) -> str | None:
    """Where a turn no message started goes: where the session's last message came from,
    else its owner's private chat (None: nobody here to tell)."""
    place = await core.link.kv_cached(KV_PLACE.format(session=session))
    if isinstance(place, str):
        return place
    owner = await core.link.kv_cached(KV_OWNER.format(session=session))
    return f"tg:{owner}" if isinstance(owner, int) else None


async def remember_place(core: Core, session: str, chat: int) -> None:
    """Keep (in the supervisor's kv, written only when it changes) where the session's
    last message came from: the chat, and the forum topic (an origin with message id 0,
    so a follow-up is not threaded to a message)."""
    thread = current_thread.get()
    place = f"tg:{chat}" if thread is None else f"tg:{chat}:0:{thread}"
    key = KV_PLACE.format(session=session)
    if await core.link.kv_cached(key) != place:
        await core.link.kv_put(key, place)


async def label_of(core: Core, chat: int, event: dict[str, Any]) -> str | None:
    """``[name]`` for what a session that is not the chat's (or topic's) active one shows:
    the user knows whose it is. None for the active one."""
    session = event.get("session")
    return None if session == await core.link.active(chat) else f"[{session}]"


#: the event a handler takes: its kind's TypedDict (``protocol._events``)
E = TypeVar("E", bound=Mapping[str, Any])


@dataclass(frozen=True)
class Delivery(Generic[E]):
    """One event on its way to Telegram (``Delivery[ResultEvent]``: a ``result``)."""

    app: App
    core: Core
    event: E
    #: a turn no message started (Claude's own): its origin is where the session was last used
    follow_up: bool

    @property
    def session(self) -> str:
        return str(self.event.get("session"))

    @property
    def message_id(self) -> Any:
        return self.event.get("message_id")


@dataclass(frozen=True)
class Shown(Delivery[E]):
    """An event shown in its chat (and forum topic, set for what is sent now)."""

    chat: int
    #: ``[name]`` when the event's session is not the chat's (topic's) active one
    label: str | None


#: how one kind of event reaches Telegram; each takes ``Delivery`` (or ``Shown``) of its
#: kind's TypedDict, so mypy checks the fields it reads
Handler = Callable[[Delivery[Any]], Awaitable[None]]


def in_chat(show: Callable[[Shown[E]], Awaitable[None]]) -> Handler:
    """A handler of an event shown in the chat it belongs to: nothing for an event
    without one (an origin this bot did not write, a follow-up nobody here owns)."""

    @functools.wraps(show)
    async def handler(delivery: Delivery[Any]) -> None:
        chat = chat_of(delivery.event)
        if chat is None:
            return
        in_topic(delivery.event)
        await show(Shown(delivery.app, delivery.core, delivery.event, delivery.follow_up, chat,
                         await label_of(delivery.core, chat, delivery.event)))

    return handler


async def deliver(app: App, core: Core, event: dict[str, Any]) -> None:
    """Show one event to the chat (and forum topic) it belongs to, as ``HANDLERS`` says
    for its kind. Returns once Telegram accepted it."""
    kind = event["kind"]
    session = str(event.get("session"))
    if desk.is_desk_event(event):  # said in Claude Code's own terminal (claudectl attach)
        await desk.deliver(app, event, await follow_up_origin(core, session), send_chunk)
        return
    handler = KINDS.handler(kind)
    if handler is None:  # IGNORED, or a kind newer than this bot
        return
    follow_up = event.get("message_id") is None and kind in FOLLOW_UP_KINDS
    if follow_up:
        event = {**event, "origin": await follow_up_origin(core, session)}
    await handler(Delivery(app, core, event, follow_up))


def start_typing(shown: Shown[Any]) -> None:
    """The turn is running: show "typing…" (again, after a bot restart mid-turn)."""
    if shown.message_id is not None and shown.message_id not in shown.core.typing:
        shown.core.typing[shown.message_id] = asyncio.create_task(keep_typing(shown.app, shown.core, shown.chat))


async def note_state(delivery: Delivery[StateEvent]) -> None:
    """Any session's state, shown in a chat or not: why one failed is kept in the
    supervisor (``Link.note_failure``: /sessions and /status say it, after a bot restart
    too) until it starts again; then the chat is told (``show_state``)."""
    event, link = delivery.event, delivery.core.link
    if event.get("state") == "failed":
        # (a crash's state names no detail: the ``error`` said before it does)
        trouble = await link.failure(delivery.session)
        said = trouble[1] if trouble is not None and trouble[0] == TROUBLE else None
        await link.note_failure(delivery.session, str(event.get("reason") or ""), event.get("detail") or said)
    else:
        await link.forget_failure(delivery.session)
    await show_state(delivery)


#: the reason kept for a session whose Claude or keeper reported an ``error``, until its
#: next state (a ``failed`` one takes its words as detail)
TROUBLE = "error"


async def note_error(delivery: Delivery[ErrorEvent]) -> None:
    """Any session's ``error``: kept as what its failure, if it follows, was about (an
    error of no message's turn is shown to no chat); then said with its turn's end
    (``show_error``)."""
    message = delivery.event.get("message")
    if message:
        await delivery.core.link.note_failure(delivery.session, TROUBLE, str(message))
    await show_error(delivery)


@in_chat
async def show_state(shown: Shown[StateEvent]) -> None:
    """A session resuming says so (quietly); a new attempt may be told again that it failed."""
    state = shown.event.get("state")
    if state in ("resuming", "starting"):
        await shown.core.link.resume_tried(shown.session)
    if state == "resuming":
        await shown.app.bot.send_message(shown.chat, render.tagged(shown.label,
                                                                   render.resume_text(shown.event.get("idle_for"))),
                                         disable_notification=True)


@in_chat
async def show_user(shown: Shown[UserEvent]) -> None:
    """A message Claude took: where the session was last used, what was sent (for Retry)."""
    core, event, message_id = shown.core, shown.event, shown.message_id
    await remember_place(core, shown.session, shown.chat)
    if isinstance(message_id, int) and hosts.message_key(message_id, shown.session) not in core.link.sent:
        # (sent before this bot's restart: its Retry button still works)
        core.link.remember(message_id, {"session": shown.session, "text": event.get("text", ""),
                                        "attachments": event.get("attachments") or [],
                                        "origin": event.get("origin")})
    start_typing(shown)


@in_chat
async def show_answer(shown: Shown[AssistantTextEvent]) -> None:
    """Claude's answer, in parts, threaded to the question; a follow-up and another
    session's answer say so."""
    core, event, message_id = shown.core, shown.event, shown.message_id
    start_typing(shown)
    await core.live.finish(shown.app, message_id)
    text = event.get("text", "")
    if shown.follow_up:
        text = render.follow_up(text)
    if shown.label is not None:
        text = render.labelled(shown.session, text)
    origin = parse_origin(event.get("origin"))
    sent = await send_answer(shown.app, core, event["id"], shown.chat, text, origin[1] if origin else None,
                             shown.session)
    if sent is not None and message_id is not None:
        core.last_answer[message_id] = (shown.chat, sent, event.get("text", ""))


@in_chat
async def show_tool_use(shown: Shown[ToolUseEvent]) -> None:
    """A line in the turn's tool log."""
    start_typing(shown)
    message_id = shown.message_id
    log_ = shown.core.tools.setdefault(message_id if message_id is not None else shown.session,
                                       ToolLog(shown.chat, shown.label))
    started = log_.message_id
    await log_.add(shown.app, render.tool_line(shown.event.get("name"), shown.event.get("input")))
    if log_.message_id is not None and log_.message_id != started:
        await shown.core.link.note_author(shown.chat, [log_.message_id], shown.session)


@in_chat
async def show_tool_result(shown: Shown[ToolResultEvent]) -> None:
    """Not shown itself: the turn goes on ("typing…")."""
    start_typing(shown)


@in_chat
async def show_permission_request(shown: Shown[PermissionRequestEvent]) -> None:
    """A prompt with its buttons."""
    stop_typing(shown.core, shown.message_id)  # Claude waits for the user, not the other way round
    await requests.show(shown.app, shown.core.link, shown.chat, shown.event)


async def close_prompt(delivery: Delivery[PermissionResolvedEvent]) -> None:
    """A request answered here, elsewhere (claudectl), timed out or ended with Claude: its
    prompt shows how (the prompt knows its chat; a follow-up's has no origin)."""
    await requests.close(delivery.app, delivery.core.link, delivery.event)


@in_chat
async def show_reminder(shown: Shown[ReminderEvent]) -> None:
    await requests.remind(shown.app, shown.core.link, shown.event)


@in_chat
async def show_stalled(shown: Shown[StalledEvent]) -> None:
    await tell_stalled(shown.app, shown.core, shown.chat, shown.event)


async def end_turn(shown: Shown[Any]) -> tuple[int, int, str] | None:
    """The turn is over: its live preview, "typing…" and tool log end. The turn's last
    answer as sent, if it was one message (chat, Telegram message id, Claude's text)."""
    core, message_id = shown.core, shown.message_id
    await core.live.finish(shown.app, message_id)
    stop_typing(core, message_id)
    tools = core.tools.pop(message_id if message_id is not None else shown.session, None)
    if tools is not None:
        await tools.flush(shown.app)
    return core.last_answer.pop(message_id, None) if message_id is not None else None


@in_chat
async def show_result(shown: Shown[ResultEvent]) -> None:
    """A turn's end: an interruption (and why, if an ``error`` of the turn said), an error
    (with Retry), a command that answered nothing, or the quiet footer; then the files
    Claude left for the user."""
    app, core, event, chat, label = shown.app, shown.core, shown.event, shown.chat, shown.label
    answer = await end_turn(shown)
    error = await take_turn_error(shown)
    interrupted = event.get("interrupted") or event.get("terminal_reason") in ("aborted_streaming", "aborted_tools")
    if error is not None and not interrupted:  # (something went wrong, and the turn ended all the same)
        await app.bot.send_message(chat, render.tagged(label, render.trouble_text(error)))
    if interrupted:
        await app.bot.send_message(chat, render.tagged(label, render.interrupted_text(error)))
    elif event.get("is_error"):
        await tell_error(shown, answer)
    elif event.get("num_turns") == 0 and not event.get("text"):
        # a Claude Code command that answers nothing (/compact): it ran, say so
        origin = parse_origin(event.get("origin"))
        await app.bot.send_message(chat, render.tagged(label, render.COMMAND_DONE),
                                   reply_to_message_id=origin[1] if origin else None,
                                   allow_sending_without_reply=True)
    elif core.config.footer:
        footer = render.footer_text(event)
        if footer is not None:
            await app.bot.send_message(chat, render.tagged(label, footer), disable_notification=True)
    # files Claude left for the user go to the chat that asked
    await files.deliver_outbox(app, chat, core.link, shown.session)


async def tell_error(shown: Shown[ResultEvent], answer: tuple[int, int, str] | None) -> None:
    """A turn that ended in an error, with a Retry button; an API error the CLI also
    wrote as the answer (``answer``) becomes that one message."""
    event, chat, message_id = shown.event, shown.chat, shown.message_id
    detail = str(event.get("text") or "; ".join(event.get("errors") or []) or event.get("subtype"))
    retry = retry_markup(message_id, shown.session)
    if isinstance(message_id, int):
        await shown.core.link.keep_failed(chat, hosts.message_key(message_id, shown.session), "retry")
    report = render.tagged(shown.label, render.error_text(detail))
    if answer is not None and answer[0] == chat and answer[2].strip() == detail.strip():
        await shown.app.bot.edit_message_text(report, chat_id=chat, message_id=answer[1], reply_markup=retry)
    else:
        await shown.app.bot.send_message(chat, report, reply_markup=retry)


@in_chat
async def show_error(shown: Shown[ErrorEvent]) -> None:
    """Something went wrong with Claude's process or the keeper's link, in a message's
    turn: kept, and said once with that turn's end (every message ends in a ``result`` or
    a ``message_failed``). Said alone it would be said twice: when Claude exits, each
    message it leaves fails with this same text (``show_message_failed``, with Retry);
    when the supervisor was away too long, the turn ends interrupted — by no one the user
    knows of, unless this says why. An error of no message's turn (Claude could not start
    or exited while idle: the next message starts it again) has no chat to go to."""
    message, message_id = shown.event.get("message"), shown.message_id
    if isinstance(message_id, int) and message:
        # (in the supervisor: a bot restarted before the turn's end still says it)
        await shown.core.link.keep_turn_error(hosts.message_key(message_id, shown.session), message)


async def take_turn_error(shown: Shown[Any]) -> str | None:
    """What went wrong in the turn that ends now (``show_error``), no longer kept."""
    message_id = shown.message_id
    if not isinstance(message_id, int):
        return None
    return await shown.core.link.take_turn_error(hosts.message_key(message_id, shown.session))


@in_chat
async def show_message_failed(shown: Shown[MessageFailedEvent]) -> None:
    # (its reason says what went wrong: an error of its turn said the same, or less)
    await take_turn_error(shown)
    await end_turn(shown)
    await tell_failed(shown.app, shown.core, shown.chat, shown.event, shown.label)


#: how each kind of event reaches Telegram: one entry per kind (``IGNORED``: none)
HANDLERS: dict[EventKind, Handler] = {
    EventKind.STATE: note_state,
    EventKind.USER: show_user,
    EventKind.ASSISTANT_TEXT: show_answer,
    EventKind.TOOL_USE: show_tool_use,
    EventKind.TOOL_RESULT: show_tool_result,
    EventKind.RESULT: show_result,
    EventKind.MESSAGE_FAILED: show_message_failed,
    EventKind.ERROR: note_error,
    EventKind.PERMISSION_REQUEST: show_permission_request,
    EventKind.PERMISSION_RESOLVED: close_prompt,
    EventKind.REMINDER: show_reminder,
    EventKind.STALLED: show_stalled,
}
#: the kinds nothing is shown for, and why (acked like the others)
IGNORED: dict[EventKind, str] = {
    EventKind.STEERED: "its sender was told when it was sent (↪ Added to the running answer)",
    EventKind.TAKEN: "the turn it joined answers it (its result's footer counts it)",
    EventKind.SETTINGS: "the command that changed them said so",
}
KINDS = KindTable(HANDLERS, IGNORED)
