"""The store's tables for budgets counted on a day of any time zone: what each session
cost per quarter hour (``spend_slots``) and each cap's terms (``budget_terms``: the zone
its day is counted in, and a one-day allowance on top of it).

A day in a time zone is a range of quarter-hour slots (every zone's offset from UTC is a
whole number of quarter hours), so one record answers "what was spent today" for a user
in Berlin and one in New York alike. Slots older than ``KEEP_DAYS`` are dropped as new
ones are written (the month's figures come from ``session_daily_cost``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

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


class SpendTables:
    """The store's methods for these tables (``Store`` inherits them; it gives
    ``_read`` and ``_tx``)."""

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def spent_between(self, start: float, end: float) -> dict[str, float]:
        """What each session spent from ``start`` to ``end`` (Unix times on slot
        boundaries, as a day's midnights are)."""
        rows = self._read("SELECT session, SUM(usd) FROM spend_slots WHERE slot >= ? AND slot < ? GROUP BY session",
                          (int(start // SLOT_SECONDS), int(end // SLOT_SECONDS)))
        return {str(r[0]): float(r[1]) for r in rows}

    def budget_terms(self) -> dict[str, BudgetTerms]:
        return {str(r[0]): BudgetTerms(str(r[1]), float(r[2]), str(r[3])) for r in self._read(
            "SELECT scope, tz, extra_usd, extra_day FROM budget_terms")}

    def set_budget_zone(self, scope: str, tz: str) -> None:
        """Count the cap ``scope``'s day in ``tz`` ('' : the config's zone) from now on."""
        with self._tx() as db:
            db.execute("INSERT INTO budget_terms(scope, tz) VALUES (?, ?) ON CONFLICT(scope) DO UPDATE"
                       " SET tz = excluded.tz", (scope, tz))

    def set_allowance(self, scope: str, day: str, usd: float) -> None:
        """Let the cap ``scope`` be passed by ``usd`` on ``day`` (in its zone) only."""
        with self._tx() as db:
            db.execute("INSERT INTO budget_terms(scope, extra_usd, extra_day) VALUES (?, ?, ?) ON CONFLICT(scope)"
                       " DO UPDATE SET extra_usd = excluded.extra_usd, extra_day = excluded.extra_day",
                       (scope, usd, day))


__all__ = ["KEEP_DAYS", "SCHEMA", "SLOT_SECONDS", "BudgetTerms", "SpendTables", "record_spend"]
