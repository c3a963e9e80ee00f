"""Where the supervisor's sockets live, shared by the server and every client, and where
the configuration file is (one for every program).

Standard library and platformdirs only, and no import of the rest of ``protocol``:
``dial-stdio`` loads this file alone (``supervisord_claude._dial_stdio``)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import platformdirs

RUNTIME_DIR_ENV = "SUPERVISORD_CLAUDE_RUNTIME_DIR"
CONFIG_ENV = "SUPERVISORD_CLAUDE_CONFIG"
CONTROL_SOCKET = "control.sock"
#: held (flock, exclusive) by the running supervisor for its whole life
LOCK_FILE = "lock"


def default_runtime_dir() -> Path:
    """``$SUPERVISORD_CLAUDE_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/supervisord-claude``,
    else a per-user directory under the temp dir."""
    explicit = os.environ.get(RUNTIME_DIR_ENV)
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "supervisord-claude"
    return Path(tempfile.gettempdir()) / f"supervisord-claude-{os.getuid()}"


def default_config_path() -> Path:
    return platformdirs.user_config_path("supervisord-claude") / "config.toml"


class ConfigFileError(Exception):
    """The configuration file cannot be read, or its ``runtime_dir`` is not a string."""


def read_config_file(config: str | None = None) -> tuple[Path, dict[str, Any]]:
    """The config file a client reads (``config``, else ``$SUPERVISORD_CLAUDE_CONFIG``,
    else the default one) and its tables; empty if the default one does not exist.
    Raises ConfigFileError."""
    explicit = config or os.environ.get(CONFIG_ENV)
    path = Path(explicit).expanduser() if explicit else default_config_path()
    try:
        return path, tomllib.loads(path.read_text())
    except FileNotFoundError:
        if explicit:
            raise ConfigFileError(f"config file {path} does not exist") from None
        return path, {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigFileError(f"config file {path} cannot be read: {exc}") from None


def configured_runtime_dir(option: str | None, config: str | None = None) -> Path:
    """The runtime dir as every program picks it: the option, else
    ``$SUPERVISORD_CLAUDE_RUNTIME_DIR``, else ``runtime_dir`` of the config file (``config``,
    else ``$SUPERVISORD_CLAUDE_CONFIG``, else the default one, if it exists), else the
    default. Raises ConfigFileError."""
    if option:
        return Path(option).expanduser().absolute()
    if os.environ.get(RUNTIME_DIR_ENV):
        return Path(os.environ[RUNTIME_DIR_ENV]).expanduser().absolute()
    path, raw = read_config_file(config)
    value = raw.get("runtime_dir")
    if value is None:
        return default_runtime_dir()
    if not isinstance(value, str):
        raise ConfigFileError(f"runtime_dir in {path}: expected a string")
    return Path(value).expanduser().absolute()


def runtime_dir_problem(path: Path | str) -> str | None:
    """Why ``path`` must not be used as a runtime dir, or None if it is safe (or does not
    exist yet): it must be a real directory — not a symbolic link, which could be pointed
    elsewhere later — owned by this user and closed to everyone else (0700). Without
    ``XDG_RUNTIME_DIR`` it lives in the shared temp dir, where another user could have
    made it first (tmux checks ``/tmp/tmux-<uid>`` the same way)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"runtime dir {path} cannot be checked: {exc.strerror or exc}"
    if stat.S_ISLNK(st.st_mode):
        return f"runtime dir {path} is a symbolic link; it must be a real directory"
    if not stat.S_ISDIR(st.st_mode):
        return f"runtime dir {path} is not a directory"
    if st.st_uid != os.getuid():
        return f"runtime dir {path} is owned by uid {st.st_uid}, not by you (uid {os.getuid()})"
    if stat.S_IMODE(st.st_mode) & 0o077:
        return (f"runtime dir {path} is accessible to group/others (mode {stat.S_IMODE(st.st_mode):o});"
                f" run: chmod 700 {path}")
    return None


def socket_problem(path: Path | str) -> str | None:
    """Why the control socket must not be trusted, or None: it must be a socket of this user."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path} cannot be checked: {exc.strerror or exc}"
    if not stat.S_ISSOCK(st.st_mode):
        return f"{path} is not a socket"
    if st.st_uid != os.getuid():
        return f"{path} is owned by uid {st.st_uid}, not by you (uid {os.getuid()})"
    return None


def running_problem(runtime_dir: Path) -> str | None:
    """Why a client must not (or cannot) talk to a supervisor on ``runtime_dir``, or None
    if ours runs there. Here, beside the paths, so that ``dial-stdio`` checks it as every
    client does without loading the client library (it starts once per remote command)."""
    # what we send (messages, attachment paths) must reach our own supervisor only
    problem = runtime_dir_problem(runtime_dir) or socket_problem(runtime_dir / CONTROL_SOCKET)
    if problem is not None:
        return f"refusing to connect: {problem}"
    if not (runtime_dir / CONTROL_SOCKET).exists():
        if _lock_held(runtime_dir / LOCK_FILE):  # it hides its socket while it is full
            return (f"the supervisor on {runtime_dir} takes no new clients now: it is at its connection"
                    " limit (max_connections, or its open-files limit; see its log). Try again shortly")
        return (f"no supervisor is running (no socket at {runtime_dir / CONTROL_SOCKET});"
                " start it with ./scripts/run or supervisord-claude")
    if not _lock_held(runtime_dir / LOCK_FILE):
        # a supervisor that was killed leaves its socket file; only its lock dies with it
        return (f"no supervisor is running on {runtime_dir} (its socket is left from one that"
                " stopped); start it with ./scripts/run or supervisord-claude")
    return None


def _lock_held(path: Path) -> bool:
    """True if a supervisor holds the runtime dir's lock (an exclusive flock)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: let the connection decide
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def control_endpoint(runtime_dir: Path | str) -> str:
    return f"ipc://{Path(runtime_dir) / CONTROL_SOCKET}"


def instance_id(runtime_dir: Path | str) -> str:
    """A short stable id of a runtime dir; it names the supervisor's processes."""
    real = os.path.realpath(os.fspath(runtime_dir))
    return hashlib.sha256(real.encode()).hexdigest()[:8]


#: files Claude puts in ``<session dir>/outbox`` are sent to whoever asked (the bot moves
#: each one to ``outbox/sent`` once it went out)
OUTBOX_DIR = "outbox"
#: where files sent to a session (the bot's uploads, ``put_file``) are kept in its directory
UPLOADS_DIR = "uploads"
#: where the outbox's files go once they went out (``outbox_sent``)
OUTBOX_SENT_DIR = "sent"
