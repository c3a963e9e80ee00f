"""What the bot says: help text, session lists, tool lines, Markdown → Telegram entities.

Plain functions with no Telegram or network I/O, so every string is unit-tested.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

import telegramify_markdown
from telegramify_markdown import converter as _converter

from protocol import (
    MAX_TIMEOUT_MINUTES,
    MIN_TIMEOUT_MINUTES,
    TIMEOUT_RANGE_TEXT,
    idle_note,
    relative_time,
    turn_cost,
    usd_text,
)

MAX_MESSAGE_UTF16 = 4096

HELP_TEXT = f"""\
Claude Sessions
/new <name> [dir] [persona] - Create a session (in dir) and make it active
/switch <name> - Make another session active (the old one keeps running)
/sessions [page] - List all sessions with status
/timeout <minutes> - Set idle timeout ({TIMEOUT_RANGE_TEXT})
/model [name] - Show or change the model (Claude restarts with its history)
/mode [ask|accept-edits|plan|bypass] - Show or change what Claude may do without asking
/archive <name> - Stop a session and hide it
/unarchive <name> - Bring an archived session back
/cancel - Interrupt Claude's current answer
/queue <text> - Send a message that waits for Claude's current answer to end
/status - Active session: what Claude does now (waits for you, runs a tool, writes, seems stuck), model, cost
/usage - Cost of this session, of all yours (and today), and today on the machine
/get <path> - A file from the session's directory
/pwd - The session's directory
/cd <dir> - Move the session (Claude starts a fresh conversation there)
/ls [path] - List a directory (within the allowed roots)
/clear - Start a fresh conversation in this session (Claude Code's /clear)
/attach - How to open this session in Claude Code at your desk (what is said there shows here)
/resume [dir] - Continue a Claude Code conversation of a directory (buttons)

Daily
/rules - What "Always allow" allowed in this session, a button to remove each
/rules add Edit <dir> - Allow edits in that directory from now on (also: Bash <command>, WebFetch <domain>)
/budget [all] [<usd>|off] - Spend today and this month; set this session's (or all sessions') daily cap
/diff [path] - The session's git changes: a summary here, the whole diff as a file
/every <when> <prompt> - Send the prompt to this session at set times (weekdays 9:00, every 2h, cron)
/schedules - List schedules, pause, resume or remove them
/tz [<zone>|default] - Your time zone (Europe/Berlin): when your schedules run and your caps' day ends
/fork <name> - A new session continuing a copy of this conversation (the original untouched)

Help
/help - This list

Anything else you send (text, photos, files) goes to the active session; a reply goes to
the session that wrote the message you reply to. While Claude is answering, what you send
joins that answer: Claude reads it at its next step (↪); /queue waits instead.

While Claude works you are told, once and quietly, when a question or request of its has
long waited for your answer (while it can still be answered), and when a turn seems stuck
(no output and almost no CPU for 5 minutes), with buttons to stop it or keep waiting."""

#: the "/" menu (setMyCommands): every command with one line
MENU: list[tuple[str, str]] = [
    ("new", "Create a session and make it active: /new <name> [dir] [persona]"),
    ("switch", "Make another session active: /switch <name>"),
    ("sessions", "List sessions (🟢 working or ready, ⏳ waits for you, ⚪ suspended)"),
    ("status", "The active session: what Claude does now, model, cost"),
    ("cancel", "Interrupt Claude's current answer"),
    ("queue", "Send a message that waits for the current answer to end: /queue <text>"),
    ("model", "Show or change the model"),
    ("mode", "Show or change what Claude may do without asking"),
    ("timeout", "Set the idle timeout in minutes"),
    ("archive", "Stop a session and hide it"),
    ("unarchive", "Bring an archived session back: /unarchive <name>"),
    ("usage", "What Claude cost: this session, all yours (and today), the machine today"),
    ("get", "A file from the session's directory: /get <path>"),
    ("pwd", "The session's directory"),
    ("cd", "Move the session to another directory: /cd <dir>"),
    ("ls", "List a directory: /ls [path]"),
    ("clear", "Start a fresh conversation in this session"),
    ("rules", "Always-allow rules of this session (remove one; /rules add Edit <dir>)"),
    ("budget", "Spend today and this month; daily caps: /budget [all] <usd>"),
    ("diff", "The session's git changes (staged, not staged) and the diff: /diff [path]"),
    ("every", "Send a prompt at set times: /every weekdays 9:00 <prompt>"),
    ("schedules", "List, pause or remove schedules"),
    ("tz", "Your time zone, for schedules and daily caps: /tz Europe/Berlin"),
    ("fork", "A new session continuing a copy of this conversation: /fork <name>"),
    ("attach", "How to open this session in Claude Code at your desk"),
    ("resume", "Continue a Claude Code conversation of a directory: /resume [dir]"),
    ("hosts", "The machines the bot reaches (local and [hosts.*]), their state and versions"),
    ("help", "Every command"),
]

START_TEXT = ("Hi! I connect you to Claude Code sessions that keep running on this machine.\n\n"
              "Start one with /new <name> (e.g. /new work), then just write: every message goes to"
              " the active session, and Claude's answers come back here. /help lists everything.")
NEW_SESSION_BUTTON = "Create session '{name}'"
#: the session a first message creates when the user presses the button
FIRST_SESSION = "main"
NO_ACTIVE = "No active session. Use /new <name> to start one."
NO_ACTIVE_OFFER = "No active session yet. Create one and send this message to it?"
#: an answer longer than this many messages also comes as a Markdown document
LONG_ANSWER_PARTS = 3


def quoted(text: str, limit: int = 2000) -> str:
    """The message a user replied to, as Claude gets it before their text."""
    body = text if len(text) <= limit else text[:limit] + "…"
    return "\n".join("> " + line for line in body.splitlines()) + "\n\n"


def labelled(session: str, text: str) -> str:
    """An answer from a session that is not the chat's active one says whose it is."""
    return f"**[{session}]**\n\n{text}"


def tagged(label: str | None, line: str) -> str:
    """A notice (an error, a footer, "Interrupted") headed by its session's ``[name]``
    when that is not the chat's active session."""
    return f"{label} {line}" if label else line


def follow_up(text: str) -> str:
    """A turn Claude began on its own (e.g. when a background task ended): not an answer."""
    return f"🔔 _Claude's follow-up (not an answer to a message of yours)_\n\n{text}"


def routed_text(writer: str, active: str | None) -> str:
    """A reply went to the session that wrote the quoted message, not the chat's own."""
    stays = f" ('{active}' stays this chat's session)" if active else ""
    return f"↪️ Sent to '{writer}', the session that wrote the message you replied to{stays}."


def still_asking_text(session: str) -> str:
    """Text went elsewhere while another session's question or request waits."""
    return (f"❓ Claude's request in '{session}' still waits for your answer: use its buttons, or reply to it"
            " with your own words.")


DENY_WITH_REASON_BUTTON = "🚫 Deny, with this as the reason"
SEND_AS_MESSAGE_BUTTON = "Send it to Claude as a new message"


def deny_or_send_text(session: str) -> str:
    """Text typed while a tool call waits: the user says which it is."""
    return (f"Claude in '{session}' waits for your answer to its request. Is this the reason to deny it, or a"
            " new message (it would wait until the request is answered)?")


WHOLE_CAPTION = "All of what Claude asks to do (the prompt above shows only part of it)."
COMMAND_DONE = "✅ Done: Claude Code ran the command (it has nothing to show)."
SEND_TO_CLAUDE_BUTTON = "Send it to Claude"
HELD_GONE = "That message is no longer held here (too old); send it again."
HELD_NO_SESSION = "Not sent: this chat has no active session any more. Use /new <name>, then send it again."


def claude_commands_text(names: list[str]) -> str:
    """/help's list of Claude Code's own commands, which are passed to Claude as typed."""
    return ("Claude Code's commands (sent to Claude as you type them)\n"
            + " ".join(f"/{name}" for name in names)
            + "\nAny other /word: a button offers to send it to Claude.")


def not_ours_text(word: str) -> str:
    return f"/{word} is not a command of this bot or of Claude Code. Send it to Claude as it is?"


FRESH_BUTTON = "Start a fresh conversation in '{name}'"
RETRY_BUTTON = "🔁 Retry"
RETRY_SENT = "🔁 Sent again."
RETRY_DONE = "It was already sent again."
RETRY_GONE = "I no longer hold that message (too old, or too long to keep over a restart); please send it again."
#: how the supervisor words the failure of a message that waited for a resume that failed
RESUME_FAILED_PREFIX = "Resume failed: "
#: how it words a message the user chose to drop (/cancel's "drop" button)
DROPPED_PREFIX = "dropped at your request"


def resume_failed_text(name: str, detail: str | None) -> str:
    why = f" ({detail})" if detail else ""
    return (f"❌ Session '{name}' could not resume its conversation{why}. Your message was not sent."
            " You can start a fresh conversation in the same session and send it there (the old one"
            " is not deleted, but Claude will not remember it), or /archive it.")


def error_text(detail: str) -> str:
    return f"⚠️ Claude reported an error: {detail}"


EDITED = "✏️ Edits are not passed on to Claude (it already has the first version). Send the new text as a new message."
NO_SESSIONS = "No sessions. Use /new <name> to create one."
TIMEOUT_RANGE = f"Timeout must be between {MIN_TIMEOUT_MINUTES} and {MAX_TIMEOUT_MINUTES} minutes"
TIMEOUT_INVALID = "Invalid number. Usage: /timeout <minutes>"
REFUSAL = "Sorry, this bot is private."
SEND_WAITING = "⏳ The supervisor is not answering right now. Your message is kept and will be sent once it is back."
SEND_ACCEPTED = "✅ The supervisor is back; your message was sent."
QUEUE_FULL = ("⚠️ Not sent: Claude already has as many messages waiting in this session as it takes."
              " Send it again once it has answered some of them (or /cancel to stop and drop them).")
ALREADY_DONE = "Already done: each button works once."
BUTTON_EXPIRED = "This button has expired (the bot no longer knows what it was for). Send the command again."
STALE_PROMPT = "This request is no longer pending (answered, timed out, or Claude stopped)."
UNSUPPORTED = ("I can't pass this kind of message to Claude yet. Send text, photos, files"
               " (documents) or voice notes; videos and stickers are not supported.")
VOICE_NOT_SET_UP = ("Voice notes are not set up here: the bot needs a transcription command"
                    " ([telegram] voice_command in the config, e.g. whisper.cpp's CLI). Nothing was sent.")


def session_line(session: dict[str, Any], active: str | None, now: float | None = None) -> str:
    """``{marker}{🟢|⏳|⚪|❌} `name` (persona) - 5m ago`` as Markdown: 🟢 Claude is working
    or ready, ⏳ it waits for the user's answer (``pending``, or the session's ``activity``),
    ⚪ suspended, ❌ its conversation could not be resumed. A session without a persona
    shows none; one whose turn runs says what it does ("· Bash 3 min")."""
    marker = "→ " if session["name"] == active else ""
    if session.get("state") == "attached":
        return attached_line(session, marker, now)
    activity = session.get("activity") or {}
    waits = session.get("pending") or activity.get("doing") == "waiting"
    dot = ("⏳" if waits else "🟢") if session.get("live") else \
        "❌" if session.get("state") == "failed" else "⚪"
    persona = f" ({session['persona']})" if session.get("persona") else ""
    doing = f" · {activity_brief(activity)}" if activity else ""
    return f"{marker}{dot} `{session['name']}`{persona} - {relative_time(session.get('last_active'), now)}{doing}"


def duration_text(seconds: float | None) -> str:
    """"40 s", "6 min", "2 h 5 min"."""
    secs = round(seconds or 0)
    if secs < 60:
        return f"{secs} s"
    if secs < 3600:
        return f"{secs // 60} min"
    return f"{secs // 3600} h {secs % 3600 // 60} min"


def asked_text(fields: dict[str, Any]) -> str:
    """A prompt in a few words: "Bash (rm -rf build)", "a question (Pick a colour)"."""
    tool, detail = fields.get("tool_name"), fields.get("detail")
    what = {"AskUserQuestion": "a question", "ExitPlanMode": "a plan"}.get(str(tool), str(tool or "a request"))
    return f"{what} ({detail})" if detail else what


def doing_text(fields: dict[str, Any]) -> str:
    """What a turn was doing, of a ``stalled`` event or a stalled activity."""
    if (fields.get("was") or fields.get("doing")) == "tool":
        detail = f" ({fields['detail']})" if fields.get("detail") else ""
        return f"running {fields.get('tool')}{detail}"
    return "writing"


def activity_brief(activity: dict[str, Any]) -> str:
    """What a running turn does, in a word or two: "waits for you", "Bash 3 min"."""
    doing, seconds = activity.get("doing"), duration_text(activity.get("seconds"))
    if doing == "waiting":
        return f"waits for you ({seconds})"
    if doing == "stalled":
        return f"⚠️ seems stuck ({seconds})"
    if doing == "tool":  # (Markdown: a tool name like mcp__x__y stays as it is)
        return f"`{activity.get('tool')}` {seconds}"
    return f"writing ({seconds})"


def activity_text(activity: dict[str, Any]) -> str:
    """What a running turn does now and for how long, in a sentence (for /status)."""
    doing, seconds = activity.get("doing"), duration_text(activity.get("seconds"))
    cpu = activity.get("cpu_percent")
    cpu_note = f", CPU {cpu:.0f}%" if isinstance(cpu, (int, float)) else ""
    if doing == "waiting":
        more = f" (and {activity['waiting'] - 1} more)" if (activity.get("waiting") or 1) > 1 else ""
        return f"⏳ waiting for your answer to {asked_text(activity)}{more}, for {seconds}"
    if doing == "stalled":
        return (f"⚠️ seems stuck: no output and almost no CPU for {seconds}, while {doing_text(activity)}."
                " /cancel stops it")
    if doing == "tool":
        detail = f" ({activity['detail']})" if activity.get("detail") else ""
        return f"running {activity.get('tool')}{detail} for {seconds}{cpu_note}"
    return f"writing, for {seconds}{cpu_note}"


INTERRUPT_BUTTON = "⏹ Stop it"
KEEP_WAITING_BUTTON = "⏳ Keep waiting"
KEPT_WAITING = "Keeping on waiting."


def stalled_text(event: dict[str, Any]) -> str:
    """A turn with no output and almost no CPU (the supervisor's ``stalled`` event)."""
    tool_for = f" for {duration_text(event['tool_for'])}" if event.get("tool_for") else ""
    return (f"⚠️ Claude in '{event.get('session')}' seems stuck: {doing_text(event)}{tool_for}, and no output"
            f" and almost no CPU ({event.get('cpu_percent', 0):g}%) for {duration_text(event.get('silent_for'))}."
            " Stop it, or keep waiting?")


def reminder_text(event: dict[str, Any]) -> str:
    """A prompt unanswered for a while (the supervisor's ``reminder`` event)."""
    denied_in = event.get("denied_in")
    deadline = f" Without an answer it is denied in {duration_text(denied_in)}." \
        if isinstance(denied_in, (int, float)) and denied_in > 0 else ""
    return (f"⏰ Claude in '{event.get('session')}' has been waiting {duration_text(event.get('waited'))} for your"
            f" answer to {asked_text(event)}.{deadline}")


def sessions_markdown(sessions: list[dict[str, Any]], active: str | None, now: float | None = None) -> str:
    if not sessions:
        return NO_SESSIONS
    return "\n".join(session_line(s, active, now) for s in sessions)


def page_text(page: int, pages: int, total: int) -> str:
    """The line under a page of a long list."""
    return f"Page {page} of {pages} ({total} sessions)"


def page_button(page: int, before: bool) -> str:
    return f"◀ Page {page}" if before else f"Page {page} ▶"


def minutes_text(seconds: float) -> str:
    """"1 minute", "15 minutes", "1.5 minutes"."""
    minutes = seconds / 60
    shown = f"{minutes:g}" if minutes != int(minutes) else str(int(minutes))
    return f"{shown} minute" + ("" if shown == "1" else "s")


def timeout_text(seconds: float) -> str:
    return f"Idle timeout: {minutes_text(seconds)}\n\nUsage: /timeout <minutes> ({TIMEOUT_RANGE_TEXT})"


def counted(n: int, word: str) -> str:
    """"1 line", "2 lines"."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def messages_text(n: int) -> str:
    return counted(n, "message")


#: the quiet acknowledgement of a message that joined the answer Claude is writing
STEERED = "↪ Added to the running answer"
#: under it, while a tool call waits for the user: the text as the reason to deny it
DENY_INSTEAD_BUTTON = "🚫 Use it to deny the request instead"


def queued_text(ahead: int) -> str:
    """What a message sent while Claude is busy is told."""
    return f"⏳ Queued — {ahead} ahead of it." if ahead > 1 else "⏳ Queued — Claude answers it after the current one."


def footer_text(result: dict[str, Any]) -> str | None:
    """A quiet line after a finished turn: what it cost, how long it took, how many turns."""
    parts = []
    cost = turn_cost(result)  # (the turn's own, as claudectl shows it)
    if cost is not None:
        parts.append(usd_text(cost))
    if isinstance(result.get("duration_ms"), (int, float)):
        parts.append(f"{result['duration_ms'] / 1000:.1f} s")
    turns = result.get("num_turns")
    if isinstance(turns, int):
        parts.append(f"{turns} turn" + ("" if turns == 1 else "s"))
    steered = result.get("steered")
    if isinstance(steered, list) and steered:  # messages that joined this answer (↪)
        parts.append(f"↪ {messages_text(len(steered))} added")
    return " · ".join(parts) if parts else None


MODE_HELP = ("ask: Claude asks before anything its rules do not allow (buttons here)\n"
             "accept-edits: file edits run without asking; the rest is asked\n"
             "plan: Claude only plans, then asks you to approve the plan\n"
             "bypass: nothing is asked (only if the supervisor allows it)")


def name_taken_text(name: str) -> str:
    """/new of a name another user's session has (names are one namespace; theirs stays private)."""
    return f"The name '{name}' cannot be used (session names are shared by everyone here). Pick another."


def unknown_model_text(name: str, aliases: tuple[str, ...]) -> str:
    return (f"⚠️ Claude Code does not know the model '{name}'; nothing was changed. Pick one, or give a full"
            f" model name (e.g. claude-sonnet-4-5). Known: {', '.join(aliases)}.")


def mode_text(mode: str | None) -> str:
    head = f"Permission mode: {mode}\n\n" if mode else ""
    return f"{head}{MODE_HELP}\n\nUsage: /mode <ask|accept-edits|plan|bypass>"


def resume_text(idle_for: float | None) -> str:
    return f"Resuming session{idle_note(idle_for)}..."


def tool_line(name: str | None, tool_input: Any) -> str:
    """A compact one-liner for a tool call, e.g. ``🔧 Bash: ls -la``."""
    detail = ""
    questions = tool_input.get("questions") if isinstance(tool_input, dict) else None
    if isinstance(questions, list):  # AskUserQuestion: what it asks (its prompt has the options)
        detail = " / ".join(str(q.get("question")) for q in questions if isinstance(q, dict))
    elif isinstance(tool_input, dict):  # (ExitPlanMode: its plan, shown in full in its prompt)
        for key in ("command", "file_path", "path", "pattern", "url", "query", "description", "plan"):
            if isinstance(tool_input.get(key), str):
                detail = tool_input[key]
                break
        else:
            detail = json.dumps(tool_input, ensure_ascii=False) if tool_input else ""
    detail = " ".join(detail.split())
    if len(detail) > 120:
        detail = detail[:119] + "…"
    return f"🔧 {name or 'tool'}: {detail}" if detail else f"🔧 {name or 'tool'}"


def model_text(session: dict[str, Any]) -> str:
    """The model a session runs: what Claude said at its last start, and what was asked
    for when that differs ("default" alone until Claude has started)."""
    asked, running = session.get("model"), session.get("claude_model")
    if running and asked and asked != running:
        return f"{running} (asked for {asked})"
    if running:
        return f"{running}" + ("" if asked else " (Claude's default)")
    return asked or "default"


def state_text(session: dict[str, Any]) -> str:
    """A session's state as the user sees it: a turn held up by a question or a prompt
    waits for them."""
    if session.get("pending"):
        return "waiting for your answer"
    return str(session["state"])


def status_text(session: dict[str, Any]) -> str:
    now = f"Now: {activity_text(session['activity'])}\n" if session.get("activity") else ""
    return (
        f"Session: {session['name']}\n"
        f"State: {state_text(session)}\n{now}"
        f"Model: {model_text(session)}\n"
        f"Permission mode: {session.get('mode') or 'ask'}\n"
        f"Persona: {session.get('persona') or 'default'}\n"
        f"Idle timeout: {minutes_text(session['idle_timeout'])}\n"
        f"Cost so far: ${session.get('cost_usd') or 0:.4f}"
        + (f"\n{DESK} Open in a terminal ({terminal_where(session['terminal'])})" if session.get("terminal") else "")
    )


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


def long_answer_caption(parts: int) -> str:
    return f"📄 The whole answer ({parts} parts) in one file"


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


#: a session open in Claude Code's own terminal UI (claudectl attach)
DESK = "📟"


def terminal_where(terminal: dict[str, Any]) -> str:
    return f"{terminal.get('tty') or 'no tty'}, pid {terminal.get('pid')}"


def waiting_text(session: str, terminal: dict[str, Any]) -> str:
    """What a message sent to a session open in a terminal is told."""
    return (f"{DESK} '{session}' is open in a terminal ({terminal_where(terminal)}): your message waits, and is"
            " answered as soon as that Claude exits.")


def attached_line(session: dict[str, Any], marker: str, now: float | None = None) -> str:
    """A /sessions line of a session open in a terminal: since when, where."""
    terminal = session.get("terminal") or {}
    persona = f" ({session['persona']})" if session.get("persona") else ""
    since = relative_time(terminal.get("since"), now) if terminal.get("since") else "now"
    return f"{marker}{DESK} `{session['name']}`{persona} - in a terminal since {since} ({terminal_where(terminal)})"
