"""Claude's Markdown as Telegram messages: text plus entities (or HTML), cut into parts
under Telegram's limit, counted in UTF-16 code units as Telegram counts.

Plain functions with no Telegram or network I/O (moved out of ``_render``, which keeps
what the bot says).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import telegramify_markdown
from telegramify_markdown import converter as _converter

MAX_MESSAGE_UTF16 = 4096


@dataclass(frozen=True)
class Chunk:
    """One Telegram message: plain text plus entities (as Bot API dicts)."""

    text: str
    entities: list[dict[str, Any]]


def _render_config() -> telegramify_markdown.RenderConfig:
    """The converter's settings: nothing added to what Claude wrote (no emoji before
    headings), and task boxes that read as boxes (its default shows an open task as ☑️)."""
    config = telegramify_markdown.RenderConfig.isolated()
    symbols = config.markdown_symbol
    for level in range(1, 7):
        setattr(symbols, f"heading_level_{level}", "")
    symbols.task_uncompleted = "☐"
    symbols.task_completed = "☑"
    return config


_CONFIG = _render_config()


class _KeepHtml(_converter.EventWalker):
    """The converter drops HTML it does not render, so "Use the <div> element" lost its
    tag and ``List<String>`` its type: Claude's text is kept as text instead."""

    def _handle_event(self, event: Any) -> None:
        inner = event[0] if isinstance(event, tuple) and len(event) == 2 and isinstance(event[1], dict) else event
        if isinstance(inner, dict):
            if "InlineHtml" in inner and inner["InlineHtml"].strip().lower() not in ("<tg-spoiler>", "</tg-spoiler>"):
                event = {"Text": inner["InlineHtml"]}
            elif "Html" in inner:
                event = {"Text": inner["Html"]}
        super()._handle_event(event)


#: stands for "&" while the Markdown is parsed: the parser would decode ``&amp;`` to ``&``
#: (one UTF-16 unit, as "&" is, so no entity offset moves)
_AMPERSAND = "\ue000"


def convert_markdown(markdown: str) -> tuple[str, list[Any]]:
    """Claude's Markdown as Telegram text + entities, losing none of its text (``&amp;``
    stays ``&amp;``: Claude wrote it so)."""
    keep = _AMPERSAND not in markdown
    source = markdown.replace("&", _AMPERSAND) if keep else markdown
    text, events = _converter._parse(source, _converter.STANDARD_OPTIONS, latex_escape=True)
    out_text, entities, _ = _KeepHtml(_CONFIG, text).walk(events)
    if not keep:
        return out_text, entities
    for entity in entities:
        if entity.url:  # a link's target is a URL: there an entity means its character
            entity.url = html.unescape(entity.url.replace(_AMPERSAND, "&"))
    return out_text.replace(_AMPERSAND, "&"), entities


_HTML_TAGS = {"bold": "b", "italic": "i", "underline": "u", "strikethrough": "s", "code": "code", "pre": "pre"}


def markdown_html(markdown: str) -> str:
    """Claude's Markdown as Telegram HTML (for a message that is HTML anyway, such as a
    prompt): bold, italic, code and the like become tags; every other character is
    escaped, and formatting that would not nest is left out rather than refused."""
    text, entities = convert_markdown(markdown)
    at: dict[int, int] = {}  # UTF-16 offset -> index in text
    units = 0
    for i, char in enumerate(text):
        at[units] = i
        units += 2 if ord(char) > 0xFFFF else 1
    at[units] = len(text)
    spans = sorted(((at[e.offset], at[e.offset + e.length], _HTML_TAGS[e.type]) for e in entities
                    if e.type in _HTML_TAGS and e.length > 0 and e.offset in at and e.offset + e.length in at),
                   key=lambda span: (span[0], -span[1]))
    nested: list[tuple[int, int, str]] = []
    open_: list[tuple[int, int, str]] = []
    for span in spans:
        while open_ and open_[-1][1] <= span[0]:
            open_.pop()
        if open_ and open_[-1][1] < span[1]:
            continue  # would cross its outer one
        nested.append(span)
        open_.append(span)
    out: list[str] = []
    for i in range(len(text) + 1):
        out += [f"</{tag}>" for _, end, tag in reversed(nested) if end == i]  # the inner one first
        out += [f"<{tag}>" for start, _, tag in nested if start == i]
        if i < len(text):
            out.append(html.escape(text[i], quote=False))
    return "".join(out)


def markdown_chunks(markdown: str, limit: int = MAX_MESSAGE_UTF16) -> list[Chunk]:
    """Render Claude's Markdown to text + entities, split under ``limit`` UTF-16 units.

    A code block cut by a split stays a valid ``pre`` entity in both halves.
    """
    text, entities = convert_markdown(markdown)
    if not text.strip():
        return []
    chunks = telegramify_markdown.split_entities(text, entities, limit)
    return _headings_with_their_text([Chunk(part, [e.to_dict() for e in ents]) for part, ents in chunks], limit)


def answer_parts(markdown: str) -> list[Chunk]:
    """An answer as the messages it is sent in: each part of a long one ends with its
    number ("(2/4)"), for which room is kept under the limit."""
    chunks = markdown_chunks(markdown)
    if len(chunks) < 2:
        return chunks
    chunks = markdown_chunks(markdown, MAX_MESSAGE_UTF16 - PART_NUMBER_UTF16)
    return [Chunk(f"{chunk.text}\n\n({i}/{len(chunks)})", chunk.entities) for i, chunk in enumerate(chunks, 1)]


PART_NUMBER_UTF16 = 16  # "\n\n(99/99)" and then some


def _headings_with_their_text(chunks: list[Chunk], limit: int) -> list[Chunk]:
    """A part that ends with a heading (a bold line) gives it to the next part: a heading
    never stands alone at the bottom of a message, away from what it heads."""
    out = list(chunks)
    for i in range(len(out) - 1):
        text, entities = out[i].text, out[i].entities
        body = text.rstrip("\n")
        start = body.rfind("\n") + 1
        line = body[start:]
        if start == 0 or not line.strip():
            continue
        offset, length = utf16_len(text[:start]), utf16_len(line)
        heading = any(e["type"] == "bold" and e["offset"] == offset and e["length"] == length for e in entities)
        crossing = any(e["offset"] < offset < e["offset"] + e["length"] for e in entities)
        moved_text = line + "\n\n"
        shift = utf16_len(moved_text)
        if not heading or crossing or utf16_len(out[i + 1].text) + shift > limit:
            continue
        out[i] = Chunk(text[:start].rstrip("\n"), [e for e in entities if e["offset"] < offset])
        out[i + 1] = Chunk(moved_text + out[i + 1].text,
                           [{**e, "offset": e["offset"] - offset} for e in entities if e["offset"] >= offset]
                           + [{**e, "offset": e["offset"] + shift} for e in out[i + 1].entities])
    return out


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def utf16_tail(text: str, limit: int) -> str:
    """The end of ``text`` that fits in ``limit`` UTF-16 code units (Telegram's measure),
    never splitting a character."""
    if utf16_len(text) <= limit:
        return text
    units = 0
    for i in range(len(text) - 1, -1, -1):
        units += 2 if ord(text[i]) > 0xFFFF else 1
        if units > limit:
            return text[i + 1:]
    return text
