"""Where the supervisor's sockets live, shared by the server and every client."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

RUNTIME_DIR_ENV = "SUPERVISORD_CLAUDE_RUNTIME_DIR"
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


def control_endpoint(runtime_dir: Path | str) -> str:
    return f"ipc://{Path(runtime_dir) / CONTROL_SOCKET}"


def instance_id(runtime_dir: Path | str) -> str:
    """A short stable id of a runtime dir; it names the supervisor's processes."""
    real = os.path.realpath(os.fspath(runtime_dir))
    return hashlib.sha256(real.encode()).hexdigest()[:8]
