"""The Telegram bot, played as a user through the fake Bot API, against a real supervisor
with the fake claude."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot import _render as render

from .conftest import USER, BotProcess, wait_for
from .fake_telegram import FakeTelegram

OTHER = 222
THIRD = 333


@pytest.fixture
def env(make_supervisor, telegram, bot_env):
    sup = make_supervisor(idle_timeout=60).start()
    bot = bot_env(sup)
    return sup, telegram, bot


def entity_text(text: str, entity: dict) -> str:
    """The text an entity covers; Telegram counts offsets in UTF-16 code units."""
    units = text.encode("utf-16-le")
    return units[2 * entity["offset"]: 2 * (entity["offset"] + entity["length"])].decode("utf-16-le")


def say(api: FakeTelegram, text: str, expect, user: int = USER, timeout: float = 60) -> dict:
    """Send ``text`` as ``user`` and wait for a new bot message to that chat matching ``expect``
    (a substring, or a predicate on the text)."""
    before = len(api.sent)
    api.message(user, text)

    def match() -> dict | None:
        for m in api.sent[before:]:
            if m["chat_id"] == user and (expect(m["text"]) if callable(expect) else expect in m["text"]):
                return m
        return None

    return wait_for(match, timeout, what=f"a reply to {text!r}")


def test_help_lists_every_command_grouped(env) -> None:
    _, api, _ = env
    reply = say(api, "/help", "Claude Sessions")["text"]
    for cmd in ("/new", "/switch", "/sessions", "/timeout", "/model", "/archive", "/cancel", "/status", "/help"):
        assert cmd in reply


def test_unauthorized_users_get_one_refusal_and_nothing_is_forwarded(env) -> None:
    sup, api, _ = env
    say(api, "/new intruder", "Sorry, this bot is private.", user=OTHER)
    api.message(OTHER, "hello?")
    api.message(OTHER, "/sessions")
    say(api, "/sessions", "No sessions. Use /new <name> to create one.")  # the owner still works
    assert api.texts(OTHER) == ["Sorry, this bot is private."]
    assert sup.request("list", all=True)["sessions"] == []


def test_no_active_session_hints(env) -> None:
    _, api, _ = env
    for text in ("/timeout", "/model", "/cancel", "/status"):
        say(api, text, "No active session. Use /new <name> to start one.")
    say(api, "hello", "No active session yet. Create one and send this message to it?")


def test_unknown_and_malformed_commands_get_short_hints(env) -> None:
    _, api, _ = env
    say(api, "/new", "Usage: /new <name> [dir] [persona]")
    say(api, "/new bad/name", "invalid session name")
    say(api, "/switch", "Usage: /switch <name>")
    say(api, "/switch ghost", "no session named 'ghost'")
    say(api, "/new dup", "created")
    say(api, "/new dup", "Session 'dup' already exists. Use /switch dup.")


def test_claude_codes_own_commands_go_to_claude_and_any_other_slash_word_is_offered(env) -> None:
    sup, api, _ = env
    say(api, "/new alpha", "created")
    commands_dir = Path(sup.session("alpha")["cwd"]) / ".claude" / "commands"
    commands_dir.mkdir(parents=True)
    (commands_dir / "explain.md").write_text("Explain in simple words: $ARGUMENTS\n")
    help_text = say(api, "/help", "Claude Code's commands")["text"]
    assert "/compact" in help_text and "/explain" in help_text and "/clear" in help_text
    say(api, "/compact", "echo: /compact")  # Claude Code runs it (the fake echoes what it got)
    say(api, "/explain what does this do?", "echo: /explain what does this do?")
    offer = say(api, "/frobnicate now", render.not_ours_text("frobnicate"))
    [[button]] = offer["reply_markup"]["inline_keyboard"]
    assert button["text"] == "Send it to Claude"
    assert sup.claude_received()[-1]["text"] == "/explain what does this do?"  # nothing sent yet
    api.press(USER, button["callback_data"], offer["message_id"])
    api.wait_for_text(lambda t: t.startswith("echo: /frobnicate now"), chat_id=USER)
    api.press(USER, button["callback_data"], offer["message_id"])
    wait_for(lambda: any(a.get("text") == render.ALREADY_DONE for a in api.callback_answers), 60,
             what="the second press answered 'already done'")
    sup.wait_consumer("telegram-bot")
    assert [e["text"] for e in sup.events("alpha") if e["kind"] == "user"] == [
        "/compact", "/explain what does this do?", "/frobnicate now"]


def test_clear_starts_a_fresh_conversation_the_supervisor_keeps(env) -> None:
    sup, api, _ = env
    say(api, "/new alpha", "created")
    say(api, "remember this", "echo: remember this (history: 0")
    say(api, "/clear", "Session 'alpha' starts a fresh conversation with your next message.")
    say(api, "anything?", "echo: anything? (history: 0")
    assert sup.claude_received()[-1]["text"] == "anything?"


def test_conversation_with_typing_and_markdown_entities(env) -> None:
    _, api, _ = env
    say(api, "/new work", "Session 'work' created and active")
    reply = say(api, "hello **there**", lambda t: t.startswith("echo:"))
    assert reply["text"].startswith("echo: hello there (history: 0")  # bold rendered, not shown as **
    bold = [e for e in reply["entities"] if e["type"] == "bold"]
    assert bold and entity_text(reply["text"], bold[0]) == "there"
    assert any(a["action"] == "typing" and int(a["chat_id"]) == USER for a in api.actions)


def test_sessions_list_marks_and_buttons_switch(env) -> None:
    sup, api, _ = env
    say(api, "/new alpha", "created")
    say(api, "hi", "echo: hi")
    sup.wait_state("alpha", "idle")  # alpha's turn ended (its last activity) before beta is made
    say(api, "/new beta reviewer", "created with persona 'reviewer'")
    listing = say(api, "/sessions", "beta")
    lines = listing["text"].splitlines()
    assert lines[0] == "→ ⚪ beta (reviewer) - just now"
    assert lines[1] == "🟢 alpha - just now"
    codes = [entity_text(listing["text"], e) for e in listing["entities"] if e["type"] == "code"]
    assert codes == ["beta", "alpha"]
    [[button]] = listing["reply_markup"]["inline_keyboard"]
    assert button["callback_data"] == "switch:alpha"
    api.press(USER, button["callback_data"], listing["message_id"])
    api.wait_for_text(lambda t: t == "Switched to session 'alpha'.")
    edited = wait_for(lambda: next((e for e in api.edits if int(e["message_id"]) == listing["message_id"]), None),
                      60, what="the list edited to show the choice")
    assert edited["text"] == listing["text"] + "\n\n→ Switch to alpha"
    assert json.loads(edited["entities"]) if isinstance(edited["entities"], str) else edited["entities"]
    assert "history: 2 earlier" in say(api, "back again", "echo: back again")["text"]
    say(api, "/switch beta", "Switched to session 'beta'.")
    assert sup.session("alpha")["live"]  # switching leaves the other one running


def test_timeout_command_strings(env) -> None:
    sup, api, _ = env
    say(api, "/new alpha", "created")
    assert say(api, "/timeout", "Idle timeout:")["text"] == "Idle timeout: 1 minute\n\nUsage: /timeout <minutes> (1-120)"
    say(api, "/timeout 0", "Timeout must be between 1 and 120 minutes")
    say(api, "/timeout 121", "Timeout must be between 1 and 120 minutes")
    say(api, "/timeout soon", "Invalid number. Usage: /timeout <minutes>")
    say(api, "/timeout 15", "Idle timeout set to 15 minutes for session 'alpha'.")
    assert sup.session("alpha")["idle_timeout"] == 900


def test_model_status_archive_and_cancel(env) -> None:
    sup, api, _ = env
    say(api, "/new alpha", "created")
    say(api, "/model", "Model: default")
    say(api, "/model claude-sonnet-4-5", "Model set to claude-sonnet-4-5 for session 'alpha'")
    assert "model claude-sonnet-4-5" in say(api, "which model?", "echo: which model?")["text"]
    sup.wait_state("alpha", "idle")  # the reply is shown before its turn has ended
    status = say(api, "/status", "Session: alpha")["text"]
    assert "State: idle" in status and "Model: claude-sonnet-4-5" in status and "Cost so far: $0.0010" in status
    say(api, "/cancel", "Nothing to cancel: Claude is not answering.")
    api.message(USER, "sleep:30 long")
    sup.wait_received("sleep:30 long")  # Claude is in the turn
    say(api, "/cancel", "Interrupting Claude...")
    api.wait_for_text(lambda t: t == "⏹ Interrupted.")
    say(api, "/archive alpha", "Session 'alpha' archived.")
    say(api, "hello", "No active session")


def test_an_unknown_model_is_refused_and_model_mode_and_switch_offer_buttons(env) -> None:
    sup, api, _ = env
    say(api, "/new alpha", "created")
    refused = say(api, "/model nonsense", "does not know the model 'nonsense'")
    assert sup.session("alpha")["model"] is None  # nothing changed: the next turn still works
    labels = [row[0]["text"] for row in refused["reply_markup"]["inline_keyboard"]]
    assert labels == ["sonnet", "opus", "haiku", "opusplan", "best"]
    api.press(USER, refused["reply_markup"]["inline_keyboard"][1][0]["callback_data"], refused["message_id"])
    api.wait_for_text(lambda t: t.startswith("Model set to opus for session 'alpha'"), chat_id=USER)
    assert sup.session("alpha")["model"] == "opus"
    bogus = say(api, "/mode bogus", "Unknown mode 'bogus'.")
    assert [row[0]["text"] for row in bogus["reply_markup"]["inline_keyboard"]] == [
        "Mode accept-edits", "Mode plan", "Mode bypass"]
    api.press(USER, "mode:plan", bogus["message_id"])
    api.wait_for_text(lambda t: t.startswith("Permission mode set to plan"), chat_id=USER)
    say(api, "/new beta", "created")
    pick = say(api, "/switch", "Usage: /switch <name>, or pick one:")
    assert [row[0]["callback_data"] for row in pick["reply_markup"]["inline_keyboard"]] == ["switch:alpha"]
    api.press(USER, "switch:alpha", pick["message_id"])
    api.wait_for_text(lambda t: t == "Switched to session 'alpha'.", chat_id=USER)


def test_messages_sent_while_busy_are_queued_in_order(env) -> None:
    _, api, _ = env
    say(api, "/new alpha", "created")
    api.message(USER, "sleep:1 first")
    api.message(USER, "second")
    api.message(USER, "third")
    texts = wait_for(lambda: (t := [x for x in api.texts(USER) if x.startswith("echo:")]) and len(t) >= 3 and t, 20)
    assert [t.split(" (")[0] for t in texts] == ["echo: sleep:1 first", "echo: second", "echo: third"]


def test_resume_after_idle_and_resume_failure(make_supervisor, bot_env, telegram) -> None:
    sup = make_supervisor(idle_timeout=1).start()
    bot_env(sup)
    api = telegram
    say(api, "/new alpha", "created")
    say(api, "first", "echo: first")
    sup.wait_state("alpha", "suspended")
    say(api, "second", "Resuming session...")
    assert "history: 2 earlier" in api.wait_for_text(lambda t: t.startswith("echo: second"))["text"]
    sup.wait_state("alpha", "suspended")
    for path in (sup.home / ".fake-claude").rglob("*.jsonl"):
        path.unlink()
    failed = say(api, "third", "could not resume")["text"]
    assert "No conversation found" in failed
    assert sup.session("alpha")["state"] == "failed"


def test_photo_and_document_round_trip(env) -> None:
    sup, api, _ = env
    say(api, "/new alpha", "created")
    api.photo(USER, b"\xff\xd8\xff\xe0fake-jpeg", caption="what is this")
    reply = api.wait_for_text(lambda t: t.startswith("echo: what is this"))["text"]
    assert "[images: 1]" in reply
    api.document(USER, b"col1,col2\n1,2\n", "../../etc/passwd", caption="read it")
    reply = api.wait_for_text(lambda t: t.startswith("echo: [Attached file saved at"))["text"]
    saved = Path(reply.split("saved at ")[1].split("]")[0])
    uploads = Path(sup.session("alpha")["cwd"]) / "uploads"
    # Claude gets the supervisor's copy taken at send, named as the bot saved it in uploads/
    assert saved.parent.parent == sup.state_dir / "attachments" / "alpha"
    assert (uploads / saved.name).read_bytes() == b"col1,col2\n1,2\n"
    assert ".." not in saved.name and "/" not in saved.name
    api.document(USER, b"x", "huge.bin", file_size=50 * 1024 * 1024)
    api.wait_for_text(lambda t: t.startswith("File too large"))


def test_long_output_is_split_with_code_blocks_intact(env) -> None:
    _, api, _ = env
    say(api, "/new alpha", "created")
    api.message(USER, "long:12000")
    sup = env[0]
    sup.wait_event("alpha", lambda e: e["kind"] == "result")
    sup.wait_consumer("telegram-bot")  # the bot has sent every part
    parts = [m for m in api.sent if m["chat_id"] == USER and m["entities"]]
    assert len(parts) >= 3
    for m in parts:
        assert len(m["text"].encode("utf-16-le")) // 2 <= 4096
        for e in m["entities"]:  # every entity lies inside its message
            assert e["offset"] >= 0 and e["offset"] + e["length"] <= len(m["text"].encode("utf-16-le")) // 2
    code = [m for m in parts if any(e["type"] == "pre" for e in m["entities"])]
    assert all(e.get("language") == "python" for m in code for e in m["entities"] if e["type"] == "pre")
    assert "```" not in "".join(m["text"] for m in parts)


def test_tool_calls_are_shown_compactly(env) -> None:
    _, api, _ = env
    say(api, "/new alpha", "created")
    say(api, "tool please", "🔧 Bash: ls -la")


def test_rate_limit_429_is_retried_and_the_reply_arrives_once(env) -> None:
    _, api, _ = env
    say(api, "/new alpha", "created")
    api.fail_next("sendMessage", times=1, retry_after=1)
    say(api, "after a 429", "echo: after a 429")
    assert len(api.rate_limited) == 1
    assert len([t for t in api.texts(USER) if t.startswith("echo: after a 429")]) == 1


def test_kill_9_mid_stream_then_restart_delivers_every_reply_once_in_order(make_supervisor, bot_env, telegram) -> None:
    sup = make_supervisor(idle_timeout=60).start()
    api = telegram
    bot = bot_env(sup)
    say(api, "/new alpha", "created")
    for i in range(6):
        api.message(USER, f"sleep:0.4 m{i}")
    first = sup.wait_event("alpha", lambda e: e["kind"] == "assistant_text" and "m0" in e["text"])
    # kill the bot once it has recorded the first reply as delivered (between Telegram's
    # "accepted" and that record lies the one-message window the README documents)
    sup.wait_consumer("telegram-bot", first["id"])
    bot.kill9()
    # Claude keeps answering while the bot is down
    sup.wait_event("alpha", lambda e: e["kind"] == "assistant_text" and "m2" in e["text"])
    api.message(USER, "sent while the bot was down")
    bot_env(sup)
    sup.wait_event("alpha", lambda e: e["kind"] == "result" and "sent while" in e["text"])
    sup.wait_consumer("telegram-bot")  # the new bot has delivered everything
    want = [f"echo: sleep:0.4 m{i}" for i in range(6)] + ["echo: sent while the bot was down"]
    replies = [t.split(" (")[0] for t in api.texts(USER) if t.startswith("echo:")]
    assert replies == want


def test_rapid_tool_calls_are_coalesced_into_few_edits(env) -> None:
    sup, api, _ = env
    say(api, "/new alpha", "created")
    say(api, "tools:30 go", "echo: tools:30 go")
    sup.wait_event("alpha", lambda e: e["kind"] == "result")
    sup.wait_consumer("telegram-bot")  # the log's last edit comes with the turn's end
    tool_messages = [m for m in api.sent if m["text"].startswith("🔧")]
    assert len(tool_messages) == 1  # one message for the whole turn...
    final = [e for e in api.edits if int(e["message_id"]) == tool_messages[0]["message_id"]]
    assert final and final[-1]["text"].count("🔧 Read") == 30  # ...listing every call at the end
    assert len(final) < 10  # ...edited far fewer times than there were calls


def test_a_tool_log_that_cannot_be_edited_goes_on_in_a_new_message(env) -> None:
    _, api, _ = env
    say(api, "/new alpha", "created")
    api.refuse_next("editMessageText", "message to edit not found")
    say(api, "tools:30 go", "echo: tools:30 go")
    env[0].wait_event("alpha", lambda e: e["kind"] == "result")
    env[0].wait_consumer("telegram-bot")
    tool_messages = [m for m in api.sent if m["text"].startswith("🔧")]
    assert len(tool_messages) == 2  # the first could not be edited: the log went on in another
    last = [e["text"] for e in api.edits if int(e["message_id"]) == tool_messages[1]["message_id"]]
    shown = last[-1] if last else tool_messages[1]["text"]
    assert shown.count("🔧 Read") == 30


def test_each_chat_gets_its_own_replies(make_supervisor, bot_env, telegram) -> None:
    sup = make_supervisor(config="[telegram]\nshared = true\n").start()  # both users may use it
    bot = BotProcess(sup, telegram)
    bot.allowed = f"{USER},{THIRD}"
    bot.start()
    try:
        api = telegram
        say(api, "/new shared", "created")
        say(api, "/switch shared", "Switched to session 'shared'.", user=THIRD)
        api.message(USER, "sleep:0.5 from one")
        api.message(THIRD, "from three")
        api.wait_for_text(lambda t: t.startswith("echo: from three"), chat_id=THIRD)
        api.wait_for_text(lambda t: t.startswith("echo: sleep:0.5 from one"), chat_id=USER)
        assert not [t for t in api.texts(USER) if "from three" in t]
        assert not [t for t in api.texts(THIRD) if "from one" in t]
    finally:
        bot.stop()


def test_the_bot_survives_a_supervisor_restart(env) -> None:
    sup, api, _ = env
    say(api, "/new alpha", "created")
    say(api, "before", "echo: before")
    sup.wait_event("alpha", lambda e: e["kind"] == "result")  # the reply is shown before its turn ends
    sup.stop()
    sup.start()
    reply = say(api, "after the restart", "echo: after the restart", timeout=40)
    assert "history: 2 earlier" in reply["text"]
    say(api, "/sessions", "alpha")


def test_messages_that_arrived_while_the_bot_was_down_are_handled(make_supervisor, bot_env, telegram) -> None:
    sup = make_supervisor().start()
    api = telegram
    bot = bot_env(sup)
    say(api, "/new alpha", "created")
    bot.stop()
    api.message(USER, "written while you slept")
    bot_env(sup)
    api.wait_for_text(lambda t: t.startswith("echo: written while you slept"))


def test_an_update_is_confirmed_to_telegram_only_after_it_was_handled(make_supervisor, bot_env, telegram) -> None:
    sup = make_supervisor().start()
    api = telegram
    bot = bot_env(sup)
    say(api, "/new alpha", "created")
    sup.stop()  # the bot cannot hand the next message over
    update_id = api.message(USER, "sent while the supervisor was down")
    api.wait_for_text(lambda t: t.startswith("⏳"))  # the bot has it and says it waits
    assert api.confirmed <= update_id  # fetched, but not confirmed: Telegram still has it
    bot.kill9()
    sup.start()
    bot_env(sup)
    api.wait_for_text(lambda t: t.startswith("echo: sent while the supervisor was down"))
    sup.wait_consumer("telegram-bot")
    assert len([t for t in api.texts(USER) if t.startswith("echo: sent while")]) == 1


# --- every message ends in exactly one answer or a clear failure ----------------------------


def test_a_message_sent_while_the_supervisor_is_down_waits_and_is_answered_once(make_supervisor, bot_env,
                                                                                telegram) -> None:
    sup = make_supervisor().start()
    api = telegram
    bot_env(sup)
    say(api, "/new alpha", "created")
    sup.stop()
    api.message(USER, "while you were away")
    waiting = api.wait_for_text(lambda t: t.startswith("⏳"))
    assert "nothing was sent" not in waiting["text"]
    sup.start()
    api.wait_for_text(lambda t: t.startswith("echo: while you were away"))
    sup.wait_consumer("telegram-bot")
    assert len([t for t in api.texts(USER) if t.startswith("echo: while you were away")]) == 1
    assert len([e for e in sup.events("alpha") if e["kind"] == "user"]) == 1  # Claude got it once


def _parts_of(api: FakeTelegram) -> list[str]:
    return [m["text"] for m in api.sent if m["chat_id"] == USER and m["entities"]]


def test_a_part_that_fails_is_sent_again_but_never_the_parts_before_it(env) -> None:
    sup, api, _ = env
    say(api, "/new alpha", "created")
    api.break_call("sendMessage", 2)  # the answer's second part does not get through at first
    api.message(USER, "long:12000")
    sup.wait_event("alpha", lambda e: e["kind"] == "result")
    sup.wait_consumer("telegram-bot")
    parts = _parts_of(api)
    assert len(api.broken) == 1 and len(parts) >= 3
    assert len(parts) == len(set(parts))  # each part exactly once
    assert api.broken[0]["params"]["text"] == parts[1]


def test_a_restarted_bot_resumes_a_long_answer_at_the_first_part_not_yet_accepted(make_supervisor, bot_env,
                                                                                    telegram) -> None:
    sup = make_supervisor().start()
    api = telegram
    bot = bot_env(sup)
    say(api, "/new alpha", "created")
    api.break_call("sendMessage", 2)
    api.message(USER, "long:12000")
    wait_for(lambda: api.broken, what="the second part to fail")
    bot.kill9()  # while it waits to retry the second part
    bot_env(sup)
    sup.wait_event("alpha", lambda e: e["kind"] == "result")
    sup.wait_consumer("telegram-bot")
    parts = _parts_of(api)
    assert len(parts) >= 3 and len(parts) == len(set(parts))
    assert api.broken[0]["params"]["text"] == parts[1]


def test_the_not_delivered_notice_after_a_supervisor_crash_reaches_the_chat(make_supervisor, bot_env,
                                                                            telegram) -> None:
    sup = make_supervisor().start()
    api = telegram
    bot_env(sup)
    say(api, "/new alpha", "created")
    api.message(USER, f"waitfile:{sup.base / 'never'} long job")
    sup.wait_received("long job")
    sup.crash()  # everything, keepers and Claude too: nothing is left to adopt
    sup.start()
    notice = api.wait_for_text(lambda t: t.startswith("❌ Message not delivered"))
    assert "supervisor stopped" in notice["text"]
    # (the notice and the end of "typing…" come from the same event: the turn's end)
    say(api, "next", "echo: next")


def test_cancel_while_a_permission_prompt_waits_says_interrupted(make_supervisor, bot_env, telegram) -> None:
    sup = make_supervisor(config="permission_timeout = 600").start()
    bot_env(sup)
    api = telegram
    say(api, "/new alpha", "created")
    say(api, "needperm now", "🔐 Claude wants to run:")
    say(api, "/cancel", "⏹ Interrupted.")
    assert not [t for t in api.texts(USER) if "Claude reported an error" in t]


@pytest.mark.parametrize("kind", ["video", "sticker", "video_note", "audio"])
def test_unsupported_messages_get_a_short_answer(env, kind: str) -> None:
    sup, api, _ = env
    say(api, "/new alpha", "created")
    media = {"file_id": "f1", "file_unique_id": "u1", "duration": 1}
    if kind == "sticker":
        media = {"file_id": "f1", "file_unique_id": "u1", "width": 1, "height": 1, "is_animated": False,
                 "is_video": False, "type": "regular"}
    if kind in ("video", "video_note"):
        media |= {"width": 1, "height": 1, "length": 1}
    before = len(api.sent)
    api.message(USER, "", **{kind: media})
    reply = api.wait_for_text(lambda t: "not supported" in t)
    assert api.sent.index(reply) >= before
    assert [e for e in sup.events("alpha") if e["kind"] == "user"] == []


def test_the_bot_delivers_every_reply_once_through_supervisor_restarts(make_supervisor, bot_env, telegram) -> None:
    sup = make_supervisor().start()
    api = telegram
    bot_env(sup)
    say(api, "/new alpha", "created")
    gate = sup.base / "gate"
    api.message(USER, f"waitfile:{gate} long job")
    api.message(USER, "queued behind it")
    sup.wait_received("long job")
    sup.kill9()  # mid-turn; Claude keeps going
    api.message(USER, "sent in the gap")  # while no supervisor runs: the bot keeps it
    api.wait_for_text(lambda t: t == render.SEND_WAITING)
    sup.start()
    sup.ctl("restart", check=True)  # and once more, in place
    wait_for(lambda: sup.log().count("Adopted 1 keepers") >= 2, what="the second adoption")
    wait_for(sup._answers, what="the restarted supervisor")
    gate.touch()
    api.wait_for_text(lambda t: t.startswith("echo: sent in the gap"))
    sup.wait_consumer("telegram-bot")
    replies = [t.split(" (")[0] for t in api.texts(USER) if t.startswith("echo:")]
    assert replies == [f"echo: waitfile:{gate} long job", "echo: queued behind it", "echo: sent in the gap"]
    assert not [t for t in api.texts(USER) if "not delivered" in t]


# --- live answers -------------------------------------------------------------------------


def test_an_answer_streams_into_a_draft_and_arrives_once_with_entities(env) -> None:
    sup, api, _ = env
    say(api, "/new alpha", "created")
    api.message(USER, "stream:3 write **this** slowly")
    final = api.wait_for_text(lambda t: t.startswith("echo: stream:3"))
    sup.wait_consumer("telegram-bot")
    answer = sup.wait_event("alpha", lambda e: e["kind"] == "assistant_text")["text"]
    drafts = [d for d in api.drafts if d["chat_id"] == USER]
    assert len(drafts) >= 3  # it was shown while it was written
    assert len({d["draft_id"] for d in drafts}) == 1  # one draft per reply
    for d in drafts:  # each a beginning of the answer, as plain text
        assert answer.startswith(d["text"].removesuffix(" ▍"))
        assert d["after_messages"] <= api.sent.index(final)  # all before the final message
    span = drafts[-1]["at"] - drafts[0]["at"]
    assert len(drafts) <= span / 0.5 + 2  # throttled: at most about two updates a second
    assert len([t for t in api.texts(USER) if t.startswith("echo: stream:3")]) == 1  # the final, once
    assert final["entities"]  # with its Markdown as entities


def test_in_a_group_the_answer_streams_by_editing_one_message_that_makes_way_for_the_final(env) -> None:
    sup, api, _ = env
    group = -1001
    before = len(api.sent)
    api.message(USER, "/new alpha", chat_id=group)
    api.wait_for_text(lambda t: "created" in t, chat_id=group)
    api.message(USER, "stream:3 tell the group", chat_id=group)
    sup.wait_event("alpha", lambda e: e["kind"] == "result")
    sup.wait_consumer("telegram-bot")
    sent = [m for m in api.sent[before:] if m["chat_id"] == group and m["text"].startswith("echo:")]
    preview, final = sent[0], sent[-1]
    assert len(sent) == 2 and preview["text"].endswith(" ▍") and not final["text"].endswith(" ▍")
    assert [e for e in api.edits if int(e["message_id"]) == preview["message_id"]]  # edited as it grew
    assert {"chat_id": group, "message_id": preview["message_id"]} in api.deleted  # then removed
    assert api.drafts == []


def test_a_bot_killed_mid_stream_goes_on_streaming_and_sends_the_final_once(make_supervisor, bot_env,
                                                                           telegram) -> None:
    sup = make_supervisor().start()
    api = telegram
    bot = bot_env(sup)
    say(api, "/new alpha", "created")
    api.message(USER, "stream:12 a long answer, written slowly for everyone to see")
    wait_for(lambda: api.drafts, what="the answer to start streaming")
    bot.kill9()
    shown = len(api.drafts)
    bot_env(sup)
    wait_for(lambda: len(api.drafts) > shown, what="the stream to go on after the restart")
    api.wait_for_text(lambda t: t.startswith("echo: stream:12"))
    sup.wait_consumer("telegram-bot")
    assert len([t for t in api.texts(USER) if t.startswith("echo: stream:12")]) == 1


def test_sessions_come_a_page_at_a_time_with_buttons_for_the_pages(env) -> None:
    """A user with many sessions (names as long as they may be) gets /sessions in pages:
    no message over Telegram's 4,096 characters or 100 buttons (the fake refuses those as
    Telegram does), buttons to the next and previous pages, each session on one page."""
    sup, api, _ = env
    names = [f"s{i:03d}-" + "x" * 59 for i in range(110)]  # 64 characters, the most a name may have
    with sup.client() as c:
        for name in names:
            c.request("create", session=name)
    first = say(api, "/sessions", "Page 1 of 6 (110 sessions)")
    seen: list[str] = []
    page, message = first, first
    for number in range(1, 7):
        lines = page["text"].splitlines()
        assert lines[-1] == f"Page {number} of 6 (110 sessions)"
        assert len(page["text"].encode("utf-16-le")) // 2 <= 4096
        seen += [entity_text(page["text"], e) for e in page["entities"] if e["type"] == "code"]
        markup = page["reply_markup"]
        buttons = [b for row in (json.loads(markup) if isinstance(markup, str) else markup)["inline_keyboard"]
                   for b in row]
        pages = [b for b in buttons if b["callback_data"].startswith("sessions:")]
        assert [b["callback_data"] for b in pages] == [f"sessions:{n}" for n in (number - 1, number + 1) if 1 <= n <= 6]
        assert len(buttons) <= 100
        if number == 6:
            break
        before = len(api.edits)
        api.press(USER, f"sessions:{number + 1}", message["message_id"])
        page = wait_for(lambda: next((e for e in api.edits[before:] if int(e["message_id"]) == message["message_id"]),
                                     None), 60, what=f"page {number + 1}")
        page = {**page, "entities": json.loads(page["entities"]) if isinstance(page["entities"], str)
                else page["entities"]}
    assert sorted(seen) == sorted(names)  # every session once, on one page
    say(api, "/sessions 6", lambda t: t.endswith("Page 6 of 6 (110 sessions)"))
