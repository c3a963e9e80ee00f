"""Session names at their limits through the bot, played as a user through the fake Bot
API (which refuses callback data over 64 bytes, as Telegram does), against a real
supervisor with the fake claude: 64-character names, and names in other scripts."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol import is_session_name

from .conftest import USER, wait_for
from .fake_telegram import MAX_CALLBACK_DATA_BYTES
from .test_bot_app import entity_text, env, say  # noqa: F401  (the fixture)

LONG = "project-" + "x" * 55 + "1"  # 64 characters, the longest name there is


def buttons_of(message: dict) -> list[dict]:
    return [b for row in (message.get("reply_markup") or {}).get("inline_keyboard", []) for b in row]


def press(api, message: dict, label_part: str) -> None:
    button = next(b for b in buttons_of(message) if label_part in b["text"])
    api.press(USER, button["callback_data"], message["message_id"])


def test_buttons_of_a_64_character_session_fit_telegram_and_work_after_a_bot_kill_9(make_supervisor, bot_env,
                                                                                   telegram) -> None:
    sup = make_supervisor(idle_timeout=60).start()
    bot = bot_env(sup)
    api = telegram
    say(api, f"/new {LONG}", "created")
    say(api, "/new other", "created")
    listing = say(api, "/sessions", "other")  # a switch button names the long one
    assert [b["text"] for b in buttons_of(listing)] == [f"Switch to {LONG}"]
    say(api, f"/switch {LONG}", "Switched")
    api.message(USER, "sleep:60 long")
    sup.wait_received("sleep:60 long")
    question = say(api, f"/archive {LONG}", "Archive anyway?")
    assert all(len(b["callback_data"].encode()) <= MAX_CALLBACK_DATA_BYTES for b in buttons_of(question))
    bot.kill9()  # the button's meaning must outlive the bot that drew it
    bot_env(sup)
    press(api, question, "now")
    api.wait_for_text(lambda t: t == f"Session '{LONG}' archived.", chat_id=USER)
    sup.wait_state(LONG, "archived")
    press(api, listing, "Switch to")  # the old list: the session is archived now, said plainly
    api.wait_for_text(lambda t: t == f"Session '{LONG}' is archived.", chat_id=USER)


def test_a_shortened_button_the_bot_no_longer_knows_says_it_expired(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    shown = say(api, "hello", "echo: hello")
    api.press(USER, "archive:#notatokenweknow", shown["message_id"])  # forged, or from long ago
    wait_for(lambda: any("expired" in str(a.get("text")) for a in api.callback_answers), 60,
             what="the press answered 'expired'")
    assert sup.session("alpha")["state"] != "archived"


CYRILLIC = "проект-" + "ж" * 56 + "1"  # 64 characters, 126 bytes: every button with it is over 64 bytes
CJK = "项目𠀀"  # the last one outside the BMP: two UTF-16 units, four bytes


@pytest.mark.parametrize(("name", "allowed"), [
    ("work", True), ("Работа", True), ("项目", True), ("हिन्दी", True), ("مشروع_2", True), ("٣x", True),
    (CYRILLIC, True), ("𠀀" * 63, True),  # 63 letters of 4 bytes: 252 bytes
    ("𠀀" * 64, False),  # 256 bytes: more than a directory's name holds
    ("🚀rocket", False), ("rocket🚀", False), ("два слова", False), ("-x", False), ("_x", False),
    ("e\u0301te", False),  # "été" spelled with a combining accent (NFD): one name, one spelling
    ("\u0301a", False), ("a/b", False), ("a.b", False), ("", False), ("a" * 65, False),
])
def test_which_session_names_are_allowed(name: str, allowed: bool) -> None:
    assert is_session_name(name) is allowed


def test_names_in_other_scripts_work_in_every_command_and_button(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, f"/new {CYRILLIC}", f"Session '{CYRILLIC}' created")
    say(api, f"/new {CJK}", f"Session '{CJK}' created")
    refused = say(api, "/new 🚀rocket", "invalid session name")["text"]
    assert "emoji" in refused  # says what is allowed
    listing = say(api, "/sessions", CYRILLIC)
    codes = [entity_text(listing["text"], e) for e in listing["entities"] if e["type"] == "code"]
    assert codes == [CJK, CYRILLIC]  # entities counted in UTF-16 units, as Telegram counts
    press(api, listing, f"Switch to {CYRILLIC}")
    api.wait_for_text(lambda t: t == f"Switched to session '{CYRILLIC}'.", chat_id=USER)
    say(api, "hello", "echo: hello")
    say(api, f"/switch {CJK}", f"Switched to session '{CJK}'.")
    say(api, f"/switch {CYRILLIC.upper()}", f"Switched to session '{CYRILLIC}'.")  # case does not matter
    # /cancel's choice, with a message waiting
    api.message(USER, "sleep:60 long")
    sup.wait_received("sleep:60 long")
    say(api, "/queue second", "⏳ Queued")
    question = say(api, "/cancel", "Stop what?")
    press(api, question, "drop")
    api.wait_for_text(lambda t: t.startswith("Interrupting Claude...") and "dropped" in t, chat_id=USER)
    sup.wait_state(CYRILLIC, "idle")
    # /cd's question
    (Path(sup.session(CYRILLIC)["cwd"]) / "sub").mkdir()
    move = say(api, "/cd sub", "Move session")
    press(api, move, "Move and start fresh")
    api.wait_for_text(lambda t: t.startswith(f"Session '{CYRILLIC}' now works in"), chat_id=USER)
    # /archive's question, busy
    api.message(USER, "sleep:60 again")
    sup.wait_received("sleep:60 again")
    question = say(api, f"/archive {CYRILLIC}", "Archive anyway?")
    press(api, question, "now")
    api.wait_for_text(lambda t: t == f"Session '{CYRILLIC}' archived.", chat_id=USER)
    say(api, f"/unarchive {CYRILLIC}", f"Session '{CYRILLIC}' is back.")
    for message in api.sent:
        assert all(len(b["callback_data"].encode()) <= MAX_CALLBACK_DATA_BYTES for b in buttons_of(message))
