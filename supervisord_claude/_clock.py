"""Time, as an object: the real event-loop clock and a fake one tests can advance.

Every timer and wait of the daemon's loops goes through a ``Clock``: ``call_later``,
``sleep`` and ``wait_for`` (``asyncio.wait_for`` on this clock), so a ``FakeClock`` drives
them all in tests. Wall-clock time (what is stored and shown) is a ``wall`` callable
beside it (``time.time`` in the daemon). Blocking waits before the loop runs (the start-up
locks) and in threads (``System.terminate``) are not the loop's and stay on real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

T = TypeVar("T")


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle: ...

    async def sleep(self, seconds: float) -> None: ...


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def wait_for(clock: Clock, awaitable: Awaitable[T], timeout: float) -> T:
    """``asyncio.wait_for`` on ``clock``: the awaitable's result, or ``TimeoutError`` (the
    awaitable cancelled) once ``timeout`` seconds of that clock have passed."""
    task = asyncio.ensure_future(awaitable)
    expired = asyncio.get_running_loop().create_future()
    timer = clock.call_later(timeout, lambda: _wake(expired))
    try:
        await asyncio.wait((task, expired), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        timer.cancel()
        expired.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise TimeoutError


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

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


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

    async def sleep(self, seconds: float) -> None:
        """Returns once the clock is advanced past ``seconds`` from now (in a running loop)."""
        woken = asyncio.get_running_loop().create_future()
        handle = self.call_later(seconds, lambda: _wake(woken))
        try:
            await woken
        finally:
            handle.cancel()

    @property
    def pending(self) -> int:
        """Timers not fired nor cancelled yet: what a test waits for before it advances."""
        return sum(not handle.cancelled for _, _, handle, _ in self._queue)

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while self._queue and self._queue[0][0] <= target:
            when, _, handle, callback = heapq.heappop(self._queue)
            self.now = when
            if not handle.cancelled:
                callback()
        self.now = target

