"""The daemon itself: start-up refusals, permissions, titles, reaping, shutdown, crashes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from protocol import Client

from .conftest import FAKE_CLAUDE, SYSTEM, SupervisorProcess, processes_of, wait_for
from .test_faults import record


def run_supervisor(sup: SupervisorProcess, *extra: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    argv = sup.argv() + list(extra)
    return subprocess.run(argv, capture_output=True, text=True, env=sup.env, timeout=timeout)


def test_runtime_dir_is_private_and_sockets_are_owner_only(supervisor: SupervisorProcess) -> None:
    mode = stat.S_IMODE(supervisor.runtime_dir.stat().st_mode)
    assert mode == 0o700
    for name in ("control.sock", "keepers.sock"):
        st = (supervisor.runtime_dir / name).stat()
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.getuid()


def test_a_second_supervisor_on_the_same_runtime_dir_is_refused(supervisor: SupervisorProcess) -> None:
    second = run_supervisor(supervisor)
    assert second.returncode == 1
    assert "another supervisor" in second.stderr and str(supervisor.proc.pid) in second.stderr
    assert supervisor.request("hello")["server"] == "supervisord-claude"  # first one unharmed


def test_group_accessible_runtime_dir_is_refused(make_supervisor) -> None:
    sup = make_supervisor()
    sup.runtime_dir.mkdir(mode=0o755)
    os.chmod(sup.runtime_dir, 0o755)
    result = run_supervisor(sup)
    assert result.returncode == 1 and "accessible to group/others" in result.stderr


def test_missing_claude_binary_is_refused(make_supervisor) -> None:
    sup = make_supervisor(claude_bin="/nonexistent/claude")
    result = run_supervisor(sup)
    assert result.returncode == 1 and "claude_bin" in result.stderr and "/nonexistent/claude" in result.stderr


def test_bad_config_names_the_key(make_supervisor) -> None:
    sup = make_supervisor()
    sup.config_path().write_text('idle_timeout = "soon"\n')
    result = run_supervisor(sup)
    assert result.returncode == 1 and "idle_timeout" in result.stderr
    sup.config_path().write_text('[personas.x]\nprompt = "p"\ncolour = "red"\n')
    result = run_supervisor(sup)
    assert result.returncode == 1 and "personas.x.colour" in result.stderr


def test_processes_carry_instance_titles(supervisor: SupervisorProcess) -> None:
    prefix = f"supervisord-claude[{supervisor.instance}]:"
    assert SYSTEM.title(supervisor.proc.pid) == f"{prefix} supervisor"
    titles = [t for _, t in SYSTEM.processes_titled(prefix)]
    assert f"{prefix} forkserver" in titles


def test_fork_server_has_no_threads_so_forking_keepers_is_safe(supervisor: SupervisorProcess) -> None:
    prefix = f"supervisord-claude[{supervisor.instance}]: forkserver"
    [(pid, _)] = SYSTEM.processes_titled(prefix)
    assert len(os.listdir(f"/proc/{pid}/task")) == 1
    # while the supervisor itself runs libzmq I/O threads
    assert len(os.listdir(f"/proc/{supervisor.proc.pid}/task")) > 1


def test_graceful_shutdown_with_busy_sessions(supervisor: SupervisorProcess) -> None:
    for name in ("alpha", "beta"):
        supervisor.ctl("new", name, check=True)
    with supervisor.client() as c:
        c.request("send", session="alpha", text="sleep:30 busy")
        c.request("send", session="beta", text="hello")
    supervisor.wait_state("alpha", "busy")
    supervisor.wait_state("beta", "idle")
    assert supervisor.stop() == 0
    assert processes_of(supervisor.instance) == []
    assert not (supervisor.runtime_dir / "control.sock").exists()
    supervisor.start()
    states = {s["name"]: s["state"] for s in supervisor.request("list")["sessions"]}
    assert states == {"alpha": "suspended", "beta": "suspended"}
    failed = supervisor.wait_event("alpha", lambda e: e["kind"] == "message_failed")
    assert "stopped before it finished" in failed["reason"]


def test_shutdown_op_stops_everything(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    supervisor.ctl("send", "alpha", "hi", "--wait", check=True)
    supervisor.ctl("shutdown", check=True)
    assert supervisor.proc.wait(15) == 0
    assert processes_of(supervisor.instance) == []


def test_claude_ignoring_sigterm_is_killed_after_the_grace_period(make_supervisor) -> None:
    sup = make_supervisor(env={"FAKE_CLAUDE_IGNORE_SIGTERM": "1"}).start()
    sup.ctl("new", "alpha", check=True)
    sup.ctl("send", "alpha", "hi", "--wait", check=True)
    t0 = time.monotonic()
    sup.ctl("suspend", "alpha", check=True)
    sup.wait_state("alpha", "suspended", timeout=15)
    assert time.monotonic() - t0 > 4.5  # SIGTERM, 5 s grace, then SIGKILL
    assert sup.claude_pids() == []


def test_stopped_keepers_are_reaped_healthy_ones_adopted_and_other_instances_left_alone(make_supervisor) -> None:
    mine = make_supervisor().start()
    other = make_supervisor().start()
    for sup in (mine, other):
        for name in ("alpha", "beta"):
            sup.ctl("new", name, check=True)
            sup.ctl("send", name, "hi", "--wait", check=True)
    stale_keeper, healthy_keeper = mine.keeper_pid("alpha"), mine.keeper_pid("beta")
    stale_claude = [p for p in mine.claude_pids() if SYSTEM.environ(p).get("SUPERVISORD_CLAUDE_SESSION") == "alpha"]
    assert stale_keeper and healthy_keeper and stale_claude
    os.kill(stale_keeper, signal.SIGSTOP)  # hung: it cannot introduce itself
    mine.kill9()
    mine.start()
    assert not SYSTEM.alive(stale_keeper) and all(not SYSTEM.alive(p) for p in stale_claude)
    assert "Adopted 1 keepers, reaped 1 stale" in mine.log()
    assert mine.keeper_pid("beta") == healthy_keeper  # the same process goes on
    assert "history: 2 earlier" in mine.ctl("send", "beta", "still here", "--wait", check=True).stdout
    assert "history: 2 earlier" in mine.ctl("send", "alpha", "back again", "--wait", check=True).stdout
    # the other supervisor's keepers and Claude are untouched
    assert other.keeper_pid("alpha") is not None and len(other.claude_pids()) == 2
    assert "history: 2 earlier" in other.ctl("send", "alpha", "still here", "--wait", check=True).stdout


def test_titled_processes_that_never_introduce_themselves_are_reaped(make_supervisor, tmp_base) -> None:
    sup = make_supervisor()
    sup.runtime_dir.mkdir(mode=0o700)
    # a process that carries this instance's keeper title, as a stale keeper would
    code = (
        "import setproctitle, time, sys; "
        f"setproctitle.setproctitle('supervisord-claude[{sup.instance}]: keeper ghost'); "
        "print('ready', flush=True); time.sleep(60)"
    )
    ghost = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert ghost.stdout.readline().strip() == b"ready"
    marked_env = dict(os.environ, SUPERVISORD_CLAUDE_INSTANCE=sup.instance)
    orphan = subprocess.Popen([sys.executable, str(FAKE_CLAUDE)], stdin=subprocess.PIPE, env=marked_env)
    try:
        sup.start()
        assert ghost.wait(10) is not None and orphan.wait(10) is not None
        assert "Adopted 0 keepers, reaped 1 stale" in sup.log()
        assert "Reaped 1 orphaned Claude processes" in sup.log()
    finally:
        for p in (ghost, orphan):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_a_keeper_of_another_wire_version_is_reaped_not_adopted(make_supervisor) -> None:
    sup = make_supervisor()
    sup.runtime_dir.mkdir(mode=0o700)
    code = f"""
import os, time, msgpack, setproctitle, zmq
setproctitle.setproctitle('supervisord-claude[{sup.instance}]: keeper old')
sock = zmq.Context().socket(zmq.DEALER)
sock.setsockopt(zmq.ROUTING_ID, f"old:{{os.getpid()}}".encode())
sock.connect('ipc://{sup.runtime_dir}/keepers.sock')
sock.send(msgpack.packb({{"t": "hello", "pid": os.getpid(), "version": 999, "session": "old"}}))
print('ready', flush=True)
time.sleep(60)
"""
    old = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert old.stdout.readline().strip() == b"ready"
    try:
        sup.start()
        assert old.wait(15) is not None
        assert "speaks wire version 999" in sup.log() and "Adopted 0 keepers, reaped 1 stale" in sup.log()
    finally:
        if old.poll() is None:
            old.kill()
            old.wait()


def test_status_reports_the_supervisor(supervisor: SupervisorProcess) -> None:
    out = supervisor.ctl("--json", "status", check=True).stdout
    import json

    info = json.loads(out)
    assert info["pid"] == supervisor.proc.pid and info["instance"] == supervisor.instance
    assert info["default_idle_timeout"] == 60


def test_claudectl_without_a_supervisor_fails_clearly(make_supervisor) -> None:
    sup = make_supervisor()
    result = sup.ctl("ls")
    assert result.returncode == 1 and "no supervisor is running" in result.stderr


def test_client_library_reports_missing_supervisor(tmp_base) -> None:
    from protocol import ConnectionFailed

    with pytest.raises(ConnectionFailed):
        Client(tmp_base / "nowhere")


@pytest.fixture
def small_disk(tmp_base):
    """An 8 MiB tmpfs for the state dir (needs root, as in CI): small enough to fill in a
    moment, big enough that the store's own WAL (up to ~4 MiB before SQLite checkpoints it)
    does not fill it before the test does — under load a 2 MiB one was full already."""
    mount = tmp_base / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path) -> None:
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_a_full_disk_refuses_new_messages_clearly_and_loses_no_reply(small_disk, make_supervisor) -> None:
    sup = make_supervisor()
    sup.state_dir = small_disk / "state"
    sup.start()
    sup.ctl("new", "alpha", "--cwd", str(sup.base), check=True)
    gate = sup.base / "gate"
    with sup.client() as c:
        first = c.request("send", session="alpha", text=f"waitfile:{gate} answer me later")["message_id"]
    sup.wait_received("answer me later")
    filler = small_disk / "filler"
    fill(filler)
    refused = None
    for i in range(50):  # SQLite may still have room in its WAL for a few pages
        result = sup.ctl("send", "alpha", f"while full {i} " + "x" * 20000)
        if result.returncode != 0:
            refused = result
            break
    assert refused is not None and "(storage)" in refused.stderr and "store" in refused.stderr
    gate.touch()  # the first turn ends while nothing can be stored
    wait_for(lambda: "keeping them in memory" in sup.log(), what="the supervisor to hold events in memory")
    assert sup.proc.poll() is None  # the daemon is still up
    filler.unlink()
    # (a generous bound: held events are stored again on a timer, on a loaded machine)
    result = sup.wait_event("alpha", lambda e: e["kind"] == "result" and e["message_id"] == first, timeout=120)
    assert "answer me later" in result["text"]
    seqs = [e["seq"] for e in sup.events("alpha")]
    assert seqs == list(range(1, len(seqs) + 1))  # nothing skipped, in order
    record("the state dir's disk fills up (8 MB tmpfs) mid-turn, then frees", rounds=1,
           new_messages="refused with a storage error", reply_of_the_running_turn="delivered once, in order",
           events_lost=0)


def test_the_store_is_private(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    supervisor.ctl("send", "alpha", "secret", "--wait", check=True)
    for path in supervisor.state_dir.glob("supervisor.sqlite3*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(supervisor.state_dir.stat().st_mode) == 0o700


def test_runtime_dir_owned_by_someone_else_is_refused(make_supervisor) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to give the directory away")
    sup = make_supervisor()
    sup.runtime_dir.mkdir(mode=0o700)
    os.chown(sup.runtime_dir, 65534, 65534)
    result = run_supervisor(sup)
    assert result.returncode == 1 and "not by you" in result.stderr


def test_after_a_crash_claudectl_says_at_once_that_no_supervisor_runs(make_supervisor) -> None:
    sup = make_supervisor().start()
    sup.crash()  # leaves its control.sock behind
    assert (sup.runtime_dir / "control.sock").exists()
    result = sup.ctl("status")
    assert result.returncode == 1 and "no supervisor is running" in result.stderr
    assert "no answer" not in result.stderr  # it did not wait for one
    sup.start()  # and a new one starts over the stale socket
    assert sup.ctl("status", check=True).returncode == 0


def test_shutdown_with_a_full_disk_still_finishes(small_disk, make_supervisor) -> None:
    sup = make_supervisor()
    sup.state_dir = small_disk / "state"
    sup.start()
    for name in ("alpha", "beta"):
        sup.ctl("new", name, "--cwd", str(sup.base), check=True)
        sup.ctl("send", name, "hello", "--wait", check=True)  # live: shutdown must record their stop
    filler = small_disk / "filler"
    fill(filler)
    for i in range(50):  # until the store itself says it is full
        if sup.ctl("send", "alpha", f"while full {i} " + "x" * 20000).returncode != 0:
            break
    code = sup.stop(timeout=30)  # SIGTERM; a supervisor that hangs fails the test here
    assert code is not None and not sup.pids()  # it ended, and every keeper and Claude with it
    assert "could not be stored" in sup.log() or "store" in sup.log()
    filler.unlink()
    sup.start()  # the lock is free: a new one starts on the same runtime dir
    assert {s["name"] for s in sup.request("list")["sessions"]} == {"alpha", "beta"}
    record("SIGTERM while the disk is full, two sessions live", rounds=1, shutdown="ended, lock freed",
           left_over_processes=0, next_start="works, sessions intact")


# (a deleted store file is written back from the open database:
# tests/test_faults_more.py::test_a_store_file_deleted_under_a_running_supervisor_is_restored_and_nothing_is_lost)
@pytest.mark.parametrize("how", ["replaced"])
def test_a_store_file_deleted_or_replaced_under_a_running_supervisor_is_noticed(make_supervisor, how: str) -> None:
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    sup.ctl("send", "alpha", "before", "--wait", check=True)
    db = sup.state_dir / "supervisor.sqlite3"
    db.unlink()
    if how == "replaced":
        db.write_bytes(b"")
    refused = sup.ctl("send", "alpha", "after")
    assert refused.returncode == 1 and f"was {how} while the supervisor ran" in refused.stderr
    assert "(storage)" in refused.stderr
    assert f"was {how}" in sup.request("status")["store_problem"]
    wait_for(lambda: f"was {how} while the supervisor ran" in sup.log(), what="the supervisor to say so in its log")
    assert "CRITICAL" in sup.log()
    assert sup.ctl("ls", check=True).returncode == 0  # reading still works, for a look before stopping
    record(f"the store file {how} under a running supervisor", rounds=1, new_work="refused (storage)",
           log="CRITICAL, repeated every minute", status="store_problem says why")


def test_a_keeper_that_never_connects_is_killed_and_its_message_reported(make_supervisor) -> None:
    sup = make_supervisor(config="keeper_start_timeout = 2")
    hang = sup.base / "hang-keepers"
    sup.env["SUPERVISORD_CLAUDE_FAULT_KEEPER_HANG"] = str(hang)
    sup.start()
    sup.ctl("new", "alpha", check=True)
    hang.touch()
    with sup.client() as c:
        mid = c.request("send", session="alpha", text="stuck start")["message_id"]
    failed = sup.wait_event("alpha", lambda e: e["kind"] == "message_failed" and e["message_id"] == mid)
    assert failed["reason"] == "the session keeper did not start within 2 s"
    assert "did not connect within 2 s; killing it" in sup.log()
    wait_for(lambda: sup.keeper_pid("alpha") is None, what="the stuck keeper to be gone")
    hang.unlink()
    assert "echo: works now" in sup.ctl("send", "alpha", "works now", "--wait", check=True).stdout
    record("a keeper that hangs before its hello", rounds=1, outcome="killed after keeper_start_timeout,"
           " its message reported not delivered", next_message_answered=1)


def test_a_read_only_state_dir_stops_start_up_with_a_clear_sentence(small_disk, make_supervisor) -> None:
    sup = make_supervisor()
    sup.state_dir = small_disk / "state"
    sup.start()
    sup.ctl("new", "alpha", "--cwd", str(sup.base), check=True)
    sup.stop()
    # (a mounted filesystem with the store open cannot be made read-only: remount it while stopped)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        result = run_supervisor(sup)
        assert result.returncode == 1 and "store" in result.stderr and "Traceback" not in result.stderr
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    sup.start()
    assert "echo: after" in sup.ctl("send", "alpha", "after", "--wait", check=True).stdout
    record("the state dir is read-only at start", rounds=1, start="refused, exit 1, a sentence naming the store",
           after_it_is_writable="starts, the session is intact")
