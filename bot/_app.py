"""The Telegram application: its wiring (``build``: which handler takes which update),
the guard every update passes, the update poller and ``serve``.

Nothing here owns a session. The handlers are thin: what the user sends is in
``_messages`` and ``_uploads``, button presses in ``_buttons``; messages go to the
supervisor, replies come back through ``_delivery``.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import functools
import logging
import os
import signal
import time
from typing import Any

from telegram import BotCommand, LinkPreviewOptions, Update
from telegram.error import InvalidToken, TelegramError
from telegram.ext import (
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

from . import _commands as commands
from . import _daily as daily
from . import _hosts as hosts
from . import _merge as merge
from . import _private as private
from . import _render as render
from ._buttons import (
    on_archive_button,
    on_budget_button,
    on_cancel_button,
    on_cd_pick_button,
    on_deny_button,
    on_fresh_button,
    on_keep_waiting_button,
    on_move_button,
    on_new_button,
    on_permission_button,
    on_resume_button,
    on_retry_button,
    on_rule_button,
    on_schedule_button,
    on_send_to_claude_button,
    on_sessions_page_button,
    on_setting_button,
    on_switch_button,
)
from ._config import BotConfig
from ._core import Core, core_of
from ._delivery import delivery_loop
from ._hostdelivery import host_delivery
from ._link import current_thread, current_user
from ._messages import (
    on_command,
    on_daily_command,
    on_edited,
    on_help,
    on_queue,
    on_start,
    on_text,
    on_unknown,
    on_unsupported,
    on_voice,
)
from ._pacing import SpareRateLimiter
from ._restarts import keep_running
from ._uploads import on_file, on_get

log = logging.getLogger("claude_telegram_bot")

POLL_TIMEOUT = 30
STOP_DEADLINE = 10


class TopicBot(ExtBot[Any]):
    """The bot, sending into the forum topic being handled (``current_thread``):
    a reply, an answer, a prompt or a file goes where its conversation is, without every
    call saying so."""

    @staticmethod
    def _topic(kwargs: dict[str, Any]) -> dict[str, Any]:
        thread = current_thread.get()
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


# handlers --------------------------------------------------------------------------------


async def guard(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Deny by default: only allowlisted user ids get past this (group -1) handler."""
    core = core_of(context)
    user = update.effective_user
    if user is not None and user.id in core.config.allowed_users:
        current_user.set(user.id)  # whose sessions the commands of this update see
        message = update.effective_message
        current_thread.set(message.message_thread_id if message is not None and message.is_topic_message
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
    private.clean(config.runtime_dir)  # (what a bot killed mid-way left: voice notes)
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
            # (each kept running: a bug in one host's loop must not silently stop its replies)
            delivery = functools.partial(host_delivery, app, core, host, client)
            waiting = functools.partial(hosts.send_waiting, core.link, host)
            tasks.append(asyncio.create_task(keep_running(f"host {host}'s delivery", delivery), name=f"delivery_{host}"))
            tasks.append(asyncio.create_task(keep_running(f"host {host}'s held messages", waiting),
                                             name=f"waiting_{host}"))
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
        rate_limiter=SpareRateLimiter(max_retries=5),  # (AIORateLimiter: _pacing)
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
