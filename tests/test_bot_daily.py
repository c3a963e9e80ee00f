"""The daily-driver commands (issue #27) played as a user through the fake Bot API
against a real supervisor and the fake claude: /rules, /budget, /diff, /every and
/schedules, /fork."""

from __future__ import annotations

import pytest

from bot import _render as render

from .conftest import BotProcess, SupervisorProcess
from .test_bot_app import USER, say
from .test_bot_prompts import answered, button, buttons, edit_of

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def chat(make_supervisor, bot_env):
    def make(config: str = "") -> tuple[SupervisorProcess, BotProcess]:
        sup = make_supervisor(config=config).start()
        return sup, bot_env(sup)

    return make


def test_every_daily_command_is_in_the_menu_and_the_help() -> None:
    menu = {name for name, _ in render.MENU}
    for name in ("rules",):
        assert name in menu and f"/{name}" in render.HELP_TEXT


def test_always_allow_says_the_prefix_and_rules_lists_and_removes_it(chat, telegram) -> None:
    sup, _ = chat()
    say(telegram, "/new alpha", "created")
    assert "no always-allow rules" in say(telegram, "/rules", "always-allow")["text"]
    prompt = say(telegram, "needperm now", "Claude wants to run")  # Claude asks to run "touch x"
    # the button says what will be allowed from now on: every touch, not just "touch x"
    telegram.press(USER, button(prompt, "♾ Always allow `touch …` here"), prompt["message_id"])
    edit_of(telegram, prompt, "♾ Always allowed for this session: Bash(touch *)")
    say(telegram, "needperm again", "permission: allowed by rule")
    listing = say(telegram, "/rules", "Always allowed in 'alpha'")
    assert "1. `touch …` — Bash(touch *)" in listing["text"]
    assert [t for t, _ in buttons(listing)] == ["🗑 Remove 1. `touch …`"]
    telegram.press(USER, button(listing, "🗑 Remove 1. `touch …`"), listing["message_id"])
    telegram.wait_for_text(lambda t: t.startswith("🗑 Removed `touch …`"), chat_id=USER)
    assert sup.session("alpha")["allowed_tools"] == []
    # Claude asks again (the running one restarted without the rule)
    again = say(telegram, "needperm once more", "Claude wants to run")
    telegram.press(USER, button(again, "🚫 Deny"), again["message_id"])
    answered(telegram, "permission: deny (The user denied this from Telegram.)")
