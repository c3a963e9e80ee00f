"""Watching a running turn through the real supervisor and the fake claude (issue #29):
what `status` and `claudectl` say it does, stalled (no output, no CPU) against busy (no
output, CPU burnt), one reminder per prompt, and the bot's messages and buttons through
the fake Bot API."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from bot._activity import INTERRUPT_BUTTON, KEEP_WAITING_BUTTON, KEPT_WAITING

from .conftest import USER, SupervisorProcess, wait_for
from .test_bot_app import say

#: small thresholds, so a test waits seconds: a stall after 1.5 s of silence without CPU,
#: a reminder after 1 s (the permission timeout stays far away)
STALL_AFTER = 1.5
CONFIG = f"stall_after = {STALL_AFTER}\nremind_after = 1\npermission_timeout = 300\n"


def activity(sup: SupervisorProcess, name: str) -> dict[str, Any]:
    return sup.session(name).get("activity") or {}


def wait_activity(sup: SupervisorProcess, name: str, check: Any, what: str) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        last.clear()
        last.update(activity(sup, name))
        return dict(last) if check(last) else None
    found: dict[str, Any] = wait_for(reached, 60, what=what, seen=lambda: dict(last))
    return found


def kinds(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == kind]


@pytest.fixture
def sup(make_supervisor) -> SupervisorProcess:
    sup: SupervisorProcess = make_supervisor(idle_timeout=60, config=CONFIG).start()
    sup.request("create", session="work")
    sup.request("send", session="work", text="hello")  # Claude is started before the watched turns
    sup.wait_event("work", lambda e: e["kind"] == "result", what="the first answer")
    return sup


def test_a_hung_tool_call_is_stalled_once_and_says_what_it_was_doing(sup: SupervisorProcess) -> None:
    gate = sup.base / "gate"
    with sup.follow("work") as events:
        sent = sup.request("send", session="work", text=f"stuck:{gate}")
        events.wait_event(lambda e: e["kind"] == "tool_use", what="the tool call")
        now = activity(sup, "work")
        assert (now["doing"], now["tool"], now["message_id"]) == ("tool", "Bash", sent["message_id"])
        stalled = events.wait_event(lambda e: e["kind"] == "stalled", what="the stalled event")
        assert (stalled["doing"], stalled["tool"], stalled["detail"]) == \
            ("tool", "Bash", "curl https://example.invalid/slow")
        assert stalled["message_id"] == sent["message_id"] and stalled["silent_for"] >= STALL_AFTER
        assert stalled["cpu_percent"] < 5
        now = activity(sup, "work")
        assert (now["doing"], now["was"], now["tool"]) == ("stalled", "tool", "Bash")
        shown = sup.ctl("status", "work", check=True).stdout
        assert "STALLED" in shown and "running Bash (curl https://example.invalid/slow)" in shown
        assert "stalled" in sup.ctl("ls", check=True).stdout
        overview = sup.request("status")
        assert [(t["session"], t["doing"]) for t in overview["turns"]] == [("work", "stalled")]
        assert "running turns: 1 (work: stalled" in sup.ctl("status", check=True).stdout
        # silent for three times the threshold, many ticks later: said once
        wait_activity(sup, "work", lambda a: a.get("silent_for", 0) >= 3 * STALL_AFTER, "a long silence")
        gate.touch()
        events.wait_event(lambda e: e["kind"] == "result" and e.get("message_id") == sent["message_id"],
                          what="the answer once the tool returns")
        assert len(kinds(events.events, "stalled")) == 1
    assert activity(sup, "work") == {}  # no turn runs
    tail = sup.ctl("tail", "work", "--from", "0", check=True).stdout
    assert "stalled: no output for" in tail and "claudectl interrupt work stops it" in tail


def test_send_wait_says_on_stderr_that_the_turn_seems_stuck_and_still_gets_the_answer(
        sup: SupervisorProcess) -> None:
    gate = sup.base / "gate"
    waiting = subprocess.Popen([sys.executable, "-m", "supervisord_claude.ctl", "--runtime-dir", str(sup.runtime_dir),
                                "send", "work", f"stuck:{gate}", "--wait"], env=sup.env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    sup.wait_event("work", lambda e: e["kind"] == "stalled", what="the stalled event")
    gate.touch()
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0 and out.startswith(f"echo: stuck:{gate}")
    assert err.count("stalled: no output for") == 1 and "running Bash (curl https://example.invalid/slow)" in err


def test_a_silent_tool_call_that_burns_cpu_is_working_not_stalled(sup: SupervisorProcess) -> None:
    gate = sup.base / "gate"
    with sup.follow("work") as events:
        sent = sup.request("send", session="work", text=f"busy:{gate}")
        now = wait_activity(sup, "work", lambda a: a.get("silent_for", 0) >= 3 * STALL_AFTER,
                            "a long silence of a tool that burns CPU")
        assert (now["doing"], now["tool"], now["detail"]) == ("tool", "Bash", "pytest -q")
        assert now["cpu_percent"] > 5
        assert "running Bash (pytest -q)" in sup.ctl("status", "work", check=True).stdout
        gate.touch()
        events.wait_event(lambda e: e["kind"] == "result" and e.get("message_id") == sent["message_id"],
                          what="the answer")
        assert kinds(events.events, "stalled") == []


def test_a_prompt_waiting_is_marked_in_ls_and_status_and_gets_one_reminder(sup: SupervisorProcess) -> None:
    sup.request("create", session="other")
    with sup.follow("work") as events:
        sent = sup.request("send", session="work", text="needperm")
        request = events.wait_event(lambda e: e["kind"] == "permission_request", what="the prompt")
        now = activity(sup, "work")
        assert (now["doing"], now["request_id"], now["tool_name"], now["detail"]) == \
            ("waiting", request["request_id"], "Bash", "touch x")
        rows = {line.split()[1]: line for line in sup.ctl("ls", check=True).stdout.splitlines()[1:]}
        assert rows["work"].startswith("⏳") and "waiting for you" in rows["work"]
        assert rows["other"].startswith("⚪")
        assert "⏳ waiting for you" in sup.ctl("status", "work", check=True).stdout
        as_json = json.loads(sup.ctl("status", "work", "--json", check=True).stdout)
        assert as_json["activity"]["doing"] == "waiting"
        reminder = events.wait_event(lambda e: e["kind"] == "reminder", what="the reminder")
        assert (reminder["request_id"], reminder["tool_name"], reminder["message_id"]) == \
            (request["request_id"], "Bash", sent["message_id"])
        assert reminder["waited"] >= 1 and 0 < reminder["denied_in"] < 300
        # waiting for you is never "stalled", and the reminder comes once
        wait_activity(sup, "work", lambda a: a.get("seconds", 0) >= 4, "the prompt to wait a while")
        sup.request("permit", session="work", request_id=request["request_id"], allow=True)
        events.wait_event(lambda e: e["kind"] == "result", what="the answer")
        assert len(kinds(events.events, "reminder")) == 1 and kinds(events.events, "stalled") == []
    tail = sup.ctl("tail", "work", "--from", "0", check=True).stdout
    assert "reminder: Claude has waited" in tail and "Bash (touch x)" in tail


def test_after_a_supervisor_restart_the_turn_is_seen_as_before_and_its_stall_is_not_said_again(
        sup: SupervisorProcess) -> None:
    gate = sup.base / "gate"
    sent = sup.request("send", session="work", text=f"stuck:{gate}")
    sup.wait_event("work", lambda e: e["kind"] == "stalled", what="the stalled event")
    before = activity(sup, "work")
    sup.kill9()  # the keeper and its Claude live on, and are adopted
    sup.start()
    now = wait_activity(sup, "work", lambda a: a.get("doing") == "stalled" and
                        a.get("silent_for", 0) >= 3 * STALL_AFTER, "the adopted turn to read stalled again")
    assert (now["tool"], now["message_id"]) == ("Bash", sent["message_id"])
    assert now["since"] == pytest.approx(before["since"], abs=0.01)  # (from the stored events)
    gate.touch()
    sup.wait_event("work", lambda e: e["kind"] == "result" and e.get("message_id") == sent["message_id"],
                   what="the answer")
    assert len(kinds(sup.events("work"), "stalled")) == 1


# the bot -------------------------------------------------------------------------------


@pytest.fixture
def watched(make_supervisor, telegram, bot_env):
    sup = make_supervisor(idle_timeout=60, config=CONFIG).start()
    bot_env(sup)
    say(telegram, "/new alpha", "created")
    say(telegram, "hello", "echo: hello")
    return sup, telegram


def buttons(message: dict[str, Any]) -> dict[str, str]:
    return {b["text"]: b["callback_data"] for row in message["reply_markup"]["inline_keyboard"] for b in row}


def test_the_bot_says_once_quietly_that_a_turn_seems_stuck_and_stop_it_works(watched) -> None:
    sup, api = watched
    gate = sup.base / "gate"
    api.message(USER, f"stuck:{gate}")
    asked = api.from_users[-1]["message_id"]
    stuck = api.wait_for_text(lambda t: "seems stuck" in t, chat_id=USER)
    assert "running Bash (curl https://example.invalid/slow)" in stuck["text"] and "'alpha'" in stuck["text"]
    assert stuck["disable_notification"] and stuck["reply_parameters"]["message_id"] == asked
    assert list(buttons(stuck)) == [INTERRUPT_BUTTON, KEEP_WAITING_BUTTON]
    api.press(USER, buttons(stuck)[INTERRUPT_BUTTON], stuck["message_id"])
    api.wait_for_text(lambda t: t == "⏹ Interrupted.", chat_id=USER)
    sup.wait_state("alpha", "idle")
    sup.wait_consumer("telegram-bot")
    assert len([t for t in api.texts(USER) if "seems stuck" in t]) == 1


def test_keep_waiting_waits_and_the_answer_still_comes_with_no_second_notice(watched) -> None:
    sup, api = watched
    gate = sup.base / "gate"
    api.message(USER, f"stuck:{gate}")
    stuck = api.wait_for_text(lambda t: "seems stuck" in t, chat_id=USER)
    api.press(USER, buttons(stuck)[KEEP_WAITING_BUTTON], stuck["message_id"])
    wait_for(lambda: any(a.get("text") == KEPT_WAITING for a in api.callback_answers),
             what="the press to be answered")
    wait_for(lambda: any(e.get("text", "").endswith(f"→ {KEEP_WAITING_BUTTON}") for e in api.edits),
             what="the notice to show the choice")
    assert sup.session("alpha")["state"] == "busy"
    wait_activity(sup, "alpha", lambda a: a.get("silent_for", 0) >= 4 * STALL_AFTER, "a long silence")
    gate.touch()
    api.wait_for_text(lambda t: t.startswith(f"echo: stuck:{gate}"), chat_id=USER)
    sup.wait_consumer("telegram-bot")
    assert len([t for t in api.texts(USER) if "seems stuck" in t]) == 1


def test_a_busy_silent_turn_gets_no_stuck_notice(watched) -> None:
    sup, api = watched
    gate = sup.base / "gate"
    api.message(USER, f"busy:{gate}")
    wait_activity(sup, "alpha", lambda a: a.get("silent_for", 0) >= 3 * STALL_AFTER, "a long silence")
    gate.touch()
    api.wait_for_text(lambda t: t.startswith(f"echo: busy:{gate}"), chat_id=USER)
    sup.wait_consumer("telegram-bot")
    assert not [t for t in api.texts(USER) if "seems stuck" in t]


def test_a_prompt_unanswered_gets_one_quiet_reminder_and_sessions_and_status_say_it_waits(watched) -> None:
    sup, api = watched
    api.message(USER, "needperm")
    prompt = wait_for(lambda: next((m for m in api.sent if m["reply_markup"] and "touch x" in m["text"]), None),
                      what="the prompt with its buttons")
    reminder = api.wait_for_text(lambda t: t.startswith("⏰"), chat_id=USER)
    assert "waiting" in reminder["text"] and "Bash (touch x)" in reminder["text"]
    assert reminder["disable_notification"] and reminder["reply_parameters"]["message_id"] == prompt["message_id"]
    listing = say(api, "/sessions", "alpha")
    assert "⏳" in listing["text"] and "waits for you" in listing["text"]
    status = say(api, "/status", "Session: alpha")
    assert "Now: ⏳ waiting for your answer to Bash (touch x)" in status["text"]
    wait_activity(sup, "alpha", lambda a: a.get("seconds", 0) >= 4, "the prompt to wait a while")
    allow = next(data for label, data in buttons(prompt).items() if "Allow" in label and "Always" not in label)
    api.press(USER, allow, prompt["message_id"])
    api.wait_for_text(lambda t: t.startswith("permission: allow"), chat_id=USER)
    sup.wait_consumer("telegram-bot")
    assert len([t for t in api.texts(USER) if t.startswith("⏰")]) == 1
    assert not [t for t in api.texts(USER) if "seems stuck" in t]


def test_a_stall_while_the_bot_was_down_is_told_when_it_is_back_unless_the_turn_went_on(
        make_supervisor, telegram, bot_env) -> None:
    sup = make_supervisor(idle_timeout=60, config=CONFIG).start()
    bot = bot_env(sup)
    api = telegram
    say(api, "/new alpha", "created")
    say(api, "hello", "echo: hello")
    first, second = sup.base / "gate1", sup.base / "gate2"
    # stalled while the bot is down, and still stalled when it is back: told then, with its buttons
    api.message(USER, f"stuck:{first}")
    sup.wait_received(f"stuck:{first}")
    bot.kill9()
    sup.wait_event("alpha", lambda e: e["kind"] == "stalled", what="the first stall")
    bot = bot_env(sup)
    stuck = api.wait_for_text(lambda t: "seems stuck" in t, chat_id=USER)
    assert list(buttons(stuck)) == [INTERRUPT_BUTTON, KEEP_WAITING_BUTTON]
    first.touch()
    api.wait_for_text(lambda t: t.startswith(f"echo: stuck:{first}"), chat_id=USER)
    # stalled while the bot is down, but it went on before the bot was back: no news
    api.message(USER, f"stuck:{second}")
    sup.wait_received(f"stuck:{second}")
    bot.kill9()
    seen = sup.session("alpha")["last_seq"]
    sup.wait_event("alpha", lambda e: e["kind"] == "stalled", after=seen, what="the second stall")
    second.touch()
    sup.wait_event("alpha", lambda e: e["kind"] == "result", after=seen, what="the second answer")
    bot_env(sup)
    api.wait_for_text(lambda t: t.startswith(f"echo: stuck:{second}"), chat_id=USER)
    sup.wait_consumer("telegram-bot")
    assert len([t for t in api.texts(USER) if "seems stuck" in t]) == 1
