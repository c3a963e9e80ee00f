"""A supervisor restart never interrupts Claude: keepers outlive their supervisor, wait
for the next one and are adopted by it (issue "A supervisor restart never interrupts
Claude")."""

from __future__ import annotations

import os
import signal

import pytest

from .conftest import SYSTEM, SupervisorProcess, wait_for


def outcomes(sup: SupervisorProcess, name: str, message_id: int) -> list[dict]:
    return [e for e in sup.events(name) if e.get("message_id") == message_id
            and e["kind"] in ("result", "message_failed")]


def start_turn(sup: SupervisorProcess, name: str = "alpha", origin: str | None = None) -> tuple[int, object, int]:
    """A turn that ends when the test says so; returns (message id, its gate, Claude's pid)."""
    gate = sup.base / f"gate-{name}"
    fields = {"origin": origin} if origin else {}
    with sup.client() as c:
        mid = c.request("send", session=name, text=f"waitfile:{gate} long job in {name}", **fields)["message_id"]
    claude = sup.wait_received(f"long job in {name}")["pid"]
    return mid, gate, claude


@pytest.mark.parametrize("how", ["kill9", "restart-op", "sighup"])
def test_a_turn_goes_on_through_a_supervisor_restart_and_ends_once(make_supervisor, how: str) -> None:
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    sup.ctl("send", "alpha", "first", "--wait", check=True)
    mid, gate, claude = start_turn(sup)
    with sup.client() as c:
        queued = c.request("send", session="alpha", text="queued behind it")["message_id"]
    keeper = sup.keeper_pid("alpha")
    old_pid = sup.proc.pid
    if how == "kill9":
        sup.kill9()
        sup.start()
    else:
        if how == "restart-op":
            sup.ctl("restart", check=True)
        else:
            os.kill(old_pid, signal.SIGHUP)
        # the same process comes back (a service manager keeps tracking it)
        wait_for(lambda: "Adopted 1 keepers" in sup.log(), what="the restarted supervisor to adopt the keeper")
        wait_for(sup._answers, what="the restarted supervisor to answer")
        assert sup.proc.pid == old_pid and sup.proc.poll() is None
    assert "Adopted 1 keepers, reaped 0 stale" in sup.log()
    assert sup.keeper_pid("alpha") == keeper and SYSTEM.alive(claude)  # no new process, no new Claude
    assert sup.session("alpha")["state"] == "busy"  # from the keeper, not a blanket "suspended"
    gate.touch()
    with sup.follow("alpha") as events:
        events.wait(lambda evs: [e for e in evs if e.get("message_id") == queued and e["kind"] == "result"],
                    what="the queued message's answer")
    [done] = outcomes(sup, "alpha", mid)  # exactly one outcome: its result
    assert done["kind"] == "result" and "long job" in done["text"]
    [after] = outcomes(sup, "alpha", queued)
    assert after["kind"] == "result" and "history: 4 earlier" in after["text"]  # 2 exchanges before it
    assert len(sup.claude_starts()) == 1  # Claude was never restarted
    seqs = [e["seq"] for e in sup.events("alpha")]
    assert seqs == list(range(1, len(seqs) + 1))  # no event stored twice, none lost
    users = [e["message_id"] for e in sup.events("alpha") if e["kind"] == "user"]
    assert len(users) == len(set(users)) == 3  # nothing was sent to Claude twice


def test_events_written_while_no_supervisor_runs_arrive_once_in_order(make_supervisor) -> None:
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    mid, gate, _ = start_turn(sup)
    sup.kill9()
    gate.touch()  # the turn ends (and the session goes idle) with nobody listening
    wait_for(lambda: any(r["text"].startswith("waitfile") for r in sup.claude_received()), what="the turn")
    sup.start()
    with sup.follow("alpha") as events:
        [result] = events.wait(lambda evs: [e for e in evs if e.get("message_id") == mid and e["kind"] == "result"],
                               what="the result written while the supervisor was away")
    assert "long job" in result["text"]
    sup.wait_state("alpha", "idle")
    seqs = [e["seq"] for e in sup.events("alpha")]
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(outcomes(sup, "alpha", mid)) == 1


def test_without_a_new_supervisor_keepers_stop_claude_after_the_orphan_timeout(make_supervisor) -> None:
    sup = make_supervisor(extra_args=["--orphan-timeout", "2"]).start()
    sup.ctl("new", "alpha", check=True)
    start_turn(sup)
    keeper = sup.keeper_pid("alpha")
    sup.kill9()
    assert SYSTEM.alive(keeper)  # it waits for a supervisor...
    # ...for 2 s, then stops Claude (SIGTERM, 5 s grace) and exits: nothing outlives that
    wait_for(lambda: not sup.pids(), timeout=60, what="the keeper and Claude to stop", seen=sup.pids)
    sup.start()
    assert "Adopted 0 keepers, reaped 0 stale" in sup.log()
    # the store is recovered: the message that was being answered is reported
    failed = sup.wait_event("alpha", lambda e: e["kind"] == "message_failed")
    assert "supervisor stopped" in failed["reason"]


def test_graceful_shutdown_still_stops_every_session(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    start_turn(supervisor)
    assert supervisor.stop() == 0
    assert supervisor.pids() == []


#: Claude's short messages in a turn that ends while no supervisor runs: the next one stores
#: them over some 25 turns of its loop (MAX_KEEPER_BATCH a turn), before the reports that
#: follow them — the window in which it once handed the keeper's messages out again
BACKLOG = 100_000


def test_messages_a_keeper_answered_while_no_supervisor_ran_are_not_given_to_claude_again(make_supervisor) -> None:
    """The supervisor is killed (-9) while its keeper holds messages for Claude; the keeper
    answers them before the next supervisor comes, after a turn of many events. The store
    still calls them queued (the reports saying otherwise wait in the keeper), and the
    keeper's hello no longer names them. The new supervisor stored the keeper's backlog
    over many loop turns and handed them to the keeper again in between: Claude answered
    each twice (3 runs of 3 before the fix). Now each is given to Claude once, answered
    once, and the session goes on."""
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    sup.ctl("send", "alpha", "first", "--wait", check=True)
    _, gate, _ = start_turn(sup)
    with sup.client() as c:
        c.request("send", session="alpha", text=f"burst:{BACKLOG} before the kill", queue=True)
        second = c.request("send", session="alpha", text="second, queued", queue=True)["message_id"]
        third = c.request("send", session="alpha", text="third, queued", queue=True)["message_id"]
    wait_for(lambda: sup.session("alpha")["queued"] == 3, what="the keeper to hold the three queued messages")
    sup.kill9()
    gate.touch()  # the turns end with nobody listening; the keeper keeps its reports
    sup.wait_received("third, queued")  # (Claude has answered "second" then: one turn at a time)
    sup.start()
    sup.ctl("send", "alpha", "after the restart", "--wait", check=True)  # (anything owed goes before it)
    received = [r["text"] for r in sup.claude_received()]
    assert received.count("second, queued") == 1 and received.count("third, queued") == 1, received
    last = sup.events("alpha", after=sup.session("alpha")["last_seq"] - 20)  # (the backlog is before them)
    for mid in (second, third):
        assert [e["kind"] for e in last if e.get("message_id") == mid and e["kind"] in ("user", "result")] == \
            ["user", "result"]
    assert [e["seq"] for e in last] == list(range(last[0]["seq"], last[0]["seq"] + len(last)))


def test_messages_held_at_a_graceful_shutdown_are_answered_after_the_next_start(make_supervisor) -> None:
    """A shutdown while Claude answers: the message it answers is reported not delivered
    (its turn was cut; the user can send it again). A message written into that turn that
    Claude had not taken yet is not in the conversation, as a queued one is not: both are
    kept and answered, once each, after the next start (the steered one was reported not
    delivered, while the queued one was kept)."""
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    mid, _gate, _ = start_turn(sup)
    with sup.client() as c:
        steered = c.request("send", session="alpha", text="and one more thing")["message_id"]
        sup.wait_event("alpha", lambda e: e["kind"] == "steered")
        queued = c.request("send", session="alpha", text="in a turn of its own", queue=True)["message_id"]
    wait_for(lambda: any(r["text"] == "and one more thing" for r in sup._claude_log("inbox")),
             what="Claude to have the steered message in its input")
    assert sup.stop() == 0
    sup.start()
    for message_id in (steered, queued):
        sup.wait_event("alpha", lambda e, m=message_id: e.get("message_id") == m and e["kind"] == "result")
    [cut] = outcomes(sup, "alpha", mid)
    assert cut["kind"] == "message_failed" and "supervisor shutdown" in cut["reason"]
    for message_id, text in ((steered, "and one more thing"), (queued, "in a turn of its own")):
        [answer] = outcomes(sup, "alpha", message_id)
        assert answer["kind"] == "result" and answer["text"].startswith(f"echo: {text}")
