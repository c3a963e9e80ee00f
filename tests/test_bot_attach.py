"""The desk and the phone in Telegram (issue #25): /attach, a message to a session open
in a terminal, what the terminal says shown in the chat, 📟 in /sessions, /resume.
Played as a user through the fake Bot API, against a real supervisor with the fake claude."""

from __future__ import annotations

from .conftest import USER
from .test_attach import claude_in_terminal, ctl_attach, read_until
from .test_bot_app import env, say  # noqa: F401  (the fixture)
from .test_bot_delivery import press_button


def test_attach_in_telegram_names_the_command_and_the_chat_follows_the_desk(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    say(api, "first", "echo: first")
    told = say(api, "/attach", "claudectl")
    assert f"claudectl --runtime-dir {sup.runtime_dir} attach alpha" in told["text"]
    tui = ctl_attach(sup, "alpha")
    assert tui.stdin is not None and tui.stdout is not None
    read_until(tui.stdout, "fake claude TUI on")
    api.wait_for_text(lambda t: "'alpha' is open in a terminal now" in t, chat_id=USER)
    listing = say(api, "/sessions", "alpha")
    assert "📟 alpha - in a terminal since" in listing["text"]
    assert f"pid {sup.session('alpha')['terminal']['pid']}" in listing["text"]
    waiting = say(api, "from the phone", "is open in a terminal")
    assert "answered as soon as that Claude exits" in waiting["text"]
    tui.stdin.write("typed at the desk\n")
    tui.stdin.flush()
    api.wait_for_text(lambda t: "at the desk:\ntyped at the desk" in t, chat_id=USER)
    api.wait_for_text(lambda t: "Claude, at the desk" in t and "echo: typed at the desk" in t, chat_id=USER)
    tui.stdin.write("/exit\n")
    tui.stdin.flush()
    assert tui.wait(60) == 0
    api.wait_for_text(lambda t: "'alpha' is back from the terminal" in t, chat_id=USER)
    answer = api.wait_for_text(lambda t: "echo: from the phone" in t, chat_id=USER)
    assert "history: 4 earlier messages" in answer["text"]


def test_resume_lists_a_directorys_conversations_and_a_press_continues_one(make_supervisor, bot_env, telegram,
                                                                          tmp_base) -> None:
    projects = tmp_base / "projects"
    project = projects / "app"
    project.mkdir(parents=True)
    sup = make_supervisor(config=f'[telegram]\nroots = ["{projects}"]\n').start()
    bot = bot_env(sup)
    made = claude_in_terminal(sup, project, "remember the word pelican")
    offer = say(telegram, f"/resume {project}", "Claude Code conversations in")
    assert "remember the word pelican" in offer["text"] and "2 messages" in offer["text"]
    bot.kill9()  # the list outlives the bot that made it
    bot_env(sup)
    telegram.press(USER, f"resume:{made} /etc", offer["message_id"] + 10_000)  # a forged button: not outside the roots
    telegram.wait_for_text(lambda t: t == "⚠️ /etc is outside the allowed directories. Nothing was made.", chat_id=USER)
    press_button(telegram, offer, "Continue: remember the word pelican")
    telegram.wait_for_text(lambda t: "Session 'app' continues that conversation" in t, chat_id=USER)
    rec = sup.session("app")
    assert rec["session_id"] == made and rec["cwd"] == str(project)
    answer = say(telegram, "what was the word?", "echo: what was the word?")
    assert "history: 2 earlier messages" in answer["text"]
    again = say(telegram, f"/resume {project}", "No Claude Code conversation")
    assert "does not continue already" in again["text"]
