"""Attachments, taken at ``send``: each file is opened without following a link and
without blocking, checked to be an ordinary file under the size limit, and copied into
the session's own directory in the state dir (``attachments/<session>/<token>/<name>``).
The message carries the copies' paths: the keeper and Claude read only them, so nothing
done to the sender's file afterwards (swapped for a FIFO, for a link to ``/dev/zero``)
reaches a keeper. Claude is told where a copy is and may read it again in a later turn
(a document asked about twice, after a resume), so a session keeps its copies once their
turn is over — the newest up to ``KEEP_PER_SESSION_BYTES``; older ones go first. A
session's copies all go when it is archived, and at start-up those of sessions that no
longer exist or are archived.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from protocol import ErrorCode

from .._errors import OpError

log = logging.getLogger("supervisord_claude")

ATTACHMENTS_DIR = "attachments"
#: where no attachment may come from: pseudo-files whose content is not a file's (a
#: /proc file reads as the supervisor's own memory or environment)
PSEUDO_FILESYSTEMS = ("/proc/", "/sys/", "/dev/")
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CHUNK = 1024 * 1024
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def _kind(mode: int) -> str:
    """What a file that is not an ordinary one is, as a user would say it."""
    if stat.S_ISLNK(mode):
        return "a symbolic link (attach the file it points to)"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not an ordinary file"


def mib_text(size: int) -> str:
    return f"{size / (1024 * 1024):.3g} MiB"


def safe_name(path: str) -> str:
    """The file's name as its copy is called: safe in a path and in a line of text."""
    name = _UNSAFE_NAME_CHARS.sub("_", os.path.basename(path))[:120]
    return name if name.strip(".") else "file"


def copied_bytes(paths: Iterable[str]) -> int:
    """What the copies at ``paths`` take on disk (those that are gone count nothing)."""
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):
            total += os.lstat(path).st_size
    return total


@dataclass
class Taken:
    """The copies of one message's attachments."""

    directory: Path | None
    paths: list[str]
    size: int

    def discard(self) -> None:
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


#: what a session keeps of the copies whose turn is over (newest first); the copies of
#: messages still owed an answer are never removed to make room
KEEP_PER_SESSION_BYTES = 256 * 1024 * 1024


def _tree_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.iterdir() if f.is_file())


class Attachments:
    def __init__(self, root: Path, max_bytes: int, keep_bytes: int = KEEP_PER_SESSION_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.keep_bytes = keep_bytes
        #: message id -> the directory of its copies, while the message is owed an answer
        self.held: dict[int, Path] = {}

    def session_dir(self, session: str) -> Path:
        """Where a session's copies are (Claude is given access to it: ``--add-dir``)."""
        return self.root / session

    def take(self, session: str, paths: Sequence[str]) -> Taken:
        """Copy every file, or refuse the lot (``OpError``) and leave nothing behind."""
        if not paths:
            return Taken(None, [], 0)
        directory = self.session_dir(session) / secrets.token_hex(8)
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            directory.parent.mkdir(mode=0o700, exist_ok=True)
            directory.mkdir(mode=0o700)
        except OSError as exc:
            raise OpError(ErrorCode.STORAGE, f"cannot keep attachments in {self.root}: {exc.strerror or exc};"
                          " nothing was sent") from None
        taken = Taken(directory, [], 0)
        try:
            for path in paths:
                name = safe_name(path)
                if any(os.path.basename(p) == name for p in taken.paths):
                    name = f"{len(taken.paths) + 1}-{name}"
                size = self._copy(path, directory / name)
                taken.paths.append(str(directory / name))
                taken.size += size
        except BaseException:
            taken.discard()
            raise
        return taken

    def _copy(self, path: str, dest: Path) -> int:
        def refused(why: str, code: ErrorCode = ErrorCode.BAD_REQUEST) -> OpError:
            return OpError(code, f"attachment {path} {why}; nothing was sent")

        try:
            before = os.lstat(path)  # (what it is, without opening a device or a FIFO)
        except OSError as exc:
            raise refused(f"cannot be read: {exc.strerror or exc}") from None
        if not stat.S_ISREG(before.st_mode):
            raise refused(f"is {_kind(before.st_mode)}, not an ordinary file")
        real = os.path.realpath(path)
        if real.startswith(PSEUDO_FILESYSTEMS):
            raise refused(f"is a system pseudo-file ({real}), not an ordinary file")
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            raise refused(f"cannot be read: {exc.strerror or exc}") from None
        with open(fd, "rb", buffering=0) as src:
            st = os.fstat(fd)  # what was opened is what counts: it may have been swapped
            if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
                raise refused("changed while it was being attached")
            if st.st_size > self.max_bytes:
                raise refused(f"is {mib_text(st.st_size)}; an attachment may be at most"
                              f" {mib_text(self.max_bytes)} (max_attachment_mib)", ErrorCode.TOO_LARGE)
            copied = 0
            try:
                out_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise refused(f"cannot be copied into the state dir: {exc.strerror or exc}", ErrorCode.STORAGE) \
                    from None
            with open(out_fd, "wb") as out:
                while True:
                    try:
                        chunk = src.read(_CHUNK)
                    except OSError as exc:
                        raise refused(f"cannot be read: {exc.strerror or exc}") from None
                    if not chunk:
                        break
                    copied += len(chunk)
                    if copied > self.max_bytes:  # it grows while we copy
                        raise refused(f"grew over {mib_text(self.max_bytes)} (max_attachment_mib) while it was"
                                      " copied", ErrorCode.TOO_LARGE)
                    try:
                        out.write(chunk)
                    except OSError as exc:  # (e.g. the disk is full)
                        raise refused(f"cannot be copied into the state dir: {exc.strerror or exc}",
                                      ErrorCode.STORAGE) from None
        return copied

    def hold(self, message_id: int, taken: Taken) -> None:
        """The copies belong to this message now (until ``release``)."""
        if taken.directory is not None:
            self.held[message_id] = taken.directory

    def holds(self, message_id: int) -> bool:
        return message_id in self.held

    def release(self, message_id: int) -> None:
        """The message's turn is over: its copies stay for later turns, within the
        session's ``keep_bytes``."""
        directory = self.held.pop(message_id, None)
        if directory is not None:
            self.trim(directory.parent)

    def trim(self, session_dir: Path) -> int:
        """Remove the oldest copies no owed message holds until the rest fit in
        ``keep_bytes``; returns how many directories went."""
        held = set(self.held.values())
        try:
            kept = sorted((d for d in session_dir.iterdir() if d.is_dir() and d not in held),
                          key=lambda d: d.stat().st_mtime, reverse=True)
        except FileNotFoundError:
            return 0
        total, removed = 0, 0
        for directory in kept:
            with contextlib.suppress(OSError):
                total += _tree_bytes(directory)
            if total > self.keep_bytes:
                shutil.rmtree(directory, ignore_errors=True)
                removed += 1
        return removed

    def drop_session(self, session: str) -> None:
        """The session is archived: whatever it still has goes."""
        directory = self.session_dir(session)
        self.held = {i: d for i, d in self.held.items() if d.parent != directory}
        shutil.rmtree(directory, ignore_errors=True)

    def sweep(self, owed: Iterable[tuple[int, Sequence[str]]], sessions: Iterable[str]) -> int:
        """At start-up: hold the copies of the messages still owed an answer (id and
        attachment paths); remove the copies of sessions not among ``sessions`` (gone or
        archived) and trim the others; returns how many directories went."""
        self.held.clear()
        for message_id, paths in owed:
            for path in paths:
                directory = Path(path).parent
                if directory.parent.parent == self.root:
                    self.held[message_id] = directory
        live = set(sessions)
        removed = 0
        with contextlib.suppress(FileNotFoundError):
            for session_dir in self.root.iterdir():
                if not session_dir.is_dir():
                    continue
                if session_dir.name in live:
                    removed += self.trim(session_dir)
                    continue
                holds = {d for d in self.held.values() if d.parent == session_dir}
                for directory in session_dir.iterdir():
                    if directory not in holds:
                        shutil.rmtree(directory, ignore_errors=True)
                        removed += 1
        if removed:
            log.info("removed %d attachment copies of sessions gone or archived, or past what a session keeps",
                     removed)
        return removed
