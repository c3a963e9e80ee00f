"""The bot's own private directory, ``<runtime dir>/telegram-bot`` (0700, in the runtime
dir, itself 0700): what the bot holds only for a moment — a voice note while it is
transcribed — is written there rather than into the shared temp dir, and whatever a bot
killed mid-way (kill -9: no ``finally`` runs) left there is removed when the next one
starts (``clean``). One bot serves a supervisor, so what is there at start is no one's.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

from protocol import runtime_dir_problem

log = logging.getLogger("claude_telegram_bot")

PRIVATE_DIR = "telegram-bot"
#: a voice note's directory while it is downloaded and transcribed
VOICE_PREFIX = "voice-"


def private_dir(runtime_dir: Path) -> Path:
    """The directory, made (with the runtime dir, as the supervisor makes it) if missing.
    PermissionError saying why if either could be reached by others or is not ours."""
    problem = runtime_dir_problem(runtime_dir)
    if problem is None and not os.path.lexists(runtime_dir):
        runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        problem = runtime_dir_problem(runtime_dir)  # (made by someone else in between?)
    if problem is not None:
        raise PermissionError(problem)
    path = runtime_dir / PRIVATE_DIR
    if not os.path.lexists(path):
        path.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o077:
        raise PermissionError(f"{path} must be a directory of yours that only you can reach (mode 0700)")
    return path


def voice_dir(runtime_dir: Path) -> tempfile.TemporaryDirectory[str]:
    """A new directory for one voice note (0700, removed when it is done with)."""
    return tempfile.TemporaryDirectory(prefix=VOICE_PREFIX, dir=private_dir(runtime_dir))


def clean(runtime_dir: Path) -> list[str]:
    """Remove what a previous bot left in the private directory (voice notes of a bot
    killed while it transcribed them): the names removed. A directory that cannot be
    used is logged, not raised: the bot runs, and a voice note says why it fails."""
    try:
        path = private_dir(runtime_dir)
    except OSError as exc:
        log.warning("the bot's private directory cannot be used: %s", exc)
        return []
    removed = []
    for entry in sorted(path.iterdir()):
        if not entry.name.startswith(VOICE_PREFIX):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError as exc:
            log.warning("could not remove %s: %s", entry, exc)
            continue
        removed.append(entry.name)
    if removed:
        log.info("removed what a previous bot left in %s: %s", path, ", ".join(removed))
    return removed


__all__ = ["PRIVATE_DIR", "VOICE_PREFIX", "clean", "private_dir", "voice_dir"]
