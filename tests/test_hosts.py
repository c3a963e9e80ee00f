"""Hosts in the config file: ``[hosts.NAME]`` tables as the supervisor, claudectl and the
bot read them, and the ssh command line each becomes (an argv: no local shell)."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from protocol import LOCAL, ConfigFileError, Host, configured_hosts, control_dir, host_named

from .conftest import SupervisorProcess


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_every_form_of_destination_and_local_always_there(tmp_path: Path) -> None:
    path = write(tmp_path, """
[hosts.gpu]
ssh = "ssh://me@gpu.example:2222"
runtime_dir = "/run/user/1000/supervisord-claude"
[hosts.box]
ssh = "box"
command = "~/.local/bin/supervisord-claude"
[hosts.vm]
ssh = "admin@10.0.0.7"
""")
    hosts = configured_hosts(str(path))
    assert list(hosts) == [LOCAL, "gpu", "box", "vm"]
    assert hosts[LOCAL].is_local
    gpu = hosts["gpu"]
    assert (gpu.destination, gpu.port) == ("me@gpu.example", 2222)
    argv = gpu.ssh_argv()
    assert argv[0] == "ssh" and "BatchMode=yes" in argv and any(a.startswith("ServerAliveInterval=") for a in argv)
    # the destination comes after "--": it can never be read as an option
    assert argv[argv.index("--") + 1] == "me@gpu.example"
    assert argv[argv.index("-p") + 1] == "2222"
    assert argv[-1] == "supervisord-claude dial-stdio --runtime-dir /run/user/1000/supervisord-claude"
    assert hosts["box"].ssh_argv()[-2:] == ["box", "~/.local/bin/supervisord-claude dial-stdio"]
    assert hosts["vm"].port is None and "-p" not in hosts["vm"].ssh_argv()


def test_a_remote_runtime_dir_is_quoted_for_the_remote_shell() -> None:
    host = Host("x", "x", runtime_dir="/tmp/a dir; rm -rf ~")
    assert host.remote_command() == "supervisord-claude dial-stdio --runtime-dir '/tmp/a dir; rm -rf ~'"


@pytest.mark.parametrize(("text", "error"), [
    ('[hosts.x]\nssh = "-oProxyCommand=touch /tmp/pwned"\n', "starts with '-'"),
    ('[hosts.x]\nssh = "ssh://-oProxyCommand=x"\n', "'-'"),
    ('[hosts.x]\nssh = "me@gpu ls"\n', "no spaces"),
    ('[hosts.x]\nssh = ""\n', "not an ssh destination"),
    ('[hosts.x]\nssh = "ssh://me@gpu:99999"\n', "no valid port"),
    ('[hosts.x]\nssh = "http://gpu"\n', "only ssh://"),
    ('[hosts.x]\nssh = "ssh://gpu/some/path"\n', "ssh://[user@]host[:port]"),
    ('[hosts.x]\nuser = "me"\nssh = "gpu"\n', "hosts.x.user: unknown key"),
    ('[hosts.x]\ncommand = "supervisord-claude"\n', "hosts.x.ssh: missing"),
    ('[hosts.x]\nssh = 5\n', "hosts.x.ssh: expected a string"),
    ('[hosts.local]\nssh = "gpu"\n', "'local' is this machine"),
    ('[hosts."a@b"]\nssh = "gpu"\n', "a host name is"),
    ('hosts = "gpu"\n', "expected tables"),
    ('[hosts.x]\nssh = "gpu"\nmultiplex = "no"\n', "hosts.x.multiplex: expected true or false"),
    ('[hosts.x]\nssh = "gpu"\ncontrol_persist = 0\n', "hosts.x.control_persist: expected the seconds"),
    ('[hosts.x]\nssh = "gpu"\ncontrol_persist = "60s"\n', "hosts.x.control_persist: expected the seconds"),
    ('[hosts.x]\nssh = "gpu"\ncontrol_persist = true\n', "hosts.x.control_persist: expected the seconds"),
])
def test_a_bad_host_table_is_an_error_naming_the_key(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigFileError, match=error.replace("[", r"\[").replace("]", r"\]")):
        configured_hosts(str(write(tmp_path, text)))


def test_the_commands_of_a_host_share_one_ssh_connection_unless_multiplex_is_false(
        tmp_base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ssh's ControlMaster, its socket in a 0700 directory of the user's runtime dir, kept
    ``control_persist`` seconds after the last command; ``multiplex = false`` leaves ssh
    (and the user's own ~/.ssh/config) alone."""
    tmp_path = tmp_base  # (short: a socket path has about 100 bytes)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    hosts = configured_hosts(str(write(tmp_path, """
[hosts.gpu]
ssh = "ssh://me@gpu.example:2222"
control_persist = 300
[hosts.gpu2]
ssh = "me@gpu.example"
[hosts.plain]
ssh = "me@gpu.example"
multiplex = false
""")))
    control = control_dir()
    assert control == tmp_path / "scl-mux" and stat.S_IMODE(control.stat().st_mode) == 0o700
    argv = hosts["gpu"].ssh_argv(control=control)
    options = [argv[i + 1] for i, word in enumerate(argv) if word == "-o"]
    assert "ControlMaster=auto" in options and "ControlPersist=300" in options
    [path] = [o.removeprefix("ControlPath=") for o in options if o.startswith("ControlPath=")]
    assert path.startswith(f"{control}/") and path.endswith("-%C")
    # the options come before the destination (after "--"), where ssh reads options
    assert argv.index("ControlMaster=auto") < argv.index("--")
    # another way to write the destination is another connection (another key or user may
    # come with it): one ssh config alias never rides another's master
    assert hosts["gpu2"].control_path(control) != path
    assert "ControlPersist=60" in hosts["gpu2"].ssh_argv(control=control)
    assert not any(word.startswith("Control") for word in hosts["plain"].ssh_argv(control=control))
    assert hosts["plain"].ssh_control_argv("exit", control) is None
    assert hosts["gpu"].ssh_control_argv("exit", control)[-4:] == ["-O", "exit", "--", "me@gpu.example"]
    # a directory too long for a socket path (ssh would refuse it), or one ssh would split
    # at a space: no sharing, each command its own connection, as without it
    assert Host("x", "x").control_path(tmp_path / ("d" * 60)) is None
    assert Host("x", "x").control_path(Path("/tmp/a b")) is None
    assert Host("x", "x").control_path(Path("/tmp/100%")).startswith("/tmp/100%%/")  # (no ssh token)
    assert "multiplex off" in hosts["plain"].describe() and "control_persist 300s" in hosts["gpu"].describe()


def test_a_control_dir_open_to_others_or_not_ours_is_not_used(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    (tmp_path / "scl-mux").mkdir(mode=0o755)
    (tmp_path / "scl-mux").chmod(0o755)
    assert control_dir() is None
    (tmp_path / "scl-mux").rmdir()
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "scl-mux").symlink_to(tmp_path / "elsewhere")
    assert control_dir() is None
    assert "ControlMaster=auto" not in Host("x", "x").ssh_argv(control=control_dir())


def test_an_unknown_host_names_the_known_ones(tmp_path: Path) -> None:
    hosts = configured_hosts(str(write(tmp_path, '[hosts.gpu]\nssh = "gpu"\n')))
    with pytest.raises(ConfigFileError, match=r"no host named 'gpx' \(known: local, gpu;"):
        host_named(hosts, "gpx")


@pytest.mark.system  # runs a program
@pytest.mark.system  # runs a program
def test_check_config_validates_and_prints_the_hosts(tmp_path: Path) -> None:
    path = write(tmp_path, '[hosts.gpu]\nssh = "ssh://me@gpu.example:2222"\n')
    run = subprocess.run([sys.executable, "-m", "supervisord_claude", "check-config", "--config", str(path),
                          "--claude-bin", sys.executable], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert any(line.split()[:3] == ["hosts.local", "this", "machine"] for line in lines)
    assert any(line.split()[:3] == ["hosts.gpu", "ssh", "ssh://me@gpu.example:2222"] for line in lines)
    path.write_text('[hosts.gpu]\nssh = "-oProxyCommand=x"\n')
    run = subprocess.run([sys.executable, "-m", "supervisord_claude", "check-config", "--config", str(path),
                          "--claude-bin", sys.executable], capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "hosts.gpu.ssh: '-oProxyCommand=x' starts with '-'" in run.stderr


def test_dial_stdio_relays_the_control_socket_byte_for_byte_and_ends_with_either_side(
        supervisor: SupervisorProcess) -> None:
    """What ssh runs on the remote machine: the supervisor's ZMTP bytes on stdout as they
    are (a ZeroMQ peer's greeting first), and it exits when its stdin ends or the
    supervisor goes."""
    argv = [sys.executable, "-m", "supervisord_claude", "dial-stdio", "--runtime-dir", str(supervisor.runtime_dir)]
    relay = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert relay.stdout is not None and relay.stdin is not None
    greeting = relay.stdout.read(10)
    assert greeting[0] == 0xFF and greeting[9] == 0x7F  # ZMTP 3's signature, unchanged
    relay.stdin.close()  # the client left
    assert relay.wait(30) == 0
    relay.stdout.close()
    relay.stderr.close()  # type: ignore[union-attr]

    relay = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert relay.stdout is not None
    assert relay.stdout.read(10)[0] == 0xFF
    supervisor.stop()  # the supervisor went: so does the relay, stdout closed
    assert relay.wait(30) == 0
    relay.communicate()
    refused = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "dial-stdio" in refused.stderr and "no supervisor is running" in refused.stderr


@pytest.mark.system  # runs a program
def test_dial_stdio_starts_without_the_client_library(tmp_path: Path) -> None:
    """It runs once per command of a client elsewhere: it checks the runtime dir as every
    client does (the same words) without loading ZeroMQ, asyncio or ``protocol``'s
    package; any other option still goes to the daemon's parser."""
    argv = [sys.executable, "-X", "importtime", "-m", "supervisord_claude", "dial-stdio",
            "--runtime-dir", str(tmp_path / "nothing")]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and run.stdout == ""
    loaded = {line.split("|")[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}
    assert loaded and not {"zmq", "asyncio", "protocol", "protocol._client"} & loaded, sorted(loaded)
    assert "dial-stdio on " in run.stderr and f"no supervisor is running (no socket at {tmp_path}" in run.stderr
    bad = subprocess.run([sys.executable, "-m", "supervisord_claude", "dial-stdio", "--bogus"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "unrecognized arguments: --bogus" in bad.stderr


def test_a_byte_relay_carries_zeromq_between_a_dealer_and_a_router(tmp_path: Path) -> None:
    """The premise of the ssh transport: ZMTP is a byte protocol, so a plain relay between
    a Unix socket a DEALER connects to and a ROUTER's ipc socket works, frames intact."""
    import socket
    import threading

    import zmq

    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.bind(f"ipc://{tmp_path / 'router.sock'}")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "relay.sock"))
    listener.listen(1)

    def relay() -> None:
        conn, _ = listener.accept()
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(str(tmp_path / "router.sock"))

        def pump(src: socket.socket, dst: socket.socket) -> None:
            while data := src.recv(7):  # (small pieces: frames cut anywhere)
                dst.sendall(data)
        threading.Thread(target=pump, args=(upstream, conn), daemon=True).start()
        pump(conn, upstream)

    threading.Thread(target=relay, daemon=True).start()
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"ipc://{tmp_path / 'relay.sock'}")
    payload = bytes(range(256)) * 1000
    dealer.send(payload)
    ident, got = router.recv_multipart()
    assert got == payload
    router.send_multipart([ident, b"back"])
    assert dealer.recv() == b"back"
    for sock in (dealer, router):
        sock.close(0)
    ctx.term()
    listener.close()


def test_a_remote_request_that_gets_no_answer_names_the_host_even_before_its_link_is_seen_down(
        tmp_path: Path) -> None:
    """The ssh link's keepalives take a while to notice a host gone; a request that times
    out first must still say which host, so the bot holds a message for it (rather than
    telling the chat this machine's supervisor does not answer)."""
    import asyncio
    from types import SimpleNamespace

    from bot import _hosts as bot_hosts
    from protocol import ConnectionFailed

    hosts = configured_hosts(str(write(tmp_path, '[hosts.gpu]\nssh = "me@gpu"\n')))
    remotes = bot_hosts.Remotes(hosts)

    class Silent:
        host = hosts["gpu"]

        async def request(self, op: str, timeout: float | None = None, **args: object) -> dict[str, object]:
            raise ConnectionFailed(f"no reply to '{op}' from the supervisor in time")

    async def client(host: str, wait: float = 0) -> Silent:
        return Silent()

    remotes.client = client  # type: ignore[method-assign,assignment]
    link = SimpleNamespace(remotes=remotes)
    with pytest.raises(bot_hosts.HostUnreachable, match=r"host gpu \(me@gpu\) is unreachable: no reply to 'send'"):
        asyncio.run(bot_hosts.route(link, "send", 5.0, {"session": "work@gpu", "text": "hi"}))  # type: ignore[arg-type]
    # a local session is not routed at all
    assert asyncio.run(bot_hosts.route(link, "send", 5.0, {"session": "work"})) is None  # type: ignore[arg-type]


def test_the_bots_typed_calls_about_name_at_host_go_to_that_host_and_one_that_does_not_answer_is_named(
        tmp_path: Path) -> None:
    """The bot's commands call typed methods on its link (``/rules`` add_rule, rules):
    they are routed by the session's name as ``request`` was — to gpu's supervisor as
    ``work`` — and a host that does not answer is named in the error."""
    import asyncio

    from bot import _hosts as bot_hosts
    from bot._link import Link
    from protocol import ConnectionFailed, Op

    hosts = configured_hosts(str(write(tmp_path, '[hosts.gpu]\nssh = "me@gpu"\n')))
    remotes = bot_hosts.Remotes(hosts)
    asked: list[tuple[object, dict[str, object]]] = []

    class Gpu:
        host = hosts["gpu"]

        async def request(self, op: str, timeout: float | None = None, **args: object) -> dict[str, object]:
            asked.append((op, args))
            if op == Op.RULES:
                raise ConnectionFailed(f"no reply to '{op}' from the supervisor in time")
            return {"added": "Bash(npm test *)", "rules": ["Bash(npm test *)"]}

    async def client(host: str, wait: float = 0) -> Gpu:
        return Gpu()

    remotes.client = client  # type: ignore[method-assign,assignment]
    link = Link(None)  # type: ignore[arg-type]  # (nothing here is asked of this machine's supervisor)
    link.remotes = remotes
    assert asyncio.run(link.add_rule("work@gpu", "Bash", "npm test"))["rules"] == ["Bash(npm test *)"]
    assert asked == [(Op.ADD_RULE, {"session": "work", "tool": "Bash", "scope": "npm test"})]
    with pytest.raises(bot_hosts.HostUnreachable, match=r"host gpu \(me@gpu\) is unreachable: no reply to 'rules'"):
        asyncio.run(link.rules("work@gpu"))


def test_a_command_in_the_terminal_of_another_host_is_an_argv_its_words_quoted_for_the_remote_shell() -> None:
    host = Host("gpu", "me@gpu", port=2222, runtime_dir="/run/x y")
    argv = host.ssh_terminal_argv(["ctl", "attach", "work; rm -rf ~", "--now"])
    assert argv[0] == "ssh" and "-t" in argv and "BatchMode=yes" in argv and argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("--") + 1:] == [
        "me@gpu", "supervisord-claude ctl attach 'work; rm -rf ~' --now --runtime-dir '/run/x y'"]


def test_a_malformed_held_message_is_logged_and_the_others_are_still_sent_in_order(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Messages held for a host that was down are sent by the typed ``send`` once it is
    back: one kept with a field ``send`` does not take (another release of the bot) is
    still sent, its text not lost; one with no session is logged and dropped; the loop
    goes on with the rest, and with what is held later."""
    import asyncio
    from types import SimpleNamespace

    from bot import _hosts as bot_hosts
    from protocol import Op
    from protocol._methods import AsyncOps

    hosts = configured_hosts(str(write(tmp_path, '[hosts.gpu]\nssh = "me@gpu"\n')))
    remotes = bot_hosts.Remotes(hosts)
    sent: list[dict[str, object]] = []
    another = asyncio.Event()  # (set at each send)

    class Gpu(AsyncOps):
        host = hosts["gpu"]

        async def request(self, op: Op | str, timeout: float | None = None, **args: object) -> dict[str, object]:
            assert op == Op.SEND
            sent.append(args)
            another.set()
            return {"message_id": len(sent)}

    async def client(host: str, wait: float = 0) -> Gpu:
        return Gpu()

    remotes.client = client  # type: ignore[method-assign,assignment]
    stored = [{"session": "work@gpu", "text": "first", "idempotency_key": "k1"},
              {"session": "work@gpu", "text": "kept by an older bot", "chat": 42, "idempotency_key": "k2"},
              {"text": "no session to send it to", "idempotency_key": "k3"},
              {"session": "work@gpu", "text": "last", "idempotency_key": "k4"}]

    async def kv_cached(key: str) -> object:
        return stored

    async def kv_put(key: str, value: object) -> None:
        pass

    link = SimpleNamespace(remotes=remotes, kv_cached=kv_cached, kv_put=kv_put, remember=lambda *_: None)

    async def until_sent(count: int, loop: asyncio.Task[None]) -> None:
        while len(sent) < count:
            waiting = asyncio.create_task(another.wait())
            await asyncio.wait([loop, waiting], timeout=30, return_when=asyncio.FIRST_COMPLETED)
            assert not loop.done(), loop.exception()  # (before: a TypeError ended it)
            another.clear()

    async def scenario() -> None:
        loop = asyncio.create_task(bot_hosts.send_waiting(link, "gpu"))  # type: ignore[arg-type]
        await until_sent(3, loop)
        assert [s["text"] for s in sent] == ["first", "kept by an older bot", "last"]
        assert sent[1] == {"session": "work", "text": "kept by an older bot", "idempotency_key": "k2"}
        # the loop goes on: a message held later is sent too
        await bot_hosts.hold(link, "gpu", {"session": "work@gpu", "text": "later", "idempotency_key": "k5"})  # type: ignore[arg-type]
        await until_sent(4, loop)
        assert sent[3]["text"] == "later" and remotes.waiting["gpu"] == []
        loop.cancel()

    asyncio.run(scenario())
    said = caplog.text
    assert "a message held for gpu is sent without the fields send does not take: chat" in said
    assert "a message held for gpu is dropped: it has no session" in said
