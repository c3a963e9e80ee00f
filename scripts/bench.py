"""Benchmarks for supervisord-claude; run with ./scripts/bench. Method: docs/benchmarks.md.

Every figure is reported next to a baseline measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import zmq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from protocol import Client  # noqa: E402
from supervisord_claude import _wire  # noqa: E402
from supervisord_claude.supervisor import _forkserver  # noqa: E402

STUB = """#!{python}
import json, sys, time
log = open({log!r}, "w", buffering=1)  # a FIFO: when each line was read
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
    return f"median {statistics.median(values) * 1e6:.0f} µs, p99 {pct(values, 0.99) * 1e6:.0f} µs"


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def start_supervisor(base: Path, claude_bin: str, env_extra: dict[str, str] | None = None,
                     poll: float = 0.05, code: Path | None = None) -> subprocess.Popen[bytes]:
    """A supervisor of this checkout, or of the one at ``code`` (another checkout: its
    packages are what the supervisor, its fork server and keepers import)."""
    env = dict(os.environ, HOME=str(base / "home"), **(env_extra or {}))
    if code is not None:
        env["PYTHONPATH"] = str(code)
    (base / "home").mkdir(exist_ok=True)
    log = (base / "supervisor.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisord_claude", "--runtime-dir", str(base / "run"),
         "--state-dir", str(base / "state"), "--claude-bin", claude_bin, "--idle-timeout", "600",
         "--config", str(base / "none.toml")],
        env=env, stdout=subprocess.DEVNULL, stderr=log, cwd=code,
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
            time.sleep(poll)
    raise RuntimeError("supervisor did not start: " + (base / "supervisor.log").read_text())


#: where --profile writes what py-spy sampled (None: no profiling)
PROFILE_DIR: Path | None = None


def sample(pids: dict[str, int], seconds: float) -> list[subprocess.Popen[bytes]]:
    """With --profile: py-spy samples each named process for ``seconds`` (from now, not
    blocking), writing collapsed stacks to PROFILE_DIR/NAME.txt; a sampler costs the
    process nothing, unlike cProfile. Without --profile, or without py-spy: nothing."""
    spy = shutil.which("py-spy") or os.environ.get("PY_SPY")
    if PROFILE_DIR is None or not spy:
        if PROFILE_DIR is not None:
            print("profile: py-spy not found (pip install py-spy, or PY_SPY=path)")
        return []
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
                              "--rate", "250", "--format", "raw", "--nonblocking",
                              "--output", str(PROFILE_DIR / f"{name}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, pid in pids.items()]


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
          f"ratio p50 {statistics.median(ours) / statistics.median(raw):.2f}x, "
          f"p99 {pct(ours, 0.99) / pct(raw, 0.99):.2f}x")
    return {"rt_ours_us": statistics.median(ours) * 1e6, "rt_raw_us": statistics.median(raw) * 1e6,
            "rt_ours_p99_us": pct(ours, 0.99) * 1e6, "rt_raw_p99_us": pct(raw, 0.99) * 1e6}


# 1b. the same round trip to another machine's supervisor, through ssh on loopback ---------


#: ``dial-stdio`` as it started before it had its own light way in (and still does with
#: an option before it): through the daemon's parser, the whole client library loaded
FULL_DIAL_STDIO = f"{sys.executable} -m supervisord_claude --log-level info"


def bench_ssh_round_trip(base: Path, n: int) -> dict[str, float]:
    """``hello`` to one supervisor, directly and through ``ssh … dial-stdio`` (a real sshd
    on 127.0.0.1, tests/sshd.py), interleaved in the same run; what the link costs to set
    up (ssh's handshake, the remote dial-stdio's start) with and without the shared
    connection (``multiplex``), and to keep (ssh's memory); and claudectl commands on that
    host one after another (``bench_ssh_commands``)."""
    from dataclasses import replace

    from protocol import Host, stop_shared_connection
    from tests.sshd import SSHD, Sshd

    if not SSHD.exists():
        print("ssh round trip: skipped (no /usr/sbin/sshd: apt-get install openssh-server)")
        return {}
    sshd = Sshd(base / "ssh").start()
    sup_base = base / "ssh-sup"
    sup_base.mkdir()
    sup = start_supervisor(sup_base, "/bin/true")
    old_env = {name: os.environ.get(name) for name in sshd.env}
    os.environ.update(sshd.env)
    host = Host("bench", "remote", command=f"{sys.executable} -m supervisord_claude",
                runtime_dir=str(sup_base / "run"), ssh="remote")
    # as before multiplexing: a connection of its own, and dial-stdio through the daemon's
    # parser (an option before the command takes that way), which loads the client library
    plain = replace(host, multiplex=False, command=FULL_DIAL_STDIO)
    try:
        # the link's connect: without sharing, the first with it (no master yet), the next
        # (on the master), interleaved
        connects: dict[str, list[float]] = {"plain": [], "first": [], "next": []}
        for _ in range(3 if n < 1000 else 10):
            stop_shared_connection(host)
            for kind, target in (("plain", plain), ("first", host), ("next", host)):
                t0 = time.perf_counter()
                with Client(host=target):
                    connects[kind].append(time.perf_counter() - t0)
        local_times: list[float] = []
        ssh_times: list[float] = []
        with Client(sup_base / "run") as local, Client(host=host) as remote:
            assert remote._link is not None and remote._link.ssh_pid is not None
            ssh_rss = _rss_kib(remote._link.ssh_pid)
            master_rss = sum(_rss_kib(pid) for pid in sshd.masters())
            for _ in range(n):  # interleaved: both see the same machine at the same moment
                for client, times in ((local, local_times), (remote, ssh_times)):
                    t0 = time.perf_counter()
                    client.request("hello")
                    times.append(time.perf_counter() - t0)
        commands = bench_ssh_commands(sup_base, host, *((3, 1) if n < 1000 else (10, 3)))
    finally:
        stop_shared_connection(host)
        for name, value in old_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        stop(sup)
        sshd.stop()
    med = {kind: statistics.median(times) * 1e3 for kind, times in connects.items()}
    print(f"round trip through ssh on loopback (hello), n={n}: ssh {fmt_us(ssh_times)}; direct {fmt_us(local_times)}; "
          f"ratio p50 {statistics.median(ssh_times) / statistics.median(local_times):.1f}x; "
          f"connect (ssh + dial-stdio + hello) median: before (own connection, heavy dial-stdio)"
          f" {med['plain']:.0f} ms, now: first "
          f"{med['first']:.0f} ms, next {med['next']:.0f} ms; ssh client {ssh_rss / 1024:.1f} MiB RSS, its master "
          f"{master_rss / 1024:.1f} MiB; load average {os.getloadavg()[0]:.1f}")
    return {"ssh_rt_us": statistics.median(ssh_times) * 1e6, "ssh_rt_p99_us": pct(ssh_times, 0.99) * 1e6,
            "ssh_direct_rt_us": statistics.median(local_times) * 1e6,
            "ssh_direct_rt_p99_us": pct(local_times, 0.99) * 1e6,
            "ssh_connect_ms": med["first"], "ssh_connect_plain_ms": med["plain"],
            "ssh_connect_next_ms": med["next"], "ssh_rss_mib": ssh_rss / 1024, "ssh_master_rss_mib": master_rss / 1024,
            **commands}


def bench_ssh_commands(sup_base: Path, host: Any, rounds: int, per_round: int) -> dict[str, float]:
    """A script's loop: ``claudectl --host NAME ls`` run again and again, each its own
    process, as a user's script runs it, interleaved: as before (``multiplex = false`` and
    ``dial-stdio`` through the daemon's parser: a connection and the client library each
    time); on the shared connection with that heavy ``dial-stdio`` (what multiplexing
    alone saves); on it as it is now (the first command of a round makes the connection,
    the next ones ride it); and beside them a local ``claudectl ls`` (claudectl's own
    Python start and the request: what no transport can save)."""
    from protocol import stop_shared_connection

    config = sup_base / "client.toml"
    where = f'ssh = "remote"\nruntime_dir = "{sup_base / "run"}"\n'
    light = f'command = "{sys.executable} -m supervisord_claude"\n'
    heavy = f'command = "{FULL_DIAL_STDIO}"\n'
    config.write_text(f"[hosts.shared]\n{where}{light}[hosts.sharedheavy]\n{where}{heavy}"
                      f"[hosts.before]\n{where}{heavy}multiplex = false\n")
    env = dict(os.environ, SUPERVISORD_CLAUDE_CONFIG=str(config))
    times: dict[str, list[float]] = {"before": [], "shared_heavy": [], "first": [], "next": [], "local": []}

    def ctl(kind: str, *where: str) -> None:
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "supervisord_claude.ctl", *where, "ls"], env=env,
                             capture_output=True, text=True, timeout=120)
        times[kind].append(time.perf_counter() - t0)
        assert run.returncode == 0, run.stderr

    for _ in range(rounds):
        stop_shared_connection(host)  # (the same destination: the same shared connection)
        ctl("first", "--host", "shared")
        for _ in range(per_round):
            ctl("before", "--host", "before")
            ctl("shared_heavy", "--host", "sharedheavy")
            ctl("next", "--host", "shared")
            ctl("local", "--runtime-dir", str(sup_base / "run"))
    med = {kind: statistics.median(values) * 1e3 for kind, values in times.items()}
    print(f"claudectl --host ls, one after another ({rounds} rounds, medians): before (a connection and a heavy"
          f" dial-stdio each) {med['before']:.0f} ms; shared connection, heavy dial-stdio {med['shared_heavy']:.0f} ms;"
          f" now: first {med['first']:.0f} ms, next {med['next']:.0f} ms; local claudectl ls {med['local']:.0f} ms;"
          f" load average {os.getloadavg()[0]:.1f}")
    return {"ssh_ctl_before_ms": med["before"], "ssh_ctl_shared_heavy_ms": med["shared_heavy"],
            "ssh_ctl_first_ms": med["first"], "ssh_ctl_next_ms": med["next"], "ssh_ctl_local_ms": med["local"]}


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
            hello = _wire.decode_all(data)[0]  # (or an earlier keeper's reports)
            if isinstance(hello, _wire.Hello):
                times.append(time.perf_counter() - t0)
                keepers.append(hello.pid)
                idents.append(ident)
                router.send_multipart([ident, _wire.encode(_wire.Welcome(1))])  # take it on
                break
    time.sleep(1.0)  # let every keeper settle into idle
    pss_idle = [pss_kib(p) for p in keepers]
    # then one busy turn each (2000 events through the keeper): the steady state
    for ident in idents:
        router.send_multipart([ident, _wire.encode(_wire.Deliver(_wire.QueuedMessage(1, "go")))])
    done = 0
    while done < count:
        ident, data = router.recv_multipart()
        reports = [m for m in _wire.decode_all(data) if isinstance(m, _wire.Numbered)]
        if reports:  # acked as a supervisor would, so the keeper does not keep them
            router.send_multipart([ident, _wire.encode(_wire.Ack(reports[-1].last_n))])
        done += sum(1 for m in reports if isinstance(m, _wire.KeeperEvents) for e in m.each() if e.kind == "result")
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
    """The stub writes when it read each line to a FIFO the benchmark blocks on (no
    polling loop competing for the two cores)."""
    fifo = base / "stdin-times.fifo"
    os.mkfifo(fifo)
    stub = base / "stub-claude"
    stub.write_text(STUB.format(python=sys.executable, log=str(fifo)))
    stub.chmod(0o755)
    line = b'{"type":"user","message":{"role":"user","content":"x"}}\n'

    def reader() -> Any:
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # open now; the stub opens its end later
        return os.fdopen(fd, "rb", buffering=0)

    def read_time(times: Any) -> float:
        os.set_blocking(times.fileno(), False)
        data = b""
        while not data.endswith(b"\n"):  # until the stub has opened its end and written
            select.select([times], [], [], 10)
            data += times.read() or b""
        return float(data)

    # baseline: the same stub spawned bare, one line written straight to its stdin
    times = reader()
    bare = subprocess.Popen([str(stub)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert bare.stdin is not None and bare.stdout is not None
    raw = []
    for _ in range(n):
        t0 = time.time()
        bare.stdin.write(line)
        bare.stdin.flush()
        raw.append(read_time(times) - t0)
        bare.stdout.readline()
        bare.stdout.readline()
    bare.stdin.close()
    bare.wait()
    times.close()
    sup_base = base / "lat"
    sup_base.mkdir()
    sup = start_supervisor(sup_base, str(stub))
    ours = []
    times = reader()
    try:
        with Client(sup_base / "run") as c:
            c.request("create", session="lat")
            for i in range(n + 1):
                t0 = time.time()
                c.request("send", session="lat", text="x")
                read_at = read_time(times)
                if i > 0:  # the first message also starts the keeper and Claude
                    ours.append(read_at - t0)
                while c.request("status", session="lat")["state"] != "idle":
                    time.sleep(0.001)
    finally:
        stop(sup)
        times.close()
    print(f"message -> Claude stdin, n={n}: via supervisor+keeper {fmt_us(ours)}; bare pipe write {fmt_us(raw)}; "
          f"ratio {statistics.median(ours) / statistics.median(raw):.1f}x")
    return {"msg_ours_us": statistics.median(ours) * 1e6, "msg_raw_us": statistics.median(raw) * 1e6,
            "msg_ours_p99_us": pct(ours, 0.99) * 1e6, "msg_raw_p99_us": pct(raw, 0.99) * 1e6}


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


#: one of the stub's assistant lines (as the stub writes them)
BURST_LINE = (json.dumps({"type": "assistant", "message": {"content": [{"type": "text", "text": "x" * 200}]}})
              + "\n").encode()


def _bare_burst_read(stub: Path, loads: Callable[[bytes], Any]) -> float:
    """Seconds from spawning the stub to having read and parsed its whole burst."""
    t0 = time.perf_counter()
    bare = subprocess.Popen([str(stub)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert bare.stdin is not None and bare.stdout is not None
    bare.stdin.write(b'{"type":"user","message":{"role":"user","content":"x"}}\n')
    bare.stdin.flush()
    for line in bare.stdout:
        if loads(line).get("type") == "result":
            break
    elapsed = time.perf_counter() - t0
    bare.stdin.close()
    bare.wait()
    return elapsed


def _burst_once(base: Path, stub: Path, n: int, name: str, pipelined: bool = False,
                code: Path | None = None) -> dict[str, float]:
    """One burst through a new supervisor (of the checkout at ``code``, if given), beside
    its baseline (the bare read), measured just before it: rates, ratio, and the CPU each
    process spent per event. The subscriber acks every 256 events and waits for the ack's
    reply before it reads on; ``pipelined``: it reads on while its ack travels (at most
    one in flight)."""
    import asyncio

    import orjson

    from protocol import AsyncClient

    raw = _bare_burst_read(stub, json.loads)
    raw_orjson = _bare_burst_read(stub, orjson.loads)
    sup_base = base / name
    sup_base.mkdir()
    sup = start_supervisor(sup_base, str(stub), code=code)
    cpu: dict[str, float] = {}
    to_first: list[float] = []

    async def run() -> float:
        async with AsyncClient(sup_base / "run") as c:
            await c.request("create", session="burst")
            sub = await c.subscribe("burst", after=0, window=512)
            sup_cpu, client_cpu = _cpu_fine_s(sup.pid), time.process_time()
            t0 = time.perf_counter()
            await c.request("send", session="burst", text="go")
            samplers = sample({f"{name}-supervisor": sup.pid}, 1)
            unacked = 0
            in_flight: asyncio.Future[None] | None = None
            first: float | None = None
            while True:
                event = await sub.next(timeout=120)
                assert event is not None
                if first is None and event["kind"] == "assistant_text":  # (the keeper's and Claude's start before)
                    first = time.perf_counter() - t0
                unacked += 1
                if unacked >= 256 or event["kind"] == "result":  # one ack per 256 events
                    if pipelined and event["kind"] != "result":
                        if in_flight is not None:
                            await in_flight
                        in_flight = asyncio.ensure_future(sub.ack(event["id"]))
                    else:
                        await sub.ack(event["id"])
                    unacked = 0
                if event["kind"] == "result":
                    elapsed = time.perf_counter() - t0
                    to_first.append(first or 0.0)
                    cpu["client"] = time.process_time() - client_cpu
                    cpu["supervisor"] = _cpu_fine_s(sup.pid) - sup_cpu
                    # (the keeper started with the burst: all its CPU is the burst's)
                    cpu["keeper"] = sum(_cpu_fine_s(p) for p in _keepers_of(sup_base / "run"))
                    for sampler in samplers:
                        sampler.wait()
                    return elapsed

    try:
        ours = asyncio.run(run())
    finally:
        stop(sup)
    return {"events_per_s": n / ours, "bare_lines_per_s": n / raw, "bare_orjson_lines_per_s": n / raw_orjson,
            "ratio": raw / ours, "first_event_ms": to_first[0] * 1e3, **{f"{who}_us_per_event": s / n * 1e6 for who, s in cpu.items()},
            "load_average": os.getloadavg()[0]}


def bench_event_throughput(base: Path, n: int, repeat: int = 1, pipelined_too: bool = True,
                           against: Path | None = None) -> dict[str, float]:
    """The burst ``repeat`` times, each beside its own baseline, with the subscriber
    waiting for each ack's reply and then with its acks pipelined; the medians (and each
    run). ``against``: another checkout (e.g. main), whose burst runs just before each of
    this one's, interleaved (its figures prefixed ``against_``)."""
    stub = base / "burst-claude"
    stub.write_text(BURST_STUB.format(python=sys.executable, n=n))
    stub.chmod(0o755)
    out: dict[str, Any] = {}
    for pipelined in (False, True) if pipelined_too else (False,):
        runs: list[dict[str, float]] = []
        other: list[dict[str, float]] = []
        how = "acks pipelined" if pipelined else "each ack awaited"
        for i in range(repeat):
            pairs = [("against", against, other)] if against is not None else []
            for who, code, into in [*pairs, ("this", None, runs)]:
                r = _burst_once(base, stub, n, f"burst-{i}{'-pipelined' if pipelined else ''}-{who}", pipelined, code)
                into.append(r)
                print(f"  burst run {i + 1}/{repeat} ({how}{', ' + str(code) if code else ''}):"
                      f" {r['events_per_s']:.0f} events/s, bare read"
                      f" {r['bare_lines_per_s']:.0f} lines/s: {r['ratio']:.2f}x; CPU per event: supervisor"
                      f" {r['supervisor_us_per_event']:.1f} us, keeper {r['keeper_us_per_event']:.1f} us, client"
                      f" {r['client_us_per_event']:.1f} us; first event after {r['first_event_ms']:.0f} ms; load"
                      f" average {r['load_average']:.1f}")
        if other:
            theirs = {key: statistics.median(r[key] for r in other) for key in other[0]}
            their_ratios = " / ".join(f"{r['ratio']:.2f}" for r in other)
            print(f"  {against}, median of {repeat} ({how}): {theirs['ratio']:.2f}x of the bare rate (runs:"
                  f" {their_ratios}); CPU per event: supervisor"
                  f" {theirs['supervisor_us_per_event']:.1f} us, keeper {theirs['keeper_us_per_event']:.1f} us,"
                  f" client {theirs['client_us_per_event']:.1f} us")
            prefix = "against_pipelined_" if pipelined else "against_"
            out |= {f"{prefix}{key}": value for key, value in theirs.items()}
        med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        ratios = " / ".join(f"{r['ratio']:.2f}" for r in runs)
        print(f"event throughput, {n} assistant events (window 512, an ack per 256, {how}), median of {repeat}:"
              f" stored+published+received {med['events_per_s']:.0f} events/s (including Claude's start); bare"
              f" spawn+read+parse {med['bare_lines_per_s']:.0f} lines/s; {med['ratio']:.2f}x of the bare rate (runs:"
              f" {ratios}; orjson-parsed bare read {med['bare_orjson_lines_per_s']:.0f} lines/s); CPU per event:"
              f" supervisor {med['supervisor_us_per_event']:.1f} us, keeper {med['keeper_us_per_event']:.1f} us,"
              f" client {med['client_us_per_event']:.1f} us; load average {med['load_average']:.1f}")
        if pipelined:
            out |= {f"pipelined_{key}": value for key, value in med.items()} | {"burst_runs_pipelined": runs}
        else:
            out |= med | {"burst_runs": runs}
    return out


def bench_burst_stages(base: Path, n: int) -> dict[str, float]:
    """The burst's stages in this process, each alone (best of 3, CPU per event): the
    keeper (a read of Claude's lines parsed, the machine, the uplink's run), the supervisor's
    decoding of the keeper's frames, and its pool, event log, store and hub (a subscriber
    with batches, acking). With --profile, cProfile of each stage (``stage-*.prof``)."""
    import cProfile

    from protocol import validate_request
    from supervisord_claude import _claude
    from supervisord_claude._clock import FakeClock
    from supervisord_claude._configkeys import Config
    from supervisord_claude._os import System
    from supervisord_claude.keeper._keeper import Keeper
    from supervisord_claude.supervisor._core import build_core
    from supervisord_claude.supervisor._store import Store

    line = BURST_LINE
    per_turn = 256  # lines a keeper reads in one loop turn (what 64 KiB of the pipe holds)

    class Sock:
        def __init__(self) -> None:
            self.frames: list[bytes] = []

        def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
            self.frames.append(frames[0])

    def profiled(name: str, work: Callable[[], None]) -> float:
        t0 = time.process_time()
        if PROFILE_DIR is not None:
            PROFILE_DIR.mkdir(parents=True, exist_ok=True)
            cProfile.runctx("work()", {}, {"work": work}, str(PROFILE_DIR / f"stage-{name}.prof"))
        else:
            work()
        return (time.process_time() - t0) / n * 1e6

    def keeper() -> tuple[float, list[bytes]]:
        clock = FakeClock()
        k = Keeper(_wire.KeeperSpec(session="burst", instance="bench", runtime_dir=str(base), claude_bin="claude",
                                    cwd=str(base), session_id="sid", started=True, idle_timeout=600), None, clock=clock)
        k._spawn_task = lambda coro: coro.close()  # type: ignore[method-assign,assignment,return-value]
        k.uplink.sock = sock = Sock()
        k.uplink.connected()
        k.uplink.welcome(1)
        start = k.machine.start()
        run = next(a.run for a in start if type(a).__name__ == "StartClaude")  # type: ignore[attr-defined]
        k.do(start)
        k.do(k.machine.claude_started(run, 4242))
        k.handle(_wire.Deliver(_wire.QueuedMessage(1, "go")))
        k.do(k.machine.claude_output(run, _claude.parse_line(b'{"type":"system","subtype":"init","session_id":"s"}')))
        clock.advance(0)
        sock.frames.clear()

        lines = [line.rstrip(b"\n")] * per_turn

        def work() -> None:
            for _ in range(0, n, per_turn):
                k._claude_lines(run, lines)  # (what the keeper does with a read of its pipe)
                clock.advance(0)
        return profiled("keeper", work), list(sock.frames)

    def supervisor(frames: list[bytes], attempt: int) -> tuple[float, float]:
        state = base / f"stages-{attempt}"
        config = Config(runtime_dir=state / "run", state_dir=state / "state", claude_bin="/bin/true")
        store = Store(config.db_path)
        clock = FakeClock()

        class Link:
            def send(self, ident: bytes, msg: _wire.Message) -> bool:
                return True

        class Fork:
            def __init__(self) -> None:
                self.token = 0

            def spawn(self, token: int, spec: _wire.KeeperSpec) -> None:
                self.token = token

        fork = Fork()
        core = build_core(config, store, System(), clock, time.time, fork, Link(), lambda ident, frame: None,
                          lambda: None, lambda: None)

        def op(name: str, **args: Any) -> dict[str, Any]:
            return core.ops.handle(b"client", validate_request({"v": 1, "id": 1, "op": name, **args}))
        op("create", session="burst")
        op("send", session="burst", text="go")
        core.pool.on_fork_report(_wire.Spawned(fork.token, 4242))
        ident = b"burst:4242"
        core.pool.on_keeper_message(ident, _wire.Hello(4242, version=_wire.WIRE_VERSION, session="burst"))
        sub = op("subscribe", session="burst", after=0, window=512, batch=True)["sub"]
        decoded: list[list[_wire.Message | _wire.WireError]] = []
        decode_us = profiled("decode", lambda: decoded.extend(_wire.decode_all(f) for f in frames))

        def work() -> None:
            for messages in decoded:
                core.pool.on_keeper_messages([(ident, m) for m in messages if isinstance(m, _wire.Message)])
                clock.advance(0)  # (the acks to the keeper)
                core.hub.ack(b"client", sub, 1 << 60)
        pool_us = profiled("pool-store-hub", work)
        store.close()
        return decode_us, pool_us

    best: dict[str, float] = {}
    for attempt in range(3):
        keeper_us, frames = keeper()
        decode_us, pool_us = supervisor(frames, attempt)
        for key, value in (("stage_keeper_us", keeper_us), ("stage_decode_us", decode_us),
                           ("stage_pool_store_hub_us", pool_us)):
            best[key] = min(best.get(key, float("inf")), value)
    print(f"burst stages in process, {n} events, best of 3, CPU per event: keeper {best['stage_keeper_us']:.2f} us"
          f" (line parsed, machine, uplink); supervisor: decoding the keeper's frames {best['stage_decode_us']:.2f} us,"
          f" pool + event log + store + hub {best['stage_pool_store_hub_us']:.2f} us ({len(frames)} frames);"
          f" load average {os.getloadavg()[0]:.1f}")
    return best


# 5. real claude: first answer through the supervisor vs a bare spawn --------------------


def _real_claude(what: str) -> tuple[str, Any, dict[str, str]] | None:
    """The pinned real CLI (from claude-agent-sdk), the fake Anthropic API it talks to,
    and the environment that points it there; None (said) where it is not installed."""
    try:
        import claude_agent_sdk
    except ImportError:
        print(f"{what}: skipped (claude-agent-sdk not installed)")
        return None
    claude = str(Path(claude_agent_sdk.__file__).parent / "_bundled" / "claude")
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_anthropic import FakeAnthropic

    api = FakeAnthropic().start()
    env = {"ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "x", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    return claude, api, env


def _bare_claude_turn(claude: str, args: list[str], cwd: Path, env: dict[str, str], line: bytes) -> float:
    """Seconds from spawning ``claude -p`` (stream-json) to its result line, for one message."""
    t0 = time.perf_counter()
    p = subprocess.Popen([claude, "-p", "--input-format", "stream-json", "--output-format", "stream-json",
                          "--verbose", *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=cwd,
                         env=dict(os.environ, **env), stderr=subprocess.DEVNULL, start_new_session=True)
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(line)
    p.stdin.flush()
    for out in p.stdout:
        if b'"type":"result"' in out:
            break
    elapsed = time.perf_counter() - t0
    p.stdin.close()
    p.wait()
    return elapsed


def bench_real_claude(base: Path, n: int) -> dict[str, float] | None:
    real = _real_claude("real claude")
    if real is None:
        return None
    claude, api, env = real
    home = base / "real-home"
    home.mkdir()
    bare: list[float] = []
    line = b'{"type":"user","message":{"role":"user","content":"hi"},"parent_tool_use_id":null}\n'
    sup_base = base / "real"
    sup_base.mkdir()
    sup = start_supervisor(sup_base, claude, env)
    ours: list[float] = []
    protocol: list[float] = []
    ctl = [sys.executable, "-m", "supervisord_claude.ctl", "--runtime-dir", str(sup_base / "run")]
    try:
        # interleaved, one of each in turn, so the machine's swings hit all three alike
        with Client(sup_base / "run", timeout=60) as c:
            for i in range(n + 1):
                bare_cwd = base / f"bare-cwd-{i}"  # an empty directory, as a new session's is
                bare_cwd.mkdir()
                bare_time = _bare_claude_turn(claude, [], bare_cwd, dict(env, HOME=str(home)), line)
                # through the protocol: new + send on one connection, the answer subscribed to
                t0 = time.perf_counter()
                c.request("create", session=f"p{i}")
                sub = c.request("subscribe", session=f"p{i}", after=0)["sub"]
                c.request("send", session=f"p{i}", text="hi")
                while True:
                    frame = c.next_event(timeout=60)
                    assert frame is not None, "no answer"
                    if frame["event"]["kind"] == "result":
                        break
                protocol_time = time.perf_counter() - t0
                c.request("unsubscribe", sub=sub)
                t0 = time.perf_counter()
                subprocess.run([*ctl, "new", f"r{i}"], check=True, capture_output=True)
                subprocess.run([*ctl, "send", f"r{i}", "hi", "--wait"], check=True, capture_output=True)
                if i:  # the first round warms the CLI's files into the page cache
                    bare.append(bare_time)
                    protocol.append(protocol_time)
                    ours.append(time.perf_counter() - t0)
    finally:
        stop(sup)
        api.stop()
    print(f"real claude first answer, n={n}: create+subscribe+send on one connection -> result "
          f"{statistics.median(protocol) * 1e3:.0f} ms; bare spawn->result {statistics.median(bare) * 1e3:.0f} ms; "
          f"ratio {statistics.median(protocol) / statistics.median(bare):.2f}x (claudectl new + send --wait, two "
          f"processes: {statistics.median(ours) * 1e3:.0f} ms, {statistics.median(ours) / statistics.median(bare):.2f}x)")
    return {"real_protocol_ms": statistics.median(protocol) * 1e3, "real_ours_ms": statistics.median(ours) * 1e3,
            "real_bare_ms": statistics.median(bare) * 1e3}


# 6. claudectl status against supervisorctl and circusctl --------------------------------


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _time_command(argv: list[str], n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return times


def _command_cpu(argv: list[str], n: int) -> list[float]:
    """The CPU time (user + system) of each of ``n`` runs of a command: what it costs,
    less moved by a loaded machine than its wall time."""
    times = []
    for _ in range(n):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise RuntimeError(f"{argv} failed")
        times.append(usage.ru_utime + usage.ru_stime)
    return times


def _request_ms(runtime_dir: Path, op: str, n: int, **fields: Any) -> float:
    """The median round trip of a request over one connection, in ms: what the
    supervisor (and the client's decoding) costs, without a process start."""
    with Client(runtime_dir, timeout=120) as c:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            c.request(op, **fields)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _wait_command(argv: list[str], ok: tuple[int, ...] = (0,)) -> None:
    deadline = time.monotonic() + 30
    while subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode not in ok:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{argv[0]} never answered")
        time.sleep(0.1)


def bench_ctl_status(base: Path, n: int) -> dict[str, float]:
    """The whole `status` command as an operator types it, each against its own daemon
    supervising one idle process."""
    out: dict[str, float] = {}
    sup_base = base / "ctl"
    sup_base.mkdir()
    sup = start_supervisor(sup_base, "/bin/true")
    try:
        ours = _time_command([_bin("claudectl"), "--runtime-dir", str(sup_base / "run"), "status"], n)
    finally:
        stop(sup)
    out["status_claudectl_ms"] = statistics.median(ours) * 1e3
    peers = base / "peers"
    peers.mkdir()
    (peers / "supervisord.conf").write_text(
        "[unix_http_server]\nfile=%(here)s/supervisor.sock\n"
        "[supervisord]\nlogfile=%(here)s/supervisord.log\npidfile=%(here)s/supervisord.pid\nnodaemon=true\n"
        "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        "[supervisorctl]\nserverurl=unix://%(here)s/supervisor.sock\n"
        "[program:sleeper]\ncommand=sleep 100000\n")
    (peers / "circus.ini").write_text(
        f"[circus]\nendpoint = ipc://{peers}/circus.sock\npubsub_endpoint = ipc://{peers}/circus-pub.sock\n"
        "statsd = false\n[watcher:sleeper]\ncmd = sleep 100000\n")
    for name, daemon, ctl, quit_args in (
        ("supervisorctl", [_bin("supervisord"), "-c", str(peers / "supervisord.conf")],
         [_bin("supervisorctl"), "-c", str(peers / "supervisord.conf"), "status"], ["shutdown"]),
        ("circusctl", [_bin("circusd"), str(peers / "circus.ini")],
         [_bin("circusctl"), "--endpoint", f"ipc://{peers}/circus.sock", "status"], ["quit"]),
    ):
        if not Path(daemon[0]).exists():
            print(f"{name}: skipped (not installed; pip install -e .[bench])")
            continue
        proc = subprocess.Popen(daemon, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_command(ctl)
            out[f"status_{name}_ms"] = statistics.median(_time_command(ctl, n)) * 1e3
        finally:
            subprocess.run([*ctl[:-1], *quit_args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print("status command, whole process, median of", n, ": " + ", ".join(
        f"{k.removeprefix('status_').removesuffix('_ms')} {v:.0f} ms" for k, v in out.items()))
    return out


# 7. Claude stdout line -> Telegram draft (the bot, a fake Bot API) ------------------------


def _cpu_s(pid: int) -> float:
    """A process's CPU time so far (user + system), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_fine_s(pid: int) -> float:
    """``_cpu_s`` to the nanosecond (its ticks are 10 ms: a burst's 100 ms of a process
    read to ±10 %): the time each of its threads has run, from ``/proc/<pid>/task/*/schedstat``."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # (a thread that just ended)
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def _runqueue_wait_s(pid: int) -> float:
    """How long a process's main thread has waited for a core while it could run, so far
    (``/proc/<pid>/schedstat``): on a loaded machine, the CPU time it was not given."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def _keepers_of(instance_dir: Path) -> list[int]:
    """The pids of the keepers of the supervisor whose runtime dir is ``instance_dir``
    (each keeper's command line names its session and instance; found by its title)."""
    with Client(instance_dir, timeout=30) as c:
        instance = c.request("status")["instance"]
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if f"supervisord-claude[{instance}]: keeper ".encode() in title:
                pids.append(int(entry.name))
    return pids


def _claudes_of(keepers: list[int]) -> list[int]:
    """The Claude processes the keepers run (their children)."""
    pids = []
    for keeper in keepers:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{keeper}/task").iterdir():
                pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


LIVE_WATCHER = """
import asyncio, sys, time
sys.path.insert(0, {root!r})
from protocol import AsyncClient

async def main():
    out = open({out!r}, "w", buffering=1)
    async with AsyncClient({run!r}) as c:
        sub = await c.subscribe(live=True, window=1024)
        print("ready", flush=True)
        unacked = 0
        async for event in sub:
            if event["kind"] == "assistant_delta":
                out.write(f"{{time.monotonic()}} {{event['session']}} {{event['offset'] + len(event['text'])}}\\n")
            elif "id" in event:
                unacked += 1
                if unacked >= 64:  # (a subscriber behind on stored events gets no live text)
                    await sub.ack(event["id"])
                    unacked = 0

asyncio.run(main())
"""


def _shown_length(answer: str, draft: str) -> int | None:
    """How much of ``answer`` a draft's text shows: its length, for a beginning of it; where
    it ends in it, for its tail (a long answer's draft shows the end); None if neither."""
    text = draft.removesuffix(" ▍")
    if answer.startswith(text):
        return len(text)
    at = answer.find(text)
    return at + len(text) if at >= 0 else None


def _lags_any_session(log: list[tuple[float, int]], by_length: dict[int, list[tuple[str, float]]]) -> list[float]:
    """(The measure before 2026-12-06 evening, kept to compare: wrong with many sessions.)
    For each (when shown, characters of the answer shown), how long before it a prefix of
    that length was last written by *any* session: every session writes the same answer
    (same lengths), so the newest write of that length by another session counted as
    this one's — the older the text shown, the more it was understated."""
    lags = []
    for at, shown in log:
        candidates = [written for _, written in by_length.get(shown, []) if written <= at]
        if candidates:
            lags.append(at - max(candidates))
    return lags


def _lags(log: list[tuple[float, str, int]], written: dict[tuple[str, int], float]) -> list[float]:
    """For each (when shown, Claude's session id, characters of its answer shown), how long
    before it that session wrote that prefix: the age of the newest text shown."""
    lags = []
    for at, session_id, shown in log:
        when = written.get((session_id, shown))
        if when is not None and when <= at:
            lags.append(at - when)
    return lags


def _first_shown(drafts: list[dict[str, Any]], written: dict[tuple[str, int], float],
                 session_of_chat: dict[int, str], answer: str) -> list[float]:
    """For each piece written (a prefix of its answer of some length), how long until a
    draft showed it (the first draft of its chat at least that long); the user's wait,
    where the drafts' lag is the age of what a draft shows. Pieces no draft showed before
    the answer came are left out."""
    shown_by_session: dict[str, list[tuple[float, int]]] = {}
    for d in drafts:
        length = _shown_length(answer, d["text"])
        if d["chat_id"] in session_of_chat and length is not None:
            shown_by_session.setdefault(session_of_chat[d["chat_id"]], []).append((d["at"], length))
    for shown in shown_by_session.values():
        shown.sort()
    waits = []
    for (session_id, length), at in written.items():
        shown = shown_by_session.get(session_id, [])
        first = next((when for when, shown_length in shown if shown_length >= length and when >= at), None)
        if first is not None:
            waits.append(first - at)
    return waits


def _draft_intervals(drafts: list[dict[str, Any]]) -> list[float]:
    """The time between two drafts of one chat's answer."""
    by_reply: dict[tuple[int, int], list[float]] = {}
    for d in drafts:
        by_reply.setdefault((d["chat_id"], d["draft_id"]), []).append(d["at"])
    return [b - a for times in by_reply.values() for a, b in itertools.pairwise(sorted(times))]


def bench_telegram_stream(base: Path, sessions: int, seconds: float, rate: float = 0.0,
                          live_lag: bool = False, code: Path | None = None) -> dict[str, float]:
    """``sessions`` chats, each with an answer streamed over ``seconds`` (at ``rate``
    text pieces a second each, if given): for every draft the bot sends, how long ago the
    newest text in it was written by Claude (the fake logs when each prefix of its answer
    went to stdout; monotonic clocks are shared); and, over the streaming, the CPU of the
    supervisor and of each keeper (as a share of one core) and the supervisor's RSS. With
    ``live_lag``, a protocol client subscribed to every session's live text also says how
    old the newest text of each live frame is when it gets it (the supervisor's part,
    without the bot's and Telegram's pacing; it is a second live subscriber to serve).
    ``code``: another checkout, whose supervisor and bot are run (the fake Claude, the
    fake Bot API and the timing client are this checkout's)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_telegram import TOKEN, FakeTelegram

    api = FakeTelegram().start()
    sup_base = base / f"tg-{sessions}-{rate:g}{'-against' if code else ''}"
    sup_base.mkdir()
    delta_log = sup_base / "deltas.log"
    fake = sup_base / "claude"
    fake.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "tests" / "fake_claude.py"}" "$@"\n')
    fake.chmod(0o755)
    sup = start_supervisor(sup_base, str(fake), {"FAKE_CLAUDE_DELTA_LOG": str(delta_log)}, code=code)
    users = list(range(5001, 5001 + sessions))
    bot_env = dict(os.environ, HOME=str(sup_base / "home"), TELEGRAM_BOT_TOKEN=TOKEN,
                   TELEGRAM_ALLOWED_USERS=",".join(map(str, users)), TELEGRAM_API_URL=api.url,
                   **({"PYTHONPATH": str(code)} if code else {}))
    bot = subprocess.Popen([*([sys.executable, "-m", "bot"] if code else [_bin("claude-telegram-bot")]),
                            "--runtime-dir", str(sup_base / "run"), "--config", str(sup_base / "none.toml")],
                           env=bot_env, cwd=code, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # the fake writes its answer ("echo: " and the message) in pieces of 12 characters
    words = max(120, int(rate * seconds * 12 / 5)) if rate else 120
    # numbered words, no two alike: a draft showing only the answer's tail (past Telegram's
    # 4,096) is still placed in it (``_shown_length``)
    question = f"stream:{seconds:g} " + " ".join(f"{i:04d}" for i in range(words))
    answer = f"echo: {question}"  # (what the fake Claude writes)
    try:
        for user in users:
            api.message(user, f"/new s{user}")
        deadline = time.monotonic() + 60 + sessions
        while sum(1 for u in users if any("created" in t for t in api.texts(u))) < sessions:
            if time.monotonic() > deadline:
                raise RuntimeError("the bot did not create the sessions")
            time.sleep(0.05)
        for user in users:  # each keeper and its Claude started, idle: what streaming adds is measured
            api.message(user, "warm up")
        while sum(1 for u in users if any(t.startswith("echo: warm up") for t in api.texts(u))) < sessions:
            if time.monotonic() > deadline + 60:
                raise RuntimeError("not every session answered")
            time.sleep(0.05)
        # and the bot has shown every event of them (answers, footers): its requests to
        # Telegram share one rate limit, which a backlog would hold from the drafts
        with Client(sup_base / "run", timeout=60) as c:
            target = c.request("status")["last_event_id"]
            while c.request("status")["consumers"].get("telegram-bot", 0) < target:
                if time.monotonic() > deadline + 120:
                    raise RuntimeError("the bot did not show the warm-up turns")
                time.sleep(0.05)
        # each chat's session's Claude session id (what the fake logs its writes by): a draft
        # is matched to what its own session wrote
        with Client(sup_base / "run", timeout=60) as c:
            session_of_chat = {user: c.request("status", session=f"s{user}")["session_id"] for user in users}
        keepers = _keepers_of(sup_base / "run")
        live_log = sup_base / "live.log"
        watcher = None
        if live_lag:
            watcher = subprocess.Popen([sys.executable, "-c", LIVE_WATCHER.format(
                root=str(ROOT), out=str(live_log), run=str(sup_base / "run"))], stdout=subprocess.PIPE)
            assert watcher.stdout is not None
            watcher.stdout.readline()  # subscribed
        before = {pid: _cpu_s(pid) for pid in [sup.pid, bot.pid, *keepers]}
        claudes_before = sum(_cpu_s(p) for p in _claudes_of(keepers))
        me_before = time.process_time()  # this process: the fake Bot API, in a thread
        load_at_start = os.getloadavg()[0]
        t0 = time.monotonic()
        # sent as the bot sends a chat's message (its origin), over one connection, so that
        # every session streams at once (the bot takes its chats' messages in turn: through
        # it, 100 answers started over tens of seconds); the answers go through the bot
        with Client(sup_base / "run", timeout=60) as c:
            for user in users:
                c.request("send", session=f"s{user}", text=question, origin=f"tg:{user}")
        samplers = sample({f"streaming-{sessions}-supervisor": sup.pid, f"streaming-{sessions}-bot": bot.pid,
                           f"streaming-{sessions}-keeper": keepers[0]}, seconds * 0.8)
        deadline = time.monotonic() + 60 + seconds * 2 + sessions
        # (CPU read along the way: the share while the sessions streamed is read from these)
        cpu_samples: list[tuple[float, dict[int, float]]] = []
        while sum(1 for u in users if any(t.startswith("echo: stream") for t in api.texts(u))) < sessions:
            if time.monotonic() > deadline:
                raise RuntimeError("not every streamed answer arrived")
            time.sleep(0.1)
            if not cpu_samples or time.monotonic() - cpu_samples[-1][0] >= 0.5:
                with contextlib.suppress(OSError):
                    cpu_samples.append((time.monotonic(), {pid: _cpu_s(pid) for pid in (sup.pid, bot.pid)}
                                        | {-pid: _runqueue_wait_s(pid) for pid in (sup.pid, bot.pid)}))
        elapsed = time.monotonic() - t0
        cpu = {}
        for pid, was in before.items():
            with contextlib.suppress(OSError):
                cpu[pid] = (_cpu_s(pid) - was) / elapsed
        claudes = (sum(_cpu_s(p) for p in _claudes_of(keepers)) - claudes_before) / elapsed
        fake_api = (time.process_time() - me_before) / elapsed
        rss = _rss_kib(sup.pid) / 1024
        for sampler in samplers:
            sampler.wait()
    finally:
        if live_lag and watcher is not None:
            watcher.terminate()
            watcher.wait(30)
        bot.terminate()
        bot.wait(30)
        stop(sup)
        api.stop()
    written: dict[tuple[str, int], float] = {}
    lines = delta_log.read_text().splitlines()
    spans: dict[str, list[float]] = {}  # each session's streaming: [first piece, last piece, pieces]
    for line in lines:
        at, session_id, length = line.split()
        written[(session_id, int(length))] = float(at)
        span = spans.setdefault(session_id, [float(at), float(at), 0])
        span[0], span[1], span[2] = min(span[0], float(at)), max(span[1], float(at)), span[2] + 1
    # how many streamed at once, at most; and each one's pieces a second while it streamed
    edges = sorted([(first, 1) for first, _, _ in spans.values()] + [(last, -1) for _, last, _ in spans.values()])
    at_once = max(itertools.accumulate(step for _, step in edges)) if edges else 0
    rates = [count / (last - first) for first, last, count in spans.values() if last > first]
    # a chat's session id: the one whose written prefixes match its drafts' lengths
    by_length: dict[int, list[tuple[str, float]]] = {}
    for (session_id, length), at in written.items():
        by_length.setdefault(length, []).append((session_id, at))
    shown = [(d["at"], session_of_chat.get(d["chat_id"], ""), length) for d in api.drafts
             if (length := _shown_length(answer, d["text"])) is not None]
    lags = _lags(shown, written)
    unplaced = "".join(f", e.g. {d['text'][:60]!r}…{d['text'][-20:]!r}" for d in api.drafts
                       if _shown_length(answer, d["text"]) is None)[:400]
    lags_any = _lags_any_session([(d["at"], len(d["text"].removesuffix(" ▍"))) for d in api.drafts], by_length)
    waits = _first_shown(api.drafts, written, session_of_chat, answer)
    intervals = _draft_intervals(api.drafts)
    live_lags = _lags([(float(at), session_of_chat.get(int(name.removeprefix("s")), ""), int(length))
                       for at, name, length in (line.split() for line in live_log.read_text().splitlines())],
                      written) if live_lag else []
    if not lags:
        raise RuntimeError("no draft could be matched to what Claude wrote")
    keeper_cpu = [share for pid, share in cpu.items() if pid not in (sup.pid, bot.pid)]
    pieces_per_s = statistics.median(rates) if rates else 0.0
    # the supervisor's and the bot's share of a core while the sessions streamed (from the
    # samples nearest the first and the last piece written)
    streamed = (min(f for f, _, _ in spans.values()), max(last for _, last, _ in spans.values())) if spans else (0, 0)
    window = [(at, c) for at, c in cpu_samples if streamed[0] - 0.5 <= at <= streamed[1] + 0.5]
    while_streaming = {pid: (window[-1][1][pid] - window[0][1][pid]) / (window[-1][0] - window[0][0])
                       for pid in (sup.pid, bot.pid, -sup.pid, -bot.pid)} if len(window) >= 2 else {}
    sup_us_per_piece = while_streaming.get(sup.pid, 0.0) * (streamed[1] - streamed[0]) / max(1, len(lines)) * 1e6
    live = (f"; live frames to a protocol client: {len(live_lags)}, newest text p50 "
            f"{statistics.median(live_lags) * 1e3:.1f} ms, p99 {pct(live_lags, 0.99) * 1e3:.1f} ms"
            if live_lags else "")
    seen = (f"; each piece written until a draft had it: p50 {statistics.median(waits) * 1e3:.0f} ms, "
            f"p99 {pct(waits, 0.99) * 1e3:.0f} ms; a chat's drafts every {statistics.median(intervals):.2f} s "
            f"(median), p99 {pct(intervals, 0.99):.2f} s" if waits and intervals else "")
    print(f"{f'[{code}] ' if code else ''}Claude stdout -> Telegram draft, {sessions} streaming chats ({at_once} at once at most; {pieces_per_s:.0f}"
          f" text pieces/s each while it streamed; {elapsed:.1f} s in all), {len(lags)} drafts: p50 {statistics.median(lags) * 1e3:.1f} ms, "
          f"p99 {pct(lags, 0.99) * 1e3:.1f} ms (the newest text in each draft; at most 2 drafts a second per chat; "
          f"measured as before, against any session's writes: p50 {statistics.median(lags_any) * 1e3:.1f} ms, p99 "
          f"{pct(lags_any, 0.99) * 1e3:.1f} ms; drafts sent {len(api.drafts)}, of which {len(api.drafts) - len(shown)}"
          f" were no beginning or end of the answer{unplaced}); "
          f"supervisor CPU {cpu.get(sup.pid, 0) * 100:.1f}% of a core over it all, "
          f"{while_streaming.get(sup.pid, 0) * 100:.1f}% while they streamed ({sup_us_per_piece:.0f} us per text piece), RSS"
          f" {rss:.1f} MiB; keeper CPU median "
          f"{statistics.median(keeper_cpu or [0]) * 100:.1f}%, max {max(keeper_cpu or [0]) * 100:.1f}%; the bot "
          f"{cpu.get(bot.pid, 0) * 100:.1f}% ({while_streaming.get(bot.pid, 0) * 100:.1f}% while streaming, and waiting for"
          f" a core {while_streaming.get(-bot.pid, 0) * 100:.0f}% of the time; the supervisor"
          f" {while_streaming.get(-sup.pid, 0) * 100:.0f}%), the fake Claudes {claudes * 100:.0f}% together, the fake Bot API "
          f"{fake_api * 100:.0f}%{live}{seen}; load average {load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    return {"tg_lag_p50_ms": statistics.median(lags) * 1e3, "tg_lag_p99_ms": pct(lags, 0.99) * 1e3,
            "tg_lag_any_session_p50_ms": statistics.median(lags_any) * 1e3,
            "tg_lag_any_session_p99_ms": pct(lags_any, 0.99) * 1e3,
            "tg_drafts": float(len(lags)), "tg_drafts_sent": float(len(api.drafts)),
            "tg_drafts_unplaced": float(len(api.drafts) - len(shown)), "tg_sessions": float(sessions), "tg_pieces_per_s": pieces_per_s,
            "tg_streaming_at_once": float(at_once), "tg_supervisor_us_per_piece": sup_us_per_piece,
            "tg_supervisor_cpu_streaming": while_streaming.get(sup.pid, 0.0),
            "tg_bot_cpu_streaming": while_streaming.get(bot.pid, 0.0),
            "tg_bot_runqueue_streaming": while_streaming.get(-bot.pid, 0.0),
            "tg_supervisor_runqueue_streaming": while_streaming.get(-sup.pid, 0.0),
            "tg_supervisor_cpu": cpu.get(sup.pid, 0.0), "tg_supervisor_rss_mib": rss,
            "tg_keeper_cpu_median": statistics.median(keeper_cpu or [0.0]),
            "tg_keeper_cpu_max": max(keeper_cpu or [0.0]), "tg_bot_cpu": cpu.get(bot.pid, 0.0),
            "tg_fake_claudes_cpu": claudes, "tg_fake_api_cpu": fake_api, "tg_load_average": os.getloadavg()[0],
            "tg_load_average_start": load_at_start,
            **({"tg_piece_shown_p50_ms": statistics.median(waits) * 1e3,
                "tg_piece_shown_p99_ms": pct(waits, 0.99) * 1e3,
                "tg_draft_interval_median_s": statistics.median(intervals),
                "tg_draft_interval_p99_s": pct(intervals, 0.99)} if waits and intervals else {}),
            **({"live_lag_p50_ms": statistics.median(live_lags) * 1e3, "live_lag_p99_ms": pct(live_lags, 0.99) * 1e3}
               if live_lags else {})}


def bench_streaming_limit(base: Path, sizes: list[int], seconds: float, rate: float,
                          live_lag: bool = False, against: Path | None = None) -> list[dict[str, float]]:
    """Streaming sessions at once, at each size (and where the drafts' p99 passes 1 s).
    ``against``: another checkout (e.g. main) measured just before this one at each size,
    interleaved (its rows have ``against: 1``)."""
    rows = []
    for size in sizes:
        if against is not None:
            rows.append(bench_telegram_stream(base, size, seconds, rate, live_lag, code=against) | {"against": 1.0})
        rows.append(bench_telegram_stream(base, size, seconds, rate, live_lag))
    for who, mine in ([(str(against), [r for r in rows if r.get("against")])] if against else []) + \
            [("this checkout", [r for r in rows if not r.get("against")])]:
        passed = [row for row in mine if row["tg_lag_p99_ms"] > 1000]
        print(f"{who}: the drafts' p99 passed 1 s at {passed[0]['tg_sessions']:.0f} streaming sessions" if passed else
              f"{who}: the drafts' p99 stayed under 1 s up to {sizes[-1]} streaming sessions")
    return rows


# 8. live sessions: how the supervisor grows ----------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def bench_scaling(base: Path, sizes: list[int], burst: int) -> list[dict[str, float]]:
    """N live sessions (each a keeper and a cheap shell Claude): supervisor RSS, control
    p99 (status of one session), and a burst's event throughput beside them."""
    turn = base / "scale-turn.jsonl"
    big = base / "scale-burst.jsonl"
    init = json.dumps({"type": "system", "subtype": "init", "session_id": "s"})
    result = json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "ok",
                         "total_cost_usd": 0, "duration_ms": 0})
    text = json.dumps({"type": "assistant", "message": {"content": [{"type": "text", "text": "x" * 200}]}})
    turn.write_text("\n".join([init, text, result]) + "\n")
    big.write_text("\n".join([init, *[text] * burst, result]) + "\n")
    stub = base / "scale-claude"
    stub.write_text(f'#!/bin/sh\nwhile read -r line; do case "$line" in *burst*) cat "{big}";; '
                    f'*) cat "{turn}";; esac; done\n')
    stub.chmod(0o755)
    rows = []
    for size in sizes:
        sup_base = base / f"scale-{size}"
        sup_base.mkdir()
        sup = start_supervisor(sup_base, str(stub))
        try:
            with Client(sup_base / "run", timeout=60) as c:
                for i in range(size):
                    c.request("create", session=f"s{i}")
                for i in range(size):
                    c.request("send", session=f"s{i}", text="hi")
                deadline = time.monotonic() + 120
                while c.request("status")["live"] < size or any(
                        s["state"] != "idle" for s in c.request("list")["sessions"]):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{size} sessions did not all become live and idle")
                    time.sleep(0.2)
                times = []
                for i in range(300):
                    t0 = time.perf_counter()
                    c.request("status", session=f"s{i % size}")
                    times.append(time.perf_counter() - t0)
                rss = _rss_kib(sup.pid) / 1024
            rate = _burst_rate(sup_base, "s0", burst)
        finally:
            stop(sup)
        rows.append({"sessions": float(size), "rss_mib": rss, "control_p99_ms": pct(times, 0.99) * 1e3,
                     "control_p50_ms": statistics.median(times) * 1e3, "events_per_s": rate})
        print(f"{size} live sessions: supervisor RSS {rss:.1f} MiB, status p50 {rows[-1]['control_p50_ms']:.2f} ms "
              f"p99 {rows[-1]['control_p99_ms']:.2f} ms, burst of {burst} events {rate:.0f}/s")
    return rows


def _burst_rate(sup_base: Path, session: str, n: int) -> float:
    import asyncio

    from protocol import AsyncClient

    async def run() -> float:
        async with AsyncClient(sup_base / "run", timeout=60) as c:
            sub = await c.subscribe(session, window=512)
            t0 = time.perf_counter()
            await c.request("send", session=session, text="burst")
            count, unacked = 0, 0
            while True:
                event = await sub.next(timeout=120)
                assert event is not None
                count += event["kind"] == "assistant_text"
                unacked += 1
                if unacked >= 256 or event["kind"] == "result":
                    await sub.ack(event["id"])
                    unacked = 0
                if event["kind"] == "result":
                    return n / (time.perf_counter() - t0)

    return asyncio.run(run())


# 9. a big event log ----------------------------------------------------------------------


def bench_eventlog(base: Path, sizes: list[int]) -> list[dict[str, float]]:
    from protocol import EventKind
    from supervisord_claude.supervisor._store import EventWrite, Store

    rows = []
    for size in sizes:
        sup_base = base / f"log-{size}"
        (sup_base / "state").mkdir(parents=True)
        store = Store(sup_base / "state" / "supervisor.sqlite3")
        sessions = [f"s{i}" for i in range(20)]
        for name in sessions:
            store.create_session(name, f"id-{name}", str(base), None, None)
        body = {"text": "x" * 200, "message_id": 1}
        # as turns leave them: 100 events of one session, then the next session's
        for start in range(0, size, 5000):
            store.append_events([EventWrite(sessions[(start + i) // 100 % 20], EventKind.ASSISTANT_TEXT, body)
                                 for i in range(min(5000, size - start))])
        store.close()
        db_mib = sum(p.stat().st_size for p in (sup_base / "state").glob("supervisor.sqlite3*")) / 1048576
        sup, startup = _timed_start(sup_base, "/bin/true")
        try:
            ls = statistics.median(_time_command([_bin("claudectl"), "--runtime-dir", str(sup_base / "run"), "ls"], 5))
            status = statistics.median(_time_command([_bin("claudectl"), "--runtime-dir", str(sup_base / "run"),
                                                      "status"], 5))
            status_request = _request_ms(sup_base / "run", "status", 15)
            rss = _rss_kib(sup.pid) / 1024
            with Client(sup_base / "run", timeout=60) as c:
                last = c.request("status", session="s7")["last_seq"]
                t0 = time.perf_counter()
                c.request("subscribe", session="s7", after=max(0, last - 1000), window=1000)
                got = 0
                first = None
                while got < min(1000, last):
                    frame = c.next_event(timeout=30)
                    assert frame is not None
                    first = first or time.perf_counter()
                    got += 1
                cursor_read = time.perf_counter() - t0
                cursor_first = (first or t0) - t0
        finally:
            stop(sup)
        store = Store(sup_base / "state" / "supervisor.sqlite3")
        t0 = time.perf_counter()
        store.prune(time.time() + 1)  # every event (no consumer holds any)
        prune = time.perf_counter() - t0
        store.close()
        rows.append({"events": float(size), "db_mib": db_mib, "startup_s": startup, "ls_ms": ls * 1e3,
                     "status_ms": status * 1e3, "status_request_ms": status_request, "rss_mib": rss,
                     "cursor_first_ms": cursor_first * 1e3, "cursor_1000_ms": cursor_read * 1e3,
                     "prune_s": prune})
        print(f"event log of {size} events: db {db_mib:.1f} MiB, start-up {startup:.2f} s, claudectl ls "
              f"{ls * 1e3:.0f} ms, status {status * 1e3:.0f} ms (the request alone {status_request:.1f} ms), "
              f"supervisor RSS {rss:.1f} MiB, subscribe from a cursor: first event {cursor_first * 1e3:.1f} ms, "
              f"1000 events {cursor_read * 1e3:.0f} ms; prune all {prune:.2f} s")
    return rows


# 9b. sessions on file: start-up, ls, status, memory ----------------------------------------


def _fill_store(state: Path, sessions: int, events_each: int, cwd: Path) -> None:
    """A store with ``sessions`` sessions on file, each with a short history, written
    straight into it (as months of use leave it)."""
    from protocol import EventKind
    from supervisord_claude.supervisor._store import EventWrite, Store

    state.mkdir(parents=True, exist_ok=True)
    store = Store(state / "supervisor.sqlite3")
    names = [f"s{i:05d}" for i in range(sessions)]
    for name in names:
        store.create_session(name, f"id-{name}", str(cwd), None, None)
    body = {"text": "x" * 200, "message_id": 1}
    writes = [EventWrite(name, EventKind.ASSISTANT_TEXT, body) for name in names for _ in range(events_each)]
    for start in range(0, len(writes), 5000):
        store.append_events(writes[start:start + 5000])
    store.close()


def _timed_start(sup_base: Path, claude_bin: str) -> tuple[subprocess.Popen[bytes], float]:
    """A supervisor started, and the seconds from its spawn to its first answer (polled
    every 5 ms)."""
    t0 = time.perf_counter()
    sup = start_supervisor(sup_base, claude_bin, poll=0.005)
    return sup, time.perf_counter() - t0


def bench_on_file(base: Path, cases: list[tuple[int, int]], repeat: int) -> list[dict[str, float]]:
    """For each (sessions on file, of them live): supervisor start-up (spawn to its first
    answer), ``claudectl ls`` and ``claudectl status`` (whole command, median of
    ``repeat``), the supervisor's RSS. The first case (none on file) is the baseline."""
    turn = base / "onfile-turn.jsonl"
    turn.write_text("\n".join([
        json.dumps({"type": "system", "subtype": "init", "session_id": "s"}),
        json.dumps({"type": "assistant", "message": {"content": [{"type": "text", "text": "hi"}]}}),
        json.dumps({"type": "result", "subtype": "success", "is_error": False, "result": "hi", "total_cost_usd": 0,
                    "duration_ms": 0})]) + "\n")
    stub = base / "onfile-claude"
    stub.write_text(f'#!/bin/sh\nwhile read -r line; do cat "{turn}"; done\n')
    stub.chmod(0o755)
    rows = []
    for on_file, live in cases:
        sup_base = base / f"onfile-{on_file}-{live}"
        _fill_store(sup_base / "state", on_file, 5, base)
        sup, startup = _timed_start(sup_base, str(stub))
        try:
            if live:
                with Client(sup_base / "run", timeout=60) as c:
                    for i in range(live):
                        c.request("send", session=f"s{i:05d}", text="hi")
                    deadline = time.monotonic() + 120
                    while c.request("status")["live"] < live:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"{live} sessions did not become live")
                        time.sleep(0.1)
            ctl = [_bin("claudectl"), "--runtime-dir", str(sup_base / "run")]
            ls = statistics.median(_time_command([*ctl, "ls"], repeat))
            status = statistics.median(_time_command([*ctl, "status"], repeat))
            ls_cpu = statistics.median(_command_cpu([*ctl, "ls"], repeat))
            list_request = _request_ms(sup_base / "run", "list", 3 * repeat)
            status_request = _request_ms(sup_base / "run", "status", 3 * repeat)
            rss = _rss_kib(sup.pid) / 1024
        finally:
            stop(sup)
        rows.append({"on_file": float(on_file), "live": float(live), "startup_s": startup, "ls_ms": ls * 1e3,
                     "status_ms": status * 1e3, "ls_cpu_ms": ls_cpu * 1e3, "list_request_ms": list_request,
                     "status_request_ms": status_request, "rss_mib": rss})
        base_row = rows[0]
        print(f"{on_file} sessions on file, {live} live: start-up {startup * 1e3:.0f} ms "
              f"({startup / base_row['startup_s']:.2f}x of none on file), claudectl ls {ls * 1e3:.0f} ms "
              f"({ls * 1e3 / base_row['ls_ms']:.2f}x; CPU {ls_cpu * 1e3:.0f} ms, "
              f"{ls_cpu * 1e3 / base_row['ls_cpu_ms']:.2f}x), status {status * 1e3:.0f} ms "
              f"({status * 1e3 / base_row['status_ms']:.2f}x); requests over one connection: list "
              f"{list_request:.1f} ms, status {status_request:.1f} ms (hello-sized: "
              f"{base_row['status_request_ms']:.1f} ms); supervisor RSS {rss:.1f} MiB "
              f"(+{rss - base_row['rss_mib']:.1f})")
    return rows


# 10. resume: a message to a suspended session -> its answer, real Claude ------------------


def bench_resume_real(base: Path, n: int) -> dict[str, float] | None:
    real = _real_claude("resume with real claude")
    if real is None:
        return None
    claude, api, env = real
    sup_base = base / "resume"
    sup_base.mkdir()
    sup = start_supervisor(sup_base, claude, env)
    ours, bare = [], []
    line = b'{"type":"user","message":{"role":"user","content":"again"},"parent_tool_use_id":null}\n'
    try:
        with Client(sup_base / "run", timeout=60) as c:
            c.request("create", session="r")
            session_id = c.request("status", session="r")["session_id"]
            cwd = c.request("status", session="r")["cwd"]
            for i in range(n + 1):
                if i:  # (a new session is suspended already)
                    c.request("suspend", session="r")
                while c.request("status", session="r")["state"] != "suspended":
                    time.sleep(0.01)
                after = c.request("status", session="r")["last_seq"]
                sub = c.request("subscribe", session="r", after=after)["sub"]
                t0 = time.perf_counter()
                c.request("send", session="r", text=f"message {i}")
                while True:
                    frame = c.next_event(timeout=60)
                    assert frame is not None, "no answer"
                    if frame["event"]["kind"] == "result":
                        break
                if i:  # the first message starts the conversation
                    ours.append(time.perf_counter() - t0)
                c.request("unsubscribe", sub=sub)
        stop(sup)
        home = sup_base / "home"
        for _ in range(n):
            bare.append(_bare_claude_turn(claude, ["--resume", session_id], Path(cwd), dict(env, HOME=str(home)), line))
    finally:
        if sup.poll() is None:
            stop(sup)
        api.stop()
    print(f"resume (real claude), n={n}: message to a suspended session -> result {statistics.median(ours) * 1e3:.0f} ms; "
          f"bare claude --resume spawn -> result {statistics.median(bare) * 1e3:.0f} ms; "
          f"ratio {statistics.median(ours) / statistics.median(bare):.2f}x")
    return {"resume_ours_ms": statistics.median(ours) * 1e3, "resume_bare_ms": statistics.median(bare) * 1e3}


def plot_scaling(rows: list[dict[str, float]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot: skipped (matplotlib not installed; pip install -e .[bench])")
        return
    sizes = [r["sessions"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    for ax, key, label in zip(axes, ("rss_mib", "control_p99_ms", "events_per_s"),
                              ("supervisor RSS (MiB)", "status p99 (ms)", "burst events/s"), strict=True):
        ax.plot(sizes, [r[key] for r in rows], marker="o")
        ax.set_xlabel("live sessions")
        ax.set_title(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"plot: {path}")


#: the figures, in the order they are measured (``--only`` picks some)
FIGURES = ("round-trip", "ssh", "status", "keepers", "stdin", "burst", "stages", "telegram", "streaming", "scaling", "on-file", "eventlog",
           "real", "resume")


def plot_growth(on_file: list[dict[str, float]], eventlog: list[dict[str, float]], path: Path) -> None:
    """How start-up, the status command and memory grow with sessions on file and with
    the event log (log-log: a straight line of slope 1 is linear)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot: skipped (matplotlib not installed; pip install -e .[bench])")
        return
    fig, axes = plt.subplots(2, 3, figsize=(11, 6))
    for row, (rows, x_key, x_label) in enumerate(((on_file, "on_file", "sessions on file"),
                                                  (eventlog, "events", "events in the log"))):
        rows = [r for r in rows if r[x_key] > 0 and not r.get("live")]
        # (the status request over an open connection: a whole command's wall time on a
        # loaded machine is its Python start-up's)
        for ax, key, scale, label in zip(axes[row], ("startup_s", "status_request_ms", "rss_mib"), (1e3, 1, 1),
                                         ("supervisor start-up (ms)", "status request (ms)",
                                          "supervisor RSS (MiB)"), strict=True):
            shown = [r for r in rows if key in r]
            ax.plot([r[x_key] for r in shown], [r[key] * scale for r in shown], marker="o")
            ax.set_xscale("log")
            ax.set_xlabel(x_label)
            ax.set_title(label)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"plot: {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description="supervisord-claude benchmarks (docs/benchmarks.md)")
    parser.add_argument("--quick", action="store_true", help="small sizes: under a minute (CI runs it)")
    parser.add_argument("--json", help="write every figure to this file as one JSON document")
    parser.add_argument("--plot", help="write the live-sessions growth plot (PNG) here")
    parser.add_argument("--growth-plot", help="write the sessions-on-file and event-log growth plot (PNG) here")
    parser.add_argument("--only", action="append", choices=FIGURES, metavar="FIGURE",
                        help=f"measure only these figures (repeatable): {', '.join(FIGURES)}")
    parser.add_argument("--sessions", help="streaming: the numbers of sessions streaming at once, e.g. 10,25,50,100"
                        " (each run until the drafts' p99 passes 1 s)")
    parser.add_argument("--live-lag", action="store_true", help="streaming: a protocol client also takes every"
                        " session's live text and reports how old it is when it arrives (the supervisor's part)")
    parser.add_argument("--repeat", type=int, help="burst: runs (each beside its own baseline; the median is"
                        " reported; default 5, 1 with --quick)")
    parser.add_argument("--against", help="burst, streaming: another checkout (e.g. of main) whose burst (beside"
                        " its own bare read) or streaming (its supervisor and bot) runs just before each of this"
                        " one's, interleaved")
    parser.add_argument("--profile", help="sample the supervisor, bot and a keeper with py-spy while they stream"
                        " or take the burst; collapsed stacks go to this directory")
    args = parser.parse_args()
    global PROFILE_DIR
    PROFILE_DIR = Path(args.profile).resolve() if args.profile else None
    wanted = set(args.only or FIGURES)
    quick = args.quick
    out: dict[str, Any] = {"machine": {"cores": os.cpu_count(), "python": sys.version.split()[0],
                                       "pyzmq": zmq.__version__, "quick": quick}}
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, pyzmq {zmq.__version__}")
    with tempfile.TemporaryDirectory(prefix="scb-") as d:
        base = Path(d)
        os.chmod(base, 0o700)
        if "round-trip" in wanted:
            sup_base = base / "rt"
            sup_base.mkdir()
            sup = start_supervisor(sup_base, "/bin/true")
            try:
                out |= bench_round_trip(sup_base, 300 if quick else 3000)
            finally:
                stop(sup)
        if "ssh" in wanted:
            out |= bench_ssh_round_trip(base, 300 if quick else 3000)
        if "status" in wanted:
            out |= bench_ctl_status(base, 3 if quick else 20)
        if "keepers" in wanted:
            count = 10 if quick else 50
            out |= {f"{k}_frozen": v for k, v in bench_keepers(base, count, freeze=True).items()}
            if not quick:
                out |= {f"{k}_unfrozen": v for k, v in bench_keepers(base, count, freeze=False).items()}
        if "stdin" in wanted:
            out |= bench_message_latency(base, 30 if quick else 300)
        if "burst" in wanted:
            out |= bench_event_throughput(base, 2000 if quick else 20000, args.repeat or (1 if quick else 5),
                                          pipelined_too=not quick,
                                          against=Path(args.against).resolve() if args.against else None)
        if "stages" in wanted:
            out |= bench_burst_stages(base, 2048 if quick else 20480)
        if "telegram" in wanted:
            out |= bench_telegram_stream(base, 3 if quick else 10, 2.0 if quick else 5.0)
        if "streaming" in wanted:
            sizes = [int(n) for n in args.sessions.split(",")] if args.sessions else [3] if quick else [10, 25, 50, 100]
            out["streaming"] = bench_streaming_limit(base, sizes, 2.0 if quick else 10.0, 50.0, args.live_lag,
                                                     Path(args.against).resolve() if args.against else None)
        if "scaling" in wanted:
            out["scaling"] = bench_scaling(base, [10] if quick else [10, 50, 200], 2000 if quick else 10000)
        if "on-file" in wanted:
            out["on_file"] = bench_on_file(base, [(0, 0), (10, 0), (1000, 50)] if quick else
                                           [(0, 0), (10, 0), (100, 0), (1000, 0), (1000, 50), (10_000, 0)],
                                           3 if quick else 7)
        if "eventlog" in wanted:
            out["eventlog"] = bench_eventlog(base, [10_000] if quick else [10_000, 100_000, 1_000_000, 10_000_000])
        if "real" in wanted:
            real = bench_real_claude(base, 2 if quick else 5)
            if real:
                out |= real
        if "resume" in wanted:
            resume = bench_resume_real(base, 2 if quick else 5)
            if resume:
                out |= resume
        if args.plot and "scaling" in out:
            plot_scaling(out["scaling"], Path(args.plot))
        if args.growth_plot and "on_file" in out and "eventlog" in out:
            plot_growth(out["on_file"], out["eventlog"], Path(args.growth_plot))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    threading.stack_size(0)
    sys.exit(main())
