"""Delivery of the supervisor's events to Telegram: the durable consumer ``telegram-bot``.

Replies come back as stored events, are sent to the chat that asked (the event's
``origin``) and are acked only after Telegram accepted them — so a bot that is killed and
restarted picks up exactly where Telegram last said yes. A long answer's parts resume at
the first part Telegram has not accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, MessageEntity, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import Application

from protocol import AsyncClient, ProtocolError, RemoteError

from . import _commands as commands
from . import _desk as desk
from . import _files as files
from . import _hosts as hosts
from . import _render as render
from . import _requests as requests
from ._config import BotConfig
from ._live import KV_PREVIEWS, LiveReplies

log = logging.getLogger("claude_telegram_bot")

CONSUMER = "telegram-bot"
TYPING_EVERY = 4.5
TOOL_EDIT_EVERY = 1.5
TOOL_LOG_UTF16 = 4000  # under Telegram's 4096, counted as Telegram counts

class Core:
    """Per-process state shared by the handlers and the delivery loop."""

    def __init__(self, config: BotConfig) -> None:
        self.config = config
        self.client = AsyncClient(config.runtime_dir, timeout=15.0)
        self.link = commands.Link(self.client, config.roots, config.shared)
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
        #: (session, chat) told that the session could not resume, until it tries again
        self.resume_told: set[tuple[str, int]] = set()
        self._dirs: dict[str, str] = {}
        #: a chat's first messages, sent before it had a session: forwarded once the
        #: "create session" button is pressed — ([update], text), or (an album's or a file's
        #: updates, None)
        self.first_messages: dict[int, list[tuple[list[Any], str | None]]] = {}
        #: the later parts of one message (an album, a cut paste) by its first update's id,
        #: while that update is handled (see ``_merge``)
        self.merged: dict[int, list[Any]] = {}


    async def _save_previews(self, previews: list[list[int]]) -> None:
        try:
            await self.link.request("kv_set", key=KV_PREVIEWS, value=previews)
        except (ProtocolError, RemoteError, OSError) as exc:  # at worst a preview outlives a restart
            log.warning("could not store the open previews: %s", exc)

    async def session_dir(self, session: str) -> str | None:
        """A session's directory (it never changes), or None if there is no such session
        — or it is on another machine (no file of it is read or written here)."""
        if hosts.is_remote(session):
            return None
        if session not in self._dirs:
            try:
                self._dirs[session] = (await self.link.request("status", session=session))["cwd"]
            except RemoteError:
                return None
        return self._dirs[session]


class ToolLog:
    """One Telegram message per turn listing its tool calls, edited at most every
    ``TOOL_EDIT_EVERY`` seconds (rapid tool calls are coalesced into one edit)."""

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
        elif time.monotonic() - self.last_edit >= TOOL_EDIT_EVERY:
            await self.flush(app)

    async def flush(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        if self.message_id is None or self.shown == len(self.lines):
            return
        text = render.utf16_tail("\n".join(self.lines), TOOL_LOG_UTF16)
        try:
            await app.bot.edit_message_text(text, chat_id=self.chat, message_id=self.message_id)
        except BadRequest as exc:
            if "not modified" not in exc.message.lower():
                # e.g. the message was deleted: go on in a new one rather than go quiet
                log.warning("cannot edit the tool log (%s); starting a new one", exc.message)
                msg = await app.bot.send_message(self.chat, text, disable_notification=True)
                self.message_id = msg.message_id
        self.shown, self.last_edit = len(self.lines), time.monotonic()


async def buttons(link: commands.Link, rows: list[list[tuple[str, str]]]) -> InlineKeyboardMarkup:
    """Rows of (label, ``<kind>:<argument>``) as Telegram buttons, data too long for
    Telegram's 64 bytes shortened (``Link.button_data``)."""
    return InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=await link.button_data(data))
                                  for label, data in row] for row in rows])


async def send_reply(app: Application[Any, Any, Any, Any, Any, Any], chat: int, reply: commands.Reply) -> None:
    markup = None
    if reply.buttons:
        core: Core = app.bot_data["core"]
        markup = await buttons(core.link, [[button] for button in reply.buttons])
    if not reply.markdown:
        await app.bot.send_message(chat, reply.text, reply_markup=markup, disable_notification=reply.quiet)
        return
    chunks = render.markdown_chunks(reply.text)
    for i, chunk in enumerate(chunks):
        await send_chunk(app, chat, chunk, markup if i == len(chunks) - 1 else None)


async def send_chunk(app: Application[Any, Any, Any, Any, Any, Any], chat: int, chunk: render.Chunk,
                     markup: InlineKeyboardMarkup | None = None,
                     reply_parameters: ReplyParameters | None = None, quiet: bool = False) -> int:
    """Send one part; its Telegram message id."""
    sent = await app.bot.send_message(chat, chunk.text, entities=[MessageEntity(**e) for e in chunk.entities],
                                      reply_markup=markup, reply_parameters=reply_parameters,
                                      disable_notification=quiet)
    return int(sent.message_id)


KV_PROGRESS = "telegram.delivery.progress"


async def send_answer(app: Application[Any, Any, Any, Any, Any, Any], core: Core, event_id: int, chat: int,
                      text: str, reply_to: int | None = None, session: str | None = None) -> int | None:
    """Send an answer's parts, resuming after the last part Telegram accepted: a part that
    failed is sent again, never one before it (also after a bot restart). The first part
    answers ``reply_to`` (the question); a long answer also comes as a document. Each
    part is remembered as ``session``'s (a reply to it goes there). Returns the Telegram
    message id of a one-part answer."""
    chunks = render.answer_parts(text)
    done = core.parts_sent.get(event_id, 0)
    last: int | None = None
    for i in range(done, len(chunks)):
        thread = ReplyParameters(reply_to, allow_sending_without_reply=True) if i == 0 and reply_to else None
        # one notification per answer, not one per part
        last = await send_chunk(app, chat, chunks[i], reply_parameters=thread, quiet=i > 0)
        if session is not None:
            await core.link.note_author(chat, [last], session)
        if i + 1 < len(chunks):
            core.parts_sent = {event_id: i + 1}
            await core.link.request("kv_set", key=KV_PROGRESS, value=[event_id, i + 1])
    if len(chunks) > render.LONG_ANSWER_PARTS and done < len(chunks):
        # easier to read, save or forward in one piece (sent with the last part, so a
        # restart that resumes after it does not send it twice)
        await app.bot.send_document(chat, text.encode(), filename=f"answer-{event_id}.md",
                                    caption=render.long_answer_caption(len(chunks)), disable_notification=True)
    core.parts_sent.pop(event_id, None)
    return last if len(chunks) == 1 else None




def chat_of(event: dict[str, Any]) -> int | None:
    parsed = commands.parse_origin(event.get("origin"))
    return parsed[0] if parsed is not None else None


def in_topic(event: dict[str, Any]) -> None:
    """What is sent for this event goes to the forum topic its message came from (the
    bot adds ``message_thread_id``; tasks started now, like "typing…", keep it)."""
    parsed = commands.parse_origin(event.get("origin"))
    commands.current_thread.set(parsed[2] if parsed is not None else None)


async def keep_typing(app: Application[Any, Any, Any, Any, Any, Any], chat: int) -> None:
    while True:
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
FOLLOW_UP_KINDS = frozenset({"assistant_text", "tool_use", "permission_request", "result", "reminder", "stalled"})


async def follow_up_origin(core: Core, session: str) -> str | None:
    """Where a turn no message started goes: where the session's last message came from,
    else its owner's private chat (None: nobody here to tell)."""
    place = await core.link.kv_cached(KV_PLACE.format(session=session))
    if isinstance(place, str):
        return place
    owner = await core.link.kv_cached(commands.KV_OWNER.format(session=session))
    return f"tg:{owner}" if isinstance(owner, int) else None


async def remember_place(core: Core, session: str, chat: int) -> None:
    """Keep (in the supervisor's kv, written only when it changes) where the session's
    last message came from: the chat, and the forum topic (an origin with message id 0,
    so a follow-up is not threaded to a message)."""
    thread = commands.current_thread.get()
    place = f"tg:{chat}" if thread is None else f"tg:{chat}:0:{thread}"
    key = KV_PLACE.format(session=session)
    if await core.link.kv_cached(key) != place:
        await core.link.kv_put(key, place)


async def label_of(core: Core, chat: int, event: dict[str, Any]) -> str | None:
    """``[name]`` for what a session that is not the chat's (or topic's) active one shows:
    the user knows whose it is. None for the active one."""
    session = event.get("session")
    return None if session == await core.link.active(chat) else f"[{session}]"


async def deliver(app: Application[Any, Any, Any, Any, Any, Any], core: Core, event: dict[str, Any]) -> None:
    """Show one event to the chat (and forum topic) it belongs to. Returns once Telegram
    accepted it."""
    kind = event["kind"]
    message_id = event.get("message_id")
    session = str(event.get("session"))
    if desk.is_desk_event(event):  # said in Claude Code's own terminal (claudectl attach)
        await desk.deliver(app, event, await follow_up_origin(core, session), send_chunk)
        return
    follow_up = message_id is None and kind in FOLLOW_UP_KINDS
    if follow_up:
        event = {**event, "origin": await follow_up_origin(core, session)}
    if kind == "permission_resolved":  # (its prompt knows its chat; a follow-up's has no origin)
        await requests.close(app, core.link, event)
        return
    chat = chat_of(event)
    if chat is None:
        return
    in_topic(event)
    if kind == "user":
        await remember_place(core, session, chat)
    label = await label_of(core, chat, event)
    if kind == "state" and event.get("state") in ("resuming", "starting"):
        core.resume_told = {told for told in core.resume_told if told[0] != session}  # a new attempt
    if kind == "state" and event.get("state") == "resuming":
        await app.bot.send_message(chat, render.tagged(label, render.resume_text(event.get("idle_for"))),
                                   disable_notification=True)
    if kind == "user" and isinstance(message_id, int) and hosts.message_key(message_id, session) not in core.link.sent:
        # (sent before this bot's restart: its Retry button still works)
        core.link.remember(message_id, {"session": session, "text": event.get("text", ""),
                                        "attachments": event.get("attachments") or [],
                                        "origin": event.get("origin")})
    if kind in ("user", "assistant_text", "tool_use", "tool_result") and message_id is not None \
            and message_id not in core.typing:
        # the turn is running: show "typing…" (again, after a bot restart mid-turn)
        core.typing[message_id] = asyncio.create_task(keep_typing(app, chat))
    if kind == "assistant_text":
        await core.live.finish(app, message_id)
        text = event.get("text", "")
        if follow_up:
            text = render.follow_up(text)
        if label is not None:
            text = render.labelled(str(event.get("session")), text)
        origin = commands.parse_origin(event.get("origin"))
        shown = await send_answer(app, core, event["id"], chat, text, origin[1] if origin else None,
                                  str(event.get("session")))
        if shown is not None and message_id is not None:
            core.last_answer[message_id] = (chat, shown, event.get("text", ""))
    elif kind == "tool_use":
        log_ = core.tools.setdefault(message_id if message_id is not None else session, ToolLog(chat, label))
        started = log_.message_id
        await log_.add(app, render.tool_line(event.get("name"), event.get("input")))
        if log_.message_id is not None and log_.message_id != started:
            await core.link.note_author(chat, [log_.message_id], str(event.get("session")))
    elif kind == "permission_request":
        stop_typing(core, message_id)  # Claude waits for the user, not the other way round
        await requests.show(app, core.link, chat, event)
    elif kind == "reminder":
        await requests.remind(app, core.link, event)
    elif kind == "stalled":
        await tell_stalled(app, core, chat, event)
    # (permission_resolved: answered here, elsewhere (claudectl), timed out or ended with
    # Claude — closed above)
    elif kind in ("result", "message_failed"):
        await core.live.finish(app, message_id)
        stop_typing(core, message_id)
        tools = core.tools.pop(message_id if message_id is not None else session, None)
        if tools is not None:
            await tools.flush(app)
        answer = core.last_answer.pop(message_id, None) if message_id is not None else None
        if kind == "message_failed":
            await tell_failed(app, core, chat, event, label)
        elif event.get("interrupted") or event.get("terminal_reason") in ("aborted_streaming", "aborted_tools"):
            await app.bot.send_message(chat, render.tagged(label, "⏹ Interrupted."))
        elif event.get("is_error"):
            detail = str(event.get("text") or "; ".join(event.get("errors") or []) or event.get("subtype"))
            retry = retry_markup(message_id, session)
            if isinstance(message_id, int):
                await core.link.keep_failed(chat, hosts.message_key(message_id, session), "retry")
            report = render.tagged(label, render.error_text(detail))
            if answer is not None and answer[0] == chat and answer[2].strip() == detail.strip():
                # the CLI wrote the API error as the answer too: that message becomes the one report
                await app.bot.edit_message_text(report, chat_id=chat, message_id=answer[1], reply_markup=retry)
            else:
                await app.bot.send_message(chat, report, reply_markup=retry)
        elif event.get("num_turns") == 0 and not event.get("text") and kind == "result":
            # a Claude Code command that answers nothing (/compact): it ran, say so
            origin = commands.parse_origin(event.get("origin"))
            await app.bot.send_message(chat, render.tagged(label, render.COMMAND_DONE),
                                       reply_to_message_id=origin[1] if origin else None,
                                       allow_sending_without_reply=True)
        elif core.config.footer:
            footer = render.footer_text(event)
            if footer is not None:
                await app.bot.send_message(chat, render.tagged(label, footer), disable_notification=True)
        if kind == "result":  # files Claude left for the user go to the chat that asked
            await files.deliver_outbox(app, chat, core.link, str(event.get("session")))


async def tell_stalled(app: Application[Any, Any, Any, Any, Any, Any], core: Core, chat: int,
                       event: dict[str, Any]) -> None:
    """A turn that seems stuck: one quiet message, threaded to the message that began it,
    with buttons to stop it or keep waiting — unless it went on or ended meanwhile (the
    bot was down when it stalled): then it is no news."""
    session = str(event.get("session"))
    activity = (await core.link.request("status", session=session)).get("activity") or {}
    if activity.get("doing") != "stalled" or activity.get("message_id") != event.get("message_id"):
        return
    origin = commands.parse_origin(event.get("origin"))
    thread = ReplyParameters(origin[1], allow_sending_without_reply=True) if origin and origin[1] else None
    buttons = InlineKeyboardMarkup([[InlineKeyboardButton(render.INTERRUPT_BUTTON, callback_data=f"cancel:{session}"),
                                     InlineKeyboardButton(render.KEEP_WAITING_BUTTON, callback_data=f"wait:{session}")]])
    sent = await app.bot.send_message(chat, render.stalled_text(event), reply_markup=buttons,
                                      reply_parameters=thread, disable_notification=True)
    await core.link.note_author(chat, [sent.message_id], session)


def retry_markup(message_id: Any, session: str) -> InlineKeyboardMarkup | None:
    """The Retry button of a failed message (named with its host: ``hosts.message_key``)."""
    if not isinstance(message_id, int):
        return None
    key = hosts.message_key(message_id, session)
    return InlineKeyboardMarkup([[InlineKeyboardButton(render.RETRY_BUTTON, callback_data=f"retry:{key}")]])


async def tell_failed(app: Application[Any, Any, Any, Any, Any, Any], core: Core, chat: int,
                      event: dict[str, Any], label: str | None) -> None:
    """One notice per failure, threaded to the message that failed, with what can be
    done: a failed resume offers a fresh conversation (once per chat, however many
    messages waited for it), anything else a Retry; a drop the user asked for is quiet.
    ``label`` heads a notice about a session that is not the chat's active one."""
    session, message_id = str(event.get("session")), event.get("message_id")
    reason = str(event.get("reason") or "")
    origin = commands.parse_origin(event.get("origin"))
    thread = ReplyParameters(origin[1], allow_sending_without_reply=True) if origin and origin[1] else None
    resume_failed = reason.startswith(render.RESUME_FAILED_PREFIX)
    if isinstance(message_id, int):  # before its button is shown: a press can come at once
        await core.link.keep_failed(chat, hosts.message_key(message_id, session),
                                    "resume" if resume_failed else "retry")
    if resume_failed:
        if (session, chat) in core.resume_told:
            return
        core.resume_told.add((session, chat))
        fresh = await buttons(core.link, [[(render.FRESH_BUTTON.format(name=session), f"fresh:{session}")]])
        await app.bot.send_message(chat, render.resume_failed_text(session, reason[len(render.RESUME_FAILED_PREFIX):]),
                                   reply_markup=fresh, reply_parameters=thread)
        return
    await app.bot.send_message(chat, render.tagged(label, f"❌ Message not delivered: {reason}"),
                               reply_markup=retry_markup(message_id, session),
                               reply_parameters=thread, disable_notification=reason.startswith(render.DROPPED_PREFIX))


async def delivery_loop(app: Application[Any, Any, Any, Any, Any, Any], core: Core) -> None:
    handled: int | None = None  # the last event shown, even if its ack did not get through
    sub = None
    progress_loaded = False
    while True:
        try:
            if not core.client.connected:
                await core.client.connect(wait=3600)  # the supervisor may start after us
            if not progress_loaded:
                saved = (await core.link.request("kv_get", key=KV_PROGRESS))["value"]
                if isinstance(saved, list) and len(saved) == 2:
                    core.parts_sent = {int(saved[0]): int(saved[1])}
                core.live.load((await core.link.request("kv_get", key=KV_PREVIEWS))["value"])
                progress_loaded = True
            if sub is not None:
                sub.discard()
            sub = await core.client.subscribe(consumer=CONSUMER, after=handled, live=True)
            log.info("delivering events after %s", "the stored cursor" if handled is None else handled)
            while True:
                event = await sub.next()
                if event is None:
                    continue
                if "id" not in event:  # the answer as it is written: shown, never acked
                    chat = chat_of(event)
                    if chat is not None:
                        in_topic(event)
                        core.live.update(app, chat, event, await label_of(core, chat, event))
                    continue
                while True:
                    try:
                        await deliver(app, core, event)
                        break
                    except Forbidden:
                        log.warning("chat of event %s blocked the bot; skipping", event["id"])
                        break
                    except BadRequest as exc:
                        log.error("Telegram refused event %s: %s; skipping", event["id"], exc)
                        break
                    except TelegramError as exc:  # network trouble: try the same event again
                        log.warning("sending event %s failed (%s); retrying", event["id"], exc)
                        await asyncio.sleep(2)
                handled = event["id"]
                await sub.ack(event["id"])
        except asyncio.CancelledError:
            raise
        except (ProtocolError, OSError) as exc:
            log.warning("lost the supervisor (%s); reconnecting", exc)
            await asyncio.sleep(1)
        except Exception:
            log.exception("delivery loop failed; restarting it")
            await asyncio.sleep(1)
