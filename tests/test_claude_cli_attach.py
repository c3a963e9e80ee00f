"""Conformance tier (issue #25): the real Claude Code CLI's interactive terminal UI,
driven through a real tmux, on a session's conversation (``claudectl attach``), and a
conversation made with plain ``claude -p`` continued by a session. Offline, against
``fake_anthropic.py``. Run alone: ./scripts/test -m claude_cli"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import SYSTEM, SupervisorProcess, wait_for
from .fake_anthropic import FakeAnthropic
from .test_claude_cli import api, ask, real  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.claude_cli, pytest.mark.timeout(180)]


def trust(sup: SupervisorProcess, *directories: str) -> None:
    """What the TUI needs to start offline: onboarding done, the API key approved, each
    directory trusted (else it shows those screens first)."""
    (sup.home / ".claude.json").write_text(json.dumps({
        "hasCompletedOnboarding": True,
        "customApiKeyResponses": {"approved": ["sk-test-dummy"], "rejected": []},
        "projects": {d: {"hasTrustDialogAccepted": True} for d in directories}}))


class Tmux:
    """A tmux server of the test's own (its own socket), one window running a command."""

    def __init__(self, base: Path, env: dict[str, str]) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("tmux is not installed (./scripts/test installs it)")
        self.socket = str(base / "tmux.sock")
        self.env = env

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-S", self.socket, "-f", "/dev/null", *args], capture_output=True,
                              text=True, env=self.env, timeout=30)

    def start(self, *command: str) -> None:
        made = self.tmux("new-session", "-d", "-s", "desk", "-x", "160", "-y", "45", *command)
        assert made.returncode == 0, made.stderr

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "desk").stdout

    def wait_screen(self, text: str, timeout: float = 60) -> str:
        found: str = wait_for(lambda: self.screen() if text in self.screen() else None, timeout,
                              what=f"{text!r} on the terminal", seen=self.screen)
        return found

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "desk", "-l", text)
        self.tmux("send-keys", "-t", "desk", "Enter")

    def running(self) -> bool:
        return self.tmux("has-session", "-t", "desk").returncode == 0

    def pane_pid(self) -> int:
        return int(self.tmux("display-message", "-p", "-t", "desk", "#{pane_pid}").stdout.strip())

    def kill(self) -> None:
        self.tmux("kill-server")


@pytest.fixture
def desk(tmp_base: Path) -> Iterator[Callable[[SupervisorProcess], Tmux]]:
    made: list[Tmux] = []

    def make(sup: SupervisorProcess) -> Tmux:
        made.append(Tmux(tmp_base, sup.env))
        return made[-1]
    yield make
    for tmux in made:
        tmux.kill()


def claudectl(sup: SupervisorProcess, *args: str) -> list[str]:
    return [sys.executable, "-m", "supervisord_claude.ctl", "--runtime-dir", str(sup.runtime_dir), *args]


def exit_tui(tmux: Tmux) -> None:
    """``/exit``: typing it opens a completion list, a second Enter exits."""
    tmux.type("/exit")

    def gone() -> bool:
        if not tmux.running():
            return True
        tmux.tmux("send-keys", "-t", "desk", "Enter")
        return False
    wait_for(gone, 30, interval=1.0, what="the TUI to exit", seen=tmux.screen)


def test_attach_talk_in_the_tui_and_the_phone_sees_it_then_exit_answers_what_waited(
        real, desk, api: FakeAnthropic) -> None:  # noqa: F811
    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    rec = sup.session("alpha")
    trust(sup, rec["cwd"])  # (before any Claude runs: each one writes the file back as it read it)
    ask(sup, "alpha", "remember the word pelican")
    status_file = sup.base / "attach-status"
    tmux = desk(sup)
    tmux.start("sh", "-c", " ".join(claudectl(sup, "attach", "alpha")) + f"; echo $? > {status_file}")
    tmux.wait_screen("remember the word pelican")  # the session's history, in the TUI
    assert sup.session("alpha")["state"] == "attached" and sup.claude_pids() == []
    tmux.type("what was the word")
    screen = tmux.wait_screen("● echo: what was the word")
    assert "turns=2" in screen
    # the phone sees the terminal: the same exchange in the session's event log
    answer = sup.wait_event("alpha", lambda e: e.get("from") == "terminal" and e["kind"] == "assistant_text")
    assert answer["text"].startswith("echo: what was the word | turns=2")
    tail = subprocess.run(claudectl(sup, "tail", "alpha"), capture_output=True, text=True, env=sup.env,
                          timeout=60).stdout
    assert "📟 > what was the word" in tail and "echo: what was the word | turns=2" in tail
    with sup.client() as c:  # a message from the phone meanwhile: kept
        sent = c.request("send", session="alpha", text="and from the phone")
    assert sent["terminal"]["attached"] and sup.session("alpha")["queued"] == 1
    exit_tui(tmux)
    wait_for(status_file.exists, 30, what="claudectl to exit")
    desk_said = [e["text"] for e in sup.events("alpha") if e.get("from") == "terminal" and e["kind"] == "user"]
    assert desk_said == ["what was the word"]  # (not the /exit command, nor Claude Code's own notes)
    assert status_file.read_text().strip() == "0"  # the TUI's exit status
    result = sup.wait_event("alpha", lambda e: e["kind"] == "result" and e.get("message_id") == sent["message_id"])
    assert "turns=3" in result["text"]
    history = json.dumps(api.turn_requests()[-1]["messages"])
    assert "what was the word" in history and "remember the word pelican" in history
    assert result["session_id"] == rec["session_id"]


def test_claudectl_killed_while_attached_leaves_the_tui_the_session_until_its_terminal_closes(
        real, desk, api: FakeAnthropic) -> None:  # noqa: F811
    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    trust(sup, sup.session("alpha")["cwd"])
    ask(sup, "alpha", "first words")
    tmux = desk(sup)
    tmux.start("sh", "-c", " ".join(claudectl(sup, "attach", "alpha")) + "; sleep 600")  # the terminal stays
    tmux.wait_screen("first words")
    tui = sup.session("alpha")["terminal"]["pid"]
    ctl = parent_of(tui)
    assert "attach" in SYSTEM.title(ctl)
    os.kill(ctl, signal.SIGKILL)
    wait_for(lambda: parent_of(tui) != ctl, 30, what="claudectl to die")
    # the TUI runs on in the terminal and still holds the conversation: no second Claude
    assert SYSTEM.alive(tui)
    with sup.client() as c:
        sent = c.request("send", session="alpha", text="sent after the kill")
    rec = sup.session("alpha")
    assert rec["state"] == "attached" and rec["keeper_pid"] is None and sup.claude_pids() == []
    tmux.type("still here?")
    tmux.wait_screen("● echo: still here?")
    tmux.kill()  # the terminal window closes (SIGHUP): the TUI ends, the session comes back
    result = sup.wait_event("alpha", lambda e: e["kind"] == "result" and e.get("message_id") == sent["message_id"])
    assert "turns=3" in result["text"] and not SYSTEM.alive(tui)
    assert "still here?" in json.dumps(api.turn_requests()[-1]["messages"])
    assert "turns=4" in ask(sup, "alpha", "usable again")


def parent_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def test_a_conversation_made_with_plain_claude_p_is_continued_by_a_new_session(
        real, api: FakeAnthropic, tmp_base: Path) -> None:  # noqa: F811
    sup = real().start()
    project = tmp_base / "project"
    project.mkdir()
    made = subprocess.run([sup.claude_bin, "-p", "remember the word walrus"], cwd=project, env=sup.env,
                          capture_output=True, text=True, timeout=90)
    assert made.returncode == 0, made.stderr
    listed = json.loads(subprocess.run(claudectl(sup, "--json", "conversations", "--cwd", str(project)),
                                       capture_output=True, text=True, env=sup.env, timeout=60).stdout)
    [conversation] = listed
    assert conversation["first_prompt"] == "remember the word walrus" and conversation["messages"] == 2
    sup.ctl("new", "desk", "--cwd", str(project), "--conversation", conversation["session_id"], check=True)
    reply = ask(sup, "desk", "what was the word?")
    assert "turns=2" in reply
    assert "remember the word walrus" in json.dumps(api.turn_requests()[-1]["messages"])
    assert sup.session("desk")["session_id"] == conversation["session_id"]


def test_ctrl_d_in_the_tui_hands_the_session_back(real, desk, api: FakeAnthropic) -> None:  # noqa: F811
    sup = real().start()
    sup.ctl("new", "alpha", check=True)
    trust(sup, sup.session("alpha")["cwd"])
    ask(sup, "alpha", "first words")
    tmux = desk(sup)
    tmux.start(*claudectl(sup, "attach", "alpha"))
    tmux.wait_screen("first words")
    tui = sup.session("alpha")["terminal"]["pid"]

    def ended() -> bool:
        if not SYSTEM.alive(tui):
            return True
        tmux.tmux("send-keys", "-t", "desk", "C-d")  # (once shows "press again to exit")
        return False
    wait_for(ended, 30, interval=1.0, what="Ctrl-D to end the TUI", seen=tmux.screen)
    sup.wait_state("alpha", "suspended", timeout=30)
    assert "turns=2" in ask(sup, "alpha", "back on the phone")
