"""What the bot sends to a chat: a command's ``Reply`` (its buttons' data shortened when
too long for Telegram), Markdown as entity-carrying parts, and an answer in parts that
resumes at the first part Telegram has not accepted (also after a restart).
"""

from __future__ import annotations

from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, MessageEntity, ReplyParameters
from telegram.ext import Application

from . import _markdown as markdown
from . import _render as render
from ._core import Core
from ._link import Link
from ._reply import Reply


async def buttons(link: Link, rows: list[list[tuple[str, str]]]) -> InlineKeyboardMarkup:
    """Rows of (label, ``<kind>:<argument>``) as Telegram buttons, data too long for
    Telegram's 64 bytes shortened (``Link.button_data``)."""
    return InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=await link.button_data(data))
                                  for label, data in row] for row in rows])


async def send_reply(app: Application[Any, Any, Any, Any, Any, Any], chat: int, reply: Reply) -> None:
    markup = None
    if reply.buttons:
        core: Core = app.bot_data["core"]
        markup = await buttons(core.link, [[button] for button in reply.buttons])
    if not reply.markdown:
        await app.bot.send_message(chat, reply.text, reply_markup=markup, disable_notification=reply.quiet)
        return
    chunks = markdown.markdown_chunks(reply.text)
    for i, chunk in enumerate(chunks):
        await send_chunk(app, chat, chunk, markup if i == len(chunks) - 1 else None)


async def send_chunk(app: Application[Any, Any, Any, Any, Any, Any], chat: int, chunk: markdown.Chunk,
                     markup: InlineKeyboardMarkup | None = None,
                     reply_parameters: ReplyParameters | None = None, quiet: bool = False) -> int:
    """Send one part; its Telegram message id."""
    sent = await app.bot.send_message(chat, chunk.text, entities=[MessageEntity(**e) for e in chunk.entities],
                                      reply_markup=markup, reply_parameters=reply_parameters,
                                      disable_notification=quiet)
    return int(sent.message_id)


#: the parts of answers being sent that Telegram accepted: [[event id, parts], ...] (one
#: answer per chat may be on its way at once); an older bot wrote one pair, [event id, parts]
KV_PROGRESS = "telegram.delivery.progress"


def parts_sent_of(saved: Any) -> dict[int, int]:
    """``KV_PROGRESS`` as stored (either form) → event id: parts Telegram accepted."""
    if isinstance(saved, list) and len(saved) == 2 and all(isinstance(v, int) for v in saved):
        saved = [saved]
    return {int(pair[0]): int(pair[1]) for pair in saved if isinstance(pair, list) and len(pair) == 2} \
        if isinstance(saved, list) else {}


async def _store_progress(core: Core) -> None:
    await core.link.kv_set(KV_PROGRESS, [[event_id, parts] for event_id, parts in core.parts_sent.items()])


async def send_answer(app: Application[Any, Any, Any, Any, Any, Any], core: Core, event_id: int, chat: int,
                      text: str, reply_to: int | None = None, session: str | None = None) -> int | None:
    """Send an answer's parts, resuming after the last part Telegram accepted: a part that
    failed is sent again, never one before it (also after a bot restart). The first part
    answers ``reply_to`` (the question); a long answer also comes as a document. Each
    part is remembered as ``session``'s (a reply to it goes there). Returns the Telegram
    message id of a one-part answer."""
    chunks = markdown.answer_parts(text)
    done = core.parts_sent.get(event_id, 0)
    last: int | None = None
    for i in range(done, len(chunks)):
        thread = ReplyParameters(reply_to, allow_sending_without_reply=True) if i == 0 and reply_to else None
        # one notification per answer, not one per part
        last = await send_chunk(app, chat, chunks[i], reply_parameters=thread, quiet=i > 0)
        if session is not None:
            await core.link.note_author(chat, [last], session)
        if i + 1 < len(chunks):
            core.parts_sent[event_id] = i + 1
            await _store_progress(core)
    if len(chunks) > render.LONG_ANSWER_PARTS and done < len(chunks):
        # easier to read, save or forward in one piece (sent with the last part, so a
        # restart that resumes after it does not send it twice)
        await app.bot.send_document(chat, text.encode(), filename=f"answer-{event_id}.md",
                                    caption=render.long_answer_caption(len(chunks)), disable_notification=True)
    if core.parts_sent.pop(event_id, None) is not None:
        await _store_progress(core)
    return last if len(chunks) == 1 else None
