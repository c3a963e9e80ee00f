"""protocol._packedmap, the one place that edits packed msgpack maps by hand: whatever the
map (fixmap, map 16, map 32) and whatever is appended, it reads back as the map with the
appended keys winning — what the store, the event log and the codec rely on."""

from __future__ import annotations

import functools
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import _packedmap

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
keys = st.text(max_size=6)
# sizes on both sides of the fixmap (16 entries) and map 16 (65,536) limits
small_maps = st.dictionaries(keys, values, max_size=18)
BOUNDARIES = [0, 1, 14, 15, 16, 17, 65_534, 65_535, 65_536, 65_537]


def packed(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def unpacked(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


@functools.lru_cache
def big_map(count: int) -> tuple[dict[str, int], bytes]:
    mapping = {f"k{i}": i for i in range(count)}
    return mapping, packed(mapping)


@settings(max_examples=100, deadline=None)
@given(own=small_maps, extra=small_maps)
def test_a_map_with_items_appended_reads_as_the_map_updated_by_them(own: dict[str, Any],
                                                                    extra: dict[str, Any]) -> None:
    grown = _packedmap.with_items(packed(own), extra)
    assert unpacked(grown) == {**own, **extra}
    assert _packedmap.is_map(grown[0])


@settings(max_examples=100, deadline=None)
@given(own=small_maps, key=keys, value=values)
def test_a_value_packed_already_is_appended_under_its_key(own: dict[str, Any], key: str, value: Any) -> None:
    assert unpacked(_packedmap.with_packed_value(packed(own), key, packed(value))) == {**own, key: value}


@pytest.mark.parametrize("count", BOUNDARIES)
@pytest.mark.parametrize("added", [0, 1, 2, 20])
def test_a_map_grown_across_a_header_size_reads_back_whole(count: int, added: int) -> None:
    """From a fixmap to map 16 and from map 16 to map 32, old keys overwritten or not."""
    own, data = big_map(count)
    extra = {f"k{count - 1 - i}" if i % 2 else f"new{i}": -i for i in range(added)}
    grown = _packedmap.with_items(data, extra)
    assert unpacked(grown) == {**own, **extra}
    assert grown[: len(_packedmap.header(len(own) + added))] == _packedmap.header(len(own) + added)


@settings(max_examples=300, deadline=None)
@given(count=st.sampled_from(BOUNDARIES) | st.integers(0, 2**32 - 1))
def test_a_header_is_the_one_msgpack_writes_and_reads_back(count: int) -> None:
    head = _packedmap.header(count)
    assert head == msgpack.Packer().pack_map_header(count)  # the shortest, as msgpack writes it
    reader = msgpack.Unpacker()
    reader.feed(head)
    assert reader.read_map_header() == count
    assert _packedmap.split(head)[0] == count and len(_packedmap.split(head)[1]) == 0


@settings(max_examples=200, deadline=None)
@given(value=values)
def test_only_a_map_is_taken_for_one(value: Any) -> None:
    data = packed(value)
    assert _packedmap.is_map(data[0]) == isinstance(value, dict)
    if not isinstance(value, dict):
        with pytest.raises(ValueError):
            _packedmap.split(data)


def test_nothing_is_no_map() -> None:
    with pytest.raises(ValueError):
        _packedmap.extend(b"", 1, packed("k") + packed(1))
