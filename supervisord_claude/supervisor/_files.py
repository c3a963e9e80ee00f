"""The files of a session's directory, over the protocol: what a client on another
machine (the bot, through ssh) cannot reach on disk itself, and the one path the bot
takes for local sessions too.

- ``put_file``: a file sent to the session (a Telegram upload) is written, in pieces of
  at most ``FILE_CHUNK_BYTES``, into ``<session dir>/uploads/``; the reply names its
  path there, which ``send`` takes as an attachment.
- ``read_file``: a piece of a file inside the session's directory (``/get``, the outbox).
- ``list_dir``: a directory's entries (``/ls``, ``/cd``), inside the directories the
  client names (the bot's roots) or by default the session's own and the sessions dir.
- ``outbox_sent``: a file of the outbox that went out is moved to ``outbox/sent``.

Paths are confined as the bot confined them on its own disk: every link is followed and
the result must stay inside the session's directory (or the allowed directories); the
last component is opened without following a link (one swapped in meanwhile is refused),
never blocking (a FIFO is refused, not waited on). An upload is bounded by
``max_attachment_mib`` — what ``send`` would take — and written to a hidden partial
file (``.NAME.supervisord-claude.part``: a name no file of the user's has), renamed once
its last piece came, so Claude never sees half a file. An upload that fails here (the
disk refuses it, its name cannot be taken) leaves nothing; one its client abandoned (the
bot killed between two pieces) is removed by the next upload to that session, once it
has not been written for ``STALE_UPLOAD_SECONDS``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from pathlib import Path
from typing import Any

from protocol import (
    FILE_CHUNK_BYTES,
    MAX_LIST_ENTRIES,
    OUTBOX_DIR,
    OUTBOX_SENT_DIR,
    UPLOADS_DIR,
    ErrorCode,
)

from .._errors import OpError
from ._attachments import mib_text
from ._opbase import OpsBase
from ._store import SessionRecord

#: what ends the name of an upload's partial file (``.NAME`` before it): ours, so only ours
#: is ever removed
PART_SUFFIX = ".supervisord-claude.part"
#: a partial file not written for this long was abandoned (its client was killed, or gave
#: up): the pieces of one under way come seconds apart
STALE_UPLOAD_SECONDS = 3600

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _inside(target: Path, base: Path) -> bool:
    return target == base or base in target.parents


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _directory(rec: SessionRecord) -> Path:
    """The session's directory, its links followed; ``not_found`` if it is gone."""
    cwd = Path(rec.cwd).resolve()
    if not cwd.is_dir():
        raise OpError(ErrorCode.NOT_FOUND, f"the directory of session '{rec.name}' ({rec.cwd}) is gone")
    return cwd


def _subdirectory(rec: SessionRecord, name: str) -> Path:
    """``<session dir>/<name>``, made if missing, as a real directory inside the
    session's directory (a link out of it is refused)."""
    cwd = _directory(rec)
    path = cwd / name
    try:
        path.mkdir(exist_ok=True)
    except OSError as exc:
        raise OpError(ErrorCode.STORAGE, f"cannot make {path}: {_why(exc)}") from None
    real = path.resolve()
    if not _inside(real, cwd) or not real.is_dir():
        raise OpError(ErrorCode.BAD_REQUEST, f"{path} leads out of the directory of session '{rec.name}' ({real});"
                      " nothing was done")
    return real


class FileOps(OpsBase):
    """The file ops (``_ops.Ops`` puts them with the others)."""

    def op_put_file(self, ident: bytes, session: str, name: str, data: bytes, offset: int | None = None,
                    more: bool = False) -> dict[str, Any]:
        """A piece of a file sent to the session: ``data`` at ``offset`` (default 0; a
        piece sent again replaces itself and what followed it). Without ``more`` (more
        pieces follow) the file is complete and gets its name: ``{path, size}``, else
        ``{size}`` (bytes so far)."""
        offset = offset or 0
        uploads = _subdirectory(self._session(session), UPLOADS_DIR)
        part = uploads / f".{name}{PART_SUFFIX}"
        if offset == 0:
            _remove_abandoned_uploads(uploads, keep=part)
        limit = self.config.max_attachment_bytes
        if offset + len(data) > limit:
            _unlink(part)
            raise OpError(ErrorCode.TOO_LARGE, f"{name} is over {mib_text(limit)}, what a file sent to Claude may be"
                          " (max_attachment_mib); nothing was saved")
        try:
            fd = os.open(part, _WRITE_FLAGS | (os.O_TRUNC if offset == 0 else 0), 0o600)
        except OSError as exc:
            raise OpError(ErrorCode.STORAGE, f"cannot save {name} in {uploads}: {_why(exc)}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OpError(ErrorCode.BAD_REQUEST, f"{part} is not an ordinary file; nothing was saved")
            if offset > st.st_size:
                raise OpError(ErrorCode.BAD_REQUEST, f"a piece of {name} is missing: it has {st.st_size} bytes so"
                              f" far, and this piece starts at {offset}; send it again from there")
            os.ftruncate(fd, offset)
            written = 0
            while written < len(data):
                written += os.pwrite(fd, data[written:], offset + written)
        except OSError as exc:
            _unlink(part)
            raise OpError(ErrorCode.STORAGE, f"cannot save {name} in {uploads}: {_why(exc)}; nothing was"
                          " saved") from None
        finally:
            os.close(fd)
        size = offset + len(data)
        if more:
            return {"size": size}
        target = uploads / name
        try:
            os.replace(part, target)  # (a link of that name is replaced, never followed)
        except OSError as exc:
            _unlink(part)
            raise OpError(ErrorCode.BAD_REQUEST, f"cannot save {name} as {target}: {_why(exc)}; nothing was"
                          " saved") from None
        return {"path": str(target), "size": size}

    def op_read_file(self, ident: bytes, session: str, path: str, offset: int | None = None,
                     length: int | None = None) -> dict[str, Any]:
        """A piece of a file inside the session's directory, ``length`` bytes (default
        and at most ``FILE_CHUNK_BYTES``) from ``offset`` (default 0): ``{path, name,
        size, mtime_ns, offset, data}`` (``data`` empty past its end). A client reading it
        in pieces knows by ``size`` and ``mtime_ns`` whether it changed meanwhile."""
        offset, length = offset or 0, length or FILE_CHUNK_BYTES
        cwd = _directory(self._session(session, allow_archived=True))
        target = (cwd / path).resolve()
        if not _inside(target, cwd):
            raise OpError(ErrorCode.BAD_REQUEST, f"{path} is outside the session's directory")
        try:
            fd = os.open(target, _READ_FLAGS)
        except FileNotFoundError:
            raise OpError(ErrorCode.NOT_FOUND, f"{target.name} cannot be read (No such file or directory)") from None
        except OSError as exc:
            raise OpError(ErrorCode.BAD_REQUEST, f"{target.name} cannot be read ({_why(exc)})") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OpError(ErrorCode.BAD_REQUEST, f"{target.name} is not an ordinary file")
            data = os.pread(fd, length, offset)
        except OSError as exc:
            raise OpError(ErrorCode.BAD_REQUEST, f"{target.name} cannot be read ({_why(exc)})") from None
        finally:
            os.close(fd)
        return {"path": str(target), "name": target.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "offset": offset, "data": data}

    def op_list_dir(self, ident: bytes, session: str | None = None, path: str | None = None,
                    within: list[str] | None = None) -> dict[str, Any]:
        """A directory's entries, directories first, then by name: ``{path, entries:
        [{name, kind, dir, size, mtime}], total}``. ``path`` (``~`` is this machine's
        home) is taken from the session's directory (without a session, from the first
        of ``within``) and must lead, links followed, inside one of ``within`` — by
        default the session's directory and the sessions dir. ``kind`` is what the entry
        itself is (``file``, ``dir``, ``link``, ``other``), ``dir`` whether it leads to a
        directory (a link may)."""
        if session is not None:
            rec = self._session(session, allow_archived=True)
            roots = within or [rec.cwd, str(self.config.base_cwd)]
            base = Path(rec.cwd)
        else:
            roots = within or [str(self.config.base_cwd)]
            base = Path(roots[0])
        raw = path or "."
        target = (base / os.path.expanduser(raw)).resolve()
        allowed = [Path(root).resolve() for root in roots]
        if not any(_inside(target, root) for root in allowed):
            raise OpError(ErrorCode.BAD_REQUEST,
                          f"{raw} is outside the allowed directories ({', '.join(map(str, allowed))})")
        if not target.exists():
            raise OpError(ErrorCode.NOT_FOUND, f"{target} does not exist")
        if not target.is_dir():
            raise OpError(ErrorCode.BAD_REQUEST, f"{target} is not a directory")
        entries = []
        try:
            with os.scandir(target) as found:
                for entry in found:
                    entries.append(_entry(entry))
        except OSError as exc:
            raise OpError(ErrorCode.BAD_REQUEST, f"cannot list {target} ({_why(exc)})") from None
        entries.sort(key=lambda e: (not e["dir"], str(e["name"]).lower()))
        return {"path": str(target), "entries": entries[:MAX_LIST_ENTRIES], "total": len(entries)}

    def op_outbox_sent(self, ident: bytes, session: str, name: str) -> dict[str, Any]:
        """A file of the session's outbox went out: it is moved to ``outbox/sent``
        (replacing one of that name), so it is not sent again. ``{path}``."""
        rec = self._session(session, allow_archived=True)
        outbox = _subdirectory(rec, OUTBOX_DIR)
        sent = outbox / OUTBOX_SENT_DIR
        try:
            sent.mkdir(exist_ok=True)
        except OSError as exc:
            raise OpError(ErrorCode.STORAGE, f"cannot make {sent}: {_why(exc)}") from None
        if sent.is_symlink() or not sent.is_dir():
            raise OpError(ErrorCode.BAD_REQUEST, f"{sent} is not a directory (a link is not followed)")
        try:
            os.replace(outbox / name, sent / name)
        except FileNotFoundError:
            raise OpError(ErrorCode.NOT_FOUND, f"{name} is not in the outbox of session '{session}'") from None
        except OSError as exc:
            raise OpError(ErrorCode.BAD_REQUEST, f"cannot move {name} to {sent}: {_why(exc)}") from None
        return {"path": str(sent / name)}


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _remove_abandoned_uploads(uploads: Path, keep: Path) -> None:
    """Remove the partial files of uploads abandoned in ``uploads`` (ours only: our
    suffix, a file of ours not a link, not written for ``STALE_UPLOAD_SECONDS``), except
    ``keep`` (the upload starting now)."""
    stale_before = time.time() - STALE_UPLOAD_SECONDS
    with contextlib.suppress(OSError), os.scandir(uploads) as found:
        for entry in found:
            if not (entry.name.startswith(".") and entry.name.endswith(PART_SUFFIX)) or entry.name == keep.name:
                continue
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and st.st_mtime < stale_before:
                    os.unlink(entry.path)


def _entry(entry: os.DirEntry[str]) -> dict[str, Any]:
    """One ``list_dir`` entry (what cannot be read of it counts as nothing)."""
    kind = "other"
    size, mtime = 0, 0.0
    with contextlib.suppress(OSError):
        st = entry.stat(follow_symlinks=False)
        size, mtime = st.st_size, st.st_mtime
        kind = ("dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode)
                else "link" if stat.S_ISLNK(st.st_mode) else "other")
    leads_to_dir = False
    with contextlib.suppress(OSError):
        leads_to_dir = entry.is_dir()
    return {"name": entry.name, "kind": kind, "dir": leads_to_dir, "size": size, "mtime": mtime}
