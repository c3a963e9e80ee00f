"""claudectl's waiting commands (``ctl/_messages``) across a link that drops for a moment."""

from __future__ import annotations

import pytest

from protocol import ConnectionFailed, RemoteError
from supervisord_claude.ctl._messages import ack


class Subscription:
    def __init__(self, error: Exception | None) -> None:
        self.error = error
        self.acked: list[int] = []

    async def ack(self, event_id: int) -> None:
        if self.error is not None:
            raise self.error
        self.acked.append(event_id)


async def test_an_ack_that_gets_no_answer_does_not_end_send_wait() -> None:
    """(ssh to another host redialling: ``send --wait`` exited 1 with "no reply to 'ack'"
    although the answer was still coming; acks are cumulative, the next one covers it)"""
    await ack(Subscription(ConnectionFailed("no reply to 'ack' from the supervisor in time")), 5)
    fine = Subscription(None)
    await ack(fine, 6)
    assert fine.acked == [6]


async def test_an_ack_the_supervisor_refuses_is_still_an_error() -> None:
    with pytest.raises(RemoteError):
        await ack(Subscription(RemoteError("not_found", "no subscription 3")), 5)
