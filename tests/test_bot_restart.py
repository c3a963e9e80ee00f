"""Buttons whose meaning the bot holds — "Send it to Claude", "Deny, with this as the
reason", Retry — work after the bot is killed (kill -9) and started again, once. Played
as a user through the fake Bot API, against a real supervisor with the fake claude."""

from __future__ import annotations

import pytest

from bot import _render as render

from .conftest import USER, wait_for
from .test_bot_app import say

pytestmark = pytest.mark.timeout(240)


def press(api, message: dict, label_part: str) -> None:
    buttons = [b for row in message["reply_markup"]["inline_keyboard"] for b in row]
    button = next(b for b in buttons if label_part in b["text"])
    api.press(USER, button["callback_data"], message["message_id"])


def pressed_twice_says_done(api) -> None:
    wait_for(lambda: any(a.get("text") == render.ALREADY_DONE for a in api.callback_answers), 60,
             what="the second press answered 'already done'")


def test_send_it_to_claude_works_once_after_a_bot_kill_9(make_supervisor, bot_env, telegram) -> None:
    sup = make_supervisor().start()
    bot = bot_env(sup)
    api = telegram
    say(api, "/new alpha", "created")
    offer = say(api, "/frobnicate now", render.not_ours_text("frobnicate"))
    bot.kill9()
    bot_env(sup)
    press(api, offer, render.SEND_TO_CLAUDE_BUTTON)
    api.wait_for_text(lambda t: t.startswith("echo: /frobnicate now"), chat_id=USER)
    press(api, offer, render.SEND_TO_CLAUDE_BUTTON)
    pressed_twice_says_done(api)
    sup.wait_consumer("telegram-bot")
    assert [e["text"] for e in sup.events("alpha") if e["kind"] == "user"] == ["/frobnicate now"]
    assert render.HELD_GONE not in api.texts(USER)


def test_deny_with_a_reason_and_send_as_a_message_work_after_a_bot_kill_9(make_supervisor, bot_env,
                                                                          telegram) -> None:
    # (the two-button question is what while_busy = "queue" asks; steering offers one button)
    sup = make_supervisor(config='[telegram]\nwhile_busy = "queue"\n').start()
    bot = bot_env(sup)
    api = telegram
    say(api, "/new alpha", "created")
    prompt = say(api, "needperm now", "Claude wants to run")
    offer = say(api, "no, that file is mine", "Is this the reason to deny it")
    second = say(api, "and another thought", "Is this the reason to deny it")
    bot.kill9()
    bot_env(sup)
    press(api, offer, "Deny, with this as the reason")
    api.wait_for_text(lambda t: t == "permission: deny (The user denied this: no, that file is mine)", chat_id=USER)
    press(api, second, "Send it to Claude as a new message")
    api.wait_for_text(lambda t: t.startswith("echo: and another thought"), chat_id=USER)
    assert prompt is not None and render.HELD_GONE not in api.texts(USER)


def test_retry_works_once_after_a_bot_kill_9(make_supervisor, bot_env, telegram) -> None:
    sup = make_supervisor().start()
    bot = bot_env(sup)
    api = telegram
    say(api, "/new alpha", "created")
    report = say(api, "apierror please", "API Error: 400")
    retry = wait_for(lambda: next((e for e in api.edits if e.get("reply_markup")
                                   and int(e["message_id"]) == report["message_id"]), None),
                     what="the report with its Retry button")
    sup.wait_consumer("telegram-bot")  # every event of the turn shown: nothing left to read again
    bot.kill9()
    bot_env(sup)
    press(api, retry, render.RETRY_BUTTON)
    api.wait_for_text(lambda t: t == render.RETRY_SENT, chat_id=USER)
    press(api, retry, render.RETRY_BUTTON)
    pressed_twice_says_done(api)
    wait_for(lambda: len([r for r in sup.claude_received() if r["text"] == "apierror please"]) == 2,
             what="the retried message to reach Claude")
    sup.wait_consumer("telegram-bot")
    assert len([r for r in sup.claude_received() if r["text"] == "apierror please"]) == 2
    assert render.RETRY_GONE not in api.texts(USER)
