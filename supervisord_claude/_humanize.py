"""Human-readable renderings shared by claudectl and the bot."""

from __future__ import annotations

import time


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
