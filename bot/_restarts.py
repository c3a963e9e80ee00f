"""Keeping the bot's long-running loops alive: the local delivery loop and, per remote
host, its delivery and its held messages. A loop that fails unexpectedly (a bug, not
the supervisor going away, which each loop handles itself) is logged and started again
after a backoff on the event loop's clock, so one host's bug does not silently stop its
replies until the bot restarts.

A failure's traceback is logged once; the same failure again is one line, and the
backoff doubles up to ``MOST_BACKOFF``, so a loop that keeps failing does not flood the
log."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable

log = logging.getLogger("claude_telegram_bot")

#: the wait before the first restart; it doubles while the same loop keeps failing
FIRST_BACKOFF = 1.0
#: the longest wait between restarts (a loop that ran longer than this starts over at FIRST_BACKOFF)
MOST_BACKOFF = 30.0


def signature(exc: BaseException) -> tuple[str, ...]:
    """What tells one failure from another: its type, message and where it was raised."""
    where = traceback.extract_tb(exc.__traceback__)[-1:]
    return (*traceback.format_exception_only(exc), *(f"{f.filename}:{f.lineno}" for f in where))


class Restarts:
    """The failures of one loop: the last one logged, and the backoff before the next start."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.backoff = FIRST_BACKOFF
        self.last: tuple[str, ...] | None = None
        self.started = asyncio.get_running_loop().time()

    async def failed(self, exc: Exception) -> None:
        """Log ``exc`` (its traceback if it is new) and wait the backoff before a restart."""
        loop = asyncio.get_running_loop()
        if loop.time() - self.started > MOST_BACKOFF:  # (it ran a while: a new run of failures)
            self.backoff = FIRST_BACKOFF
        seen = signature(exc)
        if seen != self.last:
            log.error("%s failed; restarting it in %.0f s", self.what, self.backoff, exc_info=exc)
            self.last = seen
        else:
            log.warning("%s failed again (%s); restarting it in %.0f s", self.what, seen[0].strip(), self.backoff)
        await asyncio.sleep(self.backoff)
        self.backoff = min(self.backoff * 2, MOST_BACKOFF)
        self.started = loop.time()


async def keep_running(what: str, run: Callable[[], Awaitable[None]]) -> None:
    """Run ``run()`` until it returns (or is cancelled), starting it again after each
    unexpected failure."""
    restarts = Restarts(what)
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await restarts.failed(exc)
