"""Telegram calls that can wait their turn: the drafts (or previews) of answers being
written and "typing…" take only what the bot's rate limit has spare.

The bot's requests go through PTB's ``AIORateLimiter`` (30 a second for the whole bot, as
Telegram asks). With many chats streaming at once, drafts alone would ask for more (two a
second per chat): queued inside the limiter, each would carry text that is old by the time
it goes. So a draft first waits here for its turn (first come, first served) until the
limiter has room to spare — ``RESERVE`` requests of it are always left to answers,
prompts and notices; drafts go before "typing…" — and only then takes the newest text
of its answer. Under load each
chat's draft changes less often, never with stale text, and never delays a message.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from typing import Any

from telegram.ext import AIORateLimiter, Application

#: requests of the limiter's capacity a draft or "typing…" never takes
RESERVE = 5
#: how often a waiting turn looks again (the limiter frees one request every 1/30 s)
LOOK_EVERY = 0.015


class Turn(enum.IntEnum):
    """Who goes first when the limiter has room: a draft before "typing…"."""

    DRAFT = 0
    TYPING = 1


class SpareRateLimiter(AIORateLimiter):
    """PTB's ``AIORateLimiter``, limits unchanged, and whose turn it is to use its spare room."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns: dict[Turn, collections.deque[asyncio.Future[None]]] = {t: collections.deque() for t in Turn}
        self._granting: asyncio.Task[None] | None = None

    def spare(self) -> bool:
        """Whether a request now would leave ``RESERVE`` of the bot-wide limit free."""
        # (PTB keeps its bot-wide limiter, an aiolimiter.AsyncLimiter, in _base_limiter;
        # tests/test_bot_workers.py fails if a PTB upgrade moves it)
        overall = getattr(self, "_base_limiter", None)
        return overall is None or bool(overall.has_capacity(1 + RESERVE))

    async def spare_turn(self, turn: Turn = Turn.DRAFT) -> None:
        """Returns when it is this caller's turn (first come, first served; drafts first)
        and the limiter has room to spare."""
        if not any(self._turns.values()) and self.spare():
            return
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._turns[turn].append(mine)
        if self._granting is None or self._granting.done():
            self._granting = asyncio.create_task(self._grant(), name="spare_turns")
        await mine

    async def _grant(self) -> None:
        while waiting := next((turns for turns in self._turns.values() if turns), None):
            if not self.spare():
                await asyncio.sleep(LOOK_EVERY)
                continue
            turn = waiting.popleft()
            if not turn.done():  # (a waiter cancelled meanwhile)
                turn.set_result(None)
                await asyncio.sleep(0)  # it takes its request from the limiter before the next looks


async def spare_turn(app: Application[Any, Any, Any, Any, Any, Any], turn: Turn = Turn.DRAFT) -> None:
    """Wait for a turn to send something that can wait (no wait without a ``SpareRateLimiter``)."""
    limiter = app.bot.rate_limiter
    if isinstance(limiter, SpareRateLimiter):
        await limiter.spare_turn(turn)
