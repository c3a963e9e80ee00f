"""The bot's side of files (``bot/_files``) against the supervisor's real core,
in-process (``protocol.InProcessClient``, as ``test_bot_core``): uploads and fetches
cross in pieces, a file that changes while it is read, and what Telegram would not take,
are said plainly. The same code serves ``name@host`` sessions (``test_hosts_files``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from bot import _files as files
from bot import _sessions as sessions
from bot._link import Link
from protocol import FILE_CHUNK_BYTES

from .test_bot_core import Core, core, link  # noqa: F401 (fixtures)


async def test_an_upload_and_a_fetch_cross_in_pieces(core: Core, link: Link) -> None:  # noqa: F811
    await sessions.new_session(link, 7, ["alpha"])
    content = os.urandom(2 * FILE_CHUNK_BYTES + 7)
    path = await files.upload(link, "alpha", "data.bin", content)
    assert Path(path).read_bytes() == content and Path(path).parent.name == "uploads"
    assert await files.fetch(link, "alpha", "uploads/data.bin") == ("data.bin", content)
    assert await files.upload(link, "alpha", "empty.txt", b"") == str(Path(path).parent / "empty.txt")
    assert await files.fetch(link, "alpha", "uploads/empty.txt") == "empty.txt is empty"
    assert await files.fetch(link, "alpha", "../elsewhere") == "../elsewhere is outside the session's directory"


async def test_a_file_that_changes_while_it_is_read_is_not_sent_half(core: Core, link: Link,  # noqa: F811
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    await sessions.new_session(link, 7, ["alpha"])
    path = Path(await files.upload(link, "alpha", "log.txt", b"a" * (FILE_CHUNK_BYTES + 10)))
    asked = link.request

    async def request(op: str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        reply = await asked(op, timeout, **args)
        if op == "read_file" and not args.get("offset"):  # written to between two pieces
            with path.open("ab") as f:
                f.write(b"more")
        return reply

    monkeypatch.setattr(link, "request", request)
    assert await files.fetch(link, "alpha", "uploads/log.txt") == "log.txt changed while it was read; try again"


async def test_a_file_over_what_telegram_takes_is_refused_before_it_is_read(core: Core,  # noqa: F811
                                                                            link: Link,  # noqa: F811
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    await sessions.new_session(link, 7, ["alpha"])
    monkeypatch.setattr(files, "MAX_SEND_BYTES", 2 * 1024 * 1024)
    await files.upload(link, "alpha", "huge.bin", os.urandom(3 * 1024 * 1024))
    assert await files.fetch(link, "alpha", "uploads/huge.bin") == "huge.bin is 3 MB; Telegram takes at most 2 MB"
