"""One conversation at the desk and on the phone (issue #25), with the fake claude: a
session handed to Claude Code's own terminal UI (the ``attach`` op, ``claudectl
attach``), what happens to messages meanwhile, and the session coming back when the
terminal's process ends. The real CLI in a real tmux: tests/test_claude_cli_attach.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocol import RemoteError

from .conftest import SupervisorProcess, wait_for


@pytest.fixture
def terminal() -> Iterator[subprocess.Popen[bytes]]:
    """A process standing for the TUI: the session is the terminal's while it lives."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait()


def attach(sup: SupervisorProcess, name: str, pid: int, **args: object) -> dict:
    with sup.client(timeout=60) as c:
        return c.request("attach", session=name, pid=pid, tty="/dev/pts/test", **args)


def kinds(events: list[dict]) -> list[tuple[str, str | None]]:
    return [(e["kind"], e.get("state") or e.get("text")) for e in events]


def test_attach_stops_the_keeper_and_messages_wait_for_the_terminal_to_close(
        supervisor: SupervisorProcess, terminal: subprocess.Popen[bytes]) -> None:
    supervisor.ctl("new", "alpha", check=True)
    supervisor.ctl("send", "alpha", "first", "--wait", check=True)
    assert supervisor.session("alpha")["state"] == "idle"
    reply = attach(supervisor, "alpha", terminal.pid)
    rec = supervisor.session("alpha")
    assert reply["attached"] and reply["state"] == "attached"
    # what the terminal runs: the session's own conversation, directory and settings
    argv = reply["argv"]
    assert argv[argv.index("--resume") + 1] == rec["session_id"] and reply["cwd"] == rec["cwd"]
    assert argv[argv.index("--permission-mode") + 1] == "default" and "-p" not in argv
    assert reply["env"]["HOME"] == str(supervisor.home) and "SUPERVISORD_CLAUDE_INSTANCE" not in reply["env"]
    assert rec["state"] == "attached" and rec["keeper_pid"] is None and supervisor.claude_pids() == []
    assert rec["terminal"]["pid"] == terminal.pid and rec["terminal"]["tty"] == "/dev/pts/test"
    with supervisor.client() as c:
        sent = c.request("send", session="alpha", text="while away")
    assert sent["state"] == "attached" and sent["terminal"]["pid"] == terminal.pid
    # a second Claude on the conversation is refused while the terminal holds it
    with pytest.raises(RemoteError) as refused:
        attach(supervisor, "alpha", terminal.pid)
    assert refused.value.code == "busy" and "open in a terminal" in str(refused.value)
    assert supervisor.session("alpha")["keeper_pid"] is None
    terminal.kill()
    terminal.wait()
    result = supervisor.wait_event("alpha", lambda e: e["kind"] == "result" and e.get("message_id") == sent["message_id"])
    assert "echo: while away" in result["text"]
    events = supervisor.events("alpha")
    states = [e for e in events if e["kind"] == "state" and e["state"] in ("attached", "suspended")]
    assert [(e["state"], e["reason"]) for e in states][-2:] == [("attached", "attached"), ("suspended", "detached")]
    user = next(e for e in events if e["kind"] == "user" and e.get("message_id") == sent["message_id"])
    assert user["seq"] > states[-1]["seq"]  # answered only after the terminal closed
    assert [e for e in events if e["kind"] == "result" and e.get("message_id") == sent["message_id"]] == [result]


def test_attach_lets_the_running_turn_end_and_keeps_what_comes_meanwhile(
        supervisor: SupervisorProcess, terminal: subprocess.Popen[bytes]) -> None:
    gate = supervisor.base / "gate"
    supervisor.ctl("new", "alpha", check=True)
    with supervisor.client() as c:
        running = c.request("send", session="alpha", text=f"waitfile:{gate}")["message_id"]
        queued = c.request("send", session="alpha", text="queued before the attach")["message_id"]
    supervisor.wait_state("alpha", "busy")
    import threading
    replies: list[dict] = []
    attaching = threading.Thread(target=lambda: replies.append(attach(supervisor, "alpha", terminal.pid)))
    attaching.start()
    wait_for(lambda: supervisor.session("alpha").get("terminal"), what="the attach to claim the session")
    with supervisor.client() as c:
        later = c.request("send", session="alpha", text="sent while attaching")
    assert later["terminal"]["attached"] is False
    gate.touch()
    attaching.join(60)
    assert replies and replies[0]["attached"]
    events = supervisor.events("alpha")
    attached = next(e for e in events if e["kind"] == "state" and e["state"] == "attached")
    done = {e["message_id"]: e for e in events if e["kind"] == "result"}
    # the running turn and what its keeper held were answered; the later one waits
    assert done[running]["seq"] < attached["seq"] and done[queued]["seq"] < attached["seq"]
    assert later["message_id"] not in done
    terminal.kill()
    supervisor.wait_event("alpha", lambda e: e["kind"] == "result" and e.get("message_id") == later["message_id"])


def test_attach_now_stops_the_running_turn_and_keeps_the_queue(
        supervisor: SupervisorProcess, terminal: subprocess.Popen[bytes]) -> None:
    supervisor.ctl("new", "alpha", check=True)
    with supervisor.client() as c:
        running = c.request("send", session="alpha", text=f"waitfile:{supervisor.base / 'never'}")["message_id"]
    supervisor.wait_state("alpha", "busy")
    with supervisor.client() as c:
        # (queue: a message sent now would otherwise join the running turn — steering — and
        # end with it)
        queued = c.request("send", session="alpha", text="queued behind it", queue=True)["message_id"]
    assert attach(supervisor, "alpha", terminal.pid, now=True)["attached"]
    failed = supervisor.wait_event("alpha", lambda e: e["kind"] == "message_failed")
    assert failed["message_id"] == running and "opened in a terminal" in failed["reason"]
    assert supervisor.session("alpha")["queued"] == 1
    terminal.kill()
    result = supervisor.wait_event("alpha", lambda e: e["kind"] == "result" and e.get("message_id") == queued)
    assert "echo: queued behind it" in result["text"]


def test_an_attached_session_survives_a_supervisor_restart_and_comes_back_when_its_terminal_ends(
        supervisor: SupervisorProcess, terminal: subprocess.Popen[bytes]) -> None:
    supervisor.ctl("new", "alpha", check=True)
    attach(supervisor, "alpha", terminal.pid)
    supervisor.ctl("send", "alpha", "kept across the restart", check=True)
    supervisor.stop()
    supervisor.start()
    rec = supervisor.session("alpha")
    assert rec["state"] == "attached" and rec["terminal"]["pid"] == terminal.pid and rec["queued"] == 1
    terminal.kill()
    result = supervisor.wait_event("alpha", lambda e: e["kind"] == "result")
    assert "kept across the restart" in result["text"]


def test_attach_is_refused_for_a_process_that_is_not_running(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    with pytest.raises(RemoteError) as refused:
        attach(supervisor, "alpha", gone.pid)
    assert refused.value.code == "bad_request"
    assert supervisor.session("alpha")["state"] == "suspended"


def test_terminal_transcript_lines_reach_the_event_log_marked_as_from_the_terminal(
        supervisor: SupervisorProcess, terminal: subprocess.Popen[bytes]) -> None:
    supervisor.ctl("new", "alpha", check=True)
    supervisor.ctl("send", "alpha", "first", "--wait", check=True)
    rec = supervisor.session("alpha")
    attach(supervisor, "alpha", terminal.pid)
    transcript = (supervisor.home / ".claude" / "projects" / re.sub(r"[^A-Za-z0-9]", "-", rec["cwd"])
                  / f"{rec['session_id']}.jsonl")
    transcript.parent.mkdir(parents=True, exist_ok=True)
    with transcript.open("a") as f:
        for entry in ({"type": "user", "message": {"role": "user", "content": "typed at the desk"}},
                      {"type": "user", "isMeta": True, "message": {"role": "user", "content": "meta"}},
                      {"type": "assistant", "message": {"role": "assistant", "content": [
                          {"type": "text", "text": "answered at the desk"},
                          {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}}]}},
                      {"type": "user", "message": {"role": "user", "content": [
                          {"type": "tool_result", "tool_use_id": "t1", "content": "a.txt"}]}}):
            f.write(json.dumps(entry) + "\n")
        f.write('{"type": "assistant", "message"')  # a line still being written
    seen = supervisor.wait_event("alpha", lambda e: e["kind"] == "tool_result")
    desk = [e for e in supervisor.events("alpha") if e.get("from") == "terminal"]
    assert kinds(desk) == [("user", "typed at the desk"), ("assistant_text", "answered at the desk"),
                           ("tool_use", None), ("tool_result", None)]
    assert desk[-1] == seen and seen["content"] == "a.txt" and desk[2]["name"] == "Bash"
    assert all(e.get("message_id") is None for e in desk)
    # no turn of ours runs: nothing for the watcher to call waiting or stalled
    assert supervisor.session("alpha")["activity"] is None
    terminal.kill()
    supervisor.wait_state("alpha", "suspended")


def ctl_attach(sup: SupervisorProcess, name: str, *extra: str) -> subprocess.Popen[str]:
    """``claudectl attach`` with a pipe for its terminal (the fake TUI reads prompts there)."""
    return subprocess.Popen([sys.executable, "-m", "supervisord_claude.ctl", "--runtime-dir", str(sup.runtime_dir),
                             "attach", name, *extra], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=sup.env)


def read_until(stream: object, needle: str) -> str:
    seen = []
    for line in stream:  # type: ignore[attr-defined]
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} never came; got {seen!r}")


def test_claudectl_attach_runs_the_tui_on_the_conversation_and_returns_its_exit_status(
        supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", "--model", "model-x", "--mode", "accept-edits", check=True)
    supervisor.ctl("send", "alpha", "before", "--wait", check=True)
    rec = supervisor.session("alpha")
    tui = ctl_attach(supervisor, "alpha")
    assert tui.stdin is not None and tui.stdout is not None
    read_until(tui.stdout, "fake claude TUI on " + rec["session_id"])
    assert supervisor.session("alpha")["state"] == "attached" and supervisor.claude_pids() == []
    pid = supervisor.session("alpha")["terminal"]["pid"]
    row = supervisor.ctl("ls", check=True).stdout.splitlines()[1]
    assert row.split()[:3] == ["📟", "alpha", "attached"] and f"no tty pid {pid}" in row
    assert f"state:        attached just now, no tty pid {pid}" in supervisor.ctl("status", "alpha", check=True).stdout
    tui.stdin.write("typed at the desk\n")
    tui.stdin.flush()
    answer = read_until(tui.stdout, "● echo: typed at the desk")
    assert "history: 2 earlier messages" in answer  # the conversation the phone had
    sent = supervisor.ctl("send", "alpha", "from the phone")
    assert sent.returncode == 0 and "open in a terminal" in sent.stdout
    tui.stdin.write("/exit\n")
    tui.stdin.flush()
    assert tui.wait(60) == 0
    start = [json.loads(line) for line in supervisor.claude_log.read_text().splitlines()
             if '"start"' in line and "-p" not in json.loads(line)["argv"]]
    [argv] = [s["argv"] for s in start]
    assert argv[argv.index("--resume") + 1] == rec["session_id"] and argv[argv.index("--model") + 1] == "model-x"
    assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
    assert start[0]["cwd"] == rec["cwd"]
    result = supervisor.wait_event("alpha", lambda e: e["kind"] == "result" and "from the phone" in e["text"])
    assert "history: 4 earlier messages" in result["text"]  # the terminal's exchange in Claude's context
    desk = [(e["kind"], e.get("text")) for e in supervisor.events("alpha") if e.get("from") == "terminal"]
    assert desk == [("user", "typed at the desk"), ("assistant_text", answer.removeprefix("● ").strip())]
    tail = supervisor.ctl("tail", "alpha", check=True).stdout
    assert "> typed at the desk" in tail


def test_a_killed_claudectl_leaves_the_tui_holding_the_session_until_it_ends(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    tui = ctl_attach(supervisor, "alpha")
    assert tui.stdin is not None and tui.stdout is not None
    read_until(tui.stdout, "fake claude TUI on")
    terminal = supervisor.session("alpha")["terminal"]
    tui.kill()  # claudectl, -9: the TUI (its child) runs on in the terminal
    tui.wait()
    assert terminal["pid"] != tui.pid
    with supervisor.client() as c:
        sent = c.request("send", session="alpha", text="after the kill")
    assert sent["terminal"]["pid"] == terminal["pid"]
    rec = supervisor.session("alpha")
    assert rec["state"] == "attached" and rec["keeper_pid"] is None
    tui.stdin.close()  # the terminal closes: the TUI ends
    result = supervisor.wait_event("alpha", lambda e: e["kind"] == "result")
    assert result["message_id"] == sent["message_id"] and "echo: after the kill" in result["text"]


def test_claudectl_killed_before_the_session_is_free_gives_it_back(supervisor: SupervisorProcess) -> None:
    gate = supervisor.base / "gate"
    supervisor.ctl("new", "alpha", check=True)
    with supervisor.client() as c:
        running = c.request("send", session="alpha", text=f"waitfile:{gate}")["message_id"]
    supervisor.wait_state("alpha", "busy")
    tui = ctl_attach(supervisor, "alpha")
    claim = wait_for(lambda: supervisor.session("alpha").get("terminal"), what="the attach to claim alpha")
    assert claim["attached"] is False
    tui.kill()
    tui.wait()
    wait_for(lambda: supervisor.session("alpha").get("terminal") is None, what="the claim to end")
    gate.touch()
    supervisor.wait_event("alpha", lambda e: e["kind"] == "result" and e.get("message_id") == running)
    supervisor.ctl("send", "alpha", "still ours", "--wait", check=True)
    assert not [e for e in supervisor.events("alpha") if e["kind"] == "state" and e["state"] == "attached"]


def claude_in_terminal(sup: SupervisorProcess, cwd: Path, *prompts: str) -> str:
    """A conversation made in Claude Code's terminal by hand (the fake TUI), outside any
    session of ours; returns its id."""
    session_id = str(uuid.uuid4())
    subprocess.run([sup.claude_bin, "--session-id", session_id], input="".join(f"{p}\n" for p in prompts),
                   cwd=cwd, env=sup.env, check=True, capture_output=True, text=True, timeout=60)
    return session_id


def test_conversations_lists_what_claude_code_keeps_and_new_continues_one(
        supervisor: SupervisorProcess, terminal: subprocess.Popen[bytes]) -> None:
    project = supervisor.base / "project"
    project.mkdir()
    older = claude_in_terminal(supervisor, project, "the older one")
    newer = claude_in_terminal(supervisor, project, "remember the word pelican", "and more")
    listed = json.loads(supervisor.ctl("--json", "conversations", "--cwd", str(project), check=True).stdout)
    assert [c["session_id"] for c in listed] == [newer, older]  # newest first
    assert listed[0]["messages"] == 4 and listed[0]["first_prompt"] == "remember the word pelican"
    assert listed[0]["held_by"] is None and listed[0]["open_pid"] is None
    human = supervisor.ctl("conversations", "--cwd", str(project), check=True).stdout
    assert newer in human and "4 msgs" in human and "remember the word pelican" in human
    # open in a running claude (its sessions/<pid>.json, the pid alive): refused unless forced
    sessions = supervisor.home / ".claude" / "sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    (sessions / f"{terminal.pid}.json").write_text(json.dumps({"pid": terminal.pid, "sessionId": newer,
                                                                "cwd": str(project), "kind": "interactive"}))
    assert f"open in claude pid {terminal.pid}" in supervisor.ctl("conversations", "--cwd", str(project)).stdout
    refused = supervisor.ctl("new", "desk", "--cwd", str(project), "--conversation", "latest")
    assert refused.returncode == 1 and f"open in a running claude (pid {terminal.pid})" in refused.stderr
    terminal.kill()
    terminal.wait()
    made = supervisor.ctl("new", "desk", "--cwd", str(project), "--conversation", "latest", check=True)
    assert newer in made.stdout
    rec = supervisor.session("desk")
    assert rec["session_id"] == newer and rec["started"] is True
    reply = supervisor.ctl("send", "desk", "what was the word?", "--wait", check=True).stdout
    assert "history: 4 earlier messages" in reply  # continued, with its history
    assert supervisor.ctl("new", "again", "--cwd", str(project), "--conversation", newer).returncode == 1
    listed = json.loads(supervisor.ctl("--json", "conversations", "--cwd", str(project), check=True).stdout)
    assert {c["session_id"]: c["held_by"] for c in listed} == {newer: "desk", older: None}
    unknown = supervisor.ctl("new", "ghost", "--cwd", str(project), "--conversation", str(uuid.uuid4()))
    assert unknown.returncode == 1 and "not_found" in unknown.stderr


def test_a_new_session_attached_first_starts_its_conversation_in_the_terminal(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    rec = supervisor.session("alpha")
    tui = ctl_attach(supervisor, "alpha")
    assert tui.stdin is not None and tui.stdout is not None
    read_until(tui.stdout, "fake claude TUI on " + rec["session_id"])
    tui.stdin.write("hello from the desk\n/exit\n")
    tui.stdin.flush()
    assert tui.wait(60) == 0
    [start] = [json.loads(line) for line in supervisor.claude_log.read_text().splitlines() if '"start"' in line]
    assert start["argv"][start["argv"].index("--session-id") + 1] == rec["session_id"]  # a new conversation
    supervisor.wait_state("alpha", "suspended")
    assert supervisor.session("alpha")["started"] is True  # its next Claude resumes it
    reply = supervisor.ctl("send", "alpha", "and from the phone", "--wait", check=True).stdout
    assert "history: 2 earlier messages" in reply


def test_attach_is_refused_while_a_claude_of_the_users_own_has_the_conversation_open(
        supervisor: SupervisorProcess, terminal: subprocess.Popen[bytes]) -> None:
    supervisor.ctl("new", "alpha", check=True)
    session_id = supervisor.session("alpha")["session_id"]
    sessions = supervisor.home / ".claude" / "sessions"
    sessions.mkdir(parents=True, exist_ok=True)
    (sessions / f"{terminal.pid}.json").write_text(json.dumps({"pid": terminal.pid, "sessionId": session_id}))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        with pytest.raises(RemoteError) as refused:
            attach(supervisor, "alpha", other.pid)
    finally:
        other.kill()
        other.wait()
    assert refused.value.code == "busy" and f"open in a running claude (pid {terminal.pid})" in str(refused.value)
    assert supervisor.session("alpha")["state"] == "suspended" and supervisor.session("alpha")["terminal"] is None
