"""Time, as an object: the real event-loop clock and a fake one tests can advance."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...


class LoopClock:
    """The running asyncio loop's clock."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop or asyncio.get_running_loop()

    def monotonic(self) -> float:
        return self.loop.time()

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return self.loop.call_later(delay, callback)


class _FakeHandle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that moves only when ``advance`` is called."""

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, _FakeHandle, Callable[[], None]]] = []
        self._order = itertools.count()

    def monotonic(self) -> float:
        return self.now

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        handle = _FakeHandle()
        heapq.heappush(self._queue, (self.now + delay, next(self._order), handle, callback))
        return handle

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while self._queue and self._queue[0][0] <= target:
            when, _, handle, callback = heapq.heappop(self._queue)
            self.now = when
            if not handle.cancelled:
                callback()
        self.now = target


class IdleTimer:
    """Fires ``on_expire`` once ``timeout`` seconds after the last ``start``.

    The keeper starts it when Claude finishes a turn and cancels it on every user
    message; ``set_timeout`` applies a new length to a running timer from now.
    """

    def __init__(self, clock: Clock, timeout: float, on_expire: Callable[[], None]) -> None:
        self._clock = clock
        self.timeout = timeout
        self._on_expire = on_expire
        self._handle: TimerHandle | None = None
        self.deadline: float | None = None

    @property
    def armed(self) -> bool:
        return self._handle is not None

    def start(self, delay: float | None = None) -> None:
        self.cancel()
        wait = self.timeout if delay is None else delay
        self.deadline = self._clock.monotonic() + wait
        self._handle = self._clock.call_later(wait, self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self.deadline = None

    def set_timeout(self, timeout: float) -> None:
        self.timeout = timeout
        if self.armed:
            self.start()

    def _fire(self) -> None:
        self._handle = None
        self.deadline = None
        self._on_expire()
