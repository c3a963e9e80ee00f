"""Schedules: a prompt sent to a session at times a cron expression names (``/every``,
``claudectl schedule``). Kept in the store and run by the supervisor, so they run
without any front end; each run is a ``send`` like any other (its answer goes where the
schedule's ``origin`` says, e.g. the Telegram chat that made it).

When: a five-field cron expression (``0 9 * * 1-5``), parsed by croniter, or a plain form
turned into one (``parse_when``): ``weekdays 9:00``, ``daily 18:30``, ``mon,thu 8am``,
``weekends 10:00``, ``hourly``, ``every 15m``, ``every 2h``. Times are in the schedule's
time zone (the config's ``timezone``, else the machine's).

A run missed while the supervisor (or the machine) was off runs once when it is back,
never once per missed time: the next time is always computed from now. A run is sent
with the idempotency key ``schedule:<id>:<due time>``, so a supervisor killed between
sending it and recording it does not send it twice. Timers run on the injectable clock
(``_clock``), at most a minute apart, and compare with the wall clock each time, so a
machine that slept (or a wall clock that jumped) is noticed within a minute.
"""

from __future__ import annotations

import datetime
import logging
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from croniter import croniter

from protocol import ErrorCode

from .._clock import Clock, TimerHandle
from .._errors import OpError

log = logging.getLogger("supervisord_claude")

#: the longest the scheduler sleeps before it looks at the wall clock again
CHECK_EVERY = 60.0
#: schedules the supervisor keeps at most (each is a timer's worth of work)
MAX_SCHEDULES = 500

_DAYS = {"sunday": 0, "monday": 1, "tuesday": 2, "wednesday": 3, "thursday": 4, "friday": 5, "saturday": 6}
_TIME = re.compile(r"^(\d{1,2})(?::(\d{2}))?\s*(am|pm)?$")
_EVERY = re.compile(r"^(\d+)\s*(m|min|mins|minutes?|h|hours?)$")
_CRON_FIELD = re.compile(r"^[\d*/,\-A-Za-z?LW#]+$")


def _clock_time(text: str) -> tuple[int, int] | None:
    match = _TIME.match(text.lower())
    if match is None:
        return None
    hour, minute = int(match.group(1)), int(match.group(2) or 0)
    if match.group(3):
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if match.group(3) == "pm" else 0)
    elif match.group(2) is None:
        return None  # a bare number is no time
    return (hour, minute) if hour < 24 and minute < 60 else None


def _day(word: str) -> int | None:
    """``monday``, ``mon`` or ``mondays`` → 1."""
    word = word.removesuffix("s") if word.endswith("days") else word
    return next((n for name, n in _DAYS.items() if word in (name, name[:3])), None)


def _days(text: str) -> str | None:
    """``mon,thu`` → ``1,4``; also ``weekdays``, ``weekends``, ``daily``."""
    word = text.lower()
    if word in ("daily", "everyday"):
        return "*"
    if word in ("weekdays", "weekday"):
        return "1-5"
    if word in ("weekends", "weekend"):
        return "0,6"
    days = [_day(part) for part in word.split(",")]
    return None if not days or None in days else ",".join(str(d) for d in days)


def _plain(words: list[str]) -> str | None:
    """A plain form (its words) as a cron expression, or None."""
    lowered = [w.lower() for w in words]
    if lowered in (["hourly"], ["every", "hour"]):
        return "0 * * * *"
    if lowered and lowered[0] == "every":
        rest = " ".join(lowered[1:])
        if rest == "day":
            return None  # (needs a time)
        match = _EVERY.match(rest)
        if match:
            n, unit = int(match.group(1)), match.group(2)
            if unit.startswith("m") and 1 <= n <= 59:
                return f"*/{n} * * * *"
            if unit.startswith("h") and 1 <= n <= 23:
                return f"0 */{n} * * *"
            return None
        lowered = lowered[1:]  # "every monday 9:00", "every day 9:00"
        if lowered[:1] == ["day"]:
            lowered = ["daily", *lowered[1:]]
    if len(lowered) == 1 and (time := _clock_time(lowered[0])) is not None:
        return f"{time[1]} {time[0]} * * *"
    if len(lowered) == 2 and (days := _days(lowered[0])) is not None and (time := _clock_time(lowered[1])):
        return f"{time[1]} {time[0]} * * {days}"
    return None


def parse_when(text: str) -> tuple[str, str]:
    """``(cron expression, the rest)`` of ``<when> <prompt>``: a quoted or bare
    five-field cron expression first, else the longest plain form. ``BAD_REQUEST`` (with
    examples) when neither starts the text."""
    text = text.strip()
    if text[:1] in ("'", '"') and text[0] in text[1:]:
        quoted, rest = text[1:].split(text[0], 1)
        if croniter.is_valid(quoted.strip()):
            return quoted.strip(), rest.strip()
    words = text.split()
    if len(words) >= 5 and all(_CRON_FIELD.match(w) for w in words[:5]) and croniter.is_valid(" ".join(words[:5])):
        return " ".join(words[:5]), " ".join(words[5:])
    for size in (4, 3, 2, 1):
        cron = _plain(words[:size]) if len(words) >= size else None
        if cron is not None:
            return cron, " ".join(words[size:])
    raise OpError(ErrorCode.BAD_REQUEST, f"cannot tell when from {text[:60]!r}: give a cron expression"
                  " ('0 9 * * 1-5') or a plain form: weekdays 9:00, daily 18:30, mon,thu 8am, weekends 10:00,"
                  " hourly, every 15m, every 2h")


def zone(name: str | None) -> datetime.tzinfo | None:
    """An IANA time zone (``Europe/Berlin``), or None for the machine's own."""
    if not name:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise OpError(ErrorCode.BAD_REQUEST, f"unknown time zone {name!r} (an IANA name, e.g. Europe/Berlin)")\
            from None


def next_time(cron: str, tz_name: str | None, after: float) -> float:
    """The first time ``cron`` names after ``after`` (Unix time), in its zone."""
    tz = zone(tz_name)
    start = datetime.datetime.fromtimestamp(after, tz)
    when: datetime.datetime = croniter(cron, start).get_next(datetime.datetime)
    return when.timestamp()


@dataclass(frozen=True)
class Schedule:
    id: int
    session: str
    cron: str
    tz: str
    prompt: str
    paused: bool
    next_run: float
    last_run: float | None
    origin: str | None
    created: float

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "session": self.session, "cron": self.cron, "tz": self.tz or None,
                "prompt": self.prompt, "paused": self.paused, "next_run": None if self.paused else self.next_run,
                "last_run": self.last_run, "origin": self.origin, "created": self.created}


class ScheduleStore(Protocol):
    """What the scheduler needs of the store."""

    def schedules(self) -> list[Schedule]: ...

    def add_schedule(self, session: str, cron: str, tz: str, prompt: str, next_run: float, origin: str | None,
                     created: float) -> int: ...

    def update_schedule(self, schedule_id: int, **fields: Any) -> bool: ...

    def remove_schedule(self, schedule_id: int) -> bool: ...


#: sends one run: (session, prompt, origin, idempotency key); raises OpError if it cannot
Send = Callable[[str, str, str | None, str], None]


class Scheduler:
    def __init__(self, store: ScheduleStore, clock: Clock, wall: Callable[[], float], send: Send,
                 default_tz: str | None = None) -> None:
        self.store = store
        self.clock = clock
        self.wall = wall
        self.send = send
        self.default_tz = default_tz
        self._timer: TimerHandle | None = None
        self.started = False

    def start(self) -> None:
        """Run what came due while the supervisor was off (each once), then keep time."""
        self.started = True
        self.tick()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.started = False

    def add(self, session: str, when: str, prompt: str | None, origin: str | None, tz: str | None) -> Schedule:
        cron, rest = parse_when(when) if prompt is None else (parse_when(when)[0], prompt)
        if not rest.strip():
            raise OpError(ErrorCode.BAD_REQUEST, "a schedule needs a prompt to send (after the time)")
        if len(self.store.schedules()) >= MAX_SCHEDULES:
            raise OpError(ErrorCode.BAD_REQUEST, f"the supervisor keeps {MAX_SCHEDULES} schedules at most")
        tz_name = tz if tz is not None else (self.default_tz or "")
        zone(tz_name)
        now = self.wall()
        schedule_id = self.store.add_schedule(session, cron, tz_name, rest.strip(), next_time(cron, tz_name, now),
                                              origin, now)
        self._rearm()
        return next(s for s in self.store.schedules() if s.id == schedule_id)

    def set_paused(self, schedule_id: int, paused: bool) -> Schedule:
        found = self._get(schedule_id)
        fields: dict[str, Any] = {"paused": int(paused)}
        if not paused:  # from now on: what was missed while paused is not made up for
            fields["next_run"] = next_time(found.cron, found.tz, self.wall())
        self.store.update_schedule(schedule_id, **fields)
        self._rearm()
        return self._get(schedule_id)

    def remove(self, schedule_id: int) -> Schedule:
        found = self._get(schedule_id)
        self.store.remove_schedule(schedule_id)
        self._rearm()
        return found

    def _get(self, schedule_id: int) -> Schedule:
        found = next((s for s in self.store.schedules() if s.id == schedule_id), None)
        if found is None:
            raise OpError(ErrorCode.NOT_FOUND, f"no schedule {schedule_id} (claudectl schedule ls lists them)")
        return found

    def tick(self) -> None:
        """Send every schedule that is due (once, however many of its times passed), then
        sleep until the next one (a minute at most)."""
        self._timer = None
        if not self.started:
            return
        now = self.wall()
        for schedule in self.store.schedules():
            if schedule.paused or schedule.next_run > now:
                continue
            key = f"schedule:{schedule.id}:{schedule.next_run:.0f}"
            # the next time from now: runs missed while off (or asleep) collapse into this one
            self.store.update_schedule(schedule.id, next_run=next_time(schedule.cron, schedule.tz, now),
                                       last_run=now)
            try:
                self.send(schedule.session, schedule.prompt, schedule.origin, key)
            except OpError as exc:
                log.warning("schedule %d of session %s not sent: %s", schedule.id, schedule.session, exc.message,
                            extra={"session": schedule.session})
        self._rearm()

    def _rearm(self) -> None:
        if not self.started:
            return
        if self._timer is not None:
            self._timer.cancel()
        upcoming = [s.next_run for s in self.store.schedules() if not s.paused]
        delay = min([CHECK_EVERY, *[max(0.0, t - self.wall()) for t in upcoming]])
        self._timer = self.clock.call_later(delay, self.tick)


__all__ = ["CHECK_EVERY", "Schedule", "ScheduleStore", "Scheduler", "next_time", "parse_when", "zone"]
