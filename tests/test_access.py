"""Who can reach a supervisor: the runtime dir and the control socket are checked by the
supervisor and by every client before use (issue "Security and reliability")."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from protocol import Client, ConnectionFailed

from .conftest import SupervisorProcess
from .test_supervisor import run_supervisor

NOBODY = 65534
as_root = pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as, or give files to, another user")


def refused(runtime_dir) -> str:
    with pytest.raises(ConnectionFailed) as err:
        Client(runtime_dir, timeout=2).request("hello")
    return str(err.value)


def fake_supervisor(runtime_dir) -> socket.socket:
    """Someone else's listener at the control socket's path."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(runtime_dir / "control.sock"))
    listener.listen()
    return listener


def test_a_runtime_dir_that_is_a_symlink_is_refused_by_supervisor_and_clients(make_supervisor, tmp_base) -> None:
    sup = make_supervisor()
    real = tmp_base / "mine"
    real.mkdir(mode=0o700)
    sup.runtime_dir.parent.mkdir(parents=True, exist_ok=True)
    sup.runtime_dir.symlink_to(real)  # it passes every check that follows the link
    result = run_supervisor(sup)
    assert result.returncode == 1 and "is a symbolic link" in result.stderr
    with fake_supervisor(real):
        assert "is a symbolic link" in refused(sup.runtime_dir)


def test_a_runtime_dir_others_can_write_is_refused_by_clients(tmp_base) -> None:
    shared = tmp_base / "supervisord-claude-1000"
    shared.mkdir()
    os.chmod(shared, 0o777)  # as if another user made it first
    with fake_supervisor(shared):
        message = refused(shared)
    assert "accessible to group/others" in message and "chmod 700" in message


@pytest.mark.system  # runs a program
def test_claudectl_says_why_it_will_not_connect(tmp_base) -> None:
    shared = tmp_base / "run"
    shared.mkdir()
    os.chmod(shared, 0o755)
    with fake_supervisor(shared):
        result = subprocess.run([sys.executable, "-m", "supervisord_claude.ctl", "--runtime-dir", str(shared),
                                 "send", "x", "secret text"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "refusing to connect" in result.stderr


@as_root
def test_a_runtime_dir_or_socket_of_another_user_is_refused(tmp_base) -> None:
    theirs = tmp_base / "theirs"
    theirs.mkdir(mode=0o700)
    with fake_supervisor(theirs):
        os.chown(theirs, NOBODY, NOBODY)
        assert f"owned by uid {NOBODY}" in refused(theirs)
        os.chown(theirs, 0, 0)
        os.chown(theirs / "control.sock", NOBODY, NOBODY)  # our dir, their socket
        assert f"control.sock is owned by uid {NOBODY}" in refused(theirs)


SYSTEM_PYTHON = "/usr/bin/python3"  # the venv's may live where another user cannot run it


@as_root
@pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason="needs a system python to run as another user")
def test_another_user_cannot_reach_the_control_socket(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    path = supervisor.runtime_dir / "control.sock"
    script = ("import socket, sys\n"
              "s = socket.socket(socket.AF_UNIX)\n"
              "try:\n"
              f"    s.connect({str(path)!r})\n"
              "except PermissionError:\n"
              "    sys.exit(3)\n"
              "sys.exit(0)\n")
    result = subprocess.run([SYSTEM_PYTHON, "-c", script], capture_output=True, text=True, timeout=60,
                            user=NOBODY, group=NOBODY, env={}, cwd="/")
    assert result.returncode == 3, result.stdout + result.stderr  # the OS says no: dir 0700, socket 0600
    # even with every directory on the way opened up, the socket itself (0600) keeps them out
    opened = {d: stat.S_IMODE(d.stat().st_mode) for d in [path.parent, *path.parent.parents] if d != Path("/")}
    try:
        for d, mode in opened.items():
            os.chmod(d, mode | 0o011)
        result = subprocess.run([SYSTEM_PYTHON, "-c", script], capture_output=True, text=True, timeout=60,
                                user=NOBODY, group=NOBODY, env={}, cwd="/")
    finally:
        for d, mode in opened.items():
            os.chmod(d, mode)
    assert result.returncode == 3, result.stdout + result.stderr
    assert supervisor.request("list")["sessions"][0]["name"] == "alpha"
