"""One vocabulary for cost: a ``result`` event names the turn's cost (``turn_cost_usd``)
and the conversation's running total (``conversation_cost_usd``) — claudectl printed the
total as the turn's cost while the bot printed the turn's own; now both print the same
figure, from events of this release and from those stored before it (old names only)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bot._render import footer_text
from protocol import SessionState, conversation_cost, turn_cost
from supervisord_claude import _wire
from supervisord_claude.ctl._events import render_event

from .test_lifecycle import Harness

RESULTS = [
    # this release: both names, and the old ones beside them (protocol v1 keeps them)
    {"turn_cost_usd": 0.0123, "conversation_cost_usd": 0.4567, "cost_delta": 0.0123, "cost_usd": 0.4567},
    # stored before the new names
    {"cost_delta": 0.02, "cost_usd": 0.75},
    # the first turn of a conversation: the turn is the whole total
    {"turn_cost_usd": 0.5, "conversation_cost_usd": 0.5},
]


@pytest.mark.parametrize("costs", RESULTS)
def test_claudectl_and_the_bot_print_the_same_cost_for_a_turn(costs: dict[str, Any]) -> None:
    event = {"kind": "result", "session": "a", "seq": 3, "id": 9, "ts": 1.0, "message_id": 1, "text": "done",
             "is_error": False, "duration_ms": 1200, "num_turns": 1, **costs}
    printed_by_claudectl = re.findall(r"\$\d+\.\d+", render_event(event))
    shown_by_the_bot = re.findall(r"\$\d+\.\d+", footer_text(event) or "")
    assert printed_by_claudectl == shown_by_the_bot == [f"${turn_cost(event):.4f}"]
    assert conversation_cost(event) == costs.get("conversation_cost_usd", costs.get("cost_usd"))


def test_a_result_names_the_turns_cost_and_the_conversations_total(tmp_path: Path) -> None:
    """Claude's total_cost_usd runs on across turns (and --resume): the supervisor names
    the difference the turn's cost, the total the conversation's, on every result; the
    session's cost_usd is the sum of its turns."""
    h = Harness(tmp_path)
    try:
        h.op("create", session="a")
        first = h.op("send", session="a", text="one")["message_id"]
        pid, _ = h.spawned()
        ident = h.hello("a", pid)
        h.state(ident, SessionState.IDLE)
        second = h.op("send", session="a", text="two")["message_id"]
        totals = {first: 0.25, second: 0.75}
        # the keeper's report, as its machine makes it: Claude's total as cost_usd, the
        # difference as cost_delta
        previous = 0.0
        for message_id in (first, second):
            h.keeper_says(ident, _wire.KeeperEvent.of("user", {"message_id": message_id, "text": "t",
                                                               "attachments": []}))
            h.keeper_says(ident, _wire.KeeperEvent.of("result", {
                "message_id": message_id, "text": "echo", "cost_usd": totals[message_id],
                "cost_delta": totals[message_id] - previous}))
            previous = totals[message_id]
        results = [e for e in h.events("a") if e["kind"] == "result"]
        assert [(e["turn_cost_usd"], e["conversation_cost_usd"]) for e in results] == [(0.25, 0.25), (0.5, 0.75)]
        assert [(e["cost_delta"], e["cost_usd"]) for e in results] == [(0.25, 0.25), (0.5, 0.75)]  # v1 keeps them
        assert h.store.get_session("a").cost_usd == pytest.approx(0.75)  # the session: its turns' sum
    finally:
        h.store.close()
