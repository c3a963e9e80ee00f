"""What one client can do to the supervisor is bounded, and never breaks other clients
(issue "Security and reliability": the holes found, each with its test)."""

from __future__ import annotations

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
from supervisord_claude import _control
from supervisord_claude._config import load_toml
from supervisord_claude._errors import ClientSlow, ConfigError
from supervisord_claude._hub import MAX_INFLIGHT_BYTES, SubscriptionHub
from supervisord_claude._store import EventWrite, Store

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
                assert most <= 1024 - _control.FD_HEADROOM + 200
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
        limits = wait_for(lambda: _status_from(socks), 30, what="status through a flood connection")["limits"]
        assert limits["connections"]["limit"] == 20 and limits["connections"]["used"] >= 20
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
