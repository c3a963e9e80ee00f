"""Every message goes where the user meant, once (issue 28): played as a user through
the fake Bot API, against a real supervisor with the fake claude."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot import _desk as desk
from bot import _render as render
from bot import _sessions as sessions
from bot import _show as show
from bot._app import build
from bot._config import BotConfig
from bot._core import Core as BotCore
from bot._kinds import KindTable
from bot._link import Link
from bot._live import KV_PREVIEWS
from protocol import EventKind, InProcessClient

from .conftest import USER, wait_for
from .fake_telegram import TOKEN, FakeTelegram
from .test_bot_app import OTHER, entity_text, env, say  # noqa: F401  (the fixture)
from .test_bot_core import Core, core  # noqa: F401  (the fixture)

Shown = tuple[Any, BotCore]


@contextlib.asynccontextmanager
async def bot_on(core: Core, telegram: FakeTelegram, tmp_path: Path) -> AsyncIterator[Shown]:  # noqa: F811
    """One run of the bot: its application on the fake Bot API, its link to the
    supervisor's core in-process (a second one, after the first, is the bot restarted:
    nothing of the first's memory, the same supervisor)."""
    app = build(BotConfig(TOKEN, frozenset({USER}), telegram.url, tmp_path))
    await app.initialize()
    bot: BotCore = app.bot_data["core"]
    bot.client = await InProcessClient(core.control).connect()
    bot.link = Link(bot.client)
    try:
        yield app, bot
    finally:
        for task in bot.typing.values():
            task.cancel()
        await app.shutdown()
        await bot.client.close()


@pytest.fixture
async def shown(core: Core, telegram: FakeTelegram, tmp_path: Path) -> AsyncIterator[Shown]:  # noqa: F811
    """The bot's application on the fake Bot API, its link to the supervisor's core in-process."""
    async with bot_on(core, telegram, tmp_path) as running:
        yield running


@pytest.mark.parametrize("table", [show.KINDS, desk.KINDS], ids=["delivery", "desk"])
def test_every_event_kind_is_handled_or_deliberately_ignored(table: KindTable[Any]) -> None:
    """A kind the supervisor adds is never dropped unseen: the chat's delivery and the
    desk's each show it, or say why not — each kind in exactly one of the two."""
    assert table.gaps() == []


def test_a_table_missing_a_kind_says_which() -> None:
    handlers = {kind: print for kind in EventKind if kind is not EventKind.STALLED}
    assert KindTable(handlers, {}).gaps() == ["stalled: neither handled nor ignored"]
    assert KindTable(handlers, {EventKind.STALLED: "", EventKind.USER: "shown"}).gaps() == [
        "user: both handled and ignored", "stalled: ignored without a reason"]


async def test_the_desk_shows_what_its_table_says_and_nothing_for_a_kind_it_ignores(shown: Shown,
                                                                                      telegram: FakeTelegram) -> None:
    app, bot = shown
    await sessions.new_session(bot.link, USER, ["alpha"])
    await show.remember_place(bot, "alpha", USER)  # (where it was last used: where the desk's events go)
    at_desk = {"session": "alpha", "from": "terminal"}
    for event in ({"kind": "state", "state": "attached", "reason": "attached", "pid": 42, "tty": "/dev/pts/3"},
                  {"kind": "user", "text": "hi from the desk", **at_desk},
                  {"kind": "tool_use", "name": "Bash", "input": {"command": "ls"}, **at_desk},
                  {"kind": "tool_result", "content": "a b", "is_error": False, **at_desk},  # (ignored)
                  {"kind": "assistant_text", "text": "hello", **at_desk},
                  {"kind": "state", "state": "suspended", "reason": "detached"}):
        await show.deliver(app, bot, {"id": 1, "session": "alpha", **event})
    texts = [m["text"] for m in telegram.sent]
    assert [m["chat_id"] for m in telegram.sent] == [USER] * 5 and all(m["disable_notification"] for m in telegram.sent)
    assert texts == ["📟 'alpha' is open in a terminal now (/dev/pts/3, pid 42): what is said there shows here;"
                     " what you send waits until it closes.",
                     "📟 [alpha] at the desk:\nhi from the desk", "📟 [alpha] 🔧 Bash: ls",
                     "📟 [alpha] Claude, at the desk:\n\nhello", "📟 'alpha' is back from the terminal."]


async def test_an_ignored_kind_shows_nothing_and_a_handled_one_reaches_its_chat(shown: Shown,
                                                                                  telegram: FakeTelegram) -> None:
    app, bot = shown
    await sessions.new_session(bot.link, USER, ["alpha"])
    about = {"session": "alpha", "origin": f"tg:{USER}:5", "message_id": 9}
    for kind in show.IGNORED:
        await show.deliver(app, bot, {"id": 1, "kind": kind, "text": "not shown", "message": "not shown", **about})
    await show.deliver(app, bot, {"id": 2, "kind": "no_such_kind", **about})  # a supervisor newer than the bot
    assert telegram.sent == []
    await show.deliver(app, bot, {"id": 3, "kind": "assistant_text", "text": "hello", **about})
    [answer] = telegram.sent
    assert answer["text"] == "hello" and answer["chat_id"] == USER
    assert answer["reply_parameters"]["message_id"] == 5  # threaded to the question


async def test_a_turn_and_a_failure_reach_the_chat_as_their_handlers_say(shown: Shown,
                                                                          telegram: FakeTelegram) -> None:
    app, bot = shown
    await sessions.new_session(bot.link, USER, ["alpha"])
    about = {"session": "alpha", "origin": f"tg:{USER}:5", "message_id": 9}
    for event in ({"kind": "state", "state": "resuming", "idle_for": 600},
                  {"kind": "user", "text": "hi", "attachments": []},
                  {"kind": "tool_use", "name": "Bash", "input": {"command": "ls"}},
                  {"kind": "tool_result", "content": "a b", "is_error": False},
                  {"kind": "assistant_text", "text": "hello"},
                  {"kind": "result", "num_turns": 1, "duration_ms": 1500, "text": "hello"},
                  {"kind": "message_failed", "reason": "boom", "message_id": 10}):
        await show.deliver(app, bot, {"id": 1, **about, **event})
    assert [(m["text"], m["disable_notification"]) for m in telegram.sent] == [
        ("Resuming session (idle for 10 min)...", True), ("🔧 Bash: ls", True), ("hello", False),
        ("1.5 s · 1 turn", True), ("❌ Message not delivered: boom", False)]
    failed = telegram.sent[-1]
    assert failed["reply_parameters"]["message_id"] == 5
    assert failed["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "retry:10"
    assert bot.typing == {} and bot.tools == {}  # the turn's "typing…" and tool log ended with it
    assert bot.link.sent[9]["text"] == "hi"  # what a Retry would send again


async def test_an_error_of_a_turn_is_said_once_with_its_end(shown: Shown, telegram: FakeTelegram) -> None:
    """The supervisor was away too long: the turn is interrupted, and the chat is told why
    (not a bare "Interrupted", as if the user had asked). Claude exited: the message's
    failure says the same text, once."""
    app, bot = shown
    await sessions.new_session(bot.link, USER, ["alpha"])
    about = {"session": "alpha", "origin": f"tg:{USER}:5", "message_id": 9}
    away = "The supervisor was away for too long: the answer was interrupted (its output so far is kept)"
    await show.deliver(app, bot, {"id": 1, **about, "kind": "error", "message": away})
    await show.deliver(app, bot, {"id": 2, **about, "kind": "result", "interrupted": True, "text": ""})
    assert [m["text"] for m in telegram.sent] == [f"⏹ Interrupted: {away}"]
    telegram.sent.clear()
    crashed = "Claude exited unexpectedly (exit code 3)"
    about = {**about, "message_id": 10}
    await show.deliver(app, bot, {"id": 3, **about, "kind": "error", "message": crashed, "exit_code": 3})
    await show.deliver(app, bot, {"id": 4, **about, "kind": "message_failed", "reason": crashed})
    assert [m["text"] for m in telegram.sent] == [f"❌ Message not delivered: {crashed}"]
    assert (await bot.link.kv_get("telegram.turn_errors")) is None  # nothing held once the turns ended


async def test_an_error_of_a_turn_is_said_with_its_end_by_a_bot_restarted_in_between(
        core: Core, telegram: FakeTelegram, tmp_path: Path) -> None:  # noqa: F811
    """The bot shows the turn's ``error`` (acked), is killed, and a new run shows the
    turn's end: the chat is still told why it was interrupted, not a bare "Interrupted"."""
    about = {"session": "alpha", "origin": f"tg:{USER}:5", "message_id": 9}
    away = "The supervisor was away for too long: the answer was interrupted (its output so far is kept)"
    async with bot_on(core, telegram, tmp_path) as (app, bot):
        await sessions.new_session(bot.link, USER, ["alpha"])
        await show.deliver(app, bot, {"id": 1, **about, "kind": "error", "message": away})
    async with bot_on(core, telegram, tmp_path) as (app, bot):
        await show.deliver(app, bot, {"id": 2, **about, "kind": "result", "interrupted": True, "text": ""})
        assert [m["text"] for m in telegram.sent] == [f"⏹ Interrupted: {away}"]
        assert (await bot.link.kv_get("telegram.turn_errors")) is None


async def test_in_a_busy_group_the_answer_goes_at_once_and_the_preview_waits_for_room(
        shown: Shown, telegram: FakeTelegram) -> None:
    """A group gets 20 requests a minute. With all but two of them spent (earlier
    answers), the answer being written is not previewed — a preview and its removal would
    take the two, and the answer and its footer would wait a request every 3 s — so the
    answer and its footer go at once. The same for a tool log's edit."""
    app, bot = shown
    group_chat = -1001234
    await sessions.new_session(bot.link, group_chat, ["alpha"])
    minute = app.bot.rate_limiter._get_group_limiter(group_chat)  # (PTB's limiter of the group's minute)
    for _ in range(int(minute.max_rate) - 2):
        await minute.acquire()
    about = {"session": "alpha", "origin": f"tg:{group_chat}:5", "message_id": 9}
    bot.live.update(app, group_chat, {**about, "offset": 0, "text": "Once upon"})  # being written
    await wait_for_async(lambda: telegram.sent or any(app.bot.rate_limiter._turns.values()))
    tools = show.ToolLog(group_chat)
    tools.message_id, tools.shown, tools.last_edit = 77, 1, 0.0  # (its message sent long ago)
    tools.lines = ["🔧 Bash: ls"]
    await tools.add(app, "🔧 Bash: pwd")
    await show.deliver(app, bot, {"id": 1, **about, "kind": "assistant_text", "text": "Once upon a time"})
    await show.deliver(app, bot, {"id": 2, **about, "kind": "result", "num_turns": 1, "duration_ms": 1500,
                                  "text": "Once upon a time"})
    assert [m["text"] for m in telegram.sent] == ["Once upon a time", "1.5 s · 1 turn"]
    assert telegram.edits == [] and telegram.deleted == []  # no preview, no tool log edit


async def wait_for_async(predicate: Any, timeout: float = 30) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), timeout)


async def test_messages_that_waited_for_a_failed_resume_are_told_once_by_a_bot_restarted_in_between(
        core: Core, telegram: FakeTelegram, tmp_path: Path) -> None:  # noqa: F811
    """Three messages waited for a resume that failed: the chat gets one notice with the
    fresh conversation's button, also when the bot restarted after the first; a new
    attempt that fails is news again."""
    failed = {"session": "alpha", "kind": "message_failed", "reason": "Resume failed: No conversation found"}
    async with bot_on(core, telegram, tmp_path) as (app, bot):
        await sessions.new_session(bot.link, USER, ["alpha"])
        await show.deliver(app, bot, {"id": 1, **failed, "message_id": 9, "origin": f"tg:{USER}:5"})
    async with bot_on(core, telegram, tmp_path) as (app, bot):
        for n in (10, 11):
            await show.deliver(app, bot, {"id": n, **failed, "message_id": n, "origin": f"tg:{USER}:{n}"})
        told = "❌ Session 'alpha' could not resume"
        assert [m["text"].startswith(told) for m in telegram.sent] == [True]
        await show.deliver(app, bot, {"id": 12, "session": "alpha", "kind": "state", "state": "resuming",
                                      "message_id": 12, "origin": f"tg:{USER}:12"})
        await show.deliver(app, bot, {"id": 13, **failed, "message_id": 12, "origin": f"tg:{USER}:12"})
        assert [m["text"].startswith(told) for m in telegram.sent if "Resuming" not in m["text"]] == [True, True]


def press_button(api, message: dict, label_part: str) -> None:
    buttons = [b for row in message["reply_markup"]["inline_keyboard"] for b in row]
    button = next(b for b in buttons if label_part in b["text"])
    api.press(USER, button["callback_data"], message["message_id"])


def test_archive_of_a_busy_session_asks_first_and_says_what_is_dropped(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    api.message(USER, "sleep:60 long")
    sup.wait_received("sleep:60 long")
    say(api, "/queue second", "⏳ Queued")
    question = say(api, "/archive alpha", "Archive anyway?")
    assert "stops the answer" in question["text"] and "drops the 1 message waiting" in question["text"]
    assert sup.session("alpha")["state"] == "busy"  # nothing happened yet
    press_button(api, question, "Archive 'alpha' now")
    api.wait_for_text(lambda t: t == "Session 'alpha' archived.", chat_id=USER)
    sup.wait_state("alpha", "archived")


def test_an_api_error_is_one_message_with_a_retry_button_that_sends_it_once(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    report = say(api, "apierror please", "API Error: 400")
    sup.wait_state("alpha", "idle")
    sup.wait_consumer("telegram-bot")  # every event of the turn is shown
    shown = [t for t in api.texts(USER) if "API Error: 400" in t]
    edited = [e["text"] for e in api.edits if "API Error: 400" in e["text"]]
    # the answer Claude's CLI wrote is the report: one message, not the answer plus a warning
    assert len(shown) == 1 and edited == ["⚠️ Claude reported an error: API Error: 400 invalid_request_error"]
    [button] = [b for e in api.edits if e.get("reply_markup") for row in e["reply_markup"]["inline_keyboard"]
                for b in row]
    assert button["text"] == render.RETRY_BUTTON
    api.press(USER, button["callback_data"], report["message_id"])
    api.press(USER, button["callback_data"], report["message_id"])  # a double tap sends it once
    sup.wait_received("apierror please")
    wait_for(lambda: len([r for r in sup.claude_received() if r["text"] == "apierror please"]) == 2,
             what="the retried message to reach Claude")
    # (a button works once: the second press is answered "already done" before it could send)
    wait_for(lambda: any(a.get("text") in (render.RETRY_DONE, render.ALREADY_DONE) for a in api.callback_answers),
             what="the second press to be answered 'already done'")
    assert len([r for r in sup.claude_received() if r["text"] == "apierror please"]) == 2


def test_a_dropped_message_is_reported_quietly_under_it_with_a_retry(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    api.message(USER, "sleep:60 long")
    sup.wait_received("sleep:60 long")
    say(api, "/queue second", "⏳ Queued")
    question = say(api, "/cancel", "Stop what?")
    press_button(api, question, "drop")
    notice = api.wait_for_text(lambda t: t.startswith("❌ Message not delivered"), chat_id=USER)
    second = next(m for m in api.from_users if m.get("text") == "/queue second")
    assert notice["disable_notification"] and notice["reply_parameters"]["message_id"] == second["message_id"]
    press_button(api, notice, "Retry")
    sup.wait_received("second")
    api.wait_for_text(lambda t: t.startswith("echo: second"), chat_id=USER)


def test_a_turn_claude_starts_on_its_own_reaches_the_chat_of_the_last_message_labelled(env) -> None:  # noqa: F811
    sup, api, _ = env
    gate = sup.base / "background-done"
    say(api, "/new alpha", "created")
    say(api, f"start it bgtask:{gate}", "echo: start it")
    say(api, "/new beta", "created")  # the chat now talks to another session
    sup.wait_state("alpha", "idle")
    gate.touch()  # the background task ends: alpha's Claude writes a turn nobody asked for
    follow_up = api.wait_for_text(lambda t: "follow-up: the background task finished" in t, chat_id=USER)
    assert follow_up["text"].startswith("[alpha]")  # whose it is
    assert "Claude's follow-up" in follow_up["text"]


def test_a_follow_up_after_a_bot_restart_still_reaches_the_chat(make_supervisor, bot_env, telegram) -> None:
    sup = make_supervisor().start()
    bot = bot_env(sup)
    api = telegram
    gate = sup.base / "background-done"
    say(api, "/new alpha", "created")
    say(api, f"start it bgtask:{gate}", "echo: start it")
    sup.wait_consumer("telegram-bot")
    bot.kill9()
    bot_env(sup)
    gate.touch()
    api.wait_for_text(lambda t: "follow-up: the background task finished" in t, chat_id=USER)


def test_a_file_sent_before_any_session_is_kept_and_sent_once_the_offered_session_exists(env) -> None:  # noqa: F811
    _, api, _ = env
    api.photo(USER, b"\xff\xd8\xff\xe0fake-jpeg", caption="what is this")
    api.document(USER, b"col1,col2\n", "data.csv", caption="and this")
    offer = api.wait_for_text(lambda t: t == render.NO_ACTIVE_OFFER, chat_id=USER)
    press_button(api, offer, "Create session 'main'")
    photo = api.wait_for_text(lambda t: t.startswith("echo: what is this"), chat_id=USER)
    assert "[images: 1]" in photo["text"]
    document = api.wait_for_text(lambda t: t.startswith("echo: [Attached file saved at"), chat_id=USER)
    assert "and this" in document["text"]
    assert api.texts(USER).count(render.NO_ACTIVE_OFFER) == 1  # one offer held both
    assert not [t for t in api.texts(USER) if t.startswith("No active session.")]


def test_a_group_preview_left_by_a_killed_bot_is_finished_by_the_next_one(make_supervisor, bot_env,
                                                                          telegram) -> None:
    sup = make_supervisor().start()
    api = telegram
    bot = bot_env(sup)
    group = -1001
    api.message(USER, "/new alpha", chat_id=group)
    api.wait_for_text(lambda t: "created" in t, chat_id=group)
    api.message(USER, "stream:12 a long answer, written slowly for the group", chat_id=group)
    preview = api.wait_for_text(lambda t: t.endswith(" ▍"), chat_id=group)
    wait_for(lambda: sup.request("kv_get", key=KV_PREVIEWS)["value"], what="the bot to note its preview")
    bot.kill9()
    bot_env(sup)
    sup.wait_event("alpha", lambda e: e["kind"] == "result")
    api.wait_for_text(lambda t: t.startswith("echo: stream:12") and not t.endswith(" ▍"), chat_id=group)
    sup.wait_consumer("telegram-bot")
    previews = [m for m in api.sent if m["chat_id"] == group and m["text"].endswith(" ▍")]
    assert previews == [preview]  # the restarted bot went on in the same one
    assert {"chat_id": group, "message_id": preview["message_id"]} in api.deleted  # and removed it
    finals = [t for t in api.texts(group) if t.startswith("echo: stream:12") and not t.endswith(" ▍")]
    assert len(finals) == 1


def test_an_album_is_one_message_to_claude_with_its_caption(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    api.photo(USER, b"\xff\xd8\xff\xe0one", caption="compare these", media_group_id="album-1")
    api.photo(USER, b"\xff\xd8\xff\xe0two", media_group_id="album-1")
    api.photo(USER, b"\xff\xd8\xff\xe0three", media_group_id="album-1")
    answer = api.wait_for_text(lambda t: t.startswith("echo: compare these"), chat_id=USER)
    assert "[images: 3]" in answer["text"]
    sup.wait_state("alpha", "idle")
    sup.wait_consumer("telegram-bot")
    assert len([r for r in sup.claude_received()]) == 1  # one turn, not three
    assert len([t for t in api.texts(USER) if t.startswith("echo:")]) == 1


def test_a_long_paste_telegram_cut_in_parts_is_one_message_to_claude(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    first = "word " * 819  # 4095 characters: cut by the client at Telegram's limit
    api.message(USER, first.strip())
    api.message(USER, "and the end of the paste")
    sup.wait_received("and the end of the paste")
    sup.wait_state("alpha", "idle")
    sup.wait_consumer("telegram-bot")
    [received] = sup.claude_received()
    assert received["text"] == first.strip() + "\nand the end of the paste"
    say(api, "short one", "echo: short one")  # an ordinary message is not held back
    assert len(sup.claude_received()) == 2


def test_cancel_names_the_session_that_answers_and_offers_to_stop_it(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new beta", "created")
    api.message(USER, "sleep:60 long")
    sup.wait_received("sleep:60 long")
    say(api, "/new alpha", "created")  # the chat's session now; beta still answers
    offer = say(api, "/cancel", "Nothing to cancel in 'alpha'")
    assert "Claude is answering in 'beta'" in offer["text"]
    press_button(api, offer, "Stop 'beta'")
    api.wait_for_text(lambda t: "Interrupted" in t, chat_id=USER)
    sup.wait_state("beta", "idle")


def test_cancel_while_claude_is_still_to_start_drops_the_waiting_message(make_supervisor, bot_env,
                                                                         telegram) -> None:
    # Claude ignores SIGTERM: a suspend takes its 5 s grace period, and a message sent
    # meanwhile waits for the next start
    sup = make_supervisor(idle_timeout=1, env={"FAKE_CLAUDE_IGNORE_SIGTERM": "1"}).start()
    bot_env(sup)
    api = telegram
    say(api, "/new alpha", "created")
    say(api, "first", "echo: first")
    sup.wait_state("alpha", "suspending")
    api.message(USER, "never mind this")
    wait_for(lambda: sup.session("alpha")["queued"] == 1, what="the message to wait for Claude")
    say(api, "/cancel", "Cancelled before Claude started on it: 1 message not sent.")
    api.wait_for_text(lambda t: t.startswith("❌ Message not delivered"), chat_id=USER)
    sup.wait_state("alpha", "suspended", "idle")
    assert not [r for r in sup.claude_received() if "never mind this" in r["text"]]


def test_an_html_entity_claude_writes_is_shown_as_written(env) -> None:  # noqa: F811
    _, api, _ = env
    say(api, "/new alpha", "created")
    answer = say(api, "write Tom &amp; Jerry and [the link](https://example.com/?a=1&amp;b=2)", "echo: write")
    assert "Tom &amp; Jerry" in answer["text"]
    [link] = [e for e in answer["entities"] if e["type"] == "text_link"]
    assert link["url"] == "https://example.com/?a=1&b=2"  # (in a link's target it means "&")


def test_usage_shows_a_users_own_spend_and_labels_the_machines_total(make_supervisor, bot_env, telegram) -> None:
    sup = make_supervisor().start()
    bot_env(sup, allowed=(USER, OTHER))
    api = telegram
    say(api, "/new theirs", "created", user=OTHER)
    say(api, "spend some", "echo: spend some", user=OTHER)
    say(api, "/new mine", "created")
    sup.wait_consumer("telegram-bot")
    usage = say(api, "/usage", "This session")["text"].splitlines()
    assert usage == ["This session (mine): $0.0000", "All your sessions: $0.0000", "Today, your sessions: $0.0000",
                     "Today, all sessions on this machine (everyone's): $0.0010"]
    say(api, "spend mine too", "echo: spend mine too")
    say(api, "and more", "echo: and more")
    sup.wait_consumer("telegram-bot")
    usage = say(api, "/usage", "This session")["text"].splitlines()
    assert usage[2:] == ["Today, your sessions: $0.0020", "Today, all sessions on this machine (everyone's): $0.0030"]
    theirs = say(api, "/usage", "This session", user=OTHER)["text"].splitlines()
    assert theirs[2:] == ["Today, your sessions: $0.0010", "Today, all sessions on this machine (everyone's): $0.0030"]
    assert sup.request("status")["cost_today_by_session"] == {"mine": 0.002, "theirs": 0.001}


def test_while_claude_waits_for_the_user_the_chat_shows_no_typing_and_status_says_so(make_supervisor, bot_env,
                                                                                      telegram) -> None:
    sup = make_supervisor(config="permission_timeout = 8").start()  # longer than "typing…" is repeated
    bot_env(sup)
    api = telegram
    say(api, "/new alpha", "created")
    prompt = say(api, "needperm now", "Claude wants to run")
    status = say(api, "/status", "Session: alpha")
    assert "State: waiting for your answer" in status["text"]
    notice = api.wait_for_text(lambda t: t.startswith("⏱ Claude's request was denied"), chat_id=USER)
    shown, timed_out = api.sent.index(prompt), api.sent.index(notice)
    typing = [a for a in api.actions if int(a["chat_id"]) == USER and shown < a["after_messages"] <= timed_out]
    assert typing == []  # nothing said "typing…" while Claude waited


def test_a_plans_markdown_is_rendered_and_questions_and_plans_are_no_raw_json_tool_lines(env) -> None:  # noqa: F811
    _, api, _ = env
    say(api, "/new alpha", "created")
    say(api, "/mode plan", "Permission mode set to plan")
    prompt = say(api, "planexit planmd now", "Claude's plan")
    assert "**" not in prompt["text"] and "`" not in prompt["text"] and "##" not in prompt["text"]
    shown = {entity_text(prompt["text"], e): e["type"] for e in prompt["entities"]}
    assert shown.get("hello.txt") == "bold" and shown.get("pytest -q") == "code"
    press_button(api, prompt, "Approve")
    api.wait_for_text(lambda t: t.startswith("plan: approved"), chat_id=USER)
    question = say(api, "askq", "Pick a colour")
    lines = [t for t in api.texts(USER) if t.startswith("🔧")]
    assert "🔧 AskUserQuestion: Pick a colour" in lines and any(t.startswith("🔧 ExitPlanMode: ## Steps") for t in lines)
    assert not [t for t in lines if "{" in t]  # no raw JSON
    assert question


def test_counts_are_worded_for_one(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    say(api, "/timeout 1", "Idle timeout set to 1 minute for session 'alpha'.")
    api.message(USER, "sleep:60 long")
    sup.wait_received("sleep:60 long")
    say(api, "/queue second", "⏳ Queued")
    say(api, "/cancel", "Claude is answering, and 1 message waits behind it. Stop what?")


def test_prompt_counts_are_worded_for_one() -> None:
    from bot import _prompts as prompts

    prompt, _ = prompts.build({"session": "alpha", "request_id": "r1", "tool_name": "Write",
                               "input": {"file_path": "/tmp/x", "content": "a"}}, 7)
    assert "1 line, 1 byte" in prompt.text


def test_sessions_mark_who_waits_for_you_and_show_no_default_persona(make_supervisor, bot_env, telegram) -> None:
    sup = make_supervisor(config="permission_timeout = 600").start()
    bot_env(sup)
    api = telegram
    say(api, "/new alpha", "created")
    say(api, "needperm now", "Claude wants to run")
    say(api, "/new beta", "created")
    say(api, "hello", "echo: hello")
    sup.wait_state("beta", "idle")  # (the answer is in the chat a moment before its turn ends)
    listing = say(api, "/sessions", "alpha")["text"].splitlines()
    assert "→ 🟢 beta - just now" in listing  # (no "(default)")
    waiting = next(line for line in listing if "alpha" in line)
    assert waiting.startswith("⏳ alpha - just now") and "waits for you" in waiting


def test_a_mode_that_does_not_exist_is_named_unknown(env) -> None:  # noqa: F811
    _, api, _ = env
    say(api, "/new alpha", "created")
    assert say(api, "/mode bogus", "mode")["text"].startswith("Unknown mode 'bogus'.")


def test_a_session_name_with_a_space_is_not_taken_for_a_persona(env) -> None:  # noqa: F811
    sup, api, _ = env
    reply = say(api, "/new Bad Name!", "persona")["text"]
    assert reply.startswith("'Name!' is not a persona here (reviewer), and a session name is one word.")
    assert sup.request("list", all=True)["sessions"] == []


def test_names_that_differ_only_in_case_are_one_session(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new work", "created")
    say(api, "/new other", "created")
    say(api, "/new Work", "Session 'work' exists (names differ only in case).")
    say(api, "/switch WORK", "Switched to session 'work'.")
    assert sorted(s["name"] for s in sup.request("list", all=True)["sessions"]) == ["other", "work"]


def test_a_long_answer_notifies_once_numbers_its_parts_and_captions_its_file(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    api.message(USER, "long:20000")
    doc = wait_for(lambda: api.documents[-1] if api.documents else None, 60, what="the .md document")
    sup.wait_consumer("telegram-bot")
    created = next(m for m in api.sent if "'alpha' created" in m["text"])
    parts = [m for m in api.sent if m["chat_id"] == USER and created["message_id"] < m["message_id"] < doc["message_id"]]
    n = len(parts)
    assert n > render.LONG_ANSWER_PARTS
    assert [m["text"].rsplit("\n", 1)[-1] for m in parts] == [f"({i}/{n})" for i in range(1, n + 1)]
    assert [m["disable_notification"] for m in parts] == [False] + [True] * (n - 1)
    assert all(len(m["text"].encode("utf-16-le")) // 2 <= 4096 for m in parts)
    assert doc["caption"] == f"📄 The whole answer ({n} parts) in one file"


def test_a_sessions_list_shows_the_switch_after_its_button_is_pressed(env) -> None:  # noqa: F811
    _, api, _ = env
    say(api, "/new alpha", "created")
    say(api, "/new beta", "created")
    listing = say(api, "/sessions", "beta")
    assert listing["text"].splitlines()[0].startswith("→ ⚪ beta")
    press_button(api, listing, "Switch to alpha")
    def redrawn() -> list[str] | None:
        for edit in api.edits:
            lines = edit["text"].splitlines()
            if int(edit["message_id"]) == listing["message_id"] and any(
                    line.startswith("→ ") and "alpha - " in line for line in lines):
                return lines
        return None
    lines = wait_for(redrawn, what="the list to be redrawn with alpha marked")
    assert not any(line.startswith("→ ") and "beta - " in line for line in lines)


def test_what_a_session_that_is_not_the_chats_shows_while_writing_and_failing_carries_its_name(
        make_supervisor, bot_env, telegram, tmp_path) -> None:
    sup = make_supervisor(idle_timeout=60).start()
    bot_env(sup)
    api = telegram
    gate = tmp_path / "go"
    say(api, "/new alpha", "created")
    api.message(USER, f"waitfile:{gate} stream:3 alpha writes this slowly")
    sup.wait_received("stream:3 alpha writes this slowly")
    say(api, "/new beta", "created")  # beta is the chat's session from now on
    gate.touch()
    draft = wait_for(lambda: next((d for d in api.drafts if "alpha writes" in d["text"]), None),
                     what="alpha's answer as it is written")
    assert draft["text"].startswith("[alpha]\n")
    answer = api.wait_for_text(lambda t: t.startswith("[alpha]") and "echo: waitfile" in t, chat_id=USER)

    def to_alpha(text: str) -> None:  # a reply to alpha's answer goes to alpha
        api.message(USER, text, reply_to_message={
            "message_id": answer["message_id"], "date": 0, "chat": {"id": USER, "type": "private"},
            "from": {"id": 123456, "is_bot": True, "first_name": "Claude"}, "text": answer["text"]})
        sup.wait_received(text)

    to_alpha("apierror please")
    report = wait_for(lambda: next((e for e in api.edits if "Claude reported an error" in e["text"]), None),
                      what="the API error report")
    assert report["text"].startswith("[alpha] ⚠️ Claude reported an error")
    sup.wait_state("alpha", "idle")
    to_alpha("sleep:60 hold")
    # a message that waits for its own turn (as claudectl send --queue makes), then dropped
    sup.request("send", session="alpha", text="dropped one", origin=f"tg:{USER}", queue=True)
    sup.request("drop_queued", session="alpha")
    api.wait_for_text(lambda t: t.startswith("[alpha] ❌ Message not delivered"), chat_id=USER)
    sup.request("interrupt", session="alpha")
    api.wait_for_text(lambda t: t == "[alpha] ⏹ Interrupted.", chat_id=USER)
    assert all(d["text"].startswith("[alpha]\n") for d in api.drafts)
