"""The supervisor's link to the fork server (``_forkserver.Link``)."""

from __future__ import annotations

import asyncio
import socket

from supervisord_claude import _wire
from supervisord_claude.supervisor import _forkserver

SPEC = _wire.KeeperSpec(session="s", instance="i", runtime_dir="/r", claude_bin="/c", cwd="/w",
                        session_id="id", started=False, idle_timeout=60, system_prompt="p" * 2000)


def test_spawns_beyond_what_the_socket_buffers_wait_and_go_out_in_order() -> None:
    # (found under load: 200 sessions woken at once made send() raise EAGAIN in an op)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ours.setblocking(False)
    link = _forkserver.Link(ours)
    got: list[int] = []

    async def scenario() -> None:
        for token in range(300):
            link.spawn(token, SPEC)  # never raises, never blocks the loop
        assert link.backlog  # the socket could not take them all at once
        loop = asyncio.get_running_loop()
        theirs.setblocking(False)
        while len(got) < 300:
            try:
                msg = _wire.decode(theirs.recv(1 << 20))
            except BlockingIOError:
                await asyncio.sleep(0.001)
                continue
            assert isinstance(msg, _wire.Spawn)
            got.append(msg.token)
        await asyncio.sleep(0)
        assert not link.backlog and loop is asyncio.get_running_loop()

    asyncio.run(scenario())
    assert got == list(range(300))
    ours.close()
    theirs.close()
