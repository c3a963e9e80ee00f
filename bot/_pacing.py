"""Telegram calls that can wait their turn: the drafts (or previews) of answers being
written, "typing…" and the edits of a turn's tool log take only what the bot's rate limit
has spare.

The bot's requests go through PTB's ``AIORateLimiter``: 30 a second for the whole bot,
and 20 a minute in each group or supergroup (every request naming the chat counts: a
message, an edit, "typing…"; a forum's topics share their group's), as Telegram asks.
With many chats streaming at once, drafts alone would ask for more (two a second per
chat): queued inside the limiter, each would carry text that is old by the time it goes,
and in a group the answers themselves would wait behind them (a request every 3 s once
the group's minute is spent). So a draft first waits here for its turn (first come, first
served) until the limiter has room to spare — ``RESERVE`` requests of the bot's and
``GROUP_RESERVE`` of the group's are always left to answers, prompts and notices; drafts
go before "typing…"; a chat without room waits without holding up the others — and only
then takes the newest text of its answer. Under load each chat's draft changes less often
(in a busy group, rarely), never with stale text, and never delays a message.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from typing import Any

from telegram.ext import AIORateLimiter, Application

#: requests of the limiter's capacity a draft or "typing…" never takes
RESERVE = 5
#: requests of a group's 20 a minute a draft, "typing…" or a tool log's edit never takes:
#: an answer in parts, its footer, a prompt go at once
GROUP_RESERVE = 10
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
        #: who waits for spare room: (its future, the chat it sends to), by turn
        self._turns: dict[Turn, collections.deque[tuple[asyncio.Future[None], int | None]]] = {
            t: collections.deque() for t in Turn}
        self._granting: asyncio.Task[None] | None = None

    def spare(self, chat: int | None = None) -> bool:
        """Whether a request now (to ``chat``) would leave ``RESERVE`` of the bot-wide
        limit free, and ``GROUP_RESERVE`` of the chat's if it is a group's."""
        # (PTB keeps its bot-wide limiter, an aiolimiter.AsyncLimiter, in _base_limiter,
        # a group's in _group_limiters by chat id (made at its first request);
        # tests/test_bot_workers.py fails if a PTB upgrade moves them)
        overall = getattr(self, "_base_limiter", None)
        if overall is not None and not overall.has_capacity(1 + RESERVE):
            return False
        group = getattr(self, "_group_limiters", {}).get(chat) if chat is not None and chat < 0 else None
        return group is None or bool(group.has_capacity(1 + GROUP_RESERVE))

    async def spare_turn(self, turn: Turn = Turn.DRAFT, chat: int | None = None) -> None:
        """Returns when it is this caller's turn (first come, first served; drafts first;
        a chat without room skipped meanwhile) and the limiter has room to spare."""
        if not any(self._turns.values()) and self.spare(chat):
            return
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._turns[turn].append((mine, chat))
        if self._granting is None or self._granting.done():
            self._granting = asyncio.create_task(self._grant(), name="spare_turns")
        await mine

    def _next(self) -> tuple[collections.deque[tuple[asyncio.Future[None], int | None]],
                             tuple[asyncio.Future[None], int | None]] | None:
        """The first waiter whose chat has room now (drafts first), and its queue."""
        for waiting in self._turns.values():
            for entry in waiting:
                if entry[0].done() or self.spare(entry[1]):
                    return waiting, entry
        return None

    async def _grant(self) -> None:
        while any(self._turns.values()):
            found = self._next()
            if found is None:
                await asyncio.sleep(LOOK_EVERY)
                continue
            waiting, (turn, _) = found
            waiting.remove(found[1])
            if not turn.done():  # (a waiter cancelled meanwhile)
                turn.set_result(None)
                await asyncio.sleep(0)  # it takes its request from the limiter before the next looks


async def spare_turn(app: Application[Any, Any, Any, Any, Any, Any], turn: Turn = Turn.DRAFT,
                     chat: int | None = None) -> None:
    """Wait for a turn to send something that can wait to ``chat`` (no wait without a
    ``SpareRateLimiter``)."""
    limiter = app.bot.rate_limiter
    if isinstance(limiter, SpareRateLimiter):
        await limiter.spare_turn(turn, chat)


def spare_now(app: Application[Any, Any, Any, Any, Any, Any], chat: int) -> bool:
    """Whether something that can be left out (a tool log's edit: the next one, or the
    turn's end, shows it) may be sent to ``chat`` now."""
    limiter = app.bot.rate_limiter
    return not isinstance(limiter, SpareRateLimiter) or limiter.spare(chat)
