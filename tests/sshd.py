"""A real OpenSSH server for the tests of hosts: Debian's ``/usr/sbin/sshd`` on 127.0.0.1,
with its own host key, authorized key and config in a temp dir, and a client side that
uses its own ssh config and known_hosts there (never the user's): an ``ssh`` wrapper put
first on PATH adds ``-F <the test's ssh config>``.

Aliases of that ssh config: ``remote`` (the right key, a known host key), ``wrongkey``
(a key the server does not know) and ``unknownhost`` (an empty known_hosts).

The shared ssh connections (ControlMaster) of the clients a test runs live under its own
``XDG_RUNTIME_DIR`` (``env``); ``stop_masters`` ends them (``ssh -O exit``) and says which
did not go, so a test's fixture can fail it if one outlives it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")
SSH = shutil.which("ssh") or "/usr/bin/ssh"


def skip_without_sshd() -> None:
    if not SSHD.exists() or not shutil.which("ssh-keygen"):
        pytest.skip("needs OpenSSH's sshd (Debian's openssh-server; ./scripts/test installs it with apt-get"
                    " where it can, as CI does)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (sshd's per-connection children leave its process group)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def children_named(pid: int, name: str) -> list[int]:
    """``pid``'s descendants whose command is ``name`` (e.g. claudectl's ssh child)."""
    found = []
    for child in _descendants(pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{child}/comm").read_text().strip() == name:
                found.append(child)
    return found


class Sshd:
    def __init__(self, base: Path) -> None:
        self.base = base
        base.mkdir(mode=0o700, exist_ok=True)
        self.port = _free_port()
        keygen = ["ssh-keygen", "-q", "-t", "ed25519", "-N", ""]
        for name in ("host_key", "client_key", "wrong_key"):
            subprocess.run([*keygen, "-f", str(base / name)], check=True, capture_output=True)
        (base / "authorized_keys").write_text((base / "client_key.pub").read_text())
        host_key = (base / "host_key.pub").read_text().split()
        (base / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_key[0]} {host_key[1]}\n")
        (base / "empty_known_hosts").write_text("")
        self.log_path = base / "sshd.log"
        (base / "sshd_config").write_text(f"""\
ListenAddress 127.0.0.1
Port {self.port}
HostKey {base / "host_key"}
AuthorizedKeysFile {base / "authorized_keys"}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PidFile {base / "sshd.pid"}
LogLevel VERBOSE
""")
        common = f"""\
  HostName 127.0.0.1
  Port {self.port}
  IdentitiesOnly yes
  StrictHostKeyChecking yes
  GlobalKnownHostsFile /dev/null
  UpdateHostKeys no
"""
        (base / "ssh_config").write_text(
            f"Host remote\n{common}  IdentityFile {base / 'client_key'}\n  UserKnownHostsFile {base / 'known_hosts'}\n"
            f"Host wrongkey\n{common}  IdentityFile {base / 'wrong_key'}\n  UserKnownHostsFile {base / 'known_hosts'}\n"
            f"Host unknownhost\n{common}  IdentityFile {base / 'client_key'}\n"
            f"  UserKnownHostsFile {base / 'empty_known_hosts'}\n")
        self.bin = base / "bin"
        self.bin.mkdir()
        wrapper = self.bin / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec "{SSH}" -F "{base / "ssh_config"}" "$@"\n')
        wrapper.chmod(0o755)
        self.proc: subprocess.Popen[bytes] | None = None
        #: the clients' XDG_RUNTIME_DIR: their shared connections' sockets are in it
        self.xdg = base / "xdg"
        self.xdg.mkdir(mode=0o700)

    @property
    def path(self) -> str:
        """PATH with the test's ssh first."""
        return f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"

    @property
    def env(self) -> dict[str, str]:
        """What a client of this sshd needs in its environment: the test's ssh, the test's
        runtime dir (for its shared connections)."""
        return {"PATH": self.path, "XDG_RUNTIME_DIR": str(self.xdg)}

    def control_sockets(self) -> list[Path]:
        """The shared connections' control sockets the clients made."""
        found = self.xdg / "scl-mux"
        return sorted(p for p in found.iterdir() if p.is_socket()) if found.is_dir() else []

    def masters(self) -> list[int]:
        """The live ssh masters of this test's clients (titled ``ssh: <control socket> [mux]``)."""
        prefix = f"ssh: {self.xdg}/"
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    if Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").startswith(prefix):
                        found.append(int(entry))
        return found

    def stop_masters(self, timeout: float = 30) -> list[int]:
        """``ssh -O exit`` to every shared connection, then wait for the masters to go;
        the ones still alive after ``timeout`` (killed then), empty if none."""
        for sock in self.control_sockets():
            subprocess.run([SSH, "-F", str(self.base / "ssh_config"), "-o", f"ControlPath={sock}", "-O", "exit",
                            "--", "remote"], capture_output=True, timeout=60)
        deadline = time.monotonic() + timeout
        while (left := self.masters()) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return left

    def start(self) -> Sshd:
        if os.geteuid() == 0 and not Path("/run/sshd").exists():
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(self.base / "sshd_config")],
                                     stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"sshd exited with {self.proc.returncode}: {self.log_path.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return self
            if time.monotonic() > deadline:
                pytest.fail(f"sshd did not listen on 127.0.0.1:{self.port}: {self.log_path.read_text()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """sshd and every connection it serves go, as when the machine's sshd stops."""
        if self.proc is None:
            return
        for pid in [*_descendants(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
