"""What one client can do to the supervisor is bounded, and never breaks other clients
(issue "Security and reliability": the holes found, each with its test)."""

from __future__ import annotations

import re
import resource
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from protocol import (
    MAX_INT,
    MAX_KV_VALUE_BYTES,
    MAX_SUBSCRIPTIONS_PER_CLIENT,
    ConnectionFailed,
    EventKind,
    RemoteError,
)
from supervisord_claude._configfile import load_toml
from supervisord_claude._errors import ClientSlow, ConfigError
from supervisord_claude.supervisor import _clientlimits
from supervisord_claude.supervisor._hub import KEEPALIVE, MAX_INFLIGHT_BYTES, SubscriptionHub
from supervisord_claude.supervisor._store import EventWrite, Store
from supervisord_claude.supervisor._storeruns import RunWrite

from .conftest import SupervisorProcess, wait_for
from .conftest import _instances as conftest_instances
from .test_faults import record


def raw_socket(sup: SupervisorProcess) -> tuple[zmq.Context, zmq.Socket]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{sup.runtime_dir / 'control.sock'}")
    return ctx, sock


def test_an_integer_the_store_cannot_hold_is_refused_and_events_still_flow(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    with supervisor.client() as c:
        for after in (2**63, 2**64 - 1):  # (msgpack carries up to 2**64-1)
            with pytest.raises(RemoteError, match="2\\*\\*63-1") as err:
                c.request("subscribe", after=after)
            assert err.value.code == "bad_request"
        with pytest.raises(RemoteError, match="2\\*\\*63-1"):
            c.request("ack", sub=1, upto=2**63)
        c.request("subscribe", after=MAX_INT)  # the largest is fine (and simply sees nothing)
    # another client's subscription still gets every new event
    with supervisor.follow("alpha") as events:
        supervisor.ctl("send", "alpha", "still works", "--wait", check=True)
        events.wait_event(lambda e: e["kind"] == "result", what="the answer's result event")


def test_kv_values_are_bounded_in_size(supervisor: SupervisorProcess) -> None:
    with supervisor.client() as c:
        with pytest.raises(RemoteError, match=f"at most {MAX_KV_VALUE_BYTES}"):
            c.request("kv_set", key="big", value="x" * (MAX_KV_VALUE_BYTES + 1))
        assert c.request("kv_get", key="big")["value"] is None
        c.request("kv_set", key="fits", value="x" * (MAX_KV_VALUE_BYTES - 100))


def test_kv_keys_are_bounded_in_number(tmp_path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    for i in range(5):
        assert store.kv_set(f"k{i}", i, max_keys=5)
    assert not store.kv_set("one-more", 1, max_keys=5)
    assert store.kv_get("one-more") is None
    assert store.kv_set("k3", "replaced", max_keys=5)  # an existing key can always change
    assert store.kv_get("k3") == "replaced"


def test_subscriptions_per_connection_are_bounded(supervisor: SupervisorProcess) -> None:
    with supervisor.client() as c:
        subs = [c.request("subscribe")["sub"] for _ in range(MAX_SUBSCRIPTIONS_PER_CLIENT)]
        with pytest.raises(RemoteError, match="unsubscribe one first"):
            c.request("subscribe")
        c.request("unsubscribe", sub=subs[0])
        c.request("subscribe")
    with supervisor.client() as other:  # the bound is per connection
        other.request("subscribe")


def test_a_client_gone_right_after_subscribing_leaves_no_traceback(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    supervisor.ctl("send", "alpha", "some history", "--wait", check=True)
    for i in range(300):
        ctx, sock = raw_socket(supervisor)
        sock.send(msgpack.packb({"v": 1, "id": i, "op": "subscribe", "session": "alpha", "after": 0}))
        sock.close()
        ctx.term()
    assert supervisor.request("hello")["server"] == "supervisord-claude"
    log = supervisor.log()
    assert "Traceback" not in log and "KeyError" not in log


def test_garbage_in_a_loop_does_not_flood_the_log(supervisor: SupervisorProcess) -> None:
    ctx, sock = raw_socket(supervisor)
    try:
        # 2,000 in batches of 50, each batch read before the next: a client that reads is
        # answered every time (one that does not read loses its own replies past what waits
        # for it: test_a_client_that_never_reads_its_replies_costs_a_bounded_amount)
        for _ in range(40):
            for _ in range(50):
                sock.send(b"\xc1 not msgpack")
            for _ in range(50):  # every one is answered
                assert sock.poll(10_000), "a bad frame got no reply"
                assert msgpack.unpackb(sock.recv())["error"]["code"] == "bad_frame"
    finally:
        sock.close()
        ctx.term()
    assert supervisor.request("hello")["server"] == "supervisord-claude"
    assert supervisor.log().count("bad frame from a client") <= _clientlimits.LOG_BURST


def test_held_back_input_warnings_are_counted() -> None:
    now = [0.0]
    warnings = _clientlimits.InputWarnings(clock=lambda: now[0])
    for _ in range(50):
        warnings.warn("bad")
    assert warnings.logged == _clientlimits.LOG_BURST and warnings.suppressed == 50 - _clientlimits.LOG_BURST
    now[0] += _clientlimits.LOG_PERIOD
    warnings.warn("bad")
    assert warnings.logged == 1 and warnings.suppressed == 0


def _store_with_events(tmp_path, count: int, size: int) -> Store:
    store = Store(tmp_path / "s.sqlite3")
    store.create_session("alpha", "sid", str(tmp_path), None, None)
    for i in range(count):
        store.append_event("alpha", EventKind.ASSISTANT_TEXT, {"text": f"{i}:" + "x" * size})
    return store


def test_a_subscriber_that_stops_reading_is_sent_a_bounded_amount(tmp_path) -> None:
    store = _store_with_events(tmp_path, 400, 100_000)  # 40 MB of events
    sent: list[bytes] = []
    hub = SubscriptionHub(store, lambda ident, frame: sent.append(frame))
    sub = hub.subscribe(b"reader", None, 0, None, window=4096)
    hub.pump(sub)
    assert sum(len(f) for f in sent) < MAX_INFLIGHT_BYTES + 200_000  # not 40 MB
    assert len(sent) < 400
    hub.ack(b"reader", sub.sub_id, sub.sent)  # acking releases the next batch
    assert len(sent) > sub.window // 4096 and sub.inflight_bytes <= MAX_INFLIGHT_BYTES + 200_000


@pytest.mark.parametrize("batch", [True, False], ids=["events-frames", "event-frames"])
def test_a_run_stored_as_one_unit_reaches_a_subscriber_by_its_window_and_acks_in_part(tmp_path, batch: bool) -> None:
    """A keeper's run of 1,000 events is one stored unit, and a subscriber with a window of
    100 still has 100 events at most in flight: an ack of part of what it got lets that
    many more come, and it gets each event once, in order (and a second session's events
    between the runs are not its)."""
    store = _store_with_events(tmp_path, 0, 0)
    store.create_session("beta", "sid-b", str(tmp_path), None, None)
    got: list[dict[str, Any]] = []

    def send(ident: bytes, frame: bytes) -> None:
        msg = msgpack.unpackb(frame)
        got.extend(msg["events"] if batch else [msg["event"]])

    hub = SubscriptionHub(store, send)
    sub = hub.subscribe(b"reader", "alpha", 0, None, window=100, batch=batch)

    def run(session: str, first: int) -> RunWrite:
        return RunWrite(session, ["assistant_text"] * 1000, [7] * 1000,
                        [msgpack.packb({"text": f"{session}{i}", "message_id": 7}) for i in range(first, first + 1000)])

    hub.publish(store.append_runs([run("alpha", 0), run("beta", 0), run("alpha", 1000)]))
    assert store._db.execute("SELECT count(*) FROM event_runs").fetchone()[0] == 3
    assert [e["text"] for e in got] == [f"alpha{i}" for i in range(100)]
    hub.ack(b"reader", sub.sub_id, got[29]["id"])  # 30 of the 100
    assert [e["text"] for e in got] == [f"alpha{i}" for i in range(130)]
    while len(got) < 2000:
        acked = len(got) - 7  # (all but the last few)
        hub.ack(b"reader", sub.sub_id, got[acked - 1]["id"])
        assert sub.inflight_events == len(got) - acked <= 100
    assert [e["text"] for e in got] == [f"alpha{i}" for i in range(2000)]
    assert [e["seq"] for e in got] == list(range(1, 2001)) and len({e["id"] for e in got}) == 2000
    hub.ack(b"reader", sub.sub_id, got[-1]["id"])
    assert sub.inflight_events == 0 and sub.inflight_bytes == 0 and len(got) == 2000


def test_one_broken_subscription_does_not_stop_the_others(tmp_path) -> None:
    store = _store_with_events(tmp_path, 0, 0)
    got: list[bytes] = []

    def send(ident: bytes, frame: bytes) -> None:
        if ident == b"broken":
            raise ValueError("a bug in one subscription's path")
        if ident == b"slow":
            raise ClientSlow("full")
        got.append(frame)

    hub = SubscriptionHub(store, send)
    hub.subscribe(b"broken", None, 0, None, None)
    hub.subscribe(b"slow", None, 0, None, None)
    hub.subscribe(b"fine", None, 0, None, None)
    hub.publish(store.append_runs([EventWrite("alpha", EventKind.ASSISTANT_TEXT, {"text": "hello"})]))
    assert len(got) == 1 and b"hello" in got[0]
    assert sorted(s.ident for s in hub.subs.values()) == [b"fine", b"slow"]  # only the broken one went


def test_subscriptions_of_clients_that_left_are_forgotten(supervisor: SupervisorProcess) -> None:
    for _ in range(20):
        ctx, sock = raw_socket(supervisor)
        sock.send(msgpack.packb({"v": 1, "id": 1, "op": "subscribe"}))
        assert sock.poll(10_000)
        sock.recv()  # subscribed; then the client goes without unsubscribing
        sock.close()
        ctx.term()
    with supervisor.client() as c:
        c.request("subscribe")  # a new subscription sweeps out those of clients that left
        assert c.request("status")["subscriptions"] == 1


def test_hostile_attachments_are_refused_or_bounded_never_a_hang(supervisor: SupervisorProcess, tmp_path) -> None:
    import os

    supervisor.ctl("new", "alpha", check=True)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    link = tmp_path / "zero.png"
    link.symlink_to("/dev/zero")
    sparse = tmp_path / "huge.png"
    with open(sparse, "wb") as f:
        f.truncate(2 * 1024**3)  # 2 GB, no blocks
    with supervisor.client(timeout=10) as c:
        for bad in (tmp_path, fifo, link, "/dev/zero", "/proc/self/mem", "relative.png"):
            with pytest.raises(RemoteError) as err:
                c.request("send", session="alpha", text="look", attachments=[str(bad)])
            assert err.value.code in ("bad_request", "bad_name"), (bad, err.value)
    # a huge "image" is over the attachment limit (it is copied at send): refused there
    with supervisor.client(timeout=10) as c, pytest.raises(RemoteError) as err:
        c.request("send", session="alpha", text="look", attachments=[str(sparse)])
    assert err.value.code == "too_large"
    assert "look" in supervisor.ctl("send", "alpha", "look", "--wait", check=True).stdout


# --- issue #30: connections, open files, clients that do not read ------------------------

def supervisor_memory(sup: SupervisorProcess) -> int:
    """The supervisor's resident bytes (as its ``status`` says)."""
    return int(sup.request("status")["memory"])


class LimitedSupervisor(SupervisorProcess):
    """A supervisor started under an open-files limit (soft, hard), as ``ulimit -n`` would."""

    def __init__(self, base: Path, nofile: tuple[int, int], **kwargs: Any) -> None:
        super().__init__(base, **kwargs)
        self.nofile = nofile

    def argv(self) -> list[str]:
        soft, hard = self.nofile
        limit = (f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}));"
                 " os.execv(sys.argv[1], sys.argv[1:])")
        return [sys.executable, "-c", limit, *super().argv()]


@pytest.fixture
def client_files() -> Iterator[None]:
    """Room in this test process for the connections it opens (two descriptors each)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4 * 1200:
        pytest.skip(f"the test process needs about {4 * 1200} open files; its hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4 * 1200), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_clients(sup: SupervisorProcess, count: int) -> tuple[zmq.Context, list[zmq.Socket]]:
    """``count`` raw connections at once, each with a ping on its way."""
    ctx = zmq.Context()
    ctx.set(zmq.MAX_SOCKETS, count + 100)
    socks = []
    for i in range(count):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"ipc://{sup.runtime_dir / 'control.sock'}")
        sock.send(msgpack.packb({"v": 1, "id": i, "op": "ping"}))
        socks.append(sock)
    return ctx, socks


def close_clients(ctx: zmq.Context, socks: list[zmq.Socket]) -> None:
    for sock in socks:
        sock.close()
    ctx.term()


@pytest.mark.system  # starts its own supervisor
def test_more_connections_than_open_files_never_take_the_supervisor_down(tmp_base: Path, client_files: None) -> None:
    """1,200 connections at once against a hard limit of 1,024 open files: libzmq 4.3.5
    aborted the supervisor (exit 134, every session gone). Now it raises its soft limit,
    stops taking clients before the descriptors run out, and serves those it has."""
    base = tmp_base / "limited"
    base.mkdir()
    sup = LimitedSupervisor(base, nofile=(512, 1024))
    conftest_instances.append(sup.instance)
    sup.start()
    try:
        limits = sup.request("status")["limits"]
        assert limits["open_files"]["limit"] == 1024  # the soft limit was raised to the hard one
        sup.ctl("new", "alpha", check=True)
        with sup.follow("alpha") as events:
            sup.ctl("send", "alpha", "a turn through the flood sleep:3")
            events.wait_event(lambda e: e["kind"] == "user", what="the turn to start")
            ctx, socks = open_clients(sup, 1200)
            try:
                answered = wait_for(lambda: sum(1 for s in socks if s.poll(0)) or None, 60,
                                    what="the first of 1,200 clients to be answered")
                # the session's turn goes on and is answered while the flood is connected
                events.wait_event(lambda e: e["kind"] == "result", what="the turn's answer during the flood")
                assert sup.proc is not None and sup.proc.poll() is None
                status = wait_for(lambda: _status_from(socks), 30, what="status through a flood connection")
                most = status["limits"]["connections"]["used"]
                assert most < 1024
                answered = sum(1 for s in socks if s.poll(0))
            finally:
                close_clients(ctx, socks)
            assert 0 < answered < 1200  # some were turned away, none took the supervisor down
        # the flood has cleared: a new client is served, and the session goes on
        wait_for(lambda: sup.request("status")["limits"]["connections"]["used"] < 10, 60,
                 what="the flood's connections to be gone")
        reply = sup.ctl("send", "alpha", "after the flood", "--wait", check=True).stdout
        assert "echo: after the flood" in reply
        assert sup.proc.poll() is None
        log = sup.log()
        assert "Too many open files" not in log and "new clients are not accepted" in log
    finally:
        assert sup.stop() == 0
    record("1,200 connections at once against a hard open-files limit of 1,024", connections_tried=1200,
           connected_at_most=most, turned_away=1200 - answered, supervisor_aborts=0,
           running_turn="answered", new_client_after_the_flood="served")


def _status_from(socks: list[zmq.Socket]) -> dict[str, Any] | None:
    """``status`` through one of the flood's connections that was answered."""
    sock = next((s for s in socks if s.poll(0)), None)
    if sock is None:
        return None
    sock.recv()
    sock.send(msgpack.packb({"v": 1, "id": "st", "op": "status"}))
    while sock.poll(10_000):
        reply = msgpack.unpackb(sock.recv())
        if reply.get("id") == "st":
            return dict(reply["result"])
    return None


def test_clients_over_max_connections_wait_and_the_others_are_served(make_supervisor: Any) -> None:
    sup = make_supervisor(config="max_connections = 20\n").start()
    ctx, socks = open_clients(sup, 60)
    try:
        wait_for(lambda: sum(1 for s in socks if s.poll(0)) >= 20, 30, what="20 clients to be answered")
        connections = wait_for(lambda: _counted(socks, 20), 30, what="20 connections counted")
        assert connections["limit"] == 20
        # a new client is told why it cannot get in (not that no supervisor runs)
        with pytest.raises(ConnectionFailed, match="connection limit"):
            sup.client()
        answered = [s for s in socks if s.poll(0)]
        assert len(answered) < 60
        for sock in answered:  # those connected go on being served
            sock.recv()
            sock.send(msgpack.packb({"v": 1, "id": "again", "op": "ping"}))
            assert sock.poll(10_000) and msgpack.unpackb(sock.recv())["ok"]
    finally:
        close_clients(ctx, socks)
    # once they have left, new clients get in again
    assert wait_for(lambda: _hello(sup), 30, what="a new client to be served again")
    assert "new clients are not accepted until some leave" in sup.log()


def _counted(socks: list[zmq.Socket], at_least: int) -> dict[str, Any] | None:
    """The connections in use once at least ``at_least`` are counted (a connection is
    counted a moment after it comes)."""
    connections = ((_status_from(socks) or {}).get("limits") or {}).get("connections") or {}
    return connections if connections.get("used", 0) >= at_least else None


def _hello(sup: SupervisorProcess) -> bool:
    try:
        return bool(sup.request("hello"))
    except ConnectionFailed:
        return False


def test_max_connections_is_a_positive_number(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("max_connections = 0\n")
    with pytest.raises(ConfigError, match="max_connections: must be a positive number"):
        load_toml(path)
    path.write_text("max_connections = 50\n")
    assert load_toml(path)["max_connections"] == 50


MIB = 1024 * 1024
#: what a flood may add to the supervisor's resident memory (the bounds are 8 MiB of
#: frames and 1 MiB of held replies per connection; the rest is allocator slack)
FLOOD_GROWTH_ALLOWED = 48 * MIB


def wait_for_marker(sup: SupervisorProcess, key: str) -> None:
    """Requests of one connection are handled in order: once the flood's last request (a
    kv_set of ``key``) has taken effect, the supervisor has handled the whole flood."""
    wait_for(lambda: sup.request("kv_get", key=key)["value"] == "done", 300,
             what=f"the flood's last request ({key}) to be handled")


def test_a_client_that_never_reads_its_replies_costs_a_bounded_amount(supervisor: SupervisorProcess) -> None:
    """33 -> 1,326 MiB was seen: every reply to a client that does not read was kept. Now a
    connection's pipe is bounded and such a client loses its own replies, nobody else's."""
    supervisor.ctl("new", "alpha", check=True)
    supervisor.request("kv_set", key="big", value="v" * (MAX_KV_VALUE_BYTES - 100))
    before = supervisor_memory(supervisor)
    ctx, flood = raw_socket(supervisor)
    requests = 6000
    try:
        with supervisor.follow("alpha") as events:
            for i in range(requests):  # never read
                op = ({"op": "status"}, {"op": "list"}, {"op": "kv_get", "key": "big"})[i % 3]
                flood.send(msgpack.packb({"v": 1, "id": i, **op}))
            flood.send(msgpack.packb({"v": 1, "id": "end", "op": "kv_set", "key": "flood", "value": "done"}))
            # meanwhile everyone else is served: another client's turn is answered in full
            supervisor.ctl("send", "alpha", "during the flood", check=True)
            events.wait_event(lambda e: e["kind"] == "result", what="the other client's answer")
            wait_for_marker(supervisor, "flood")
            after = supervisor_memory(supervisor)
        assert after - before < FLOOD_GROWTH_ALLOWED, f"the supervisor grew from {before / MIB:.0f} to {after / MIB:.0f} MiB"
        dropped = supervisor.request("status")["limits"]["replies_dropped"]["used"]
    finally:
        flood.close()
        ctx.term()
    record("a client sends 6,000 status/list/kv_get (64 KiB) requests and never reads a reply",
           requests=requests, supervisor_rss_mib_before=round(before / MIB, 1),
           supervisor_rss_mib_after=round(after / MIB, 1), replies_dropped=dropped)
    assert dropped > 0
    assert "is not reading its replies" in supervisor.log()


def test_a_subscriber_behind_on_events_still_gets_every_reply(supervisor: SupervisorProcess) -> None:
    """Replies and events share a client's pipe: one that is full of events a subscriber
    has not read yet must not cost it its replies."""
    supervisor.ctl("new", "alpha", check=True)
    supervisor.ctl("send", "alpha", "burst:3000", "--wait", check=True)
    last = supervisor.session("alpha")["last_seq"]
    ctx, sock = raw_socket(supervisor)
    try:
        sock.send(msgpack.packb({"v": 1, "id": "sub", "op": "subscribe", "session": "alpha", "after": 0,
                                 "window": 4096}))
        # 3,000 events fill what ZeroMQ buffers on both sides; then its requests come
        assert sock.poll(30_000)
        for i in range(20):
            sock.send(msgpack.packb({"v": 1, "id": i, "op": "ping"}))
        replies: set[Any] = set()
        seqs: list[int] = []
        while len(replies) < 21 or (seqs[-1] if seqs else 0) < last:
            assert sock.poll(30_000), f"replies missing: {sorted(set(range(20)) - replies)}"
            frame = msgpack.unpackb(sock.recv())
            if frame.get("type") == "reply":
                assert frame["ok"], frame
                replies.add(frame["id"])
            elif frame.get("type") == "event":
                seqs.append(frame["event"]["seq"])
        assert seqs == list(range(1, last + 1))  # and every event, in order
    finally:
        sock.close()
        ctx.term()


def test_ack_all_unsubscribe_resubscribe_in_a_loop_costs_a_bounded_amount(supervisor: SupervisorProcess) -> None:
    """1.28 GB was seen: each new subscription was sent its 4 MiB window again while the
    frames sent before it still sat unread in the client's pipe. Now what sits there is
    bounded per connection, whatever the client does with its subscriptions."""
    supervisor.ctl("new", "alpha", check=True)
    for i in range(12):  # ~5 MB of stored events (each answer is stored cut to 200,000 characters)
        supervisor.ctl("send", "alpha", f"bigline:1 turn {i}", "--wait", check=True)
    before = supervisor_memory(supervisor)
    loops = 100
    with supervisor.follow("alpha", after=supervisor.session("alpha")["last_seq"]) as follower:
        ctx, sock = raw_socket(supervisor)
        try:
            sock.send(msgpack.packb({"v": 1, "id": "first", "op": "subscribe", "session": "alpha", "after": 0,
                                     "window": 4096, "batch": True}))
            while True:  # the one reply it reads: its first subscription's id
                assert sock.poll(30_000)
                frame = msgpack.unpackb(sock.recv())
                if frame.get("id") == "first":
                    sub = frame["result"]["sub"]
                    break
            for i in range(loops):  # ids are handed out in order: it needs no reply to go on
                sock.send(msgpack.packb({"v": 1, "id": f"a{i}", "op": "ack", "sub": sub, "upto": MAX_INT}))
                sock.send(msgpack.packb({"v": 1, "id": f"u{i}", "op": "unsubscribe", "sub": sub}))
                sock.send(msgpack.packb({"v": 1, "id": f"s{i}", "op": "subscribe", "session": "alpha",
                                         "after": 0, "window": 4096, "batch": True}))
                sub += 1
            sock.send(msgpack.packb({"v": 1, "id": "end", "op": "kv_set", "key": "loop", "value": "done"}))
            wait_for_marker(supervisor, "loop")
            after = supervisor_memory(supervisor)
            # another client's subscription still gets every new event, in order
            supervisor.ctl("send", "alpha", "after the loop", "--wait", check=True)
            follower.wait_event(lambda e: e["kind"] == "result", what="the new answer")
            seqs = [e["seq"] for e in follower.events]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        finally:
            sock.close()
            ctx.term()
    record("ack everything, unsubscribe, subscribe again from the start, in a loop, never reading (~5 MB stored)",
           loops=loops, supervisor_rss_mib_before=round(before / MIB, 1),
           supervisor_rss_mib_after=round(after / MIB, 1), other_subscriber="every new event, in order")
    assert after - before < FLOOD_GROWTH_ALLOWED, f"the supervisor grew from {before / MIB:.0f} to {after / MIB:.0f} MiB"


def test_what_waits_for_one_client_is_bounded_in_frames_and_bytes() -> None:
    pipe = _clientlimits.ClientPipe()
    sent = 0
    for _ in range(1000):  # events of 256 KiB for a client that reads nothing
        if not pipe.has_room(256 * 1024):
            break
        pipe.sent(256 * 1024)
        sent += 1
    assert sent * 256 * 1024 <= _clientlimits.PIPE_BYTES and pipe.held <= _clientlimits.PIPE_BYTES
    # its pipe holds only the last PIPE_FRAMES frames: small ones that went through since
    # (the keepalives that prove room) push the big ones out of the count
    for _ in range(_clientlimits.PIPE_FRAMES):
        pipe.sent(len(KEEPALIVE))
    assert pipe.held == _clientlimits.PIPE_FRAMES * len(KEEPALIVE) and pipe.has_room(256 * 1024)


def test_claudectl_status_shows_what_is_near_a_limit(make_supervisor: Any) -> None:
    sup = make_supervisor(config="max_connections = 12\n").start()
    quiet = sup.ctl("status", check=True).stdout
    # (a connection is counted a moment after it comes or goes)
    assert re.search(r"^limits: connections [0-4]/12, open files \d+/\d+", quiet, re.M), quiet
    assert "near the limit" not in quiet
    ctx, socks = open_clients(sup, 10)
    try:
        wait_for(lambda: all(s.poll(0) for s in socks), 30, what="10 clients to be answered")
        wait_for(lambda: _counted(socks, 10), 30, what="10 clients counted")
        busy = sup.ctl("status", check=True).stdout
        assert re.search(r"⚠ connections 1[0-2]/12 \(near the limit\)", busy), busy
    finally:
        close_clients(ctx, socks)


def test_a_client_that_was_slow_and_reads_again_is_served_again(supervisor: SupervisorProcess) -> None:
    """Its pipe filled to the byte bound with big replies, some held, the rest dropped;
    once it reads, what was held comes, then the replies to what it asks next."""
    supervisor.request("kv_set", key="big", value="v" * (MAX_KV_VALUE_BYTES - 100))
    ctx, sock = raw_socket(supervisor)
    try:
        for i in range(400):  # ~25 MiB of replies, none read yet
            sock.send(msgpack.packb({"v": 1, "id": i, "op": "kv_get", "key": "big"}))
        sock.send(msgpack.packb({"v": 1, "id": "end", "op": "kv_set", "key": "slow", "value": "done"}))
        wait_for_marker(supervisor, "slow")
        assert supervisor.request("status")["limits"]["replies_dropped"]["used"] > 0
        sock.send(msgpack.packb({"v": 1, "id": "now", "op": "ping"}))
        ids = []
        while not ids or ids[-1] != "now":
            assert sock.poll(30_000), f"the client reads again, but after {len(ids)} replies nothing comes"
            frame = msgpack.unpackb(sock.recv())
            if frame.get("type") == "reply":
                ids.append(frame["id"])
        numbered = [i for i in ids if isinstance(i, int)]
        assert numbered == sorted(numbered) and ids[-2:] == ["end", "now"]  # in order, none after a gap
    finally:
        sock.close()
        ctx.term()


def test_the_connection_gate_hides_the_socket_at_the_limit_and_shows_it_again(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    path.write_bytes(b"")  # (stands for the bound socket: the gate only names it)
    gate = _clientlimits.ConnectionGate(path, limit=3)
    gate.bound()
    for fd in (10, 11, 12):
        gate.on_event(zmq.EVENT_ACCEPTED, fd)
    gate.check()
    assert gate.door is _clientlimits.Door.CLOSED and not path.exists()
    gate.on_event(zmq.EVENT_DISCONNECTED, 12)
    gate.check()
    assert gate.door is _clientlimits.Door.OPEN and path.exists() and path.samefile(gate.spare)
    assert gate.limits()["connections"] == {"used": 2, "limit": 3}


def test_a_reply_bigger_than_what_may_wait_still_reaches_a_client_that_reads(make_supervisor: Any) -> None:
    """Thousands of sessions on file make a `list` reply of megabytes (more than the
    replies held for one client may add up to): a client that reads gets every one of
    them, again and again on one connection (the fourth was dropped: the pipe counted
    the first three as unread)."""
    sup = make_supervisor()
    sup.state_dir.mkdir(parents=True, exist_ok=True)
    store = Store(sup.state_dir / "supervisor.sqlite3")
    for i in range(5000):
        store.create_session(f"s{i:04d}-" + "x" * 58, f"id-{i}", str(sup.base), None, None)
    store.close()
    sup.start()
    with sup.client(timeout=60) as c:
        for _ in range(6):
            reply = c.request("list")
            assert len(reply["sessions"]) == 5000
    assert len(msgpack.packb(reply)) > _clientlimits.HELD_REPLY_BYTES


def test_the_piece_an_adopted_keeper_was_writing_is_not_sent_live_its_next_piece_is(tmp_path) -> None:
    """After a restart the supervisor holds only what was written since: offsets counted
    from there are not the answer's, and a client would put the text in the wrong place
    (a repetitive answer seems to continue what it showed). The stored text completes
    that piece; the next piece, begun under this supervisor, streams again."""
    store = _store_with_events(tmp_path, 0, 0)
    frames: list[dict] = []
    hub = SubscriptionHub(store, lambda ident, frame: frames.append(msgpack.unpackb(frame)))
    hub.subscribe(b"ctl", "alpha", 0, None, None, live=True)
    hub.began_before("alpha", 7)
    hub.delta("alpha", 7, "rt, a long story told across a resta", None)
    assert [f for f in frames if f.get("type") == "live"] == []
    hub.publish(store.append_runs([EventWrite("alpha", EventKind.ASSISTANT_TEXT, {"text": "..."}, message_id=7)]))
    hub.delta("alpha", 7, "The next piece", None)
    live = [f["event"] for f in frames if f.get("type") == "live"]
    assert [(e["offset"], e["text"]) for e in live] == [(0, "The next piece")]
