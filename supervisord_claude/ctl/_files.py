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

from protocol import FILE_CHUNK_BYTES, Client

from ._common import UsageError

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def put_local_file(client: Client, session: str, path: str) -> str:
    """Put the file at ``path`` (links followed) into ``session``'s uploads on the
    client's host; the path there. Its name there is unique (two sends of one name do
    not overwrite each other)."""
    real = os.path.realpath(os.path.expanduser(path))
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"--attach {path}: cannot be read ({exc.strerror or exc})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UsageError(f"--attach {path}: not an ordinary file")
    size = st.st_size
    with os.fdopen(fd, "rb") as f:
        name = f"claudectl-{secrets.token_hex(4)}-{_UNSAFE.sub('_', os.path.basename(real))[:100]}"
        offset = 0
        while True:
            piece = f.read(FILE_CHUNK_BYTES)
            more = bool(piece) and offset + len(piece) < size
            written = client.put_file(session, name, piece, offset=offset or None, more=more)
            if not more:
                return str(written["path"])
            offset += len(piece)
