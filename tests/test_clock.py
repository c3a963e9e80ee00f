"""The idle timer, on a fake clock."""

from supervisord_claude._clock import FakeClock, IdleTimer


def make(timeout: float = 10.0):
    clock = FakeClock()
    fired: list[float] = []
    timer = IdleTimer(clock, timeout, lambda: fired.append(clock.monotonic()))
    return clock, timer, fired


def test_fires_once_after_the_timeout() -> None:
    clock, timer, fired = make()
    timer.start()
    clock.advance(9.9)
    assert fired == []
    clock.advance(0.2)
    assert fired == [10.0]
    clock.advance(100)
    assert fired == [10.0]


def test_restart_pushes_the_deadline_back() -> None:
    clock, timer, fired = make()
    timer.start()
    clock.advance(8)
    timer.start()
    clock.advance(8)
    assert fired == []
    clock.advance(2)
    assert fired == [18.0]


def test_cancel_prevents_firing() -> None:
    clock, timer, fired = make()
    timer.start()
    timer.cancel()
    clock.advance(50)
    assert fired == [] and not timer.armed


def test_new_timeout_applies_to_a_running_timer_from_now() -> None:
    clock, timer, fired = make(600)
    timer.start()
    clock.advance(100)
    timer.set_timeout(60)
    clock.advance(59)
    assert fired == []
    clock.advance(1)
    assert fired == [160.0]


def test_new_timeout_on_an_idle_timer_waits_for_the_next_start() -> None:
    clock, timer, fired = make(600)
    timer.set_timeout(5)
    clock.advance(10)
    assert fired == [] and not timer.armed
    timer.start()
    clock.advance(5)
    assert fired == [15.0]
