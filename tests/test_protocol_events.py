"""Each kind of event's ``TypedDict`` (``protocol._events``) agrees with what the
supervisor emits: a real supervisor with the fake claude plays a session through every
kind of event, and every stored event has its type's required fields and no field its
type does not declare — a field added on one side only fails here, not in a client that
reads it (or never learns of it). The render tables of claudectl and the bot take each
kind's type."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import typing
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from bot import _show as show
from protocol import EVENT_TYPES, EventKind
from supervisord_claude.ctl import _events as ctl_events

from .conftest import SupervisorProcess
from .test_steering import claude_has

#: small thresholds, so the watcher's events come within seconds
CONFIG = "stall_after = 1.5\nremind_after = 1\npermission_timeout = 300\n"


def problems(event: Mapping[str, Any]) -> list[str]:
    """What in ``event`` its kind's TypedDict does not say (empty: it agrees)."""
    kind = event["kind"]
    typed = EVENT_TYPES.get(kind)
    if typed is None:
        return [f"kind {kind!r} has no type in protocol.EVENT_TYPES"]
    required, declared = typed.__required_keys__, typed.__required_keys__ | typed.__optional_keys__
    missing = sorted(required - set(event))
    unknown = sorted(set(event) - declared)
    return [f"{kind}: " + "; ".join(([f"missing {missing}"] if missing else [])
                                    + ([f"not in {typed.__name__}: {unknown}"] if unknown else []))] \
        if missing or unknown else []


def test_the_check_sees_a_field_added_on_either_side() -> None:
    result = {"id": 1, "session": "a", "seq": 1, "ts": 1.0, "kind": "taken", "message_id": 2, "turn": 1}
    assert problems(result) == []
    assert problems({**result, "new_field": 1}) == ["taken: not in TakenEvent: ['new_field']"]
    assert problems({k: v for k, v in result.items() if k != "turn"}) == ["taken: missing ['turn']"]


def test_every_kind_has_a_type() -> None:
    assert set(EVENT_TYPES) == set(EventKind)
    assert all(typing.get_type_hints(t)["kind"] == typing.Literal[kind.value] for kind, t in EVENT_TYPES.items())


def _event_type(render: Callable[..., Any]) -> Any:
    hints = typing.get_type_hints(getattr(render, "__wrapped__", render))
    return next(hint for name, hint in hints.items() if name != "return")


def test_claudectl_renders_each_kind_with_its_type() -> None:
    assert {kind: _event_type(render) for kind, render in ctl_events.RENDER.items()} == \
        {kind: EVENT_TYPES[EventKind(kind)] for kind in ctl_events.RENDER}


def test_the_bot_shows_each_kind_with_its_type() -> None:
    # (a handler takes Shown[<its kind's type>], or Delivery[...])
    assert {kind: typing.get_args(_event_type(handler)) for kind, handler in show.HANDLERS.items()} == \
        {kind: (EVENT_TYPES[kind],) for kind in show.HANDLERS}


@pytest.mark.system
def test_every_event_the_supervisor_emits_has_its_kinds_fields(make_supervisor) -> None:
    sup: SupervisorProcess = make_supervisor(idle_timeout=60, config=CONFIG).start()
    sup.request("create", session="alpha")

    def turn(text: str, kind: str = "result") -> int:
        """Send ``text``; its id once its turn has an event of ``kind``."""
        message_id: int = sup.request("send", session="alpha", text=text)["message_id"]
        sup.wait_event("alpha", lambda e: e["kind"] in (kind, "message_failed") and e.get("message_id") == message_id,
                       what=f"a {kind} event of {text!r}")
        return message_id

    def request_of(message_id: int) -> dict[str, Any]:
        return sup.wait_event("alpha", lambda e: e["kind"] == "permission_request"
                              and e.get("message_id") == message_id)

    turn("tool")  # starting, user, tool_use, tool_result, assistant_text, result, idle
    sup.request("set_timeout", session="alpha", minutes=5)  # settings
    sup.request("set_mode", session="alpha", mode="plan")
    # a question: its request, a reminder of it, its answer
    asked = turn("askq", "reminder")
    sup.request("answer", session="alpha", request_id=request_of(asked)["request_id"], answers=[["Blue"]])
    sup.wait_event("alpha", lambda e: e["kind"] == "result" and e.get("message_id") == asked)
    # a plan (the request carries it as tool_use_input) approved into a mode
    planned = turn("planexit", "permission_request")
    sup.request("permit", session="alpha", request_id=request_of(planned)["request_id"], allow=True,
                mode="ask")
    sup.wait_event("alpha", lambda e: e["kind"] == "result" and e.get("message_id") == planned)
    # a file tool's request, with the rules "always" would add; denied
    edit = turn("needtool:Edit", "permission_request")
    sup.request("permit", session="alpha", request_id=request_of(edit)["request_id"], allow=False,
                message="not now")
    sup.wait_event("alpha", lambda e: e["kind"] == "result" and e.get("message_id") == edit)
    # a hung tool call: stalled
    gate = sup.base / "gate"
    stuck = turn(f"stuck:{gate}", "stalled")
    gate.touch()
    sup.wait_event("alpha", lambda e: e["kind"] == "result" and e.get("message_id") == stuck)
    # a message sent while Claude answers joins the turn: steered, taken
    join = sup.base / "join"
    first = turn(f"joinpoint:{join} gathering", "user")
    sup.wait_received("gathering")
    sup.request("send", session="alpha", text="also this")
    sup.wait_event("alpha", lambda e: e["kind"] == "steered")
    claude_has(sup, "also this")  # (read before the join point: it joins the turn, not the next)
    join.touch()
    sup.wait_event("alpha", lambda e: e["kind"] == "result" and e.get("message_id") == first)
    sup.request("set_model", session="alpha", model="opus")  # settings; Claude restarts (resuming)
    turn("crash", "message_failed")  # error, message_failed, the failed state
    events = sup.events("alpha")
    assert [p for event in events for p in problems(event)] == []
    assert {e["kind"] for e in events} == set(EventKind), "the scenario no longer shows every kind"


@pytest.mark.system
def test_the_events_of_a_session_open_in_a_terminal_have_their_kinds_fields(make_supervisor) -> None:
    """The attached state (the terminal's pid, tty, start) and what is said there
    (``from: "terminal"``, no message id)."""
    sup: SupervisorProcess = make_supervisor(idle_timeout=60).start()
    sup.request("create", session="alpha")
    sup.ctl("send", "alpha", "first", "--wait", check=True)
    rec = sup.session("alpha")
    terminal = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        with sup.client(timeout=60) as c:
            c.request("attach", session="alpha", pid=terminal.pid, tty="/dev/pts/test")
        transcript = (sup.home / ".claude" / "projects" / re.sub(r"[^A-Za-z0-9]", "-", rec["cwd"])
                      / f"{rec['session_id']}.jsonl")
        transcript.parent.mkdir(parents=True, exist_ok=True)
        with transcript.open("a") as f:
            for entry in ({"type": "user", "message": {"role": "user", "content": "typed at the desk"}},
                          {"type": "assistant", "message": {"role": "assistant", "content": [
                              {"type": "text", "text": "answered at the desk"},
                              {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}}]}},
                          {"type": "user", "message": {"role": "user", "content": [
                              {"type": "tool_result", "tool_use_id": "t1", "content": "a.txt"}]}}):
                f.write(json.dumps(entry) + "\n")
        sup.wait_event("alpha", lambda e: e["kind"] == "tool_result" and e.get("from") == "terminal")
    finally:
        terminal.kill()
        terminal.wait()
    sup.wait_state("alpha", "suspended")
    events = sup.events("alpha")
    assert [p for event in events for p in problems(event)] == []
    [attached] = [e for e in events if e["kind"] == "state" and e["state"] == "attached"]
    assert {"pid", "tty", "since", "start"} <= set(attached)
    assert len([e for e in events if e.get("from") == "terminal"]) == 4
