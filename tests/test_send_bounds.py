"""The send path is bounded (issue #30, items 4, 7, 8 and 9): attachments are taken at
``send`` (a copy the keeper reads), a session's queue has a limit with its own error,
``interrupt`` says whether Claude confirmed it, and only the integer 1 is version 1."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import msgpack
import pytest
import zmq

from bot import _render as render
from protocol import RemoteError
from supervisord_claude._configkeys import DEFAULT_MAX_QUEUED_MESSAGES, DEFAULT_MAX_QUEUED_MIB
from supervisord_claude.supervisor._attachments import Attachments

from .conftest import SYSTEM, USER, SupervisorProcess, wait_for
from .test_bot_app import say
from .test_faults import record


def raw_request(sup: SupervisorProcess, frame: dict[str, object]) -> dict[str, object]:
    """One raw frame on a fresh DEALER socket, and the supervisor's reply to it."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(f"ipc://{sup.runtime_dir / 'control.sock'}")
        sock.send(msgpack.packb(frame, use_bin_type=True))
        assert sock.poll(30_000), f"no reply to {frame!r}"
        reply: dict[str, object] = msgpack.unpackb(sock.recv())
        return reply
    finally:
        sock.close()
        ctx.term()


# item 9: the protocol version ---------------------------------------------------------

def test_only_the_integer_1_is_protocol_version_1(supervisor: SupervisorProcess) -> None:
    for version in (True, 1.0, "1", None):  # (True == 1 and 1.0 == 1 in Python)
        reply = raw_request(supervisor, {"v": version, "id": 7, "op": "hello"})
        assert reply["ok"] is False, f"v={version!r} was taken as version 1"
        error = reply["error"]
        assert isinstance(error, dict) and error["code"] == "bad_version", error
        assert reply["id"] == 7
    # the integer 1 still is
    assert raw_request(supervisor, {"v": 1, "id": 8, "op": "hello"})["ok"] is True


# item 4: attachments are taken at send ------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def copies_of(sup: SupervisorProcess, session: str) -> list[Path]:
    """The attachment copies the supervisor keeps for a session's messages."""
    directory = sup.state_dir / "attachments" / session
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


def test_what_is_not_an_ordinary_file_under_the_limit_is_refused_at_send(make_supervisor, tmp_path) -> None:
    sup = make_supervisor(config="max_attachment_mib = 0.01\n").start()  # about 10 KB
    sup.ctl("new", "alpha", check=True)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.png"
    zero.symlink_to("/dev/zero")
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 20_000)
    refusals = {fifo: ("bad_request", "is a FIFO"), zero: ("bad_request", "is a symbolic link"),
                tmp_path: ("bad_request", "is a directory"), big: ("too_large", "may be at most")}
    with sup.client(timeout=10) as c:
        for path, (code, why) in refusals.items():
            with pytest.raises(RemoteError) as err:
                c.request("send", session="alpha", text="look", attachments=[str(path)])
            assert err.value.code == code and why in err.value.message and "nothing was sent" in err.value.message
        # one bad file among good ones refuses the message, and leaves no copy behind
        good = tmp_path / "good.txt"
        good.write_text("fine")
        with pytest.raises(RemoteError, match="is a FIFO"):
            c.request("send", session="alpha", text="look", attachments=[str(good), str(fifo)])
        assert c.request("status", session="alpha")["queued"] == 0
    assert copies_of(sup, "alpha") == []
    assert not [e for e in sup.events("alpha") if e["kind"] in ("user", "message_failed")]
    # claudectl says why, and the session answers as ever
    refused = sup.ctl("send", "alpha", "look", "--attach", str(zero))  # (claudectl follows the link)
    assert refused.returncode == 1 and "/dev/zero is a device" in refused.stderr
    assert "echo: still here" in sup.ctl("send", "alpha", "still here", "--wait", check=True).stdout


def test_an_attachment_arrives_from_its_copy_which_stays_for_later_turns(supervisor: SupervisorProcess,
                                                                         tmp_path) -> None:
    supervisor.ctl("new", "alpha", check=True)
    png = tmp_path / "pic.png"
    png.write_bytes(PNG)
    notes = tmp_path / "notes.txt"
    notes.write_text("the notes")
    gate = tmp_path / "gate"
    held = f"waitfile:{gate} busy"
    supervisor.request("send", session="alpha", text=held)
    supervisor.wait_received(held)
    # queued behind a running turn; then the files at those paths are swapped for a FIFO
    # and a link to /dev/zero: what was sent is what arrives, and nothing hangs
    sent = supervisor.request("send", session="alpha", text="showfiles look",
                              attachments=[str(png), str(notes)])["message_id"]
    assert [p.name for p in copies_of(supervisor, "alpha")] == ["notes.txt", "pic.png"]
    png.unlink()
    os.mkfifo(png)
    notes.unlink()
    notes.symlink_to("/dev/zero")
    gate.touch()
    with supervisor.follow("alpha") as events:
        result = events.wait_event(lambda e: e["kind"] == "result" and e.get("message_id") == sent,
                                   what="the answer to the message with attachments")
        assert f"[image {hashlib.sha256(PNG).hexdigest()[:16]}]" in result["text"]
        assert "[file notes.txt: the notes]" in result["text"]
        [user] = [e for e in events.events if e["kind"] == "user" and e["message_id"] == sent]
        assert [Path(p).name for p in user["attachments"]] == ["pic.png", "notes.txt"]
    # Claude may read the copies (files that are not images go by path), in this turn and
    # in later ones: they stay, as they were sent, once the turn is over...
    argv = supervisor.claude_starts()[-1]["argv"]
    assert argv[argv.index("--add-dir") + 1] == str(supervisor.state_dir / "attachments" / "alpha")
    assert "echo: next" in supervisor.ctl("send", "alpha", "next", "--wait", check=True).stdout
    assert [Path(p).read_bytes() for p in user["attachments"]] == [PNG, b"the notes"]
    # ...also across a restart of the supervisor; archiving the session removes them
    supervisor.stop()
    supervisor.start()
    assert [Path(p).read_bytes() for p in user["attachments"]] == [PNG, b"the notes"]
    supervisor.ctl("archive", "alpha", check=True)
    wait_for(lambda: copies_of(supervisor, "alpha") == [], what="the copies to go with the archived session",
             seen=lambda: copies_of(supervisor, "alpha"))


def test_a_session_keeps_the_newest_copies_within_its_bound_and_never_one_still_owed(tmp_path) -> None:
    files = []
    for i in range(4):
        path = tmp_path / f"doc{i}.txt"
        path.write_bytes(bytes([i]) * 1000)
        files.append(path)
    attachments = Attachments(tmp_path / "attachments", max_bytes=10_000, keep_bytes=2_500)
    taken = []
    for i, path in enumerate(files):
        copy = attachments.take("alpha", [str(path)])
        os.utime(Path(copy.paths[0]).parent, (1000 + i, 1000 + i))  # taken in this order
        attachments.hold(i, copy)
        taken.append(copy)
    attachments.release(0)  # four held (one over the bound): none may go
    assert all(Path(t.paths[0]).exists() for t in taken)
    for i in (1, 2, 3):
        attachments.release(i)
    # the newest two fit in 2,500 bytes; the oldest two went
    assert [Path(t.paths[0]).exists() for t in taken] == [False, False, True, True]
    # at start-up: a session that exists keeps its copies; one gone or archived loses them
    other = attachments.take("gone", [str(files[0])])
    attachments.sweep([], sessions=["alpha"])
    assert [Path(t.paths[0]).exists() for t in taken] == [False, False, True, True]
    assert not Path(other.paths[0]).exists()


# item 7: a session's queue is bounded ---------------------------------------------------

def test_a_full_queue_refuses_send_with_queue_full_and_loses_nothing(make_supervisor, tmp_path) -> None:
    sup = make_supervisor(config="max_queued_messages = 3\nmax_queued_mib = 1\n").start()
    sup.ctl("new", "alpha", check=True)
    gate = tmp_path / "gate"
    held = f"waitfile:{gate} hold the line"
    first = sup.request("send", session="alpha", text=held)["message_id"]
    sup.wait_received(held)  # Claude answers it; what comes next waits in the queue
    # (queued: each waits for a turn of its own)
    accepted = [first] + [sup.request("send", session="alpha", text=f"queued {i}", idempotency_key=f"k{i}",
                                      queue=True)["message_id"] for i in range(3)]
    with sup.client() as c:
        with pytest.raises(RemoteError) as err:
            c.request("send", session="alpha", text="one too many", queue=True)
        assert err.value.code == "queue_full"
        assert "queue of session 'alpha' is full" in err.value.message and "3 messages" in err.value.message
        status = c.request("status", session="alpha")
        assert status["queued"] == 3 and status["queue_limit"] == {"messages": 3, "bytes": 1024 * 1024}
        # a retry of a message it has is its duplicate, as ever: never refused as one too many
        again = c.request("send", session="alpha", text="queued 1", idempotency_key="k1", queue=True)
        assert again["duplicate"] and again["message_id"] == accepted[2]
    refused = sup.ctl("send", "alpha", "from the shell", "--queue")
    assert refused.returncode == 1 and "is full" in refused.stderr and "(queue_full)" in refused.stderr
    assert "queued:       3 of 3 messages, 0 MiB of 1 MiB (full" in sup.ctl("status", "alpha", check=True).stdout
    assert "queues near their limit: alpha 3 of 3 messages" in sup.ctl("status", check=True).stdout
    sup.request("drop_queued", session="alpha")
    # (the keeper reports the ones it held as dropped on its own: room once it has)
    wait_for(lambda: sup.session("alpha")["queued"] == 0, what="the dropped messages to leave the queue")
    # bytes: 600 KB of text waits; 600 KB more would be over 1 MiB
    wide = "€" * 200_000
    accepted.append(sup.request("send", session="alpha", text=wide, queue=True)["message_id"])
    with sup.client() as c, pytest.raises(RemoteError, match="is full") as err:
        c.request("send", session="alpha", text=wide, queue=True)
    assert err.value.code == "queue_full"
    gate.touch()
    with sup.follow("alpha") as events:
        events.wait_event(lambda e: e["kind"] == "result" and e.get("message_id") == accepted[-1],
                          what="the answer of the last accepted message")
        outcomes = [e["message_id"] for e in events.events if e["kind"] in ("result", "message_failed")]
    # every accepted message ended exactly once (answered, or dropped at our request)
    assert sorted(outcomes) == sorted(accepted)


#: messages of 190,000 characters sent at one busy session (the soak sends the issue's 1,500)
FLOOD = int(os.environ.get("SEND_FLOOD") or 300)


def test_a_flood_of_large_messages_into_one_session_is_bounded(supervisor: SupervisorProcess, tmp_path) -> None:
    supervisor.ctl("new", "alpha", check=True)
    gate = tmp_path / "gate"
    held = f"waitfile:{gate} busy"
    first = supervisor.request("send", session="alpha", text=held)["message_id"]
    supervisor.wait_received(held)
    keeper = supervisor.keeper_pid("alpha")
    assert keeper is not None

    def store_bytes() -> int:
        return sum(p.stat().st_size for p in supervisor.state_dir.glob("supervisor.sqlite3*"))

    keeper_before, store_before = SYSTEM.memory(keeper) or 0, store_bytes()
    accepted, refused = [], 0
    with supervisor.client(timeout=30) as c:
        for i in range(FLOOD):
            try:
                accepted.append(c.request("send", session="alpha", text=f"{i} " + "x" * 190_000,
                                          queue=True)["message_id"])
            except RemoteError as err:
                assert err.code == "queue_full", err
                refused += 1
        assert len(accepted) == DEFAULT_MAX_QUEUED_MESSAGES and refused == FLOOD - len(accepted)
        # the keeper has taken every accepted message (it holds them until Claude starts on each)
        wait_for(lambda: (SYSTEM.memory(keeper) or 0) - keeper_before > len(accepted) * 190_000 // 2,
                 what="the keeper to hold the accepted messages",
                 seen=lambda: SYSTEM.memory(keeper))
    keeper_growth, store_growth = (SYSTEM.memory(keeper) or 0) - keeper_before, store_bytes() - store_before
    bound = DEFAULT_MAX_QUEUED_MIB * 1024 * 1024
    assert keeper_growth < bound and store_growth < bound  # (unbounded: 297 MiB and 276 MiB for 1,500)
    supervisor.request("drop_queued", session="alpha")
    gate.touch()
    with supervisor.follow("alpha") as events:
        events.wait_event(lambda e: e["kind"] == "result" and e.get("message_id") == first, what="the first answer")
        ended = events.wait_count(lambda e: e["kind"] == "message_failed", len(accepted),
                                  what="every dropped message reported")
    assert sorted(e["message_id"] for e in ended) == sorted(accepted)
    record("a flood of messages of 190,000 characters at one busy session", rounds=FLOOD,
           accepted=len(accepted), refused_queue_full=refused,
           keeper_rss_growth_mib=round(keeper_growth / 2**20, 1), store_growth_mib=round(store_growth / 2**20, 1),
           lost=0)


def test_the_bot_says_plainly_that_a_message_was_not_sent_to_a_full_queue(make_supervisor, telegram, bot_env,
                                                                          tmp_path) -> None:
    sup = make_supervisor(config="max_queued_messages = 1\n").start()
    bot_env(sup)
    api = telegram
    say(api, "/new alpha", "created")
    gate = tmp_path / "gate"
    api.message(USER, f"waitfile:{gate} first")
    sup.wait_received(f"waitfile:{gate} first")
    say(api, "second", render.STEERED)  # (joins the running answer; Claude has not taken it yet)
    refused = say(api, "third", "Not sent")
    assert refused["text"] == render.QUEUE_FULL
    gate.touch()
    api.wait_for_text(lambda t: t.startswith("echo: second"), chat_id=USER)
    say(api, "fourth", "echo: fourth")  # room again
    assert not [m for m in api.sent if m["chat_id"] == USER and "echo: third" in m["text"]]


# item 8: interrupt says whether Claude confirmed it --------------------------------------

def test_interrupt_says_whether_claude_confirmed_it(make_supervisor, tmp_path) -> None:
    sup = make_supervisor(config="interrupt_timeout = 2\n").start()
    sup.ctl("new", "alpha", check=True)
    sup.request("send", session="alpha", text="sleep:60 a long one")
    sup.wait_received("sleep:60 a long one")
    # a keeper that cannot act (stopped): the reply says the interrupt was not confirmed
    keeper = sup.keeper_pid("alpha")
    assert keeper is not None
    os.kill(keeper, signal.SIGSTOP)
    try:
        with sup.client() as c:
            reply = c.request("interrupt", session="alpha")
        assert reply["confirmed"] is False and "no confirmation within 2 s" in reply["detail"]
        stuck = sup.ctl("interrupt", "alpha")
        assert stuck.returncode == 1 and "not confirmed" in stuck.stderr
        assert sup.session("alpha")["state"] == "busy"  # nothing reached Claude
    finally:
        os.kill(keeper, signal.SIGCONT)
    with sup.follow("alpha") as events:
        # (once it goes on, what it was sent is carried out: the turn ends interrupted)
        first = events.wait_event(lambda e: e["kind"] == "result", what="the first turn's result")
        assert first["interrupted"] is True
    # a keeper that can act: Claude's control_response confirms it, and the turn ends interrupted
    sup.request("send", session="alpha", text="sleep:60 another")
    sup.wait_received("sleep:60 another")
    with sup.follow("alpha", after=sup.session("alpha")["last_seq"]) as events:
        done = sup.ctl("interrupt", "alpha")
        assert done.returncode == 0 and "confirmed by Claude" in done.stdout, done.stderr
        result = events.wait_event(lambda e: e["kind"] == "result", what="the interrupted turn's result")
        assert result["interrupted"] is True
    with sup.client() as c:
        with pytest.raises(RemoteError) as err:
            c.request("interrupt", session="alpha")
        assert err.value.code == "not_busy"
    assert "echo: after" in sup.ctl("send", "alpha", "after", "--wait", check=True).stdout


def test_the_new_limits_are_checked_in_the_config_file(tmp_path) -> None:
    from supervisord_claude._configfile import load_toml
    from supervisord_claude._errors import ConfigError

    path = tmp_path / "config.toml"
    for text, key in (("max_queued_messages = 0", "max_queued_messages"), ("max_queued_mib = -1", "max_queued_mib"),
                      ("max_attachment_mib = 'big'", "max_attachment_mib"), ("interrupt_timeout = 30", "at most 8")):
        path.write_text(text + "\n")
        with pytest.raises(ConfigError, match=key):
            load_toml(path)
    path.write_text("max_queued_messages = 5\nmax_queued_mib = 0.5\nmax_attachment_mib = 2\ninterrupt_timeout = 1\n")
    assert load_toml(path)["max_queued_messages"] == 5
