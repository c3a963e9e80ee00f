"""What the bot says: help text, session lists, tool lines, Markdown → Telegram entities.

Plain functions with no Telegram or network I/O, so every string is unit-tested.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import telegramify_markdown

from protocol import MAX_TIMEOUT_MINUTES, MIN_TIMEOUT_MINUTES, TIMEOUT_RANGE_TEXT, idle_note, relative_time

MAX_MESSAGE_UTF16 = 4096

HELP_TEXT = f"""\
Claude Sessions
/new <name> [persona] - Create a session and make it active
/switch <name> - Make another session active (the old one keeps running)
/sessions - List all sessions with status
/timeout <minutes> - Set idle timeout ({TIMEOUT_RANGE_TEXT})
/model [name] - Show or change the model (Claude restarts with its history)
/mode [ask|accept-edits|plan|bypass] - Show or change what Claude may do without asking
/archive <name> - Stop a session and hide it
/cancel - Interrupt Claude's current answer
/status - Active session, state, model and cost

Help
/help - This list

Anything else you send (text, photos, files) goes to the active session."""

NO_ACTIVE = "No active session. Use /new <name> to start one."
NO_SESSIONS = "No sessions. Use /new <name> to create one."
TIMEOUT_RANGE = f"Timeout must be between {MIN_TIMEOUT_MINUTES} and {MAX_TIMEOUT_MINUTES} minutes"
TIMEOUT_INVALID = "Invalid number. Usage: /timeout <minutes>"
REFUSAL = "Sorry, this bot is private."
SEND_WAITING = "⏳ The supervisor is not answering right now. Your message is kept and will be sent once it is back."
SEND_ACCEPTED = "✅ The supervisor is back; your message was sent."
STALE_PROMPT = "This request is no longer pending (answered, timed out, or Claude stopped)."
UNSUPPORTED = ("I can't pass this kind of message to Claude yet. Send text, photos or files"
               " (documents); voice notes, videos and stickers are not supported.")


def session_line(session: dict[str, Any], active: str | None, now: float | None = None) -> str:
    """``{marker}{🟢|⚪} `name` (persona) - 5m ago`` as Markdown."""
    marker = "→ " if session["name"] == active else ""
    dot = "🟢" if session.get("live") else "⚪"
    persona = session.get("persona") or "default"
    return f"{marker}{dot} `{session['name']}` ({persona}) - {relative_time(session.get('last_active'), now)}"


def sessions_markdown(sessions: list[dict[str, Any]], active: str | None, now: float | None = None) -> str:
    if not sessions:
        return NO_SESSIONS
    return "\n".join(session_line(s, active, now) for s in sessions)


def timeout_text(seconds: float) -> str:
    minutes = seconds / 60
    shown = f"{minutes:g}" if minutes != int(minutes) else str(int(minutes))
    return f"Idle timeout: {shown} minutes\n\nUsage: /timeout <minutes> ({TIMEOUT_RANGE_TEXT})"


MODE_HELP = ("ask: Claude asks before anything its rules do not allow (buttons here)\n"
             "accept-edits: file edits run without asking; the rest is asked\n"
             "plan: Claude only plans, then asks you to approve the plan\n"
             "bypass: nothing is asked (only if the supervisor allows it)")


def mode_text(mode: str | None) -> str:
    head = f"Permission mode: {mode}\n\n" if mode else ""
    return f"{head}{MODE_HELP}\n\nUsage: /mode <ask|accept-edits|plan|bypass>"


def resume_text(idle_for: float | None) -> str:
    return f"Resuming session{idle_note(idle_for)}..."


def tool_line(name: str | None, tool_input: Any) -> str:
    """A compact one-liner for a tool call, e.g. ``🔧 Bash: ls -la``."""
    detail = ""
    if isinstance(tool_input, dict):
        for key in ("command", "file_path", "path", "pattern", "url", "query", "description"):
            if isinstance(tool_input.get(key), str):
                detail = tool_input[key]
                break
        else:
            detail = json.dumps(tool_input, ensure_ascii=False) if tool_input else ""
    detail = " ".join(detail.split())
    if len(detail) > 120:
        detail = detail[:119] + "…"
    return f"🔧 {name or 'tool'}: {detail}" if detail else f"🔧 {name or 'tool'}"


def status_text(session: dict[str, Any]) -> str:
    return (
        f"Session: {session['name']}\n"
        f"State: {session['state']}\n"
        f"Model: {session.get('model') or 'default'}\n"
        f"Permission mode: {session.get('mode') or 'ask'}\n"
        f"Persona: {session.get('persona') or 'default'}\n"
        f"Idle timeout: {int(session['idle_timeout'] // 60)} min\n"
        f"Cost so far: ${session.get('cost_usd') or 0:.4f}"
    )


@dataclass(frozen=True)
class Chunk:
    """One Telegram message: plain text plus entities (as Bot API dicts)."""

    text: str
    entities: list[dict[str, Any]]


def markdown_chunks(markdown: str, limit: int = MAX_MESSAGE_UTF16) -> list[Chunk]:
    """Render Claude's Markdown to text + entities, split under ``limit`` UTF-16 units.

    A code block cut by a split stays a valid ``pre`` entity in both halves.
    """
    text, entities = telegramify_markdown.convert(markdown)
    if not text.strip():
        return []
    chunks = telegramify_markdown.split_entities(text, entities, limit)
    return [Chunk(part, [e.to_dict() for e in ents]) for part, ents in chunks]


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
