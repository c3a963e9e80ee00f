"""Session lifecycle as a user sees it, through a real supervisor, real keepers and the fake claude."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from protocol import Client

from .conftest import SupervisorProcess, wait_for


def send_wait(sup: SupervisorProcess, name: str, text: str, *extra: str) -> str:
    result = sup.ctl("send", name, text, "--wait", *extra, check=True)
    return result.stdout.strip()


def test_new_session_answers_and_reports_cost_and_duration(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    assert send_wait(supervisor, "alpha", "hello") .startswith("echo: hello (history: 0")
    result = supervisor.wait_event("alpha", lambda e: e["kind"] == "result")
    assert result["cost_usd"] > 0 and result["duration_ms"] >= 0 and not result["is_error"]
    assert supervisor.session("alpha")["cost_usd"] == pytest.approx(result["cost_usd"])
    start = supervisor.claude_starts()[0]
    assert "--session-id" in start["argv"] and "--continue" not in start["argv"]
    assert start["cwd"].endswith("/sessions/alpha")


def test_keeper_and_claude_run_under_recognisable_titles(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    send_wait(supervisor, "alpha", "hi")
    keeper = supervisor.keeper_pid("alpha")
    assert keeper is not None
    [claude] = supervisor.claude_pids()
    # Claude runs in its own process group, a child of the keeper
    assert os.getpgid(claude) == claude
    assert int(Path(f"/proc/{claude}/stat").read_text().rsplit(")", 1)[1].split()[1]) == keeper


def test_idle_session_suspends_leaving_no_process_and_resumes_with_history(
    make_supervisor,
) -> None:
    sup = make_supervisor(idle_timeout=1).start()
    sup.ctl("new", "alpha", check=True)
    send_wait(sup, "alpha", "first")
    info = sup.wait_state("alpha", "suspended", timeout=10)
    assert info["live"] is False
    wait_for(lambda: sup.keeper_pid("alpha") is None and not sup.claude_pids(), 5, what="no processes")
    reply = send_wait(sup, "alpha", "second")
    assert "history: 2 earlier messages" in reply  # the first exchange is still there
    resumed = sup.wait_event("alpha", lambda e: e.get("state") == "resuming")
    assert resumed["idle_for"] >= 1.0  # since the first answer (the idle timeout passed), not since suspension
    argv = sup.claude_starts()[-1]["argv"]
    assert argv[argv.index("--resume") + 1] == info["session_id"]
    events = sup.events("alpha")
    suspended = [e for e in events if e["kind"] == "state" and e["state"] == "suspended"]
    assert suspended[-1]["reason"] == "idle-timeout"


def test_resume_failure_is_reported_and_no_fresh_session_is_started(make_supervisor) -> None:
    sup = make_supervisor(idle_timeout=1).start()
    sup.ctl("new", "alpha", check=True)
    send_wait(sup, "alpha", "remember me")
    sup.wait_state("alpha", "suspended")
    for path in (sup.home / ".fake-claude").rglob("*.jsonl"):
        path.unlink()  # the conversation is gone
    starts = len(sup.claude_starts())
    result = sup.ctl("send", "alpha", "are you there?", "--wait")
    assert result.returncode == 1
    assert "not delivered" in result.stderr and "No conversation found" in result.stderr
    assert sup.session("alpha")["state"] == "failed"
    new_starts = sup.claude_starts()[starts:]
    assert len(new_starts) == 1 and "--resume" in new_starts[0]["argv"]  # no --session-id retry
    failed = sup.wait_event("alpha", lambda e: e.get("reason") == "resume-failed")
    assert failed["state"] == "failed"
    wait_for(lambda: not sup.claude_pids() and sup.keeper_pid("alpha") is None, 5, what="no processes")


def test_claude_crash_mid_turn_reports_the_message_as_not_delivered(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    result = supervisor.ctl("send", "alpha", "please crash", "--wait")
    assert result.returncode == 1
    assert "exited unexpectedly (exit code 3)" in result.stderr
    assert supervisor.wait_state("alpha", "failed")
    # the next message resumes the same conversation
    assert "history: 1 earlier messages" in send_wait(supervisor, "alpha", "still there?")


def test_kill_9_of_claude_is_reported_and_the_session_resumes(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    with supervisor.client() as c:
        c.request("send", session="alpha", text="sleep:30 long job")
    claude = supervisor.wait_received("long job")["pid"]  # Claude has the message
    os.kill(claude, signal.SIGKILL)
    failed = supervisor.wait_event("alpha", lambda e: e["kind"] == "message_failed")
    assert "exit code -9" in failed["reason"]
    assert "history: 1 earlier" in send_wait(supervisor, "alpha", "hello again")


def test_kill_9_of_a_keeper_stops_its_claude_and_reports_the_message(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    with supervisor.client() as c:
        c.request("send", session="alpha", text="sleep:30 long job")
    supervisor.wait_received("long job")  # Claude has the message
    keeper = supervisor.keeper_pid("alpha")
    assert keeper is not None
    os.kill(keeper, signal.SIGKILL)
    wait_for(lambda: not supervisor.claude_pids(), 5, what="the orphaned claude to be stopped")
    failed = supervisor.wait_event("alpha", lambda e: e["kind"] == "message_failed")
    assert "keeper died" in failed["reason"]
    killed = supervisor.wait_event("alpha", lambda e: e.get("reason") == "killed")
    assert killed["state"] == "failed"
    assert "history: 1 earlier" in send_wait(supervisor, "alpha", "hello again")


def test_interrupt_ends_a_slow_turn_and_the_session_answers_next(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    with supervisor.client() as c:
        c.request("send", session="alpha", text="sleep:30 slow")
    supervisor.wait_received("sleep:30 slow")  # Claude is in the turn (busy: only written to it)
    supervisor.ctl("interrupt", "alpha", check=True)
    result = supervisor.wait_event("alpha", lambda e: e["kind"] == "result")
    # the fake ends a turn this way only when interrupted, never by its 30 s running out
    assert result["is_error"] and result["terminal_reason"] == "aborted_streaming"
    assert result["interrupted"] is True
    assert send_wait(supervisor, "alpha", "next").startswith("echo: next")
    not_busy = supervisor.ctl("interrupt", "alpha")
    assert not_busy.returncode == 1 and "not answering" in not_busy.stderr


def test_model_change_restarts_claude_with_resume_and_new_model(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", "--model", "model-a", check=True)
    assert "model model-a" in send_wait(supervisor, "alpha", "one")
    supervisor.ctl("model", "alpha", "model-b", check=True)
    reply = send_wait(supervisor, "alpha", "two")
    assert "model model-b" in reply and "history: 2 earlier" in reply
    argv = supervisor.claude_starts()[-1]["argv"]
    assert argv[argv.index("--model") + 1] == "model-b" and "--resume" in argv
    assert supervisor.ctl("model", "alpha", check=True).stdout.strip() == "Model: model-b"


def test_timeout_is_validated_persisted_and_applied_to_the_running_timer(make_supervisor) -> None:
    sup = make_supervisor(idle_timeout=3600).start()
    sup.ctl("new", "alpha", check=True)
    assert sup.ctl("timeout", "alpha", check=True).stdout.strip() == "Idle timeout: 60 minutes"
    bad = sup.ctl("timeout", "alpha", "121")
    assert bad.returncode == 1 and "between 1 and 120 minutes" in bad.stderr
    assert sup.ctl("timeout", "alpha", "0").returncode == 1
    ok = sup.ctl("timeout", "alpha", "5", check=True)
    assert ok.stdout.strip() == "Idle timeout set to 5 minutes for session 'alpha'."
    sup.stop()
    sup.start()
    assert sup.session("alpha")["idle_timeout"] == 300


def test_archive_stops_the_session_and_hides_it(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    supervisor.ctl("new", "beta", check=True)
    send_wait(supervisor, "alpha", "hi")
    supervisor.ctl("archive", "alpha", check=True)
    supervisor.wait_state("alpha", "archived")
    wait_for(lambda: supervisor.keeper_pid("alpha") is None and not supervisor.claude_pids(), 10,
             what="alpha's processes to stop")
    names = [s["name"] for s in supervisor.request("list")["sessions"]]
    assert names == ["beta"]
    every = [s["name"] for s in supervisor.request("list", all=True)["sessions"]]
    assert sorted(every) == ["alpha", "beta"]
    refused = supervisor.ctl("send", "alpha", "hello?")
    assert refused.returncode == 1 and "archived" in refused.stderr


def test_switching_sessions_leaves_the_other_running(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    supervisor.ctl("new", "beta", check=True)
    send_wait(supervisor, "alpha", "a")
    send_wait(supervisor, "beta", "b")
    assert supervisor.session("alpha")["live"] and supervisor.session("beta")["live"]
    assert len(supervisor.claude_pids()) == 2


def test_two_sessions_in_one_directory_keep_separate_histories(supervisor: SupervisorProcess, tmp_base: Path) -> None:
    shared = tmp_base / "project"
    shared.mkdir()
    supervisor.ctl("new", "one", "--cwd", str(shared), check=True)
    supervisor.ctl("new", "two", "--cwd", str(shared), check=True)
    send_wait(supervisor, "one", "for one")
    send_wait(supervisor, "one", "again one")
    assert "history: 0 earlier" in send_wait(supervisor, "two", "for two")


def test_images_are_sent_inline_and_other_files_by_path(supervisor: SupervisorProcess, tmp_base: Path) -> None:
    png = tmp_base / "pic.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 100)
    doc = tmp_base / "notes.txt"
    doc.write_text("some notes")
    supervisor.ctl("new", "alpha", check=True)
    reply = send_wait(supervisor, "alpha", "look", "--attach", str(png))
    assert "[images: 1]" in reply
    reply = send_wait(supervisor, "alpha", "read this", "--attach", str(doc))
    copy = supervisor.state_dir / "attachments" / "alpha"
    assert re.search(rf"\[Attached file saved at {re.escape(str(copy))}/\w+/notes.txt\]", reply), reply
    missing = supervisor.ctl("send", "alpha", "x", "--attach", str(tmp_base / "nope.txt"))
    assert missing.returncode == 1 and "nope.txt cannot be read: No such file" in missing.stderr


def test_persona_appends_its_system_prompt_and_model(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "rev", "--persona", "reviewer", check=True)
    send_wait(supervisor, "rev", "hi")
    argv = supervisor.claude_starts()[-1]["argv"]
    prompt = argv[argv.index("--append-system-prompt") + 1]
    cwd = supervisor.session("rev")["cwd"]
    assert prompt.startswith("You review code.\n\n") and f"{cwd}/outbox" in prompt  # then the outbox
    assert argv[argv.index("--model") + 1] == "persona-model"
    unknown = supervisor.ctl("new", "x", "--persona", "nobody")
    assert unknown.returncode == 1 and "unknown persona 'nobody'" in unknown.stderr


def test_explicit_suspend_of_an_idle_session(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    send_wait(supervisor, "alpha", "hi")
    supervisor.ctl("suspend", "alpha", check=True)
    state = supervisor.wait_state("alpha", "suspended")
    assert not state["live"]
    wait_for(lambda: not supervisor.claude_pids(), 5, what="claude to stop")
    last = [e for e in supervisor.events("alpha") if e["kind"] == "state"][-1]
    assert last["reason"] == "requested"


def test_a_client_can_stream_a_reply_while_it_is_produced(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    with Client(supervisor.runtime_dir) as c:
        c.request("subscribe", session="alpha", after=supervisor.session("alpha")["last_seq"])
        c.request("send", session="alpha", text="tool please")
        kinds = []
        while "result" not in kinds:
            frame = c.next_event(timeout=10)
            assert frame is not None
            kinds.append(frame["event"]["kind"])
    assert kinds.index("tool_use") < kinds.index("tool_result") < kinds.index("assistant_text") < kinds.index("result")


# --- the idle-timeout vs message race ------------------------------------------------------


def test_message_during_suspension_is_delivered_once_to_a_resumed_claude(make_supervisor) -> None:
    # Claude ignores SIGTERM, so the keeper stays in "suspending" for the 5 s grace period
    sup = make_supervisor(idle_timeout=1, env={"FAKE_CLAUDE_IGNORE_SIGTERM": "1"}).start()
    sup.ctl("new", "alpha", check=True)
    send_wait(sup, "alpha", "first")
    sup.wait_state("alpha", "suspending", timeout=10)
    old_claude = sup.claude_pids()
    reply = sup.ctl("send", "alpha", "during suspension", "--wait", check=True).stdout
    assert "echo: during suspension (history: 2 earlier" in reply
    assert all(pid not in sup.claude_pids() for pid in old_claude)  # a new Claude answered
    users = [e for e in sup.events("alpha") if e["kind"] == "user"]
    assert [u["text"] for u in users] == ["first", "during suspension"]
    assert "--resume" in sup.claude_starts()[-1]["argv"]


@pytest.mark.timeout(400)
def test_many_messages_racing_the_idle_timer_are_each_answered_exactly_once(make_supervisor) -> None:
    import random

    sup = make_supervisor(idle_timeout=0.2).start()
    sup.ctl("new", "alpha", check=True)
    rng = random.Random(7)
    texts = []
    with sup.follow("alpha") as events, sup.client() as c:
        for i in range(25):
            # the pacing only spreads the sends around the 0.2 s timeout and the suspension;
            # correctness never depends on it
            time.sleep(rng.uniform(0.1, 0.35))
            text = f"msg-{i}"
            texts.append(text)
            c.request("send", session="alpha", text=text)
        # each message may need a resume of Claude: a generous bound for a loaded machine
        results = events.wait_count(lambda e: e["kind"] in ("result", "message_failed"), len(texts),
                                    timeout=300, what="every message to be answered")
    assert all(r["kind"] == "result" and not r["is_error"] for r in results)
    answered = [r["text"].split(" (")[0].removeprefix("echo: ") for r in results]
    assert answered == texts  # in order, none lost, none twice
    histories = "".join(p.read_text() for p in (sup.home / ".fake-claude").rglob("*.jsonl"))
    for text in texts:
        assert histories.count(f'"text": "{text}"') == 1


# --- permission prompts --------------------------------------------------------------------


def test_permission_requests_wait_for_an_answer(make_supervisor) -> None:
    sup = make_supervisor(idle_timeout=0.5, config="permission_timeout = 600").start()
    sup.ctl("new", "alpha", check=True)
    with sup.client() as c:
        c.request("send", session="alpha", text="needperm please")
    request = sup.wait_event("alpha", lambda e: e["kind"] == "permission_request")
    assert request["tool_name"] == "Bash" and request["input"] == {"command": "touch x"}
    assert "--permission-prompt-tool" in sup.claude_starts()[-1]["argv"]
    wrong = sup.ctl("permit", "alpha", "no-such-id", "--allow")
    assert wrong.returncode == 1 and "no pending request no-such-id" in wrong.stderr
    sup.ctl("permit", "alpha", request["request_id"], "--deny", "--message", "not today", check=True)
    result = sup.wait_event("alpha", lambda e: e["kind"] == "result")
    assert result["text"] == "permission: deny (not today)"
    resolved = sup.wait_event("alpha", lambda e: e["kind"] == "permission_resolved")
    assert resolved["allow"] is False
    sup.wait_state("alpha", "suspended", timeout=10)  # idle again: the timer runs


def test_permission_allowed(make_supervisor) -> None:
    sup = make_supervisor(config="permission_timeout = 600").start()
    sup.ctl("new", "alpha", check=True)
    with sup.client() as c:
        c.request("send", session="alpha", text="needperm")
    request = sup.wait_event("alpha", lambda e: e["kind"] == "permission_request")
    sup.ctl("permit", "alpha", request["request_id"], "--allow", check=True)
    assert sup.wait_event("alpha", lambda e: e["kind"] == "result")["text"] == "permission: allow"


def test_archiving_a_busy_session_reports_the_unanswered_message(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    with supervisor.client() as c:
        c.request("send", session="alpha", text="sleep:30 long")
        queued = c.request("send", session="alpha", text="behind it")["message_id"]
    supervisor.wait_state("alpha", "busy")
    supervisor.ctl("archive", "alpha", check=True)
    supervisor.wait_state("alpha", "archived")
    failures = {e["message_id"]: e["reason"] for e in supervisor.events("alpha") if e["kind"] == "message_failed"}
    assert len(failures) == 2
    assert any("stopped before it finished answering (session archived)" in r for r in failures.values())
    assert "archived" in failures[queued]
    wait_for(lambda: not supervisor.claude_pids(), 10, what="claude to stop")


def test_pipelined_sends_to_a_suspended_session_start_one_keeper(supervisor: SupervisorProcess) -> None:
    import msgpack
    import zmq

    supervisor.ctl("new", "alpha", check=True)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{supervisor.runtime_dir / 'control.sock'}")
    try:
        for i in range(5):  # all in the socket before the supervisor reads the first
            sock.send(msgpack.packb({"v": 1, "id": i, "op": "send", "session": "alpha", "text": f"p{i}"}))
        replies = [msgpack.unpackb(sock.recv()) for _ in range(5)] if sock.poll(5000) else []
    finally:
        sock.close()
        ctx.term()
    assert all(r["ok"] for r in replies) and len(replies) == 5
    results = wait_for(lambda: (r := [e for e in supervisor.events("alpha") if e["kind"] == "result"])
                       and len(r) >= 5 and r, 20, what="five answers")
    assert [r["text"].split(" (")[0] for r in results] == [f"echo: p{i}" for i in range(5)]
    assert len(supervisor.claude_starts()) == 1
    assert "unknown keeper" not in supervisor.log()


def test_a_burst_of_output_loses_no_event(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    reply = supervisor.ctl("send", "alpha", "burst:3000", "--wait", timeout=90)
    assert reply.returncode == 0, reply.stderr
    texts = [e["text"] for e in supervisor.events("alpha") if e["kind"] == "assistant_text"]
    assert texts[:3000] == [f"b{i}" for i in range(3000)]


@pytest.mark.timeout(600)
def test_a_flood_of_messages_is_answered_in_full_and_in_order(make_supervisor) -> None:
    import msgpack
    import zmq

    # (a session's queue takes 100 by default: this one is raised for the flood)
    supervisor = make_supervisor(config="max_queued_messages = 2000\n").start()
    supervisor.ctl("new", "alpha", check=True)
    supervisor.ctl("send", "alpha", "warm up", "--wait", check=True)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{supervisor.runtime_dir / 'control.sock'}")
    n = 1500  # more than ZeroMQ's default high-water mark between supervisor and keeper
    try:
        for i in range(n):
            sock.send(msgpack.packb({"v": 1, "id": i, "op": "send", "session": "alpha", "text": f"f{i}"}))
        for _ in range(n):
            assert sock.poll(10000)
            assert msgpack.unpackb(sock.recv())["ok"]
    finally:
        sock.close()
        ctx.term()
    with supervisor.follow("alpha") as events:
        # 1500 turns: a generous bound for a loaded machine and a slowed fake claude
        results = events.wait_count(lambda e: e["kind"] == "result", n + 1, timeout=500, what="every answer")
    assert [r["text"].split(" (")[0] for r in results[1:]] == [f"echo: f{i}" for i in range(n)]


def test_an_output_line_over_the_limit_ends_the_turn_clearly(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    result = supervisor.ctl("send", "alpha", "hugeline please", "--wait", timeout=120)
    assert result.returncode == 1 and "over the 64 MiB limit" in result.stderr
    assert supervisor.wait_state("alpha", "failed")
    # the session goes on: the next message resumes the conversation
    assert "history: 1 earlier" in send_wait(supervisor, "alpha", "still there?")


def test_a_keeper_waiting_for_a_supervisor_interrupts_the_turn_past_its_buffer_bound(monkeypatch) -> None:
    from protocol import EventKind, Reason, SessionState
    from supervisord_claude._clock import FakeClock
    from supervisord_claude._wire import KeeperSpec, QueuedMessage
    from supervisord_claude.keeper import _uplink
    from supervisord_claude.keeper._keeper import Emit, Keeper
    from supervisord_claude.keeper._runs import Run

    monkeypatch.setattr(_uplink, "UNACKED_LIMIT", 10_000)
    spec = KeeperSpec(session="unit", instance="i", runtime_dir="/nonexistent", claude_bin="claude", cwd="/",
                      session_id="x", started=True, idle_timeout=10)
    keeper = Keeper(spec, death_fd=None, clock=FakeClock())
    keeper.uplink._raw_send = lambda data: pytest.fail("nothing is sent while no supervisor listens")  # type: ignore[method-assign]
    written: list[bytes] = []
    keeper._write = lambda line: written.append(line) or True  # type: ignore[method-assign]
    keeper.machine.runs.running = Run(1, resume=True, pid=1)
    keeper.machine.change_state(SessionState.RESUMING, Reason.MESSAGE)
    keeper.machine.turns.current = QueuedMessage(5, "long")
    keeper.uplink.state = _uplink.Link.ORPHANED
    for _ in range(100):
        keeper.do([Emit(EventKind.ASSISTANT_TEXT, {"text": "x" * 500, "message_id": 5})])
    assert len([line for line in written if b"interrupt" in line]) == 1  # once past the bound
    assert keeper.uplink.unacked_bytes > 10_000  # what it has is kept, in order, for the next supervisor


def test_claude_lines_are_cut_the_same_whatever_chunks_the_pipe_gives(monkeypatch) -> None:
    """The keeper reads Claude's stdout as the pipe gives it and cuts the lines itself:
    a line split over two reads, or over many, several lines in one read, an empty line
    and a last line without its newline each reach the machine as Claude wrote them, in
    order, once."""
    import asyncio

    from supervisord_claude._clock import FakeClock
    from supervisord_claude._wire import KeeperSpec
    from supervisord_claude.keeper import _keeper
    from supervisord_claude.keeper._keeper import Keeper

    from .test_keeper_burst import read_stdout_of

    monkeypatch.setattr(_keeper, "STDOUT_CHUNK", 7)  # a read of 7 bytes at most: every line is cut somewhere
    written = b'{"type":"system"}\n{"a":1}\n\n{"b":"' + b"x" * 40 + b'"}\n{"c":3}\n{"last":true}'
    spec = KeeperSpec(session="unit", instance="i", runtime_dir="/nonexistent", claude_bin="claude", cwd="/",
                      session_id="x", started=True, idle_timeout=10)

    async def read(pieces: list[bytes]) -> list[bytes]:
        keeper = Keeper(spec, death_fd=None, clock=FakeClock())
        lines: list[bytes] = []
        keeper._claude_line = lambda run, line: lines.append(line)  # type: ignore[method-assign]
        keeper._claude_lines = lambda run, batch: lines.extend(batch)  # type: ignore[method-assign]
        keeper.machine.claude_exited = lambda *args: []  # type: ignore[method-assign]
        await read_stdout_of(keeper, 1, pieces)
        return lines

    expected = written.split(b"\n")
    assert asyncio.run(read([written])) == expected
    assert asyncio.run(read([written[i:i + 3] for i in range(0, len(written), 3)])) == expected

