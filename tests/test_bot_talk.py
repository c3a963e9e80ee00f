"""How the bot talks, played as a user through the fake Bot API: the "/" menu, /start, a
first message before any session, queued messages, quiet by-the-ways, footers, edits."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path
from typing import Any

import pytest

from bot import _render as render

from .conftest import USER, wait_for
from .test_bot_app import env, say  # noqa: F401  (the fixture)


def test_the_menu_lists_every_command_with_a_line(env) -> None:  # noqa: F811
    _, api, _ = env
    wait_for(lambda: api.commands, 60, what="setMyCommands")
    names = [name for name, _ in api.commands]
    from bot._commands import COMMANDS
    from bot._daily import COMMANDS as DAILY

    assert set(COMMANDS) | set(DAILY) | {"help", "get", "queue"} == set(names)
    assert all(0 < len(text) <= 256 for _, text in api.commands)  # Telegram's limit for a description


def test_start_greets_and_says_how_to_begin(env) -> None:  # noqa: F811
    _, api, _ = env
    greeting = say(api, "/start", "Hi!")
    assert "/new" in greeting["text"] and "/help" in greeting["text"]


def test_a_first_message_offers_a_session_and_is_sent_to_it(env) -> None:  # noqa: F811
    sup, api, _ = env
    offer = say(api, "what is 2+2?", render.NO_ACTIVE_OFFER)
    [[button]] = offer["reply_markup"]["inline_keyboard"]
    assert button["text"] == "Create session 'main'"
    api.press(USER, button["callback_data"], offer["message_id"])
    api.wait_for_text(lambda t: "'main' created" in t, chat_id=USER)
    answer = api.wait_for_text(lambda t: t.startswith("echo: what is 2+2?"), chat_id=USER)
    assert answer
    # the offer no longer reads as an open question: it shows what was chosen
    edited = wait_for(lambda: next((e for e in api.edits if int(e["message_id"]) == offer["message_id"]), None), 60,
                      what="the offer edited to show the choice")
    assert edited["text"] == f"{render.NO_ACTIVE_OFFER}\n\n→ Create session 'main'" and not edited.get("reply_markup")
    assert sup.session("main")["state"] in ("idle", "busy")


def test_first_messages_waiting_for_the_create_button_are_sent_by_a_bot_restarted_meanwhile(
        make_supervisor, bot_env, telegram) -> None:
    """The messages sent before the chat had a session — text and a photo — wait for the
    button in the supervisor, not in the bot's memory: a bot killed -9 and started again
    sends them all, in order, once the button is pressed."""
    sup = make_supervisor(idle_timeout=60).start()
    bot = bot_env(sup)
    api = telegram
    offer = say(api, "what is 2+2?", render.NO_ACTIVE_OFFER)
    photo_update = api.photo(USER, b"\xff\xd8\xff\xe0fake-jpeg", caption="and this?")
    wait_for(lambda: api.confirmed > photo_update, 60, what="the photo handled (its update confirmed)")
    bot.kill9()
    bot_env(sup)
    api.press(USER, offer["reply_markup"]["inline_keyboard"][0][0]["callback_data"], offer["message_id"])
    api.wait_for_text(lambda t: t.startswith("echo: what is 2+2?"), chat_id=USER)
    photo = api.wait_for_text(lambda t: t.startswith("echo: and this?"), chat_id=USER)
    assert "[images: 1]" in photo["text"]
    assert [r["text"] for r in sup.claude_received()] == ["what is 2+2?", "and this?"]
    assert offer["text"] == render.NO_ACTIVE_OFFER and len(api.texts(USER)) == len(set(api.texts(USER)))


def test_a_second_first_session_gets_a_free_name_and_its_button_says_which(env) -> None:  # noqa: F811
    sup, api, _ = env
    sup.ctl("new", "main", check=True)
    offer = say(api, "hello", render.NO_ACTIVE_OFFER)
    [[button]] = offer["reply_markup"]["inline_keyboard"]
    assert button["text"] == "Create session 'main2'"  # the one it makes
    api.press(USER, button["callback_data"], offer["message_id"])
    api.wait_for_text(lambda t: "'main2' created" in t, chat_id=USER)


def test_a_double_tap_on_create_session_makes_one_session_and_sends_the_message_once(env) -> None:  # noqa: F811
    sup, api, _ = env
    offer = say(api, "what is 3+3?", render.NO_ACTIVE_OFFER)
    data = offer["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    api.press(USER, data, offer["message_id"])
    api.press(USER, data, offer["message_id"])  # the second tap, before the first is handled
    wait_for(lambda: any(a.get("text") == render.ALREADY_DONE for a in api.callback_answers), 60,
             what="the second tap answered 'already done'")
    api.wait_for_text(lambda t: t.startswith("echo: what is 3+3?"), chat_id=USER)
    sup.wait_consumer("telegram-bot")
    assert [s["name"] for s in sup.request("list", all=True)["sessions"]] == ["main"]
    assert len([t for t in api.texts(USER) if t.startswith("echo: what is 3+3?")]) == 1


def test_a_switch_button_works_once(env) -> None:  # noqa: F811
    _, api, _ = env
    say(api, "/new alpha", "created")
    say(api, "/new beta", "created")
    listing = say(api, "/sessions", "alpha")
    data = listing["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    api.press(USER, data, listing["message_id"])
    api.wait_for_text(lambda t: t == "Switched to session 'alpha'.", chat_id=USER)
    say(api, "/switch beta", "Switched to session 'beta'.")
    api.press(USER, data, listing["message_id"])  # an old list: it must not switch back
    wait_for(lambda: any(a.get("text") == render.ALREADY_DONE for a in api.callback_answers), 60,
             what="the stale switch answered 'already done'")
    assert "beta" in say(api, "/status", "Session:")["text"]


def test_a_queued_message_sent_while_claude_is_busy_is_acknowledged_quietly(env) -> None:  # noqa: F811
    _, api, _ = env
    say(api, "/new alpha", "created")
    api.message(USER, "sleep:2 first")
    api.message(USER, "/queue second")
    api.message(USER, "/queue third")
    queued = api.wait_for_text(lambda t: t.startswith("⏳ Queued"), chat_id=USER)
    assert queued["disable_notification"]
    two_ahead = api.wait_for_text(lambda t: t == "⏳ Queued — 2 ahead of it.", chat_id=USER)
    assert two_ahead
    api.wait_for_text(lambda t: t.startswith("echo: third"), chat_id=USER)


def test_each_answer_has_a_quiet_footer_and_no_link_preview(env) -> None:  # noqa: F811
    _, api, _ = env
    say(api, "/new alpha", "created")
    answer = say(api, "see https://example.com", "echo: see")
    footer = api.wait_for_text(lambda t: t.startswith("$0.0010 ·"), chat_id=USER)
    assert footer["text"].endswith("1 turn") and " s · " in footer["text"]
    assert footer["disable_notification"] and not answer["disable_notification"]
    assert answer["link_preview_options"] == {"is_disabled": True}


def test_tool_lines_and_resume_notices_do_not_notify(env) -> None:  # noqa: F811
    _, api, _ = env
    say(api, "/new alpha", "created")
    tool = say(api, "tool", "🔧")
    assert tool["disable_notification"]


def test_an_edited_message_gets_a_clear_note(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    api.message(USER, "original")
    api.wait_for_text(lambda t: t.startswith("echo: original"), chat_id=USER)
    api.edit(USER, 1, "changed")
    api.wait_for_text(lambda t: t == render.EDITED, chat_id=USER)
    assert not any("changed" in r["text"] for r in sup.claude_received())


def test_minutes_are_worded_as_people_say_them() -> None:
    assert render.minutes_text(60) == "1 minute"
    assert render.minutes_text(900) == "15 minutes"
    assert render.minutes_text(90) == "1.5 minutes"
    assert "Idle timeout: 1 minute\n" in render.timeout_text(60)


def test_footer_wording() -> None:
    assert render.footer_text({"cost_delta": 0.01234, "duration_ms": 4200, "num_turns": 3}) == "$0.0123 · 4.2 s · 3 turns"
    assert render.footer_text({}) is None


def test_a_reply_passes_the_quoted_text_and_the_answer_is_threaded_to_the_question(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    earlier = say(api, "the plan is X", "echo: the plan is X")
    api.message(USER, "why?", reply_to_message={
        "message_id": earlier["message_id"], "date": 0, "chat": {"id": USER, "type": "private"},
        "from": {"id": 123456, "is_bot": True, "first_name": "Claude"}, "text": "echo: the plan is X"})
    sup.wait_received("why?")
    got = sup.claude_received()[-1]["text"]
    assert got.startswith("> echo: the plan is X\n\n") and got.endswith("why?")
    answer = api.wait_for_text(lambda t: t.startswith("echo: > echo: the plan is X"), chat_id=USER)
    question = next(m for m in api.from_users if m.get("text") == "why?")
    assert answer["reply_parameters"]["message_id"] == question["message_id"]


def test_an_answer_from_another_session_says_whose_it_is(env) -> None:  # noqa: F811
    _, api, _ = env
    say(api, "/new alpha", "created")
    api.message(USER, "sleep:1 slow one")
    say(api, "/new beta", "created")  # beta is now the chat's session; alpha still answers
    labelled = api.wait_for_text(lambda t: "echo: sleep:1 slow one" in t, chat_id=USER)
    assert labelled["text"].startswith("[alpha]")
    plain = say(api, "quick", "echo: quick")
    assert not plain["text"].startswith("[")


def test_a_reply_goes_to_the_session_that_wrote_the_quoted_message_and_says_so(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    earlier = say(api, "the plan is X", "echo: the plan is X")
    say(api, "/new beta", "created")  # beta is now the chat's session
    before = len(api.sent)
    api.message(USER, "why X?", reply_to_message={
        "message_id": earlier["message_id"], "date": 0, "chat": {"id": USER, "type": "private"},
        "from": {"id": 123456, "is_bot": True, "first_name": "Claude"}, "text": earlier["text"]})
    answer = api.wait_for_text(lambda t: "why X?" in t and t.startswith("[alpha]"), chat_id=USER)
    assert "history: 2 earlier" in answer["text"]  # alpha's conversation, not beta's
    routed = wait_for(lambda: next((m for m in api.sent[before:] if m["text"].startswith("↪️")), None), 60,
                      what="the note that the reply went to alpha")
    assert routed["text"] == ("↪️ Sent to 'alpha', the session that wrote the message you replied to"
                              " ('beta' stays this chat's session).")
    assert [e["text"] for e in sup.events("beta") if e["kind"] == "user"] == []
    plain = say(api, "hello beta", "echo: hello beta")
    assert not plain["text"].startswith("[")  # the chat's session is still beta


def test_a_long_answer_also_arrives_as_a_document(env) -> None:  # noqa: F811
    _, api, _ = env
    say(api, "/new alpha", "created")
    api.message(USER, "long:20000")
    doc = wait_for(lambda: api.documents[-1] if api.documents else None, 60, what="the .md document")
    assert doc["filename"].endswith(".md") and doc["disable_notification"]
    text = doc["content"].decode()
    created = next(m for m in api.sent if "'alpha' created" in m["text"])
    parts = [m for m in api.sent if m["chat_id"] == USER and created["message_id"] < m["message_id"] < doc["message_id"]]
    assert len(text) > 15000 and len(parts) > render.LONG_ANSWER_PARTS  # the parts came first, then the document


def test_usage_says_today_this_session_and_all(env) -> None:  # noqa: F811
    _, api, _ = env
    say(api, "/new alpha", "created")
    say(api, "one", "echo: one")
    say(api, "/new beta", "created")
    say(api, "two", "echo: two")
    usage = say(api, "/usage", "This session")["text"]
    assert usage == ("This session (beta): $0.0010\nAll your sessions: $0.0020\nToday, your sessions: $0.0020\n"
                     "Today, all sessions on this machine (everyone's): $0.0020")


def _voice(api, content: bytes) -> None:
    f = api.add_file(content, f"v{len(api.files)}")
    api.message(USER, "", voice={**f, "duration": 2, "mime_type": "audio/ogg"})


def test_a_voice_note_without_a_transcriber_says_it_is_not_set_up(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    _voice(api, b"OggS fake audio")
    api.wait_for_text(lambda t: t == render.VOICE_NOT_SET_UP, chat_id=USER)
    assert [e for e in sup.events("alpha") if e["kind"] == "user"] == []


def _with_transcriber(make_supervisor, bot_env, telegram, script: Path, body: str, configured: str) -> Any:
    """A supervisor and bot whose voice_command is ``script`` (a shell script of ``body``),
    configured as ``configured`` (with {script} in it), and a session to talk to."""
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    sup = make_supervisor(config="[telegram]\nvoice_command = " + configured.format(script=script) + "\n").start()
    bot_env(sup)
    say(telegram, "/new alpha", "created")
    return sup


def test_a_voice_note_is_transcribed_echoed_and_sent_as_text(make_supervisor, bot_env, telegram, tmp_path) -> None:
    # prints what it heard: here, the size of the file it was given (proof it got the audio)
    _with_transcriber(make_supervisor, bot_env, telegram, tmp_path / "transcribe",
                      'printf "hello from %s bytes\\n" "$(wc -c < "$1" | tr -d " ")"\n', '["{script}"]')
    _voice(telegram, b"x" * 1234)
    echo = telegram.wait_for_text(lambda t: t.startswith("🎤"), chat_id=USER)
    assert echo["text"] == "🎤 hello from 1234 bytes" and echo["disable_notification"]
    telegram.wait_for_text(lambda t: t.startswith("echo: hello from 1234 bytes"), chat_id=USER)


def test_a_voice_note_left_by_a_bot_killed_while_transcribing_is_removed_at_the_next_start(
        make_supervisor, bot_env, telegram, tmp_path) -> None:
    """The audio is written into the bot's own private directory (0700), not the shared
    temp dir: a bot killed -9 mid-transcription leaves it, and the next bot removes it
    when it starts (then handles the voice note, which was never confirmed)."""
    marker, again = tmp_path / "transcribing", tmp_path / "second-time"
    script = tmp_path / "transcribe"
    script.write_text(f'#!/bin/sh\nif [ -e {again} ]; then echo "heard it"; exit 0; fi\ntouch {again}\n'
                      f'echo "$$ $1" > {marker}.tmp && mv {marker}.tmp {marker}\nexec sleep 600\n')
    script.chmod(0o755)
    sup = make_supervisor(config=f'[telegram]\nvoice_command = ["{script}"]\n').start()
    bot = bot_env(sup)
    say(telegram, "/new alpha", "created")
    _voice(telegram, b"audio")
    pid, audio = wait_for(lambda: marker.read_text().split() if marker.exists() else None, 60,
                          what="the transcriber running")
    try:
        held = Path(audio)
        private = sup.runtime_dir / "telegram-bot"
        assert held.parent.parent == private and held.read_bytes() == b"audio"
        assert stat.S_IMODE(private.stat().st_mode) == stat.S_IMODE(held.parent.stat().st_mode) == 0o700
        bot.kill9()
        assert held.exists()  # (no finally runs on a kill -9)
    finally:
        os.kill(int(pid), signal.SIGKILL)  # the transcriber the killed bot left running
    bot_env(sup)
    wait_for(lambda: not held.parent.exists(), 60, what="what the killed bot left removed at start")
    telegram.wait_for_text(lambda t: t.startswith("echo: heard it"), chat_id=USER)
    assert list(private.iterdir()) == []


def test_a_failing_transcriber_is_reported_and_nothing_is_sent(make_supervisor, bot_env, telegram, tmp_path) -> None:
    sup = _with_transcriber(make_supervisor, bot_env, telegram, tmp_path / "transcribe",
                            'echo "model file missing" >&2\nexit 2\n', '"{script} --lang en"')
    _voice(telegram, b"audio")
    telegram.wait_for_text(lambda t: "Could not transcribe" in t and "model file missing" in t, chat_id=USER)
    assert [e for e in sup.events("alpha") if e["kind"] == "user"] == []


def test_files_claude_leaves_in_the_outbox_reach_the_chat_that_asked(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    say(api, "sendfile:report.txt sendfile:plot.png", "echo: sendfile")
    sent = wait_for(lambda: api.documents if len(api.documents) >= 2 else None, 60, what="both files")
    by_name = {d["filename"]: d for d in sent}
    assert by_name["report.txt"]["kind"] == "document" and by_name["report.txt"]["content"] == b"file report.txt\n"
    assert by_name["plot.png"]["kind"] == "photo"
    outbox = Path(sup.session("alpha")["cwd"]) / "outbox"
    wait_for(lambda: sorted(p.name for p in (outbox / "sent").iterdir()) == ["plot.png", "report.txt"], 30,
             what="the sent files moved aside")
    assert not [p for p in outbox.iterdir() if p.is_file()]
    say(api, "again", "echo: again")  # nothing is sent twice
    assert len(api.documents) == 2


def test_get_sends_a_file_from_the_session_and_nothing_from_outside(env, tmp_path) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    cwd = Path(sup.session("alpha")["cwd"])
    (cwd / "notes.md").write_text("# notes\n")
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (cwd / "escape").symlink_to(secret)
    api.message(USER, "/get notes.md")
    doc = wait_for(lambda: api.documents[-1] if api.documents else None, 60, what="notes.md")
    assert doc["filename"] == "notes.md" and doc["content"] == b"# notes\n"
    for path in ("../../../../etc/passwd", "escape", str(secret)):
        reply = say(api, f"/get {path}", "📎")
        assert "outside the session's directory" in reply["text"]
    assert say(api, "/get missing.txt", "📎")["text"] == "📎 missing.txt cannot be read (No such file or directory)."
    assert len(api.documents) == 1


def test_a_session_that_cannot_resume_offers_a_fresh_conversation_on_request(make_supervisor, bot_env,
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
    assert "not sent" in offer["text"] and "No conversation found" in offer["text"]
    sup.wait_state("alpha", "failed")
    sup.wait_consumer("telegram-bot")
    assert not [t for t in api.texts(USER) if "not delivered" in t]  # said once, not twice
    question = next(m for m in api.from_users if m.get("text") == "second")
    assert offer["reply_parameters"]["message_id"] == question["message_id"]  # threaded to it
    listing = say(api, "/sessions", "alpha")
    assert listing["text"].startswith("→ ❌ alpha")  # marked failed, not suspended
    assert "its conversation could not be resumed (resume failed; No conversation found" in listing["text"]
    assert "/clear for a fresh conversation" in listing["text"]  # and what to do about it
    old_id = sup.session("alpha")["session_id"]
    assert sup.session("alpha")["state"] == "failed"  # nothing started by itself
    [[button]] = offer["reply_markup"]["inline_keyboard"]
    assert button["text"] == "Start a fresh conversation in 'alpha'"
    api.press(USER, button["callback_data"], offer["message_id"])
    api.wait_for_text(lambda t: "starts a fresh conversation" in t and "was sent to it again" in t, chat_id=USER)
    assert sup.session("alpha")["session_id"] != old_id
    answer = api.wait_for_text(lambda t: t.startswith("echo: second"), chat_id=USER)  # sent again by the press
    assert "history: 0 earlier messages" in answer["text"]


def test_sessions_says_why_a_session_failed_and_what_to_do_after_a_bot_restart_too(make_supervisor, bot_env,
                                                                                  telegram) -> None:
    """❌ is not only a resume that failed: Claude crashed here. /sessions and /status
    say so, and that the next message starts it again — also from a bot restarted since
    (the reason is not in its memory)."""
    sup = make_supervisor(idle_timeout=60).start()
    bot = bot_env(sup)
    api = telegram
    say(api, "/new alpha", "created")
    say(api, "/new beta", "created")
    api.message(USER, "please crash")
    api.wait_for_text(lambda t: t.startswith("❌ Message not delivered"), chat_id=USER)
    sup.wait_state("beta", "failed")
    sup.wait_consumer("telegram-bot")
    bot.kill9()
    bot_env(sup)
    listing = say(api, "/sessions", "beta")["text"]
    [line] = [line for line in listing.splitlines() if "beta" in line]
    assert line.startswith("→ ❌ beta") and "could not be resumed" not in line
    assert "Claude stopped unexpectedly (Claude exited unexpectedly (exit code 3)" in line
    assert line.endswith("your next message starts Claude again, with the conversation")
    assert next(line for line in listing.splitlines() if "alpha" in line).startswith("⚪ alpha")
    status = say(api, "/status", "Session: beta")["text"]
    assert "State: failed — Claude stopped unexpectedly" in status and "your next message starts Claude" in status
    say(api, "again", "echo: again")  # as it said
    assert "❌" not in say(api, "/sessions", "beta")["text"]


def test_archived_sessions_come_back(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    say(api, "/archive alpha", "alpha")
    sup.wait_state("alpha", "archived")
    assert "/unarchive alpha" in say(api, "/new alpha", "archived")["text"]
    say(api, "/unarchive alpha", "is back")
    assert sup.session("alpha")["state"] == "suspended"
    say(api, "/switch alpha", "Switched")
    say(api, "hello again", "echo: hello again")
    assert "not archived" in say(api, "/unarchive alpha", "⚠️")["text"]


def test_a_session_works_where_the_user_points_it_inside_the_roots(make_supervisor, bot_env, telegram,
                                                                    tmp_path) -> None:
    projects = tmp_path / "projects"
    (projects / "app").mkdir(parents=True)
    (projects / "app" / "main.py").write_text("print('hi')\n")
    (projects / "link-out").symlink_to(tmp_path)
    sup = make_supervisor(config=f'[telegram]\nroots = ["{projects}"]\n').start()
    bot_env(sup)
    api = telegram
    made = say(api, f"/new app {projects}/app", "created")
    assert f"in {projects / 'app'}" in made["text"]
    assert sup.session("app")["cwd"] == str(projects / "app")
    assert say(api, "/pwd", str(projects))["text"] == str(projects / "app")
    listing = say(api, "/ls", "main.py")["text"]
    assert listing.startswith(f"{projects / 'app'}:") and "main.py" in listing
    say(api, "/new fresh newdir/ reviewer", "created with persona 'reviewer'")  # made under the first root
    assert sup.session("fresh")["cwd"] == str(projects / "newdir") and (projects / "newdir").is_dir()
    for outside in ("/etc", f"{projects}/link-out", "../.."):
        refused = say(api, f"/new bad {outside}", "outside the allowed directories")
        assert "Nothing was created" in refused["text"]
    assert "outside the allowed directories" in say(api, "/ls /etc", "⚠️")["text"]
    assert [s["name"] for s in sup.request("list", all=True)["sessions"] if s["name"] == "bad"] == []


OTHER = 222


@pytest.mark.parametrize("shared", [False, True])
def test_a_session_made_in_telegram_is_its_makers_unless_shared(make_supervisor, bot_env, telegram,
                                                                shared: bool) -> None:
    sup = make_supervisor(config=f"[telegram]\nshared = {str(shared).lower()}\n").start()
    bot_env(sup, allowed=(USER, OTHER))
    api = telegram
    say(api, "/new mine", "created")
    sup.ctl("new", "from-shell", check=True)  # the Unix user's: every allowlisted user's
    listing = say(api, "/sessions", "from-shell", user=OTHER)["text"]
    assert ("mine" in listing) is shared
    switched = say(api, "/switch mine", lambda t: "mine" in t, user=OTHER)["text"]
    if shared:
        assert switched == "Switched to session 'mine'."
    else:
        assert switched == "⚠️ no session named 'mine'"
        assert "no session named 'mine'" in say(api, "/archive mine", "⚠️", user=OTHER)["text"]
        assert sup.session("mine")["state"] != "archived"
        taken = say(api, "/new mine", "mine", user=OTHER)["text"]  # nothing says it is someone's session
        assert taken == "The name 'mine' cannot be used (session names are shared by everyone here). Pick another."
    assert "mine" in say(api, "/sessions", "mine")["text"]  # its maker still sees it
    say(api, "/switch from-shell", "Switched", user=OTHER)


def test_model_shows_the_model_claude_runs(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    assert say(api, "/model", "Model:")["text"].startswith("Model: default\n")  # Claude has not started
    say(api, "hi", "echo: hi")
    sup.wait_event("alpha", lambda e: e["kind"] == "settings" and "claude_model" in e)
    assert say(api, "/model", "Model:")["text"].startswith("Model: fake-default-model (Claude's default)\n")
    assert sup.session("alpha")["claude_model"] == "fake-default-model"


def test_model_wording() -> None:
    assert render.model_text({"model": None, "claude_model": None}) == "default"
    assert render.model_text({"model": "opus", "claude_model": "claude-opus-5-5"}) == "claude-opus-5-5 (asked for opus)"
    assert render.model_text({"model": "x", "claude_model": "x"}) == "x"


def test_cancel_asks_whether_to_drop_the_queued_messages_too(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    api.message(USER, "sleep:30 long")
    sup.wait_received("sleep:30 long")
    for text in ("second", "third"):
        api.message(USER, f"/queue {text}")
    api.wait_for_text(lambda t: t == "⏳ Queued — 2 ahead of it.", chat_id=USER)
    asked = say(api, "/cancel", "Stop what?")
    assert asked["text"] == "Claude is answering, and 2 messages wait behind it. Stop what?"
    assert sup.session("alpha")["state"] == "busy"  # nothing stopped before the answer
    [[one], [everything]] = asked["reply_markup"]["inline_keyboard"]
    assert (one["text"], everything["text"]) == ("Stop this answer", "Stop it and drop the 2 messages")
    api.press(USER, everything["callback_data"], asked["message_id"])
    api.wait_for_text(lambda t: t == "Interrupting Claude... The queued messages were dropped.", chat_id=USER)
    wait_for(lambda: len([t for t in api.texts(USER) if "dropped at your request" in t]) == 2, 30,
             what="both dropped messages reported", seen=lambda: api.texts(USER))
    api.wait_for_text(lambda t: t == "⏹ Interrupted.", chat_id=USER)
    say(api, "after", "echo: after")  # the session goes on
    assert not any(r["text"] in ("second", "third") for r in sup.claude_received())


def test_cancel_can_stop_only_the_answer(env) -> None:  # noqa: F811
    sup, api, _ = env
    say(api, "/new alpha", "created")
    api.message(USER, "sleep:30 long")
    sup.wait_received("sleep:30 long")
    api.message(USER, "/queue kept one")
    api.wait_for_text(lambda t: t.startswith("⏳ Queued"), chat_id=USER)
    asked = say(api, "/cancel", "Stop what?")
    api.press(USER, asked["reply_markup"]["inline_keyboard"][0][0]["callback_data"], asked["message_id"])
    api.wait_for_text(lambda t: t == "⏹ Interrupted.", chat_id=USER)
    api.wait_for_text(lambda t: t.startswith("echo: kept one"), chat_id=USER)


FORUM = -1001234


def _in_topic(api, topic: int, text: str) -> None:
    api.message(USER, text, chat_id=FORUM, message_thread_id=topic, is_topic_message=True)


def _topic_text(api, topic: int, predicate) -> dict:
    return wait_for(lambda: next((m for m in api.sent if m["chat_id"] == FORUM and m["message_thread_id"] == topic
                                  and predicate(m["text"])), None), 60, what=f"a message in topic {topic}",
                    seen=lambda: [(m["message_thread_id"], m["text"][:40]) for m in api.sent[-6:]])


def test_in_a_forum_each_topic_is_a_session(env) -> None:  # noqa: F811
    sup, api, _ = env
    _in_topic(api, 11, "/new alpha")
    _topic_text(api, 11, lambda t: "'alpha' created" in t)
    _in_topic(api, 22, "/new beta")
    _topic_text(api, 22, lambda t: "'beta' created" in t)
    _in_topic(api, 11, "in eleven")
    _in_topic(api, 22, "in twenty-two")
    _topic_text(api, 11, lambda t: t.startswith("echo: in eleven"))
    _topic_text(api, 22, lambda t: t.startswith("echo: in twenty-two"))
    assert [m["text"] for m in sup.claude_received() if m["text"].startswith("in ")] in (
        ["in eleven", "in twenty-two"], ["in twenty-two", "in eleven"])
    # each topic's messages went to its own session
    assert sup.session("alpha")["last_seq"] > 0 and sup.session("beta")["last_seq"] > 0
    assert any("in eleven" in e.get("text", "") for e in sup.events("alpha"))
    assert not any("in eleven" in e.get("text", "") for e in sup.events("beta"))
    # the footer and anything else about a turn stay in its topic too
    _topic_text(api, 22, lambda t: t.startswith("$0.0010"))
    _in_topic(api, 22, "/sessions")
    listing = _topic_text(api, 22, lambda t: "alpha" in t and "beta" in t)
    assert "→ 🟢 beta" in listing["text"] or "→ ⚪ beta" in listing["text"]  # this topic's session
    assert not [m for m in api.sent if m["chat_id"] == FORUM and m["message_thread_id"] is None]


def test_cd_asks_then_moves_the_session_with_a_fresh_conversation(make_supervisor, bot_env, telegram,
                                                                   tmp_path) -> None:
    projects = tmp_path / "projects"
    for name in ("app", "other"):
        (projects / name).mkdir(parents=True)
    sup = make_supervisor(config=f'[telegram]\nroots = ["{projects}"]\n').start()
    bot = bot_env(sup)
    api = telegram
    say(api, f"/new app {projects}/app", "created")
    say(api, "first", "echo: first")  # Claude is running in app/
    refused = say(api, "/cd /etc", "⚠️")
    assert "outside the allowed directories" in refused["text"]
    api.press(USER, "cd:app /etc", refused["message_id"])  # a forged button is held to the roots too
    api.wait_for_text(lambda t: "outside the allowed directories" in t and "Nothing was moved" in t, chat_id=USER)
    asked = say(api, "/cd ../other", "Move session 'app'")
    assert sup.session("app")["cwd"] == str(projects / "app")  # nothing moves before the press
    bot.kill9()  # the question outlives the bot that asked it
    bot_env(sup)
    [[button]] = asked["reply_markup"]["inline_keyboard"]
    api.press(USER, button["callback_data"], asked["message_id"])
    api.wait_for_text(lambda t: t.startswith("Session 'app' now works in"), chat_id=USER)
    assert sup.session("app")["cwd"] == str(projects / "other")
    assert say(api, "/pwd", str(projects))["text"] == str(projects / "other")
    answer = say(api, "second", "echo: second")
    assert "history: 0 earlier messages" in answer["text"]  # a fresh conversation
    assert sup.claude_starts()[-1]["cwd"] == str(projects / "other")
    (projects / "other" / "sub").mkdir()
    (projects / "other" / ".hidden").mkdir()
    pick = say(api, "/cd", "or pick one:")  # a bare /cd offers where to go
    assert [row[0]["text"] for row in pick["reply_markup"]["inline_keyboard"]] == ["📁 ..", "📁 sub"]
    api.press(USER, "cdpick:sub", pick["message_id"])
    moving = api.wait_for_text(lambda t: t.startswith("Move session 'app' to") and t.count("sub"), chat_id=USER)
    api.press(USER, moving["reply_markup"]["inline_keyboard"][0][0]["callback_data"], moving["message_id"])
    api.wait_for_text(lambda t: t == f"Session 'app' now works in {projects}/other/sub, with a fresh conversation.",
                      chat_id=USER)
