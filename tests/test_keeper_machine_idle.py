"""The session's idle timer (``keeper._idle``): a new timeout takes effect at once on an
armed countdown and only then; cancelling a timer that is not armed asks nothing."""

from __future__ import annotations

from supervisord_claude.keeper._actions import ArmTimer, CancelTimer
from supervisord_claude.keeper._idle import IDLE_TIMER, IdleTimer


def test_a_new_timeout_restarts_an_armed_countdown_with_it() -> None:
    idle = IdleTimer(600)
    assert idle.arm() == ArmTimer(IDLE_TIMER, 600)
    assert idle.set_timeout(60) == [ArmTimer(IDLE_TIMER, 60)]


def test_a_new_timeout_while_busy_is_the_next_countdowns() -> None:
    idle = IdleTimer(600)
    assert idle.set_timeout(60) == [] and not idle.armed
    assert idle.arm() == ArmTimer(IDLE_TIMER, 60)


def test_only_an_armed_timer_is_cancelled_and_an_expired_one_is_not_armed() -> None:
    idle = IdleTimer(600)
    assert idle.cancel() == []
    idle.arm()
    assert idle.cancel() == [CancelTimer(IDLE_TIMER)] and idle.cancel() == []
    idle.arm()
    idle.fired()
    assert idle.cancel() == [] and idle.set_timeout(5) == []
