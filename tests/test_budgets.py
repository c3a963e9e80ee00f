"""Budgets (issue #27): spend per session and in total against daily caps, through the
real supervisor, keepers and claudectl (the fake claude costs $0.001 a turn)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol import RemoteError
from supervisord_claude import _wire
from supervisord_claude._errors import OpError

from .conftest import SupervisorProcess, wait_for
from .test_lifecycle import Harness
from .test_permissions import arg_after

pytestmark = pytest.mark.timeout(180)


def send(sup: SupervisorProcess, text: str, name: str = "alpha") -> dict:
    with sup.client() as c:
        return c.request("send", session=name, text=text)


def result_for(sup: SupervisorProcess, sent: dict, name: str = "alpha") -> dict:
    return sup.wait_event(name, lambda e: e["kind"] == "result" and e.get("message_id") == sent["message_id"])


def test_a_session_cap_warns_then_stops_the_running_turn_then_holds_new_ones(make_supervisor) -> None:
    sup = make_supervisor(idle_timeout=60).start()
    sup.ctl("new", "alpha", check=True)
    sup.ctl("new", "beta", check=True)
    assert "daily cap of session 'alpha': $0.0025" in sup.ctl("budget", "--session", "alpha", "--cap", "0.0025",
                                                               check=True).stdout
    first = send(sup, "one")
    assert "budget_warning" not in first
    assert not result_for(sup, first)["is_error"]
    # Claude Code itself stops a turn past the cap: it gets what is left as --max-budget-usd
    assert float(arg_after(sup.claude_starts()[-1]["argv"], "--max-budget-usd")) == pytest.approx(0.0025)
    second = send(sup, "two")
    result_for(sup, second)
    third = send(sup, "three")  # 0.002 spent: 80 % of the cap, said once
    assert third["budget_warning"] == "session 'alpha' spent $0.002 today: 80% of the daily cap of $0.0025"
    # this turn passes the cap (0.003): Claude Code ends it
    stopped = result_for(sup, third)
    assert stopped["is_error"] and stopped["subtype"] == "error_max_budget_usd"
    # past the cap no new turn starts: refused, nothing queued
    with pytest.raises(RemoteError) as refused:
        send(sup, "four")
    assert refused.value.code == "budget_exceeded" and "spent $0.003 today, its daily cap is $0.0025" in str(refused.value)
    assert not [e for e in sup.events("alpha") if e["kind"] == "user" and e.get("text") == "four"]
    # another session is not held by alpha's cap
    result_for(sup, send(sup, "hello", "beta"), "beta")
    report = json.loads(sup.ctl("--json", "budget", check=True).stdout)
    assert {r["session"]: r["today"] for r in report["sessions"]} == pytest.approx({"alpha": 0.003, "beta": 0.001})
    assert report["today"] == pytest.approx(0.004) and report["month"] == pytest.approx(0.004)
    text = sup.ctl("budget", check=True).stdout
    assert "alpha: today $0.003 of $0.0025 (120%), this month $0.003" in text
    assert "all sessions: today $0.004, this month $0.004 (no daily cap)" in text
    # raised: the live Claude restarts with the room it has now, and the next message is answered
    starts = len(sup.claude_starts())
    sup.ctl("budget", "--session", "alpha", "--cap", "0.01", check=True)
    wait_for(lambda: len([s for s in sup.claude_starts()[starts:] if "--max-budget-usd" in s["argv"]]) > 0,
             what="alpha's Claude restarted with the raised budget")
    restarted = [s for s in sup.claude_starts()[starts:] if s["cwd"].endswith("alpha")][-1]
    assert float(arg_after(restarted["argv"], "--max-budget-usd")) == pytest.approx(0.007)
    assert not result_for(sup, send(sup, "five"))["is_error"]


def test_the_daily_cap_for_all_sessions_survives_a_restart(make_supervisor) -> None:
    sup = make_supervisor(config="budget_daily_usd = 0.002").start()
    sup.ctl("new", "alpha", check=True)
    sup.ctl("new", "beta", check=True)
    result_for(sup, send(sup, "one"))
    result_for(sup, send(sup, "two", "beta"), "beta")
    with pytest.raises(RemoteError, match=r"all sessions have spent \$0\.002 today, the daily cap is \$0\.002"):
        send(sup, "three")
    sup.stop()
    sup.start()  # the spend and the cap are kept
    with pytest.raises(RemoteError, match="the daily cap is"):
        send(sup, "three")
    sup.ctl("budget", "--cap", "0.005", check=True)  # (overrides the config's)
    result_for(sup, send(sup, "three"))
    assert json.loads(sup.ctl("--json", "budget", check=True).stdout)["cap"] == 0.005
    bad = sup.ctl("budget", "--cap", "-1")
    assert bad.returncode == 1 and "positive number of US dollars" in bad.stderr


# --- on the fake clock: the day of a cap, its zone, "raise it once" -------------------------

BERLIN, NEW_YORK = zoneinfo.ZoneInfo("Europe/Berlin"), zoneinfo.ZoneInfo("America/New_York")


def at(tz: datetime.tzinfo, *args: int) -> float:
    return datetime.datetime(*args, tzinfo=tz).timestamp()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    """The real store, ops and pool in-process; the config's zone is Berlin; the store
    and the budgets read the harness's wall clock (moved by hand)."""
    harness = Harness(tmp_path)
    harness.store.wall = lambda: harness.now
    budgets = harness.core.ops.budgets
    budgets.config = dataclasses.replace(budgets.config, timezone="Europe/Berlin")
    yield harness
    harness.store.close()


def live(h: Harness, session: str) -> bytes:
    """``session`` made, sent a first message, its keeper up."""
    h.op("create", session=session)
    h.op("send", session=session, text="first")
    pid, _ = h.spawned(pid=100 + len(h.fork.spawned))
    return h.hello(session, pid)


def spend(h: Harness, ident: bytes, usd: float) -> None:
    """A turn of the keeper ``ident`` ends, having cost ``usd``."""
    h.keeper_says(ident, _wire.KeeperEvent.of("result", {"message_id": None, "text": "done", "cost_delta": usd}))


def refused(h: Harness, session: str) -> bool:
    try:
        h.op("send", session=session, text="more")
    except OpError as exc:
        assert exc.code == "budget_exceeded"
        return True
    return False


def test_raise_the_cap_once_is_an_allowance_for_that_day_only_in_the_configured_zone(h: Harness) -> None:
    h.now = at(BERLIN, 2026, 12, 4, 23, 0)  # 22:00 UTC: the machine's (UTC) day and Berlin's agree
    a = live(h, "a")
    h.op("set_budget", session="a", usd=1.0)
    spend(h, a, 1.0)
    assert refused(h, "a")
    report = h.op("budget_allow", session="a", usd=1.0)  # the button: one more day's cap, today only
    assert (report["sessions"][0]["cap"], report["sessions"][0]["extra"]) == (1.0, 1.0)
    assert h.core.ops.budgets.left("a") == 1.0
    assert not refused(h, "a")
    spend(h, a, 0.5)
    assert [c.usd for c in h.link.of(_wire.SetBudget)][-1] == 1.0  # the live Claude got the room at once
    h.now = at(BERLIN, 2026, 12, 4, 23, 59)
    assert h.op("budget", session="a")["sessions"][0]["extra"] == 1.0
    # midnight in Berlin (23:00 UTC, still the 4th on the machine's clock): a new day, the cap as it was
    h.now = at(BERLIN, 2026, 12, 5, 0, 0)
    row = h.op("budget", session="a")["sessions"][0]
    assert (row["today"], row["cap"], row["extra"], row["tz"]) == (0.0, 1.0, 0.0, "Europe/Berlin")
    spend(h, a, 1.0)
    assert refused(h, "a")  # the allowance was the 4th's, not a raise for good
    with pytest.raises(OpError, match="all sessions have no daily cap to raise"):
        h.op("budget_allow", usd=1.0)


def test_each_cap_counts_its_day_in_the_zone_it_was_set_in(h: Harness) -> None:
    h.now = at(BERLIN, 2026, 12, 4, 12, 0)
    berlin, new_york = live(h, "berlin"), live(h, "ny")
    h.op("set_budget", session="berlin", usd=1.0, tz="Europe/Berlin")
    h.op("set_budget", session="ny", usd=1.0, tz="America/New_York")
    h.now = at(NEW_YORK, 2026, 12, 4, 20, 0)  # 02:00 on the 5th in Berlin
    spend(h, berlin, 1.0)
    spend(h, new_york, 1.0)
    assert refused(h, "berlin") and refused(h, "ny")
    h.now = at(NEW_YORK, 2026, 12, 4, 23, 59)  # (05:59 in Berlin)
    assert refused(h, "berlin") and refused(h, "ny")
    h.now = at(NEW_YORK, 2026, 12, 5, 0, 0)  # midnight in New York: only its cap's day turned
    assert refused(h, "berlin") and not refused(h, "ny")
    rows = {r["session"]: r for r in h.op("budget")["sessions"]}
    assert (rows["berlin"]["today"], rows["berlin"]["tz"]) == (1.0, "Europe/Berlin")
    assert (rows["ny"]["today"], rows["ny"]["tz"]) == (0.0, "America/New_York")
    with pytest.raises(OpError, match="unknown time zone 'Mars/Olympus'"):
        h.op("set_budget", session="ny", usd=2.0, tz="Mars/Olympus")
    assert h.op("budget", session="ny")["sessions"][0]["cap"] == 1.0  # (nothing changed)


def test_sessions_answering_at_once_share_the_daily_cap_for_all(make_supervisor) -> None:
    """Each Claude gets its share of what is left of the cap for all (split among the
    sessions with a turn running or waiting), not all of it: together they stay within
    the cap, give or take one turn (a Claude stops a turn only once its cost passed its
    limit; a fake turn costs $0.001)."""
    sup = make_supervisor(config="budget_daily_usd = 0.004").start()
    names = ("alpha", "beta")
    for name in names:
        sup.ctl("new", name, check=True)
    sent: dict[str, list[int]] = {name: [] for name in names}
    with sup.client() as c:
        for i in range(5):  # five turns each, asked at once (each waits for a turn of its own)
            for name in names:
                try:
                    sent[name].append(c.request("send", session=name, text=f"{name} {i}", queue=True)["message_id"])
                except RemoteError as exc:  # (the cap was reached already: refused, nothing queued)
                    assert exc.code == "budget_exceeded"
    for name, ids in sent.items():  # each answered, or not sent and said why
        for mid in ids:
            sup.wait_event(name, lambda e, mid=mid: e["kind"] in ("result", "message_failed")
                           and e.get("message_id") == mid)
    spent = sup.request("budget")["today"]
    assert spent <= 0.004 + 0.001 + 1e-9, f"the sessions spent ${spent} together against a cap of $0.004"
    failed = [e for name in names for e in sup.events(name) if e["kind"] == "message_failed"]
    assert failed and all(e["reason"].startswith("not sent: the daily cap is reached") for e in failed)
    print(f"spent together: ${spent:.4f}; not sent at the cap: {len(failed)}")


def test_sessions_waiting_for_an_answer_split_the_room_of_the_cap_for_all(h: Harness) -> None:
    h.now = at(BERLIN, 2026, 12, 4, 12, 0)
    h.op("set_budget", usd=1.0)  # all sessions together: $1 a day

    def given(ident: bytes) -> list[float | None]:
        return [m.usd for to, m in h.link.sent if to == ident and isinstance(m, _wire.SetBudget)]

    h.op("create", session="a")
    first_a = h.op("send", session="a", text="one")["message_id"]
    assert h.fork.spawned[0][1].budget_usd == 1.0  # alone: all of it
    a = h.hello("a", h.spawned(pid=101)[0])
    h.op("create", session="b")
    h.op("send", session="b", text="one")
    assert h.fork.spawned[1][1].budget_usd == 0.5  # a waits for an answer too: half each
    b = h.hello("b", h.spawned(pid=102)[0])
    assert given(a)[-1] == 0.5  # a's Claude takes its half before its next turn
    # a's turn ends, having cost $0.20: b alone waits now and may spend what is left; a, were
    # it sent something, would share it with b
    h.keeper_says(a, _wire.KeeperEvent.of("result", {"message_id": first_a, "text": "done", "cost_delta": 0.2}))
    assert given(b)[-1] == pytest.approx(0.8) and given(a)[-1] == pytest.approx(0.4)


def test_claudectl_raises_a_cap_once_and_sets_the_zone_of_its_day(make_supervisor) -> None:
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    sup.ctl("budget", "--session", "alpha", "--cap", "0.001", "--tz", "Asia/Kolkata", check=True)
    result_for(sup, send(sup, "one"))
    with pytest.raises(RemoteError, match="its daily cap is"):
        send(sup, "two")
    out = sup.ctl("budget", "--session", "alpha", "--allow", "0.001", check=True).stdout
    assert "session 'alpha' may spend $0.001 more today (the cap is back tomorrow)" in out
    assert "alpha: today $0.001 of $0.001 + $0.001 today only (50%)" in out
    result_for(sup, send(sup, "two"))
    row = json.loads(sup.ctl("--json", "budget", "--session", "alpha", check=True).stdout)["sessions"][0]
    assert (row["cap"], row["extra"], row["tz"]) == (0.001, 0.001, "Asia/Kolkata")
    bad = sup.ctl("budget", "--allow", "1")  # (all sessions together have no cap)
    assert bad.returncode == 1 and "all sessions have no daily cap to raise" in bad.stderr
    bad = sup.ctl("budget", "--cap", "1", "--tz", "Mars/Olympus")
    assert bad.returncode == 1 and "unknown time zone 'Mars/Olympus'" in bad.stderr
