"""What Claude is launched with and what changing it means (``keeper._settings``): changes
wait for a restart between turns, a budget told again changes nothing, each turn's cost is
the step of Claude's running total."""

from __future__ import annotations

from typing import Any

import pytest

from protocol import PermissionMode, Reason
from supervisord_claude import _wire
from supervisord_claude.keeper._settings import SettingChange, Settings


def spec(**fields: Any) -> _wire.KeeperSpec:
    return _wire.KeeperSpec(session="s", instance="i", runtime_dir="/nonexistent", claude_bin="claude", cwd="/work",
                            session_id="sid", started=True, idle_timeout=10, **fields)


def test_a_model_change_waits_for_the_restart_which_says_why_and_starts_claude_with_it() -> None:
    settings = Settings(spec(model="old"))
    assert settings.change(_wire.SetModel("new"), claude_running=True)
    assert settings.launch(spec(), resume=True).model == "old"  # not before the restart
    assert settings.apply() is Reason.MODEL_CHANGE and not settings.pending
    assert settings.launch(spec(), resume=True).model == "new"


def test_a_mode_and_rules_changed_together_are_one_restart_for_a_mode_change() -> None:
    settings = Settings(spec(allowed_tools=("Read",)))
    settings.change(_wire.SetMode("plan"), claude_running=True)
    settings.change(_wire.SetRules(("Bash(ls)",)), claude_running=True)
    assert settings.apply() is Reason.MODE_CHANGE
    launch = settings.launch(spec(), resume=True)
    assert launch.permission_mode is PermissionMode.PLAN and launch.allowed_tools == ("Bash(ls)",)


@pytest.mark.parametrize(("change", "reason"), [
    (_wire.SetModel("new"), Reason.MODEL_CHANGE), (_wire.SetMode("plan"), Reason.MODE_CHANGE),
    (_wire.SetRules(("Bash(ls)",)), Reason.RULES_CHANGE), (_wire.SetBudget(5.0), Reason.BUDGET_CHANGE)])
def test_each_kind_of_change_restarts_claude_for_its_own_reason(change: SettingChange, reason: Reason) -> None:
    settings = Settings(spec(budget_usd=2.0))
    assert settings.change(change, claude_running=True)
    assert settings.apply() is reason


def test_a_budget_and_rules_changed_together_are_one_restart_for_the_rules() -> None:
    settings = Settings(spec(budget_usd=2.0))
    settings.change(_wire.SetBudget(5.0), claude_running=True)
    settings.change(_wire.SetRules(("Bash(ls)",)), claude_running=True)
    assert settings.apply() is Reason.RULES_CHANGE and not settings.pending


@pytest.mark.parametrize("told", [None, 2.0, 2.0 + 1e-12])
def test_a_budget_told_again_restarts_nothing(told: float | None) -> None:
    settings = Settings(spec(budget_usd=None if told is None else 2.0))
    assert not settings.change(_wire.SetBudget(told), claude_running=True) and not settings.pending


def test_a_new_budget_restarts_a_running_claude_and_is_the_next_claudes_limit() -> None:
    idle = Settings(spec(budget_usd=2.0))
    assert not idle.change(_wire.SetBudget(5.0), claude_running=False)  # no Claude has the old limit
    assert idle.launch(spec(), resume=True).max_budget_usd == 5.0
    running = Settings(spec(budget_usd=2.0))
    assert running.change(_wire.SetBudget(None), claude_running=True) and running.pending == {"budget": None}
    assert running.launch(spec(), resume=True).max_budget_usd is None


def test_a_turns_cost_is_the_step_of_claudes_running_total_and_comes_off_the_budget() -> None:
    settings = Settings(spec(cost_baseline=1.0, budget_usd=0.5))
    assert settings.count_cost(1.25) == pytest.approx(0.25) and settings.budget_left == pytest.approx(0.25)
    # a total below the last one is a new conversation's: all of it is this turn's
    assert settings.count_cost(0.25) == pytest.approx(0.25) and settings.budget_spent
    assert settings.count_cost(None) == 0.0 and settings.last_cost == 0.25
    assert settings.launch(spec(), resume=True).max_budget_usd == 0.0  # never a negative limit


def test_no_cap_is_never_spent() -> None:
    settings = Settings(spec())
    settings.count_cost(100.0)
    assert not settings.budget_spent and settings.budget_left is None


def test_an_answer_adds_its_rules_once_and_may_switch_the_mode() -> None:
    settings = Settings(spec(allowed_tools=("Read",)))
    settings.permitted(("Read", "Edit", "Edit"), "accept-edits")
    assert settings.allowed_tools == ["Read", "Edit"] and settings.mode is PermissionMode.ACCEPT_EDITS
    assert not settings.pending  # Claude switched itself: no restart


def test_what_claude_says_it_runs_is_reported_when_it_changes() -> None:
    settings = Settings(spec(permission_mode="plan"))
    assert settings.claude_says("claude-x", PermissionMode.PLAN) == [{"claude_model": "claude-x"}]
    assert settings.claude_says("claude-x", None) == []
    assert settings.claude_says(None, PermissionMode.ASK) == [{"mode": "ask"}] and settings.mode is PermissionMode.ASK
