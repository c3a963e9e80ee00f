"""What the keeper's state machine asks its adapter to do: the actions
``_machine.KeeperMachine`` returns and ``_keeper.Keeper`` carries out, in order
(as h11 keeps its events apart from its connection's state machine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from protocol import EventKind

from .. import _wire


@dataclass(frozen=True, slots=True)
class Write:
    """A line to Claude's stdin. When it cannot be written and ``interrupt_id`` is set,
    feed ``interrupt_not_written`` (the supervisor waits to hear of that interrupt)."""

    line: bytes
    interrupt_id: str | None = None


@dataclass(frozen=True, slots=True)
class Report:
    msg: _wire.Message  # to the supervisor (a ``Numbered`` one is kept until acked)


@dataclass(slots=True)  # (not frozen, though never changed: it is made for every event, in half the time)
class Emit:
    kind: EventKind  # a session event to the supervisor: ``Report(KeeperEvent)`` unbuilt
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StartClaude:
    run: int  # names this Claude in the events fed back about it
    argv: list[str]
    cwd: str


@dataclass(frozen=True, slots=True)
class StopClaude:
    """SIGTERM, a grace, SIGKILL to its group, then feed ``claude_stopped``; ``at_once``:
    SIGKILL now and feed nothing (a Claude that started after the keeper began to end)."""

    run: int
    at_once: bool = False


@dataclass(frozen=True, slots=True)
class ArmTimer:
    key: str  # feed ``timer_fired(key)`` this long from now (replacing one of that key)
    delay: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    key: str


@dataclass(frozen=True, slots=True)
class Finish:
    exit_code: int  # the keeper exits (its Bye is reported just before)


Action = Write | Report | Emit | StartClaude | StopClaude | ArmTimer | CancelTimer | Finish
