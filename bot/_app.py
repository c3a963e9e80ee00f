"""The Telegram application: thin PTB handlers and the event delivery loop.

Nothing here owns a session. Messages go to the supervisor; replies come back as stored
events from a named subscription (consumer ``telegram-bot``), are sent to the chat that
asked (the event's ``origin``), and are acked only after Telegram accepted them — so a
bot that is killed and restarted picks up exactly where Telegram last said yes.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import hashlib
import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, MessageEntity, Update
from telegram.constants import ChatAction
from telegram.error import BadRequest, Forbidden, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)

from protocol import AsyncClient, ConnectionFailed, ProtocolError, RemoteError

from . import _commands as commands
from . import _render as render
from ._config import BotConfig

log = logging.getLogger("claude_telegram_bot")

CONSUMER = "telegram-bot"
TYPING_EVERY = 4.5
POLL_TIMEOUT = 30
STOP_DEADLINE = 10
TOOL_EDIT_EVERY = 1.5
TOOL_LOG_UTF16 = 4000  # under Telegram's 4096, counted as Telegram counts
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str | None, fallback: str) -> str:
    """A file name that cannot leave the upload directory or hide itself."""
    base = Path(name or "").name
    base = SAFE_NAME.sub("_", base).lstrip(".")[:100]
    return base or fallback


class Core:
    """Per-process state shared by the handlers and the delivery loop."""

    def __init__(self, config: BotConfig) -> None:
        self.config = config
        self.client = AsyncClient(config.runtime_dir, timeout=15.0)
        self.link = commands.Link(self.client)
        self.refused: set[int] = set()
        self.typing: dict[int, asyncio.Task[None]] = {}
        self.tools: dict[int, ToolLog] = {}
        self.delivery: asyncio.Task[None] | None = None
        # parts of a multi-part reply Telegram already accepted: event id -> count, also
        # kept in the supervisor (KV_PROGRESS) so a restarted bot resumes at the next part
        self.parts_sent: dict[int, int] = {}


class ToolLog:
    """One Telegram message per turn listing its tool calls, edited at most every
    ``TOOL_EDIT_EVERY`` seconds (rapid tool calls are coalesced into one edit)."""

    def __init__(self, chat: int) -> None:
        self.chat = chat
        self.lines: list[str] = []
        self.message_id: int | None = None
        self.shown = 0
        self.last_edit = 0.0

    async def add(self, app: Application[Any, Any, Any, Any, Any, Any], line: str) -> None:
        self.lines.append(line)
        if self.message_id is None:
            msg = await app.bot.send_message(self.chat, line)
            self.message_id, self.shown, self.last_edit = msg.message_id, 1, time.monotonic()
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
                msg = await app.bot.send_message(self.chat, text)
                self.message_id = msg.message_id
        self.shown, self.last_edit = len(self.lines), time.monotonic()


async def send_reply(app: Application[Any, Any, Any, Any, Any, Any], chat: int, reply: commands.Reply) -> None:
    markup = None
    if reply.buttons:
        markup = InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=data)]
                                       for label, data in reply.buttons])
    if not reply.markdown:
        await app.bot.send_message(chat, reply.text, reply_markup=markup)
        return
    chunks = render.markdown_chunks(reply.text)
    for i, chunk in enumerate(chunks):
        await send_chunk(app, chat, chunk, markup if i == len(chunks) - 1 else None)


async def send_chunk(app: Application[Any, Any, Any, Any, Any, Any], chat: int, chunk: render.Chunk,
                     markup: InlineKeyboardMarkup | None = None) -> None:
    await app.bot.send_message(chat, chunk.text, entities=[MessageEntity(**e) for e in chunk.entities],
                               reply_markup=markup)


KV_PROGRESS = "telegram.delivery.progress"


async def send_answer(app: Application[Any, Any, Any, Any, Any, Any], core: Core, event_id: int, chat: int,
                      text: str) -> None:
    """Send an answer's parts, resuming after the last part Telegram accepted: a part that
    failed is sent again, never one before it (also after a bot restart)."""
    chunks = render.markdown_chunks(text)
    done = core.parts_sent.get(event_id, 0)
    for i in range(done, len(chunks)):
        await send_chunk(app, chat, chunks[i])
        if i + 1 < len(chunks):
            core.parts_sent = {event_id: i + 1}
            await core.link.request("kv_set", key=KV_PROGRESS, value=[event_id, i + 1])
    core.parts_sent.pop(event_id, None)


def core_of(context: ContextTypes.DEFAULT_TYPE) -> Core:
    core: Core = context.application.bot_data["core"]
    return core


# handlers --------------------------------------------------------------------------------


async def guard(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Deny by default: only allowlisted user ids get past this (group -1) handler."""
    core = core_of(context)
    user = update.effective_user
    if user is not None and user.id in core.config.allowed_users:
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
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, render.HELP_TEXT)


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
    assert update.effective_message is not None and update.effective_chat is not None
    word = (update.effective_message.text or "").split()[0][:40]
    await context.bot.send_message(update.effective_chat.id, f"Unknown command {word}. Send /help for the list.")


async def on_switch_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    assert query is not None and update.effective_chat is not None
    name = (query.data or "").removeprefix("switch:")
    core = core_of(context)
    try:
        reply = await commands.switch(core.link, update.effective_chat.id, [name])
    except (RemoteError, ConnectionFailed) as exc:
        reply = commands.error_reply(exc)
    await query.answer(reply.text[:190])
    await send_reply(context.application, update.effective_chat.id, reply)


async def on_permission_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    assert query is not None and update.effective_chat is not None
    core = core_of(context)
    token, _, answer = (query.data or "perm::").removeprefix("perm:").rpartition(":")
    allow = answer == "y"
    key = perm_key(token)
    try:
        found = (await core.link.request("kv_get", key=key))["value"]
        if not found:
            raise RemoteError("not_found", "this request is no longer known")
        session, request_id = found
        extra: dict[str, Any] = {} if allow else {"message": "Denied from Telegram."}
        try:
            await core.link.request("permit", session=session, request_id=request_id, allow=allow, **extra)
        finally:
            with contextlib.suppress(RemoteError, ConnectionFailed):
                await core.link.request("kv_delete", key=key)  # answered (or gone): forget it
        verdict = "✅ Allowed" if allow else "🚫 Denied"
    except (RemoteError, ConnectionFailed) as exc:
        verdict = commands.error_reply(exc).text
    await query.answer(verdict[:190])
    original = getattr(query.message, "text", None)
    if isinstance(original, str):
        with contextlib.suppress(TelegramError):
            await query.edit_message_text(f"{original}\n\n{verdict}")


async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_message is not None and update.effective_chat is not None
    await forward(update, context, update.effective_message.text or "", None)


async def on_file(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    assert update.effective_chat is not None
    try:
        await receive_file(update, context)
    except (RemoteError, ConnectionFailed) as exc:
        await send_reply(context.application, update.effective_chat.id, commands.error_reply(exc))


async def receive_file(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Save a photo or document into the session's uploads/ and send it to Claude."""
    message = update.effective_message
    assert message is not None and update.effective_chat is not None
    core = core_of(context)
    chat = update.effective_chat.id
    active = await core.link.active(chat)
    if active is None:
        await context.bot.send_message(chat, render.NO_ACTIVE)
        return
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
        return
    info = await core.link.request("status", session=active)
    uploads = Path(info["cwd"]) / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    target = (uploads / name).resolve()
    if target.parent != uploads.resolve():
        await context.bot.send_message(chat, "That file name is not allowed. Nothing was sent.")
        return
    try:
        tg_file = await item.get_file()
        await tg_file.download_to_drive(target)
    except TelegramError as exc:
        await context.bot.send_message(chat, f"Could not download the file ({exc.message}). Nothing was sent.")
        return
    if target.stat().st_size > limit:
        target.unlink()
        await context.bot.send_message(chat, f"File too large; the limit is {limit // (1024 * 1024)} MB. Nothing was sent.")
        return
    await forward(update, context, message.caption or "", [str(target)])


SEND_ATTEMPT = 5.0
SEND_RETRY_EVERY = 2.0


async def forward(update: Update, context: ContextTypes.DEFAULT_TYPE, text: str, attachments: list[str] | None) -> None:
    """Send a message to the chat's session. While the supervisor does not answer, the
    same request (same idempotency key) is sent again until it does: the user is told it
    waits, and the message reaches Claude exactly once. Later updates wait behind it, so
    their order is kept; an update is confirmed to Telegram only after this returns."""
    assert update.effective_chat is not None
    core = core_of(context)
    chat = update.effective_chat.id
    key = f"tg:{context.bot.id}:{update.update_id}"
    told = False
    while True:
        try:
            reply = await commands.send(core.link, chat, text, attachments, key, timeout=SEND_ATTEMPT)
            break
        except RemoteError as exc:
            reply = commands.error_reply(exc)
            break
        except ConnectionFailed:
            if not told:
                told = True
                with contextlib.suppress(TelegramError):
                    await context.bot.send_message(chat, render.SEND_WAITING)
            await asyncio.sleep(SEND_RETRY_EVERY)
    if reply is None and told:
        reply = commands.Reply(render.SEND_ACCEPTED)
    if reply is not None:
        await send_reply(context.application, chat, reply)


async def on_unsupported(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Voice notes, videos, stickers and the like: say what is supported, send nothing."""
    assert update.effective_chat is not None
    await context.bot.send_message(update.effective_chat.id, render.UNSUPPORTED)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    log.error("handler failed", exc_info=context.error)


# delivery --------------------------------------------------------------------------------


def perm_token(event: dict[str, Any]) -> str:
    """What a permission button's callback data names: the request id (callback data is
    at most 64 bytes, so a very long id is named by its session and a hash instead)."""
    request_id = str(event.get("request_id"))
    if len(request_id) <= 48 and ":" not in request_id:
        return request_id
    return "h" + hashlib.sha256(f"{event.get('session')}\0{request_id}".encode()).hexdigest()[:40]


def perm_key(token: str) -> str:
    return f"telegram.perm.{token}"


def chat_of(event: dict[str, Any]) -> int | None:
    origin = event.get("origin")
    if isinstance(origin, str) and origin.startswith("tg:"):
        try:
            return int(origin[3:])
        except ValueError:
            return None
    return None


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


async def deliver(app: Application[Any, Any, Any, Any, Any, Any], core: Core, event: dict[str, Any]) -> None:
    """Show one event to the chat it belongs to. Returns once Telegram accepted it."""
    chat = chat_of(event)
    if chat is None:
        return
    kind = event["kind"]
    message_id = event.get("message_id")
    if kind == "state" and event.get("state") == "resuming":
        await app.bot.send_message(chat, render.resume_text(event.get("idle_for")))
    if kind in ("user", "assistant_text", "tool_use", "tool_result") and message_id is not None \
            and message_id not in core.typing:
        # the turn is running: show "typing…" (again, after a bot restart mid-turn)
        core.typing[message_id] = asyncio.create_task(keep_typing(app, chat))
    if kind == "assistant_text":
        await send_answer(app, core, event["id"], chat, event.get("text", ""))
    elif kind == "tool_use":
        log_ = core.tools.setdefault(message_id or 0, ToolLog(chat))
        await log_.add(app, render.tool_line(event.get("name"), event.get("input")))
    elif kind == "permission_request":
        token = perm_token(event)
        await core.link.request("kv_set", key=perm_key(token), value=[event["session"], event["request_id"]])
        buttons = [[InlineKeyboardButton("✅ Allow", callback_data=f"perm:{token}:y"),
                    InlineKeyboardButton("🚫 Deny", callback_data=f"perm:{token}:n")]]
        await app.bot.send_message(chat, render.permission_text(event.get("tool_name"), event.get("input")),
                                   reply_markup=InlineKeyboardMarkup(buttons))
    elif kind == "permission_resolved":
        # answered here, elsewhere (claudectl) or ended with the turn: nothing to keep
        await core.link.request("kv_delete", key=perm_key(perm_token(event)))
    elif kind in ("result", "message_failed"):
        stop_typing(core, message_id)
        tools = core.tools.pop(message_id or 0, None)
        if tools is not None:
            await tools.flush(app)
        if kind == "message_failed":
            await app.bot.send_message(chat, f"❌ Message not delivered: {event.get('reason')}")
        elif event.get("interrupted") or event.get("terminal_reason") in ("aborted_streaming", "aborted_tools"):
            await app.bot.send_message(chat, "⏹ Interrupted.")
        elif event.get("is_error"):
            detail = event.get("text") or "; ".join(event.get("errors") or []) or event.get("subtype")
            await app.bot.send_message(chat, f"⚠️ Claude reported an error: {detail}")


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
                progress_loaded = True
            if sub is not None:
                sub.discard()
            sub = await core.client.subscribe(consumer=CONSUMER, after=handled)
            log.info("delivering events after %s", "the stored cursor" if handled is None else handled)
            while True:
                event = await sub.next()
                if event is None:
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


async def poll_updates(app: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Fetch Telegram updates and handle them one at a time, confirming each (by the next
    ``getUpdates`` offset) only after its handlers finished. PTB's own poller confirms a
    batch as soon as it is queued, so a crash could lose messages Telegram already
    forgot; here an update that was not fully handled is fetched again after a restart
    (its idempotency key keeps it from reaching Claude twice)."""
    offset: int | None = None  # None: start with whatever Telegram still holds for us
    failures = 0
    while True:
        try:
            updates = await app.bot.get_updates(
                offset=offset, timeout=POLL_TIMEOUT, allowed_updates=["message", "callback_query"]
            )
            failures = 0
        except TelegramError as exc:
            failures += 1
            delay = min(30.0, 0.5 * 2**failures)
            log.warning("getUpdates failed (%s); retrying in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            continue
        for update in updates:
            await app.process_update(update)
            offset = update.update_id + 1


async def serve(config: BotConfig) -> None:
    """Run until SIGTERM/SIGINT: handlers, the update poller and the delivery loop."""
    app = build(config)
    core: Core = app.bot_data["core"]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with app:  # initialize / shutdown (HTTP client, getMe)
        await app.start()
        tasks = [asyncio.create_task(poll_updates(app)), asyncio.create_task(delivery_loop(app, core))]
        core.delivery = tasks[1]
        log.info("bot @%s running; allowed users: %s", app.bot.username,
                 ", ".join(map(str, sorted(config.allowed_users))) or "nobody")
        await stop.wait()
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
            logging.shutdown()
            os._exit(1)
        finally:
            faulthandler.cancel_dump_traceback_later()


async def _stop(app: Application[Any, Any, Any, Any, Any, Any], core: Core, tasks: list[asyncio.Task[None]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)
    await app.stop()
    await core.client.close()


def build(config: BotConfig) -> Application[Any, Any, Any, Any, Any, Any]:
    app = (
        ApplicationBuilder()
        .token(config.token)
        .base_url(config.base_url)
        .base_file_url(config.base_file_url)
        .rate_limiter(AIORateLimiter(max_retries=5))
        .updater(None)  # our own poller: see poll_updates
        .build()
    )
    app.bot_data["core"] = Core(config)
    app.add_handler(TypeHandler(Update, guard), group=-1)
    app.add_handler(CommandHandler(["start", "help"], on_help))
    app.add_handler(CommandHandler(list(commands.COMMANDS), on_command))
    app.add_handler(MessageHandler(filters.COMMAND, on_unknown))
    app.add_handler(CallbackQueryHandler(on_switch_button, pattern=r"^switch:"))
    app.add_handler(CallbackQueryHandler(on_permission_button, pattern=r"^perm:"))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, on_text))
    app.add_handler(MessageHandler(filters.PHOTO | filters.Document.ALL, on_file))
    app.add_handler(MessageHandler(
        filters.VOICE | filters.AUDIO | filters.VIDEO | filters.VIDEO_NOTE | filters.Sticker.ALL
        | filters.ANIMATION | filters.LOCATION | filters.CONTACT | filters.POLL, on_unsupported))
    app.add_error_handler(on_error)
    return app
