"""The supervisor's keeper socket (``KeeperSocket``): what a keeper sends is handed over,
in order, even when the supervisor's own sends take the descriptor's signal of it, and
when it comes during a gathering pause (read at the pause's end; at once after a quiet
spell)."""

from __future__ import annotations

import asyncio
import contextlib
import select
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.asyncio

from supervisord_claude import _wire
from supervisord_claude._clock import Clock, FakeClock
from supervisord_claude._configkeys import Config
from supervisord_claude.supervisor._supervisor import READ_BUSY, READ_GATHER, KeeperSocket

from .test_clock import until

IDENT = b"s1:4242"


@dataclass
class Link:
    keepers: KeeperSocket
    keeper: zmq.Socket[bytes]
    got: asyncio.Queue[tuple[bytes, _wire.Message]]  # (each message handed over)

    async def next(self) -> tuple[bytes, _wire.Message]:
        return await asyncio.wait_for(self.got.get(), 10)


@contextlib.asynccontextmanager
async def served(tmp_path: Path, clock: Clock | None = None) -> AsyncIterator[Link]:
    """A served keeper socket and one keeper's DEALER connected to it."""
    config = Config(runtime_dir=tmp_path / "run", state_dir=tmp_path / "state", claude_bin="/bin/true")
    config.runtime_dir.mkdir(mode=0o700)
    ctx = zmq.asyncio.Context()
    keepers = KeeperSocket(ctx, config, clock)
    keeper: zmq.Socket[bytes] = zmq.Socket(ctx, zmq.DEALER)
    keeper.setsockopt(zmq.IDENTITY, IDENT)
    keeper.connect(f"ipc://{keepers.path}")
    link = Link(keepers, keeper, asyncio.Queue())

    def on_messages(batch: list[tuple[bytes, _wire.Message]]) -> None:
        for each in batch:
            link.got.put_nowait(each)

    serving = asyncio.ensure_future(keepers.serve(on_messages))
    try:
        yield link
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        keeper.close(0)
        keepers.close()
        ctx.term()


async def test_a_frame_that_came_while_the_supervisor_sent_is_still_read(tmp_path: Path) -> None:
    async with served(tmp_path) as link:
        link.keeper.send(_wire.encode(_wire.Delta(1, "first")))
        assert await link.next() == (IDENT, _wire.Delta(1, "first"))
        # the next frame arrives (the descriptor says so) and, before the loop looks, the
        # supervisor sends to the keeper: the send takes the signal of the frame
        fd = int(link.keepers.sock.get(zmq.FD))
        link.keeper.send(_wire.encode(_wire.Delta(1, "second")))
        assert select.select([fd], [], [], 10)[0]
        assert link.keepers.send(IDENT, _wire.Ack(7))
        assert await link.next() == (IDENT, _wire.Delta(1, "second"))
        assert _wire.decode(link.keeper.recv()) == _wire.Ack(7)


async def test_a_report_that_comes_during_the_gathering_pause_is_read_when_it_ends(tmp_path: Path) -> None:
    clock = FakeClock()  # (moves only when the test says: what is read without it was read at once)
    async with served(tmp_path, clock) as link:
        # after a quiet spell: read at once, no pause
        link.keeper.send(_wire.encode(_wire.Delta(1, "first")))
        assert await link.next() == (IDENT, _wire.Delta(1, "first"))
        assert not link.keepers.gathering and clock.pending == 0
        # right after a read (the clock has not moved): the next report waits for the pause's end
        link.keeper.send(_wire.encode(_wire.Delta(1, "second")))
        await until(lambda: link.keepers.gathering, "the socket pauses to gather")
        # the supervisor sends meanwhile (the send may take the descriptor's signal): the
        # report still waits for the pause's end, and is read then
        assert link.keepers.send(IDENT, _wire.Ack(7))
        await asyncio.sleep(0)
        assert link.got.empty()
        clock.advance(READ_GATHER)
        assert await link.next() == (IDENT, _wire.Delta(1, "second"))
        # a pause that gathered one report: the socket listens again
        assert not link.keepers.gathering
        # a quiet spell again: the next report is read at once
        clock.advance(1.0)
        link.keeper.send(_wire.encode(_wire.Delta(1, "third")))
        assert await link.next() == (IDENT, _wire.Delta(1, "third"))
        assert clock.pending == 0


async def test_the_supervisors_own_send_after_a_read_starts_no_gathering_pause(tmp_path: Path) -> None:
    """The pool acks a keeper's reports after every read: that send (which signals as a
    frame's arrival may) started a gathering pause though nothing had come — the reader off
    and on again, a timer's wake-up, and the next report after a quiet spell waited up to
    READ_GATHER."""
    clock = FakeClock()
    async with served(tmp_path, clock) as link:
        link.keeper.send(_wire.encode(_wire.Delta(1, "first")))
        assert await link.next() == (IDENT, _wire.Delta(1, "first"))
        assert link.keepers.send(IDENT, _wire.Ack(1))  # right after the read (the clock has not moved)
        assert _wire.decode(link.keeper.recv()) == _wire.Ack(1)
        await asyncio.sleep(0)  # (what the send scheduled runs)
        assert not link.keepers.gathering and clock.pending == 0
        clock.advance(READ_BUSY)  # a quiet spell: the next report is read at once
        link.keeper.send(_wire.encode(_wire.Delta(1, "second")))
        assert await link.next() == (IDENT, _wire.Delta(1, "second"))


async def test_the_socket_gathers_while_its_pauses_gather_more_than_one_report(tmp_path: Path) -> None:
    clock = FakeClock()
    async with served(tmp_path, clock) as link:
        link.keeper.send(_wire.encode(_wire.Delta(1, "first")))
        assert await link.next() == (IDENT, _wire.Delta(1, "first"))
        # two reports (one frame, as a keeper sends a loop turn's) during the pause
        link.keeper.send(_wire.encode(_wire.Delta(1, "second")) + _wire.encode(_wire.Delta(1, "third")))
        await until(lambda: link.keepers.gathering, "the socket pauses to gather")
        clock.advance(READ_GATHER)
        assert [await link.next(), await link.next()] == [(IDENT, _wire.Delta(1, "second")),
                                                          (IDENT, _wire.Delta(1, "third"))]
        # still steady: the next report waits for the next pause's end, READ_GATHER after
        assert link.keepers.gathering
        link.keeper.send(_wire.encode(_wire.Delta(1, "fourth")))
        await until(lambda: int(link.keepers.sock.get(zmq.EVENTS)) & zmq.POLLIN, "the report has come")
        await asyncio.sleep(0)
        assert link.got.empty()
        clock.advance(READ_GATHER)
        assert await link.next() == (IDENT, _wire.Delta(1, "fourth"))
        assert not link.keepers.gathering  # (that pause gathered one: listening again)


async def test_a_keeper_sending_steadily_has_every_report_read_in_order(tmp_path: Path) -> None:
    frames = 500
    async with served(tmp_path) as link:
        for i in range(frames):
            link.keeper.send(_wire.encode(_wire.Delta(1, str(i))))
            if i % 50 == 0:
                await asyncio.sleep(0.002)  # (a steady sender, not one burst: reads meet pauses)
        got = [await link.next() for _ in range(frames)]
        assert got == [(IDENT, _wire.Delta(1, str(i))) for i in range(frames)]
