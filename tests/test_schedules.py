"""Schedules (issue #27), in-process on the fake clock: the real store, ops and pool of
``tests/test_lifecycle.py``'s harness; the wall clock is the harness's, moved by hand
together with the fake one."""

from __future__ import annotations

import datetime
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisord_claude._errors import OpError
from supervisord_claude.supervisor._schedules import CHECK_EVERY, next_time, parse_when
from supervisord_claude.supervisor._store import QUEUED

from .test_lifecycle import Harness

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")


def at(*args: int) -> float:
    return datetime.datetime(*args, tzinfo=BERLIN).timestamp()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    harness.now = at(2026, 12, 4, 8, 0)  # a Friday, 08:00 in Berlin
    yield harness
    harness.core.ops.scheduler.stop()
    harness.store.close()


def advance(h: Harness, seconds: float) -> None:
    """Time passes for both clocks, a minute at a time (as the scheduler looks)."""
    while seconds > 0:
        step = min(seconds, CHECK_EVERY)
        h.now += step
        h.clock.advance(step)
        seconds -= step


def queued(h: Harness, session: str = "a") -> list[str]:
    """The session's messages not answered yet (nothing answers here)."""
    return [m.text for m in h.store.messages(session, QUEUED)]


def test_plain_forms_and_cron_expressions() -> None:
    assert parse_when("weekdays 9:00 check the build") == ("0 9 * * 1-5", "check the build")
    assert parse_when("daily 18:30 summary") == ("30 18 * * *", "summary")
    assert parse_when("every day 7:05 x") == ("5 7 * * *", "x")
    assert parse_when("mon,thu 8am standup") == ("0 8 * * 1,4", "standup")
    assert parse_when("fridays 5pm wrap up") == ("0 17 * * 5", "wrap up")
    assert parse_when("weekends 10:00 relax") == ("0 10 * * 0,6", "relax")
    assert parse_when("hourly ping") == ("0 * * * *", "ping")
    assert parse_when("every 15m ping") == ("*/15 * * * *", "ping")
    assert parse_when("every 2h ping") == ("0 */2 * * *", "ping")
    assert parse_when("0 9 * * 1-5 run the tests") == ("0 9 * * 1-5", "run the tests")
    assert parse_when('"*/5 * * * *" poll') == ("*/5 * * * *", "poll")
    for bad in ("sometimes do it", "25:00 late", "every 90m x", "9 o'clock"):
        with pytest.raises(OpError, match="cannot tell when"):
            parse_when(bad)
    # in the schedule's zone: 9:00 in Berlin on the next weekday (Monday)
    assert next_time("0 9 * * 1-5", "Europe/Berlin", at(2026, 12, 4, 9, 30)) == at(2026, 12, 7, 9, 0)


def test_a_schedule_sends_its_prompt_as_a_message_at_its_time(h: Harness) -> None:
    h.op("create", session="a")
    made = h.op("schedule_add", session="a", when="daily 9:00 good morning", origin="tg:42", tz="Europe/Berlin")
    assert made["next_run"] == at(2026, 12, 4, 9, 0) and made["cron"] == "0 9 * * *"
    h.core.ops.scheduler.start()
    advance(h, 59 * 60)
    assert queued(h) == []  # 08:59: not yet
    advance(h, 60)
    assert queued(h) == ["good morning"]  # a message like any other (it starts the session's keeper)
    assert len(h.fork.spawned) == 1  # (it started the session's keeper)
    [message] = h.store.messages("a", QUEUED)
    assert message.origin == "tg:42"  # its answer goes to the chat that made it
    listed = h.op("schedules")["schedules"]
    assert listed[0]["next_run"] == at(2026, 12, 5, 9, 0) and listed[0]["last_run"] == at(2026, 12, 4, 9, 0)


def test_runs_missed_while_off_run_once_at_start_never_several_times(h: Harness) -> None:
    h.op("create", session="a")
    h.op("schedule_add", session="a", when="every 15m tick", tz="Europe/Berlin")
    # the supervisor is off (the scheduler not started) for three hours: twelve times pass
    advance(h, 3 * 3600)
    assert queued(h) == []
    h.core.ops.scheduler.start()
    assert queued(h) == ["tick"]  # once, at start
    [schedule] = h.op("schedules")["schedules"]
    assert schedule["next_run"] == at(2026, 12, 4, 11, 15)  # the next time from now, not a backlog
    advance(h, 60)
    assert queued(h) == ["tick"]
    advance(h, 14 * 60)
    assert queued(h) == ["tick", "tick"]


def test_paused_schedules_do_not_run_and_resume_from_now(h: Harness) -> None:
    h.op("create", session="a")
    made = h.op("schedule_add", session="a", when="hourly ping")
    h.core.ops.scheduler.start()
    assert h.op("schedule_set", schedule=made["id"], paused=True)["paused"] is True
    advance(h, 3 * 3600)
    assert queued(h) == []
    resumed = h.op("schedule_set", schedule=made["id"], paused=False)
    assert resumed["next_run"] == at(2026, 12, 4, 12, 0)  # nothing made up for the paused hours
    assert queued(h) == []
    advance(h, 3600)
    assert queued(h) == ["ping"]
    h.op("schedule_remove", schedule=made["id"])
    advance(h, 3 * 3600)
    assert queued(h) == ["ping"]
    with pytest.raises(OpError, match="no schedule"):
        h.op("schedule_remove", schedule=made["id"])


def test_bad_schedules_are_refused_with_the_reason(h: Harness) -> None:
    h.op("create", session="a")
    with pytest.raises(OpError, match="needs a prompt"):
        h.op("schedule_add", session="a", when="weekdays 9:00")
    with pytest.raises(OpError, match="unknown time zone"):
        h.op("schedule_add", session="a", when="weekdays 9:00 x", tz="Mars/Olympus")
    with pytest.raises(OpError, match="no session named"):
        h.op("schedule_add", session="ghost", when="weekdays 9:00 x")
    assert h.op("schedules")["schedules"] == []
