"""Frame codec: one msgpack map per ZeroMQ message, with a size limit."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgpack

from ._errors import FrameError
from ._messages import MAX_FRAME_BYTES, PROTOCOL_VERSION, ErrorCode
from ._packedmap import header, split, with_packed_value


def encode(message: dict[str, Any]) -> bytes:
    """Serialise one message map. Adds the protocol version if missing."""
    if "v" not in message:
        message = {"v": PROTOCOL_VERSION, **message}
    data: bytes = msgpack.packb(message, use_bin_type=True)
    return data


def encode_events(sub_id: int, packed_events: list[bytes]) -> bytes:
    """An ``events`` frame, ``{"v", "type": "events", "sub", "events": [...]}``, from events
    msgpack-encoded one by one (so a sender can size frames without encoding twice)."""
    return encode_events_parts(sub_id, len(packed_events), packed_events)


def encode_events_joined(sub_id: int, count: int, joined: bytes) -> bytes:
    """``encode_events`` of ``count`` msgpack-encoded events given back to back (a slice of
    a stored run of events, as the supervisor keeps them)."""
    return encode_events_parts(sub_id, count, (joined,))


def encode_events_parts(sub_id: int, count: int, parts: Iterable[bytes | memoryview]) -> bytes:
    """``encode_events`` of ``count`` msgpack-encoded events given in parts, each one or
    more back to back (views of stored runs: the frame is the one copy made of them)."""
    own, entries = split(_PACKER.pack({"v": PROTOCOL_VERSION, "type": "events", "sub": sub_id}))
    return b"".join((header(own + 1), entries, _EVENTS_KEY, _PACKER.pack_array_header(count), *parts))


def encode_event(sub_id: int, packed_event: bytes) -> bytes:
    """An ``event`` frame, ``{"v", "type": "event", "sub", "event"}``, from one
    msgpack-encoded event."""
    return with_packed_value(_PACKER.pack({"v": PROTOCOL_VERSION, "type": "event", "sub": sub_id}), "event",
                             packed_event)


_PACKER = msgpack.Packer(use_bin_type=True)
_EVENTS_KEY = _PACKER.pack("events")


def decode(frame: bytes, max_bytes: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """Parse one frame into a map with string keys, or raise ``FrameError``."""
    if len(frame) > max_bytes:
        raise FrameError(
            f"frame of {len(frame)} bytes exceeds the limit of {max_bytes} bytes",
            ErrorCode.TOO_LARGE,
        )
    try:
        obj = msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
        )
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise FrameError(f"frame is not valid msgpack: {type(exc).__name__}") from exc
    if not isinstance(obj, dict):
        raise FrameError(f"frame must be a msgpack map, got {type(obj).__name__}")
    for key in obj:
        if not isinstance(key, str):
            raise FrameError("frame map keys must be strings")
    return obj
