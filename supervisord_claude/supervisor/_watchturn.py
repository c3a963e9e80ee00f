"""What the watcher keeps of one running turn, and the words it says it in.

``_Turn`` holds a running turn's tool calls, the prompts that wait for the user, the CPU
samples of its window and whether its stall was told; ``Doing`` names what a turn does;
``detail_of`` says in one short line what a tool call does. Plain data and pure functions:
the watcher (``_watch``) feeds and reads them; no I/O, no clock.
"""

from __future__ import annotations

import collections
import enum
import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Protocol

#: how much of a tool call's input is shown (its command, file, URL...)
DETAIL_CHARS = 120
#: the input fields that say what a tool call does, in order of preference
_DETAIL_KEYS = ("command", "file_path", "path", "pattern", "url", "query", "description", "prompt")


class Doing(enum.StrEnum):
    WAITING = "waiting"  # for the user: a permission request, a question, a plan
    STALLED = "stalled"  # no output and (almost) no CPU for stall_after
    TOOL = "tool"  # a tool call runs
    WRITING = "writing"  # Claude writes, or thinks about what it read


class CpuReader(Protocol):
    """Where CPU time comes from (``_os.System``; a fake in tests)."""

    def tree_cpu(self, roots: Collection[int]) -> dict[int, float]: ...


def detail_of(tool_input: Any) -> str:
    """What a tool call does, in one short line: its command, file, URL, questions..."""
    detail = ""
    if isinstance(tool_input, dict):
        questions = tool_input.get("questions")
        if isinstance(questions, list):
            detail = " / ".join(str(q.get("question")) for q in questions if isinstance(q, dict))
        else:
            detail = next((tool_input[k] for k in _DETAIL_KEYS if isinstance(tool_input.get(k), str)), "")
            if not detail and tool_input:
                detail = json.dumps(tool_input, ensure_ascii=False, default=str)[:DETAIL_CHARS * 2]
    detail = " ".join(detail.split())
    return detail if len(detail) <= DETAIL_CHARS else detail[: DETAIL_CHARS - 1] + "…"


@dataclass
class _Tool:
    name: str
    detail: str
    since: float


@dataclass
class _Request:
    request_id: str
    tool_name: str
    detail: str
    since: float
    reminded: bool = False


@dataclass
class _Turn:
    message_id: int | None
    started: float
    last_output: float
    writing_since: float
    tools: dict[str, _Tool] = field(default_factory=dict)  # running, by tool_use_id, oldest first
    requests: dict[str, _Request] = field(default_factory=dict)  # waiting for the user, oldest first
    #: (monotonic time, CPU seconds used since the first sample)
    samples: collections.deque[tuple[float, float]] = field(default_factory=collections.deque)
    used: float = 0.0
    last_total: float | None = None
    cpu_percent: float | None = None  # over the last window, as of the last tick
    stalled: bool = False
    stall_told: bool = False  # a `stalled` event was recorded for this silence



def _request(fields: dict[str, Any], now: float) -> _Request:
    tool_name = str(fields.get("tool_name") or "")
    tool_input = fields.get("input") or fields.get("tool_use_input")
    return _Request(str(fields.get("request_id")), tool_name, detail_of(tool_input), now)


__all__ = ["DETAIL_CHARS", "CpuReader", "Doing", "detail_of"]
