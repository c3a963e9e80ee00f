"""The SQLite store: sequencing, atomic updates, cursors (recovery after a restart:
tests/test_lifecycle.py)."""

import os
import sqlite3
import subprocess
import sys
import time

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import EventKind, SessionState
from supervisord_claude._errors import StoreError
from supervisord_claude.supervisor import _storeruns
from supervisord_claude.supervisor._store import COST_ADDED, DONE, QUEUED, WRITTEN, EventWrite, Store


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db.sqlite3")
    yield s
    s.close()


def test_events_get_per_session_sequence_numbers_and_global_ids(store: Store) -> None:
    store.create_session("a", "id-a", "/a", None, None)
    store.create_session("b", "id-b", "/b", None, None)
    e1 = store.append_event("a", EventKind.ASSISTANT_TEXT, {"text": "1"})
    e2 = store.append_event("b", EventKind.ASSISTANT_TEXT, {"text": "2"})
    e3 = store.append_event("a", EventKind.ASSISTANT_TEXT, {"text": "3"})
    assert (e1["seq"], e2["seq"], e3["seq"]) == (1, 1, 2)
    assert e1["id"] < e2["id"] < e3["id"]
    assert [e["text"] for e in store.events_after(0, "a")] == ["1", "3"]
    assert [e["text"] for e in store.events_after(e1["id"])] == ["2", "3"]
    assert store.event_id_at_seq("a", 1) == e1["id"]


def test_event_and_session_update_commit_together(store: Store) -> None:
    store.create_session("a", "id", "/a", None, None)
    with pytest.raises(ValueError):
        store.append_event("a", EventKind.STATE, {"state": "idle"}, {"nonsense": 1})
    assert store.events_after(0) == []  # rolled back
    store.append_event("a", EventKind.STATE, {"state": "idle"}, {"state": SessionState.IDLE})
    assert store.get_session("a").state is SessionState.IDLE


def test_a_batch_is_stored_in_order_with_every_change_it_implies(store: Store) -> None:
    store.create_session("a", "id-a", "/a", None, None)
    store.create_session("b", "id-b", "/b", None, None)
    first = store.append_event("a", EventKind.ASSISTANT_TEXT, {"text": "before"})
    m1, _ = store.add_message("a", "one", [])
    m2, _ = store.add_message("a", "two", [])
    events = [e.as_dict() for e in store.append_events([
        EventWrite("a", EventKind.USER, {"message_id": m1}, {}, (m1, WRITTEN)),
        EventWrite("b", EventKind.ASSISTANT_TEXT, {"text": "b1"}),
        EventWrite("a", EventKind.RESULT, {"message_id": m1}, {COST_ADDED: 0.25}, (m1, DONE)),
        EventWrite("a", EventKind.USER, {"message_id": m2}, {"state": SessionState.BUSY}, (m2, WRITTEN)),
        EventWrite("a", EventKind.RESULT, {"message_id": m2},
                   {COST_ADDED: 0.5, "state": SessionState.IDLE}, (m2, DONE)),
    ])]
    assert [e["id"] for e in events] == list(range(first["id"] + 1, first["id"] + 6))
    assert [(e["session"], e["seq"]) for e in events] == [("a", 2), ("b", 1), ("a", 3), ("a", 4), ("a", 5)]
    assert store.events_after(first["id"]) == events  # what is published is what is stored
    a = store.get_session("a")
    assert (a.last_seq, a.cost_usd, a.state) == (5, 0.75, SessionState.IDLE)  # both turns' costs
    assert store.get_session("b").last_seq == 1
    assert store.get_message(m1).status == store.get_message(m2).status == DONE
    assert store.append_event("a", EventKind.ASSISTANT_TEXT, {"text": "after"})["seq"] == 6


def test_a_batch_is_all_or_nothing(store: Store) -> None:
    store.create_session("a", "id-a", "/a", None, None)
    with pytest.raises(StoreError):
        store.append_events([EventWrite("a", EventKind.ASSISTANT_TEXT, {"text": "1"}),
                             EventWrite("gone", EventKind.ASSISTANT_TEXT, {"text": "2"})])
    assert store.events_after(0) == []
    assert store.get_session("a").last_seq == 0


def test_consumer_cursor_only_moves_forward(store: Store) -> None:
    store.set_cursor("bot", 10)
    store.set_cursor("bot", 5)
    assert store.get_cursor("bot") == 10 and store.get_cursor("new") == 0


def test_a_failing_disk_is_a_store_error_not_a_crash(tmp_path) -> None:
    store = Store(tmp_path / "db")
    store.create_session("a", "id", "/a", None, None)
    store._db.execute("PRAGMA max_page_count=1")  # simulate a full disk
    with pytest.raises(StoreError, match="full"):
        for i in range(1000):
            store.append_event("a", EventKind.ASSISTANT_TEXT, {"text": "x" * 10000 + str(i)})
    store._db.execute("PRAGMA max_page_count=1073741823")
    store.append_event("a", EventKind.ASSISTANT_TEXT, {"text": "ok again"})
    store.close()
    assert isinstance(sqlite3.sqlite_version, str)


def test_an_idempotency_key_makes_a_retried_send_a_no_op(store: Store) -> None:
    store.create_session("a", "id", "/a", None, None)
    first, created = store.add_message("a", "hi", [], origin="tg:1", idempotency_key="tg-update:9")
    again, created_again = store.add_message("a", "hi", [], origin="tg:1", idempotency_key="tg-update:9")
    assert created and not created_again and again == first
    assert len(store.messages("a", QUEUED)) == 1
    assert store.get_message(first).origin == "tg:1"


def test_an_old_store_is_migrated(tmp_path) -> None:
    db = sqlite3.connect(tmp_path / "old")
    db.execute("CREATE TABLE messages(id INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT NULL,"
               " text TEXT NOT NULL, attachments BLOB NOT NULL, status TEXT NOT NULL, created REAL NOT NULL)")
    db.commit()
    db.close()
    store = Store(tmp_path / "old")
    store.create_session("a", "id", "/a", None, None)
    assert store.add_message("a", "x", [], origin="o", idempotency_key="k")[1]
    store.close()


def test_pruning_keeps_recent_events_and_what_a_consumer_still_needs(store: Store) -> None:
    store.create_session("a", "id", "/a", None, None)
    old = [store.append_event("a", EventKind.ASSISTANT_TEXT, {"text": str(i)}) for i in range(4)]
    store._db.execute("UPDATE event_runs SET ts = ts - 40 * 86400")
    recent = store.append_event("a", EventKind.ASSISTANT_TEXT, {"text": "new"})
    store.set_cursor("bot", old[1]["id"])  # the bot has handled only the first two
    assert store.prune(older_than=time.time() - 30 * 86400) == 2
    assert [e["text"] for e in store.events_after(0)] == ["2", "3", "new"]
    store.set_cursor("bot", recent["id"])
    assert store.prune(older_than=time.time() - 30 * 86400) == 2
    assert [e["text"] for e in store.events_after(0)] == ["new"]
    assert store.append_event("a", EventKind.ASSISTANT_TEXT, {"text": "after"})["seq"] == 6


# --- what subscribers are sent: the stored bytes, the newest from memory ------------------


def test_what_a_subscriber_is_sent_is_the_stored_event_whether_new_or_read_back(tmp_path) -> None:
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    store.create_session("a", "id-a", "/a", None, None)
    bodies = [{"text": "x" * n, "message_id": n} for n in (0, 5, 300)]
    bodies.append({f"k{i}": i for i in range(20)})  # a map of more than 15 keys
    bodies.append({"id": "toolu_1", "seq": -1, "name": "Read"})  # keys naming event fields
    fresh = store.append_events([EventWrite("a", EventKind.TOOL_USE, b) for b in bodies])
    store.close()
    again = Store(path)  # nothing in memory: read back from the file
    read_back = again.stored_after(0, "a")
    again.close()
    for new, old, body in zip(fresh, read_back, bodies, strict=True):
        expected = {**body, "id": new.id, "session": "a", "seq": new.seq, "ts": new.ts, "kind": "tool_use"}
        assert msgpack.unpackb(new.data) == msgpack.unpackb(old.data) == expected == old.as_dict()
    # an event's own fields are not stored twice in its map
    assert len(msgpack.unpackb(read_back[-1].data)) == 6


events_of_two_sessions = st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 2000)), max_size=60)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(events_of_two_sessions, min_size=1, max_size=6), reads=st.lists(
    st.tuples(st.integers(-1, 200), st.sampled_from([None, "a", "b"]), st.integers(1, 40)), max_size=20))
def test_the_events_held_in_memory_are_exactly_what_the_file_holds(tmp_path_factory, monkeypatch, batches,
                                                                   reads) -> None:
    # a few events and bytes in memory, so the bounds are crossed again and again
    monkeypatch.setattr(_storeruns, "RECENT_EVENTS", 16)
    monkeypatch.setattr(_storeruns, "RECENT_BYTES", 8000)
    path = tmp_path_factory.mktemp("recent") / "db.sqlite3"
    store = Store(path)
    for name in "ab":
        store.create_session(name, f"id-{name}", "/", None, None)
    for batch in batches:
        store.append_events([EventWrite(s, EventKind.ASSISTANT_TEXT, {"text": "x" * n}) for s, n in batch])
        cold = Store(path)  # the same file, nothing in memory
        for after, session, limit in reads:
            held = store.stored_after(after, session, limit)
            assert [e.data for e in held] == [e.data for e in cold.stored_after(after, session, limit)]
        cold.close()
    store.close()


# --- the event log's layout: a row per run of one session's events -------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(events_of_two_sessions, min_size=1, max_size=6), reads=st.lists(
    st.tuples(st.integers(-1, 200), st.sampled_from([None, "a", "b"]), st.integers(1, 40)), max_size=20),
    seqs=st.lists(st.tuples(st.sampled_from("ab"), st.integers(0, 200)), max_size=10))
def test_reading_runs_back_gives_every_event_once_in_order(tmp_path_factory, batches, reads, seqs) -> None:
    """However a batch's events of two sessions interleave (a run ends where the session
    changes), reading back after any id, of either session or both, with any limit, gives
    exactly the events stored after it, in id order, each once; a seq maps to its id."""
    path = tmp_path_factory.mktemp("runs") / "db.sqlite3"
    store = Store(path)
    for name in "ab":
        store.create_session(name, f"id-{name}", "/", None, None)
    stored = []
    for batch in batches:
        stored += [e.as_dict() for e in store.append_events(
            [EventWrite(s, EventKind.ASSISTANT_TEXT, {"text": str(n)}) for s, n in batch])]
    store.close()
    cold = Store(path)  # nothing in memory: every read unpacks runs
    try:
        assert [e["id"] for e in stored] == list(range(1, len(stored) + 1))
        for after, session, limit in reads:
            expected = [e for e in stored if e["id"] > after and session in (None, e["session"])][:limit]
            assert cold.events_after(after, session, limit) == expected
        for session, seq in seqs:
            mine = [e for e in stored if e["session"] == session and e["seq"] <= seq]
            assert cold.event_id_at_seq(session, seq) == (mine[-1]["id"] if mine else 0)
        assert cold.last_event_id() == len(stored)
    finally:
        cold.close()


def test_a_run_is_one_row_and_ids_are_never_reused_after_pruning(store: Store) -> None:
    store.create_session("a", "id-a", "/a", None, None)
    store.create_session("b", "id-b", "/b", None, None)
    store.append_events([EventWrite(s, EventKind.ASSISTANT_TEXT, {"text": s}) for s in "aaabba"])
    assert store._db.execute("SELECT count(*) FROM event_runs").fetchone()[0] == 3  # aaa, bb, a
    assert store.prune(older_than=time.time() + 1) == 6
    assert store.append_event("a", EventKind.ASSISTANT_TEXT, {"text": "next"})["id"] == 7


_packb = msgpack.Packer(use_bin_type=True).pack
#: bodies that stay fixmaps (the usual run) and ones that do not (16 keys or more)
_SMALL_BODIES = [_packb({"text": "x" * n, "message_id": n}) for n in range(0, 600, 7)] \
    + [_packb({f"k{i}": i for i in range(n)}) for n in (0, 9, 10)] + [_packb({"id": "toolu_1", "seq": -1})]
_BIG_BODIES = [_packb({f"k{i}": i for i in range(n)}) for n in (11, 15, 16, 40)]


def test_a_run_is_built_as_the_release_before_built_it() -> None:
    """The bytes a subscriber gets for a run (and where each event ends), for runs of
    small bodies and of any, with and without origins, ids and seqs of every width: the
    sha256 taken from main before runs were built a part at a time (``pack_run``)."""
    import hashlib

    origin = _packb("origin") + _packb("telegram:42")
    digest = hashlib.sha256()
    for bodies in (_SMALL_BODIES, _SMALL_BODIES + _BIG_BODIES):
        kinds = [("assistant_text", "tool_use", "tool_result")[i % 3] for i in range(len(bodies))]
        for first_id, first_seq in ((1, 1), (65530, 120), (2**32 - 3, 2**16 + 9)):
            for extras in (None, [origin if i % 3 else b"" for i in range(len(bodies))], [b""] * len(bodies)):
                data, ends = _storeruns.pack_run(first_id, first_seq, "a-session", 1765000000.25, kinds, bodies,
                                                 extras)
                digest.update(data)
                digest.update(ends)
    assert digest.hexdigest() == "0d02b4e0dd7349264e31ac7c32a8f867352f49c2048554e9a57db362b86dd162"


@settings(max_examples=200, deadline=None)
@given(bodies=st.lists(st.dictionaries(st.text(max_size=3), st.one_of(st.integers(-2**63, 2**64 - 1), st.text(max_size=40)),
                                       max_size=18), min_size=1, max_size=40),
       origins=st.lists(st.sampled_from([None, "telegram:1", "x" * 40]), min_size=40, max_size=40),
       first_id=st.sampled_from([1, 127, 65535, 2**32 - 50]), first_seq=st.integers(1, 2**20))
def test_a_run_built_at_once_is_each_event_built_on_its_own(bodies, origins, first_id, first_seq) -> None:
    """``pack_run`` gives the bytes of building each event alone, whatever the bodies
    (fixmaps or not, keys naming event fields) and origins; each event reads back as its
    body with the event's own fields."""
    blobs = [_packb(b) for b in bodies]
    kinds = [("assistant_text", "tool_use")[len(b) % 2] for b in bodies]
    extras = [b"" if o is None else _packb("origin") + _packb(o) for o in origins[:len(bodies)]]
    for given_extras in (None, extras):
        data, ends = _storeruns.pack_run(first_id, first_seq, "s", 2.5, kinds, blobs, given_extras)
        assert (data, ends) == _storeruns._pack_each(first_id, first_seq, "s", 2.5, kinds, blobs, given_extras)
        run = _storeruns.StoredRun(first_id, "s", first_seq, 2.5, data, ends)
        for i, (event, body) in enumerate(zip(run.unpacked(), bodies, strict=True)):
            origin = {"origin": origins[i]} if given_extras and origins[i] is not None else {}
            assert event == {**body, **origin, "id": first_id + i, "seq": first_seq + i, "session": "s",
                             "ts": 2.5, "kind": kinds[i]}


def test_a_subscriber_behind_reads_each_run_from_the_file_once(tmp_path) -> None:
    """A subscriber that fell behind what is held in memory reads on a window at a time:
    a run of 1,024 events is read from the file once, not once a window, and each window
    gives the events after the last, in order."""
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    store.create_session("a", "id-a", "/a", None, None)
    store.create_session("b", "id-b", "/b", None, None)
    stored = [e.as_dict() for e in store.append_events(
        [EventWrite("a", EventKind.ASSISTANT_TEXT, {"text": str(i)}) for i in range(1024)]
        + [EventWrite("b", EventKind.ASSISTANT_TEXT, {"text": "b"})])]
    store.close()
    cold = Store(path)  # nothing in memory: a subscriber served from the file
    reads: list[str] = []
    cold._db.set_trace_callback(lambda sql: reads.append(sql) if "FROM event_runs" in sql else None)
    for session in ("a", None):
        got: list[dict] = []
        after = 0
        while part := cold.events_after(after, session, 256):
            got += part
            after = part[-1]["id"]
        assert got == [e for e in stored if session in (None, e["session"])]
    # a, then all: the 1,024 events' run once each time, and once more to find nothing
    # (or the run of b) after it
    assert len(reads) == 2 + 3
    cold.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.one_of(st.tuples(st.just("append"), events_of_two_sessions),
                                st.tuples(st.just("read"), st.sampled_from([None, "a", "b"]), st.integers(1, 40)),
                                st.tuples(st.just("prune"), st.integers(0, 60))), max_size=25))
def test_reading_on_from_the_file_is_what_a_fresh_read_gives(tmp_path_factory, monkeypatch, steps) -> None:
    """Subscribers (of a, b, all) read on from where each stopped, with events stored
    and pruned in between; every read gives what a store that never read before gives."""
    monkeypatch.setattr(_storeruns, "RECENT_EVENTS", 4)  # (almost everything read back)
    monkeypatch.setattr(_storeruns, "RECENT_BYTES", 400)
    path = tmp_path_factory.mktemp("readback") / "db.sqlite3"
    store = Store(path)
    for name in "ab":
        store.create_session(name, f"id-{name}", "/", None, None)
    positions: dict[str | None, int] = {None: 0, "a": 0, "b": 0}
    for step in steps:
        if step[0] == "append":
            store.append_events([EventWrite(s, EventKind.ASSISTANT_TEXT, {"text": "x" * n}) for s, n in step[1]])
        elif step[0] == "prune":
            # (every event up to that id is old: pruned whole runs up to it)
            store._db.execute("UPDATE event_runs SET ts = 0 WHERE last_id <= ?", (step[1],))
            store._db.commit()
            store.prune(older_than=1)
        else:
            _, session, limit = step
            cold = Store(path)
            expected = cold.events_after(positions[session], session, limit)
            cold.close()
            got = store.events_after(positions[session], session, limit)
            assert [(e["id"], e["text"]) for e in got] == [(e["id"], e["text"]) for e in expected]
            if got:
                positions[session] = got[-1]["id"]
    store.close()


def _wait_for_checkpoints(store: Store, count: int) -> None:
    deadline = time.monotonic() + 60
    while store._checkpoints.done < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store._checkpoints.done >= count


def test_the_wal_is_copied_into_the_store_file_beside_the_writes(tmp_path, monkeypatch) -> None:
    """Once about CHECKPOINT_BYTES were written the store's own thread copies the WAL into
    the store file (a checkpoint, not made inside a commit): the file alone, without its
    WAL, then holds every event written before."""
    import shutil

    from supervisord_claude.supervisor import _storecheckpoints

    monkeypatch.setattr(_storecheckpoints, "CHECKPOINT_BYTES", 64 * 1024)
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    store.create_session("a", "id-a", "/a", None, None)
    stored = store.append_events([EventWrite("a", EventKind.ASSISTANT_TEXT, {"text": f"{i}" * 1000})
                                  for i in range(100)])
    _wait_for_checkpoints(store, 1)
    shutil.copy(path, tmp_path / "alone.sqlite3")  # (its -wal left behind)
    alone = Store(tmp_path / "alone.sqlite3")
    assert [e.data for e in alone.stored_after(0, "a", 1000)] == [e.data for e in stored]
    alone.close()
    store.close()


def test_a_deleted_store_file_is_restored_while_checkpoints_run_and_nothing_is_lost(tmp_path, monkeypatch) -> None:
    from supervisord_claude.supervisor import _storecheckpoints

    monkeypatch.setattr(_storecheckpoints, "CHECKPOINT_BYTES", 64 * 1024)
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    store.create_session("a", "id-a", "/a", None, None)
    writes = [EventWrite("a", EventKind.ASSISTANT_TEXT, {"text": f"{i}" * 1000}) for i in range(100)]
    stored = store.append_events(writes)
    _wait_for_checkpoints(store, 1)
    path.unlink()
    assert store.restore_deleted()
    stored += store.append_events(writes)
    _wait_for_checkpoints(store, 1)  # (a new thread, for the restored file)
    store.close()
    again = Store(path)
    assert [e.data for e in again.stored_after(0, "a", 1000)] == [e.data for e in stored]
    assert again.file_problem() is None
    again.close()


def test_a_store_file_deleted_before_the_first_checkpoint_is_restored_and_nothing_is_lost(tmp_path, monkeypatch) -> None:
    """The store file deleted, then enough written for a checkpoint before the supervisor
    notices (it looks every 2 s): the checkpoint is of the file the store has open — no
    new file appears at the path, the WAL the store writes is kept — and the file is then
    restored with every event acknowledged, before the deletion and after it."""
    from supervisord_claude.supervisor import _storecheckpoints

    monkeypatch.setattr(_storecheckpoints, "CHECKPOINT_BYTES", 64 * 1024)
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    store.create_session("a", "id-a", "/a", None, None)
    stored = store.append_events([EventWrite("a", EventKind.ASSISTANT_TEXT, {"text": "before"})])
    path.unlink()
    stored += store.append_events([EventWrite("a", EventKind.ASSISTANT_TEXT, {"text": f"{i}" * 1000})
                                   for i in range(100)])
    _wait_for_checkpoints(store, 1)
    assert not path.exists()
    assert "was deleted" in (store.file_problem() or "")
    assert store.restore_deleted()
    # (the deleted file's WAL, which SQLite leaves at the path, is not read with the copy)
    assert (tmp_path / "db.sqlite3-wal").stat().st_size == 0
    stored += store.append_events([EventWrite("a", EventKind.ASSISTANT_TEXT, {"text": "after"})])
    store.close()
    again = Store(path)
    assert [e.data for e in again.stored_after(0, "a", 1000)] == [e.data for e in stored]
    assert again.file_problem() is None
    again.close()


def test_a_store_file_replaced_before_the_first_checkpoint_is_left_as_the_operator_put_it(
        tmp_path, monkeypatch) -> None:
    """The store file replaced under a running store (an operator's backup put back), then
    enough written for a checkpoint: what the store writes goes to the file it has open,
    never into the operator's, which is left byte for byte as it was put there."""
    from supervisord_claude.supervisor import _storecheckpoints

    monkeypatch.setattr(_storecheckpoints, "CHECKPOINT_BYTES", 64 * 1024)
    path = tmp_path / "db.sqlite3"
    store = Store(path)
    store.create_session("a", "id-a", "/a", None, None)
    store.append_events([EventWrite("a", EventKind.ASSISTANT_TEXT, {"text": "before"})])
    backup = tmp_path / "backup.sqlite3"
    operator = sqlite3.connect(backup)
    operator.executescript("CREATE TABLE kept(note TEXT); INSERT INTO kept VALUES ('the operator''s');")
    operator.close()
    put_back = backup.read_bytes()
    os.replace(backup, path)
    store.append_events([EventWrite("a", EventKind.ASSISTANT_TEXT, {"text": f"{i}" * 1000}) for i in range(100)])
    _wait_for_checkpoints(store, 1)
    assert "was replaced" in (store.file_problem() or "")
    assert not store.restore_deleted()
    assert path.read_bytes() == put_back
    store.close()
    assert path.read_bytes() == put_back


def _old_layout_store(path) -> list[dict]:
    """A store with the event log of 0.3 and before (a row per event), as that release
    wrote it: three batches, the first pruned; what it holds, as events."""
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE events(id INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT NULL, seq INTEGER NOT NULL,
            ts REAL NOT NULL, kind TEXT NOT NULL, body BLOB NOT NULL, UNIQUE(session, seq));
        CREATE INDEX events_by_session ON events(session, id);
        CREATE TABLE sessions(name TEXT PRIMARY KEY, session_id TEXT NOT NULL, cwd TEXT NOT NULL, model TEXT,
            persona TEXT, idle_timeout REAL, state TEXT NOT NULL, started INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL, last_active REAL NOT NULL, suspended_at REAL,
            cost_usd REAL NOT NULL DEFAULT 0, last_seq INTEGER NOT NULL DEFAULT 0);
    """)
    for name in "ab":
        db.execute("INSERT INTO sessions(name, session_id, cwd, state, created, last_active, last_seq)"
                   " VALUES (?, ?, '/', 'suspended', 1, 1, 0)", (name, f"id-{name}"))
    rows = []
    seq = {"a": 0, "b": 0}
    for ts, batch in ((100.0, "ab"), (200.0, "aabba"), (300.0, "bbb")):
        for session in batch:
            seq[session] += 1
            body = msgpack.packb({"text": f"{session}{seq[session]}", "message_id": 3})
            rows.append((session, seq[session], ts, "assistant_text", body))
    db.executemany("INSERT INTO events(session, seq, ts, kind, body) VALUES (?,?,?,?,?)", rows)
    for name in "ab":
        db.execute("UPDATE sessions SET last_seq=? WHERE name=?", (seq[name], name))
    db.execute("DELETE FROM events WHERE ts < 150")  # pruned by that release
    db.commit()
    events = [{**msgpack.unpackb(body), "id": i, "session": s, "seq": q, "ts": ts, "kind": k}
              for i, (s, q, ts, k, body) in enumerate(rows, 1) if ts > 150]
    db.close()
    return events


def test_an_event_log_of_a_row_per_event_is_moved_to_runs(tmp_path) -> None:
    """A store written before runs opens with every event as it was (ids, seqs, bodies,
    times), read back in order; pruning goes on by time; new ids follow the highest the
    old release gave, pruned ones included."""
    path = tmp_path / "old.sqlite3"
    old_events = _old_layout_store(path)
    store = Store(path)
    try:
        assert store.events_after(0, limit=100) == old_events
        assert store.events_after(0, "b", limit=100) == [e for e in old_events if e["session"] == "b"]
        assert store.event_id_at_seq("a", 3) == 4 and store.event_id_at_seq("b", 9) == 10
        tables = {r[0] for r in store._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "events" not in tables
        # runs: aa, bb, a (the second batch), bbb (the third)
        assert store._db.execute("SELECT count(*) FROM event_runs").fetchone()[0] == 4
        new = store.append_event("a", EventKind.ASSISTANT_TEXT, {"text": "new"})
        assert (new["id"], new["seq"]) == (11, 5)
        assert store.prune(older_than=250.0) == 5
        assert [e["id"] for e in store.events_after(0, limit=100)] == [8, 9, 10, 11]
    finally:
        store.close()
    again = Store(path)  # opening it again changes nothing
    assert [e["id"] for e in again.events_after(0, limit=100)] == [8, 9, 10, 11]
    again.close()


#: what the release before writes into its store (run by that release's code)
_WRITE_WITH_THE_RELEASE_BEFORE = """
import sys
from pathlib import Path

import msgpack

from protocol import EventKind
from supervisord_claude.supervisor._store import EventWrite, Store

store = Store(Path(sys.argv[1]))
for name in "ab":
    store.create_session(name, "id-" + name, "/" + name, None, None)
wide = {f"k{i}": i for i in range(20)}  # (a body of more than 15 entries: not a fixmap)
batches = [
    [EventWrite("a", EventKind.ASSISTANT_TEXT, {"text": "a1", "message_id": 3, "origin": "telegram:1"}),
     EventWrite("b", EventKind.TOOL_USE, {"name": "Bash", "input": {"command": "ls"}, "tool_use_id": "t1"})],
    [EventWrite("a", EventKind.ASSISTANT_TEXT, {"text": "a" + str(i), "id": 99}) for i in range(2, 6)]
    + [EventWrite("b", EventKind.TOOL_RESULT, wide), EventWrite("a", EventKind.STATE, {"state": "idle"})],
    [EventWrite("b", EventKind.ASSISTANT_TEXT, {"text": "\u00e9" * 300})],
]
for batch in batches:
    store.append_events(batch)
store._db.execute("UPDATE event_runs SET ts = 100.0 WHERE last_id <= 2")  # (pruned below)
store.prune(older_than=150.0)
Path(sys.argv[2]).write_bytes(msgpack.packb(store.events_after(0, limit=1000)))
store.close()
"""


@pytest.mark.system
def test_a_store_the_release_before_wrote_opens_with_every_event_as_it_was(tmp_path) -> None:
    """The event log of the release before (runs packed as [kind, body, …], each event's
    own fields added when read) is rewritten in place as subscribers get the events: a
    store written by that release's code opens with every event as that release read it
    (ids, seqs, times, bodies, per session and all), new ids follow its highest (pruned
    ones included), and opening it again changes nothing."""
    from .test_upgrade import code_of, releases

    # (the newest release that wrote that layout: the event runs came with internal wire 7)
    release = next(r for r in releases() if r.wire < 7)
    code = code_of(release.commit, tmp_path / "release")
    path, read_by_it = tmp_path / "old.sqlite3", tmp_path / "events.msgpack"
    script = tmp_path / "write.py"
    script.write_text(_WRITE_WITH_THE_RELEASE_BEFORE)
    subprocess.run([sys.executable, str(script), str(path), str(read_by_it)], check=True, cwd=tmp_path,
                   env={**os.environ, "PYTHONPATH": str(code)})
    old_events = msgpack.unpackb(read_by_it.read_bytes())
    assert [e["id"] for e in old_events] == [3, 4, 5, 6, 7, 8, 9] and old_events[4]["k19"] == 19
    assert "ends" not in {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(event_runs)")}

    store = Store(path)
    try:
        assert store.events_after(0, limit=100) == old_events
        assert store.events_after(4, "a", limit=2) == [e for e in old_events if e["session"] == "a"][2:4]
        assert store.events_after(0, "b", limit=100) == [e for e in old_events if e["session"] == "b"]
        assert store.event_id_at_seq("a", 4) == 5 and store.last_event_body("a", EventKind.STATE) == {"state": "idle"}
        new = store.append_event("b", EventKind.ASSISTANT_TEXT, {"text": "new"})
        assert (new["id"], new["seq"]) == (10, 4)
    finally:
        store.close()
    again = Store(path)
    try:
        assert again.events_after(0, limit=100) == [*old_events, new]
    finally:
        again.close()


def test_the_list_of_sessions_is_what_the_file_holds_after_every_kind_of_write(tmp_path) -> None:
    """Sessions are listed from the records read before, but for the ones written since:
    after a create, an update, a batch of events, a rolled-back write and a write by
    another connection, the list is what a fresh store reads, in the same order."""
    path = tmp_path / "db.sqlite3"
    store = Store(path)

    def listed(s: Store, archived: bool = True) -> list:
        return s.list_sessions(archived)

    def same_as_the_file() -> None:
        cold = Store(path)
        try:
            assert listed(store) == listed(cold) and listed(store, False) == listed(cold, False)
            in_order = [r[0] for r in cold._db.execute("SELECT name FROM sessions ORDER BY last_active DESC, name")]
            assert [r.name for r in listed(store)] == in_order
        finally:
            cold.close()

    for name in ("b", "a", "c"):
        store.create_session(name, f"id-{name}", "/", None, None)
    same_as_the_file()
    store.update_session("a", last_active=time.time() + 10, state=SessionState.ARCHIVED)
    same_as_the_file()
    store.append_events([EventWrite("b", EventKind.RESULT, {"message_id": 1}, {COST_ADDED: 0.5})])
    same_as_the_file()
    with pytest.raises(ValueError):
        store.update_session("c", nonsense=1)
    same_as_the_file()
    other = sqlite3.connect(path)
    other.execute("UPDATE sessions SET persona='elsewhere' WHERE name='c'")
    other.commit()
    other.close()
    assert store.get_session("c").persona == "elsewhere"
    same_as_the_file()
    assert "a" not in [r.name for r in listed(store, False)]  # archived
    store.close()


def test_the_newest_event_of_a_kind_is_found_across_runs(store) -> None:
    """(what the terminal hand-over reads after a restart: the session's last state)"""
    store.create_session("a", "sid-a", "/tmp", None, None)
    store.create_session("b", "sid-b", "/tmp", None, None)
    store.append_events([EventWrite("a", EventKind.STATE, {"state": "idle", "reason": "turn"}),
                         EventWrite("a", EventKind.ASSISTANT_TEXT, {"text": "x"})])
    store.append_events([EventWrite("a", EventKind.STATE, {"state": "attached", "reason": "attached"}),
                         EventWrite("b", EventKind.STATE, {"state": "busy", "reason": "message"}),
                         EventWrite("a", EventKind.ASSISTANT_TEXT, {"text": "y"})])
    assert store.last_event_body("a", EventKind.STATE) == {"state": "attached", "reason": "attached"}
    assert store.last_event_body("b", EventKind.STATE) == {"state": "busy", "reason": "message"}
    assert store.last_event_body("b", EventKind.RESULT) is None


def test_a_big_prune_goes_in_steps_and_stops_at_what_is_kept(store: Store) -> None:
    store.create_session("a", "id", "/a", None, None)
    for i in range(5):  # five runs, old
        store.append_events([EventWrite("a", EventKind.ASSISTANT_TEXT, {"text": f"{i}.{j}"}) for j in range(3)])
    store._db.execute("UPDATE event_runs SET ts = ts - 40 * 86400")
    store.append_event("a", EventKind.ASSISTANT_TEXT, {"text": "new"})
    cutoff = time.time() - 30 * 86400
    steps = []
    while step := store.prune(cutoff, max_runs=2):
        steps.append(step)
    assert steps == [6, 6, 3]  # the oldest runs first, two at a time
    assert [e["text"] for e in store.events_after(0)] == ["new"]
