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
    for name in ("rules", "budget", "diff", "every", "schedules", "fork", "tz"):
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


def test_budget_shows_spend_and_a_message_past_the_cap_is_held_in_the_supervisor_and_sent_once(
        chat, telegram, bot_env) -> None:
    sup, bot = chat()
    say(telegram, "/new alpha", "created")
    assert "✅ Daily cap of 'alpha': $0.001." in say(telegram, "/budget 0.001", "Daily cap")["text"]
    say(telegram, "hello", "hello")  # answered: $0.001 spent, all the cap
    shown = say(telegram, "/budget", "What Claude cost")["text"]
    assert "→ alpha: today $0.001 of $0.001 a day (100% ⚠️) · this month $0.001" in shown
    assert "All sessions (the whole machine): today $0.001 · this month $0.001" in shown
    held = say(telegram, "held one", "Held, not sent")
    assert "session 'alpha' has spent $0.001 today, its daily cap is $0.001" in held["text"]
    assert not [e for e in sup.events("alpha") if e["kind"] == "user" and e.get("text") == "held one"]
    # the held message is the supervisor's to keep: a bot killed and started again still sends it
    bot.kill9()
    bot_env(sup)
    # the button says what it does: one more day's cap, today only
    telegram.press(USER, button(held, "🔼 Allow $0.001 more today and send it"), held["message_id"])
    telegram.wait_for_text(lambda t: t.startswith("✅ 'alpha' may spend $0.001 more today; the cap is back at"
                                                  " midnight"), chat_id=USER)
    telegram.wait_for_text(lambda t: "held one" in t and t.startswith("echo"), chat_id=USER)
    report = sup.request("budget", session="alpha")["sessions"][0]
    assert (report["cap"], report["extra"]) == (0.001, 0.001)  # the cap itself is unchanged
    assert "$0.001 a day + $0.001 today only" in say(telegram, "/budget", "What Claude cost")["text"]
    # a second press does nothing more (a button works once): the message went once
    telegram.press(USER, button(held, "🔼 Allow $0.001 more today and send it"), held["message_id"])
    wait_for(lambda: any(a.get("text") == render.ALREADY_DONE for a in telegram.callback_answers), 60,
             what="the second press answered 'already done'")
    sup.wait_consumer("telegram-bot")
    assert [e["text"] for e in sup.events("alpha") if e["kind"] == "user"] == ["hello", "held one"]
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
    # claudectl shows the same (the supervisor's diff op)
    out = sup.ctl("diff", "alpha", check=True).stdout
    assert "# staged: app.py +5 -1" in out and "# not staged: notes.md +0 -1" in out and "# untracked: new.txt" in out


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


OTHER = USER + 1  # a second allowlisted user (a private chat's id is its user's)


def test_each_user_has_a_time_zone_for_the_schedules_and_caps_they_set(make_supervisor, bot_env, telegram) -> None:
    sup = make_supervisor().start()
    bot_env(sup, allowed=(USER, OTHER))
    assert "no time zone of your own" in say(telegram, "/tz", "🕘")["text"]
    bad = say(telegram, "/tz Mars/Olympus", "not a time zone")["text"]
    assert bad.startswith("'Mars/Olympus' is not a time zone. Usage: /tz")
    say(telegram, "/tz Europe/Berlin", "✅ Your time zone: Europe/Berlin")
    say(telegram, "/tz America/New_York", "✅ Your time zone: America/New_York", user=OTHER)
    say(telegram, "/new alpha", "created")
    say(telegram, "/new beta", "created", user=OTHER)
    assert "09:00 (Europe/Berlin)" in say(telegram, "/every daily 9:00 good morning", "⏰ Schedule")["text"]
    assert "09:00 (America/New_York)" in say(telegram, "/every daily 9:00 good morning", "⏰ Schedule",
                                             user=OTHER)["text"]
    runs = {s["session"]: s for s in sup.request("schedules")["schedules"]}
    assert (runs["alpha"]["tz"], runs["beta"]["tz"]) == ("Europe/Berlin", "America/New_York")
    # each at 9:00 on its own user's clock: New York's 9:00 comes six hours after Berlin's
    assert (runs["beta"]["next_run"] - runs["alpha"]["next_run"]) % 86400 == 6 * 3600
    say(telegram, "/budget 1", "✅ Daily cap of 'alpha'")
    say(telegram, "/budget 1", "✅ Daily cap of 'beta'", user=OTHER)
    caps = {r["session"]: r for r in sup.request("budget")["sessions"]}
    assert (caps["alpha"]["tz"], caps["beta"]["tz"]) == ("Europe/Berlin", "America/New_York")
    assert "Your time zone: Europe/Berlin (now " in say(telegram, "/tz", "🕘")["text"]
    say(telegram, "/tz default", "the supervisor's time zone again")
    assert "no time zone of your own" in say(telegram, "/tz", "🕘")["text"]
    assert "Your time zone: America/New_York" in say(telegram, "/tz", "🕘", user=OTHER)["text"]


def test_always_allow_for_a_file_tool_in_a_directory_the_user_picks_or_names(chat, telegram) -> None:
    sup, _ = chat()
    say(telegram, "/new alpha", "created")
    cwd = sup.session("alpha")["cwd"]
    prompt = say(telegram, "neededit:src/pkg/a.py", "Claude wants to")
    labels = [t for t, _ in buttons(prompt)]
    assert labels[-2:] == ["♾ Always allow edits only in src/", "♾ Always allow edits only in src/pkg/"]
    telegram.press(USER, button(prompt, "♾ Always allow edits only in src/"), prompt["message_id"])
    edit_of(telegram, prompt, f"♾ Always allowed for this session: Edit(/{cwd}/src/**)")
    answered(telegram, "permission: allow")
    # another file under src/ is allowed; one elsewhere in the session's directory is asked for
    answered_by_rule = f"permission: allowed by rule Edit(/{cwd}/src/**)"
    say(telegram, "neededit:src/other/b.py", answered_by_rule)
    asked = say(telegram, "neededit:lib/c.py", "Claude wants to")
    telegram.press(USER, button(asked, "🚫 Deny"), asked["message_id"])
    answered(telegram, "permission: deny")
    # a directory named by the user; the live Claude gets it (restarted with its history)
    (Path(cwd) / "lib").mkdir()
    added = say(telegram, "/rules add Edit lib", "Always allowed in 'alpha' from now on")["text"]
    assert added.startswith(f"♾ Always allowed in 'alpha' from now on: edits in {cwd}/lib.")
    assert sup.session("alpha")["allowed_tools"] == [f"Edit(/{cwd}/src/**)", f"Edit(/{cwd}/lib/**)"]
    say(telegram, "neededit:lib/c.py", f"permission: allowed by rule Edit(/{cwd}/lib/**)")
    assert "outside the allowed directories" in say(telegram, "/rules add Edit /etc", "⚠️")["text"]
    assert "Usage: /rules add Edit <dir>" in say(telegram, "/rules add Read x", "Usage")["text"]
    assert "not one command" in say(telegram, "/rules add Bash ls && rm x", "⚠️")["text"]
