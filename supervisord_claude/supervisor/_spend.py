"""The store's tables for budgets counted on a day of any time zone: what each session
cost per quarter hour (``spend_slots``) and each cap's terms (``budget_terms``: the zone
its day is counted in, and a one-day allowance on top of it) — their schema and the
write made with each cost; ``_storebudgets`` reads and sets them.

A day in a time zone is a range of quarter-hour slots (every zone's offset from UTC is a
whole number of quarter hours), so one record answers "what was spent today" for a user
in Berlin and one in New York alike. Slots older than ``KEEP_DAYS`` are dropped as new
ones are written (the month's figures come from ``session_daily_cost``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

SCHEMA = """
-- what each session cost per quarter hour (slot: Unix time // 900): the day of any time
-- zone is a range of slots (supervisor/_spend.py)
CREATE TABLE IF NOT EXISTS spend_slots(slot INTEGER NOT NULL, session TEXT NOT NULL, usd REAL NOT NULL,
                                       PRIMARY KEY(slot, session));
-- per cap (scope: a session's name or '*'): the zone its day is counted in ('' = the
-- config's timezone), and an allowance of extra_usd on the day extra_day (YYYY-MM-DD in
-- that zone) only
CREATE TABLE IF NOT EXISTS budget_terms(scope TEXT PRIMARY KEY, tz TEXT NOT NULL DEFAULT '',
                                        extra_usd REAL NOT NULL DEFAULT 0, extra_day TEXT NOT NULL DEFAULT '');
"""

#: seconds per slot: a quarter hour divides every time zone's offset
SLOT_SECONDS = 900
#: slots kept: a day in any zone (UTC-12 .. UTC+14) of the last few weeks
KEEP_DAYS = 40


@dataclass(frozen=True)
class BudgetTerms:
    """A cap's zone ('' for the config's) and its allowance, valid on ``extra_day`` only."""

    tz: str = ""
    extra_usd: float = 0.0
    extra_day: str = ""

    def extra_on(self, day: str) -> float:
        return self.extra_usd if self.extra_day == day else 0.0


def record_spend(db: sqlite3.Connection, now: float, spent: Mapping[str, float]) -> None:
    """Add what each session spent at ``now`` to its slot (in the caller's transaction),
    dropping slots too old to matter."""
    slot = int(now // SLOT_SECONDS)
    db.executemany("INSERT INTO spend_slots(slot, session, usd) VALUES (?, ?, ?)"
                   " ON CONFLICT(slot, session) DO UPDATE SET usd = usd + excluded.usd",
                   [(slot, session, usd) for session, usd in spent.items()])
    db.execute("DELETE FROM spend_slots WHERE slot < ?", (slot - KEEP_DAYS * 86400 // SLOT_SECONDS,))


__all__ = ["KEEP_DAYS", "SCHEMA", "SLOT_SECONDS", "BudgetTerms", "record_spend"]
