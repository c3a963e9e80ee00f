"""The daily-driver commands (issue #27) played as a user through the fake Bot API
against a real supervisor and the fake claude: /rules, /budget, /diff, /every and
/schedules, /fork."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bot import _render as render

from .conftest import BotProcess, SupervisorProcess, wait_for
from .test_bot_app import USER, say
from .test_bot_prompts import answered, button, buttons, edit_of
from .test_permissions import arg_after

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def chat(make_supervisor, bot_env):
    def make(config: str = "") -> tuple[SupervisorProcess, BotProcess]:
        sup = make_supervisor(config=config).start()
        return sup, bot_env(sup)

    return make


def test_every_daily_command_is_in_the_menu_and_the_help() -> None:
    menu = {name for name, _ in render.MENU}
    for name in ("rules", "budget", "diff", "every", "schedules", "fork"):
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


def test_budget_shows_spend_and_a_message_past_the_cap_is_held_until_the_cap_is_raised(chat, telegram) -> None:
    sup, _ = chat()
    say(telegram, "/new alpha", "created")
    assert "✅ Daily cap of 'alpha': $0.001." in say(telegram, "/budget 0.001", "Daily cap")["text"]
    say(telegram, "hello", "hello")  # answered: $0.001 spent, all the cap
    shown = say(telegram, "/budget", "What Claude cost")["text"]
    assert "→ alpha: today $0.001 of $0.001 a day (100% ⚠️) · this month $0.001" in shown
    assert "All sessions (the whole machine): today $0.001 · this month $0.001" in shown
    held = say(telegram, "held one", "Held, not sent")
    assert "session 'alpha' has spent $0.001 today, its daily cap is $0.001" in held["text"]
    assert not [e for e in sup.events("alpha") if e["kind"] == "user" and e.get("text") == "held one"]
    telegram.press(USER, button(held, "🔼 Raise the cap to $0.002 and send it"), held["message_id"])
    telegram.wait_for_text(lambda t: t.startswith("✅ Daily cap of 'alpha' raised to $0.002; sent."), chat_id=USER)
    telegram.wait_for_text(lambda t: "held one" in t and t.startswith("echo"), chat_id=USER)
    assert sup.request("budget", session="alpha")["sessions"][0]["cap"] == 0.002
    # a second press does nothing more (a button works once)
    telegram.press(USER, button(held, "🔼 Raise the cap to $0.002 and send it"), held["message_id"])
    say(telegram, "/budget all 5", "✅ Daily cap of all sessions together: $5.00.")
    assert "not an amount" in say(telegram, "/budget lots", "Usage")["text"]


def git(cwd: str, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_diff_shows_staged_and_unstaged_changes_and_sends_the_whole_diff(chat, telegram) -> None:
    sup, _ = chat()
    say(telegram, "/new alpha", "created")
    cwd = sup.session("alpha")["cwd"]
    assert "which is not in a git repository" in say(telegram, "/diff", "📝")["text"]
    git(cwd, "init", "-q")
    Path(cwd, "app.py").write_text("def f():\n    return 1\n")
    Path(cwd, "notes.md").write_text("one\ntwo\n")
    git(cwd, "add", ".")
    git(cwd, "commit", "-q", "-m", "first")
    assert "No changes: the working tree matches the last commit." in say(telegram, "/diff", "📝")["text"]
    Path(cwd, "app.py").write_text("def f():\n    return 2\n\n\ndef g():\n    return 3\n")
    git(cwd, "add", "app.py")
    Path(cwd, "notes.md").write_text("one\n")
    Path(cwd, "new.txt").write_text("fresh\n")
    summary = say(telegram, "/diff", "📝 Changes in 'alpha'")["text"]
    assert "Staged (1 file, +5 −1):\n  app.py  +5 −1" in summary  # noqa: RUF001
    assert "Not staged (1 file, +0 −1):\n  notes.md  +0 −1" in summary  # noqa: RUF001
    assert "Untracked (1): new.txt" in summary
    doc = wait_for(lambda: next((d for d in telegram.documents if d["filename"] == "alpha.diff"), None), 60,
                   what="the whole diff")
    text = doc["content"].decode()
    assert text.startswith("# staged\ndiff --git a/app.py b/app.py")
    assert "+def g():" in text and "# not staged\ndiff --git a/notes.md b/notes.md" in text and "-two" in text
    # a path: only what changed under it
    only = say(telegram, "/diff notes.md", "📝 Changes in 'alpha'")["text"]
    assert "notes.md" in only and "app.py" not in only
    assert "outside the repository" in say(telegram, "/diff ../..", "⚠️")["text"]


def test_every_sends_the_prompt_on_time_and_schedules_pauses_and_removes_it(chat, telegram) -> None:
    sup, _ = chat()
    say(telegram, "/new alpha", "created")
    assert "Usage: /every <when> <prompt>" in say(telegram, "/every", "Usage")["text"]
    assert "cannot tell when" in say(telegram, "/every sometimes do it", "⚠️")["text"]
    made = say(telegram, "/every every 1m scheduled ping", "⏰ Schedule")["text"]
    assert "'scheduled ping' to 'alpha' at */1 * * * *" in made
    # kept by the supervisor: claudectl sees it
    assert "alpha: */1 * * * * 'scheduled ping'" in sup.ctl("schedule", "ls", check=True).stdout
    # within a minute the supervisor sends it, as a message like any other; the answer comes here
    telegram.wait_for_text(lambda t: "scheduled ping" in t and "echo" in t.lower(), chat_id=USER, timeout=120)
    listing = say(telegram, "/schedules", "⏰ Schedules")
    assert "1. [alpha] */1 * * * *: scheduled ping — next " in listing["text"]
    telegram.press(USER, button(listing, "⏸ Pause 1"), listing["message_id"])
    paused = telegram.wait_for_text(lambda t: t.startswith("⏸ Schedule 1 paused."), chat_id=USER)
    assert "scheduled ping — paused" in paused["text"]
    assert json.loads(sup.ctl("--json", "schedule", "ls", check=True).stdout)["schedules"][0]["paused"] is True
    telegram.press(USER, button(paused, "🗑 Remove 1"), paused["message_id"])
    telegram.wait_for_text(lambda t: t.startswith("🗑 Schedule 1 removed."), chat_id=USER)
    assert sup.request("schedules")["schedules"] == []


def test_fork_continues_a_copy_of_the_conversation_and_leaves_the_original_alone(chat, telegram) -> None:
    sup, _ = chat()
    say(telegram, "/new alpha", "created")
    say(telegram, "remember blue", "history: 0 earlier messages")
    alpha = sup.session("alpha")
    made = say(telegram, "/fork beta", "🍴")["text"]
    assert made.startswith("🍴 'beta' is a fork of 'alpha': it continues a copy of its conversation")
    beta = sup.session("beta")
    assert beta["cwd"] == alpha["cwd"] and beta["session_id"] != alpha["session_id"]
    say(telegram, "in the fork", "history: 2 earlier messages")  # alpha's turn is in the copy
    argv = sup.claude_starts()[-1]["argv"]
    assert arg_after(argv, "--resume") == alpha["session_id"] and "--fork-session" in argv
    assert arg_after(argv, "--session-id") == beta["session_id"]
    say(telegram, "again in the fork", "history: 4 earlier messages")
    say(telegram, "/switch alpha", "Switched")
    say(telegram, "in the original", "history: 2 earlier messages")  # the fork's turns are not here
    assert "exists already" in say(telegram, "/fork BETA", "exists")["text"]
    say(telegram, "/new gamma", "created")
    assert "starts afresh ('gamma' had no conversation yet)" in say(telegram, "/fork delta", "🍴")["text"]
