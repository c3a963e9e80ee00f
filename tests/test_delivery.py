"""Every message ends in exactly one answer or one clear failure, whatever restarts,
crashes or slow readers happen around it (issue "Trust first")."""

from __future__ import annotations

import os
import re
import signal

import msgpack
import pytest
import zmq

from protocol import RemoteError, control_endpoint

from .conftest import SupervisorProcess


def outcome(events: list[dict], message_id: int) -> list[dict]:
    return [e for e in events if e.get("message_id") == message_id and e["kind"] in ("result", "message_failed")]


@pytest.mark.parametrize("how", ["sigterm", "crash"])
def test_a_queued_message_is_answered_after_a_supervisor_restart(make_supervisor, how: str) -> None:
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    gate = sup.base / "never"
    with sup.client() as c:
        first = c.request("send", session="alpha", text=f"waitfile:{gate} slow one", origin="tg:42")["message_id"]
        second = c.request("send", session="alpha", text="queued behind it", origin="tg:42", queue=True)["message_id"]
    sup.wait_received("slow one")
    if how == "sigterm":
        sup.stop()
    else:
        sup.crash()
    sup.start()
    with sup.follow("alpha") as events:
        [done] = events.wait(lambda evs: outcome(evs, second) or None, what="the queued message's answer")
        [failed] = events.wait(lambda evs: outcome(evs, first) or None, what="the slow message's outcome")
    assert done["kind"] == "result" and done["text"].startswith("echo: queued behind it")
    assert done["origin"] == "tg:42"
    # the message Claude was answering is reported, to its sender, not silently dropped
    assert failed["kind"] == "message_failed" and failed["origin"] == "tg:42"
    assert "send it again" in failed["reason"] or "stopped before it finished" in failed["reason"]
    assert sup.session("alpha")["queued"] == 0


def test_recovery_after_a_crash_marks_the_message_failed_with_its_event(make_supervisor) -> None:
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)
    with sup.client() as c:
        mid = c.request("send", session="alpha", text=f"waitfile:{sup.base / 'never'} x", origin="tg:7")["message_id"]
    sup.wait_received("waitfile")
    sup.crash()
    sup.start()
    [failed] = [e for e in sup.events("alpha") if e.get("message_id") == mid and e["kind"] == "message_failed"]
    assert failed["origin"] == "tg:7" and "supervisor stopped" in failed["reason"]
    # the message is done with: a second restart reports nothing more
    sup.stop()
    sup.start()
    assert len([e for e in sup.events("alpha") if e["kind"] == "message_failed"]) == 1


def test_a_reply_is_never_dropped_however_many_events_wait_unread(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    supervisor.ctl("send", "alpha", "burst:3000", "--wait", check=True)
    assert supervisor.session("alpha")["last_seq"] > 3000
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(control_endpoint(supervisor.runtime_dir))
        pack = lambda m: msgpack.packb({"v": 1, **m})  # noqa: E731
        # ten subscriptions with the largest window (~30,000 events), read nothing, then ask
        for i in range(10):
            sock.send(pack({"id": 10 + i, "op": "subscribe", "session": "alpha", "after": 0, "window": 4096}))
        sock.send(pack({"id": 2, "op": "status"}))
        events = 0
        while True:
            assert sock.poll(30_000), f"no reply to status after {events} events"
            msg = msgpack.unpackb(sock.recv())
            if msg.get("type") == "event":
                events += 1
            elif msg.get("id") == 2:
                assert msg["ok"] and msg["result"]["sessions"] == 1
                break
        # the events were there; the reply waited for room in the client's pipe (bounded
        # since issue #30) and went before the events still waiting in the store
        assert events > 0
    finally:
        sock.close()
        ctx.term()
    log = supervisor.log()
    assert "reply to a client dropped" not in log and "not reading its replies" not in log


def test_cost_counts_each_turn_once_across_resumes(make_supervisor) -> None:
    sup = make_supervisor(idle_timeout=1).start()
    sup.ctl("new", "alpha", check=True)
    totals = []
    for text in ("one", "two", "three"):
        with sup.follow("alpha") as events:
            sup.ctl("send", "alpha", text, "--wait", check=True)
            result = events.wait_event(lambda e: e["kind"] == "result" and e["text"].startswith(f"echo: {text}"))
            totals.append(result["cost_usd"])  # Claude's own cumulative total
        sup.wait_state("alpha", "suspended")  # the next message resumes Claude
    assert totals == pytest.approx([0.001, 0.002, 0.003])
    assert sup.session("alpha")["cost_usd"] == pytest.approx(totals[-1])


def test_idempotency_keys_are_scoped_to_their_session(supervisor: SupervisorProcess) -> None:
    with supervisor.client() as c:
        c.request("create", session="a")
        c.request("create", session="b")
        first = c.request("send", session="a", text="to a", idempotency_key="k1")
        other = c.request("send", session="b", text="to b", idempotency_key="k1")
        again = c.request("send", session="a", text="to a", idempotency_key="k1")
    assert not first["duplicate"] and not other["duplicate"] and again["duplicate"]
    assert again["message_id"] == first["message_id"] != other["message_id"]
    result = supervisor.wait_event("b", lambda e: e["kind"] == "result")
    assert result["text"].startswith("echo: to b")


def test_a_create_that_fails_answers_its_request_and_leaves_nothing(make_supervisor) -> None:
    sup = make_supervisor()
    sup.state_dir.mkdir(parents=True, mode=0o700)
    (sup.state_dir / "sessions").write_text("not a directory")  # the sessions dir cannot be made
    sup.start()
    with sup.client(timeout=30) as c:
        with pytest.raises(RemoteError) as err:
            c.request("create", session="alpha")
        assert "cannot create the session directory" in err.value.message
        assert c.request("list")["sessions"] == []
    result = sup.ctl("new", "alpha")
    assert result.returncode == 1 and "cannot create the session directory" in result.stderr
    assert "no answer" not in result.stderr


def test_an_interrupt_while_a_permission_prompt_waits_is_reported_as_interrupted(make_supervisor) -> None:
    sup = make_supervisor(config="permission_timeout = 600").start()
    sup.ctl("new", "alpha", check=True)
    with sup.follow("alpha") as events:
        with sup.client() as c:
            c.request("send", session="alpha", text="needperm please")
        events.wait_event(lambda e: e["kind"] == "permission_request")
        sup.ctl("interrupt", "alpha", check=True)
        result = events.wait_event(lambda e: e["kind"] == "result")
    assert result["terminal_reason"] == "aborted_tools" and result["interrupted"] is True
    # the session goes on
    assert sup.ctl("send", "alpha", "next", "--wait", check=True).stdout.startswith("echo: next")


def claude_saved_a_first_message(sup: SupervisorProcess, session: str) -> None:
    """The fake claude's saved conversation of a session the store does not know started
    (as when Claude is killed after it saved the first message, before its init line)."""
    info = sup.session(session)
    project = re.sub(r"[^A-Za-z0-9]", "-", info["cwd"])
    history = sup.home / ".fake-claude" / "projects" / project / f"{info['session_id']}.jsonl"
    history.parent.mkdir(parents=True)
    history.write_text('{"role": "user", "text": "saved before the kill"}\n')


def claude_that_finds_its_conversation_in_use(sup: SupervisorProcess, name: str, reads: str) -> None:
    """Start ``sup``'s sessions with a fake claude that, started fresh (``--session-id``),
    first runs the shell lines ``reads`` (e.g. reads what the keeper wrote) and then finds
    the conversation saved already ("already in use", with claude_saved_a_first_message)."""
    wrapper = sup.base / name
    wrapper.write_text(f"""#!/bin/sh
case " $* " in *" --session-id "*)
{reads}
esac
exec "{sup.claude_bin}" "$@"
""")
    wrapper.chmod(0o755)
    sup.claude_bin = str(wrapper)


def test_a_fresh_start_of_a_conversation_claude_already_saved_resumes_it(supervisor: SupervisorProcess) -> None:
    # A Claude killed after it saved the first message but before its init line reached
    # the keeper leaves a conversation the store does not know started. The next start
    # must not fail with "Session ID ... is already in use": it resumes it.
    supervisor.ctl("new", "alpha", check=True)
    claude_saved_a_first_message(supervisor, "alpha")
    reply = supervisor.ctl("send", "alpha", "hello", "--wait", check=True).stdout
    assert "history: 1 earlier" in reply
    starts = supervisor.claude_starts()
    assert "--session-id" in starts[0]["argv"] and "--resume" in starts[1]["argv"]
    assert len(starts) == 2
    # and from now on it is known as started
    supervisor.ctl("suspend", "alpha", check=True)
    supervisor.wait_state("alpha", "suspended")
    supervisor.ctl("send", "alpha", "again", "--wait", check=True)
    assert "--resume" in supervisor.claude_starts()[-1]["argv"]


def test_a_message_whose_attachment_vanished_before_the_already_in_use_retry_fails_and_the_session_goes_on(
        make_supervisor) -> None:
    # The first Claude reads the message, then its attachment's copy is deleted and it
    # exits "already in use": the keeper resumes the conversation and must say the message
    # cannot be sent rather than hang with it.
    sup = make_supervisor()
    claude_that_finds_its_conversation_in_use(sup, "claude-that-loses-the-attachment", f"""\
  read -r message  # the keeper wrote the message: it read the attachment then
  rm -r "{sup.state_dir}/attachments"
""")
    sup.start()
    sup.ctl("new", "alpha", check=True)
    claude_saved_a_first_message(sup, "alpha")
    note = sup.base / "note.txt"
    note.write_text("notes")
    sent = sup.ctl("send", "alpha", "read it", "--attach", str(note), "--wait")
    assert sent.returncode == 1
    assert re.search(r"message not delivered: attachment /\S+/note\.txt is gone", sent.stderr), sent.stderr
    # nothing else is lost: the session answers the next message
    assert sup.ctl("send", "alpha", "next", "--wait", check=True).stdout.startswith("echo: next")


def test_signals_do_not_lose_queued_work_for_other_sessions(make_supervisor) -> None:
    sup = make_supervisor().start()
    with sup.client() as c:
        for name in ("a", "b"):
            c.request("create", session=name)
        ids = {name: [c.request("send", session=name, text=f"{name}{i}")["message_id"] for i in range(3)]
               for name in ("a", "b")}
    os.kill(sup.proc.pid, signal.SIGTERM)
    sup.proc.wait(30)
    sup.start()
    for name, mids in ids.items():
        with sup.follow(name) as events:
            for mid in mids:
                found = events.wait(lambda evs, mid=mid: outcome(evs, mid) or None, what=f"message {mid}")
                assert len(found) == 1
