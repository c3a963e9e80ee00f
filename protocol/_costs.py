"""What a turn cost and what its conversation has cost, read from a ``result`` event: one
definition for the supervisor, claudectl and the bot (docs/protocol.md, ``result``).

Claude reports a running total per conversation (``total_cost_usd``, carried on across
``--resume``); a turn's cost is the difference from the total before it. A ``result``
event names both: ``turn_cost_usd`` and ``conversation_cost_usd``. Protocol v1 keeps the
old names of the same figures, ``cost_delta`` (the turn) and ``cost_usd`` (the
conversation), and events stored before the new names carry only those.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TURN_COST = "turn_cost_usd"
CONVERSATION_COST = "conversation_cost_usd"


def _usd(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def turn_cost(result: Mapping[str, Any]) -> float | None:
    """What this turn cost (USD), or None if Claude did not say."""
    return _usd(result[TURN_COST] if TURN_COST in result else result.get("cost_delta"))


def conversation_cost(result: Mapping[str, Any]) -> float | None:
    """What the conversation has cost so far, this turn included (USD), or None."""
    return _usd(result[CONVERSATION_COST] if CONVERSATION_COST in result else result.get("cost_usd"))


def cost_fields(result: Mapping[str, Any]) -> dict[str, float | None]:
    """The two figures under their names, from a result that may carry only the old ones."""
    return {TURN_COST: turn_cost(result), CONVERSATION_COST: conversation_cost(result)}


def usd_text(value: float | None) -> str:
    """A cost as claudectl and the bot show it."""
    return f"${value or 0:.4f}"
