"""Benchmarks for supervisord-claude; run with ./scripts/bench. Method: docs/benchmarks.md.

Every figure is reported next to a baseline measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import msgpack
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol import Client  # noqa: E402
from supervisord_claude import _forkserver, _wire  # noqa: E402

STUB = """#!{python}
import json, sys, time
log = open({log!r}, "a", buffering=1)
for line in sys.stdin:
    log.write(f"{{time.time()}}\\n")
    msg = json.loads(line)
    if msg.get("type") != "user":
        continue
    sys.stdout.write(json.dumps({{"type": "system", "subtype": "init", "session_id": "s"}}) + "\\n")
    sys.stdout.write(json.dumps({{"type": "result", "subtype": "success", "is_error": False,
                                  "result": "ok", "total_cost_usd": 0, "duration_ms": 0}}) + "\\n")
    sys.stdout.flush()
"""


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def fmt_us(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1e6:.0f} µs, p95 {pct(values, 0.95) * 1e6:.0f} µs"


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def start_supervisor(base: Path, claude_bin: str, env_extra: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    env = dict(os.environ, HOME=str(base / "home"), **(env_extra or {}))
    (base / "home").mkdir(exist_ok=True)
    log = (base / "supervisor.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisord_claude", "--runtime-dir", str(base / "run"),
         "--state-dir", str(base / "state"), "--claude-bin", claude_bin, "--idle-timeout", "600",
         "--config", str(base / "none.toml")],
        env=env, stdout=subprocess.DEVNULL, stderr=log,
    )
    log.close()
    (base / "none.toml").write_text("")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with Client(base / "run", timeout=1) as c:
                c.request("hello")
            return proc
        except Exception:
            time.sleep(0.05)
    raise RuntimeError("supervisor did not start: " + (base / "supervisor.log").read_text())


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)


# 1. control round trip ------------------------------------------------------------------


def bench_round_trip(base: Path, n: int) -> dict[str, float]:
    # baseline: raw pyzmq DEALER -> ROUTER echo in another process, msgpack on both ends
    echo_path = base / "echo.sock"
    code = (
        "import zmq, msgpack\n"
        "s = zmq.Context().socket(zmq.ROUTER)\n"
        f"s.bind('ipc://{echo_path}')\n"
        "while True:\n"
        "    ident, data = s.recv_multipart()\n"
        "    m = msgpack.unpackb(data)\n"
        "    s.send_multipart([ident, msgpack.packb({'v': 1, 'type': 'reply', 'id': m['id'], 'ok': True, 'result': {}})])\n"
    )
    echo = subprocess.Popen([sys.executable, "-c", code])
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(f"ipc://{echo_path}")
    time.sleep(0.3)
    raw = []
    for i in range(n):
        t0 = time.perf_counter()
        sock.send(msgpack.packb({"v": 1, "id": i, "op": "hello"}))
        msgpack.unpackb(sock.recv())
        raw.append(time.perf_counter() - t0)
    sock.close(0)
    ctx.term()
    echo.kill()
    echo.wait()
    ours = []
    with Client(base / "run") as c:
        for _ in range(n):
            t0 = time.perf_counter()
            c.request("hello")
            ours.append(time.perf_counter() - t0)
    print(f"control round trip (hello), n={n}: supervisor {fmt_us(ours)}; raw pyzmq echo {fmt_us(raw)}; "
          f"ratio {statistics.median(ours) / statistics.median(raw):.2f}x")
    return {"rt_ours_us": statistics.median(ours) * 1e6, "rt_raw_us": statistics.median(raw) * 1e6}


# 2 + 3. fork -> ready and PSS per idle keeper --------------------------------------------


def bench_keepers(base: Path, count: int, freeze: bool) -> dict[str, float]:
    run = base / f"k-run-{int(freeze)}"
    run.mkdir(mode=0o700)
    # a Claude stand-in that costs nothing to start (so fork->hello is not measured
    # against Python start-ups) and answers every line with a 2000-event turn
    turn = base / "turn.jsonl"
    lines = [json.dumps({"type": "system", "subtype": "init", "session_id": "s"})]
    lines += [json.dumps({"type": "assistant", "message": {"content": [{"type": "text", "text": "x" * 200}]}})] * 2000
    lines.append(json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "ok",
                             "total_cost_usd": 0, "duration_ms": 0}))
    turn.write_text("\n".join(lines) + "\n")
    worker = base / f"worker-claude-{int(freeze)}"
    worker.write_text(f'#!/bin/sh\nwhile read -r line; do cat "{turn}"; done\n')
    worker.chmod(0o755)
    death_r, death_w = os.pipe()
    pid, fs = _forkserver.start("supervisord-claude[bench]: forkserver", death_r, close_fds=(death_w,),
                                freeze=freeze)
    os.close(death_r)
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.RCVHWM, 0)
    router.bind(f"ipc://{run / 'keepers.sock'}")
    times, keepers, idents = [], [], []
    for i in range(count):
        spec = _wire.KeeperSpec(session=f"b{i}", instance="bench", runtime_dir=str(run), claude_bin=str(worker),
                                cwd=str(base), session_id=f"id{i}", started=False, idle_timeout=600.0)
        t0 = time.perf_counter()
        fs.send(_wire.encode(_wire.Spawn(i, spec)))
        while True:
            ident, data = router.recv_multipart()
            msg = msgpack.unpackb(data)
            if msg.get("t") == "hello":
                times.append(time.perf_counter() - t0)
                keepers.append(msg["pid"])
                idents.append(ident)
                break
    time.sleep(1.0)  # let every keeper settle into idle
    pss_idle = [pss_kib(p) for p in keepers]
    # then one busy turn each (2000 events through the keeper): the steady state
    for ident in idents:
        router.send_multipart([ident, _wire.encode(_wire.Deliver(_wire.QueuedMessage(1, "go")))])
    done = 0
    while done < count:
        _ident, data = router.recv_multipart()
        msg = msgpack.unpackb(data)
        if msg.get("t") == "event" and msg.get("kind") == "result":
            done += 1
    time.sleep(0.5)
    pss_worked = [pss_kib(p) for p in keepers]
    for p in keepers:
        os.kill(p, signal.SIGTERM)
    time.sleep(1.0)
    os.close(death_w)
    os.waitpid(pid, 0)
    router.close(0)
    ctx.term()
    label = "with gc.freeze()" if freeze else "without gc.freeze()"
    print(f"keepers x{count} {label}: fork->hello median {statistics.median(times) * 1e3:.1f} ms "
          f"(p95 {pct(times, 0.95) * 1e3:.1f} ms); PSS per keeper median {statistics.median(pss_idle) / 1024:.1f} MiB "
          f"idle, {statistics.median(pss_worked) / 1024:.1f} MiB after a 2000-event turn")
    return {"fork_ms": statistics.median(times) * 1e3, "pss_mib": statistics.median(pss_idle) / 1024,
            "pss_worked_mib": statistics.median(pss_worked) / 1024}


# 4. message -> Claude stdin latency ------------------------------------------------------


def bench_message_latency(base: Path, n: int) -> dict[str, float]:
    log = base / "stdin-times.log"
    stub = base / "stub-claude"
    stub.write_text(STUB.format(python=sys.executable, log=str(log)))
    stub.chmod(0o755)
    # baseline: the same stub spawned bare, one line written straight to its stdin
    bare = subprocess.Popen([str(stub)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    raw = []
    for _ in range(n):
        before = len(log.read_text().splitlines()) if log.exists() else 0
        t0 = time.time()
        bare.stdin.write(b'{"type":"user","message":{"role":"user","content":"x"}}\n')
        bare.stdin.flush()
        bare.stdout.readline()
        bare.stdout.readline()
        raw.append(float(log.read_text().splitlines()[before]) - t0)
    bare.stdin.close()
    bare.wait()
    sup_base = base / "lat"
    sup_base.mkdir()
    sup = start_supervisor(sup_base, str(stub))
    ours = []
    try:
        with Client(sup_base / "run") as c:
            c.request("create", session="lat")
            for i in range(n + 1):
                before = len(log.read_text().splitlines())
                t0 = time.time()
                c.request("send", session="lat", text="x")
                deadline = time.monotonic() + 10
                while len(log.read_text().splitlines()) <= before and time.monotonic() < deadline:
                    time.sleep(0.0005)
                if i > 0:  # the first message also starts the keeper and Claude
                    ours.append(float(log.read_text().splitlines()[before]) - t0)
                while c.request("status", session="lat")["state"] != "idle":
                    time.sleep(0.001)
    finally:
        stop(sup)
    print(f"message -> Claude stdin, n={n}: via supervisor+keeper {fmt_us(ours)}; bare pipe write {fmt_us(raw)}; "
          f"ratio {statistics.median(ours) / statistics.median(raw):.1f}x")
    return {"msg_ours_us": statistics.median(ours) * 1e6, "msg_raw_us": statistics.median(raw) * 1e6}


# 4b. event throughput: Claude stdout line -> stored -> subscriber ------------------------

BURST_STUB = """#!{python}
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("type") != "user":
        continue
    out = [json.dumps({{"type": "system", "subtype": "init", "session_id": "s"}})]
    out += [json.dumps({{"type": "assistant", "message": {{"content": [{{"type": "text", "text": "x" * 200}}]}}}})] * {n}
    out.append(json.dumps({{"type": "result", "subtype": "success", "is_error": False, "result": "ok",
                            "total_cost_usd": 0, "duration_ms": 0}}))
    sys.stdout.write("\\n".join(out) + "\\n")
    sys.stdout.flush()
"""


def bench_event_throughput(base: Path, n: int) -> dict[str, float]:
    import asyncio

    from protocol import AsyncClient

    stub = base / "burst-claude"
    stub.write_text(BURST_STUB.format(python=sys.executable, n=n))
    stub.chmod(0o755)
    # baseline: the same stub, its stdout read bare, line by line
    # baseline: the same stub spawned, its stdout read and each line parsed, bare
    t0 = time.perf_counter()
    bare = subprocess.Popen([str(stub)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    bare.stdin.write(b'{"type":"user","message":{"role":"user","content":"x"}}\n')
    bare.stdin.flush()
    for line in bare.stdout:
        if json.loads(line).get("type") == "result":
            break
    raw = time.perf_counter() - t0
    bare.stdin.close()
    bare.wait()
    sup_base = base / "burst"
    sup_base.mkdir()
    sup = start_supervisor(sup_base, str(stub))

    async def run() -> float:
        async with AsyncClient(sup_base / "run") as c:
            await c.request("create", session="burst")
            sub = await c.subscribe("burst", after=0, window=512)
            t0 = time.perf_counter()
            await c.request("send", session="burst", text="go")
            unacked = 0
            while True:
                event = await sub.next(timeout=120)
                assert event is not None
                unacked += 1
                if unacked >= 256 or event["kind"] == "result":  # one ack per 256 events
                    await sub.ack(event["id"])
                    unacked = 0
                if event["kind"] == "result":
                    return time.perf_counter() - t0

    try:
        ours = asyncio.run(run())
    finally:
        stop(sup)
    print(f"event throughput, {n} assistant events: stored+published+received {n / ours:.0f} events/s "
          f"({ours * 1e6 / n:.0f} µs each, including Claude start); bare stdout read {n / raw:.0f} lines/s; "
          f"ratio {ours / raw:.1f}x")
    return {"events_per_s": n / ours, "bare_lines_per_s": n / raw}


# 5. real claude: first answer through the supervisor vs a bare spawn --------------------


def bench_real_claude(base: Path, n: int) -> dict[str, float] | None:
    try:
        import claude_agent_sdk
    except ImportError:
        print("real claude: skipped (claude-agent-sdk not installed)")
        return None
    claude = str(Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude")
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_anthropic import FakeAnthropic

    api = FakeAnthropic().start()
    env = {"ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "x", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    home = base / "real-home"
    home.mkdir()
    bare = []
    line = b'{"type":"user","message":{"role":"user","content":"hi"},"parent_tool_use_id":null}\n'
    for _ in range(n):
        t0 = time.perf_counter()
        p = subprocess.Popen([claude, "-p", "--input-format", "stream-json", "--output-format", "stream-json",
                              "--verbose"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=base,
                             env=dict(os.environ, HOME=str(home), **env))
        p.stdin.write(line)
        p.stdin.flush()
        for out in p.stdout:
            if b'"type":"result"' in out:
                break
        bare.append(time.perf_counter() - t0)
        p.stdin.close()
        p.wait()
    sup_base = base / "real"
    sup_base.mkdir()
    sup = start_supervisor(sup_base, claude, env)
    ours = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "supervisord_claude.ctl", "--runtime-dir", str(sup_base / "run"),
                            "new", f"r{i}"], check=True, capture_output=True)
            subprocess.run([sys.executable, "-m", "supervisord_claude.ctl", "--runtime-dir", str(sup_base / "run"),
                            "send", f"r{i}", "hi", "--wait"], check=True, capture_output=True)
            ours.append(time.perf_counter() - t0)
    finally:
        stop(sup)
        api.stop()
    print(f"real claude first answer, n={n}: claudectl new+send --wait {statistics.median(ours) * 1e3:.0f} ms; "
          f"bare spawn->result {statistics.median(bare) * 1e3:.0f} ms; "
          f"ratio {statistics.median(ours) / statistics.median(bare):.2f}x")
    return {"real_ours_ms": statistics.median(ours) * 1e3, "real_bare_ms": statistics.median(bare) * 1e3}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    n = 300 if args.quick else 2000
    out: dict[str, float] = {}
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, pyzmq {zmq.__version__}")
    with tempfile.TemporaryDirectory(prefix="scb-") as d:
        base = Path(d)
        os.chmod(base, 0o700)
        sup_base = base / "rt"
        sup_base.mkdir()
        sup = start_supervisor(sup_base, "/bin/true")
        try:
            out |= bench_round_trip(sup_base, n)
        finally:
            stop(sup)
        out |= {f"{k}_frozen": v for k, v in bench_keepers(base, 50, freeze=True).items()}
        out |= {f"{k}_unfrozen": v for k, v in bench_keepers(base, 50, freeze=False).items()}
        out |= bench_message_latency(base, 50 if args.quick else 200)
        out |= bench_event_throughput(base, 500 if args.quick else 3000)
        real = bench_real_claude(base, 3 if args.quick else 5)
        if real:
            out |= real
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    threading.stack_size(0)
    sys.exit(main())
