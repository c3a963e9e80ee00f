"""Claude's permission requests, questions and plans in Telegram, played as a user
through the fake Bot API against a real supervisor and the fake claude."""

from __future__ import annotations

import json

import pytest

from .conftest import BotProcess, SupervisorProcess, wait_for
from .fake_telegram import FakeTelegram
from .test_bot_app import USER, say

pytestmark = pytest.mark.timeout(180)


def buttons(message: dict) -> list[tuple[str, str]]:
    return [(b["text"], b["callback_data"]) for row in message["reply_markup"]["inline_keyboard"] for b in row]


def button(message: dict, label: str) -> str:
    found = [data for text, data in buttons(message) if text == label]
    assert found, f"no button {label!r} in {buttons(message)}"
    return found[0]


def edit_of(api: FakeTelegram, message: dict, contains: str) -> dict:
    return wait_for(lambda: next((e for e in api.edits if int(e["message_id"]) == message["message_id"]
                                  and contains in e["text"]), None), 60, what=f"an edit with {contains!r}")


def answered(api: FakeTelegram, text: str) -> dict:
    return api.wait_for_text(lambda t: t == text, chat_id=USER)


@pytest.fixture
def chat(make_supervisor, bot_env):
    def make(config: str = "") -> tuple[SupervisorProcess, BotProcess]:
        sup = make_supervisor(config=config).start()
        return sup, bot_env(sup)

    return make


def test_a_command_prompt_shows_the_command_and_allow_runs_it(chat, telegram) -> None:
    chat()
    say(telegram, "/new alpha", "created")
    prompt = say(telegram, "needperm now", "Claude wants to run")
    assert prompt["text"].startswith("🔐 Claude wants to run:\ntouch x")
    before = prompt["text"][:prompt["text"].index("touch x")]
    assert {"type": "pre", "offset": len(before.encode("utf-16-le")) // 2, "length": 7} in prompt["entities"]
    assert [t for t, _ in buttons(prompt)] == ["✅ Allow", "🚫 Deny", "♾ Always allow `touch …` here"]  # says what it allows
    telegram.press(USER, button(prompt, "✅ Allow"), prompt["message_id"])
    answered(telegram, "permission: allow")
    assert any(a.get("text") == "✅ Allowed" for a in telegram.callback_answers)
    edit = edit_of(telegram, prompt, "✅ Allowed")
    assert edit["text"].startswith("🔐 Claude wants to run:") and not edit.get("reply_markup")


def test_deny_tells_claude_and_the_prompt_says_denied(chat, telegram) -> None:
    chat()
    say(telegram, "/new alpha", "created")
    prompt = say(telegram, "needperm now", "Claude wants to run")
    telegram.press(USER, button(prompt, "🚫 Deny"), prompt["message_id"])
    answered(telegram, "permission: deny (The user denied this from Telegram.)")
    edit_of(telegram, prompt, "🚫 Denied")


def test_always_allow_is_kept_for_the_session_and_asks_no_more(chat, telegram) -> None:
    sup, _ = chat()
    say(telegram, "/new alpha", "created")
    prompt = say(telegram, "needperm now", "Claude wants to run")
    telegram.press(USER, button(prompt, "♾ Always allow `touch …` here"), prompt["message_id"])
    reply = telegram.wait_for_text(lambda t: t.startswith("permission: allow always"), chat_id=USER)
    [update] = json.loads(reply["text"].removeprefix("permission: allow always "))
    # Claude suggested only the exact command: the command's prefix, kept to this session
    # (not written to the project's settings)
    assert update == {"type": "addRules", "behavior": "allow", "destination": "session",
                      "rules": [{"toolName": "Bash", "ruleContent": "touch *"}]}
    edit_of(telegram, prompt, "♾ Always allowed for this session: Bash(touch *)")
    before = len(telegram.sent)
    say(telegram, "needperm again", "permission: allowed by rule")
    assert not [m for m in telegram.sent[before:] if "Claude wants to run" in m["text"]]
    assert sup.session("alpha")["allowed_tools"] == ["Bash(touch *)"]


def test_an_unanswered_prompt_is_denied_after_the_timeout_and_the_chat_is_told(chat, telegram) -> None:
    sup, _ = chat("permission_timeout = 1")
    say(telegram, "/new alpha", "created")
    prompt = say(telegram, "needperm now", "Claude wants to run")
    told = telegram.wait_for_text(lambda t: t.startswith("⏱ Claude's request was denied"), chat_id=USER)
    assert "No answer within 1 seconds" in told["text"]
    answered(telegram, "permission: deny (No answer within 1 seconds: denied.)")
    edit_of(telegram, prompt, "⏱ No answer in time")
    # the button of the expired prompt no longer does anything
    telegram.press(USER, button(prompt, "✅ Allow"), prompt["message_id"])
    wait_for(lambda: any("no longer pending" in (a.get("text") or "") for a in telegram.callback_answers), 60,
             what="the stale-press answer")
    wait_for(lambda: any(int(m["message_id"]) == prompt["message_id"] for m in telegram.markup_edits), 60,
             what="the stale prompt's buttons removed")
    assert [e["allow"] for e in sup.events("alpha") if e["kind"] == "permission_resolved"] == [False]


def test_a_second_press_on_an_answered_prompt_changes_nothing(chat, telegram) -> None:
    sup, _ = chat()
    say(telegram, "/new alpha", "created")
    prompt = say(telegram, "needperm now", "Claude wants to run")
    telegram.press(USER, button(prompt, "✅ Allow"), prompt["message_id"])
    answered(telegram, "permission: allow")
    sup.wait_consumer("telegram-bot")
    telegram.press(USER, button(prompt, "🚫 Deny"), prompt["message_id"])
    wait_for(lambda: any("no longer pending" in (a.get("text") or "") for a in telegram.callback_answers), 60,
             what="the stale-press answer")
    resolved = [e for e in sup.events("alpha") if e["kind"] == "permission_resolved"]
    assert [e["allow"] for e in resolved] == [True]


def test_a_prompt_pending_across_a_bot_restart_still_works(chat, bot_env, telegram) -> None:
    sup, bot = chat()
    say(telegram, "/new alpha", "created")
    prompt = say(telegram, "needperm now", "Claude wants to run")
    sup.wait_consumer("telegram-bot")
    bot.kill9()
    bot_env(sup)
    telegram.press(USER, button(prompt, "✅ Allow"), prompt["message_id"])
    answered(telegram, "permission: allow")
    edit_of(telegram, prompt, "✅ Allowed")
    sup.wait_consumer("telegram-bot")
    assert telegram.texts(USER).count("permission: allow") == 1


def test_a_request_made_while_the_bot_was_down_is_posted_when_it_starts(chat, bot_env, telegram) -> None:
    sup, bot = chat()
    say(telegram, "/new alpha", "created")
    bot.kill9()
    with sup.client() as c:
        c.request("send", session="alpha", text="needperm while away", origin=f"tg:{USER}")
    sup.wait_event("alpha", lambda e: e["kind"] == "permission_request")
    bot_env(sup)
    prompt = telegram.wait_for_text(lambda t: "Claude wants to run" in t, chat_id=USER)
    telegram.press(USER, button(prompt, "✅ Allow"), prompt["message_id"])
    answered(telegram, "permission: allow")


def test_a_question_is_answered_with_one_tap(chat, telegram) -> None:
    chat()
    say(telegram, "/new alpha", "created")
    prompt = say(telegram, "askq please", "Claude asks")
    assert "Pick a colour" in prompt["text"] and "• Blue — cool" in prompt["text"]
    assert [t for t, _ in buttons(prompt)] == ["Red", "Blue"]
    telegram.press(USER, button(prompt, "Blue"), prompt["message_id"])
    answered(telegram, 'answers: {"Pick a colour": "Blue"}')
    edit_of(telegram, prompt, "✅ Answered: Pick a colour → Blue")


def test_several_questions_and_a_multi_select_are_answered_with_done(chat, telegram) -> None:
    chat()
    say(telegram, "/new alpha", "created")
    prompt = say(telegram, "askmulti please", "Claude asks")
    assert [t for t, _ in buttons(prompt)] == ["1. Red", "1. Blue", "⬜ 2. Tests", "⬜ 2. Docs", "⬜ 2. Bench", "Done"]
    telegram.press(USER, button(prompt, "Done"), prompt["message_id"])
    wait_for(lambda: any("every question" in (a.get("text") or "") for a in telegram.callback_answers), 60,
             what="the not-yet answer")
    for label in ("1. Red", "⬜ 2. Tests", "⬜ 2. Docs"):
        before = len(telegram.markup_edits)
        telegram.press(USER, button(prompt, label), prompt["message_id"])
        wait_for(lambda b=before: len(telegram.markup_edits) > b, 60, what=f"the keyboard redrawn after {label}")
    shown = [b["text"] for row in telegram.markup_edits[-1]["reply_markup"]["inline_keyboard"] for b in row]
    assert shown == ["✅ 1. Red", "1. Blue", "☑️ 2. Tests", "☑️ 2. Docs", "⬜ 2. Bench", "Done"]
    telegram.press(USER, button(prompt, "Done"), prompt["message_id"])
    answered(telegram, 'answers: {"Pick a colour": "Red", "Which extras?": "Tests, Docs"}')


def test_a_typed_message_answers_the_waiting_question(chat, telegram) -> None:
    sup, _ = chat()
    say(telegram, "/new alpha", "created")
    say(telegram, "askq please", "Claude asks")
    say(telegram, "Green, actually", "✅ Answer sent to Claude's question in 'alpha' (this chat's session).")
    answered(telegram, 'answers: {"Pick a colour": "Green, actually"}')
    sup.wait_consumer("telegram-bot")
    assert [e["text"] for e in sup.events("alpha") if e["kind"] == "user"] == ["askq please"]
    say(telegram, "and now a message", "echo: and now a message")  # answered: text goes to Claude again


def reply_to(api: FakeTelegram, message: dict, text: str) -> int:
    """The user replies to one of the bot's messages (Telegram quotes it in the update)."""
    return api.message(USER, text, reply_to_message={
        "message_id": message["message_id"], "date": 0, "chat": {"id": USER, "type": "private"},
        "from": {"id": 123456, "is_bot": True, "first_name": "Claude"}, "text": message["text"]})


def user_texts(sup: SupervisorProcess, session: str) -> list[str]:
    return [e["text"] for e in sup.events(session) if e["kind"] == "user"]


def test_text_typed_in_another_session_does_not_answer_the_question_a_reply_to_it_does(chat, telegram) -> None:
    sup, _ = chat()
    say(telegram, "/new alpha", "created")
    question = say(telegram, "askq please", "Claude asks")
    say(telegram, "/new beta", "created")  # beta is now the chat's session; alpha's question waits
    say(telegram, "hello beta", "echo: hello beta")
    waits = telegram.wait_for_text(lambda t: t.startswith("❓ Claude's request in 'alpha' still waits"), chat_id=USER)
    assert waits["disable_notification"]
    assert user_texts(sup, "beta") == ["hello beta"]
    assert not [e for e in sup.events("alpha") if e["kind"] == "permission_resolved"]
    before = len(telegram.sent)
    reply_to(telegram, question, "Green")
    ack = wait_for(lambda: next((m for m in telegram.sent[before:] if "Answer sent" in m["text"]), None), 60,
                   what="the answer's acknowledgement")
    assert ack["text"] == "✅ Answer sent to Claude's question in 'alpha' (you replied to it)."
    telegram.wait_for_text(lambda t: t.startswith("[alpha]") and t.endswith('answers: {"Pick a colour": "Green"}'),
                           chat_id=USER)
    assert user_texts(sup, "alpha") == ["askq please"]


def test_what_another_session_shows_carries_its_name_and_its_prompt_is_threaded(chat, telegram, tmp_path) -> None:
    sup, _ = chat()
    say(telegram, "/new alpha", "created")
    gate = tmp_path / "go"
    telegram.message(USER, f"waitfile:{gate} tools:1 needperm now")
    asked = telegram.from_users[-1]
    sup.wait_received("needperm now")
    say(telegram, "/new beta", "created")  # beta is the chat's session when alpha goes on
    gate.touch()
    prompt = telegram.wait_for_text(lambda t: "Claude wants to run" in t, chat_id=USER)
    assert prompt["text"].startswith("[alpha]\n🔐 Claude wants to run:")
    assert prompt["reply_parameters"]["message_id"] == asked["message_id"]
    tools = telegram.wait_for_text(lambda t: "🔧 Read" in t, chat_id=USER)
    assert tools["text"].startswith("[alpha]\n🔧 Read: /tmp/f0")
    telegram.press(USER, button(prompt, "✅ Allow"), prompt["message_id"])
    telegram.wait_for_text(lambda t: t.startswith("[alpha]") and t.endswith("permission: allow"), chat_id=USER)
    footer = telegram.wait_for_text(lambda t: " turn" in t and t.startswith("[alpha] $"), chat_id=USER)
    assert footer["disable_notification"]


def test_a_plan_is_approved_into_accept_edits(chat, telegram) -> None:
    sup, _ = chat()
    say(telegram, "/new alpha", "created")
    say(telegram, "/mode plan", "Permission mode set to plan")
    prompt = say(telegram, "planexit now", "Claude's plan")
    assert "1. Write hello.txt\n2. Run the tests" in prompt["text"]
    assert [t for t, _ in buttons(prompt)] == ["✅ Approve", "✅ Approve, accept edits", "✏️ Keep planning"]
    assert "--permission-mode" in (argv := sup.claude_starts()[-1]["argv"]) and argv[argv.index("--permission-mode") + 1] == "plan"
    telegram.press(USER, button(prompt, "✅ Approve, accept edits"), prompt["message_id"])
    answered(telegram, "plan: approved, mode acceptEdits")
    edit_of(telegram, prompt, "Plan approved; mode accept-edits")
    say(telegram, "/status", "Permission mode: accept-edits")


def test_keep_planning_rejects_the_plan(chat, telegram) -> None:
    chat()
    say(telegram, "/new alpha", "created")
    say(telegram, "/mode plan", "Permission mode set to plan")
    prompt = say(telegram, "planexit now", "Claude's plan")
    telegram.press(USER, button(prompt, "✏️ Keep planning"), prompt["message_id"])
    answered(telegram, "plan: rejected (The user wants to keep planning: revise the plan.)")
    say(telegram, "/mode", "Permission mode: plan")


def test_text_typed_under_a_plan_is_feedback_and_claude_keeps_planning(chat, telegram) -> None:
    sup, _ = chat()
    say(telegram, "/new alpha", "created")
    say(telegram, "/mode plan", "Permission mode set to plan")
    prompt = say(telegram, "planexit now", "Claude's plan")
    say(telegram, "use sqlite instead", "✏️ Claude keeps planning in 'alpha', with your words as feedback")
    answered(telegram, "plan: rejected (The user wants changes to the plan: use sqlite instead)")
    edit_of(telegram, prompt, "🚫 Denied")
    sup.wait_consumer("telegram-bot")
    assert user_texts(sup, "alpha") == ["planexit now"]  # not queued as a turn of its own


def test_text_typed_under_a_permission_prompt_can_be_the_reason_to_deny_it(chat, telegram) -> None:
    sup, _ = chat()
    say(telegram, "/new alpha", "created")
    say(telegram, "needperm now", "Claude wants to run")
    offer = say(telegram, "no, that file is mine", "Is this the reason to deny it")
    assert [t for t, _ in buttons(offer)] == ["🚫 Deny, with this as the reason", "Send it to Claude as a new message"]
    telegram.press(USER, button(offer, "🚫 Deny, with this as the reason"), offer["message_id"])
    answered(telegram, "permission: deny (The user denied this: no, that file is mine)")
    sup.wait_consumer("telegram-bot")
    assert user_texts(sup, "alpha") == ["needperm now"]
    # the other choice: the text is a message of its own, answered after the request
    prompt = say(telegram, "needperm again", "Claude wants to run")
    offer = say(telegram, "meanwhile, hello", "Is this the reason to deny it")
    telegram.press(USER, button(offer, "Send it to Claude as a new message"), offer["message_id"])
    # (updates are handled in order: the message is with the supervisor before the Allow)
    telegram.press(USER, button(prompt, "✅ Allow"), prompt["message_id"])
    answered(telegram, "permission: allow")
    telegram.wait_for_text(lambda t: t.startswith("echo: meanwhile, hello"), chat_id=USER)


def test_a_long_command_comes_whole_as_a_file_before_allow(chat, telegram) -> None:
    from .fake_claude import TOOL_INPUTS

    chat()
    say(telegram, "/new alpha", "created")
    prompt = say(telegram, "needtool:Bash now", "Claude wants to run")
    assert "the whole of it comes as a file below" in prompt["text"]
    doc = wait_for(lambda: next((d for d in telegram.documents if d["filename"] == "command.sh"), None), 60,
                   what="the whole command as a file")
    assert doc["content"].decode() == TOOL_INPUTS["Bash"]["command"]  # "&& rm -rf build" included
    telegram.press(USER, button(prompt, "🚫 Deny"), prompt["message_id"])
    answered(telegram, "permission: deny")


def test_write_and_edit_prompts_show_the_content_and_the_diff(chat, telegram) -> None:
    chat()
    say(telegram, "/new alpha", "created")
    write = say(telegram, "needtool:Write now", "Claude wants to write")
    assert "40 lines, 311 bytes" in write["text"]
    assert "line 1\nline 2\n" in write["text"] and "line 15" in write["text"] and "line 16" not in write["text"]
    doc = wait_for(lambda: next((d for d in telegram.documents if d["filename"] == "notes.txt"), None), 60,
                   what="the whole file")
    assert doc["content"].decode().endswith("line 40\n")
    telegram.press(USER, button(write, "✅ Allow"), write["message_id"])
    answered(telegram, "permission: allow")
    edit = say(telegram, "needtool:Edit now", "Claude wants to edit")
    assert "@@ -1,2 +1,2 @@\n def f():\n-    return 1\n+    return 2" in edit["text"]
    assert not [d for d in telegram.documents if d["filename"] == "app.py.diff"]  # all of it is shown


def test_always_allow_of_a_write_says_its_directory_and_allows_nothing_outside_it(chat, telegram) -> None:
    sup, _ = chat()
    say(telegram, "/new alpha", "created")
    prompt = say(telegram, "needtool:Write now", "Claude wants to write")
    # the fake asks for /tmp/notes.txt, outside the session's directory: only /tmp is offered
    assert [t for t, _ in buttons(prompt)][2] == "♾ Always allow edits in /tmp here"
    telegram.press(USER, button(prompt, "♾ Always allow edits in /tmp here"), prompt["message_id"])
    answered(telegram, "permission: allow")
    edit_of(telegram, prompt, "♾ Always allowed for this session: Edit(//tmp/**)")
    assert sup.session("alpha")["allowed_tools"] == ["Edit(//tmp/**)"]  # not "Write": every file anywhere


def test_forged_button_presses_change_nothing_and_the_bot_goes_on(chat, telegram) -> None:
    sup, _ = chat()
    say(telegram, "/new alpha", "created")
    prompt = say(telegram, "needperm now", "Claude wants to run")
    token = button(prompt, "✅ Allow").split(":")[1]
    for data in ("perm:", "perm:no-such-token:y", f"perm:{token}:q:99:99", f"perm:{token}:zz",
                 f"perm:{token}:p:evil", "perm:" + "x" * 58, "switch:../../etc/passwd", "switch:"):
        before = len(telegram.callback_answers)
        telegram.press(USER, data, prompt["message_id"])
        wait_for(lambda b=before: len(telegram.callback_answers) > b, 60, what=f"an answer to the press {data!r}")
    assert sup.session("alpha")["pending"]  # still waiting: no forged press answered it
    telegram.press(USER, button(prompt, "✅ Allow"), prompt["message_id"])
    answered(telegram, "permission: allow")
