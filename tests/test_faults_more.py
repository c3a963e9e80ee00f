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
import time

import pytest

from supervisord_claude._supervisor import MAX_FORK_SERVER_DEATHS

from .conftest import SYSTEM, SupervisorProcess, wait_for
from .test_faults import ROUNDS, gone, no_gaps, one_outcome, record, streaming_turn
from .test_supervisor import run_supervisor

pytestmark = pytest.mark.timeout(300)


def test_a_second_supervisor_on_the_same_state_dir_is_refused_naming_the_first(make_supervisor) -> None:
    first = make_supervisor().start()
    first.ctl("new", "alpha", check=True)
    second = make_supervisor()
    second.state_dir = first.state_dir  # its own runtime dir, the first one's store
    t0 = time.monotonic()
    result = run_supervisor(second, timeout=60)
    assert result.returncode == 1, result.stderr
    assert f"pid {first.proc.pid}" in result.stderr and str(first.state_dir) in result.stderr, result.stderr
    assert not second.pids()  # it started nothing: no keeper, no Claude of its own
    # the first goes on serving, alone
    assert "echo: still here" in first.ctl("send", "alpha", "still here", "--wait", check=True).stdout
    record("a second supervisor on the same state dir (another runtime dir)", rounds=1,
           outcome="refused, exit 1, naming the pid that holds it", seconds=round(time.monotonic() - t0, 1),
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
