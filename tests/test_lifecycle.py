"""The supervisor's lifecycle state machines, in-process: a real store on a temp SQLite
file, a fake fork server, a recording keeper link and ``System`` (supervisord's
``DummyOptions`` is the model) and a ``FakeClock``. Races between a keeper's reports
become ordinary, fast, deterministic tests here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from protocol import Reason, SessionState, validate_request
from supervisord_claude import _wire
from supervisord_claude._clock import FakeClock
from supervisord_claude._configkeys import Config
from supervisord_claude._errors import StoreError
from supervisord_claude._os import System
from supervisord_claude.supervisor._core import Core, build_core
from supervisord_claude.supervisor._live import PHASE_EDGES, IllegalPhase, KeeperHandle, Phase
from supervisord_claude.supervisor._pool import BYE_GRACE
from supervisord_claude.supervisor._store import DONE, FAILED, QUEUED, WRITTEN, Store


class FakeForkServer:
    def __init__(self) -> None:
        self.spawned: list[tuple[int, _wire.KeeperSpec]] = []

    def spawn(self, token: int, spec: _wire.KeeperSpec) -> None:
        self.spawned.append((token, spec))


class RecordingLink:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, _wire.Message]] = []

    def send(self, ident: bytes, msg: _wire.Message) -> bool:
        self.sent.append((ident, msg))
        return True

    def of(self, kind: type[_wire.Message]) -> list[Any]:
        return [m for _, m in self.sent if isinstance(m, kind)]


class RecordingSystem(System):
    """Records signals instead of sending them."""

    def __init__(self) -> None:
        self.signals: list[tuple[str, int, int]] = []

    def kill(self, pid: int, sig: int) -> bool:
        self.signals.append(("kill", pid, sig))
        return True

    def killpg(self, pgid: int, sig: int) -> bool:
        self.signals.append(("killpg", pgid, sig))
        return True


class Harness:
    def __init__(self, base: Path) -> None:
        self.clock = FakeClock()
        self.now = 1_000_000.0
        self.fork = FakeForkServer()
        self.link = RecordingLink()
        self.system = RecordingSystem()
        self.frames: list[tuple[bytes, bytes]] = []
        self.numbers: dict[bytes, int] = {}
        self.shutdowns = 0
        config = Config(runtime_dir=base / "run", state_dir=base / "state", claude_bin="/bin/true")
        self.store = Store(config.db_path)
        #: the pids of keepers whose exit the supervisor is asked to watch (by pidfd)
        self.watched: list[int] = []
        self.core: Core = build_core(config, self.store, self.system, self.clock, lambda: self.now,
                                     self.fork, self.link, self._send, self._shutdown, self._shutdown,
                                     watch_exit=self.watched.append)
        self.pool = self.core.pool

    def _send(self, ident: bytes, frame: bytes) -> None:
        self.frames.append((ident, frame))

    def _shutdown(self) -> None:
        self.shutdowns += 1

    def op(self, op: str, **args: Any) -> dict[str, Any]:
        return self.core.ops.handle(b"client", validate_request({"v": 1, "id": 1, "op": op, **args}))

    def events(self, session: str) -> list[dict[str, Any]]:
        return self.store.events_after(0, session, limit=10_000)

    # playing the fork server and a keeper --------------------------------------------

    def spawned(self, index: int = -1, pid: int = 100) -> tuple[int, bytes]:
        token, spec = self.fork.spawned[index]
        self.pool.on_fork_report(_wire.Spawned(token, pid))
        return pid, f"{spec.session}:{pid}".encode()

    def hello(self, session: str, pid: int) -> bytes:
        ident = f"{session}:{pid}".encode()
        self.pool.on_keeper_message(ident, _wire.Hello(pid, version=_wire.WIRE_VERSION, session=session))
        welcome = self.link.of(_wire.Welcome)
        self.numbers[ident] = welcome[-1].resend_from - 1 if welcome else 0
        return ident

    def keeper_says(self, ident: bytes, msg: _wire.Message) -> None:
        """A keeper's report, numbered as a keeper numbers them."""
        if isinstance(msg, _wire.Numbered):
            self.numbers[ident] = self.numbers.get(ident, 0) + 1
            msg = dataclasses.replace(msg, n=self.numbers[ident])
        self.pool.on_keeper_message(ident, msg)

    def took(self, ident: bytes, message_id: int, text: str) -> None:
        """The keeper hands a message to Claude."""
        self.keeper_says(ident, _wire.KeeperEvent.of("user", {"message_id": message_id, "text": text, "attachments": []}))

    def first_turn(self, session: str, text: str) -> tuple[int, int, bytes]:
        """A message to a new session, whose keeper starts and hands it to Claude: its id,
        the keeper's pid and its ident."""
        message_id = self.op("send", session=session, text=text)["message_id"]
        pid, _ = self.spawned()
        ident = self.hello(session, pid)
        self.took(ident, message_id, text)
        return message_id, pid, ident

    def store_cannot_write_started(self, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
        """The store fails to write that a conversation exists (the disk is full) until
        the function this returns is called."""
        update_session = self.store.update_session

        def started_not_stored(name: str, **fields: Any) -> None:
            if fields.get("started"):
                raise StoreError("database or disk is full")
            update_session(name, **fields)
        monkeypatch.setattr(self.store, "update_session", started_not_stored)
        return lambda: monkeypatch.setattr(self.store, "update_session", update_session)

    def answer(self, ident: bytes, message_id: int) -> None:
        """The keeper hands a message to Claude and Claude answers it."""
        self.took(ident, message_id, "t")
        self.keeper_says(ident, _wire.KeeperEvent.of("result", {"message_id": message_id, "text": "echo"}))

    def state(self, ident: bytes, state: SessionState, reason: Reason = Reason.REQUESTED) -> None:
        self.keeper_says(ident, _wire.KeeperEvent.of("state", {"state": state.value, "reason": reason.value}))


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.store.close()


def test_two_sends_to_a_suspended_session_start_one_keeper(h: Harness) -> None:
    h.op("create", session="a")
    first = h.op("send", session="a", text="one")["message_id"]
    second = h.op("send", session="a", text="two")["message_id"]
    assert len(h.fork.spawned) == 1
    [(_, spec)] = h.fork.spawned
    assert [m.id for m in spec.messages] == [first]  # the first goes in the spec...
    pid, _ = h.spawned()
    ident = h.hello("a", pid)
    assert [m.message.id for m in h.link.of(_wire.Deliver)] == [second]  # ...the second on hello
    assert h.pool.session("a").keeper.phase is Phase.READY
    assert ident


def test_a_hello_that_overtakes_the_spawn_report_is_accepted(h: Harness) -> None:
    h.op("create", session="a")
    h.op("send", session="a", text="one")
    h.hello("a", 100)  # before the fork server's "spawned"
    h.spawned(pid=100)
    handle = h.pool.session("a").keeper
    assert handle is not None and handle.phase is Phase.READY and handle.pid == 100


def test_an_exit_report_that_overtakes_the_bye_is_a_clean_exit(h: Harness) -> None:
    h.op("create", session="a")
    mid = h.op("send", session="a", text="one")["message_id"]
    pid, _ = h.spawned()
    ident = h.hello("a", pid)
    h.keeper_says(ident, _wire.ClaudeStarted(555))
    h.answer(ident, mid)
    h.state(ident, SessionState.SUSPENDING, Reason.IDLE_TIMEOUT)
    h.pool.on_fork_report(_wire.Exited(pid, 0))  # the report first...
    assert h.pool.session("a").keeper.phase is Phase.EXIT_REPORTED
    h.state(ident, SessionState.SUSPENDED, Reason.IDLE_TIMEOUT)
    h.keeper_says(ident, _wire.Bye("suspended", "idle-timeout"))  # ...then its last words
    assert h.pool.session("a").keeper is None
    assert h.store.get_session("a").state is SessionState.SUSPENDED
    assert not [e for e in h.events("a") if e.get("reason") == "killed"]
    assert h.system.signals == []  # its Claude was stopped by the keeper itself
    h.clock.advance(BYE_GRACE * 2)  # the grace timer finds nothing left to do
    assert not [e for e in h.events("a") if e.get("reason") == "killed"]


def test_a_keeper_that_dies_without_a_bye_is_reported_killed_after_the_grace(h: Harness) -> None:
    h.op("create", session="a")
    mid = h.op("send", session="a", text="one")["message_id"]
    pid, _ = h.spawned()
    ident = h.hello("a", pid)
    h.keeper_says(ident, _wire.ClaudeStarted(555))
    h.keeper_says(ident, _wire.KeeperEvent.of("user", {"message_id": mid, "text": "one", "attachments": []}))
    h.pool.on_fork_report(_wire.Exited(pid, -9))
    assert h.store.get_session("a").state is not SessionState.FAILED  # its bye may still come
    h.clock.advance(BYE_GRACE)
    assert h.store.get_session("a").state is SessionState.FAILED
    [failed] = [e for e in h.events("a") if e["kind"] == "message_failed"]
    assert failed["message_id"] == mid and "keeper died" in failed["reason"]
    assert ("killpg", 555, 9) in h.system.signals  # its orphaned Claude is stopped


def test_settings_sent_while_a_keeper_starts_reach_it_on_hello(h: Harness) -> None:
    h.op("create", session="a")
    h.op("send", session="a", text="one")
    h.op("set_timeout", session="a", minutes=7)
    h.op("set_model", session="a", model="m2")
    pid, _ = h.spawned()
    assert h.link.sent == []  # it cannot be reached before its hello
    h.hello("a", pid)
    assert isinstance(h.link.sent[0][1], _wire.Welcome)  # then what waited for it
    assert [m.seconds for m in h.link.of(_wire.SetTimeout)] == [420.0]
    assert [m.model for m in h.link.of(_wire.SetModel)] == ["m2"]


def test_archive_while_a_keeper_starts_stops_it_first(h: Harness) -> None:
    h.op("create", session="a")
    mid = h.op("send", session="a", text="one")["message_id"]
    assert h.op("archive", session="a")["state"] == "suspending"
    pid, _ = h.spawned()
    ident = h.hello("a", pid)
    assert h.link.of(_wire.Stop)  # it gets the stop as it connects
    h.keeper_says(ident, _wire.KeeperEvent.of("message_failed", {"message_id": mid, "reason": "archived"}))
    h.keeper_says(ident, _wire.Bye("suspended", "requested"))
    h.pool.on_fork_report(_wire.Exited(pid, 0))
    assert h.store.get_session("a").state is SessionState.ARCHIVED


def test_messages_a_stopping_keeper_rejects_go_to_its_successor_in_order(h: Harness) -> None:
    h.op("create", session="a")
    ids = [h.op("send", session="a", text=t)["message_id"] for t in ("one", "two", "three")]
    pid, _ = h.spawned()
    ident = h.hello("a", pid)  # "one" is in its spec; "two" and "three" follow the hello
    h.answer(ident, ids[0])
    h.state(ident, SessionState.SUSPENDING, Reason.REQUESTED)
    h.keeper_says(ident, _wire.Rejected(tuple(ids[1:])))
    later = h.op("send", session="a", text="four")["message_id"]
    assert len(h.fork.spawned) == 1  # nothing new starts while the old keeper is on its way out
    h.keeper_says(ident, _wire.Bye("suspended", "requested"))
    h.pool.on_fork_report(_wire.Exited(pid, 0))
    [_, (_, spec)] = h.fork.spawned  # a successor, with what was owed, in order
    assert [m.id for m in spec.messages] == [ids[1], ids[2], later]


def test_a_failed_fork_reports_the_message_and_keeps_serving(h: Harness) -> None:
    h.op("create", session="a")
    mid = h.op("send", session="a", text="one")["message_id"]
    token, _ = h.fork.spawned[0]
    h.pool.on_fork_report(_wire.SpawnFailed(token, "Resource temporarily unavailable"))
    [failed] = [e for e in h.events("a") if e["kind"] == "message_failed"]
    assert failed["message_id"] == mid and "could not start a session keeper" in failed["reason"]
    h.op("send", session="a", text="again")
    assert len(h.fork.spawned) == 2  # the next message tries again


def test_shutdown_suspends_sessions_through_events(h: Harness) -> None:
    h.op("create", session="a")
    h.op("send", session="a", text="one")
    pid, _ = h.spawned()
    ident = h.hello("a", pid)
    h.state(ident, SessionState.IDLE, Reason.TURN)
    h.core.mark_stopped()
    last = h.events("a")[-1]
    assert (last["kind"], last["state"], last["reason"]) == ("state", "suspended", "shutdown")
    assert h.store.get_session("a").state is SessionState.SUSPENDED


def test_every_phase_edge_is_checked() -> None:
    handle = KeeperHandle("a", 1)
    with pytest.raises(IllegalPhase):
        handle.change_phase(Phase.SAID_BYE)  # no bye before it even connected
    for phase in Phase:
        assert phase in PHASE_EDGES
    assert PHASE_EDGES[Phase.GONE] == frozenset()


def test_reports_sent_again_after_a_reconnect_are_handled_once(h: Harness) -> None:
    h.op("create", session="a")
    mid = h.op("send", session="a", text="one")["message_id"]
    pid, _ = h.spawned()
    ident = h.hello("a", pid)
    event = _wire.KeeperEvent.of("user", {"message_id": mid, "text": "one", "attachments": []}, n=1)
    h.pool.on_keeper_message(ident, event)
    h.pool.on_keeper_message(ident, event)  # the same report again (resent after a reconnect)
    assert len([e for e in h.events("a") if e["kind"] == "user"]) == 1
    h.clock.advance(0)
    assert [a.upto for a in h.link.of(_wire.Ack)] == [1]  # acked once, after it was stored
    rec = h.store.get_session("a")
    assert (rec.keeper_pid, rec.keeper_n) == (pid, 1)  # a new supervisor asks for n >= 2


def _run(n: int, *bodies: tuple[str, dict[str, Any]]) -> bytes:
    """A keeper's run of events as it sends it (wire 7), numbered from ``n``."""
    return _wire.encode_run(n, [_wire.run_item(kind, body) for kind, body in bodies])


def test_a_run_sent_again_from_its_middle_stores_only_what_was_not_stored(h: Harness) -> None:
    """A run is kept by the keeper as one piece: a supervisor that stored its first events
    (then died, or the link broke) gets it whole again and stores the rest, once each."""
    h.op("create", session="a")
    mid = h.op("send", session="a", text="one")["message_id"]
    pid, _ = h.spawned()
    ident = h.hello("a", pid)
    text = [("assistant_text", {"message_id": mid, "text": f"t{i}"}) for i in range(4)]
    user = ("user", {"message_id": mid, "text": "one", "attachments": []})
    h.pool.on_keeper_messages([(ident, m) for m in _wire.decode_all(_run(1, user, *text[:2]))])
    h.pool.on_keeper_messages([(ident, m) for m in _wire.decode_all(_run(2, *text))])  # 2..5, 2 and 3 stored
    h.clock.advance(0)
    assert [(e["kind"], e.get("text")) for e in h.events("a") if e["kind"] in ("user", "assistant_text")] == \
        [("user", "one"), *(("assistant_text", f"t{i}") for i in range(4))]
    assert [a.upto for a in h.link.of(_wire.Ack)] == [5]  # one ack for the loop turn, its last event
    assert h.store.get_session("a").keeper_n == 5


def test_a_run_of_text_tools_and_prompts_is_recorded_in_order_each_acted_on(h: Harness) -> None:
    """A run mixes Claude's text (stored as one unit per stretch) with events the
    supervisor acts on: each is stored in order, once, with its turn's origin; the
    permission request is the keeper's to answer, the watcher sees the turn waiting on it,
    and the keeper's last event is what a new supervisor would ask it to send again from."""
    h.op("create", session="a")
    mid = h.op("send", session="a", text="one", origin="telegram:5")["message_id"]
    pid, _ = h.spawned()
    ident = h.hello("a", pid)
    text = [("assistant_text", {"message_id": mid, "text": f"t{i}"}) for i in range(5)]
    tool = ("tool_use", {"message_id": mid, "tool_use_id": "u1", "name": "Bash", "input": {"command": "make"}})
    ask = ("permission_request", {"message_id": mid, "request_id": "r1", "tool_name": "Bash",
                                  "input": {"command": "rm x"}, "suggestions": []})
    user = ("user", {"message_id": mid, "text": "one", "attachments": []})
    h.pool.on_keeper_messages([(ident, m) for m in _wire.decode_all(
        _run(1, user, *text[:2], tool, text[2], ask, *text[3:]))])
    h.clock.advance(0)
    stored = [e for e in h.events("a") if e.get("message_id") == mid]
    assert [(e["kind"], e.get("text") or e.get("tool_use_id") or e.get("request_id")) for e in stored] == [
        ("user", "one"), ("assistant_text", "t0"), ("assistant_text", "t1"), ("tool_use", "u1"),
        ("assistant_text", "t2"), ("permission_request", "r1"), ("assistant_text", "t3"), ("assistant_text", "t4")]
    assert {e["origin"] for e in stored} == {"telegram:5"}
    assert [e["seq"] for e in stored] == list(range(stored[0]["seq"], stored[0]["seq"] + 8))
    assert "r1" in h.pool.session("a").keeper.permissions
    assert h.core.watch.activity("a")["doing"] == "waiting"
    assert h.store.get_session("a").keeper_n == 8
    assert [a.upto for a in h.link.of(_wire.Ack)] == [8]


def test_a_keeper_of_the_release_before_runs_is_adopted_and_its_events_read(h: Harness) -> None:
    """Keepers of wire 6 and before send one event a message; a supervisor of this release
    adopts them after an upgrade and reads both forms, numbering the same."""
    h.op("create", session="a")
    first, _ = h.store.add_message("a", "one", [])
    h.store.update_session("a", keeper_pid=4242, keeper_n=7)
    h.pool.expect({4242: "a"})
    ident = b"a:4242"
    # (its Hello calls the conversation existing "resumed", as keepers of an earlier release do)
    [hello] = _wire.decode_all(msgpack.packb({"t": "hello", "pid": 4242, "version": 6, "session": "a",
                                              "claude_pid": 4343, "state": "busy", "current": first,
                                              "resumed": True}))
    h.pool.on_keeper_message(ident, hello)
    assert h.pool.session("a").keeper.wire_version == 6
    assert h.op("status", session="a")["started"] is True
    old_form = b"".join(msgpack.packb({"t": "event", "kind": "assistant_text", "m": first,
                                       "b": msgpack.packb({"message_id": first, "text": f"old {n}"}), "n": n})
                        for n in (7, 8, 9))  # 7 was stored before the upgrade: sent again, skipped
    h.pool.on_keeper_messages([(ident, m) for m in _wire.decode_all(old_form)])
    h.pool.on_keeper_messages([(ident, m) for m in _wire.decode_all(
        _run(10, ("result", {"message_id": first, "text": "done"})))])
    h.clock.advance(0)
    assert [(e["kind"], e["text"]) for e in h.events("a") if e.get("message_id") == first] == \
        [("assistant_text", "old 8"), ("assistant_text", "old 9"), ("result", "done")]
    assert [a.upto for a in h.link.of(_wire.Ack)] == [10]


def test_a_keeper_left_by_a_previous_supervisor_is_adopted_with_what_it_holds(h: Harness) -> None:
    h.op("create", session="a")
    # as after a restart: the store knows the messages the old keeper holds, the pool not
    first, _ = h.store.add_message("a", "one", [])
    second, _ = h.store.add_message("a", "two", [])
    h.store.update_session("a", keeper_pid=4242, keeper_n=7)
    h.pool.expect({4242: "a"})
    ident = b"a:4242"
    h.pool.on_keeper_message(ident, _wire.Hello(4242, version=_wire.WIRE_VERSION, session="a", claude_pid=4343,
                                                state="busy", current=first, queued=(second,), started=True))
    handle = h.pool.session("a").keeper
    assert handle is not None and handle.adopted and handle.phase is Phase.READY
    assert handle.forwarded == [first, second] and handle.claude_pid == 4343
    assert h.link.of(_wire.Welcome) == [_wire.Welcome(8)]  # it has stored up to n = 7
    h.core.requeue_owed()
    assert h.fork.spawned == [] and h.link.of(_wire.Deliver) == []  # nothing is sent twice


def _linked_uplink() -> tuple[Any, Any, FakeClock]:
    """A keeper's uplink, linked to a supervisor that is a list of the frames it got."""
    from supervisord_claude.keeper._uplink import Uplink

    class Socket:
        def __init__(self) -> None:
            self.frames: list[bytes] = []

        def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
            self.frames += frames

    clock = FakeClock()
    uplink = Uplink("alpha", clock, 300.0, hello=lambda: _wire.Hello(1, _wire.WIRE_VERSION, "alpha"),
                    on_over_limit=lambda: None, on_orphan_expired=lambda: None)
    uplink.sock = sock = Socket()
    uplink.connected()
    uplink.welcome(1)
    sock.frames.clear()
    return uplink, sock, clock


def test_a_keepers_reports_of_one_loop_turn_leave_as_one_frame_in_order() -> None:
    """Its events go as runs (one message each, an event a number), in order with its
    other reports; all of a loop turn in one frame."""
    uplink, sock, clock = _linked_uplink()
    for i in range(2):
        uplink.send_event("assistant_text", {"text": f"t{i}"})
    uplink.send(_wire.Rejected((9,)))
    uplink.send(_wire.KeeperEvent.of("assistant_text", {"text": "t2"}))
    uplink.send(_wire.Delta(None, "live"))
    assert sock.frames == []  # not before the loop turn ends
    clock.advance(0)
    assert len(sock.frames) == 1
    first_run, rejected, second_run, delta = _wire.decode_all(sock.frames[0])
    assert isinstance(first_run, _wire.KeeperEvents) and isinstance(second_run, _wire.KeeperEvents)
    assert [(e.n, e.body["text"]) for e in first_run.each()] == [(1, "t0"), (2, "t1")]
    assert (first_run.n, first_run.last_n) == (1, 2)
    assert rejected == _wire.Rejected((9,), n=3)
    assert [(e.n, e.body["text"]) for e in second_run.each()] == [(4, "t2")]
    assert delta == _wire.Delta(None, "live")


def test_live_text_goes_at_most_every_so_often_and_always_before_what_follows_it() -> None:
    """Claude's pieces of live text: the first at once, those written within LIVE_EVERY
    after it as one Delta; an event waits for the text written before it."""
    from supervisord_claude.keeper._uplink import LIVE_EVERY

    uplink, sock, clock = _linked_uplink()

    def sent() -> list[Any]:
        messages = [m for frame in sock.frames for m in _wire.decode_all(frame)]
        sock.frames.clear()
        return messages

    uplink.send(_wire.Delta(1, "a"))
    clock.advance(0)
    assert sent() == [_wire.Delta(1, "a")]  # at once
    for piece in "bcd":
        clock.advance(LIVE_EVERY / 5)
        uplink.send(_wire.Delta(1, piece))
    assert sent() == []  # held
    clock.advance(LIVE_EVERY)
    assert sent() == [_wire.Delta(1, "bcd")]  # together, LIVE_EVERY after the one before
    uplink.send(_wire.Delta(1, "e"))
    uplink.send_event("assistant_text", {"message_id": 1, "text": "abcde"})
    clock.advance(0)
    delta, run = sent()
    assert delta == _wire.Delta(1, "e") and [e.body["text"] for e in run.each()] == ["abcde"]
    clock.advance(LIVE_EVERY)
    assert sent() == []  # nothing left behind


def test_a_run_is_bounded_and_kept_until_its_last_event_is_acked() -> None:
    uplink, sock, clock = _linked_uplink()
    for i in range(_wire.RUN_EVENTS + 1):
        uplink.send_event("assistant_text", {"text": f"t{i}"})
    clock.advance(0)
    runs = [m for frame in sock.frames for m in _wire.decode_all(frame)]
    assert [(r.n, r.last_n) for r in runs] == [(1, _wire.RUN_EVENTS), (_wire.RUN_EVENTS + 1, _wire.RUN_EVENTS + 1)]
    uplink.acked(_wire.RUN_EVENTS - 1)  # (a supervisor that stored part of a run)
    sock.frames.clear()
    uplink.connected()  # a new supervisor: it has stored up to there, and asks for the rest
    uplink.welcome(_wire.RUN_EVENTS)
    resent = [m for frame in sock.frames[1:] for m in _wire.decode_all(frame)]
    assert [(r.n, r.last_n) for r in resent] == [(1, _wire.RUN_EVENTS), (_wire.RUN_EVENTS + 1, _wire.RUN_EVENTS + 1)]
    uplink.acked(_wire.RUN_EVENTS)
    assert uplink.unacked_bytes == len(_wire.encode(runs[1]))


def test_a_frame_that_breaks_off_keeps_the_messages_before_the_break() -> None:
    good = _wire.encode(_wire.KeeperEvent.of("assistant_text", {"text": "kept"}, n=1))
    decoded = _wire.decode_all(good + b"\xc1\xc1")
    assert decoded[0] == _wire.KeeperEvent.of("assistant_text", {"text": "kept"}, n=1)
    assert all(isinstance(m, _wire.WireError) for m in decoded[1:]) and len(decoded) >= 2


def test_recovery_after_a_restart_goes_through_the_event_log(h: Harness) -> None:
    """A new supervisor suspends every live session no keeper of it was adopted for, and
    reports the message Claude was answering there as failed — through the event log, so
    by its rules: suspended_at on the core's clock, the sender's origin on the event, the
    message's status with it; an adopted session's turn goes on untouched."""
    for name in ("a", "b"):
        h.store.create_session(name, f"id-{name}", f"/{name}", None, None)
        h.store.update_session(name, state=SessionState.BUSY)
    answering, _ = h.store.add_message("a", "being answered", [], origin="tg:7")
    h.store.set_message_status(answering, WRITTEN)
    waiting, _ = h.store.add_message("a", "not yet sent", [])
    adopted_turn, _ = h.store.add_message("b", "its keeper still answers", [])
    h.store.set_message_status(adopted_turn, WRITTEN)
    h.now = 2_000_000.0

    h.core.recover(adopted=frozenset({"b"}))

    a = h.store.get_session("a")
    assert a.state is SessionState.SUSPENDED and a.suspended_at == h.now
    assert [(e["kind"], e.get("reason")) for e in h.events("a")] == [("state", "startup"), (
        "message_failed", "the supervisor stopped while Claude was answering; send it again")]
    assert h.events("a")[1]["origin"] == "tg:7" and h.events("a")[1]["message_id"] == answering
    assert h.store.get_message(answering).status == FAILED
    assert h.store.get_message(waiting).status == QUEUED  # still owed: delivered on start
    assert h.store.get_session("b").state is SessionState.BUSY and h.events("b") == []
    assert h.store.get_message(adopted_turn).status == WRITTEN


def test_a_turn_is_interrupted_while_its_events_wait_for_a_full_disk(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a session does now is its keeper's word (``LiveSession``), not the stored
    copy: with the disk full, the keeper's "busy" waits in memory, and the turn it
    announces can be interrupted all the same."""
    h.op("create", session="a")
    h.op("send", session="a", text="one")
    pid, _ = h.spawned()
    ident = h.hello("a", pid)

    def disk_full(writes: object) -> None:
        raise StoreError("database or disk is full")
    monkeypatch.setattr(h.store, "append_runs", disk_full)
    h.state(ident, SessionState.BUSY)
    assert h.store.get_session("a").state is SessionState.SUSPENDED  # (the stored copy lags)
    h.op("interrupt", session="a")  # not refused: Claude is answering
    assert h.link.of(_wire.Interrupt)


def test_a_message_an_adopted_keeper_steered_before_its_supervisor_died_is_sent_once_and_not_left_waiting(
        h: Harness) -> None:
    """The previous supervisor was killed after its keeper wrote a message into the running
    turn (steered) but before it stored that report: the keeper's hello names the message
    steered, and the report comes again after the welcome. The message is not handed to the
    keeper again (Claude would get it twice), and once Claude took it and the turn ended it
    waits no more: the session can be suspended (it was refused for ever, "1 message(s)
    queued")."""
    h.op("create", session="a")
    first, _ = h.store.add_message("a", "long job", [])
    second, _ = h.store.add_message("a", "queued behind it", [])  # still queued in the store
    h.store.update_session("a", keeper_pid=4242, keeper_n=7)
    h.pool.expect({4242: "a"})
    ident = b"a:4242"
    h.pool.on_keeper_message(ident, _wire.Hello(4242, version=_wire.WIRE_VERSION, session="a", claude_pid=4343,
                                                state="busy", current=first, steered=(second,), started=True))
    h.numbers[ident] = 7
    h.core.requeue_owed()  # (the adoption window closed before the report came again)
    assert h.link.of(_wire.Deliver) == []  # nothing is sent twice
    h.keeper_says(ident, _wire.KeeperEvent.of("steered", {"message_id": second, "turn": first,
                                                          "text": "queued behind it", "attachments": []}))
    h.keeper_says(ident, _wire.KeeperEvent.of("taken", {"message_id": second, "turn": first}))
    h.keeper_says(ident, _wire.KeeperEvent.of("result", {"message_id": first, "text": "done", "steered": [second]}))
    h.state(ident, SessionState.IDLE)
    h.clock.advance(0)
    assert h.pool.session("a").waiting() == []
    assert h.op("suspend", session="a")["state"] == SessionState.SUSPENDING.value
    assert h.link.of(_wire.Suspend) == [_wire.Suspend(Reason.REQUESTED.value)]


def _adopt_after_kill(h: Harness, state: str, current: int | None = None, last_n: int | None = 9,
                      version: int = _wire.WIRE_VERSION) -> bytes:
    """The previous supervisor was killed after it stored the keeper's reports up to n = 7;
    the keeper sent (or kept) up to ``last_n`` and says hello to the new one."""
    h.store.update_session("a", keeper_pid=4242, keeper_n=7)
    h.pool.expect({4242: "a"})
    ident = b"a:4242"
    hello = {"t": "hello", "pid": 4242, "version": version, "session": "a", "claude_pid": 4343, "state": state,
             "current": current, "started": True, **({"last_n": last_n} if last_n is not None else {})}
    [decoded] = _wire.decode_all(msgpack.packb(hello))  # (as it comes off the wire: an older one has no last_n)
    h.pool.on_keeper_message(ident, decoded)
    h.numbers[ident] = 7
    return ident


@pytest.mark.parametrize("how", ["answered", "taken", "failed"])
def test_a_message_an_adopted_keeper_took_before_its_supervisor_stored_that_is_not_sent_again(
        h: Harness, how: str) -> None:
    """The previous supervisor was killed after its keeper took a message — Claude answered
    it, took it into the running turn (steered), or it failed (dropped) — but before it
    stored that report: the store still calls it queued, and the keeper's hello no longer
    names it. The new supervisor hands nothing to the keeper until its reports from before
    are stored; then the message is answered (not handed to Claude twice: the user saw two
    answers), and the one the keeper never got (its Deliver died with the supervisor) and
    one sent since go to it, once each, in order."""
    h.op("create", session="a")
    running, _ = h.store.add_message("a", "long job", [])
    taken, _ = h.store.add_message("a", "taken before the kill", [])
    never_got, _ = h.store.add_message("a", "its Deliver died with the supervisor", [])
    h.store.set_message_status(running, WRITTEN)
    user = ("user", {"message_id": taken, "text": "taken before the kill", "attachments": []})
    steered = ("steered", {"message_id": taken, "turn": running, "text": "taken before the kill", "attachments": []})
    reports = {  # what the keeper reported after n = 7, the last report stored
        "answered": [("result", {"message_id": running, "text": "done"}), user,
                     ("result", {"message_id": taken, "text": "echo"})],
        "taken": [steered, ("taken", {"message_id": taken, "turn": running})],
        "failed": [("result", {"message_id": running, "text": "done"}),
                   ("message_failed", {"message_id": taken, "reason": _wire.DROPPED})],
    }[how]
    ident = _adopt_after_kill(h, "busy" if how == "taken" else "idle", current=running if how == "taken" else None,
                              last_n=7 + len(reports))
    h.core.requeue_owed()  # (the adoption window closed before its reports came again)
    sent_since = h.op("send", session="a", text="sent to the new supervisor")["message_id"]
    assert h.link.of(_wire.Deliver) == []  # nothing yet: what it took is not known
    for kind, body in reports:  # sent again after the welcome
        h.keeper_says(ident, _wire.KeeperEvent.of(kind, body))
    h.clock.advance(0)
    assert [d.message.id for d in h.link.of(_wire.Deliver)] == [never_got, sent_since]
    assert h.store.get_message(taken).status == (FAILED if how == "failed" else DONE)


def test_an_adopted_keeper_that_dies_before_its_reports_come_again_leaves_its_owed_messages_to_the_next(
        h: Harness) -> None:
    """Waiting for an adopted keeper's reports never holds a message for ever: the keeper
    dies instead, and what the store still owes goes to the next keeper."""
    h.op("create", session="a")
    owed, _ = h.store.add_message("a", "owed", [])
    _adopt_after_kill(h, "idle")
    h.core.requeue_owed()
    assert h.link.of(_wire.Deliver) == []
    h.pool.on_exit(4242, None)
    h.clock.advance(BYE_GRACE)
    [(_, spec)] = h.fork.spawned
    assert [m.id for m in spec.messages] == [owed]


@pytest.mark.parametrize("version", [6, 7])
def test_an_adopted_keeper_of_an_older_wire_gets_what_is_owed_without_waiting(h: Harness, version: int) -> None:
    """A keeper forked before an upgrade does not say its last report: its owed messages go
    to it as before (they cannot wait for a word that never comes)."""
    h.op("create", session="a")
    owed, _ = h.store.add_message("a", "owed", [])
    _adopt_after_kill(h, "idle", last_n=None, version=version)
    h.core.requeue_owed()
    assert [d.message.id for d in h.link.of(_wire.Deliver)] == [owed]


def test_an_adopted_keeper_whose_reports_were_all_stored_gets_what_is_owed_at_once(h: Harness) -> None:
    """Nothing to wait for (its hello's last report is stored: a planned restart)."""
    h.op("create", session="a")
    owed, _ = h.store.add_message("a", "owed", [])
    _adopt_after_kill(h, "idle", last_n=7)
    h.core.requeue_owed()
    assert [d.message.id for d in h.link.of(_wire.Deliver)] == [owed]


def test_a_keepers_hello_says_its_last_report() -> None:
    """Including the events of a run not closed yet when it connects: the hello counts
    what the new supervisor will be sent again."""
    uplink, sock, clock = _linked_uplink()
    uplink.send_event("assistant_text", {"text": "t0"})
    clock.advance(0)
    uplink.send(_wire.Rejected((9,)))
    uplink.send_event("assistant_text", {"text": "t1"})
    sock.frames.clear()
    uplink.connected()
    [hello] = _wire.decode_all(sock.frames[0])
    assert isinstance(hello, _wire.Hello) and hello.last_n == 3


def test_an_adopted_keeper_that_does_not_send_its_reports_again_holds_its_messages_only_so_long(
        h: Harness) -> None:
    """A keeper sends its reports again as soon as it is welcomed; one that has not (it was
    stopped after its hello) gets what is owed after keeper_start_timeout."""
    h.op("create", session="a")
    owed, _ = h.store.add_message("a", "owed", [])
    _adopt_after_kill(h, "idle")
    h.core.requeue_owed()
    h.clock.advance(h.core.config.keeper_start_timeout - 0.5)
    assert h.link.of(_wire.Deliver) == []
    h.clock.advance(1.0)
    assert [d.message.id for d in h.link.of(_wire.Deliver)] == [owed]


def test_an_adopted_keepers_reports_that_wait_for_a_full_disk_are_waited_for(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the keeper took is known once its reports are stored, not when they came: with
    the disk full they wait in memory, and so do its messages, past keeper_start_timeout."""
    h.op("create", session="a")
    answered, _ = h.store.add_message("a", "answered before the kill", [])
    owed, _ = h.store.add_message("a", "owed", [])
    ident = _adopt_after_kill(h, "idle")
    h.core.requeue_owed()
    append_runs = h.store.append_runs

    def disk_full(writes: object) -> None:
        raise StoreError("database or disk is full")
    monkeypatch.setattr(h.store, "append_runs", disk_full)
    h.answer(ident, answered)  # n = 8, 9: its reports came, and cannot be stored
    h.clock.advance(h.core.config.keeper_start_timeout + 1)
    assert h.link.of(_wire.Deliver) == [] and h.store.get_message(answered).status == QUEUED
    monkeypatch.setattr(h.store, "append_runs", append_runs)
    h.clock.advance(2.0)  # (the event log and the acks try again every second)
    assert h.store.get_message(answered).status == DONE
    assert [d.message.id for d in h.link.of(_wire.Deliver)] == [owed]


def test_a_keeper_is_adopted_and_welcomed_while_the_store_cannot_be_written(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A supervisor restarted on a full disk: writing what the hello says (the conversation
    exists) fails, and the keeper is taken over all the same — welcomed (else it never
    sends its reports) and its exit watched (else a dead keeper holds the session)."""
    h.op("create", session="a")

    def disk_full(*args: object, **kwargs: object) -> None:
        raise StoreError("database or disk is full")
    monkeypatch.setattr(h.store, "update_session", disk_full)
    h.pool.expect({4242: "a"})
    h.pool.on_keeper_messages([(b"a:4242", _wire.Hello(4242, version=_wire.WIRE_VERSION, session="a",
                                                       state="idle", started=True, last_n=0))])
    assert h.link.of(_wire.Welcome) == [_wire.Welcome(1)]
    assert h.watched == [4242]


def test_a_keeper_that_reconnects_to_the_same_supervisor_is_welcomed_again_and_its_answer_arrives(
        h: Harness) -> None:
    """A keeper's connection can drop and come back while its supervisor runs on (ZeroMQ
    reconnects by itself): the keeper says hello again and sends no report until it is
    welcomed. The second hello was ignored: the keeper kept every report from then on —
    the answer never reached the user — and after ``orphan_timeout`` stopped Claude."""
    h.op("create", session="a")
    mid, pid, ident = h.first_turn("a", "one")
    h.clock.advance(0)  # stored and acked: n = 1
    h.pool.on_keeper_messages([(ident, _wire.Hello(pid, version=_wire.WIRE_VERSION, session="a", state="busy",
                                                   current=mid, started=True, last_n=2))])
    assert h.link.of(_wire.Welcome)[-1] == _wire.Welcome(2)  # what it has not stored yet comes again
    h.keeper_says(ident, _wire.KeeperEvent.of("result", {"message_id": mid, "text": "echo"}))  # n = 2
    h.clock.advance(0)
    assert h.store.get_message(mid).status == DONE
    assert [e["kind"] for e in h.events("a")].count("user") == 1
    assert h.pool.session("a").keeper.phase is Phase.READY


def test_a_conversation_started_whose_store_write_fails_is_kept_until_stored(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The keeper's report that Claude's conversation exists, when the store cannot write it
    (disk full): it was acked all the same and lost — the next keeper started Claude without
    ``--resume`` and the conversation's history was gone. It is not acked until stored, the
    store is tried again, and a keeper started meanwhile resumes the conversation."""
    h.op("create", session="a")
    first = h.op("send", session="a", text="one")["message_id"]
    pid, _ = h.spawned()
    ident = h.hello("a", pid)
    disk_freed = h.store_cannot_write_started(monkeypatch)
    h.numbers[ident] = 1  # (as the keeper socket hands it over: bad messages are logged, not raised)
    h.pool.on_keeper_messages([(ident, _wire.ConversationStarted("sid", n=1))])
    h.answer(ident, first)  # n = 2, 3
    h.clock.advance(0)
    assert all(a.upto < 1 for a in h.link.of(_wire.Ack))  # the keeper keeps it for us
    h.state(ident, SessionState.SUSPENDING, Reason.IDLE_TIMEOUT)
    h.state(ident, SessionState.SUSPENDED, Reason.IDLE_TIMEOUT)
    h.keeper_says(ident, _wire.Bye("suspended", "idle-timeout"))
    h.pool.on_fork_report(_wire.Exited(pid, 0))
    h.op("send", session="a", text="two")
    assert h.fork.spawned[-1][1].started  # resumed, not a fresh conversation
    disk_freed()
    h.clock.advance(1.0)  # (tried again with the acks)
    assert h.store.get_session("a").started


def test_messages_dropped_while_an_adopted_keepers_reports_are_awaited_are_dropped_once_known(
        h: Harness) -> None:
    """``drop_queued`` right after a restart, before the adopted keeper's reports from
    before it are stored: a message the store still calls queued may be one Claude
    answered. It was reported dropped at once — and then answered (two outcomes: the user
    read "dropped" and got the answer). The drop waits until the store knows: what Claude
    had is answered, what it never had is dropped, and a message sent after the drop goes."""
    h.op("create", session="a")
    answered, _ = h.store.add_message("a", "answered before the kill", [])
    owed, _ = h.store.add_message("a", "its Deliver died with the supervisor", [])
    ident = _adopt_after_kill(h, "idle")  # its reports 8 and 9 are not stored
    h.core.requeue_owed()
    h.op("drop_queued", session="a")
    sent_after = h.op("send", session="a", text="sent after the drop")["message_id"]
    h.answer(ident, answered)  # n = 8, 9: sent again after the welcome
    h.clock.advance(0)

    def outcomes(message_id: int) -> list[str]:
        return [e["kind"] for e in h.events("a") if e.get("message_id") == message_id
                and e["kind"] in ("result", "message_failed")]
    assert outcomes(answered) == ["result"]
    assert outcomes(owed) == ["message_failed"] and h.store.get_message(owed).status == FAILED
    assert [d.message.id for d in h.link.of(_wire.Deliver)] == [sent_after]


def test_a_steered_message_a_stopping_keeper_gives_back_is_owed_again(h: Harness) -> None:
    """A keeper stopped mid-turn (shutdown, the terminal) gives back the messages written
    into the turn that Claude never took, as it gives back the queued ones: the store
    owes them again (``queued``: a supervisor started later delivers them) and the next
    keeper gets them — they were ``written`` and no keeper would ever have them again."""
    h.op("create", session="a")
    first, pid, ident = h.first_turn("a", "long job")
    h.state(ident, SessionState.BUSY, Reason.MESSAGE)
    steered = h.op("send", session="a", text="and one more thing")["message_id"]
    h.keeper_says(ident, _wire.KeeperEvent.of("steered", {"message_id": steered, "turn": first,
                                                          "text": "and one more thing", "attachments": []}))
    assert h.store.get_message(steered).status == WRITTEN
    h.state(ident, SessionState.SUSPENDING, Reason.ATTACHED)
    h.keeper_says(ident, _wire.Rejected((steered,)))  # Claude was stopped before it took it
    h.keeper_says(ident, _wire.KeeperEvent.of("message_failed", {"message_id": first, "reason": "stopped"}))
    assert h.store.get_message(steered).status == QUEUED
    assert h.pool.session("a").steered() == []
    h.state(ident, SessionState.SUSPENDED, Reason.ATTACHED)
    h.keeper_says(ident, _wire.Bye("suspended", "attached"))
    h.pool.on_fork_report(_wire.Exited(pid, 0))
    assert [m.id for m in h.fork.spawned[-1][1].messages] == [steered]


def test_a_message_handed_to_a_keeper_while_its_connection_was_down_reaches_it_when_it_reconnects(
        h: Harness) -> None:
    """A ``Deliver`` sent while a keeper's connection is down is lost on the way (the
    keeper socket cannot reach it), and the message waited in ``forwarded`` for ever: its
    sender never got an answer. When the keeper says hello again, what it was handed and
    does not say it holds is handed to it again (a keeper ignores a message it has, so one
    it took meanwhile is not Claude's twice)."""
    h.op("create", session="a")
    first, pid, ident = h.first_turn("a", "one")
    h.state(ident, SessionState.BUSY, Reason.MESSAGE)
    lost = h.op("send", session="a", text="sent while the link was down", queue=True)["message_id"]
    assert [d.message.id for d in h.link.of(_wire.Deliver)] == [lost]  # (it never arrived)
    h.pool.on_keeper_messages([(ident, _wire.Hello(pid, version=_wire.WIRE_VERSION, session="a", state="busy",
                                                   current=first, started=True, last_n=2))])
    assert [d.message.id for d in h.link.of(_wire.Deliver)] == [lost, lost]


def test_an_adopted_keeper_of_an_older_wire_that_reconnects_is_welcomed_and_handed_nothing_again(
        h: Harness) -> None:
    """A keeper forked by the release before an upgrade speaks an older wire: its hello on a
    reconnect is welcomed all the same (it was "not taken on"), and nothing it was handed is
    handed to it again — it would take a message it has as a new one."""
    h.op("create", session="a")
    owed, _ = h.store.add_message("a", "owed", [])
    ident = _adopt_after_kill(h, "idle", last_n=None, version=8)
    h.core.requeue_owed()
    assert [d.message.id for d in h.link.of(_wire.Deliver)] == [owed]
    h.pool.on_keeper_messages([(ident, _wire.Hello(4242, version=8, session="a", state="idle", started=True,
                                                   last_n=7))])
    assert h.link.of(_wire.Welcome)[-1] == _wire.Welcome(8)
    assert [d.message.id for d in h.link.of(_wire.Deliver)] == [owed]


def test_a_keeper_that_reconnects_while_the_disk_is_full_keeps_the_reports_not_stored(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk is full: a keeper's reports wait in the event log (its answer) and in
    ``_unstored_started`` (its conversation exists), not acked, so the keeper keeps them.
    Its link drops and comes back: it was welcomed from the first report *handled*, and a
    keeper drops what comes before its welcome — a supervisor restarted before storing them
    asked for them in vain (the answer and the conversation were lost). It is welcomed from
    the first report stored; what it sends again was handled already and is not handled
    twice, and is stored once when the store works again."""
    from supervisord_claude.keeper._uplink import Uplink

    h.op("create", session="a")
    mid = h.op("send", session="a", text="one")["message_id"]
    pid, _ = h.spawned()
    ident = h.hello("a", pid)

    class Socket:  # (the keeper's end of its link: what it sends)
        def __init__(self) -> None:
            self.frames: list[bytes] = []

        def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
            self.frames += frames

    uplink = Uplink("a", h.clock, 300.0, on_over_limit=lambda: None, on_orphan_expired=lambda: None,
                    hello=lambda: _wire.Hello(pid, _wire.WIRE_VERSION, "a", state="busy", current=mid, started=True))
    uplink.sock = sock = Socket()
    uplink.connected()
    uplink.welcome(1)
    told = len(h.link.sent)

    def loop_turn() -> list[_wire.Message]:
        """The keeper's frames to the supervisor, and what the supervisor says to the keeper."""
        nonlocal told
        h.clock.advance(0)
        got = [m for frame in sock.frames for m in _wire.decode_all(frame)]
        sock.frames.clear()
        h.pool.on_keeper_messages([(ident, m) for m in got])
        h.clock.advance(0)
        for _, reply in h.link.sent[told:]:
            if isinstance(reply, _wire.Ack):
                uplink.acked(reply.upto)
            elif isinstance(reply, _wire.Welcome):
                uplink.welcome(reply.resend_from)
        told = len(h.link.sent)
        return got

    uplink.send_event("user", {"message_id": mid, "text": "one", "attachments": []})
    loop_turn()  # n = 1: stored and acked
    append_runs = h.store.append_runs

    def disk_full(writes: object) -> None:
        raise StoreError("database or disk is full")
    monkeypatch.setattr(h.store, "append_runs", disk_full)
    disk_freed = h.store_cannot_write_started(monkeypatch)
    uplink.send(_wire.ConversationStarted("sid"))  # n = 2
    uplink.send_event("result", {"message_id": mid, "text": "echo"})  # n = 3
    loop_turn()
    uplink.connected()  # its link dropped and came back
    loop_turn()  # hello, welcome
    resent = loop_turn()  # what it sends again was handled already
    assert [m.n for m in resent if isinstance(m, _wire.Numbered)] == [2, 3]
    # a supervisor restarted now asks for what the store does not have: the keeper still has it
    uplink.connected()
    uplink.welcome(h.store.get_session("a").keeper_n + 1)
    kept = [m for frame in sock.frames[1:] for m in _wire.decode_all(frame)]
    sock.frames.clear()
    assert [type(m) for m in kept] == [_wire.ConversationStarted, _wire.KeeperEvents]
    # (it did not restart: the store works again)
    monkeypatch.setattr(h.store, "append_runs", append_runs)
    disk_freed()
    h.clock.advance(1.0)  # (the event log and the acks try again every second)
    assert [e["kind"] for e in h.events("a")].count("result") == 1
    assert h.store.get_message(mid).status == DONE and h.store.get_session("a").started
    assert h.link.of(_wire.Ack)[-1] == _wire.Ack(3)


@pytest.mark.parametrize("op", [{"op": "new_conversation"}, {"op": "set_cwd", "cwd": "elsewhere"}])
def test_a_fresh_conversation_is_not_resumed_for_the_old_ones_start_waiting_for_the_store(
        h: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, op: dict[str, str]) -> None:
    """The store could not write that the session's conversation exists (disk full): it
    waits to be written. The user starts a fresh conversation (/clear, /cd): the next Claude
    was started with ``--resume`` of the new id, which failed (resume-failed), and the
    write tried again marked the fresh conversation started. What waited was of the old
    conversation: it is forgotten."""
    h.op("create", session="a")
    first = h.op("send", session="a", text="one")["message_id"]
    pid, _ = h.spawned()
    ident = h.hello("a", pid)
    disk_freed = h.store_cannot_write_started(monkeypatch)
    h.keeper_says(ident, _wire.ConversationStarted("sid"))
    h.answer(ident, first)
    h.state(ident, SessionState.SUSPENDING, Reason.IDLE_TIMEOUT)
    h.state(ident, SessionState.SUSPENDED, Reason.IDLE_TIMEOUT)
    h.keeper_says(ident, _wire.Bye("suspended", "idle-timeout"))
    h.pool.on_fork_report(_wire.Exited(pid, 0))
    args = {k: str(tmp_path / v) if k == "cwd" else v for k, v in op.items() if k != "op"}
    for path in args.values():
        Path(path).mkdir()
    fresh = h.op(op["op"], session="a", **args)["session_id"]
    h.op("send", session="a", text="two")
    spec = h.fork.spawned[-1][1]
    assert spec.session_id == fresh and not spec.started  # a new conversation: --session-id, no --resume
    disk_freed()
    h.clock.advance(1.0)  # (what waited for the store was tried again with the acks)
    assert not h.store.get_session("a").started
