"""Every message goes where the user meant, once (issue 28): played as a user through
the fake Bot API, against a real supervisor with the fake claude."""

from __future__ import annotations

from .conftest import USER
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
