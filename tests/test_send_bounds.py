"""The send path is bounded (issue #30, items 4, 7, 8 and 9): attachments are taken at
``send`` (a copy the keeper reads), a session's queue has a limit with its own error,
``interrupt`` says whether Claude confirmed it, and only the integer 1 is version 1."""

from __future__ import annotations

import msgpack
import zmq

from .conftest import SupervisorProcess


def raw_request(sup: SupervisorProcess, frame: dict[str, object]) -> dict[str, object]:
    """One raw frame on a fresh DEALER socket, and the supervisor's reply to it."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"ipc://{sup.runtime_dir / 'control.sock'}")
        sock.send(msgpack.packb(frame, use_bin_type=True))
        assert sock.poll(30_000), f"no reply to {frame!r}"
        reply: dict[str, object] = msgpack.unpackb(sock.recv())
        return reply
    finally:
        sock.close()
        ctx.term()


# item 9: the protocol version ---------------------------------------------------------

def test_only_the_integer_1_is_protocol_version_1(supervisor: SupervisorProcess) -> None:
    for version in (True, 1.0, "1", None):  # (True == 1 and 1.0 == 1 in Python)
        reply = raw_request(supervisor, {"v": version, "id": 7, "op": "hello"})
        assert reply["ok"] is False, f"v={version!r} was taken as version 1"
        error = reply["error"]
        assert isinstance(error, dict) and error["code"] == "bad_version", error
        assert reply["id"] == 7
    # the integer 1 still is
    assert raw_request(supervisor, {"v": 1, "id": 8, "op": "hello"})["ok"] is True
