"""Budgets: what Claude cost today and this month, per session and in total, against the
daily caps — one per session and one for all sessions together (config
``budget_session_usd`` / ``budget_daily_usd``; ``set_budget`` overrides either, kept in
the store).

Cost is counted from each turn's ``cost_delta`` (what the turn added to Claude's
cumulative ``total_cost_usd``), stored per session and local day with the event that
reports it. Past a cap no new turn starts: ``send`` is refused with ``budget_exceeded``
and nothing is queued. A running turn is stopped by Claude Code itself: every Claude is
started with ``--max-budget-usd`` set to what is left of the caps at its start
(``left``), and a turn whose cost passes it ends with ``error_max_budget_usd``. At 80 %
of a cap the first ``send`` of the day says so (``budget_warning``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from protocol import ErrorCode, money

from .._config import Config
from .._errors import OpError
from ._store import Store
from ._storerecords import _day as local_day

#: the share of a cap at which the user is warned
WARN_AT = 0.8
#: the scope name of the cap for all sessions together
ALL = "*"


class Budgets:
    def __init__(self, config: Config, store: Store, wall: Callable[[], float]) -> None:
        self.config = config
        self.store = store
        self.wall = wall
        #: (scope, day) pairs already warned about (at most once a day each)
        self._warned: set[tuple[str, str]] = set()

    def caps(self, session: str) -> tuple[float | None, float | None]:
        """(this session's daily cap, the daily cap for all), None where there is none."""
        set_ = self.store.budgets()
        return set_.get(session, self.config.budget_session_usd), set_.get(ALL, self.config.budget_daily_usd)

    def _spent(self, session: str) -> tuple[float, float]:
        today = local_day(self.wall())
        return self.store.session_costs(today).get(session, 0.0), self.store.cost_since(today)

    def left(self, session: str) -> float | None:
        """What this session may still spend today (None: no cap applies)."""
        (cap, cap_all), (spent, spent_all) = self.caps(session), self._spent(session)
        room = [c - s for c, s in ((cap, spent), (cap_all, spent_all)) if c is not None]
        return max(0.0, min(room)) if room else None

    def check(self, session: str) -> None:
        """Refuse a new turn past a cap (``budget_exceeded``), saying which and how to go on."""
        (cap, cap_all), (spent, spent_all) = self.caps(session), self._spent(session)
        if cap is not None and spent >= cap:
            raise OpError(ErrorCode.BUDGET_EXCEEDED,
                          f"session '{session}' has spent {money(spent)} today, its daily cap is {money(cap)};"
                          f" nothing was sent. Raise it (claudectl budget --session {session} --cap USD,"
                          " or /budget USD) or wait for tomorrow")
        if cap_all is not None and spent_all >= cap_all:
            raise OpError(ErrorCode.BUDGET_EXCEEDED,
                          f"all sessions have spent {money(spent_all)} today, the daily cap is {money(cap_all)};"
                          " nothing was sent. Raise it (claudectl budget --cap USD, or /budget all USD) or"
                          " wait for tomorrow")

    def warning(self, session: str) -> str | None:
        """Once a day per cap, past 80 % of it: what to tell the sender."""
        today = local_day(self.wall())
        (cap, cap_all), (spent, spent_all) = self.caps(session), self._spent(session)
        for scope, cap_, spent_, what in ((session, cap, spent, f"session '{session}'"),
                                           (ALL, cap_all, spent_all, "all sessions")):
            if cap_ is not None and spent_ >= WARN_AT * cap_ and (scope, today) not in self._warned:
                self._warned.add((scope, today))
                return f"{what} spent {money(spent_)} today: {spent_ / cap_:.0%} of the daily cap of {money(cap_)}"
        return None

    def report(self, sessions: list[str]) -> dict[str, Any]:
        now = self.wall()
        today, month = local_day(now), local_day(now)[:8] + "01"
        by_day, by_month = self.store.session_costs(today), self.store.session_costs(month)
        set_ = self.store.budgets()
        rows = []
        for name in sessions:
            cap = set_.get(name, self.config.budget_session_usd)
            rows.append({"session": name, "today": by_day.get(name, 0.0), "month": by_month.get(name, 0.0),
                         "cap": cap})
        return {"sessions": rows, "today": self.store.cost_since(today), "month": self.store.cost_since(month),
                "cap": set_.get(ALL, self.config.budget_daily_usd),
                "default_session_cap": self.config.budget_session_usd, "warn_at": WARN_AT}


__all__ = ["ALL", "WARN_AT", "Budgets"]
