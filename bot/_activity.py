"""How what a session does is described: a running turn's activity ("Bash 3 min",
"waits for you"), the stall and reminder notices, and a session open in a terminal.

Plain functions with no Telegram or network I/O (moved out of ``_render``, which builds
the session lists and /status from them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from protocol import ReminderEvent, StalledEvent, relative_time


def duration_text(seconds: float | None) -> str:
    """"40 s", "6 min", "2 h 5 min"."""
    secs = round(seconds or 0)
    if secs < 60:
        return f"{secs} s"
    if secs < 3600:
        return f"{secs // 60} min"
    return f"{secs // 3600} h {secs % 3600 // 60} min"


def asked_text(fields: Mapping[str, Any]) -> str:
    """A prompt in a few words: "Bash (rm -rf build)", "a question (Pick a colour)"."""
    tool, detail = fields.get("tool_name"), fields.get("detail")
    what = {"AskUserQuestion": "a question", "ExitPlanMode": "a plan"}.get(str(tool), str(tool or "a request"))
    return f"{what} ({detail})" if detail else what


def doing_text(fields: Mapping[str, Any]) -> str:
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


def stalled_text(event: StalledEvent) -> str:
    """A turn with no output and almost no CPU (the supervisor's ``stalled`` event)."""
    tool_for = f" for {duration_text(event['tool_for'])}" if event.get("tool_for") else ""
    return (f"⚠️ Claude in '{event.get('session')}' seems stuck: {doing_text(event)}{tool_for}, and no output"
            f" and almost no CPU ({event.get('cpu_percent', 0):g}%) for {duration_text(event.get('silent_for'))}."
            " Stop it, or keep waiting?")


def reminder_text(event: ReminderEvent) -> str:
    """A prompt unanswered for a while (the supervisor's ``reminder`` event)."""
    denied_in = event.get("denied_in")
    deadline = f" Without an answer it is denied in {duration_text(denied_in)}." \
        if isinstance(denied_in, (int, float)) and denied_in > 0 else ""
    return (f"⏰ Claude in '{event.get('session')}' has been waiting {duration_text(event.get('waited'))} for your"
            f" answer to {asked_text(event)}.{deadline}")


#: a session open in Claude Code's own terminal UI (claudectl attach)
DESK = "📟"


def terminal_where(terminal: Mapping[str, Any]) -> str:
    return f"{terminal.get('tty') or 'no tty'}, pid {terminal.get('pid')}"


def waiting_text(session: str, terminal: Mapping[str, Any]) -> str:
    """What a message sent to a session open in a terminal is told."""
    return (f"{DESK} '{session}' is open in a terminal ({terminal_where(terminal)}): your message waits, and is"
            " answered as soon as that Claude exits.")


def attached_line(session: Mapping[str, Any], marker: str, now: float | None = None) -> str:
    """A /sessions line of a session open in a terminal: since when, where."""
    terminal = session.get("terminal") or {}
    persona = f" ({session['persona']})" if session.get("persona") else ""
    since = relative_time(terminal.get("since"), now) if terminal.get("since") else "now"
    return f"{marker}{DESK} `{session['name']}`{persona} - in a terminal since {since} ({terminal_where(terminal)})"
