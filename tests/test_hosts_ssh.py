"""Sessions on another machine through OpenSSH, against a real sshd (``tests/sshd.py``) in
front of a second supervisor with its own runtime and state dirs (the "remote" host),
while this machine's supervisor (``local``) goes on beside it."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from protocol import AsyncClient, Client, ConnectionFailed, LinkState, VersionMismatch, configured_hosts

from .conftest import SupervisorProcess, wait_for
from .sshd import Sshd, _descendants, children_named, skip_without_sshd


@pytest.fixture
def sshd(tmp_base: Path) -> Iterator[Sshd]:
    skip_without_sshd()
    server = Sshd(tmp_base / "ssh").start()
    yield server
    left = server.stop_masters()
    server.stop()
    print(f"--- sshd log\n{server.log()[-3000:]}")  # shown on failure
    assert not left, f"ssh masters outlived the test after ssh -O exit: {left}"


class Hosts:
    """The two supervisors, the client's config file naming the remote one ``gpu``, and
    claudectl run as a user would (PATH with the test's ssh)."""

    def __init__(self, sshd: Sshd, local: SupervisorProcess, remote: SupervisorProcess, base: Path) -> None:
        self.sshd, self.local, self.remote = sshd, local, remote
        command = f"{shlex.quote(sys.executable)} -m supervisord_claude"
        self.config = base / "client.toml"
        self.config.write_text(f"""
[hosts.gpu]
ssh = "remote"
command = "{command}"
runtime_dir = "{remote.runtime_dir}"
[hosts.wrongkey]
ssh = "wrongkey"
command = "{command}"
runtime_dir = "{remote.runtime_dir}"
[hosts.unknownhost]
ssh = "unknownhost"
runtime_dir = "{remote.runtime_dir}"
[hosts.nocommand]
ssh = "remote"
command = "no-such-supervisord-claude"
[hosts.nosupervisor]
ssh = "remote"
command = "{command}"
runtime_dir = "{base / 'nothing-runs-here'}"
""")
        self.env = dict(local.env, **sshd.env, SUPERVISORD_CLAUDE_CONFIG=str(self.config))

    def ctl_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "supervisord_claude.ctl", "--runtime-dir", str(self.local.runtime_dir), *args]

    def ctl(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.ctl_argv(*args), capture_output=True, text=True, env=env or self.env, timeout=120)

    def host(self, name: str) -> Any:
        return configured_hosts(str(self.config))[name]


@pytest.fixture
def hosts(sshd: Sshd, make_supervisor: Callable[..., SupervisorProcess], tmp_base: Path,
          monkeypatch: pytest.MonkeyPatch) -> Hosts:
    local = make_supervisor().start()
    remote = make_supervisor().start()
    for name, value in sshd.env.items():  # (the in-process clients' ssh and shared connections)
        monkeypatch.setenv(name, value)
    return Hosts(sshd, local, remote, tmp_base)


def test_a_session_on_the_remote_host_driven_from_claudectl(hosts: Hosts, tmp_base: Path) -> None:
    workdir = tmp_base / "remote-work"
    workdir.mkdir()
    made = hosts.ctl("--host", "gpu", "new", "work", "--cwd", str(workdir))
    assert made.returncode == 0, made.stderr
    answer = hosts.ctl("--host", "gpu", "send", "work", "hello over ssh", "--wait")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("echo: hello over ssh (history: 0 earlier messages")
    # it is the remote supervisor's session, run in the remote directory; local has none
    assert hosts.remote.session("work")["cwd"] == str(workdir)
    assert hosts.remote.wait_received("hello over ssh")
    assert [s["name"] for s in hosts.local.request("list")["sessions"]] == []
    # SUPERVISORD_CLAUDE_HOST picks the host as --host does
    listed = hosts.ctl("ls", env=dict(hosts.env, SUPERVISORD_CLAUDE_HOST="gpu"))
    assert listed.returncode == 0 and "work" in listed.stdout, listed.stderr
    # a relative directory means nothing on the other machine: refused, nothing created
    relative = hosts.ctl("--host", "gpu", "new", "other", "--cwd", "src")
    assert relative.returncode == 2 and "give an absolute path" in relative.stderr
    assert "other" not in [s["name"] for s in hosts.remote.request("list")["sessions"]]


def test_claudectl_commands_on_the_remote_host_share_one_ssh_connection(hosts: Hosts, tmp_path: Path) -> None:
    """Each command is one ssh session on the remote host (``send --wait`` and ``tail``
    too, with a file to attach); the handshake is paid once: N commands, one connection,
    held by one ssh master in a private directory, there for the next command."""
    hosts.remote.request("create", session="work")
    data = tmp_path / "notes.txt"
    data.write_text("some notes")
    logins, sessions = _ssh_logins(hosts), _ssh_sessions(hosts)
    commands = (("send", "work", "hello", "--wait"), ("send", "work", "read it", "--attach", str(data), "--wait"),
                ("tail", "work"), ("tail", "work", "-n", "1"), ("send", "work", "queued"), ("ls",))
    for number, command in enumerate(commands, 1):
        run = hosts.ctl("--host", "gpu", *command)
        assert run.returncode == 0, (command, run.stderr)
        assert _ssh_sessions(hosts) == sessions + number, (command, hosts.sshd.log()[-3000:])
    assert _ssh_logins(hosts) == logins + 1, hosts.sshd.log()[-3000:]
    assert hosts.remote.wait_received("read it")
    # one master, its socket 0600 in a 0700 directory of this user: no one else rides it
    [master] = hosts.sshd.masters()
    [control] = hosts.sshd.control_sockets()
    assert stat.S_IMODE(control.stat().st_mode) == 0o600 and control.stat().st_uid == os.getuid()
    assert stat.S_IMODE(control.parent.stat().st_mode) == 0o700
    # what cannot be done is still said plainly, once
    missing = hosts.ctl("--host", "gpu", "send", "nobody", "hi", "--wait")
    assert missing.returncode == 1 and "no session named 'nobody'" in missing.stderr
    missing = hosts.ctl("--host", "gpu", "--json", "tail", "nobody")
    assert missing.returncode == 1 and json.loads(missing.stderr)["error"]["code"] == "not_found"
    # another alias of the same machine (another key) is another connection, not a ride on this one
    refused = hosts.ctl("--host", "wrongkey", "--json", "send", "work", "hi", "--wait")
    assert refused.returncode == 1 and json.loads(refused.stderr)["error"]["code"] == "connection"
    assert "the key was refused" in json.loads(refused.stderr)["error"]["message"]
    assert _ssh_logins(hosts) == logins + 1 and hosts.sshd.masters() == [master]


def test_without_multiplex_each_command_is_its_own_connection(hosts: Hosts) -> None:
    hosts.config.write_text(hosts.config.read_text().replace('[hosts.gpu]\n', '[hosts.gpu]\nmultiplex = false\n'))
    hosts.remote.request("create", session="work")
    logins = _ssh_logins(hosts)
    for _ in range(3):
        run = hosts.ctl("--host", "gpu", "send", "work", "hello", "--wait")
        assert run.returncode == 0, run.stderr
    assert _ssh_logins(hosts) == logins + 3
    assert hosts.sshd.masters() == [] and hosts.sshd.control_sockets() == []


def test_a_dead_master_is_replaced_by_the_next_command(hosts: Hosts) -> None:
    """The master killed (its socket left behind, stale): the next command makes a new
    connection and master instead of failing; ``--host gpu shutdown`` ends the master."""
    hosts.remote.request("create", session="work")
    assert hosts.ctl("--host", "gpu", "ls").returncode == 0
    [master] = hosts.sshd.masters()
    os.kill(master, signal.SIGKILL)
    wait_for(lambda: master not in hosts.sshd.masters(), what="the master to die")
    assert len(hosts.sshd.control_sockets()) == 1  # (left behind by the killed master)
    logins = _ssh_logins(hosts)
    run = hosts.ctl("--host", "gpu", "send", "work", "after the master died", "--wait")
    assert run.returncode == 0 and "echo: after the master died" in run.stdout, run.stderr
    assert _ssh_logins(hosts) == logins + 1
    [new_master] = hosts.sshd.masters()
    assert new_master != master
    assert hosts.ctl("--host", "gpu", "ls").returncode == 0 and _ssh_logins(hosts) == logins + 1
    # the remote supervisor shut down: nothing is left there to talk to, the master goes at once
    assert hosts.ctl("--host", "gpu", "shutdown").returncode == 0
    wait_for(lambda: hosts.sshd.masters() == [], what="the master to end after shutdown")
    assert hosts.remote.proc is not None and hosts.remote.proc.wait(60) == 0


def test_ls_all_hosts_has_a_host_column_and_one_line_per_unreachable_host(hosts: Hosts) -> None:
    hosts.local.request("create", session="here")
    hosts.remote.request("create", session="there")
    listed = hosts.ctl("ls", "--all-hosts")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["HOST", "NAME", "STATE"]
    rows = {tuple(line.split()[1:3]) for line in lines[1:] if line.startswith(("🟢", "⚪"))}
    assert rows == {("local", "here"), ("gpu", "there")}
    down = {line.split(":")[0]: line for line in lines if ": unreachable: " in line}
    assert set(down) == {"wrongkey", "unknownhost", "nocommand", "nosupervisor"}
    assert "Permission denied (publickey)" in down["wrongkey"]


def test_a_refused_key_is_a_clear_error(hosts: Hosts) -> None:
    run = hosts.ctl("--host", "wrongkey", "ls")
    assert run.returncode == 1
    assert "host wrongkey (wrongkey) is unreachable" in run.stderr
    assert "Permission denied (publickey)" in run.stderr and "the key was refused" in run.stderr


def test_an_unknown_host_key_is_a_clear_error(hosts: Hosts) -> None:
    run = hosts.ctl("--host", "unknownhost", "ls")
    assert run.returncode == 1
    assert "Host key verification failed" in run.stderr
    assert "not in known_hosts" in run.stderr and "ssh unknownhost" in run.stderr


def test_a_remote_without_the_command_or_a_supervisor_is_a_clear_error(hosts: Hosts) -> None:
    run = hosts.ctl("--host", "nocommand", "ls")
    assert run.returncode == 1
    assert "'no-such-supervisord-claude' was not found there" in run.stderr
    assert "hosts.nocommand.command" in run.stderr
    run = hosts.ctl("--host", "nosupervisor", "ls")
    assert run.returncode == 1
    assert "dial-stdio" in run.stderr and "no supervisor is running" in run.stderr


def test_ssh_killed_mid_answer_the_answer_arrives_once(hosts: Hosts, tmp_base: Path) -> None:
    gate = tmp_base / "gate"
    hosts.remote.request("create", session="work")
    hosts.local.request("create", session="mine")
    waiting = subprocess.Popen(hosts.ctl_argv("--host", "gpu", "send", "work", f"waitfile:{gate} long job", "--wait",
                                              "--stream"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=hosts.env)
    try:
        hosts.remote.wait_received("long job")
        first_ssh = wait_for(lambda: children_named(waiting.pid, "ssh"), what="claudectl's ssh")
        os.kill(first_ssh[0], signal.SIGKILL)
        gate.touch()  # the answer is written while the link is down
        # the local host is unaffected: a message there is answered meanwhile
        here = hosts.ctl("send", "mine", "still here", "--wait")
        assert here.returncode == 0 and "echo: still here" in here.stdout, here.stderr
        out, err = waiting.communicate(timeout=90)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 0, err
    assert out.count(f"echo: waitfile:{gate} long job") == 1, out
    assert children_named(os.getpid(), "ssh") == []  # (claudectl took its ssh with it)
    answers = [e for e in hosts.remote.events("work") if e["kind"] == "result"]
    assert len(answers) == 1


async def test_a_message_sent_while_sshd_is_stopped_is_delivered_once_after_it_starts(hosts: Hosts) -> None:
    hosts.remote.request("create", session="work")
    client = await AsyncClient(host=hosts.host("gpu")).connect()
    try:
        sub = await client.subscribe("work", after=0)
        hosts.sshd.stop()
        await _wait_async(lambda: client.reachable is False, "the client to see the host go")
        with pytest.raises(ConnectionFailed, match=r"host gpu .*'send' was not sent"):
            await client.request("send", session="work", text="sent while down", idempotency_key="k1")
        # the local host is unaffected meanwhile
        assert hosts.ctl("new", "mine").returncode == 0
        hosts.sshd.start()
        # the sender retries with the same key (as the bot does) until the host takes it
        while True:
            try:
                sent = await client.request("send", session="work", text="sent while down", idempotency_key="k1")
                break
            except ConnectionFailed:
                await asyncio.sleep(0.2)
        while True:
            event = await sub.next(timeout=60)
            assert event is not None, "no answer after the host came back"
            if event["kind"] == "result":
                break
        assert event["message_id"] == sent["message_id"]
        assert client.link is not None and client.link.state is LinkState.UP
    finally:
        await client.close()
    received = [r for r in hosts.remote.claude_received() if "sent while down" in r["text"]]
    assert len(received) == 1


async def _wait_async(predicate: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def test_another_protocol_version_is_named_with_what_to_upgrade(hosts: Hosts,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import protocol._hostproblems

    # this client as a newer release would be: it speaks protocol 2, the remote 1
    monkeypatch.setattr(protocol._hostproblems, "PROTOCOL_VERSION", 2)
    with pytest.raises(VersionMismatch) as caught:
        Client(host=hosts.host("gpu"))
    message = str(caught.value)
    assert "host gpu speaks protocol version 1" in message and "this client speaks protocol version 2" in message
    assert "upgrade supervisord-claude on gpu" in message


def test_claudectl_attach_on_the_remote_host_runs_its_tui_there_in_this_terminal(hosts: Hosts) -> None:
    from .test_attach import read_until

    hosts.remote.request("create", session="work")
    assert hosts.ctl("--host", "gpu", "send", "work", "before", "--wait").returncode == 0
    session_id = hosts.remote.session("work")["session_id"]
    connections_before, sessions_before = _ssh_logins(hosts), _ssh_sessions(hosts)
    tui = subprocess.Popen(hosts.ctl_argv("--host", "gpu", "attach", "work"), stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=hosts.env)
    assert tui.stdin is not None and tui.stdout is not None
    read_until(tui.stdout, f"fake claude TUI on {session_id}")
    # gpu's session is its terminal's: the TUI runs on gpu (under its sshd, not under this
    # claudectl), on gpu's conversation
    terminal = hosts.remote.session("work")
    assert terminal["state"] == "attached" and terminal["keeper_pid"] is None
    assert hosts.sshd.proc is not None
    assert terminal["terminal"]["pid"] in _descendants(hosts.sshd.proc.pid)
    assert terminal["terminal"]["pid"] not in _descendants(tui.pid)
    tui.stdin.write("typed at the desk\n")
    tui.stdin.flush()
    assert "history: 2 earlier messages" in read_until(tui.stdout, "● echo: typed at the desk")
    tui.stdin.write("/exit\n")
    tui.stdin.flush()
    assert tui.wait(60) == 0
    # one ssh session: the terminal's (no link to gpu's supervisor beside it), on the
    # connection the send before it made
    assert _ssh_sessions(hosts) == sessions_before + 1, hosts.sshd.log()[-3000:]
    assert _ssh_logins(hosts) == connections_before, hosts.sshd.log()[-3000:]
    hosts.remote.wait_state("work", "suspended")
    [start] = [s for s in hosts.remote.claude_starts() if "-p" not in s["argv"]]
    assert start["cwd"] == terminal["cwd"]
    assert hosts.local.request("list")["sessions"] == []
    # a session gpu does not have is said plainly, before any terminal is taken
    missing = hosts.ctl("--host", "gpu", "attach", "nobody")
    assert missing.returncode == 1 and "no session named 'nobody'" in missing.stderr
    # ssh that fails is explained as for any other command (what to do about the key)
    refused = hosts.ctl("--host", "wrongkey", "attach", "work")
    assert refused.returncode != 0 and "Permission denied (publickey)" in refused.stderr
    assert "host wrongkey (wrongkey) is unreachable" in refused.stderr and "the key was refused" in refused.stderr


def _ssh_logins(hosts: Hosts) -> int:
    """The ssh connections sshd let in so far (its log says each once)."""
    return hosts.sshd.log().count("Accepted publickey for ")


def _ssh_sessions(hosts: Hosts) -> int:
    """The remote commands sshd started so far, over any connection (one per session)."""
    return hosts.sshd.log().count("Starting session: ")


def test_claudectl_send_attach_puts_a_file_of_this_machine_into_the_remote_sessions_uploads(
        hosts: Hosts, tmp_path: Path) -> None:
    hosts.remote.request("create", session="work")
    data = tmp_path / "report.csv"
    content = os.urandom(700 * 1024)  # (more than one piece)
    data.write_bytes(content)
    answer = hosts.ctl("--host", "gpu", "send", "work", "read it", "--attach", str(data), "--wait")
    assert answer.returncode == 0, answer.stderr
    told = Path(answer.stdout.split("saved at ")[1].split("]")[0])
    # Claude on gpu got gpu's copy, taken at send from the session's uploads there
    assert told.parent.parent == hosts.remote.state_dir / "attachments" / "work" and told.read_bytes() == content
    [uploaded] = (Path(hosts.remote.session("work")["cwd"]) / "uploads").iterdir()
    assert uploaded.name.endswith("-report.csv") and uploaded.read_bytes() == content
    # a directory is no attachment: refused here, nothing sent
    refused = hosts.ctl("--host", "gpu", "send", "work", "x", "--attach", str(tmp_path))
    assert refused.returncode == 2 and "not an ordinary file" in refused.stderr
    assert len(hosts.remote.claude_received()) == 1
