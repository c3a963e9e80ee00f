"""Steering in Telegram (issue #29), played as a user through the fake Bot API against a
real supervisor and the fake claude: a message to a busy session joins the answer, quietly
acknowledged; ``/queue`` and ``[telegram] while_busy = "queue"`` wait instead."""

from __future__ import annotations

from bot import _render as render

from .conftest import USER, wait_for
from .test_bot_app import say


def test_a_message_to_a_busy_session_joins_the_answer_which_threads_to_the_first(make_supervisor, bot_env,
                                                                                telegram) -> None:
    sup = make_supervisor().start()
    bot_env(sup)
    api = telegram
    say(api, "/new alpha", "created")
    gate = sup.base / "join"
    api.message(USER, f"joinpoint:{gate} run the tests")
    sup.wait_received("run the tests")
    ack = say(api, "only the fast ones", render.STEERED)
    assert ack["disable_notification"] and not ack.get("reply_markup")
    steering = next(m for m in api.from_users if m.get("text") == "only the fast ones")
    wait_for(lambda: any(r["text"] == "only the fast ones" for r in sup._claude_log("inbox")),
             what="claude to read the steered message")
    gate.touch()
    answer = api.wait_for_text(lambda t: t.startswith("echo: joinpoint:"), chat_id=USER)
    first = next(m for m in api.from_users if str(m.get("text", "")).startswith("joinpoint:"))
    # one answer for both, threaded to the first message of the turn, naming the steering one
    assert answer["reply_parameters"]["message_id"] == first["message_id"]
    assert "steered: only the fast ones" in answer["text"]
    footer = api.wait_for_text(lambda t: t.startswith("$") and "↪ 1 message added" in t, chat_id=USER)
    assert footer["disable_notification"]
    sup.wait_consumer("telegram-bot")
    assert not [t for t in api.texts(USER) if t.startswith("echo: only the fast ones")]
    assert steering["message_id"] != first["message_id"]


def test_slash_queue_waits_for_an_answer_of_its_own(make_supervisor, bot_env, telegram) -> None:
    sup = make_supervisor().start()
    bot_env(sup)
    api = telegram
    say(api, "/new alpha", "created")
    gate = sup.base / "join"
    api.message(USER, f"joinpoint:{gate} first")
    sup.wait_received("first")
    say(api, "/queue a question of its own", "⏳ Queued")
    gate.touch()
    api.wait_for_text(lambda t: t.startswith("echo: a question of its own"), chat_id=USER)
    assert "Usage: /queue" in say(api, "/queue", "Usage: /queue")["text"]


def test_while_busy_queue_makes_waiting_the_default(make_supervisor, bot_env, telegram) -> None:
    sup = make_supervisor(config='[telegram]\nwhile_busy = "queue"\n').start()
    bot_env(sup)
    api = telegram
    say(api, "/new alpha", "created")
    gate = sup.base / "join"
    api.message(USER, f"joinpoint:{gate} first")
    sup.wait_received("first")
    say(api, "second", "⏳ Queued")
    gate.touch()
    api.wait_for_text(lambda t: t.startswith("echo: second"), chat_id=USER)
    wait_for(lambda: not [e for e in sup.events("alpha") if e["kind"] == "steered"], what="nothing steered")

