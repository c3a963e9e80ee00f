"""Human wording shared by every front end (claudectl, the Telegram bot), so that they
say the same thing the same way: relative times, idle durations, a turn's duration, the
timeout range."""

from __future__ import annotations

import time

from ._messages import MAX_TIMEOUT_MINUTES, MIN_TIMEOUT_MINUTES

#: "1-120", as front ends show the idle timeout's range
TIMEOUT_RANGE_TEXT = f"{MIN_TIMEOUT_MINUTES}-{MAX_TIMEOUT_MINUTES}"


def counted(n: int, noun: str) -> str:
    """"1 keeper", "2 keepers", "0 sessions": a count with its noun agreeing."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def relative_time(ts: float | None, now: float | None = None) -> str:
    """"just now", "5m ago", "2h ago", "3d ago" (or "never")."""
    if not ts:
        return "never"
    secs = (time.time() if now is None else now) - ts
    if secs < 60:
        return "just now"
    if secs < 3600:
        return f"{int(secs / 60)}m ago"
    if secs < 86400:
        return f"{int(secs / 3600)}h ago"
    return f"{int(secs / 86400)}d ago"


def turn_duration_text(duration_ms: float) -> str:
    """How long a turn took: "4.2 s", "2 min 5 s", "1 h 6 min" (the bot's footer and
    claudectl's result line)."""
    seconds = round(duration_ms / 1000, 1)
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(round(whole / 60), 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def idle_note(idle_for: float | None) -> str:
    """" (idle for 15 min)" for a resume after a minute or more of suspension, else ""."""
    if not idle_for or idle_for < 60:
        return ""
    return f" (idle for {int(idle_for // 60)} min)"


def timeout_in_range(minutes: int) -> bool:
    return MIN_TIMEOUT_MINUTES <= minutes <= MAX_TIMEOUT_MINUTES
