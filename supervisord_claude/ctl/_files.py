"""``claudectl --host NAME send --attach FILE``: a file of this machine for a session of
another one. The supervisor there reads attachments from its own disk, so the file is
put into the session's ``uploads/`` there first (``put_file``, in pieces of
``FILE_CHUNK_BYTES``: the bot's uploads take the same way) and the path there is what
``send`` attaches. What ``send`` checks of an attachment (an ordinary file, at most
``max_attachment_mib``) is checked by that supervisor, as for a local one."""

from __future__ import annotations

import os
import re
import secrets
import stat
from collections.abc import Iterator
from typing import TYPE_CHECKING, BinaryIO

from protocol import FILE_CHUNK_BYTES, Client

if TYPE_CHECKING:  # (asyncio only for the commands that wait)
    from protocol import AsyncClient

from ._common import UsageError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _local_file(path: str) -> tuple[BinaryIO, int, str]:
    """The file at ``path`` (links followed) opened, its size, and a name for it there:
    unique (two sends of one name do not overwrite each other)."""
    real = os.path.realpath(os.path.expanduser(path))
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"--attach {path}: cannot be read ({exc.strerror or exc})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UsageError(f"--attach {path}: not an ordinary file")
    name = f"claudectl-{secrets.token_hex(4)}-{_UNSAFE.sub('_', os.path.basename(real))[:100]}"
    return os.fdopen(fd, "rb"), st.st_size, name


def _pieces(f: BinaryIO, size: int) -> Iterator[tuple[bytes, int, bool]]:
    """``(piece, offset, more)``: what each ``put_file`` of the file carries."""
    offset = 0
    while True:
        piece = f.read(FILE_CHUNK_BYTES)
        more = bool(piece) and offset + len(piece) < size
        yield piece, offset, more
        if not more:
            return
        offset += len(piece)


def put_local_file(client: Client, session: str, path: str) -> str:
    """Put the file at ``path`` into ``session``'s uploads on the client's host; the path
    there."""
    f, size, name = _local_file(path)
    with f:
        for piece, offset, more in _pieces(f, size):
            written = client.put_file(session, name, piece, offset=offset or None, more=more)
    return str(written["path"])


async def put_local_file_async(client: AsyncClient, session: str, path: str) -> str:
    """``put_local_file`` through the client of a command that waits (``send --wait``)."""
    f, size, name = _local_file(path)
    with f:
        for piece, offset, more in _pieces(f, size):
            written = await client.put_file(session, name, piece, offset=offset or None, more=more)
    return str(written["path"])
