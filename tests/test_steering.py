"""Steering (issue #29): a message sent while Claude answers joins the running turn, through
the real supervisor, keeper and (fake) Claude; ``queue`` keeps the old way. The fake claude's
``joinpoint:P`` is the model request in the middle of a turn where the CLI takes such
messages; the same races against the real CLI are in ``test_claude_cli.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from .conftest import SupervisorProcess, wait_for


def outcomes(events: list[dict], message_id: int) -> list[dict]:
    return [e for e in events if e.get("message_id") == message_id and e["kind"] in ("result", "message_failed", "taken")]


def send_wait(sup: SupervisorProcess, text: str) -> subprocess.Popen[str]:
    """``claudectl send NAME TEXT --wait``, running (its exit is read later)."""
    return subprocess.Popen([sys.executable, "-m", "supervisord_claude.ctl", "--runtime-dir", str(sup.runtime_dir),
                             "send", "alpha", text, "--wait"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=sup.env)


def claude_has(sup: SupervisorProcess, text: str) -> None:
    """Wait until the fake claude has read a message written to it mid-turn (it is in its
    input: a join point reached now takes it)."""
    wait_for(lambda: any(r["text"] == text for r in sup._claude_log("inbox")), what=f"claude to read {text!r}")


def busy_turn(sup: SupervisorProcess, gate_name: str = "join") -> tuple[int, object]:
    """A turn that runs until its join point's file exists; (its message id, that path)."""
    gate = sup.base / gate_name
    first = sup.request("send", session="alpha", text=f"joinpoint:{gate} run the tests")["message_id"]
    sup.wait_received("run the tests")
    return first, gate


def test_a_message_while_claude_answers_joins_the_turn_and_send_wait_gets_that_turns_reply(supervisor) -> None:
    sup = supervisor
    sup.ctl("new", "alpha", check=True)
    first, gate = busy_turn(sup)
    waiting = send_wait(sup, "only the fast ones")
    with sup.follow("alpha") as events:
        steered = events.wait_event(lambda e: e["kind"] == "steered", what="the steered message written")
        assert steered["turn"] == first and steered["text"] == "only the fast ones"
        claude_has(sup, "only the fast ones")
        gate.touch()
        result = events.wait_event(lambda e: e["kind"] == "result", what="the turn's result")
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    # one turn answered both: the reply names the steered text, and there is one result
    assert result["message_id"] == first and result["steered"] == [steered["message_id"]]
    assert "steered: only the fast ones" in result["text"] and out.strip() == result["text"]
    assert "took the message into the running turn" in err
    evs = sup.events("alpha")
    assert [e["kind"] for e in outcomes(evs, steered["message_id"])] == ["taken"]
    assert len([e for e in evs if e["kind"] == "result"]) == 1
    assert sup.session("alpha")["state"] == "idle"


def test_send_queue_waits_for_a_turn_of_its_own(supervisor) -> None:
    sup = supervisor
    sup.ctl("new", "alpha", check=True)
    _first, gate = busy_turn(sup)
    sent = sup.ctl("send", "alpha", "a question of its own", "--queue", check=True)
    assert sent.stdout.startswith("queued message")
    gate.touch()
    done = sup.ctl("send", "alpha", "--queue", "after both", "--wait", check=True)
    assert done.stdout.startswith("echo: after both")
    evs = sup.events("alpha")
    results = [e for e in evs if e["kind"] == "result"]
    assert [r["text"].split(" (")[0] for r in results] == ["echo: joinpoint:" + str(gate) + " run the tests",
                                                          "echo: a question of its own", "echo: after both"]
    assert not [e for e in evs if e["kind"] in ("steered", "taken")]


def test_a_steered_message_claude_did_not_take_in_time_is_the_next_turn_answered_once(supervisor) -> None:
    sup = supervisor
    sup.ctl("new", "alpha", check=True)
    gate = sup.base / "hold"
    first = sup.request("send", session="alpha", text=f"waitfile:{gate} final answer streaming")["message_id"]
    sup.wait_received("final answer streaming")
    sent = sup.request("send", session="alpha", text="too late for it")
    assert sent["steering"] and sent["ahead"] == 0
    with sup.follow("alpha") as events:
        events.wait_event(lambda e: e["kind"] == "steered", what="the steered message written")
        gate.touch()
        second = events.wait_count(lambda e: e["kind"] == "result", 2, what="two results")
    assert [r["message_id"] for r in second] == [first, sent["message_id"]]
    assert second[1]["text"].startswith("echo: too late for it") and "steered" not in second[0]
    # Claude read it once: the keeper did not write it again for the next turn
    assert [r["text"] for r in sup.claude_received()].count("too late for it") == 1


def test_drop_queued_says_which_messages_claude_already_has(supervisor) -> None:
    sup = supervisor
    sup.ctl("new", "alpha", check=True)
    _first, gate = busy_turn(sup)
    queued = sup.request("send", session="alpha", text="waits", queue=True)["message_id"]
    steered = sup.request("send", session="alpha", text="steers")["message_id"]
    sup.wait_event("alpha", lambda e: e["kind"] == "steered")
    assert sup.request("drop_queued", session="alpha") == {"kept": [steered]}
    claude_has(sup, "steers")
    gate.touch()
    sup.wait_event("alpha", lambda e: e["kind"] == "result")
    evs = sup.events("alpha")
    assert [e["kind"] for e in outcomes(evs, queued)] == ["message_failed"]
    assert [e["kind"] for e in outcomes(evs, steered)] == ["taken"]


def test_an_idempotent_retry_of_a_steered_message_sends_nothing(supervisor) -> None:
    sup = supervisor
    sup.ctl("new", "alpha", check=True)
    _first, gate = busy_turn(sup)
    one = sup.request("send", session="alpha", text="steer once", idempotency_key="k1")
    again = sup.request("send", session="alpha", text="steer once", idempotency_key="k1")
    assert again["duplicate"] and again["message_id"] == one["message_id"] and not again["steering"]
    claude_has(sup, "steer once")
    gate.touch()
    sup.wait_event("alpha", lambda e: e["kind"] == "result")
    wait_for(lambda: sup.session("alpha")["state"] == "idle", what="the session idle")
    assert [r["text"] for r in sup.claude_received()].count("steer once") == 0  # joined, not its own turn
    assert len([e for e in sup.events("alpha") if e["kind"] == "steered"]) == 1


def test_kill_9_of_the_keeper_with_a_steered_message_in_flight_reports_it_not_delivered(supervisor) -> None:
    sup = supervisor
    sup.ctl("new", "alpha", check=True)
    first, _gate = busy_turn(sup)
    waiting = send_wait(sup, "in flight")
    sup.wait_event("alpha", lambda e: e["kind"] == "steered")
    keeper = sup.keeper_pid("alpha")
    assert keeper is not None
    os.kill(keeper, signal.SIGKILL)
    _out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 1 and "not delivered" in err and "keeper died" in err
    evs = sup.events("alpha")
    steered = next(e for e in evs if e["kind"] == "steered")["message_id"]
    assert [e["kind"] for e in outcomes(evs, steered)] == ["message_failed"]
    assert [e["kind"] for e in outcomes(evs, first)] == ["message_failed"]


def test_a_steered_message_survives_a_supervisor_restart_exactly_once(supervisor) -> None:
    sup = supervisor
    sup.ctl("new", "alpha", check=True)
    _first, gate = busy_turn(sup)
    steered = sup.request("send", session="alpha", text="across the restart")["message_id"]
    sup.wait_event("alpha", lambda e: e["kind"] == "steered")
    sup.kill9()
    sup.start()
    assert sup.request("drop_queued", session="alpha") == {"kept": [steered]}  # the adopted keeper said so
    claude_has(sup, "across the restart")
    gate.touch()
    sup.wait_event("alpha", lambda e: e["kind"] == "result")
    evs = sup.events("alpha")
    assert [e["kind"] for e in outcomes(evs, steered)] == ["taken"]
    [result] = [e for e in evs if e["kind"] == "result"]
    assert result["steered"] == [steered] and "steered: across the restart" in result["text"]
    assert len([e for e in evs if e["kind"] == "steered"]) == 1


def test_an_interrupt_says_which_steered_messages_claude_answers_next(supervisor) -> None:
    sup = supervisor
    sup.ctl("new", "alpha", check=True)
    first = sup.request("send", session="alpha", text="sleep:60 a long one")["message_id"]
    sup.wait_received("sleep:60 a long one")
    later = sup.request("send", session="alpha", text="after the stop")["message_id"]
    sup.wait_event("alpha", lambda e: e["kind"] == "steered")
    reply = sup.request("interrupt", session="alpha")
    assert reply["confirmed"] and reply["next"] == [later]
    with sup.follow("alpha") as events:
        results = events.wait_count(lambda e: e["kind"] == "result", 2, what="both turns' results")
    assert [r["message_id"] for r in results] == [first, later] and results[0]["interrupted"]
    assert results[1]["text"].startswith("echo: after the stop")


def test_steered_messages_claude_has_not_taken_count_against_the_queue_limit(make_supervisor) -> None:
    sup = make_supervisor(config="max_queued_messages = 2\n").start()
    sup.ctl("new", "alpha", check=True)
    _first, gate = busy_turn(sup)
    for text in ("steer one", "steer two"):
        assert sup.request("send", session="alpha", text=text)["steering"]
    sup.wait_event("alpha", lambda e: e["kind"] == "steered" and e["text"] == "steer two")
    refused = sup.ctl("send", "alpha", "one too many")
    assert refused.returncode == 1 and "(queue_full)" in refused.stderr
    claude_has(sup, "steer two")
    gate.touch()
    result = sup.wait_event("alpha", lambda e: e["kind"] == "result")
    assert "steered: steer one / steer two" in result["text"] and len(result["steered"]) == 2
    wait_for(lambda: sup.session("alpha")["queued"] == 0, what="room in the queue again")


def test_messages_sent_with_queue_keep_their_own_turns_across_a_restart(supervisor) -> None:
    """(the flag is stored with the message: after a restart the first of two queued
    messages starts a turn, and the second must not join it)"""
    sup = supervisor
    sup.ctl("new", "alpha", check=True)
    with sup.client() as c:  # busy with a turn that will not end by itself
        c.request("send", session="alpha", text=f"waitfile:{sup.base / 'never'} long one")
    sup.wait_state("alpha", "busy")
    with sup.client() as c:
        first = c.request("send", session="alpha", text="first of its own", queue=True)["message_id"]
        second = c.request("send", session="alpha", text="second of its own", queue=True)["message_id"]
    sup.stop()  # graceful: the running turn ends "not delivered", the two stay queued
    sup.start()
    for message_id in (first, second):
        sup.wait_event("alpha", lambda e, m=message_id: e["kind"] == "result" and e.get("message_id") == m)
    evs = sup.events("alpha")
    assert not [e for e in evs if e["kind"] in ("steered", "taken")]
    results = {e["message_id"]: e["text"] for e in evs if e["kind"] == "result"}
    assert results[first].startswith("echo: first of its own") and results[second].startswith("echo: second of its own")


def test_a_steered_message_to_a_claude_that_exits_already_in_use_reaches_the_resumed_one_once(make_supervisor) -> None:
    # The first Claude reads the turn's message and the one steered into it, then exits
    # "already in use" (an earlier Claude saved the conversation, as when it is killed
    # before its init line): the keeper resumes the conversation, and the resumed Claude
    # must be given both, once each — not the turn's own alone, which left the steered
    # one waiting for ever.
    from .test_delivery import claude_saved_a_first_message, claude_that_finds_its_conversation_in_use

    sup = make_supervisor()
    claude_that_finds_its_conversation_in_use(sup, "claude-that-reads-two-then-finds-its-conversation-in-use",
                                              "  read -r turn\n  read -r steered")
    sup.start()
    sup.ctl("new", "alpha", check=True)
    claude_saved_a_first_message(sup, "alpha")
    first = sup.request("send", session="alpha", text="the turn's own")["message_id"]
    with sup.follow("alpha") as events:
        events.wait_event(lambda e: e["kind"] == "user" and e["message_id"] == first, what="the turn begun")
        sent = sup.request("send", session="alpha", text="steered into it")
        assert sent["steering"]
        events.wait_event(lambda e: e["kind"] == "steered", what="the steered message written")
        events.wait_event(lambda e: e["kind"] == "result" and e.get("message_id") == first, what="the turn's result")
    # it joined the turn (taken) or is the next one (its own result): answered either way
    wait_for(lambda: [e["kind"] for e in outcomes(sup.events("alpha"), sent["message_id"])] in (["taken"], ["result"]),
             what="the steered message answered")
    evs = sup.events("alpha")
    assert not [e for e in evs if e["kind"] == "message_failed"]
    assert [r["text"] for r in sup.claude_received()].count("steered into it") == 1  # by the resumed Claude, once
    assert "--resume" in sup.claude_starts()[-1]["argv"] and len(sup.claude_starts()) == 2
    wait_for(lambda: sup.session("alpha")["state"] == "idle", what="the session idle")
