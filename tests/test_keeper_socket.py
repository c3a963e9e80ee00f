"""The supervisor's keeper socket (``KeeperSocket``): what a keeper sends is handed over,
in order, even when the supervisor's own sends take the descriptor's signal of it."""

from __future__ import annotations

import asyncio
import contextlib
import select
from pathlib import Path

import zmq
import zmq.asyncio

from supervisord_claude import _wire
from supervisord_claude._configkeys import Config
from supervisord_claude.supervisor._supervisor import KeeperSocket

IDENT = b"s1:4242"


async def test_a_frame_that_came_while_the_supervisor_sent_is_still_read(tmp_path: Path) -> None:
    config = Config(runtime_dir=tmp_path / "run", state_dir=tmp_path / "state", claude_bin="/bin/true")
    config.runtime_dir.mkdir(mode=0o700)
    ctx = zmq.asyncio.Context()
    keepers = KeeperSocket(ctx, config)
    keeper: zmq.Socket[bytes] = zmq.Socket(ctx, zmq.DEALER)
    keeper.setsockopt(zmq.IDENTITY, IDENT)
    keeper.connect(f"ipc://{keepers.path}")
    got: asyncio.Queue[tuple[bytes, _wire.Message]] = asyncio.Queue()

    def on_messages(batch: list[tuple[bytes, _wire.Message]]) -> None:
        for each in batch:
            got.put_nowait(each)

    serving = asyncio.ensure_future(keepers.serve(on_messages))
    try:
        keeper.send(_wire.encode(_wire.Delta(1, "first")))
        assert (await asyncio.wait_for(got.get(), 10)) == (IDENT, _wire.Delta(1, "first"))
        # the next frame arrives (the descriptor says so) and, before the loop looks, the
        # supervisor sends to the keeper: the send takes the signal of the frame
        fd = int(keepers.sock.get(zmq.FD))
        keeper.send(_wire.encode(_wire.Delta(1, "second")))
        assert select.select([fd], [], [], 10)[0]
        assert keepers.send(IDENT, _wire.Ack(7))
        assert (await asyncio.wait_for(got.get(), 10)) == (IDENT, _wire.Delta(1, "second"))
        assert _wire.decode(keeper.recv()) == _wire.Ack(7)
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        keeper.close(0)
        keepers.close()
        ctx.term()
