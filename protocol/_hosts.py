"""Hosts: the machines whose supervisors a client can reach, as the config file names them.

``local`` is this machine (its supervisor's control socket); every other host is a
``[hosts.NAME]`` table reached through the user's own OpenSSH (``_ssh``): ``ssh`` the
destination (``user@host``, a ``~/.ssh/config`` alias, or ``ssh://[user@]host[:port]``),
``command`` the remote ``supervisord-claude`` (default: the one on the remote PATH, run
by the remote user's shell as written), ``runtime_dir`` the remote supervisor's runtime
dir (default: the remote's own), ``multiplex`` whether the commands of this machine share
one ssh connection to it (OpenSSH's ControlMaster, default true) and ``control_persist``
how long that connection stays after its last command (seconds, default 60). Shared by the
supervisor (``check-config``), claudectl and the bot, so all three read the table the
same way.

Multiplexing: the first ssh to a destination becomes the master and, with ControlPersist,
puts itself in the background; every later ssh to it (the next claudectl command, the
bot's redial) opens a session on that connection instead of a new handshake. Its control
socket lives in ``control_dir()``, a 0700 directory of this user (ssh makes the socket
0600, and the master serves only its own uid). Our ``-o`` options come first on ssh's
command line, so they win over ``ControlMaster``/``ControlPath``/``ControlPersist`` in
``~/.ssh/config``; ``multiplex = false`` adds none of them and leaves the user's own.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import tempfile
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._paths import ConfigFileError, read_config_file, runtime_dir_problem

#: the name of this machine's supervisor; it needs no table
LOCAL = "local"
#: the environment variable naming the host claudectl talks to (under ``--host``)
HOST_ENV = "SUPERVISORD_CLAUDE_HOST"
HOST_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}"
_HOST_NAME_RE = re.compile(rf"\A{HOST_NAME_PATTERN}\Z")
DEFAULT_REMOTE_COMMAND = "supervisord-claude"
#: ssh keepalives: a link that answers none of 3 probes 15 s apart is dropped and redialled
SERVER_ALIVE_INTERVAL = 15
SERVER_ALIVE_COUNT = 3
CONNECT_TIMEOUT = 15
#: seconds a shared ssh connection stays after its last command (``control_persist``)
DEFAULT_CONTROL_PERSIST = 60
MAX_CONTROL_PERSIST = 24 * 3600
#: a Unix socket path is at most 104 bytes on macOS, 108 on Linux (with its NUL)
MAX_SOCKET_PATH = 103
#: the ControlPath's name in ``control_dir()``: a tag, "-", ssh's ``%C`` (40 hex digits);
#: the master binds it first with ``.`` and 16 random characters more
CONTROL_NAME_LENGTH = len("12345678-") + 40 + len(".0123456789abcdef")
_HOST_KEYS = ("ssh", "command", "runtime_dir", "multiplex", "control_persist")
_STRING_KEYS = ("ssh", "command", "runtime_dir")


@dataclass(frozen=True)
class Host:
    """One machine with a supervisor. ``destination`` is None for ``local``."""

    name: str
    destination: str | None = None
    port: int | None = None
    #: the remote ``supervisord-claude``, a command line for the remote user's shell
    command: str = DEFAULT_REMOTE_COMMAND
    runtime_dir: str | None = None
    #: the ``ssh`` value as written in the config file
    ssh: str | None = None
    #: share one ssh connection between this machine's commands (``_ssh``'s ControlMaster)
    multiplex: bool = True
    control_persist: int = DEFAULT_CONTROL_PERSIST

    @property
    def is_local(self) -> bool:
        return self.destination is None

    def remote_command(self, words: Sequence[str] = ("dial-stdio",)) -> str:
        """What ssh asks the remote shell to run: ``command WORDS… [--runtime-dir DIR]``
        (by default ``dial-stdio``). ``command`` is the user's own, taken as written
        (``~/.local/bin/…`` works); what we add is quoted."""
        quoted = [shlex.quote(word) for word in words]
        if self.runtime_dir:
            quoted += ["--runtime-dir", shlex.quote(self.runtime_dir)]
        return " ".join([self.command, *quoted])

    def _ssh_options(self, ssh: str, control: Path | None) -> list[str]:
        """ssh and its options: never prompts (BatchMode), keepalives, the port, and the
        shared connection when ``control`` (``control_dir()``) is given."""
        assert self.destination is not None, "the local host is not reached through ssh"
        argv = [ssh, "-o", "BatchMode=yes", "-o", f"ServerAliveInterval={SERVER_ALIVE_INTERVAL}",
                "-o", f"ServerAliveCountMax={SERVER_ALIVE_COUNT}", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}"]
        if self.port is not None:
            argv += ["-p", str(self.port)]
        path = self.control_path(control)
        if path is not None:
            argv += ["-o", "ControlMaster=auto", "-o", f"ControlPath={path}",
                     "-o", f"ControlPersist={self.control_persist}"]
        return argv

    def control_path(self, control: Path | None) -> str | None:
        """ssh's ControlPath for this host in the directory ``control``, or None when its
        connection is not shared (``multiplex = false``, no safe directory, or a path that
        is too long for a socket or that ssh would split). ``%C`` is ssh's hash of the
        resolved host, port and user; the tag before it, of the destination as written,
        keeps two aliases of one machine (another key, another user) apart."""
        if not self.multiplex or control is None or self.destination is None:
            return None
        directory = str(control)
        if len(directory) + 1 + CONTROL_NAME_LENGTH > MAX_SOCKET_PATH or any(
                ch.isspace() or ch in "\"'" for ch in directory):
            return None
        tag = hashlib.sha256(f"{self.destination}:{self.port}".encode()).hexdigest()[:8]
        return f"{directory.replace('%', '%%')}/{tag}-%C"  # (a % of the directory is no token)

    def ssh_argv(self, ssh: str = "ssh", control: Path | None = None) -> list[str]:
        """The ssh command line of the link, an argv (no local shell): no terminal, no
        escape character, the destination after ``--`` so it can never be taken for an
        option."""
        assert self.destination is not None
        return [*self._ssh_options(ssh, control), "-T", "-e", "none", "--", self.destination,
                self.remote_command()]

    def ssh_terminal_argv(self, words: Sequence[str], ssh: str = "ssh", control: Path | None = None) -> list[str]:
        """ssh running ``command WORDS…`` there in this terminal (``-t``: a terminal
        there when this is one), e.g. ``claudectl --host NAME attach``, which runs the
        remote's claudectl as ``supervisord-claude ctl attach NAME``."""
        assert self.destination is not None
        return [*self._ssh_options(ssh, control), "-t", "--", self.destination, self.remote_command(words)]

    def ssh_control_argv(self, operation: str, control: Path, ssh: str = "ssh") -> list[str] | None:
        """``ssh -O OPERATION`` (``check``, ``exit``) to this host's shared connection, or
        None when it has none."""
        assert self.destination is not None
        if self.control_path(control) is None:
            return None
        return [*self._ssh_options(ssh, control), "-O", operation, "--", self.destination]

    def describe(self) -> str:
        """Where the host is, e.g. "ssh me@gpu, runtime_dir /run/x" (not its name)."""
        if self.is_local:
            return "this machine"
        extra = "" if self.command == DEFAULT_REMOTE_COMMAND else f", command {self.command}"
        extra += f", runtime_dir {self.runtime_dir}" if self.runtime_dir else ""
        extra += "" if self.multiplex else ", multiplex off"
        extra += "" if self.control_persist == DEFAULT_CONTROL_PERSIST else f", control_persist {self.control_persist}s"
        return f"ssh {self.ssh}{extra}"


LOCAL_HOST = Host(LOCAL)


def control_dir() -> Path | None:
    """The directory of this user's shared ssh connections (``ControlPath``), made 0700
    if it is not there: ``$XDG_RUNTIME_DIR/scl-mux``, else ``scl-mux-<uid>`` in the temp
    dir, or in ``/tmp`` if the temp dir's path is too long for a socket's (macOS's is).
    None if it cannot be made or is not safe (not ours, open to others, a symbolic link):
    then each ssh makes its own connection, as without multiplexing."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        path = Path(xdg) / "scl-mux"
    else:
        path = Path(tempfile.gettempdir()) / f"scl-mux-{os.getuid()}"
        if len(str(path)) + 1 + CONTROL_NAME_LENGTH > MAX_SOCKET_PATH:
            path = Path("/tmp") / path.name
    try:
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return None
    return None if runtime_dir_problem(path) else path


class HostConfigError(ConfigFileError):
    """A ``[hosts.NAME]`` table is not valid; the message names the key."""


def parse_destination(value: str, where: str) -> tuple[str, int | None]:
    """``(destination, port)`` of an ``ssh`` value; ``HostConfigError`` if it is not one.

    A destination starting with ``-`` would be an ssh option (CVE-2017-1000117 in git):
    refused, and the argv puts ``--`` before it as well."""
    if value.startswith("-"):
        raise HostConfigError(f"{where}: {value!r} starts with '-' (ssh would take it for an option)")
    if not value or value != value.strip() or any(ch.isspace() or ord(ch) < 32 or ch == "\x7f" for ch in value):
        raise HostConfigError(f"{where}: {value!r} is not an ssh destination (no spaces or control characters)")
    if "://" not in value:
        return value, None
    url = urllib.parse.urlsplit(value)
    if url.scheme != "ssh":
        raise HostConfigError(f"{where}: {value!r}: only ssh:// URLs are understood")
    try:
        port = url.port
    except ValueError:
        raise HostConfigError(f"{where}: {value!r} has no valid port (1-65535)") from None
    if not url.hostname or url.path not in ("", "/") or url.query or url.fragment or url.password:
        raise HostConfigError(f"{where}: {value!r} is not ssh://[user@]host[:port]")
    host = url.hostname
    if host.startswith("-") or (url.username or "").startswith("-"):
        raise HostConfigError(f"{where}: {value!r}: a user or host starting with '-' is refused")
    if port == 0:
        raise HostConfigError(f"{where}: {value!r} has no valid port (1-65535)")
    return (f"{url.username}@{host}" if url.username else host), port


def hosts_from_table(table: Any, source: str = "the config file") -> dict[str, Host]:
    """Every host — ``local`` first, then each ``[hosts.NAME]`` table — or
    ``HostConfigError`` naming the offending key."""
    hosts: dict[str, Host] = {LOCAL: LOCAL_HOST}
    if table is None:
        return hosts
    if not isinstance(table, dict):
        raise HostConfigError(f"hosts in {source}: expected tables [hosts.NAME]")
    for name, entry in table.items():
        where = f"hosts.{name}"
        if name == LOCAL:
            raise HostConfigError(f"{where}: 'local' is this machine and always there; give another name")
        if not _HOST_NAME_RE.match(name):
            raise HostConfigError(f"{where}: a host name is letters, digits, '-' and '_' (at most 32),"
                                  " starting with a letter or digit")
        if not isinstance(entry, dict):
            raise HostConfigError(f"{where}: expected a table with ssh = \"user@host\"")
        for key in entry:
            if key not in _HOST_KEYS:
                raise HostConfigError(f"{where}.{key}: unknown key (known: {', '.join(_HOST_KEYS)})")
        for key in _STRING_KEYS:
            if key in entry and not isinstance(entry[key], str):
                raise HostConfigError(f"{where}.{key}: expected a string, got {type(entry[key]).__name__}")
        multiplex = entry.get("multiplex", True)
        if not isinstance(multiplex, bool):
            raise HostConfigError(f"{where}.multiplex: expected true or false (share one ssh connection"
                                  f" between commands), got {multiplex!r}")
        persist = entry.get("control_persist", DEFAULT_CONTROL_PERSIST)
        if isinstance(persist, bool) or not isinstance(persist, int) or not 1 <= persist <= MAX_CONTROL_PERSIST:
            raise HostConfigError(f"{where}.control_persist: expected the seconds the shared ssh connection"
                                  f" stays after its last command (1-{MAX_CONTROL_PERSIST}), got {persist!r}")
        if "ssh" not in entry:
            raise HostConfigError(f"{where}.ssh: missing (user@host, an alias of ~/.ssh/config, or"
                                  " ssh://user@host:port)")
        destination, port = parse_destination(entry["ssh"], f"{where}.ssh")
        command = entry.get("command", DEFAULT_REMOTE_COMMAND)
        if not command.strip() or any(ch in command for ch in "\n\r\0"):
            raise HostConfigError(f"{where}.command: expected the remote supervisord-claude command (one line)")
        runtime_dir = entry.get("runtime_dir")
        if runtime_dir is not None and (not runtime_dir or "\0" in runtime_dir or "\n" in runtime_dir):
            raise HostConfigError(f"{where}.runtime_dir: expected a directory path on the remote machine")
        hosts[name] = Host(name, destination, port, command, runtime_dir, ssh=entry["ssh"], multiplex=multiplex,
                           control_persist=persist)
    return hosts


def configured_hosts(config: str | None = None) -> dict[str, Host]:
    """The hosts of the config file (``config``, else ``$SUPERVISORD_CLAUDE_CONFIG``, else
    the default one, if it exists); ``local`` alone without one. Raises ConfigFileError."""
    path, raw = read_config_file(config)
    return hosts_from_table(raw.get("hosts"), str(path))


def host_named(hosts: Mapping[str, Host], name: str) -> Host:
    """The host called ``name``, or ConfigFileError listing the known ones."""
    if name not in hosts:
        raise ConfigFileError(f"no host named {name!r} (known: {', '.join(hosts)}; add a [hosts.{name}] table"
                              " to the config file)" if _HOST_NAME_RE.match(name) else
                              f"{name!r} is not a host name (known: {', '.join(hosts)})")
    return hosts[name]
