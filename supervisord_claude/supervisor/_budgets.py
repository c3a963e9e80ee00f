"""Budgets: what Claude cost today and this month, per session and in total, against the
daily caps — one per session and one for all sessions together (config
``budget_session_usd`` / ``budget_daily_usd``; ``set_budget`` overrides either, kept in
the store).

Cost is counted from each turn's ``cost_delta`` (what the turn added to Claude's
cumulative ``total_cost_usd``), stored per session with the event that reports it. Past a
cap no new turn starts: ``send`` is refused with ``budget_exceeded`` and nothing is
queued. A running turn is stopped by Claude Code itself: every Claude is started with
``--max-budget-usd`` set to what is left of the caps at its start (``left``), and a turn
whose cost passes it ends with ``error_max_budget_usd``. At 80 % of a cap the first
``send`` of the day says so (``budget_warning``).

Sessions answering at once share the cap for all: each live Claude's limit is what is
left of it split evenly among the sessions with a turn running or waiting (``left``),
handed out again (``rebalance``: ``SetBudget``, taken before the Claude's next turn)
whenever a cost is counted or a session starts or stops waiting; a keeper whose limit is
spent starts no turn. So the limits given out add up to the room left, and the sessions
together pass the cap by at most one API call each (the one that passes a limit), plus
what a turn already running when the room was split anew keeps of its older limit.

Each cap counts its day in its own time zone: the one given when it was set (the
Telegram user's ``/tz``), else the config's ``timezone``, else the machine's. "Raise it
once" (``budget_allow``) is an allowance for that day only: the cap is back the next
day, on the supervisor's clock (``_spend``).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from protocol import ErrorCode, money

from .._configkeys import Config
from .._errors import OpError
from ._schedules import zone
from ._store import Store
from ._storerecords import _day as local_day

#: the share of a cap at which the user is warned
WARN_AT = 0.8
#: the scope name of the cap for all sessions together
ALL = "*"


@dataclass(frozen=True)
class Day:
    """A cap's day in its zone: its date (``YYYY-MM-DD``), midnight to midnight."""

    date: str
    start: float
    end: float
    tz: str  # ('' : the machine's)


def day_of(now: float, tz: str) -> Day:
    """The day ``now`` falls on in the zone ``tz`` ('' : the machine's)."""
    tzinfo = zone(tz)
    date = datetime.datetime.fromtimestamp(now, tzinfo).date()

    def midnight(d: datetime.date) -> float:
        return datetime.datetime(d.year, d.month, d.day, tzinfo=tzinfo).timestamp()

    return Day(date.isoformat(), midnight(date), midnight(date + datetime.timedelta(days=1)), tz)


@dataclass(frozen=True)
class Cap:
    """One daily cap as it stands now: its base amount (None: no cap), today's allowance
    on top, what was spent on its day."""

    scope: str
    base: float | None
    extra: float
    spent: float
    day: Day

    @property
    def today(self) -> float | None:
        """What may be spent today: the cap plus today's allowance."""
        return None if self.base is None else self.base + self.extra

    @property
    def reached(self) -> bool:
        return self.today is not None and self.spent >= self.today


class Budgets:
    def __init__(self, config: Config, store: Store, wall: Callable[[], float],
                 busy: Callable[[], Collection[str]] = frozenset,
                 give: Callable[[str, float | None], object] = lambda session, usd: None) -> None:
        self.config = config
        self.store = store
        self.wall = wall
        #: the sessions whose keeper holds messages (a turn running or waiting): they
        #: share the room of the cap for all
        self.busy = busy
        #: hands a live Claude what it may spend now (``SetBudget``)
        self.give = give
        #: what each live Claude was last given
        self._given: dict[str, float | None] = {}
        #: (scope, day) pairs already warned about (at most once a day each)
        self._warned: set[tuple[str, str]] = set()

    def cap(self, scope: str) -> Cap:
        """The cap of a session (``scope`` its name) or of all sessions (``ALL``), today."""
        terms = self.store.budget_terms().get(scope)
        tz = terms.tz if terms and terms.tz else (self.config.timezone or "")
        day = day_of(self.wall(), tz)
        spent = self.store.spent_between(day.start, day.end)
        base = self.store.budgets().get(scope, self.config.budget_daily_usd if scope == ALL
                                        else self.config.budget_session_usd)
        return Cap(scope, base, terms.extra_on(day.date) if terms else 0.0,
                   sum(spent.values()) if scope == ALL else spent.get(scope, 0.0), day)

    def caps(self, session: str) -> tuple[Cap, Cap]:
        """(this session's cap, the cap for all), as they stand now."""
        return self.cap(session), self.cap(ALL)

    def left(self, session: str, every: Cap | None = None) -> float | None:
        """What this session's Claude may spend now (None: no cap applies): what is left
        of its own cap, and its share of what is left of the cap for all — split evenly
        among the sessions with a turn running or waiting, this one counted (so several
        sessions answering at once cannot each spend all of it)."""
        mine, every = self.cap(session), every or self.cap(ALL)
        room = []
        if mine.today is not None:
            room.append(mine.today - mine.spent)
        if every.today is not None:
            room.append((every.today - every.spent) / (1 + len(set(self.busy()) - {session})))
        return max(0.0, min(room)) if room else None

    def given(self, session: str, usd: float | None) -> None:
        """A Claude of ``session`` starts with ``usd`` to spend (its keeper's spec)."""
        self._given[session] = usd

    def rebalance(self, live: Collection[str]) -> None:
        """Give each live Claude what it may spend now where that changed: after a turn's
        cost is counted and when a session starts or stops waiting for an answer (the
        room of the cap for all is split anew). A Claude takes it before its next turn."""
        for gone in set(self._given) - set(live):
            del self._given[gone]
        if not live or (self.config.budget_daily_usd is None and self.config.budget_session_usd is None
                        and all(self._given.get(s) is None for s in live) and not self.store.budgets()):
            return  # (no cap, and none was given: the common case, at one read)
        every = self.cap(ALL)
        for session in live:
            usd = self.left(session, every)
            last = self._given.get(session)  # (None for one it did not start: adopted, no cap assumed)
            if (usd is None) != (last is None) or (usd is not None and last is not None and abs(usd - last) > 1e-9):
                self._given[session] = usd
                self.give(session, usd)

    def check(self, session: str) -> None:
        """Refuse a new turn past a cap (``budget_exceeded``), saying which and how to go on."""
        mine, every = self.caps(session)
        if mine.reached:
            raise OpError(ErrorCode.BUDGET_EXCEEDED,
                          f"session '{session}' has spent {money(mine.spent)} today, its daily cap is"
                          f" {money(mine.today)}; nothing was sent. Raise it (claudectl budget --session {session}"
                          " --cap USD, or /budget USD) or wait for tomorrow")
        if every.reached:
            raise OpError(ErrorCode.BUDGET_EXCEEDED,
                          f"all sessions have spent {money(every.spent)} today, the daily cap is"
                          f" {money(every.today)}; nothing was sent. Raise it (claudectl budget --cap USD, or"
                          " /budget all USD) or wait for tomorrow")

    def warning(self, session: str) -> str | None:
        """Once a day per cap, past 80 % of it: what to tell the sender."""
        for cap in self.caps(session):
            limit = cap.today
            if limit is not None and cap.spent >= WARN_AT * limit and (cap.scope, cap.day.date) not in self._warned:
                self._warned.add((cap.scope, cap.day.date))
                what = "all sessions" if cap.scope == ALL else f"session '{session}'"
                return f"{what} spent {money(cap.spent)} today: {cap.spent / limit:.0%} of the daily cap of" \
                       f" {money(limit)}"
        return None

    def allow(self, scope: str, usd: float) -> Cap:
        """Let the cap ``scope`` be passed today (its day) so that ``usd`` more may be
        spent; gone the next day. ``bad_request`` where there is no cap to pass."""
        cap = self.cap(scope)
        if cap.base is None:
            whose = "all sessions" if scope == ALL else f"session '{scope}'"
            raise OpError(ErrorCode.BAD_REQUEST, f"{whose} {'have' if scope == ALL else 'has'} no daily cap to"
                          " raise")
        self.store.set_allowance(scope, cap.day.date, max(cap.extra, cap.spent + usd - cap.base))
        return self.cap(scope)

    def report(self, sessions: list[str]) -> dict[str, Any]:
        month = local_day(self.wall())[:8] + "01"
        by_month = self.store.session_costs(month)
        rows = []
        for name in sessions:
            cap = self.cap(name)
            rows.append({"session": name, "today": cap.spent, "month": by_month.get(name, 0.0), "cap": cap.base,
                         "extra": cap.extra, "tz": cap.day.tz or None})
        every = self.cap(ALL)
        return {"sessions": rows, "today": every.spent, "month": self.store.cost_since(month), "cap": every.base,
                "extra": every.extra, "tz": every.day.tz or None,
                "default_session_cap": self.config.budget_session_usd, "warn_at": WARN_AT}


__all__ = ["ALL", "WARN_AT", "Budgets", "Cap", "Day", "day_of"]
