"""The interrupts the keeper asks Claude for: the keeper's ``Interrupts``.

An interrupt is a control request on Claude's stdin, named by its request id. One the
supervisor asked for (a user's) is reported back exactly once (``InterruptReport``):
when Claude confirms or refuses it, when it cannot be written (Claude's input is
closed), or when Claude exits or is stopped before it answered. The keeper's own (the
supervisor away too long) is reported by nobody. Pure: returns the actions to take.
"""

from __future__ import annotations

from collections.abc import Iterable

from .. import _claude, _wire
from ._actions import Action, Report, Write

TOO_LATE = Report(_wire.InterruptReport(False, "Claude was not answering anything any more when it arrived"
                                               " (the turn had ended)"))


class Interrupts:
    def __init__(self) -> None:
        self._count = 0
        self.asked: set[str] = set()  # request ids of the interrupts the supervisor waits to hear about

    def ask(self, report: bool) -> Write:
        """The control request for Claude; with ``report``, its outcome is reported."""
        self._count += 1
        request_id = f"interrupt-{self._count}"
        if report:
            self.asked.add(request_id)
        return Write(_claude.control_line(request_id, "interrupt"), request_id if report else None)

    def answered(self, request_id: str, error: str | None, steered: Iterable[int]) -> list[Action]:
        """Claude answered control request ``request_id``; ``steered``: the messages it has
        not taken of those written mid-turn (it answers them next)."""
        if request_id not in self.asked:
            return []
        self.asked.discard(request_id)
        said = "confirmed by Claude" if error is None else f"Claude refused it: {error}"
        return [Report(_wire.InterruptReport(error is None, said, tuple(steered)))]

    def not_written(self, request_id: str) -> list[Action]:
        if request_id not in self.asked:
            return []
        self.asked.discard(request_id)
        return [Report(_wire.InterruptReport(False, "Claude's input is closed (it is exiting)"))]

    def void(self, why: str) -> list[Action]:
        """Claude is gone: the interrupts it did not confirm never will be."""
        reports: list[Action] = [Report(_wire.InterruptReport(False, why)) for _ in self.asked]
        self.asked.clear()
        return reports
