"""Hostile input, generated: garbage, truncated msgpack, deep nesting, huge values, wrong
types, unknown ops and versions, forged ids, huge integers, hostile names. The
supervisor answers every frame and never crashes, and another client's requests are
answered throughout (their latency is measured: docs/reliability.md).

``HOSTILE_FRAMES`` (default 10,000) sets how many frames one run sends.
"""

from __future__ import annotations

import os
import statistics
import threading
import time

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import Op

from .conftest import SupervisorProcess
from .test_faults import record

FRAMES = int(os.environ.get("HOSTILE_FRAMES") or 10_000)
pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

#: ops a fuzzer may call for real: none that stops the supervisor or starts Claude
HARMLESS_OPS = [op.value for op in Op if op not in (Op.SHUTDOWN, Op.RESTART, Op.CREATE, Op.SEND)]

plain = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats()
    | st.text(max_size=300) | st.binary(max_size=300),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
names = st.text(max_size=80) | st.sampled_from(["../../etc", "a\x00b", "x" * 10_000, "", "-", "alpha/../beta"])
requests = st.fixed_dictionaries(
    {"v": st.just(1) | plain, "id": st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.text(max_size=300) | plain,
     "op": st.sampled_from(HARMLESS_OPS) | st.text(max_size=40) | plain},
    optional={"session": names, "after": plain, "upto": plain, "sub": plain, "key": names, "value": plain,
              "text": plain, "attachments": plain, "window": plain, "request_id": names, "answers": plain,
              "mode": names, "minutes": plain, "consumer": names,
              # the file ops' fields (put_file, read_file, list_dir, outbox_sent)
              "name": names, "path": names, "data": plain, "offset": plain, "more": plain, "length": plain,
              "within": plain},
)


def packed(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


frames = st.one_of(
    st.binary(max_size=2000),  # garbage
    requests.map(packed),
    st.tuples(requests.map(packed), st.floats(0, 1)).map(lambda t: t[0][: int(len(t[0]) * t[1])]),  # truncated
    st.integers(1, 200_000).map(lambda depth: b"\x91" * depth + b"\xc0"),  # nesting, far past any stack
    st.integers(1, 900_000).map(lambda n: packed({"v": 1, "id": 1, "op": "kv_set", "key": "k", "value": "x" * n})),
    plain.map(packed),
)


def test_generated_hostile_frames_are_all_answered_and_others_are_served(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    latencies: list[float] = []
    failures: list[str] = []
    done = threading.Event()

    def other_client() -> None:  # a well-behaved client, all along
        with supervisor.client(timeout=10) as c:
            while not done.is_set():
                t0 = time.monotonic()
                try:
                    c.request("status", session="alpha")
                except Exception as exc:  # any failure is a finding
                    failures.append(repr(exc))
                latencies.append(time.monotonic() - t0)
                time.sleep(0.02)

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{supervisor.runtime_dir / 'control.sock'}")
    sent = [0]

    @given(frame=frames)
    @settings(max_examples=FRAMES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def feed(frame: bytes) -> None:
        sock.send(frame)
        sent[0] += 1
        while True:
            assert sock.poll(20_000), f"no reply to frame {frame[:80]!r}"
            reply = msgpack.unpackb(sock.recv(), raw=False)
            if reply.get("type") != "keepalive":  # (frames a client does not know are ignored)
                break
        assert reply["type"] == "reply" and "ok" in reply

    watcher = threading.Thread(target=other_client, daemon=True)
    watcher.start()
    t0 = time.monotonic()
    try:
        feed()
    finally:
        done.set()
        watcher.join(30)
        sock.close()
        ctx.term()
    took = time.monotonic() - t0
    assert supervisor.proc.poll() is None and supervisor.request("hello")["server"] == "supervisord-claude"
    assert not failures, failures[:5]
    assert "Traceback" not in supervisor.log()
    assert sent[0] >= min(FRAMES, 1000)  # hypothesis may stop early when it has seen everything
    ordered = sorted(latencies)
    record("generated hostile frames on one connection, a well-behaved client beside it", rounds=sent[0],
           seconds=round(took, 1), replies=sent[0], crashes=0, other_client_requests=len(latencies),
           other_client_failures=0, other_latency_ms_p50=round(statistics.median(ordered) * 1000, 2),
           other_latency_ms_p99=round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
           other_latency_ms_max=round(ordered[-1] * 1000, 2))
