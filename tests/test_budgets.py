"""Budgets (issue #27): spend per session and in total against daily caps, through the
real supervisor, keepers and claudectl (the fake claude costs $0.001 a turn)."""

from __future__ import annotations

import json

import pytest

from protocol import RemoteError

from .conftest import SupervisorProcess, wait_for
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
