"""claudectl's text for events (``claudectl tail``, and the notes of ``send --wait``): one
case per branch of every event kind, each the exact line claudectl printed before
``render_event`` became a table keyed by kind — so the table changed no output."""

from __future__ import annotations

from typing import Any

import pytest

from protocol import EventKind
from supervisord_claude.ctl._events import RENDER, LiveAnswer, render_event

ASK = {"questions": [{"question": "Colour?", "multiSelect": True, "options": [{"label": "Red"}, {"label": "Blue"}]},
                     {"question": "Size?", "options": [{"label": "S"}, "junk"]}]}

CASES: list[tuple[dict[str, Any], str]] = [
    ({"kind": "state", "state": "idle", "reason": "turn"}, "state idle (turn)"),
    ({"kind": "state", "state": "resuming", "reason": "message", "idle_for": 4000},
     "state resuming (message) (idle for 66 min)"),
    # reasons added since (and any a newer supervisor may add) are shown as they come
    ({"kind": "state", "state": "resuming", "reason": "rules-change"}, "state resuming (rules-change)"),
    ({"kind": "state", "state": "failed", "reason": "some-future-reason"}, "state failed (some-future-reason)"),
    ({"kind": "user", "message_id": 3, "text": "hello", "attachments": []}, "> hello"),
    ({"kind": "steered", "message_id": 4, "turn": 3, "text": "and this"},
     ">> and this (sent while message 3 was answered)"),
    ({"kind": "taken", "message_id": 4, "turn": 3}, "message 4 joined the turn of message 3"),
    ({"kind": "assistant_text", "text": "Hi there"}, "Hi there"),
    ({"kind": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls " + "x" * 300}},
     'tool Bash: {"command": "ls ' + "x" * 184),
    ({"kind": "tool_result", "tool_use_id": "t1", "content": "file1\nfile2", "is_error": False},
     "tool result: file1\nfile2"),
    ({"kind": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "é" * 300}]},
     'tool result: [{"type": "text", "text": "' + "é" * 173),
    ({"kind": "result", "message_id": 3, "is_error": False, "duration_ms": 1200, "cost_usd": 0.5,
      "turn_cost_usd": 0.0123}, "done in 1.2 s, cost $0.0123"),
    ({"kind": "result", "message_id": 3, "is_error": True, "duration_ms": 10, "cost_usd": 0.5},
     "error in 0.0 s, cost $0.0000"),
    ({"kind": "result", "message_id": 3, "interrupted": True, "duration_ms": 10, "cost_usd": 0.5,
      "cost_delta": 0.002}, "interrupted in 0.0 s, cost $0.0020"),
    ({"kind": "error", "message": "Claude exited"}, "error: Claude exited"),
    ({"kind": "message_failed", "message_id": 5, "reason": "dropped at your request"},
     "message 5 not delivered: dropped at your request"),
    ({"kind": "settings", "model": "opus", "idle_timeout": 600, "allowed_tools": ["Bash(ls *)"]},
     'settings: model opus, idle timeout 600, allowed tools ["Bash(ls *)"]'),
    # the permission mode once, by either name (an event of an earlier release has only "mode")
    ({"kind": "settings", "permission_mode": "plan", "mode": "plan"}, "settings: permission mode plan"),
    ({"kind": "settings", "mode": "ask"}, "settings: permission mode ask"),
    ({"kind": "permission_request", "request_id": "r1", "tool_name": "Bash", "input": {"command": "rm -rf build"}},
     'Claude asks to use Bash: {"command": "rm -rf build"}\n'
     "  answer: claudectl permit work r1 --allow|--deny [--always] (id r1)"),
    ({"kind": "permission_request", "request_id": "r2", "tool_name": "AskUserQuestion", "input": ASK},
     "Claude asks:\n  Colour? (pick any): Red / Blue\n  Size?: S\n  answer: claudectl answer work r2 LABEL... (id r2)"),
    ({"kind": "permission_request", "request_id": "r3", "tool_name": "ExitPlanMode", "input": {"plan": "1. do it"}},
     "Claude's plan:\n1. do it\n  approve: claudectl permit work r3 --allow [--mode accept-edits]\n"
     "  keep planning: claudectl permit work r3 --deny (id r3)"),
    ({"kind": "permission_request", "request_id": "r4", "tool_name": "ExitPlanMode", "input": None},
     "Claude's plan:\n(no plan text)\n  approve: claudectl permit work r4 --allow [--mode accept-edits]\n"
     "  keep planning: claudectl permit work r4 --deny (id r4)"),
    ({"kind": "permission_resolved", "request_id": "r1", "allow": True, "by": "user"}, "request allowed (r1)"),
    ({"kind": "permission_resolved", "request_id": "r1", "allow": False, "by": "timeout"},
     "request denied (no answer in time) (r1)"),
    ({"kind": "permission_resolved", "request_id": "r1", "allow": False, "by": "claude", "message": "cancelled"},
     "request denied (cancelled) (r1)"),
    ({"kind": "permission_resolved", "request_id": "r2", "allow": True, "by": "user", "answers": {"Colour?": "Rød"}},
     'request answered {"Colour?": "Rød"} (r2)'),
    ({"kind": "permission_resolved", "request_id": "r1", "allow": True, "by": "user",
      "always": ["Bash(rm *)", "Bash(ls *)"]}, "request always allowed Bash(rm *), Bash(ls *) (r1)"),
    ({"kind": "reminder", "request_id": "r1", "tool_name": "Bash", "detail": "rm -rf build", "waited": 300.4,
      "denied_in": 3300}, "reminder: Claude has waited 5 min for your answer to Bash (rm -rf build) (id r1; denied"
                          " in 55 min unless answered)"),
    ({"kind": "reminder", "request_id": "r2", "tool_name": "AskUserQuestion", "waited": 30, "denied_in": 7200},
     "reminder: Claude has waited 30 s for your answer to a question (id r2; denied in 2 h unless answered)"),
    ({"kind": "stalled", "doing": "tool", "tool": "Bash", "detail": "sleep 999", "silent_for": 600,
      "cpu_percent": 0.1}, "stalled: no output for 10 min and almost no CPU (0.1%) while running Bash (sleep 999);"
                           " claudectl interrupt work stops it"),
    ({"kind": "stalled", "doing": "writing", "silent_for": 95, "cpu_percent": 0},
     "stalled: no output for 1.583 min and almost no CPU (0%) while writing; claudectl interrupt work stops it"),
    ({"kind": "from_the_future", "x": 1}, "from_the_future"),  # (a newer supervisor's kind: its name)
]


@pytest.mark.parametrize(("body", "text"), CASES, ids=[f"{i}-{body['kind']}" for i, (body, _) in enumerate(CASES)])
def test_each_kind_of_event_reads_as_claudectl_always_printed_it(body: dict[str, Any], text: str) -> None:
    assert render_event({"session": "work", "seq": 7, "id": 70, "ts": 1.0, **body}) == f"[work #7] {text}"


def test_what_was_typed_in_claude_codes_own_terminal_is_marked() -> None:
    event = {"session": "work", "seq": 8, "kind": "user", "text": "typed at the desk", "from": "terminal"}
    assert render_event(event) == "[work #8] 📟 > typed at the desk"


def test_every_event_kind_has_its_text_and_each_is_tested_here() -> None:
    assert set(RENDER) == set(EventKind)
    assert {body["kind"] for body, _ in CASES} >= set(EventKind)


def piece(offset: int, text: str) -> dict[str, Any]:
    return {"kind": "assistant_delta", "session": "work", "message_id": 3, "offset": offset, "text": text}


def test_live_text_prints_what_continues_the_answer_and_skips_what_came_again(
        capsys: pytest.CaptureFixture[str]) -> None:
    live = LiveAnswer()
    for offset, text in ((0, "Hello"), (5, ", wor"), (0, "Hello, wor"), (10, "ld")):  # (a reconnect: all again)
        live.add(piece(offset, text))
    assert capsys.readouterr().out == "Hello, world" and live.shown == "Hello, world"


def test_after_a_supervisor_restart_no_piece_of_the_new_ones_text_is_printed_out_of_place(
        capsys: pytest.CaptureFixture[str]) -> None:
    # the new supervisor holds the answer from where it started (here: 24 characters on);
    # its second piece begins exactly where what was shown ends, so it lines up by length
    answer = "echo: stream:12 " + "a long story told across a restart, " * 6
    live = LiveAnswer()
    live.add(piece(0, answer[:60]))
    since_restart = answer[84:]
    live.add(piece(0, since_restart[:60]))
    live.add(piece(60, since_restart[60:]))
    assert capsys.readouterr().out == answer[:60]  # (the stored answer completes it)
    assert live.shown == answer[:60] and live.lost


@pytest.mark.parametrize("duration_ms", [1200, 4200, 59_940, 125_000, 4_000_000])
def test_claudectl_and_the_bot_word_a_turns_duration_the_same_way(duration_ms: int) -> None:
    """The same figure, said the same way: claudectl's result line and the bot's footer."""
    from bot._render import footer_text

    event = {"kind": "result", "session": "work", "seq": 3, "message_id": 1, "is_error": False,
             "duration_ms": duration_ms, "turn_cost_usd": 0.01, "num_turns": 1}
    said_by_claudectl = render_event(event).split(" in ", 1)[1].split(", cost ")[0]
    footer = footer_text(event)
    assert footer is not None
    said_by_the_bot = footer.split(" · ")[1]
    assert said_by_claudectl == said_by_the_bot
    assert "ms" not in said_by_claudectl.split()


def test_a_turns_duration_reads_as_a_person_says_it() -> None:
    from protocol import turn_duration_text

    assert [turn_duration_text(ms) for ms in (4200, 59_940, 59_960, 125_000, 180_000, 4_000_000, 7_200_000)] == [
        "4.2 s", "59.9 s", "1 min", "2 min 5 s", "3 min", "1 h 7 min", "2 h"]
