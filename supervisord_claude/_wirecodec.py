"""The internal wire's frames (see ``_wire``): one ``encode`` and one ``decode`` of every
message, and the hot paths of events — a keeper's event or run of events packed without
making objects, read back checked an item type at a time.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

import msgpack

from protocol import EventKind
from protocol._packedmap import is_map as is_packed_map

from ._wiremessages import (
    Ack,
    Bye,
    ClaudeStarted,
    ConversationStarted,
    Deliver,
    Delta,
    DropQueued,
    Exited,
    Hello,
    Interrupt,
    InterruptReport,
    KeeperEvent,
    KeeperEvents,
    KeeperSpec,
    Message,
    Permit,
    QueuedMessage,
    Rejected,
    SetBudget,
    SetMode,
    SetModel,
    SetRules,
    SetTimeout,
    Spawn,
    Spawned,
    SpawnFailed,
    Stop,
    Suspend,
    Welcome,
    _message_id,
    _packb,
    pack_body,
)


class WireError(ValueError):
    """A frame that is not a well-formed internal message."""


_TYPES: dict[str, type[Message]] = {
    cls.TAG: cls
    for cls in (Spawn, Spawned, SpawnFailed, Exited, Hello, ClaudeStarted, ConversationStarted,
                KeeperEvent, KeeperEvents, Rejected, Bye, Delta, InterruptReport, Welcome, Ack, Deliver, Interrupt, Suspend, DropQueued, Stop,
                SetTimeout,
                SetModel, SetMode, SetRules, SetBudget, Permit)
}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def _event_frame(kind: str, message_id: int | None, packed_body: bytes, n: int) -> bytes:
    frame: bytes = _packb({"t": "event", "kind": kind, "m": message_id, "b": packed_body, "n": n})
    return frame


def encode_event(kind: str, body: dict[str, Any], n: int) -> bytes:
    """``encode(KeeperEvent.of(kind, body), n)`` without making the object: the hot path,
    every line of Claude's output is one."""
    return _event_frame(kind, _message_id(body), pack_body(body), n)


def run_item(kind: str, body: dict[str, Any]) -> bytes:
    """One event as it goes in a run (``KeeperEvents.events``): its kind, message id and
    packed body, packed back to back (a run is their concatenation; see ``encode_run``)."""
    return run_item_packed(kind, _message_id(body), pack_body(body))


def run_item_packed(kind: str, message_id: int | None, packed_body: bytes) -> bytes:
    # a fixarray of 3 packs as one header byte, then its items: the items are the rest
    item: bytes = _packb((kind, message_id, packed_body))
    return item[1:]


_RUN_HEAD = b"\x83" + _packb("t") + _packb(KeeperEvents.TAG) + _packb("n")
_array_header = msgpack.Packer().pack_array_header


def encode_run(first_n: int, items: list[bytes]) -> bytes:
    """A ``KeeperEvents`` of the events packed by ``run_item``, numbered from ``first_n``,
    without unpacking or packing them again."""
    return b"".join((_RUN_HEAD, _packb(first_n), _packb("e"), _array_header(3 * len(items)), *items))


def encode_flat_run(first_n: int, flat: list[Any]) -> bytes:
    """``encode_run`` of a run kept flat (``KeeperEvents.events``: kind, message id, packed
    body, …), packed in one call: the same bytes (an array's header, then its items)."""
    return b"".join((_RUN_HEAD, _packb(first_n), _packb("e"), _packb(flat)))


def encode(msg: Message, n: int | None = None) -> bytes:
    """One message as a frame; ``n`` numbers a report (instead of its own ``n``)."""
    if type(msg) is KeeperEvent:
        return _event_frame(msg.kind, msg.message_id, msg.packed, msg.n if n is None else n)
    if type(msg) is KeeperEvents:
        return encode_flat_run(msg.n if n is None else n, msg.events)
    fields = _plain(msg)
    assert isinstance(fields, dict)
    if n is not None:
        fields["n"] = n
    packed = msgpack.packb({"t": msg.TAG, **fields}, use_bin_type=True)
    return packed


def _queued(raw: Any) -> QueuedMessage:
    if not isinstance(raw, dict):
        raise WireError("a queued message is a map")
    return QueuedMessage(int(raw["id"]), str(raw["text"]), tuple(str(a) for a in raw.get("attachments") or ()),
                         raw.get("steer") is True)


def spec_from(raw: Any) -> KeeperSpec:
    if not isinstance(raw, dict):
        raise WireError("a keeper spec is a map")
    known = {f.name for f in dataclasses.fields(KeeperSpec)}
    unknown = set(raw) - known
    if unknown:
        raise WireError(f"unknown keeper spec fields {sorted(unknown)}")
    values = dict(raw)
    values["extra_args"] = tuple(values.get("extra_args") or ())
    values["allowed_tools"] = tuple(values.get("allowed_tools") or ())
    values["messages"] = tuple(_queued(m) for m in values.get("messages") or ())
    return KeeperSpec(**values)


def decode(data: bytes) -> Message:
    """The message in one frame; ``WireError`` for anything else."""
    try:
        raw = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise WireError(f"undecodable frame: {exc}") from None
    return _message(raw)


def decode_all(data: bytes) -> list[Message | WireError]:
    """The messages of a frame that holds one or more back to back (a keeper sends what
    it reported in one loop turn as one frame), each decoded or the error it raised; a
    frame that cannot be read past some point ends in one WireError."""
    out: list[Message | WireError] = []
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(data), 1))
    unpacker.feed(data)
    try:
        for raw in unpacker:
            try:
                out.append(_message(raw))
            except WireError as exc:
                out.append(exc)
    except (ValueError, msgpack.UnpackException) as exc:
        out.append(WireError(f"undecodable frame: {exc}"))
    if not out:
        out.append(WireError("empty frame"))
    return out


def _event(raw: dict[str, Any]) -> KeeperEvent:
    """A KeeperEvent, the hot path (one per line of Claude's output): checked, then made
    without the frozen dataclass's __init__ (several times slower, per field). The body
    is checked to be a packed map by its first byte, not parsed: the keeper socket is
    private to the instance (0700 runtime dir), and its keepers are trusted as they are
    with everything else they report."""
    kind, packed, message_id, n = raw.get("kind"), raw.get("b"), raw.get("m"), raw.get("n", 0)
    if len(raw) != 5 or type(kind) is not str or type(packed) is not bytes or type(n) is not int \
            or not (message_id is None or type(message_id) is int) or not packed or not is_packed_map(packed[0]):
        if "body" in raw:
            return _event_of_wire_3(raw)
        raise WireError("malformed event message")
    event = object.__new__(KeeperEvent)
    event.__dict__.update(kind=kind, packed=packed, message_id=message_id, n=n)
    return event


_MESSAGE_ID_TYPES = frozenset({int, type(None)})
#: the first bytes of a packed msgpack map (``is_packed_map``)
_MAP_FIRST_BYTES = bytes(b for b in range(256) if is_packed_map(b))
_first_byte = operator.itemgetter(0)


def _events(raw: dict[str, Any]) -> KeeperEvents:
    """A KeeperEvents, checked as ``_event`` checks one event, an item type at a time
    over the whole run (the hot path of a burst)."""
    n, flat = raw.get("n"), raw.get("e")
    if len(raw) != 3 or type(n) is not int or type(flat) is not list or not flat or len(flat) % 3:
        raise WireError("malformed events message")
    kinds, message_ids, bodies = flat[0::3], flat[1::3], flat[2::3]
    # (each check one call over the run: a burst's runs hold up to 1,024 events)
    if set(map(type, kinds)) != {str} or not _MESSAGE_ID_TYPES.issuperset(map(type, message_ids)) \
            or set(map(type, bodies)) != {bytes} or not all(bodies) \
            or bytes(map(_first_byte, bodies)).translate(None, _MAP_FIRST_BYTES):
        raise WireError("malformed event in an events message")
    events = object.__new__(KeeperEvents)
    events.__dict__.update(events=flat, n=n)
    return events


def _event_of_wire_3(raw: dict[str, Any]) -> KeeperEvent:
    """A KeeperEvent as a keeper of wire version 3 (0.2.0) sends it: ``{kind, body, n}``,
    the body a map, and a tool_use's call id under ``id`` (an event's own field now, so
    it travels as ``tool_use_id``)."""
    kind, body, n = raw.get("kind"), raw.get("body"), raw.get("n", 0)
    if len(raw) != 4 or type(kind) is not str or not isinstance(body, dict) or type(n) is not int:
        raise WireError("malformed event message")
    if kind == EventKind.TOOL_USE.value and "id" in body and "tool_use_id" not in body:
        body = {**body, "tool_use_id": body["id"]}
    return KeeperEvent.of(kind, body, n=n)


def _message(raw: Any) -> Message:
    if not isinstance(raw, dict):
        raise WireError("a message is a map")
    tag = raw.get("t")
    if tag == "events":
        return _events(raw)
    if tag == "event":
        return _event(raw)
    cls = _TYPES.get(raw.pop("t", None))
    if cls is None:
        raise WireError("unknown message type")
    try:
        if cls is Spawn:
            return Spawn(int(raw["token"]), spec_from(raw["spec"]))
        if cls is Deliver:
            return Deliver(_queued(raw["message"]))
        if cls is Rejected:
            return Rejected(tuple(int(i) for i in raw["ids"]), n=int(raw.get("n", 0)))
        if cls is Hello:
            if "resumed" in raw:  # (its name in a keeper of an earlier release)
                raw.setdefault("started", raw.pop("resumed"))
            raw["queued"] = tuple(int(i) for i in raw.get("queued") or ())
            raw["pending"] = tuple(p for p in raw.get("pending") or () if isinstance(p, dict))
            raw["steered"] = tuple(int(i) for i in raw.get("steered") or ())
            raw["last_n"] = None if raw.get("last_n") is None else int(raw["last_n"])
        if cls is InterruptReport:
            raw["next"] = tuple(int(i) for i in raw.get("next") or ())
        if cls is Permit:
            raw["rules"] = tuple(str(r) for r in raw.get("rules") or ())
        return cls(**raw)
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"malformed {cls.TAG} message: {exc}") from None
