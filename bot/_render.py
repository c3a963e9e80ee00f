"""What the bot says: help text, session lists, /status, tool lines, notices and replies.

Plain functions with no Telegram or network I/O, so every string is unit-tested. How
Claude's Markdown becomes Telegram messages is in ``_markdown``; how a running turn is
described, in ``_activity``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from protocol import (
    MAX_TIMEOUT_MINUTES,
    MIN_TIMEOUT_MINUTES,
    TIMEOUT_RANGE_TEXT,
    ResultEvent,
    idle_note,
    permission_mode_of,
    relative_time,
    turn_cost,
    turn_duration_text,
    usd_text,
)

from ._activity import DESK, activity_brief, activity_text, attached_line, terminal_where

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
    ("sessions", "List sessions (🟢 working or ready, ⏳ waits for you, 📟 in a terminal, ⚪ suspended,"
                 " ❌ stopped by an error: why, and what to do)"),
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


def interrupted_text(why: str | None = None) -> str:
    """A turn that ended interrupted; ``why``: what the supervisor said of it (the user
    did not ask for it)."""
    return f"⏹ Interrupted: {why}" if why else "⏹ Interrupted."


def trouble_text(message: str) -> str:
    """What went wrong with Claude's process or the session's keeper (an ``error`` event)."""
    return f"⚠️ {message}"


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


#: what a message to a failed session does (the supervisor resumes its conversation)
NEXT_MESSAGE_RETRIES = "your next message starts Claude again, with the conversation"
#: what happened to a session that failed, by its ``failed`` state's reason (``{detail}``:
#: the state's own words, if any), and what the user can do about it
FAILURES: dict[str, tuple[str, str]] = {
    "resume-failed": ("its conversation could not be resumed{detail}",
                      "/switch to it and /clear for a fresh conversation (Claude will not remember the old"
                      " one), or /archive it"),
    "crashed": ("Claude stopped unexpectedly{detail}", NEXT_MESSAGE_RETRIES),
    "killed": ("its keeper process was killed{detail}", NEXT_MESSAGE_RETRIES),
    "internal-error": ("a bug in its keeper stopped it{detail}", NEXT_MESSAGE_RETRIES),
}


def failure_text(failure: tuple[str, str | None] | None) -> str:
    """Why a session failed, in words, and what to do next ("Claude stopped unexpectedly
    (…): your next message starts Claude again, …"), as Markdown; a reason this bot does
    not know is shown as it came; unknown (the bot did not see it fail) said so."""
    if failure is None:
        return f"stopped by an error: {NEXT_MESSAGE_RETRIES}"
    reason, detail = failure
    # (in a code span: the process's words are not Markdown)
    plain = (detail or "").replace("`", "'")
    said = f" (`{plain}`)" if plain else ""
    what, then = FAILURES.get(reason, (f"failed ({reason or 'no reason given'}){{detail}}", NEXT_MESSAGE_RETRIES))
    return f"{what.format(detail=said)}: {then}"


def session_line(session: Mapping[str, Any], active: str | None, now: float | None = None) -> str:
    """``{marker}{🟢|⏳|⚪|❌} `name` (persona) - 5m ago`` as Markdown: 🟢 Claude is working
    or ready, ⏳ it waits for the user's answer (``pending``, or the session's ``activity``),
    ⚪ suspended, ❌ it failed — followed by why and what to do (its ``failure``: the
    reason and detail of its ``failed`` state, kept by the bot). A session without a
    persona shows none; one whose turn runs says what it does ("· Bash 3 min")."""
    marker = "→ " if session["name"] == active else ""
    if session.get("state") == "attached":
        return attached_line(session, marker, now)
    activity = session.get("activity") or {}
    waits = session.get("pending") or activity.get("doing") == "waiting"
    failed = not session.get("live") and session.get("state") == "failed"
    dot = ("⏳" if waits else "🟢") if session.get("live") else "❌" if failed else "⚪"
    persona = f" ({session['persona']})" if session.get("persona") else ""
    doing = f" · {activity_brief(activity)}" if activity else ""
    why = f" · {failure_text(session.get('failure'))}" if failed else ""
    return (f"{marker}{dot} `{session['name']}`{persona} - {relative_time(session.get('last_active'), now)}"
            f"{doing}{why}")


def sessions_markdown(sessions: Sequence[Mapping[str, Any]], active: str | None, now: float | None = None) -> str:
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


def footer_text(result: ResultEvent) -> str | None:
    """A quiet line after a finished turn: what it cost, how long it took, how many turns."""
    parts = []
    cost = turn_cost(result)  # (the turn's own, as claudectl shows it)
    if cost is not None:
        parts.append(usd_text(cost))
    duration_ms = result.get("duration_ms")
    if isinstance(duration_ms, (int, float)):
        parts.append(turn_duration_text(duration_ms))  # (as claudectl words it)
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


def model_text(session: Mapping[str, Any]) -> str:
    """The model a session runs: what Claude said at its last start, and what was asked
    for when that differs ("default" alone until Claude has started)."""
    asked, running = session.get("model"), session.get("claude_model")
    if running and asked and asked != running:
        return f"{running} (asked for {asked})"
    if running:
        return f"{running}" + ("" if asked else " (Claude's default)")
    return asked or "default"


def state_text(session: Mapping[str, Any]) -> str:
    """A session's state as the user sees it: a turn held up by a question or a prompt
    waits for them."""
    if session.get("pending"):
        return "waiting for your answer"
    if session.get("state") == "failed" and "failure" in session:  # (Markdown: in plain text too)
        return f"failed — {failure_text(session['failure']).replace('`', '')}"
    return str(session["state"])


def status_text(session: Mapping[str, Any]) -> str:
    now = f"Now: {activity_text(session['activity'])}\n" if session.get("activity") else ""
    return (
        f"Session: {session['name']}\n"
        f"State: {state_text(session)}\n{now}"
        f"Model: {model_text(session)}\n"
        f"Permission mode: {permission_mode_of(session) or 'ask'}\n"
        f"Persona: {session.get('persona') or 'default'}\n"
        f"Idle timeout: {minutes_text(session['idle_timeout'])}\n"
        f"Cost so far: ${session.get('cost_usd') or 0:.4f}"
        + (f"\n{DESK} Open in a terminal ({terminal_where(session['terminal'])})" if session.get("terminal") else "")
    )


def long_answer_caption(parts: int) -> str:
    return f"📄 The whole answer ({parts} parts) in one file"


