"""Every message goes where the user meant, once (issue 28): played as a user through
the fake Bot API, against a real supervisor with the fake claude."""

from __future__ import annotations

from bot import _render as render

from .conftest import USER, wait_for
from .test_bot_app import env, say  # noqa: F401  (the fixture)


def press_button(api, message: dict, label_part: str) -> None:
    buttons = [b for row in message["reply_markup"]["inline_keyboard"] for b in row]
    button = next(b for b in buttons if label_part in b["text"])
    api.press(USER, button["callback_data"], message["message_id"])


def test_archive_of_a_busy_session_asks_first_and_says_what_is_dropped(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    api.message(USER, "sleep:60 long")
    sup.wait_received("sleep:60 long")
    say(api, "second", "⏳ Queued")
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
    wait_for(lambda: any(a.get("text") == render.RETRY_DONE for a in api.callback_answers),
             what="the second press to be answered 'already sent'")
    assert len([r for r in sup.claude_received() if r["text"] == "apierror please"]) == 2


def test_a_failed_resume_is_one_message_and_the_fresh_button_sends_the_message_again(make_supervisor, bot_env,
                                                                                      telegram) -> None:
    sup = make_supervisor(idle_timeout=1).start()
    bot_env(sup)
    api = telegram
    say(api, "/new alpha", "created")
    say(api, "first", "echo: first")
    sup.wait_state("alpha", "suspended")
    for path in (sup.home / ".fake-claude").rglob("*.jsonl"):
        path.unlink()  # the conversation is gone
    api.message(USER, "second")
    offer = api.wait_for_text(lambda t: t.startswith("❌ Session 'alpha' could not resume"), chat_id=USER)
    assert "No conversation found" in offer["text"]
    sup.wait_state("alpha", "failed")
    sup.wait_consumer("telegram-bot")
    assert not [t for t in api.texts(USER) if "not delivered" in t]  # said once, not twice
    question = next(m for m in api.from_users if m.get("text") == "second")
    assert offer["reply_parameters"]["message_id"] == question["message_id"]
    press_button(api, offer, "Start a fresh conversation")
    api.wait_for_text(lambda t: "was sent to it again" in t, chat_id=USER)
    answer = api.wait_for_text(lambda t: t.startswith("echo: second"), chat_id=USER)
    assert "history: 0 earlier messages" in answer["text"]


def test_a_dropped_message_is_reported_quietly_under_it_with_a_retry(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    api.message(USER, "sleep:60 long")
    sup.wait_received("sleep:60 long")
    say(api, "second", "⏳ Queued")
    question = say(api, "/cancel", "Stop what?")
    press_button(api, question, "drop")
    notice = api.wait_for_text(lambda t: t.startswith("❌ Message not delivered"), chat_id=USER)
    second = next(m for m in api.from_users if m.get("text") == "second")
    assert notice["disable_notification"] and notice["reply_parameters"]["message_id"] == second["message_id"]
    press_button(api, notice, "Retry")
    sup.wait_received("second")
    api.wait_for_text(lambda t: t.startswith("echo: second"), chat_id=USER)
