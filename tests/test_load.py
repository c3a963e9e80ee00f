"""Load: many live sessions, many answers streaming at once, clients that subscribe and
resubscribe, a subscriber that stops reading and one that never acks — every answer
arrives, and a well-behaved client is answered throughout. The supervisor's RSS and the
client's latency are measured for docs/reliability.md (never asserted: see
docs/benchmarks.md for speed).

``LOAD_SESSIONS`` (default 20) live sessions, ``LOAD_STREAMING`` (default 10) streaming
at once; ``./scripts/reliability`` runs 200 and 50.
"""

from __future__ import annotations

import os
import statistics
import threading
import time

import msgpack
import pytest
import zmq

from .test_faults import record

SESSIONS = int(os.environ.get("LOAD_SESSIONS") or 20)
STREAMING = int(os.environ.get("LOAD_STREAMING") or 10)
pytestmark = pytest.mark.timeout(300 + 3 * SESSIONS)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_many_live_sessions_streaming_at_once_with_hostile_subscribers(make_supervisor) -> None:
    sup = make_supervisor(idle_timeout=600).start()
    names = [f"s{i}" for i in range(SESSIONS)]
    with sup.client(timeout=60) as c:
        for name in names:
            c.request("create", session=name)
        waiting = {c.request("send", session=name, text=f"wake {name}")["message_id"] for name in names}
        sub = c.request("subscribe", after=0)["sub"]
        while waiting:  # every session is live: each answered its first message
            frame = c.next_event(timeout=120)
            assert frame is not None, f"{len(waiting)} sessions never answered"
            c.request("ack", sub=sub, upto=frame["event"]["id"])
            if frame["event"]["kind"] == "result":
                waiting.discard(frame["event"].get("message_id"))
    assert len(sup.claude_pids()) == SESSIONS
    stop = threading.Event()
    latencies: list[float] = []
    rss: list[float] = [rss_mib(sup.proc.pid)]
    failures: list[str] = []

    def probe() -> None:
        with sup.client(timeout=30) as c:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    c.request("status", session=names[0])
                except Exception as exc:  # any failure is a finding
                    failures.append(repr(exc))
                latencies.append(time.monotonic() - t0)
                rss.append(rss_mib(sup.proc.pid))
                time.sleep(0.05)

    def resubscriber(k: int) -> None:
        while not stop.is_set():
            with sup.client(timeout=30) as c:
                sub = c.request("subscribe", session=names[k % SESSIONS], after=0)["sub"]
                for _ in range(20):
                    if c.next_event(timeout=0.5) is None:
                        break
                c.request("unsubscribe", sub=sub)

    # a subscriber that never reads, and one that reads but never acks
    ctx = zmq.Context()
    deaf = ctx.socket(zmq.DEALER)
    deaf.setsockopt(zmq.LINGER, 0)
    deaf.connect(f"ipc://{sup.runtime_dir / 'control.sock'}")
    deaf.send(msgpack.packb({"v": 1, "id": 1, "op": "subscribe", "after": 0, "window": 4096}))
    stingy = sup.client(timeout=30)
    stingy.request("subscribe", after=0, window=4096)
    threads = [threading.Thread(target=probe, daemon=True)]
    threads += [threading.Thread(target=resubscriber, args=(k,), daemon=True) for k in range(10)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    try:
        with sup.client(timeout=60) as c:
            sub = c.request("subscribe")["sub"]
            for rnd in range(3):
                waiting = {c.request("send", session=names[i], text=f"stream:2 round {rnd} long:2000 in s{i}")
                           ["message_id"] for i in range(min(STREAMING, SESSIONS))}
                while waiting:
                    frame = c.next_event(timeout=120)
                    assert frame is not None, f"{len(waiting)} streamed answers never ended"
                    event = frame["event"]
                    c.request("ack", sub=sub, upto=event["id"])
                    if event["kind"] == "result":
                        assert not event["is_error"], event
                        waiting.discard(event.get("message_id"))
                    elif event["kind"] == "message_failed":
                        pytest.fail(f"a message was not delivered under load: {event}")
                    stingy.next_event(timeout=0)  # reads now and then, never acks
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        deaf.close()
        ctx.term()
        stingy.close()
    took = time.monotonic() - t0
    assert not failures, failures[:5]
    assert sup.request("hello")["server"] == "supervisord-claude"
    ordered = sorted(latencies)
    record(f"{SESSIONS} live sessions, {min(STREAMING, SESSIONS)} streaming at once (3 rounds), 10 clients"
           " resubscribing, one subscriber that never reads and one that never acks", rounds=3,
           seconds=round(took, 1), answers=3 * min(STREAMING, SESSIONS), not_delivered=0,
           supervisor_rss_mib_start=round(rss[0], 1), supervisor_rss_mib_max=round(max(rss), 1),
           probe_requests=len(latencies), probe_failures=0,
           probe_latency_ms_p50=round(statistics.median(ordered) * 1000, 2),
           probe_latency_ms_p99=round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 2),
           probe_latency_ms_max=round(ordered[-1] * 1000, 2))
