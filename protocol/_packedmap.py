"""Packed msgpack maps extended without unpacking them: the one place that reads or writes
a map's header by hand.

An event's body travels packed from the keeper to the store and on to subscribers; what
is added on the way (its turn's origin, the event's own fields, the frame around it) is
appended as packed entries after the map's own, and only the header's count changes.
msgpack gives a map's later value for a key that occurs twice, so an appended key wins.
"""

from __future__ import annotations

from typing import Any

import msgpack

_FIXMAP, _FIXMAP_LAST, _MAP16, _MAP32 = 0x80, 0x8F, 0xDE, 0xDF
_packb = msgpack.Packer(use_bin_type=True).pack


def is_map(first_byte: int) -> bool:
    """Whether a packed value that starts with this byte is a map (fixmap, map 16, map 32)."""
    return _FIXMAP <= first_byte <= _FIXMAP_LAST or first_byte in (_MAP16, _MAP32)


def header(count: int) -> bytes:
    """The shortest header of a map of ``count`` entries."""
    if count < 16:
        return bytes((_FIXMAP | count,))
    if count < 1 << 16:
        return b"\xde" + count.to_bytes(2, "big")
    return b"\xdf" + count.to_bytes(4, "big")


def split(packed: bytes) -> tuple[int, memoryview]:
    """A packed map's entry count and its entries (the bytes after its header); a
    ``ValueError`` if it is no map."""
    first = packed[0] if packed else -1
    if _FIXMAP <= first <= _FIXMAP_LAST:
        return first & 0x0F, memoryview(packed)[1:]
    if first == _MAP16:
        return int.from_bytes(packed[1:3], "big"), memoryview(packed)[3:]
    if first == _MAP32:
        return int.from_bytes(packed[1:5], "big"), memoryview(packed)[5:]
    raise ValueError("not a packed msgpack map")


def extend(packed: bytes, count: int, entries: bytes) -> bytes:
    """The packed map with ``count`` more entries, given packed (key, value, key, value …),
    after its own."""
    first = packed[0] if packed else -1
    if _FIXMAP <= first <= _FIXMAP_LAST and (first & 0x0F) + count < 16:
        # still a fixmap: most event bodies (the hot path: every event sent)
        return b"".join((bytes((first + count,)), memoryview(packed)[1:], entries))
    own, body = split(packed)
    return b"".join((header(own + count), body, entries))


def entries_of(items: dict[str, Any]) -> bytes:
    """A dict's entries packed, without their map's header (for ``extend``)."""
    packed = _packb(items)
    return bytes(split(packed)[1])


def with_items(packed: bytes, items: dict[str, Any]) -> bytes:
    """The packed map with ``items`` added after its own entries (the later wins where a
    key is in both, when it is read)."""
    return extend(packed, len(items), entries_of(items))


def with_packed_value(packed: bytes, key: str, packed_value: bytes) -> bytes:
    """The packed map with one more key whose value is packed already."""
    return extend(packed, 1, _packb(key) + packed_value)
