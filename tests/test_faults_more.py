"""Faults of issue #30 (items 5, 6, 10, 12): two supervisors on one state dir, the fork
server killed, a runtime dir someone else made, a keeper or the bot stopped, the wall
clock stepped, a store that cannot be written, a Claude printing a malformed or enormous
line. Each test proves what a user would notice; ``./scripts/reliability`` runs them and
writes their figures into docs/reliability.md.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisord_claude.supervisor._live import Phase
from supervisord_claude.supervisor._supervisor import MAX_FORK_SERVER_DEATHS

from .conftest import SYSTEM, SupervisorProcess, wait_for
from .test_faults import ROUNDS, gone, no_gaps, one_outcome, record, streaming_turn
from .test_lifecycle import Harness
from .test_supervisor import run_supervisor

pytestmark = pytest.mark.timeout(300)


def test_a_second_supervisor_on_the_same_state_dir_is_refused_naming_the_first(make_supervisor) -> None:
    first = make_supervisor().start()
    first.ctl("new", "alpha", check=True)
    second = make_supervisor()
    second.state_dir = first.state_dir  # its own runtime dir, the first one's store
    t0 = time.monotonic()
    result = run_supervisor(second, timeout=60)
    refused_after = time.monotonic() - t0  # (a Python start-up: no waiting for the lock)
    assert result.returncode == 1, result.stderr
    assert f"pid {first.proc.pid}" in result.stderr and str(first.state_dir) in result.stderr, result.stderr
    assert not second.pids()  # it started nothing: no keeper, no Claude of its own
    # the first goes on serving, alone
    assert "echo: still here" in first.ctl("send", "alpha", "still here", "--wait", check=True).stdout
    record("a second supervisor on the same state dir (another runtime dir)", rounds=1,
           outcome="refused, exit 1, naming the pid that holds it", seconds=round(refused_after, 1),
           first_supervisor="serves on")


NOBODY = 65534


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a directory to another user")
def test_a_runtime_dir_made_by_another_user_is_refused_saying_what_to_do_instead(make_supervisor) -> None:
    sup = make_supervisor()
    sup.runtime_dir.mkdir(mode=0o700)
    os.chown(sup.runtime_dir, NOBODY, NOBODY)  # as if another user made /tmp/supervisord-claude-<uid> first
    result = run_supervisor(sup)
    assert result.returncode == 1
    message = result.stderr
    assert f"owned by uid {NOBODY}" in message and "you cannot remove it" in message
    assert "--runtime-dir" in message and "XDG_RUNTIME_DIR" in message and "administrator" in message
    assert not sup.pids()


# --- the fork server dies (item 6) -------------------------------------------------------


def fork_server_pid(sup: SupervisorProcess) -> int | None:
    found = SYSTEM.processes_titled(f"supervisord-claude[{sup.instance}]: forkserver")
    return found[0][0] if len(found) == 1 else None


def kill_fork_server(sup: SupervisorProcess, killed: set[int]) -> int:
    """kill -9 the current fork server (once a live one other than those killed is up)."""
    pid: int = wait_for(lambda: (p := fork_server_pid(sup)) not in killed and p, what="a fork server")
    os.kill(pid, signal.SIGKILL)
    killed.add(pid)
    return pid


def test_kill_9_of_the_fork_server_keeps_every_keeper_and_its_turn(make_supervisor) -> None:
    sup = make_supervisor().start()
    for name in ("alpha", "beta"):
        sup.ctl("new", name, check=True)
    sup.ctl("send", "beta", "warm up", "--wait", check=True)  # a live keeper with nothing to do
    beta_keeper = sup.keeper_pid("beta")
    rng = random.Random(f"forkserver-{ROUNDS}")
    killed: set[int] = set()
    rounds = min(ROUNDS, MAX_FORK_SERVER_DEATHS)  # one more within a minute and it gives up (below)
    for i in range(rounds):
        mid, claude = streaming_turn(sup, "alpha", i)
        keeper = sup.keeper_pid("alpha")
        time.sleep(rng.uniform(0, 0.8))  # somewhere in the turn's stream
        kill_fork_server(sup, killed)
        outcome = one_outcome(sup, "alpha", mid)  # once: the running turn goes on
        assert outcome["kind"] == "result" and f"round {i} of a fault test" in outcome["text"]
        assert sup.keeper_pid("alpha") == keeper and SYSTEM.alive(claude)  # same keeper, same Claude
        wait_for(lambda: fork_server_pid(sup) not in killed | {None}, what="a new fork server")
        # a new session starts: the new fork server forks its keeper
        sup.ctl("new", f"new{i}", check=True)
        reply = sup.ctl("send", f"new{i}", f"a new session after fork server death {i}", "--wait", timeout=90)
        assert reply.returncode == 0 and f"after fork server death {i}" in reply.stdout, reply.stderr
    assert sup.proc is not None and sup.proc.poll() is None
    # the dead server's keepers are no children of anyone we hear from: their exits are
    # still noticed — a suspended one resumes on the next message, a killed one is reported
    assert sup.keeper_pid("beta") == beta_keeper
    sup.ctl("suspend", "beta", check=True)
    wait_for(lambda: gone(beta_keeper), what="beta's keeper to exit")
    assert "echo: back" in sup.ctl("send", "beta", "back", "--wait", check=True, timeout=90).stdout
    alpha_keeper = sup.keeper_pid("alpha")
    assert alpha_keeper is not None
    os.kill(alpha_keeper, signal.SIGKILL)
    sup.wait_state("alpha", "failed")
    assert "echo: again" in sup.ctl("send", "alpha", "again", "--wait", check=True, timeout=90).stdout
    no_gaps(sup, "alpha")
    assert sup.stop() == 0 and not sup.pids()
    record("kill -9 of the fork server at a random point of a streaming turn", rounds=rounds,
           outcomes={"result": rounds}, same_keeper_and_claude_went_on=rounds, new_fork_server=rounds,
           new_session_answered=rounds, keeper_exits_noticed="suspend and kill -9, after the deaths",
           messages_lost=0)


def test_a_fork_server_that_keeps_dying_makes_the_supervisor_exit_1_and_the_next_adopts_its_keepers(
        make_supervisor) -> None:
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    with sup.client() as c:
        mid = c.request("send", session="alpha", text="sleep:3 through a supervisor that gave up")["message_id"]
    sup.wait_received("through a supervisor that gave up")
    keeper = sup.keeper_pid("alpha")
    killed: set[int] = set()
    for _ in range(MAX_FORK_SERVER_DEATHS + 1):
        kill_fork_server(sup, killed)
    assert sup.proc is not None and sup.proc.wait(60) == 1  # so systemd's Restart=on-failure restarts it
    assert "giving up" in sup.log()
    assert keeper is not None and SYSTEM.alive(keeper)  # its keepers and their turns go on
    sup.start()  # as Restart=on-failure would
    outcome = one_outcome(sup, "alpha", mid)
    assert outcome["kind"] == "result" and "gave up" in outcome["text"]
    assert sup.keeper_pid("alpha") == keeper  # adopted, not started anew
    record("the fork server killed 4 times within a minute", rounds=1,
           outcome="supervisor exits 1 (restarted by systemd), keepers kept and adopted",
           running_turn="answered once", messages_lost=0)


# --- what Claude writes (item 12) --------------------------------------------------------


def test_malformed_lines_from_claude_are_skipped_and_the_turn_is_answered(make_supervisor) -> None:
    from .fake_claude import MALFORMED_LINES

    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    sup.ctl("send", "alpha", "warm up", "--wait", check=True)
    keeper = sup.keeper_pid("alpha")
    with sup.client() as c:
        mid = c.request("send", session="alpha", text="badlines then answer")["message_id"]
    outcome = one_outcome(sup, "alpha", mid)
    assert outcome["kind"] == "result" and "echo: badlines then answer" in outcome["text"], outcome
    # a result whose every field has the wrong type still ends its turn, once, as a result
    with sup.client() as c:
        bad = c.request("send", session="alpha", text="badresult")["message_id"]
    outcome = one_outcome(sup, "alpha", bad)
    assert outcome["kind"] == "result" and isinstance(outcome["text"], str), outcome
    assert all(outcome[k] is None for k in ("cost_usd", "duration_ms", "num_turns", "session_id")), outcome
    assert "echo: next" in sup.ctl("send", "alpha", "next", "--wait", check=True, timeout=90).stdout
    assert sup.keeper_pid("alpha") == keeper  # the same keeper and Claude went on: nothing died
    assert "Traceback" not in sup.log()
    no_gaps(sup, "alpha")
    record("a Claude that writes malformed lines (not JSON, cut short, fields of the wrong type)", rounds=1,
           lines=len(MALFORMED_LINES) + 1, outcome="skipped; the turn answered once; a malformed result ends its turn",
           keeper_restarts=0)


# --- a process stopped with SIGSTOP (item 12) ----------------------------------------------


def test_a_stopped_keeper_holds_up_no_other_session_and_loses_nothing(make_supervisor) -> None:
    sup = make_supervisor().start()
    for name in ("alpha", "beta"):
        sup.ctl("new", name, check=True)
    mid, claude = streaming_turn(sup, "alpha", 0)
    keeper = sup.keeper_pid("alpha")
    assert keeper is not None
    # (Claude has the message before its keeper's hello has reached the supervisor: a keeper
    # stopped before that is one that never connected, killed at keeper_start_timeout)
    wait_for(lambda: sup.session("alpha")["state"] == "busy", what="alpha's keeper to say hello")
    os.kill(keeper, signal.SIGSTOP)
    try:
        # while it is stopped: another session starts and answers, status answers, and a
        # message for the stopped session is accepted
        served = 0
        for i in range(3):
            reply = sup.ctl("send", "beta", f"while alpha's keeper is stopped {i}", "--wait", timeout=90)
            assert reply.returncode == 0 and f"stopped {i}" in reply.stdout, reply.stderr
            served += 1
        assert sup.session("alpha")["state"] == "busy"
        with sup.client() as c:
            queued = c.request("send", session="alpha", text="queued behind a stopped keeper")["message_id"]
    finally:
        os.kill(keeper, signal.SIGCONT)
    first = one_outcome(sup, "alpha", mid)
    assert first["kind"] == "result" and "round 0 of a fault test" in first["text"]
    second = one_outcome(sup, "alpha", queued)
    assert second["kind"] == "result" and "queued behind a stopped keeper" in second["text"]
    assert second["id"] > first["id"]  # in order
    assert sup.keeper_pid("alpha") == keeper and SYSTEM.alive(claude)
    no_gaps(sup, "alpha")
    record("SIGSTOP of a keeper mid-turn while another session is used, then SIGCONT", rounds=1,
           other_session_answers_meanwhile=served, stopped_sessions_answers="2 of 2, once each, in order",
           messages_lost=0, duplicates=0)


def test_a_stopped_bot_loses_and_doubles_nothing(make_supervisor, bot_env, telegram) -> None:
    from .test_bot_app import USER, say

    sup = make_supervisor().start()
    bot = bot_env(sup)
    say(telegram, "/new alpha", "created")
    sup.ctl("new", "beta", check=True)
    gate = sup.base / "gate"
    telegram.message(USER, f"waitfile:{gate} answered while the bot is stopped")
    sup.wait_received("answered while the bot is stopped")
    assert bot.proc is not None
    os.kill(bot.proc.pid, signal.SIGSTOP)
    try:
        gate.touch()  # the answer is written and stored while the bot cannot take it
        sup.wait_event("alpha", lambda e: e["kind"] == "result" and "stopped" in e.get("text", ""))
        telegram.message(USER, "sent to Telegram while the bot is stopped")
        # the supervisor serves everyone else meanwhile
        reply = sup.ctl("send", "beta", "claudectl while the bot is stopped", "--wait", timeout=90)
        assert reply.returncode == 0 and "claudectl while the bot is stopped" in reply.stdout
    finally:
        os.kill(bot.proc.pid, signal.SIGCONT)
    telegram.wait_for_text(lambda t: t.startswith("echo: sent to Telegram while the bot is stopped"), chat_id=USER)
    sup.wait_consumer("telegram-bot")
    replies = [t for t in telegram.texts(USER) if t.startswith("echo:")]
    assert len(replies) == 2, replies  # each once, in the order they were asked
    assert "answered while the bot is stopped" in replies[0] and "sent to Telegram while" in replies[1], replies
    assert sum("sent to Telegram while" in r["text"] for r in sup.claude_received()) == 1  # Claude got it once
    record("SIGSTOP of the Telegram bot while an answer is written and a message is sent, then SIGCONT", rounds=1,
           replies_delivered=2, duplicates=0, claudectl_served_meanwhile=1, messages_lost=0)


# --- in-process: what the pool does when the fork server dies mid-spawn ---------------------


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    """The supervisor's socket-free core with a fake fork server and clocks (test_lifecycle's)."""
    h = Harness(tmp_path)
    yield h
    h.store.close()


def test_a_spawn_the_dead_fork_server_never_answered_is_started_anew_with_its_message(harness: Harness) -> None:
    h = harness
    h.op("create", session="a")
    mid = h.op("send", session="a", text="one")["message_id"]
    assert len(h.fork.spawned) == 1  # asked, never answered: the fork server died
    h.pool.on_fork_server_lost()
    h.clock.advance(h.core.config.keeper_start_timeout)  # no hello: it never forked
    assert len(h.fork.spawned) == 2  # asked again, of the new fork server
    assert [m.id for m in h.fork.spawned[-1][1].messages] == [mid]
    assert not [e for e in h.events("a") if e["kind"] == "message_failed"]


def test_a_keeper_forked_just_before_the_fork_server_died_is_taken_on_by_its_hello(harness: Harness) -> None:
    h = harness
    h.op("create", session="a")
    h.op("send", session="a", text="one")
    h.pool.on_fork_server_lost()  # before its "spawned" report
    h.hello("a", 100)
    h.clock.advance(h.core.config.keeper_start_timeout)
    handle = h.pool.session("a").keeper
    assert handle is not None and handle.phase is Phase.READY and handle.pid == 100
    assert h.watched == [100] and len(h.fork.spawned) == 1  # its exit is watched; no second keeper


# --- the wall clock steps (item 12) ----------------------------------------------------------


def test_uptime_stays_sane_when_the_wall_clock_steps_an_hour(harness: Harness) -> None:
    h = harness
    h.clock.advance(120)  # up two minutes
    h.now -= 3600  # the wall clock stepped back an hour (NTP, a VM resumed, an operator)
    assert h.op("status")["uptime"] == pytest.approx(120)
    h.now += 7200  # and an hour forward of where it was
    assert h.op("status")["uptime"] == pytest.approx(120)


WALLCLOCK_SHIM = Path(__file__).resolve().parent / "wallclock"


def test_the_wall_clock_stepped_an_hour_forward_and_back_fires_no_idle_timer_early_or_never(make_supervisor) -> None:
    idle = 4.0
    offset_file = None

    def step(seconds: float) -> None:
        assert offset_file is not None
        offset_file.write_text(str(float(offset_file.read_text() or 0) + seconds))

    sup = make_supervisor(idle_timeout=idle)
    offset_file = sup.base / "wall-offset"
    offset_file.write_text("0")
    sup.env.update(FAKE_WALL_OFFSET_FILE=str(offset_file),
                   PYTHONPATH=os.pathsep.join(filter(None, [str(WALLCLOCK_SHIM), sup.env.get("PYTHONPATH")])))
    sup.start()
    sup.ctl("new", "alpha", check=True)
    waited = []
    with sup.follow("alpha") as events:
        for i, seconds in enumerate((3600.0, -7200.0)):  # an hour forward, then an hour back of the start
            with sup.client() as c:
                mid = c.request("send", session="alpha", text=f"turn {i}")["message_id"]
            events.wait_event(lambda e, m=mid: e["kind"] == "result" and e.get("message_id") == m)
            turn_ended = time.monotonic()  # (the keeper's idle timer started a moment before)
            step(seconds)
            suspended = len([e for e in events.events if e.get("state") == "suspended"]) + 1
            events.wait_count(lambda e: e.get("state") == "suspended", suspended, timeout=60,
                              what="the idle timer to fire (never is a failure)")
            waited.append(time.monotonic() - turn_ended)
            assert waited[-1] > idle - 1.0, waited  # not early: the timer is not on the wall clock
            uptime = sup.request("status")["uptime"]
            assert 0 < uptime < 600, uptime  # no hour more or less, never negative
        with sup.client() as c:
            mid = c.request("send", session="alpha", text="after the steps")["message_id"]
        events.wait_event(lambda e: e["kind"] == "result" and e.get("message_id") == mid)
        # "Resuming session (idle for N min)": after the step forward the hour counts (the wall
        # clock says it passed); after the step back it is never negative
        resumed = [e["idle_for"] for e in events.events if e.get("state") == "resuming"]
        assert len(resumed) == 2 and resumed[0] >= 3600 and resumed[1] == 0, resumed
    record("the wall clock stepped an hour forward, then back, while a session idles", rounds=2,
           idle_timeout_s=idle, idle_timer_fired_after_s=[round(w, 1) for w in waited],
           uptime="monotonic, never negative", idle_for="never negative (wall clock: a step forward counts)")


# --- the store under a running supervisor (item 12) ------------------------------------------


def test_a_store_file_deleted_under_a_running_supervisor_is_restored_and_nothing_is_lost(make_supervisor) -> None:
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    sup.ctl("send", "alpha", "before", "--wait", check=True)
    gate = sup.base / "gate"
    with sup.client() as c:  # acknowledged: one Claude is answering, one queued behind it
        answering = c.request("send", session="alpha", text=f"waitfile:{gate} answered after the deletion")["message_id"]
        queued = c.request("send", session="alpha", text="queued before the deletion")["message_id"]
    sup.wait_received("answered after the deletion")
    db = sup.state_dir / "supervisor.sqlite3"
    db.unlink()  # an operator's rm, a cleaner of old files
    wait_for(lambda: "restored it from the open database" in sup.log(), what="the supervisor to restore the store")
    assert db.exists() and sup.request("status")["store_problem"] is None
    gate.touch()
    assert one_outcome(sup, "alpha", answering)["kind"] == "result"
    assert one_outcome(sup, "alpha", queued)["kind"] == "result"
    assert "echo: after" in sup.ctl("send", "alpha", "after the deletion", "--wait", check=True).stdout
    # what was acknowledged before and after the deletion is in the file a restart reads
    sup.kill9()
    sup.start()
    for mid in (answering, queued):
        assert one_outcome(sup, "alpha", mid)["kind"] == "result"
    texts = [e["text"] for e in sup.events("alpha") if e["kind"] == "result"]
    assert [t.split(" (")[0] for t in texts] == ["echo: before", f"echo: waitfile:{gate} answered after the deletion",
                                                   "echo: queued before the deletion", "echo: after the deletion"]
    no_gaps(sup, "alpha")
    record("the store file deleted under a running supervisor mid-turn, then a restart", rounds=1,
           outcome="written back from the open database within 2 s (logged)", acknowledged_messages=4,
           answered_once_after_restart=4, messages_lost=0)


@pytest.fixture
def ext4_disk(tmp_base: Path) -> Iterator[tuple[Path, Path]]:
    """A small ext4 file system (a loop device) mounted with errors=remount-ro, so a test
    can make it read-only under open files as the kernel does on an I/O error (needs
    root). Yields (mount point, image)."""
    image, mount = tmp_base / "ext4.img", tmp_base / "ext4"
    mount.mkdir()
    with open(image, "wb") as f:
        f.truncate(32 << 20)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], capture_output=True, text=True)
    mounted = made.returncode == 0 and subprocess.run(
        ["mount", "-o", "loop,errors=remount-ro", str(image), str(mount)], capture_output=True).returncode == 0
    if not mounted:
        pytest.skip(f"cannot mount an ext4 image here: {made.stderr.strip()}")
    yield mount, image
    subprocess.run(["umount", "-l", str(mount)], check=False)


def make_read_only(mount: Path) -> None:
    """What the kernel does on a file-system error with errors=remount-ro: read-only at
    once, whatever is open for writing (a plain ``mount -o remount,ro`` is refused then)."""
    device = Path(subprocess.run(["findmnt", "-no", "SOURCE", str(mount)], capture_output=True, text=True,
                                 check=True).stdout.strip()).name
    Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("test: the state dir goes read-only\n")


def test_a_state_dir_gone_read_only_under_a_running_supervisor_loses_nothing_acknowledged(ext4_disk,
                                                                                           make_supervisor) -> None:
    mount, image = ext4_disk
    sup = make_supervisor()
    sup.state_dir = mount / "state"
    sup.start()
    sup.ctl("new", "alpha", "--cwd", str(sup.base), check=True)  # (nothing of a session's on that disk)
    sup.ctl("send", "alpha", "before", "--wait", check=True)
    gate = sup.base / "gate"
    with sup.client() as c:
        answering = c.request("send", session="alpha", text=f"waitfile:{gate} answered on a read-only disk")
    sup.wait_received("answered on a read-only disk")
    keeper = sup.keeper_pid("alpha")
    # what was written reaches the disk first: the journal's abort drops every program's
    # dirty pages (that is a power cut, which synchronous=NORMAL does not survive in full)
    os.sync()
    make_read_only(mount)
    gate.touch()  # the answer comes while nothing can be stored: it waits (keeper and memory)
    wait_for(lambda: "cannot store events" in sup.log(), what="the supervisor to say it cannot store")
    refused = sup.ctl("send", "alpha", "not accepted on a read-only disk")
    assert refused.returncode == 1 and "(storage)" in refused.stderr, refused.stderr  # refused, not lost
    assert f"the file system of {sup.state_dir} is read-only" in refused.stderr  # and why, for the operator
    assert f"the file system of {sup.state_dir} is read-only" in sup.log()
    assert sup.proc is not None and sup.proc.poll() is None  # no crash (so no crash loop)
    assert sup.request("status")["pid"] == sup.proc.pid  # it still answers, for a look
    # the operator: stop it (not gracefully: what waits in memory stays with the keeper),
    # repair the file system, start it again — the keeper is adopted and sends it again
    sup.kill9()
    subprocess.run(["umount", str(mount)], check=True)
    subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True)  # (exit 1: "errors corrected")
    subprocess.run(["mount", "-o", "loop,errors=remount-ro", str(image), str(mount)], check=True)
    sup.start()
    outcome = one_outcome(sup, "alpha", answering["message_id"])
    assert outcome["kind"] == "result" and "answered on a read-only disk" in outcome["text"]
    assert sup.keeper_pid("alpha") == keeper  # adopted: the same keeper kept it
    assert "echo: after" in sup.ctl("send", "alpha", "after the repair", "--wait", check=True).stdout
    assert not [r for r in sup.claude_received() if "not accepted" in r["text"]]
    no_gaps(sup, "alpha")
    record("the state dir's file system goes read-only (ext4 errors=remount-ro) mid-turn, then repair and restart",
           rounds=1, new_messages="refused with a storage error", supervisor="kept running, said why",
           reply_of_the_running_turn="delivered once after the restart", messages_lost=0)


def test_enormous_lines_from_claude_leave_the_keeper_alive_and_its_memory_flat(make_supervisor) -> None:
    from supervisord_claude._claude import MAX_ANSWER_CHARS

    from .test_load import rss_mib

    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    sup.ctl("send", "alpha", "warm up", "--wait", check=True)
    keeper = sup.keeper_pid("alpha")
    assert keeper is not None
    before = rss_mib(keeper)
    after = []
    for i in range(3):  # three 50 MB lines, one turn each
        with sup.client() as c:
            mid = c.request("send", session="alpha", text=f"bigline:50 number {i}")["message_id"]
        outcome = one_outcome(sup, "alpha", mid)
        assert outcome["kind"] == "result" and len(outcome["text"]) < MAX_ANSWER_CHARS + 100  # cut, with a note
        after.append(rss_mib(keeper))
    assert sup.keeper_pid("alpha") == keeper  # it did not die
    assert after[-1] < after[0] + 16, (before, after)  # no growth from one such line to the next
    assert "echo: next" in sup.ctl("send", "alpha", "next", "--wait", check=True, timeout=90).stdout
    record("a Claude that writes three 50 MB lines, one per turn", rounds=3, outcome="answered, cut with a note",
           keeper_restarts=0, keeper_rss_mib_before=round(before, 1),
           keeper_rss_mib_after_each=[round(a, 1) for a in after])
