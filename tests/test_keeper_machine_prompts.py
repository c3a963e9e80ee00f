"""The permission requests Claude waits on (``keeper._prompts``): what a request reports
before it is answered, and the one way each ends — the user's answer, the timeout's
denial, or Claude no longer waiting."""

from __future__ import annotations

import json
from typing import Any

from protocol import EventKind
from supervisord_claude import _wire
from supervisord_claude.keeper._actions import ArmTimer, CancelTimer, Emit, Write
from supervisord_claude.keeper._prompts import Prompts, timer_key

TURN = {"message_id": 7}


def request(request_id: str = "r1", tool: str = "Bash", **tool_input: Any) -> dict[str, Any]:
    return {"request_id": request_id, "tool_name": tool, "input": tool_input or {"command": "touch x"}}


def test_a_request_arms_its_timer_and_reports_what_always_allow_would_add() -> None:
    prompts = Prompts("/work", timeout=600)
    arm, event = prompts.ask(request(), TURN)
    assert arm == ArmTimer(timer_key("r1"), 600)
    assert event.kind is EventKind.PERMISSION_REQUEST and event.body["always"] == ["Bash(touch *)"]
    assert event.body["message_id"] == 7 and prompts.waiting == {"r1": event.body}


def test_a_file_tool_deep_in_the_session_offers_each_directory_on_the_way() -> None:
    _, event = Prompts("/work", 600).ask(request(tool="Edit", file_path="/work/a/b/f.py"), {})
    assert event.body["always_dirs"] == ["/work", "/work/a", "/work/a/b"]


def test_a_question_reports_no_rule_and_a_plan_comes_from_the_tool_call_of_the_turn() -> None:
    prompts = Prompts("/work", 600)
    _, question = prompts.ask(request("q", tool="AskUserQuestion", questions=[]), {})
    assert "always" not in question.body
    prompts.tool_use({"tool_use_id": "t1", "input": {"plan": "1. do it"}})
    _, plan = prompts.ask({"request_id": "p", "tool_name": "ExitPlanMode", "input": {}, "tool_use_id": "t1"}, {})
    assert plan.body["tool_use_input"] == {"plan": "1. do it"}
    prompts.turn_ended({})  # the next turn's plan is its own
    _, later = prompts.ask({"request_id": "p2", "tool_name": "ExitPlanMode", "input": {}, "tool_use_id": "t1"}, {})
    assert "tool_use_input" not in later.body


def test_the_users_answer_goes_to_claude_once_and_its_timer_is_cancelled() -> None:
    prompts = Prompts("/work", 600)
    prompts.ask(request(), TURN)
    permit = _wire.Permit("r1", {"behavior": "allow"}, {"allow": True, "by": "user"})
    cancel, write, resolved = prompts.answer(permit, TURN)
    assert cancel == CancelTimer(timer_key("r1"))
    assert isinstance(write, Write) and json.loads(write.line)["response"]["response"] == {"behavior": "allow"}
    assert resolved == Emit(EventKind.PERMISSION_RESOLVED, {"request_id": "r1", "allow": True, "by": "user",
                                                             "message_id": 7})
    assert prompts.answer(permit, TURN) == [] and prompts.timed_out(timer_key("r1"), TURN) == []


def test_no_answer_in_time_is_a_denial_said_in_the_units_of_the_timeout() -> None:
    for timeout, said in [(60, "No answer within 60 seconds: denied."), (600, "No answer within 10 minutes: denied.")]:
        prompts = Prompts("/work", timeout)
        prompts.ask(request(), TURN)
        write, resolved = prompts.timed_out(timer_key("r1"), TURN)
        assert isinstance(write, Write) and json.loads(write.line)["response"]["response"]["behavior"] == "deny"
        assert isinstance(resolved, Emit) and resolved.body == {"request_id": "r1", "allow": False, "by": "timeout",
                                                                "message": said, "message_id": 7}
        assert not prompts.waiting and prompts.answer(_wire.Permit("r1", {}, {}), TURN) == []


def test_requests_are_void_when_claude_no_longer_waits_without_a_word_to_claude() -> None:
    prompts = Prompts("/work", 600)
    prompts.ask(request("r1"), TURN)
    prompts.ask(request("r2"), TURN)
    actions = prompts.void("Claude exited", TURN)
    assert actions == [CancelTimer(timer_key("r1")), Emit(EventKind.PERMISSION_RESOLVED, {
        "request_id": "r1", "allow": False, "by": "claude", "message": "Claude exited", "message_id": 7}),
        CancelTimer(timer_key("r2")), Emit(EventKind.PERMISSION_RESOLVED, {
            "request_id": "r2", "allow": False, "by": "claude", "message": "Claude exited", "message_id": 7})]
    assert not prompts.waiting and prompts.void("again", TURN) == []
