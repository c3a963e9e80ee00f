"""What Claude cost and what may be spent (``SpendRows``): cost per local day, per
session and in all, the daily caps the user set, and the schedules.
"""

from __future__ import annotations

from typing import Any

from ._schedules import Schedule
from ._storeevents import EventRows
from ._storerecords import _day


class SpendRows(EventRows):
    def cost_on(self, when: float) -> float:
        """What Claude cost on the local day of ``when`` (Unix time), in USD."""
        rows = self._read("SELECT usd FROM daily_cost WHERE day=?", (_day(when),))
        return float(rows[0][0]) if rows else 0.0

    def session_costs_on(self, when: float) -> dict[str, float]:
        """What Claude cost in each session that spent anything on the local day of
        ``when``, in USD."""
        rows = self._read("SELECT session, usd FROM session_daily_cost WHERE day=? ORDER BY session", (_day(when),))
        return {str(r[0]): float(r[1]) for r in rows}

    def session_costs(self, since_day: str) -> dict[str, float]:
        """What each session cost from the local day ``since_day`` (YYYY-MM-DD) on."""
        return {str(r[0]): float(r[1]) for r in self._read(
            "SELECT session, SUM(usd) FROM session_daily_cost WHERE day >= ? GROUP BY session", (since_day,))}

    def cost_since(self, since_day: str) -> float:
        """What all sessions cost from the local day ``since_day`` on."""
        rows = self._read("SELECT SUM(usd) FROM daily_cost WHERE day >= ?", (since_day,))
        return float(rows[0][0] or 0.0) if rows else 0.0

    def budgets(self) -> dict[str, float]:
        """The caps the user set: ``{session or '*': usd}``."""
        return {str(r[0]): float(r[1]) for r in self._read("SELECT scope, usd FROM budgets")}

    def set_budget(self, scope: str, usd: float | None) -> None:
        with self._tx() as db:
            if usd is None:
                db.execute("DELETE FROM budgets WHERE scope=?", (scope,))
            else:
                db.execute("INSERT INTO budgets(scope, usd) VALUES (?, ?) ON CONFLICT(scope) DO UPDATE"
                           " SET usd = excluded.usd", (scope, usd))

    def schedules(self) -> list[Schedule]:
        return [Schedule(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), bool(r[5]), float(r[6]),
                         r[7], r[8], float(r[9])) for r in self._read(
            "SELECT id, session, cron, tz, prompt, paused, next_run, last_run, origin, created FROM schedules"
            " ORDER BY id")]

    def add_schedule(self, session: str, cron: str, tz: str, prompt: str, next_run: float, origin: str | None,
                     created: float) -> int:
        with self._tx() as db:
            cur = db.execute("INSERT INTO schedules(session, cron, tz, prompt, next_run, origin, created)"
                             " VALUES (?, ?, ?, ?, ?, ?, ?)", (session, cron, tz, prompt, next_run, origin, created))
            return int(cur.lastrowid or 0)

    def update_schedule(self, schedule_id: int, **fields: Any) -> bool:
        assert set(fields) <= {"paused", "next_run", "last_run"}
        with self._tx() as db:
            cur = db.execute(f"UPDATE schedules SET {', '.join(f'{k}=?' for k in fields)} WHERE id=?",
                             (*fields.values(), schedule_id))
            return cur.rowcount > 0

    def remove_schedule(self, schedule_id: int) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM schedules WHERE id=?", (schedule_id,)).rowcount > 0
