"""No chat waits for another: while Telegram hangs on one chat's calls, the other chats'
answers still come, each session's in order, each once — also across a bot kill -9
(``bot/_workers``); drafts take the rate limit's spare room with the newest text
(``bot/_pacing``). Played through the fake Bot API against a real supervisor with the
fake claude, but for the units at the end."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from telegram.ext import AIORateLimiter

from bot._live import LiveReplies
from bot._pacing import GROUP_RESERVE, RESERVE, SpareRateLimiter, Turn
from bot._send import parts_sent_of
from bot._workers import KV_DELIVERED, Progress, Workers

from .conftest import USER, wait_for
from .test_bot_app import OTHER, say

pytestmark = pytest.mark.timeout(240)


def ask(sup: Any, session: str, chat: int, text: str) -> None:
    """A message to ``session`` as the bot hands over one written in ``chat``."""
    with sup.client() as c:
        c.request("send", session=session, text=text, origin=f"tg:{chat}")


def answers(api: Any, chat: int) -> list[str]:
    return [t.split(" (")[0] for t in api.texts(chat) if t.startswith("echo:")]


def alpha_hangs_on_its_answer(sup: Any, api: Any) -> None:
    """alpha (USER's chat) answers while Telegram hangs on every call about that chat."""
    api.hold_chat(USER)
    ask(sup, "alpha", USER, "held up")
    wait_for(lambda: any(h["method"] == "sendMessage" and str(h["params"].get("text", "")).startswith("echo: held up")
                         for h in api.held), what="alpha's answer to hang in Telegram")


def start_two_chats(sup: Any, api: Any, bot_env: Any) -> Any:
    bot = bot_env(sup, allowed=(USER, OTHER))
    say(api, "/new alpha", "created")
    say(api, "/new beta", "created", user=OTHER)
    return bot


@pytest.mark.system
def test_a_chat_whose_telegram_calls_hang_holds_up_no_other_chat(make_supervisor, bot_env, telegram) -> None:
    sup = make_supervisor().start()
    api = telegram
    start_two_chats(sup, api, bot_env)
    alpha_hangs_on_its_answer(sup, api)
    for i in range(3):
        ask(sup, "beta", OTHER, f"m{i}")
    wait_for(lambda: len(answers(api, OTHER)) >= 3, what="beta's answers while alpha's chat hangs")
    assert answers(api, OTHER) == ["echo: m0", "echo: m1", "echo: m2"]  # in order
    assert answers(api, USER) == []  # (still held: they went past it)
    api.release_chat(USER)
    api.wait_for_text(lambda t: t.startswith("echo: held up"), chat_id=USER)
    sup.wait_consumer("telegram-bot")
    assert answers(api, USER) == ["echo: held up"]
    assert answers(api, OTHER) == ["echo: m0", "echo: m1", "echo: m2"]


@pytest.mark.system
def test_answers_shown_past_a_hanging_chat_are_not_shown_again_after_a_bot_kill_9(make_supervisor, bot_env,
                                                                                telegram) -> None:
    sup = make_supervisor().start()
    api = telegram
    bot = start_two_chats(sup, api, bot_env)
    alpha_hangs_on_its_answer(sup, api)
    for i in range(3):
        ask(sup, "beta", OTHER, f"m{i}")
    wait_for(lambda: len(answers(api, OTHER)) >= 3, what="beta's answers while alpha's chat hangs")
    # beta's turns are shown, ahead of alpha's answer (the ack's cursor stays before it):
    # the bot has recorded them once its last event is among those it keeps as shown
    last_of_beta = sup.events("beta")[-1]["id"]
    wait_for(lambda: last_of_beta in (sup.request("kv_get", key=KV_DELIVERED).get("value") or []),
             what="beta's events recorded as shown")
    bot.kill9()
    api.release_chat(USER)
    bot_env(sup, allowed=(USER, OTHER))
    api.wait_for_text(lambda t: t.startswith("echo: held up"), chat_id=USER)
    sup.wait_consumer("telegram-bot")
    assert answers(api, USER) == ["echo: held up"]  # not lost
    assert answers(api, OTHER) == ["echo: m0", "echo: m1", "echo: m2"]  # not shown twice


@pytest.mark.system
def test_with_live_text_coalesced_a_session_writing_fast_does_not_hold_back_one_writing_slowly(
        make_supervisor, bot_env, telegram) -> None:
    """The bot takes every session's live text in one frame (``live_every``): while alpha
    writes a long answer fast, beta's short slow one is shown as it grows too, each chat's
    drafts are its own answer as it was written, and each answer arrives once."""
    sup = make_supervisor().start()
    api = telegram
    start_two_chats(sup, api, bot_env)
    ask(sup, "alpha", USER, "stream:6 fast " + "word " * 600)
    ask(sup, "beta", OTHER, "stream:6 slow and short")
    for chat, start in ((USER, "echo: stream:6 fast"), (OTHER, "echo: stream:6 slow")):
        api.wait_for_text(lambda t, start=start: t.startswith(start), chat_id=chat)
    sup.wait_consumer("telegram-bot")
    for chat, session in ((USER, "alpha"), (OTHER, "beta")):
        answer = [e for e in sup.events(session) if e["kind"] == "assistant_text"][-1]["text"]
        shown = [d["text"].removesuffix(" ▍") for d in api.drafts if d["chat_id"] == chat]
        assert len(set(shown)) >= 3, f"{session}'s answer was not shown as it grew: {shown}"
        assert all(answer.startswith(text) for text in shown)  # its own text, each a beginning of it
        assert len([t for t in api.texts(chat) if t.startswith("echo: stream:6")]) == 1


# --- units ---------------------------------------------------------------------------------


class FakeSub:
    def __init__(self) -> None:
        self.acks: list[int] = []

    async def ack(self, event_id: int) -> None:
        self.acks.append(event_id)


async def test_the_ack_covers_only_events_shown_and_those_shown_ahead_of_it_are_recorded_first() -> None:
    writes: list[tuple[str, Any]] = []
    sub = FakeSub()

    async def kv_set(key: str, value: Any) -> None:
        writes.append((key, value))

    progress = Progress(kv_set)
    progress.resubscribed(sub)  # type: ignore[arg-type]  # (only its ack is used)
    for event_id in (5, 8, 9):
        progress.received(event_id)
    await progress.delivered(8)  # another session's, before 5 is shown
    assert sub.acks == [] and writes == [(KV_DELIVERED, [8])]
    await progress.delivered(5)
    assert sub.acks == [8]  # up to the first not shown
    await progress.delivered(9)
    assert sub.acks == [8, 9] and len(writes) == 1


async def test_a_sessions_live_text_waits_for_its_stored_events_and_comes_as_one_piece() -> None:
    done: list[Any] = []
    release = asyncio.Event()

    async def show(event: dict[str, Any]) -> None:
        if event["session"] == "alpha":
            await release.wait()  # (Telegram slow for its chat)
        done.append(event["id"])

    async def live(event: dict[str, Any]) -> None:
        done.append(event["text"])

    async def kv_set(key: str, value: Any) -> None:
        pass

    progress = Progress(kv_set)
    progress.resubscribed(FakeSub())  # type: ignore[arg-type]  # (only its ack is used)
    workers = Workers(show, live, progress)
    workers.take({"id": 3, "session": "alpha", "kind": "assistant_text"})
    for offset, piece in ((0, "Once"), (4, " upon"), (9, " a time")):
        workers.take({"session": "alpha", "kind": "assistant_delta", "message_id": 7, "offset": offset, "text": piece})
    workers.take({"id": 4, "session": "beta", "kind": "result"})  # another session: not held up
    await wait_until(lambda: 4 in done)
    assert done == [4]
    release.set()
    await wait_until(lambda: len(done) == 3)
    assert done == [4, 3, "Once upon a time"]
    await workers.stop()


class FakeBot:
    def __init__(self, limiter: SpareRateLimiter) -> None:
        self.rate_limiter = limiter
        assert limiter._base_limiter is not None
        self.overall = limiter._base_limiter
        self.drafts: list[str] = []

    async def send_message_draft(self, chat: int, draft_id: int, text: str) -> None:
        await self.overall.acquire()  # (as PTB's limiter does: the text is given)
        self.drafts.append(text)


class FakeApp:
    def __init__(self, bot: FakeBot) -> None:
        self.bot = bot


async def test_a_draft_waiting_for_the_rate_limit_goes_with_the_newest_text() -> None:
    limiter = SpareRateLimiter(max_retries=5)
    overall = limiter._base_limiter  # (what PTB's AIORateLimiter limits the whole bot with)
    assert overall is not None
    for _ in range(int(overall.max_rate) - RESERVE):  # busy: answers took what it has
        await overall.acquire()
    assert not limiter.spare()
    bot = FakeBot(limiter)
    live = LiveReplies()
    app: Any = FakeApp(bot)
    live.update(app, USER, {"message_id": 7, "offset": 0, "text": "Once"})
    for _ in range(5):
        await asyncio.sleep(0)  # its update is on its way
    for offset, piece in ((4, " upon"), (9, " a time")):  # written while it waits
        live.update(app, USER, {"message_id": 7, "offset": offset, "text": piece})
    await wait_until(lambda: bot.drafts)
    assert bot.drafts[0] == "Once upon a time ▍"


async def test_a_draft_goes_before_typing_that_waited_longer() -> None:
    limiter = SpareRateLimiter(max_retries=5)
    overall = limiter._base_limiter
    assert overall is not None
    for _ in range(int(overall.max_rate) - RESERVE):
        await overall.acquire()
    order: list[str] = []

    async def wait(turn: Turn, name: str) -> None:
        await limiter.spare_turn(turn)
        order.append(name)
        await overall.acquire()  # (its request)

    typing = asyncio.create_task(wait(Turn.TYPING, "typing"))
    await asyncio.sleep(0)
    draft = asyncio.create_task(wait(Turn.DRAFT, "draft"))
    await asyncio.gather(typing, draft)
    assert order == ["draft", "typing"]


GROUP = -1001234


async def test_a_groups_draft_waits_for_room_in_its_minute_and_holds_up_no_other_chat() -> None:
    """A group has 20 requests a minute: once answers took all but ``GROUP_RESERVE``, its
    draft (or "typing…") waits — and a private chat's, asked for after it, does not."""
    limiter = SpareRateLimiter(max_retries=5)
    group = limiter._get_group_limiter(GROUP)  # (PTB's limiter of one group's minute)
    for _ in range(int(group.max_rate) - GROUP_RESERVE):  # what answers took of it
        await group.acquire()
    assert limiter.spare(USER) and limiter.spare(-5) and not limiter.spare(GROUP)
    draft = asyncio.create_task(limiter.spare_turn(Turn.DRAFT, GROUP))
    await wait_until(lambda: limiter._turns[Turn.DRAFT])
    await asyncio.wait_for(limiter.spare_turn(Turn.TYPING, USER), 30)  # (not behind the group's draft)
    assert not draft.done()
    draft.cancel()


async def wait_until(predicate: Any, timeout: float = 30) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), timeout)


def test_the_spare_rate_limiter_is_ptbs_with_its_limits() -> None:
    limiter = SpareRateLimiter(max_retries=5)
    assert isinstance(limiter, AIORateLimiter)
    assert limiter._base_limiter is not None and limiter._base_limiter.max_rate == 30  # Telegram's 30 a second
    assert limiter._get_group_limiter(GROUP).max_rate == 20 and limiter._group_limiters  # and 20 a minute a group


def test_the_parts_sent_of_answers_are_read_as_this_bot_and_an_older_one_stored_them() -> None:
    assert parts_sent_of([[41, 2], [57, 1]]) == {41: 2, 57: 1}  # answers to two chats at once
    assert parts_sent_of([41, 2]) == {41: 2}  # an older bot's: one answer at a time
    assert parts_sent_of(None) == {} and parts_sent_of("junk") == {}


async def test_against_a_supervisor_without_live_every_the_bot_subscribes_as_before() -> None:
    """A supervisor from before ``live_every`` (an older one on another host) refuses the
    field: the bot's delivery subscribes without it, and gets a frame per piece."""
    from types import SimpleNamespace

    from bot._delivery import CONSUMER, LIVE_EVERY_MS, _subscribe
    from protocol import ErrorCode, RemoteError

    asked: list[dict[str, Any]] = []

    class OldClient:
        async def subscribe(self, **args: Any) -> str:
            asked.append(args)
            if "live_every" in args:
                raise RemoteError(ErrorCode.BAD_REQUEST, "unknown field(s) for 'subscribe': live_every")
            return "subscription"

    core = SimpleNamespace(client=OldClient())
    assert await _subscribe(core, 41) == "subscription"  # type: ignore[arg-type]
    assert [a.get("live_every") for a in asked] == [LIVE_EVERY_MS, None]
    assert all(a["consumer"] == CONSUMER and a["after"] == 41 and a["live"] for a in asked)
