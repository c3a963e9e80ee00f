"""The event log: every session event goes record → store → publish, in order, here.

It owns the rules of what an event changes (session fields, the message's status, in the
same transaction), the origin each turn's events carry, batching, and the disk-full
buffer: if the store fails, events wait in memory, in order with every later one, and are
stored and published as soon as it works again.

Events recorded inside ``batch()`` (everything the keepers sent since the last loop turn)
are stored in one transaction and published together when it ends: one commit and one
pass over the subscribers for many events, and still no event published before it is
stored. A keeper's run of events of the kinds that change nothing else (``PLAIN_KINDS``:
Claude's text, errors) is recorded as one unit (``record_run``): one write, one
stored row, one slice of bytes to each subscriber, no Python per event but building it.

What it tells the rest of the supervisor goes through one ``EventListener`` (given when
it is made): every event recorded (the watcher), the messages done (the pool), and the
pids its log lines name.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import msgpack

from protocol import EventKind, SessionState, _packedmap, cost_fields, permission_mode_of
from protocol._vocabulary import missing_mode_fields

from .._clock import Clock
from .._errors import StoreError
from ._store import (
    COST_ADDED,
    DONE,
    FAILED,
    NO_UPDATES,
    QUEUED,
    WRITTEN,
    EventWrite,
    Store,
)
from ._storeruns import RunWrite, StoredRun

log = logging.getLogger("supervisord_claude")

#: a message's status after an event of its turn
_STATUS_AFTER = {EventKind.USER: WRITTEN, EventKind.RESULT: DONE, EventKind.MESSAGE_FAILED: FAILED,
                 # a steered message is written mid-turn, and answered once Claude took it
                 # into that turn (the turn's result, or its failure, is its answer)
                 EventKind.STEERED: WRITTEN, EventKind.TAKEN: DONE}
#: the kinds of event that change their session's row (see _session_updates)
_UPDATES_SESSION = frozenset({EventKind.STATE, EventKind.RESULT, EventKind.USER, EventKind.SETTINGS})
#: the kinds that may carry a permission mode (reported under both its names)
_NAMES_A_MODE = frozenset({EventKind.SETTINGS, EventKind.PERMISSION_RESOLVED})
STORE_RETRY = 1.0
_ORIGIN_CACHE = 10_000
#: an event kind by its wire name
_KINDS = {kind.value: kind for kind in EventKind}
#: writes (events, or runs of them) stored in one transaction at most (a burst is
#: stored in several)
MAX_BATCH = 2048
#: the kinds no part of the supervisor acts on but the watcher, as output (each one
#: changes nothing but itself: no session field, no message status, nothing a keeper's
#: handle or a turn's tools and prompts hold): a keeper's run of them is one unit
PLAIN_KINDS = frozenset({EventKind.ASSISTANT_TEXT.value, EventKind.ERROR.value})


class EventListener(Protocol):
    """What the event log tells the rest of the supervisor (``build_core``'s)."""

    def recorded(self, session: str, kind: EventKind, message_id: int | None, body: dict[str, Any] | None,
                 packed: bytes | None) -> None:
        """An event was recorded (the watcher: ``_watch.Watcher.event``); its body, or only
        its packed body (a keeper's event: the watcher unpacks the few it reads). Of a
        run of plain events, each change of kind or message is told once."""

    def message_done(self, session: str, message_id: int) -> None:
        """A message left the queue for good (written, answered or failed)."""

    def pids_of(self, session: str) -> dict[str, int | None]:
        """A session's keeper_pid and claude_pid, for the log line of each state change."""


class EventLog:
    def __init__(self, store: Store, clock: Clock, wall: Callable[[], float],
                 publish: Callable[[list[StoredRun]], None], listener: EventListener) -> None:
        self.store = store
        self.clock = clock
        self.wall = wall
        self.publish = publish
        self.listener = listener
        self._unstored: collections.deque[EventWrite | RunWrite] = collections.deque()
        self._origins: dict[int, str] = {}
        self._packed_origins: dict[int, bytes] = {}
        self._retry_armed = False
        self._failing = False
        self._batching = 0

    @property
    def waiting(self) -> int:
        """Events not stored yet (the store is failing)."""
        return len(self._unstored)

    def record(self, session: str, kind: EventKind, body: dict[str, Any],
               keeper: tuple[int, int] | None = None) -> None:
        """Store an event (with the session and message changes it implies) and publish it.
        ``keeper`` = (pid, n): the keeper's report it came in, stored with it, so a new
        supervisor knows what to ask that keeper to send again."""
        if kind is EventKind.RESULT:  # the turn's and the conversation's cost, by name
            body = {**body, **cost_fields(body)}
        elif kind in _NAMES_A_MODE:  # the permission mode under its name and its v1 name
            body = {**body, **missing_mode_fields(body)}
        message_id = body.get("message_id")
        if isinstance(message_id, int) and "origin" not in body:
            origin = self._origin(message_id)
            if origin is not None:
                body = {**body, "origin": origin}
        self._unstored.append(self._write(session, kind, body, keeper))
        self.listener.recorded(session, kind, message_id if isinstance(message_id, int) else None, body, None)
        if not self._batching:
            self.flush()

    def record_packed(self, session: str, kind: EventKind, packed: bytes, message_id: int | None,
                      keeper: tuple[int, int]) -> None:
        """``record`` for a body that came packed (a keeper's event): stored as it came,
        with its turn's origin added, and unpacked only for the kinds that change the
        session."""
        if message_id is not None:
            origin = self._packed_origin(message_id)
            if origin:
                packed = _packedmap.extend(packed, 1, origin)
        status = _STATUS_AFTER.get(kind) if message_id is not None else None
        updates = NO_UPDATES
        body = None
        if kind in _UPDATES_SESSION:
            body = msgpack.unpackb(packed)
            if kind is EventKind.RESULT:  # (from any keeper, of any release it adopts)
                costs = cost_fields(body)
                packed = _packedmap.with_items(packed, costs)
                body.update(costs)
            elif kind is EventKind.SETTINGS and (names := missing_mode_fields(body)):
                packed = _packedmap.with_items(packed, names)
                body.update(names)
            updates = self._session_updates(session, kind, body)
        self._unstored.append(EventWrite(session, kind, body, updates,
                                         (message_id, status) if message_id is not None and status is not None
                                         else None, keeper, packed, message_id))
        self.listener.recorded(session, kind, message_id, body, packed)
        if not self._batching:
            self.flush()

    def record_run(self, session: str, kinds: list[str], message_ids: list[int | None], bodies: list[bytes],
                   keeper: tuple[int, int]) -> None:
        """``record_packed`` of a keeper's run of events whose kinds are all in
        ``PLAIN_KINDS`` (wire names), as one unit; ``keeper`` = (pid, n of its last)."""
        extras = None
        if any(m is not None for m in message_ids):
            origins: dict[int | None, bytes] = {m: self._packed_origin(m) for m in set(message_ids) if m is not None}
            if any(origins.values()):
                extras = list(map(origins.get, message_ids, itertools.repeat(b"")))
        self._unstored.append(RunWrite(session, kinds, message_ids, bodies, extras, keeper=keeper))
        # (the watcher: each change once; groupby goes over the run without Python per event)
        for (kind, message_id), _ in itertools.groupby(zip(kinds, message_ids, strict=True)):
            self.listener.recorded(session, _KINDS[kind], message_id, None, None)
        if not self._batching:
            self.flush()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Events recorded inside are stored and published together when it ends (or at
        an explicit ``flush``): in one transaction, in order."""
        self._batching += 1
        try:
            yield
        finally:
            self._batching -= 1
            if not self._batching:
                self.flush()

    def fail_messages(self, session: str, ids: list[int], reason: str) -> None:
        """Report each message that is still owed an answer as not delivered."""
        for message_id in ids:
            msg = self.store.get_message(message_id)
            if msg is not None and msg.status in (QUEUED, WRITTEN):
                self.record(session, EventKind.MESSAGE_FAILED, {"message_id": message_id, "reason": reason})

    def flush(self) -> None:
        while self._unstored:
            writes = list(itertools.islice(self._unstored, MAX_BATCH))
            try:
                runs = self.store.append_runs(writes)
            except StoreError as exc:
                if not self._failing:
                    self._failing = True
                    log.error("cannot store events (%s); keeping them in memory and retrying", exc)
                if not self._retry_armed:
                    self._retry_armed = True
                    self.clock.call_later(STORE_RETRY, self._retry)
                return
            if len(writes) == len(self._unstored):
                self._unstored.clear()
            else:
                for _ in writes:
                    self._unstored.popleft()
            if self._failing and not self._unstored:
                self._failing = False
                log.info("the store works again; every waiting event is stored and published")
            for w in writes:
                if type(w) is RunWrite:
                    continue  # (plain events: no message done, no state)
                assert isinstance(w, EventWrite)
                if w.message_status is not None:
                    self.listener.message_done(w.session, w.message_status[0])
                if w.kind is EventKind.STATE and w.body is not None:
                    self._log_state(w.session, w.body)
            self.publish(runs)

    def _log_state(self, session: str, body: dict[str, Any]) -> None:
        """One line per lifecycle event: session, state, reason, pids."""
        fields = {"session": session, "state": body.get("state"), "reason": body.get("reason"),
                  **self.listener.pids_of(session)}
        detail = body.get("detail")
        log.info("session %s is %s (%s%s)", session, fields["state"], fields["reason"],
                 f": {detail}" if detail else "", extra=fields)

    def _write(self, session: str, kind: EventKind, body: dict[str, Any],
               keeper: tuple[int, int] | None) -> EventWrite:
        message_id = body.get("message_id")
        status = _STATUS_AFTER.get(kind) if isinstance(message_id, int) else None
        if not isinstance(message_id, int):
            message_id = None
        return EventWrite(session, kind, body, self._session_updates(session, kind, body),
                          (message_id, status) if message_id is not None and status is not None else None,
                          keeper, None, message_id)

    def _retry(self) -> None:
        self._retry_armed = False
        self.flush()

    def _session_updates(self, session: str, kind: EventKind, body: dict[str, Any]) -> Mapping[str, Any]:
        if kind not in _UPDATES_SESSION:
            return NO_UPDATES  # most events (Claude's text, tools) change nothing else
        updates: dict[str, Any] = {}
        now = self.wall()
        if kind is EventKind.STATE:
            state = SessionState(body["state"])
            updates["state"] = state
            if state is SessionState.SUSPENDED or state is SessionState.FAILED:
                updates["suspended_at"] = now
        elif kind is EventKind.RESULT:
            updates[COST_ADDED] = float(body.get("cost_delta") or 0.0)
            if isinstance(body.get("cost_usd"), (int, float)):
                updates["claude_cost"] = float(body["cost_usd"])
            updates["last_active"] = now
        elif kind is EventKind.USER:
            updates["last_active"] = now
        elif kind is EventKind.SETTINGS:
            updates.update({k: body[k] for k in ("model", "idle_timeout", "allowed_tools", "claude_model")
                            if k in body})
            if (mode := permission_mode_of(body)) is not None:
                updates["permission_mode"] = mode
        return updates

    def _packed_origin(self, message_id: int) -> bytes:
        """A message's origin as the packed ``origin`` entry its events' bodies get
        (b"" if it has none), packed once per message."""
        packed = self._packed_origins.get(message_id)
        if packed is None:
            origin = self._origin(message_id)
            packed = _packedmap.entries_of({"origin": origin}) if origin is not None else b""
            if len(self._packed_origins) > _ORIGIN_CACHE:
                self._packed_origins.clear()
            self._packed_origins[message_id] = packed
        return packed

    def origin_of(self, message_id: int) -> str | None:
        return self._origin(message_id)

    def _origin(self, message_id: int) -> str | None:
        """Who sent a message (e.g. a Telegram chat), so every event of its turn says so."""
        cached = self._origins.get(message_id)
        if cached is None:
            msg = self.store.get_message(message_id)
            cached = (msg.origin if msg else None) or ""
            if len(self._origins) > _ORIGIN_CACHE:
                self._origins.clear()
            self._origins[message_id] = cached
        return cached or None
