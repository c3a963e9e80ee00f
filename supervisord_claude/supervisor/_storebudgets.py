"""What budgets count on a day of any time zone (``BudgetRows``): what each session spent
between two times (``spend_slots``, by quarter hour) and each cap's terms (its zone and
a one-day allowance, ``budget_terms``); the tables are ``_spend``'s.
"""

from __future__ import annotations

from ._spend import SLOT_SECONDS, BudgetTerms
from ._storespend import SpendRows


class BudgetRows(SpendRows):
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


__all__ = ["BudgetRows"]
