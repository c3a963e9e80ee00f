"""What the user sends, on its way to Claude: text (a reply goes to the session that
wrote what it quotes), the bot's commands, Claude Code's own /commands, voice notes; and
``send_to_claude``, which keeps a message until the supervisor takes it. Thin PTB
handlers: the logic is in the command modules and ``_requests``.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from protocol import ConnectionFailed, ErrorCode, RemoteError

from . import _commands as commands
from . import _daily as daily
from . import _hosts as hosts
from . import _merge as merge
from . import _private as private
from . import _render as render
from . import _requests as requests
from . import _talk as talk
from ._core import core_of
from ._link import origin_of
from ._reply import Reply, error_reply
from ._send import send_reply


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
        answer = error_reply(exc)
    reply, documents = (answer.reply, answer.documents) if isinstance(answer, daily.Answer) else (answer, [])
    await send_reply(context.application, chat, reply)
    for doc in documents:
        await context.bot.send_document(chat, doc.data, filename=doc.filename, caption=doc.caption or None,
                                        disable_notification=True)


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
        reply = error_reply(exc)
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
    await send_reply(context.application, chat, Reply(
        render.not_ours_text(word[:40]), buttons=[(render.SEND_TO_CLAUDE_BUTTON, f"claude:{message.message_id}")]))


async def send_held(context: ContextTypes.DEFAULT_TYPE, chat: int, message_id: int, update_id: int,
                    text: str) -> None:
    """Send a message the bot held, as if it had gone at once (its update's key: once)."""
    await send_to_claude(context, chat, message_id, update_id, text, None)


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
        await send_reply(context.application, chat, error_reply(exc))
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
        await send_reply(context.application, chat, Reply(render.deny_or_send_text(typed.session), buttons=[
            (render.DENY_WITH_REASON_BUTTON, f"deny:{typed.offer}:{message.message_id}"),
            (render.SEND_AS_MESSAGE_BUTTON, f"claude:{message.message_id}")]))
        return
    quoted = (replied.text or replied.caption) if replied is not None else None
    if quoted:  # a reply to an earlier message: Claude sees what it answers
        text = render.quoted(quoted) + text
    await forward(update, context, text, None, session=writer)
    active = await core.link.active(chat) if writer is not None else None
    if writer is not None and writer != active:
        await send_reply(context.application, chat, Reply(render.routed_text(writer, active), quiet=True))
    if typed.waiting is not None:
        await send_reply(context.application, chat, Reply(render.still_asking_text(typed.waiting),
                                                                  quiet=True))


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
            reply = await talk.send(core.link, chat, text, attachments, key, timeout=SEND_ATTEMPT,
                                        message_id=message_id, session=session,
                                        queue=core.config.while_busy == "queue" if queue is None else queue)
            break
        except (RemoteError, ConnectionFailed) as exc:
            if isinstance(exc, hosts.HostUnreachable):  # another machine: kept for it, delaying no one
                await hold_for_host(context, chat, message_id, text, attachments, key, session, exc)
                return
            # away, or stopping / restarting in place: kept and sent again until it takes it
            if isinstance(exc, RemoteError) and exc.code == ErrorCode.QUEUE_FULL:
                reply = Reply(render.QUEUE_FULL)  # said plainly: this one was not sent
                break
            if isinstance(exc, RemoteError) and exc.code == ErrorCode.BUDGET_EXCEEDED:
                # held here, with a button that raises the cap once and sends it
                reply = await daily.hold_over_budget(core.link, chat, session, text, attachments, key, message_id,
                                                     exc.message)
                break
            if isinstance(exc, RemoteError) and exc.code != ErrorCode.SHUTTING_DOWN:
                reply = error_reply(exc)
                break
            if not told:
                told = True
                with contextlib.suppress(TelegramError):
                    await context.bot.send_message(chat, render.SEND_WAITING)
            await asyncio.sleep(SEND_RETRY_EVERY)
    if reply is None and told:
        reply = Reply(render.SEND_ACCEPTED)
    if reply is not None and reply.text.startswith(render.STEERED) and deny_offer is not None \
            and message_id is not None:
        reply = Reply(reply.text, quiet=True, buttons=[
            (render.DENY_INSTEAD_BUTTON, f"deny:{deny_offer}:{message_id}")])
    if reply is not None and reply.text == render.NO_ACTIVE_OFFER and update is None:
        reply = Reply(render.HELD_NO_SESSION)  # (a held message whose session went away)
    elif reply is not None and reply.text == render.NO_ACTIVE_OFFER and attachments is None and update is not None \
            and await core.link.keep_first(chat, [update.to_dict()], text):  # sent once a session exists
        return  # (one offer, the first message's, holds them all)
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
                              "origin": origin_of(chat, message_id)}
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
    try:
        scratch = private.voice_dir(core.config.runtime_dir)  # (not /tmp: a kill -9 would leave it there)
    except OSError as exc:
        await context.bot.send_message(chat, f"Could not transcribe the voice note: {exc}. Nothing was sent.")
        return
    with scratch as tmp:
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
