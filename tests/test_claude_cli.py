"""Conformance tier: the real Claude Code CLI, driven through the supervisor, offline,
against the fake Anthropic API in ``fake_anthropic.py``. Run alone: ./scripts/test -m claude_cli"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import SYSTEM, USER, SupervisorProcess, processes_of, real_claude_bin, wait_for
from .fake_anthropic import FakeAnthropic
from .test_bot_app import say

pytestmark = [pytest.mark.claude_cli, pytest.mark.timeout(120)]


@pytest.fixture
def api() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture
def real(make_supervisor, api: FakeAnthropic) -> Callable[..., SupervisorProcess]:
    def make(idle_timeout: float = 60) -> SupervisorProcess:
        env = {
            "ANTHROPIC_BASE_URL": api.url,
            "ANTHROPIC_API_KEY": "sk-test-dummy",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        }
        return make_supervisor(claude_bin=real_claude_bin(), idle_timeout=idle_timeout, env=env)

    return make


def ask(sup: SupervisorProcess, name: str, text: str, ok: bool = True) -> str:
    result = sup.ctl("send", name, text, "--wait", timeout=90)
    if ok:
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()
    assert result.returncode == 1
    return result.stderr + result.stdout


def results(sup: SupervisorProcess, name: str) -> list[dict]:
    return [e for e in sup.events(name) if e["kind"] == "result"]


def conversation_files(sup: SupervisorProcess) -> list[Path]:
    return sorted((sup.home / ".claude" / "projects").rglob("*.jsonl"))


def test_new_session_answers_with_cost_and_duration(real, api: FakeAnthropic) -> None:
    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    assert ask(sup, "alpha", "hello claude").startswith("echo: hello claude | turns=1")
    [result] = results(sup, "alpha")
    assert result["cost_usd"] > 0 and result["duration_ms"] > 0 and not result["is_error"]
    assert result["session_id"] == sup.session("alpha")["session_id"]


def test_idle_suspend_leaves_no_process_and_resume_keeps_history(real, api: FakeAnthropic) -> None:
    sup = real(idle_timeout=2).start()
    sup.ctl("new", "alpha", check=True)
    ask(sup, "alpha", "remember the word pelican")
    sup.wait_state("alpha", "suspended", timeout=20)
    assert sup.claude_pids() == [] and sup.keeper_pid("alpha") is None
    reply = ask(sup, "alpha", "what was the word?")
    assert "turns=2" in reply
    last = api.turn_requests()[-1]
    assert "remember the word pelican" in json.dumps(last["messages"])
    ids = {r["session_id"] for r in results(sup, "alpha")}
    assert ids == {sup.session("alpha")["session_id"]}
    assert len(conversation_files(sup)) == 1


def test_two_sessions_in_one_directory_never_mix(real, api: FakeAnthropic, tmp_base: Path) -> None:
    sup = real(idle_timeout=2).start()
    shared = tmp_base / "shared-project"
    shared.mkdir()
    sup.ctl("new", "one", "--cwd", str(shared), check=True)
    sup.ctl("new", "two", "--cwd", str(shared), check=True)
    ask(sup, "one", "secret of one: aardvark")
    ask(sup, "two", "secret of two: bonobo")
    sup.wait_state("one", "suspended", timeout=20)
    sup.wait_state("two", "suspended", timeout=20)
    assert "turns=2" in ask(sup, "two", "two again")
    two_request = json.dumps(api.turn_requests()[-1]["messages"])
    assert "bonobo" in two_request and "aardvark" not in two_request
    assert "turns=2" in ask(sup, "one", "one again")
    one_request = json.dumps(api.turn_requests()[-1]["messages"])
    assert "aardvark" in one_request and "bonobo" not in one_request


def test_model_change_reaches_the_api_with_history(real, api: FakeAnthropic) -> None:
    sup = real().start()
    sup.ctl("new", "alpha", "--model", "claude-test-model-a", check=True)
    assert "model=claude-test-model-a" in ask(sup, "alpha", "first")
    sup.ctl("model", "alpha", "claude-test-model-b", check=True)
    reply = ask(sup, "alpha", "second")
    assert "model=claude-test-model-b" in reply and "turns=2" in reply
    assert api.turn_requests()[-1]["model"] == "claude-test-model-b"


def test_interrupt_ends_a_slow_turn_and_the_next_message_is_answered(real, api: FakeAnthropic) -> None:
    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    with sup.client() as c:
        c.request("send", session="alpha", text="slow:60 please")
    sup.wait_state("alpha", "busy")
    api.wait_requests(1)
    sup.ctl("interrupt", "alpha", check=True)
    result = sup.wait_event("alpha", lambda e: e["kind"] == "result", timeout=20)
    assert result["is_error"] and result["terminal_reason"] == "aborted_streaming"
    assert "echo: after the interrupt" in ask(sup, "alpha", "after the interrupt")


def test_a_tool_call_runs_and_its_result_reaches_the_api(real, api: FakeAnthropic) -> None:
    sup = real().start()
    info = json.loads(sup.ctl("--json", "new", "alpha", check=True).stdout)
    notes = Path(info["cwd"]) / "notes.txt"
    notes.write_text("the answer is 42\nsecond line\n")
    reply = ask(sup, "alpha", f"readfile:{notes}")
    assert "tool said:" in reply and "the answer is 42" in reply
    events = sup.events("alpha")
    [tool_use] = [e for e in events if e["kind"] == "tool_use"]
    assert tool_use["name"] == "Read" and tool_use["input"]["file_path"] == str(notes)
    [tool_result] = [e for e in events if e["kind"] == "tool_result"]
    assert "the answer is 42" in tool_result["content"]
    assert "the answer is 42" in json.dumps(api.turn_requests()[-1]["messages"])


def test_claude_reads_an_attachment_from_its_copy_without_asking(real, api: FakeAnthropic, tmp_base: Path) -> None:
    """The copy taken at send is outside the session's directory: Claude gets --add-dir for
    it, so its Read runs without a permission prompt."""
    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    notes = tmp_base / "notes.txt"
    notes.write_text("attached and read\n")
    result = sup.ctl("send", "alpha", "readattached", "--attach", str(notes), "--wait", timeout=90)
    assert result.returncode == 0, result.stderr
    assert "tool said:" in result.stdout and "attached and read" in result.stdout
    events = sup.events("alpha")
    [tool_use] = [e for e in events if e["kind"] == "tool_use"]
    assert tool_use["input"]["file_path"].startswith(str(sup.state_dir / "attachments" / "alpha"))
    assert not [e for e in events if e["kind"] == "permission_request"]


def test_a_deleted_conversation_fails_resume_clearly_without_a_new_session(real, api: FakeAnthropic) -> None:
    sup = real(idle_timeout=2).start()
    sup.ctl("new", "alpha", check=True)
    ask(sup, "alpha", "hello")
    sup.wait_state("alpha", "suspended", timeout=20)
    [conversation] = conversation_files(sup)
    conversation.unlink()
    requests_before = len(api.turn_requests())
    error = ask(sup, "alpha", "are you there?", ok=False)
    assert "No conversation found with session ID" in error and "not delivered" in error
    assert sup.session("alpha")["state"] == "failed"
    assert conversation_files(sup) == []  # nothing silently started in its place
    assert len(api.turn_requests()) == requests_before


def test_kill_9_of_the_supervisor_mid_answer_the_answer_still_arrives(real, api: FakeAnthropic) -> None:
    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    ask(sup, "alpha", "before the crash: walrus")
    with sup.client() as c:
        mid = c.request("send", session="alpha", text="slow:4 mid-turn")["message_id"]
    api.wait_requests(2)  # Claude is writing the answer
    keeper = sup.keeper_pid("alpha")
    claude = [p for p in sup.claude_pids() if "claude" in SYSTEM.title(p)]
    sup.kill9()
    sup.start()
    assert "Adopted 1 keepers, reaped 0 stale" in sup.log()
    result = sup.wait_event("alpha", lambda e: e["kind"] == "result" and e.get("message_id") == mid, timeout=60)
    assert "mid-turn" in result["text"] and not result["is_error"]
    assert sup.keeper_pid("alpha") == keeper and all(SYSTEM.alive(p) for p in claude)
    reply = ask(sup, "alpha", "after the restart")
    assert "echo: after the restart" in reply
    assert "walrus" in json.dumps(api.turn_requests()[-1]["messages"])


def test_an_api_error_reaches_the_user_and_the_session_stays_usable(real, api: FakeAnthropic) -> None:
    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    error = ask(sup, "alpha", "http400 please", ok=False)
    assert "API Error: 400" in error and "Claude's API call failed (HTTP 400)" in error
    result = results(sup, "alpha")[-1]
    assert result["is_error"] and result["api_error_status"] == 400
    assert "echo: still fine" in ask(sup, "alpha", "still fine")


def test_shutdown_stops_real_claude_within_the_grace_period(real, api: FakeAnthropic) -> None:
    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    with sup.client() as c:
        c.request("send", session="alpha", text="slow:60 busy at shutdown")
    api.wait_requests(1)
    t0 = time.monotonic()
    sup.proc.send_signal(signal.SIGTERM)
    assert sup.proc.wait(20) == 0
    assert time.monotonic() - t0 < 5  # real claude exits on SIGTERM at once
    assert processes_of(sup.instance) == []


def transcript_records(sup: SupervisorProcess, text: str) -> list[dict]:
    """The records of the conversation's file on disk that hold ``text``."""
    return [record for path in conversation_files(sup) for line in path.read_text().splitlines()
            if text in line for record in [json.loads(line)]]


@pytest.mark.parametrize("held_in", ["the answer", "a permission request"])
def test_a_steered_message_real_claude_had_not_taken_at_a_shutdown_reaches_it_once_after_the_next_start(
        real, api: FakeAnthropic, held_in: str) -> None:
    """At a graceful shutdown the keeper gives back a message steered into the running turn
    that Claude had not taken (no echo), and it is answered after the next start. That is
    right only if the real CLI, stopped with SIGTERM after reading it, did not save it into
    the conversation: then the resumed Claude would see it twice. Measured (2.1.327): the
    CLI writes such a message to its session file as a ``queue-operation`` record only (its
    input queue), not as a user message, and ``--resume`` does not send it to the model —
    whether the turn was held in the model's answer or in a tool waiting for permission."""
    steer = "and one more thing, steered"
    sup = real().start()
    info = json.loads(sup.ctl("--json", "new", "alpha", check=True).stdout)
    # the turn stays open: the model's answer streams for a minute, or Claude waits for an
    # answer to its permission request (a Write), which never comes
    hold = "slow:60" if held_in == "the answer" else f"writefile:{Path(info['cwd']) / 'held.txt'}"
    with sup.client() as c:
        first = c.request("send", session="alpha", text=f"{hold} busy at shutdown")["message_id"]
    if held_in == "the answer":
        api.wait_requests(1)
    else:
        sup.wait_event("alpha", lambda e: e["kind"] == "permission_request", timeout=60)
    with sup.client() as c:
        sent = c.request("send", session="alpha", text=steer)
    assert sent["steering"]
    # the CLI read it (it records it in its input queue) and has not taken it
    wait_for(lambda: transcript_records(sup, steer), what="the CLI to read the steered message")
    assert not [e for e in sup.events("alpha") if e["kind"] == "taken"]
    assert sup.stop() == 0  # the keeper stops Claude: SIGTERM to its group
    assert processes_of(sup.instance) == []
    [queued] = transcript_records(sup, steer)
    assert queued["type"] == "queue-operation" and queued["operation"] == "enqueue"
    sup.start()
    answer = sup.wait_event("alpha", lambda e: e.get("message_id") == sent["message_id"] and e["kind"] == "result",
                            timeout=90)
    assert answer["text"].startswith(f"echo: {steer}")
    # the resumed Claude's request holds the earlier turn and the steered message once
    last = json.dumps(api.turn_requests()[-1]["messages"])
    assert last.count(steer) == 1 and "busy at shutdown" in last
    [cut] = [e for e in sup.events("alpha") if e.get("message_id") == first and e["kind"] == "message_failed"]
    assert "supervisor shutdown" in cut["reason"]


def _request(sup: SupervisorProcess, text: str) -> dict:
    with sup.client() as c:
        mid = c.request("send", session="alpha", text=text)["message_id"]
    return sup.wait_event("alpha", lambda e: e["kind"] == "permission_request" and e.get("message_id") == mid,
                          timeout=60)


def _result(sup: SupervisorProcess, request: dict) -> dict:
    return sup.wait_event("alpha", lambda e: e["kind"] == "result" and e.get("message_id") == request["message_id"],
                          timeout=60)


def test_a_command_that_writes_runs_only_after_allow(real, api: FakeAnthropic) -> None:
    sup = real().start()  # the default configuration: Claude asks, the user answers
    info = json.loads(sup.ctl("--json", "new", "alpha", check=True).stdout)
    target = Path(info["cwd"]) / "made-by-bash.txt"
    request = _request(sup, f"bash:touch+{target}")
    assert request["tool_name"] == "Bash" and request["input"]["command"] == f"touch {target}"
    assert request["suggestions"], "the real CLI offers always-allow rules"
    assert not target.exists()  # nothing happens before the user says yes
    sup.ctl("permit", "alpha", request["request_id"], "--allow", check=True)
    result = _result(sup, request)
    assert not result["is_error"] and target.exists()
    # denied: the command does not run, and Claude is told why
    other = Path(info["cwd"]) / "never.txt"
    request = _request(sup, f"bash:touch+{other}")
    sup.ctl("permit", "alpha", request["request_id"], "--deny", "--message", "not this one", check=True)
    assert "not this one" in _result(sup, request)["text"] and not other.exists()


def test_always_allow_reaches_the_real_cli_in_the_process_and_after_a_resume(real, api: FakeAnthropic) -> None:
    sup = real().start()
    info = json.loads(sup.ctl("--json", "new", "alpha", check=True).stdout)
    target = Path(info["cwd"]) / "again.txt"
    request = _request(sup, f"bash:touch+{target}")
    # the real CLI suggests only the exact command; "always" means every touch, as its terminal offers
    assert [r["ruleContent"] for s in request["suggestions"] for r in s.get("rules", ())] == [f"touch {target}"]
    assert request["always"] == ["Bash(touch *)"]
    sup.ctl("permit", "alpha", request["request_id"], "--allow", "--always", check=True)
    _result(sup, request)
    rules = sup.session("alpha")["allowed_tools"]
    assert rules == ["Bash(touch *)"]
    before = len([e for e in sup.events("alpha") if e["kind"] == "permission_request"])
    other = Path(info["cwd"]) / "other.txt"
    ask(sup, "alpha", f"bash:touch+{other}")  # another file: no prompt this time
    assert other.exists()
    sup.ctl("suspend", "alpha", check=True)
    sup.wait_state("alpha", "suspended", timeout=30)
    target.unlink()
    ask(sup, "alpha", f"bash:touch+{target}")  # a new Claude (--resume) with the rule on its command line
    assert target.exists()
    assert len([e for e in sup.events("alpha") if e["kind"] == "permission_request"]) == before


def test_always_allow_of_a_compound_command_needs_every_part_in_the_real_cli(real, api: FakeAnthropic) -> None:
    sup = real().start()
    info = json.loads(sup.ctl("--json", "new", "alpha", check=True).stdout)
    cwd = Path(info["cwd"])
    request = _request(sup, f"bash:touch+{cwd}/a+&&+rm+-f+{cwd}/a")
    assert request["always"] == ["Bash(touch *)", "Bash(rm *)"]  # one rule per part
    sup.ctl("permit", "alpha", request["request_id"], "--allow", "--always", check=True)
    _result(sup, request)
    ask(sup, "alpha", f"bash:touch+{cwd}/b+&&+rm+-f+{cwd}/b")  # both parts allowed: no prompt
    # a part no rule covers: asked
    mixed = _request(sup, f"bash:touch+{cwd}/c+&&+mkdir+{cwd}/d")
    assert mixed["always"] == ["Bash(touch *)", "Bash(mkdir *)"]
    sup.ctl("permit", "alpha", mixed["request_id"], "--deny", check=True)
    _result(sup, mixed)
    assert not (cwd / "d").exists()
    # removing a rule reaches the running Claude: rm is asked again
    sup.ctl("rules", "alpha", "--remove", "2", check=True)
    again = _request(sup, f"bash:touch+{cwd}/e+&&+rm+-f+{cwd}/e")
    sup.ctl("permit", "alpha", again["request_id"], "--deny", check=True)


def test_always_allow_of_a_write_covers_its_directory_only_in_the_real_cli(real, api: FakeAnthropic,
                                                                          tmp_path: Path) -> None:
    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    (tmp_path / "mine").mkdir()
    (tmp_path / "other").mkdir()
    request = _request(sup, f"writefile:{tmp_path}/mine/a.txt")  # outside the session's directory
    assert request["always"] == [f"Edit(/{tmp_path}/mine/**)"]  # said before anything is pressed
    sup.ctl("permit", "alpha", request["request_id"], "--allow", "--always", check=True)
    _result(sup, request)
    assert sup.session("alpha")["allowed_tools"] == [f"Edit(/{tmp_path}/mine/**)"]
    ask(sup, "alpha", f"writefile:{tmp_path}/mine/b.txt")  # the same directory: no prompt
    assert (tmp_path / "mine" / "b.txt").exists()
    outside = _request(sup, f"writefile:{tmp_path}/other/c.txt")  # elsewhere: asked again
    sup.ctl("permit", "alpha", outside["request_id"], "--deny", check=True)
    _result(sup, outside)
    assert not (tmp_path / "other" / "c.txt").exists()


def test_a_session_cap_stops_the_real_cli_mid_conversation_and_holds_the_next_message(real, api: FakeAnthropic
                                                                                     ) -> None:
    from protocol import RemoteError

    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    sup.ctl("budget", "--session", "alpha", "--cap", "0.0003", check=True)  # a turn costs $0.00014 here
    ask(sup, "alpha", "one")
    ask(sup, "alpha", "two")
    # the real CLI got --max-budget-usd and ends the turn that passes it
    stopped = ask(sup, "alpha", "three", ok=False)
    assert "Reached maximum budget" in stopped
    last = results(sup, "alpha")[-1]
    assert last["subtype"] == "error_max_budget_usd" and last["cost_delta"] == pytest.approx(0.00014)
    with sup.client() as c, pytest.raises(RemoteError, match=r"its daily cap is \$0\.0003"):
        c.request("send", session="alpha", text="four")  # held: nothing reaches Claude
    report = json.loads(sup.ctl("--json", "budget", "--session", "alpha", check=True).stdout)
    # the per-turn deltas, not Claude's running total (0.00014 + 0.00028 + 0.00042)
    assert report["sessions"][0]["today"] == pytest.approx(0.00042)


def test_a_fork_continues_a_copy_of_the_conversation_in_the_real_cli(real, api: FakeAnthropic) -> None:
    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    assert "turns=1" in ask(sup, "alpha", "one")
    assert "continues a copy" in sup.ctl("fork", "alpha", "beta", check=True).stdout
    assert "turns=2" in ask(sup, "beta", "in the fork")  # alpha's message came along
    beta = sup.session("beta")
    assert results(sup, "beta")[-1]["session_id"] == beta["session_id"]  # the copy has the id it was given
    assert "turns=3" in ask(sup, "beta", "again")  # resumed under its own id
    assert "turns=2" in ask(sup, "alpha", "original")  # the original never saw the fork's messages
    sent = json.dumps(api.turn_requests()[-1]["messages"])
    assert "in the fork" not in sent


def test_an_answered_question_reaches_the_api_in_the_tool_result(real, api: FakeAnthropic) -> None:
    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    request = _request(sup, "askq:Pick+a+colour")
    assert request["tool_name"] == "AskUserQuestion"
    assert [o["label"] for o in request["input"]["questions"][0]["options"]] == ["Red", "Blue"]
    sup.ctl("answer", "alpha", request["request_id"], "Blue", check=True)
    result = _result(sup, request)
    assert '"Pick a colour"="Blue"' in result["text"]
    sent = json.dumps(api.turn_requests()[-1]["messages"])
    assert 'Your questions have been answered: \\"Pick a colour\\"=\\"Blue\\"' in sent


def test_a_multi_select_answer_reaches_the_api(real, api: FakeAnthropic) -> None:
    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    request = _request(sup, "askmulti:Which+colours")
    sup.ctl("answer", "alpha", request["request_id"], "Red", "Blue", check=True)
    assert '"Which colours"="Red, Blue"' in _result(sup, request)["text"]


def test_an_approved_plan_leaves_plan_mode_in_the_mode_picked(real, api: FakeAnthropic) -> None:
    sup = real().start()
    sup.ctl("new", "alpha", "--mode", "plan", check=True)
    request = _request(sup, "planexit")
    assert request["tool_name"] == "ExitPlanMode"
    assert request["tool_use_input"]["plan"].startswith("1. Write hello.txt")  # the CLI's request has no plan
    starts = sup.claude_pids()
    sup.ctl("permit", "alpha", request["request_id"], "--allow", "--mode", "accept-edits", check=True)
    assert "approved" in _result(sup, request)["text"]
    assert sup.session("alpha")["mode"] == "accept-edits"
    # the same Claude (not restarted) now edits files without asking
    target = Path(sup.session("alpha")["cwd"]) / "edited.txt"
    ask(sup, "alpha", f"writefile:{target}")
    assert target.read_text() == "written by claude\n"
    assert [e["tool_name"] for e in sup.events("alpha") if e["kind"] == "permission_request"] == ["ExitPlanMode"]
    assert sup.claude_pids() == starts and sup.session("alpha")["mode"] == "accept-edits"


# --- through the Telegram bot -------------------------------------------------------------


def test_the_bot_drives_real_claude_with_resume_and_history(real, api: FakeAnthropic, telegram) -> None:
    from .conftest import BotProcess
    from .test_bot_app import USER, say

    sup = real(idle_timeout=2).start()
    bot = BotProcess(sup, telegram).start()
    try:
        say(telegram, "/new alpha", "created")
        first = say(telegram, "remember **octopus**", "echo:", timeout=60)
        assert "turns=1" in first["text"] and "remember octopus" in first["text"]
        assert any(e["type"] == "bold" for e in first["entities"])  # Markdown from the API became entities
        sup.wait_state("alpha", "suspended", timeout=20)
        say(telegram, "and now?", "Resuming session...", timeout=60)
        second = telegram.wait_for_text(lambda t: t.startswith("echo: and now?"), timeout=60, chat_id=USER)
        assert "turns=2" in second["text"]
        assert "octopus" in json.dumps(api.turn_requests()[-1]["messages"])
    finally:
        bot.stop()


def test_a_streamed_answer_arrives_as_live_pieces_then_one_stored_text_and_one_result(real, api: FakeAnthropic) -> None:
    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    frames = []
    with sup.client() as c:
        sub = c.request("subscribe", session="alpha", after=0, live=True)["sub"]
        c.request("send", session="alpha", text="slow:2 stream this answer please")
        while True:
            frame = c.next_event(timeout=60)
            assert frame is not None, [f["event"]["kind"] for f in frames]
            frames.append(frame)
            if "id" in frame["event"]:
                c.request("ack", sub=sub, upto=frame["event"]["id"])
            if frame["event"]["kind"] == "result":
                break
    live = [f["event"] for f in frames if f["type"] == "live"]
    [text] = [f["event"] for f in frames if f["event"]["kind"] == "assistant_text"]
    # the real CLI's text deltas, as they came: the supervisor sends a session's pieces once
    # per loop turn, so on a loaded machine several can come in one frame (even all of them)
    assert live and all(e["text"] for e in live)
    assert "".join(e["text"] for e in live) == text["text"]
    kinds = [f["event"]["kind"] for f in frames]
    assert kinds.index("assistant_text") > max(i for i, f in enumerate(frames) if f["type"] == "live")
    assert kinds.count("result") == 1


def test_claude_codes_slash_commands_sent_from_telegram_run_in_claude(real, api: FakeAnthropic, bot_env,
                                                                      telegram) -> None:
    sup = real().start()
    bot_env(sup)
    say(telegram, "/new alpha", "created")
    commands_dir = Path(sup.session("alpha")["cwd"]) / ".claude" / "commands"
    commands_dir.mkdir(parents=True)
    (commands_dir / "explain.md").write_text("Explain in simple words: $ARGUMENTS\n")
    # a project's own command: Claude Code expands it before the model sees it
    say(telegram, "/explain what does this do?", "echo: Explain in simple words: what does this do?", timeout=90)
    say(telegram, "/context", "Context Usage", timeout=90)  # a built-in: Claude Code answers it itself
    # a command with nothing to say (its turn has no answer) is still acknowledged
    done = say(telegram, "/compact", "✅ Done: Claude Code ran the command", timeout=90)
    assert done["reply_parameters"]["message_id"] == telegram.from_users[-1]["message_id"]
    assert any(e["kind"] == "result" and e["num_turns"] == 0 and not e["text"] for e in sup.events("alpha"))
    assert "Explain in simple words: what does this do?" in json.dumps(api.turn_requests())


def test_the_turn_claude_starts_when_a_background_command_ends_reaches_the_chat(real, api: FakeAnthropic, bot_env,
                                                                               telegram) -> None:
    """What the real CLI does: after the turn that started a background Bash has ended,
    the command's end starts a turn no message began (its result's ``origin`` says
    ``task-notification``); the bot shows it, labelled, in the chat that last wrote."""
    sup = real().start()
    bot_env(sup)
    say(telegram, "/new alpha", "created")
    telegram.message(USER, "bgbash:sleep+2;echo+done-in-background")  # (a read-only command: not asked)
    telegram.wait_for_text(lambda t: t.startswith("tool said: Command running in background"), timeout=60,
                           chat_id=USER)
    follow_up = telegram.wait_for_text(lambda t: "follow-up: Background command" in t, timeout=60, chat_id=USER)
    assert "Claude's follow-up" in follow_up["text"]
    # (the answer is shown as it is stored; the turn's result comes after it)
    notified = sup.wait_event("alpha", lambda e: e["kind"] == "result" and e.get("message_id") is None)
    assert not notified["is_error"]
    assert len([e for e in results(sup, "alpha") if e.get("message_id") is None]) == 1


def test_an_api_error_of_the_real_cli_reaches_the_chat_once_with_a_retry(real, api: FakeAnthropic, bot_env,
                                                                          telegram) -> None:
    """The CLI writes an API error as an answer ("API Error: 400 …") and again as the
    turn's error result: the chat gets one message, with a Retry button."""
    sup = real().start()
    bot_env(sup)
    say(telegram, "/new alpha", "created")
    telegram.message(USER, "http400 please")
    sup.wait_event("alpha", lambda e: e["kind"] == "result" and e["is_error"])
    sup.wait_consumer("telegram-bot")
    shown = [t for t in telegram.texts(USER) if "API Error: 400" in t]
    edited = [e for e in telegram.edits if "API Error: 400" in e["text"]]
    assert len(shown) == 1 and len(edited) == 1
    assert edited[0]["text"].startswith("⚠️ Claude reported an error: API Error: 400")
    assert edited[0]["reply_markup"]["inline_keyboard"][0][0]["text"] == "🔁 Retry"


def _asked(sup: SupervisorProcess, text: str) -> dict | None:
    """Send ``text``; its permission request (denied, so the turn ends), or None if the
    tool ran unasked (its result's text is then in ``ran``)."""
    with sup.client() as c:
        mid = c.request("send", session="alpha", text=text)["message_id"]
    event = sup.wait_event("alpha", lambda e: e.get("message_id") == mid and e["kind"] in ("permission_request",
                                                                                          "result"), timeout=60)
    if event["kind"] == "result":
        return None
    sup.ctl("permit", "alpha", event["request_id"], "--deny", check=True)
    _result(sup, event)
    return event


def test_a_webfetch_domain_rule_lets_the_real_cli_fetch_there_unasked_and_asks_for_another(
        real, api: FakeAnthropic) -> None:
    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    request = _request(sup, "webfetch:https://example.com/page")
    assert request["tool_name"] == "WebFetch" and request["input"]["url"] == "https://example.com/page"
    # the real CLI suggests the URL's host itself; the rule is that domain
    assert [r["ruleContent"] for s in request["suggestions"] for r in s.get("rules", ())] == ["domain:example.com"]
    assert request["always"] == ["WebFetch(domain:example.com)"]
    sup.ctl("permit", "alpha", request["request_id"], "--allow", "--always", check=True)
    _result(sup, request)
    assert sup.session("alpha")["allowed_tools"] == ["WebFetch(domain:example.com)"]
    # the same host, whatever the path, scheme, port or case: the tool runs unasked (offline,
    # Claude Code's own check of the domain then fails: the tool ran, it was not refused)
    for url in ("https://example.com/other", "http://example.com:8080/x", "https://EXAMPLE.com/y"):
        assert _asked(sup, f"webfetch:{url}") is None, url
    ran = results(sup, "alpha")[-1]["text"]
    assert ran.startswith("tool said: Unable to verify if domain example.com is safe to fetch")
    # another domain, and a subdomain, are asked for (the rule is the host, exactly)
    for url, host in (("https://example.org/page", "example.org"), ("https://www.example.com/x", "www.example.com")):
        asked = _asked(sup, f"webfetch:{url}")
        assert asked is not None and asked["always"] == [f"WebFetch(domain:{host})"], url
    # a wildcard rule named by the user covers every subdomain, not the domain itself
    sup.ctl("rules", "alpha", "--remove", "1", check=True)
    sup.request("add_rule", session="alpha", tool="WebFetch", scope="*.example.com")
    assert _asked(sup, "webfetch:https://a.b.example.com/z") is None
    assert _asked(sup, "webfetch:https://example.com/page") is not None
    # a new Claude (--resume) gets the rule on its command line: still unasked
    sup.ctl("suspend", "alpha", check=True)
    sup.wait_state("alpha", "suspended", timeout=30)
    assert _asked(sup, "webfetch:https://www.example.com/third") is None
