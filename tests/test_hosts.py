"""Hosts in the config file: ``[hosts.NAME]`` tables as the supervisor, claudectl and the
bot read them, and the ssh command line each becomes (an argv: no local shell)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from protocol import LOCAL, ConfigFileError, Host, configured_hosts, host_named


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
])
def test_a_bad_host_table_is_an_error_naming_the_key(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigFileError, match=error.replace("[", r"\[").replace("]", r"\]")):
        configured_hosts(str(write(tmp_path, text)))


def test_an_unknown_host_names_the_known_ones(tmp_path: Path) -> None:
    hosts = configured_hosts(str(write(tmp_path, '[hosts.gpu]\nssh = "gpu"\n')))
    with pytest.raises(ConfigFileError, match=r"no host named 'gpx' \(known: local, gpu;"):
        host_named(hosts, "gpx")


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
