"""A run of events as one unit, from the event log to the store and on to subscribers.

A run is consecutive events of one session stored together (what a keeper reported in
one loop turn): ids ``first_id..last_id``, seqs from ``first_seq``, one ``ts``. It is
written as one ``RunWrite``, stored as one row of ``event_runs`` and kept and read back
as one ``StoredRun``, whose ``data`` is its events exactly as a subscriber gets them —
each the packed body map the keeper sent with the event's own fields (``id``, ``seq``,
``session``, ``ts``, ``kind``; and its turn's ``origin``) appended — back to back, and
``ends`` where each ends. So a subscriber's frame is a slice of ``data`` (``RunSlice``),
and nothing is packed or unpacked per event after the run is built (``pack_run``, once).
"""

from __future__ import annotations

import array
import bisect
import itertools
import operator
import sys
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import msgpack

from protocol import _packedmap

from ._storerecords import NO_UPDATES, StoredEvent

_packb = msgpack.Packer(use_bin_type=True).pack
_ID, _SEQ = _packb("id"), _packb("seq")
#: each byte value as a bytes of one (a fixmap's new header)
_BYTES = [bytes((b,)) for b in range(256)]
_first_byte = operator.itemgetter(0)
_after_first = operator.itemgetter(slice(1, None))


class RunWrite(NamedTuple):
    """A run of one session's events to store as one unit, in order: their kinds (wire
    names), message ids and packed bodies; ``extras`` the packed entries each gets added
    (its turn's ``origin``: one entry, or b""); what they change in their session
    (merged in event order: ``COST_ADDED`` adds) and their messages' new statuses; the
    keeper report (pid, n) of its last event."""

    session: str
    kinds: list[str]
    message_ids: list[int | None]
    blobs: list[bytes]
    extras: list[bytes] | None = None
    updates: Mapping[str, Any] = NO_UPDATES
    statuses: tuple[tuple[int, str], ...] = ()
    keeper: tuple[int, int] | None = None


def own_fields(session: str, ts: float, kind: str) -> bytes:
    """The packed session, ts and kind entries of an event map (the same for a whole
    run's events of one kind)."""
    return b"".join((_packb("session"), _packb(session), _packb("ts"), _packb(ts), _packb("kind"), _packb(kind)))


def pack_run(first_id: int, first_seq: int, session: str, ts: float, kinds: list[str], blobs: list[bytes],
             extras: list[bytes] | None = None) -> tuple[bytes, bytes]:
    """A run's ``data`` and ``ends`` (little-endian uint32 offsets, packed): each event's
    body map with its extra entries and its own fields appended — the one place events
    are built. Where a body already holds one of them, the later one wins when read.

    The bytes are those of ``_pack_each`` (which builds them an event at a time, and
    does for a run with a body that is no small map); here, for the usual run, each part
    of every event is made by one call over the whole run, so that no Python runs per
    event (a burst's events pass here at tens of thousands a second)."""
    if not blobs:
        return b"", b""
    n = len(blobs)
    firsts = list(map(_first_byte, blobs))
    if extras is None or not any(extras):
        extras = None
        heads = [first + 5 for first in firsts]
    else:
        heads = list(map(operator.add, firsts, [6 if extra else 5 for extra in extras]))
    if min(firsts) < 0x80 or max(heads) > 0x8F:  # a body that is no fixmap, or would not stay one
        return _pack_each(first_id, first_seq, session, ts, kinds, blobs, extras)
    tails = {kind: own_fields(session, ts, kind) for kind in set(kinds)}
    events = list(map(b"".join, zip(map(_BYTES.__getitem__, heads), map(_after_first, blobs),
                                    itertools.repeat(b"", n) if extras is None else extras,
                                    itertools.repeat(_ID), map(_packb, range(first_id, first_id + n)),
                                    itertools.repeat(_SEQ), map(_packb, range(first_seq, first_seq + n)),
                                    map(tails.__getitem__, kinds))))
    ends = array.array("I", itertools.accumulate(map(len, events)))
    if sys.byteorder != "little":
        ends.byteswap()
    return b"".join(events), ends.tobytes()


def _pack_each(first_id: int, first_seq: int, session: str, ts: float, kinds: list[str], blobs: list[bytes],
               extras: list[bytes] | None = None) -> tuple[bytes, bytes]:
    """``pack_run``, an event at a time: for any body map."""
    parts: list[bytes] = []
    ends = array.array("I")
    tails: dict[str, bytes] = {}
    end = 0
    event_id, seq = first_id, first_seq
    for i, blob in enumerate(blobs):
        kind = kinds[i]
        tail = tails.get(kind)
        if tail is None:
            tail = tails[kind] = own_fields(session, ts, kind)
        extra = extras[i] if extras is not None else b""
        event = _packedmap.extend(blob, 6 if extra else 5,
                                  b"".join((extra, _ID, _packb(event_id), _SEQ, _packb(seq), tail)))
        parts.append(event)
        end += len(event)
        ends.append(end)
        event_id += 1
        seq += 1
    if sys.byteorder != "little":
        ends.byteswap()
    return b"".join(parts), ends.tobytes()


def _ends_of(packed: bytes) -> array.array[int]:
    ends = array.array("I")
    ends.frombytes(packed)
    if sys.byteorder != "little":
        ends.byteswap()
    return ends


class StoredRun:
    """A stored run (a row of ``event_runs``): its columns, its events' bytes as
    subscribers get them (``data``) and where each ends; the kinds and message ids of a
    run just written (None for one read back: ``events()`` unpacks them)."""

    __slots__ = ("data", "ends", "first_id", "first_seq", "kinds", "last_id", "message_ids", "session", "ts")

    def __init__(self, first_id: int, session: str, first_seq: int, ts: float, data: bytes, ends: bytes,
                 kinds: list[str] | None = None, message_ids: list[int | None] | None = None) -> None:
        self.first_id = first_id
        self.session = session
        self.first_seq = first_seq
        self.ts = ts
        self.data = data
        self.ends = _ends_of(ends)
        self.last_id = first_id + len(self.ends) - 1
        self.kinds = kinds
        self.message_ids = message_ids

    def __len__(self) -> int:
        return len(self.ends)

    def start_of(self, i: int) -> int:
        """Where its event ``i`` (0-based) begins in ``data``."""
        return self.ends[i - 1] if i else 0

    def events(self, start: int = 0, stop: int | None = None) -> list[StoredEvent]:
        """Its events ``start..stop`` (0-based), each on its own."""
        stop = len(self.ends) if stop is None else stop
        data, ends = self.data, self.ends
        out = []
        begin = self.start_of(start)
        for i in range(start, stop):
            end = ends[i]
            kind = self.kinds[i] if self.kinds is not None else None
            message_id = self.message_ids[i] if self.message_ids is not None else None
            out.append(StoredEvent(self.first_id + i, self.session, self.first_seq + i, self.ts, data[begin:end],
                                   kind, message_id))
            begin = end
        return out

    def unpacked(self) -> Iterator[dict[str, Any]]:
        """Its events as maps (a slow path: tools, the newest body of a kind)."""
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max(len(self.data), 1))
        unpacker.feed(self.data)
        yield from unpacker


class RunSlice(NamedTuple):
    """Events ``start..stop`` (0-based, stop excluded) of a stored run."""

    run: StoredRun
    start: int
    stop: int

    @property
    def first_id(self) -> int:
        return self.run.first_id + self.start

    @property
    def last_id(self) -> int:
        return self.run.first_id + self.stop - 1

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def data(self) -> bytes:
        run = self.run
        return run.data[run.start_of(self.start):run.ends[self.stop - 1]]

    def events(self) -> list[StoredEvent]:
        return self.run.events(self.start, self.stop)


def slices_after(runs: list[StoredRun], after_id: int, session: str | None, limit: int,
                 first: int = 0) -> list[RunSlice]:
    """Up to ``limit`` events after the id ``after_id`` (of ``session``) in ``runs`` (in id
    order) from the run ``first`` on, as slices of them."""
    out: list[RunSlice] = []
    for run in itertools.islice(runs, first, None):
        if limit <= 0:
            break
        if run.last_id <= after_id or (session is not None and run.session != session):
            continue
        start = max(0, after_id - run.first_id + 1)
        stop = min(len(run.ends), start + limit)
        out.append(RunSlice(run, start, stop))
        limit -= stop - start
    return out


INSERT_RUN = ("INSERT INTO event_runs(last_id, first_id, session, first_seq, ts, events, ends)"
              " VALUES (?,?,?,?,?,?,?)")
#: events in one row at most when an old event log is moved to runs
MIGRATED_RUN = 2048


#: how many of the newest events, and how many bytes of them, are kept in memory
RECENT_EVENTS = 8192
RECENT_BYTES = 16 * 1024 * 1024


class RecentRuns:
    """The newest stored runs, in id order, without gaps: all there is after any id from
    the first one held on."""

    def __init__(self) -> None:
        self.runs: list[StoredRun] = []
        self.last_ids: list[int] = []
        self.events = 0
        self.bytes = 0

    def clear(self) -> None:
        self.runs, self.last_ids, self.events, self.bytes = [], [], 0, 0

    def add(self, runs: list[StoredRun]) -> None:
        self.runs.extend(runs)
        self.last_ids.extend(r.last_id for r in runs)
        self.events += sum(len(r.ends) for r in runs)
        self.bytes += sum(len(r.data) for r in runs)
        if len(self.runs) > 1 and (self.events > RECENT_EVENTS or self.bytes > RECENT_BYTES):
            # trim to about half the bounds at once, so trimming costs O(1) per run
            keep, events, size = 0, 0, 0
            for run in reversed(self.runs):
                if keep and (events + len(run.ends) > RECENT_EVENTS // 2 or size + len(run.data) > RECENT_BYTES // 2):
                    break
                keep += 1
                events += len(run.ends)
                size += len(run.data)
            del self.runs[:len(self.runs) - keep]
            del self.last_ids[:len(self.last_ids) - keep]
            self.events, self.bytes = events, size

    def after(self, after_id: int, session: str | None, limit: int) -> list[RunSlice] | None:
        """Up to ``limit`` events after ``after_id`` (of ``session``), or None when some of
        them may be older than what is held."""
        if not self.runs or after_id < self.runs[0].first_id - 1:
            return None
        return slices_after(self.runs, after_id, session, limit, bisect.bisect_right(self.last_ids, after_id))


#: how many reads from the file (each of one session, or of all) ``ReadBack`` keeps
READ_BACK_KEPT = 8


class ReadBack:
    """The run the last read from the file stopped in, per session asked for (None: all).
    A subscriber served from the file (it fell behind what ``RecentRuns`` holds) reads on
    where its last read stopped, most often inside the same run (a window of 256 events
    of a run of up to 1,024): the next read is served from here, so each run is read from
    the file and unpacked once, not once a window. One run a read: what it holds is
    bounded. Stored runs never change; a prune clears it."""

    def __init__(self) -> None:
        self._runs: dict[str | None, StoredRun] = {}

    def clear(self) -> None:
        self._runs.clear()

    def keep(self, session: str | None, run: StoredRun | None) -> None:
        """``run`` is the last a read (of ``session``'s events) gave."""
        self._runs.pop(session, None)
        if run is not None:
            self._runs[session] = run
            if len(self._runs) > READ_BACK_KEPT:
                del self._runs[next(iter(self._runs))]

    def after(self, after_id: int, session: str | None, limit: int) -> list[RunSlice] | None:
        """Up to ``limit`` events after ``after_id`` (of ``session``) from the run kept, or
        None when it does not hold the next of them (any event of ``session`` after
        ``after_id`` and before the run's last would be in it: ids are given in order)."""
        run = self._runs.get(session)
        if run is None or not run.first_id - 1 <= after_id < run.last_id:
            return None
        return slices_after([run], after_id, session, limit)


def v1_run(packed: bytes) -> tuple[list[str], list[bytes]]:
    """The kinds and bodies of a run as the event log stored it before (0.3 to this
    change): msgpack [kind, body, kind, body, …], each body its packed map."""
    items = msgpack.unpackb(packed)
    return items[0::2], items[1::2]
