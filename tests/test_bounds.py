"""What one client can do to the supervisor is bounded, and never breaks other clients
(issue "Security and reliability": the holes found, each with its test)."""

from __future__ import annotations

import msgpack
import pytest
import zmq

from protocol import (
    MAX_INT,
    MAX_KV_VALUE_BYTES,
    MAX_SUBSCRIPTIONS_PER_CLIENT,
    EventKind,
    RemoteError,
)
from supervisord_claude import _control
from supervisord_claude._errors import ClientSlow
from supervisord_claude._hub import MAX_INFLIGHT_BYTES, SubscriptionHub
from supervisord_claude._store import EventWrite, Store

from .conftest import SupervisorProcess


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
        for _ in range(2000):
            sock.send(b"\xc1 not msgpack")
        for _ in range(2000):  # every one is answered
            assert sock.poll(10_000), "a bad frame got no reply"
            assert msgpack.unpackb(sock.recv())["error"]["code"] == "bad_frame"
    finally:
        sock.close()
        ctx.term()
    assert supervisor.request("hello")["server"] == "supervisord-claude"
    assert supervisor.log().count("bad frame from a client") <= _control.LOG_BURST


def test_held_back_input_warnings_are_counted() -> None:
    now = [0.0]
    warnings = _control.InputWarnings(clock=lambda: now[0])
    for _ in range(50):
        warnings.warn("bad")
    assert warnings.logged == _control.LOG_BURST and warnings.suppressed == 50 - _control.LOG_BURST
    now[0] += _control.LOG_PERIOD
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
    hub.publish(store.append_events([EventWrite("alpha", EventKind.ASSISTANT_TEXT, {"text": "hello"})]))
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
