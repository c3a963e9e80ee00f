"""The session's idle timer: the keeper's ``IdleTimer``.

It owns whether the timer is armed and for how long (the session's idle timeout, which
the supervisor may change while it runs: an armed timer starts again with the new one).
When it expires, the machine decides what it means (suspend, or try again later while
anything is still going on); the timer only says which actions arm or cancel it. Pure:
the clock is the adapter's (``ArmTimer`` / ``CancelTimer``, fed back as ``timer_fired``).
"""

from __future__ import annotations

from ._actions import Action, ArmTimer, CancelTimer

IDLE_TIMER = "idle"  # its key among the keeper's timers


class IdleTimer:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.armed = False

    def arm(self) -> ArmTimer:
        """(Re)start the countdown from now."""
        self.armed = True
        return ArmTimer(IDLE_TIMER, self.timeout)

    def cancel(self) -> list[Action]:
        if not self.armed:
            return []
        self.armed = False
        return [CancelTimer(IDLE_TIMER)]

    def set_timeout(self, seconds: float) -> list[Action]:
        """A new timeout: an armed timer starts again with it; else it is the next one's."""
        self.timeout = seconds
        return [self.arm()] if self.armed else []

    def fired(self) -> None:
        self.armed = False
