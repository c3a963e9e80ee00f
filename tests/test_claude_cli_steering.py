"""Conformance tier for steering (issue #29): the real Claude Code CLI, through the
supervisor, offline against ``fake_anthropic.py``. What ``test_steering.py`` checks with the
fake claude, here against what the real CLI does with a message written mid-turn. Run
alone: ./scripts/test -m claude_cli"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from .conftest import SupervisorProcess
from .fake_anthropic import FakeAnthropic
from .test_claude_cli import api, real  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.claude_cli, pytest.mark.timeout(120)]

#: how Claude Code wraps a message the user sent mid-turn in its next API request (2.1.x)
MID_TURN_WRAPPER = "The user sent a new message while you were working:"


def held_turn(sup: SupervisorProcess) -> tuple[int, dict]:
    """A turn held at a permission prompt (a Bash command that writes): Claude goes on, to
    its next model request, only once it is answered. (its message id, the request)"""
    target = Path(sup.session("alpha")["cwd"]) / "made-by-bash.txt"
    first = sup.request("send", session="alpha", text=f"bash:touch+{target}")["message_id"]
    request = sup.wait_event("alpha", lambda e: e["kind"] == "permission_request" and e.get("message_id") == first,
                             timeout=60)
    return first, request


def mid_turn_texts(fake_api: FakeAnthropic) -> list[str]:
    """The texts Claude Code sent the API wrapped as mid-turn messages."""
    return [block.get("text", "") for body in fake_api.turn_requests() for msg in body["messages"]
            for block in (msg["content"] if isinstance(msg["content"], list) else [])
            if isinstance(block, dict) and MID_TURN_WRAPPER in str(block.get("text", ""))]


def test_a_message_sent_mid_turn_reaches_the_api_inside_claude_codes_mid_turn_wrapper(real, api) -> None:  # noqa: F811
    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    first, request = held_turn(sup)
    # while the prompt waits, the message steers: Claude reads it once the prompt is answered
    sent = sup.request("send", session="alpha", text="also say pelican")
    assert sent["steering"]
    sup.wait_event("alpha", lambda e: e["kind"] == "steered" and e["message_id"] == sent["message_id"])
    sup.ctl("permit", "alpha", request["request_id"], "--allow", check=True)
    result = sup.wait_event("alpha", lambda e: e["kind"] == "result", timeout=60)
    assert result["message_id"] == first and result["steered"] == [sent["message_id"]] and not result["is_error"]
    [wrapped] = mid_turn_texts(api)
    assert "also say pelican" in wrapped
    evs = sup.events("alpha")
    assert [e["turn"] for e in evs if e["kind"] == "taken"] == [first]
    assert len([e for e in evs if e["kind"] == "result"]) == 1  # never also a turn of its own
    # no other request carried it as a plain user message
    plain = [m for body in api.turn_requests() for m in body["messages"] if m["role"] == "user"
             and "also say pelican" in json.dumps(m) and MID_TURN_WRAPPER not in json.dumps(m)]
    assert plain == []


def test_send_queue_produces_a_turn_of_its_own(real, api) -> None:  # noqa: F811
    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    first, request = held_turn(sup)
    queued = sup.request("send", session="alpha", text="a question of its own", queue=True)
    assert not queued["steering"] and queued["ahead"] == 1  # (the turn running)
    sup.ctl("permit", "alpha", request["request_id"], "--allow", check=True)
    with sup.follow("alpha") as events:
        results = events.wait_count(lambda e: e["kind"] == "result", 2, what="both results")
    assert [r["message_id"] for r in results] == [first, queued["message_id"]]
    assert results[1]["text"].startswith("echo: a question of its own") and "steered" not in results[0]
    assert mid_turn_texts(api) == []


def test_a_steered_message_sent_in_the_last_moment_of_a_turn_becomes_the_next_turn(real, api) -> None:  # noqa: F811
    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    first = sup.request("send", session="alpha", text="slow:4 the final answer")["message_id"]
    api.wait_requests(1)  # the final answer is streaming: no further model request in this turn
    late = sup.request("send", session="alpha", text="too late for that one")["message_id"]
    sup.wait_event("alpha", lambda e: e["kind"] == "steered" and e["message_id"] == late)
    with sup.follow("alpha") as events:
        results = events.wait_count(lambda e: e["kind"] == "result", 2, what="both results", timeout=90)
    assert [r["message_id"] for r in results] == [first, late]
    assert "steered" not in results[0] and results[1]["text"].startswith("echo: too late for that one")
    [turn_start] = [e for e in sup.events("alpha") if e["kind"] == "user" and e["message_id"] == late]
    assert turn_start["steered"]
    assert mid_turn_texts(api) == []
    # Claude got it once (the keeper did not write it again for the next turn)
    assert sum(json.dumps(body["messages"][-1]).count("too late for that one") for body in api.turn_requests()) == 1


def test_kill_9_of_the_keeper_with_a_steered_message_in_flight_ends_it_not_delivered(real, api) -> None:  # noqa: F811
    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    first, _ = held_turn(sup)
    steered = sup.request("send", session="alpha", text="in flight")["message_id"]
    sup.wait_event("alpha", lambda e: e["kind"] == "steered" and e["message_id"] == steered)
    keeper = sup.keeper_pid("alpha")
    assert keeper is not None
    os.kill(keeper, signal.SIGKILL)
    failed = sup.wait_event("alpha", lambda e: e["kind"] == "message_failed" and e["message_id"] == steered)
    assert "keeper died" in failed["reason"]
    sup.wait_event("alpha", lambda e: e["kind"] == "message_failed" and e["message_id"] == first)
    assert sup.claude_pids() == []  # its Claude went with it
    # the session works again, and the message that was not delivered was never answered
    assert "echo: after the kill" in sup.ctl("send", "alpha", "after the kill", "--wait", check=True).stdout
    assert not [e for e in sup.events("alpha") if e["kind"] == "result" and e.get("message_id") == steered]
