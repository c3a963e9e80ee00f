"""A burst of Claude's output through the keeper's reading path, as the supervisor gets it:
what a keeper reports for a given stdout is fixed (a faster reading path must report the
same events, in the same order, each body the same bytes: what subscribers get), and
whether the lines come a chunk at a time or a line at a time changes nothing."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import json
import types
from typing import Any
from unittest import mock

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisord_claude import _claude, _wire
from supervisord_claude._clock import FakeClock
from supervisord_claude.keeper import _keeper, _turns
from supervisord_claude.keeper._actions import Action, StartClaude
from supervisord_claude.keeper._keeper import Keeper
from supervisord_claude.keeper._machine import KeeperMachine


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


#: what a Claude writes in one turn: its init, live text, an answer with a tool call and
#: its result, a long run of text blocks (more than a run holds, by count and by bytes),
#: lines that are not JSON or empty, and the result
STDOUT = b"\n".join([
    _dumps({"type": "system", "subtype": "init", "session_id": "s", "model": "claude-x", "permissionMode": "default"}),
    *(_dumps({"type": "stream_event", "event": {"type": "content_block_delta",
                                                "delta": {"type": "text_delta", "text": f"piece {i} "}}})
      for i in range(3)),
    _dumps({"type": "assistant", "message": {"content": [
        {"type": "text", "text": "Let me look. é ✓"},
        {"type": "tool_use", "id": "tu1", "name": "Bash", "input": {"command": "ls", "n": [1, 2.5, None, True]}}]}}),
    _dumps({"type": "user", "message": {"content": [
        {"type": "tool_result", "tool_use_id": "tu1", "content": [{"type": "text", "text": "a\nb"}]}]}}),
    *(_dumps({"type": "assistant", "message": {"content": [{"type": "text", "text": f"{i:05d} " + "x" * 200}]}})
      for i in range(1500)),
    b"not json",
    b"",
    b"[1, 2]",
    _dumps({"type": "assistant", "message": {"content": [{"type": "text", "text": ""}, "odd", {"type": "text",
                                                                                              "text": "last"}]}}),
    _dumps({"type": "result", "subtype": "success", "is_error": False, "result": "ok", "total_cost_usd": 0.5,
            "duration_ms": 7, "num_turns": 1, "session_id": "s"}),
]) + b"\n"

#: sha256 of what the keeper reported for STDOUT (``_digest``: each event's kind, message
#: id, packed body — the bytes a subscriber gets — and number counted from the first; the
#: live text), as the keeper before the per-line work was cut (commit 46514f8) reported it
REPORTS_SHA256 = "e56b65d4a9e1821a4b44508fe1102424236500dda24cbfb9911e946bb42591f9"


class Sock:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        self.frames.append(frames[0])


def _keeper_in_a_turn() -> tuple[Keeper, Sock, FakeClock, int]:
    """A keeper linked to a (fake) supervisor, its Claude running and answering message 1."""
    clock = FakeClock()
    spec = _wire.KeeperSpec(session="burst", instance="i", runtime_dir="/nonexistent", claude_bin="claude", cwd="/",
                            session_id="sid", started=True, idle_timeout=600)
    keeper = Keeper(spec, None, clock=clock)
    keeper._spawn_task = lambda coro: coro.close()  # type: ignore[method-assign,assignment,return-value]
    keeper.uplink.sock = sock = Sock()
    keeper.uplink.connected()
    keeper.uplink.welcome(1)
    start = keeper.machine.start()
    run = next(a.run for a in start if isinstance(a, StartClaude))
    keeper.do(start)
    keeper.do(keeper.machine.claude_started(run, 4242))
    keeper.handle(_wire.Deliver(_wire.QueuedMessage(1, "go")))
    clock.advance(0)
    sock.frames.clear()
    return keeper, sock, clock, run


async def read_stdout_of(keeper: Keeper, run: int, pieces: list[bytes]) -> None:
    """``keeper`` reads what a Claude of run ``run`` wrote, in these pieces, to its end
    (the process a stand-in: it has exited, said nothing on stderr)."""
    stdout = asyncio.StreamReader()
    for piece in pieces:
        stdout.feed_data(piece)
    stdout.feed_eof()

    async def exited() -> int:
        return 0

    stderr = asyncio.get_running_loop().create_future()
    stderr.set_result(None)
    await keeper._read_stdout(run, types.SimpleNamespace(stdout=stdout, wait=exited, pid=0), stderr,
                              collections.deque())


def _read(monkeypatch: pytest.MonkeyPatch, chunk: int, advance: bool = True) -> list[bytes]:
    """The frames sent for STDOUT read through the keeper's reading path, ``chunk`` bytes a
    read (and then, with ``advance``, at the end of the loop turn)."""
    monkeypatch.setattr(_keeper, "STDOUT_CHUNK", chunk)
    keeper, sock, clock, run = _keeper_in_a_turn()
    keeper.machine.claude_exited = lambda *args: []  # type: ignore[method-assign]  # (only the burst here)

    asyncio.run(read_stdout_of(keeper, run, [STDOUT]))
    if advance:
        clock.advance(0)
    return sock.frames


def _digest(reports: list[_wire.Message]) -> str:
    """What the reports say, hashed: numbers counted from the first event's (how many
    reports a keeper made before the burst is not the burst's), runs and frames not."""
    first = next(r.n for r in reports if isinstance(r, _wire.KeeperEvent))
    said = [(r.n - first, r.kind, r.message_id, r.packed) if isinstance(r, _wire.KeeperEvent) else repr(r)
            for r in reports]
    return hashlib.sha256(repr(said).encode()).hexdigest()


def _reports(frames: list[bytes]) -> list[_wire.Message]:
    """What the frames say, each run of events as its events (where a run or frame ends
    depends on how the lines were read, not what they said)."""
    reports: list[_wire.Message] = []
    for frame in frames:
        for msg in _wire.decode_all(frame):
            assert isinstance(msg, _wire.Message)
            reports += msg.each() if isinstance(msg, _wire.KeeperEvents) else [msg]
    return reports


def test_a_burst_reaches_the_supervisor_as_the_same_events(monkeypatch: pytest.MonkeyPatch) -> None:
    frames = _read(monkeypatch, 64 * 1024)
    events = [e for f in frames for m in _wire.decode_all(f) if isinstance(m, _wire.KeeperEvents) for e in m.each()]
    kinds = collections.Counter(e.kind for e in events)
    assert kinds["assistant_text"] == 1 + 1500 + 1 and kinds["tool_use"] == 1 and kinds["tool_result"] == 1
    assert [e.n for e in events] == list(range(events[0].n, events[0].n + len(events)))  # numbered in order
    assert all(e.message_id == 1 for e in events if e.kind in ("assistant_text", "tool_use", "tool_result", "result"))
    texts = [msgpack.unpackb(e.packed)["text"] for e in events if e.kind == "assistant_text"]
    assert texts[0] == "Let me look. é ✓" and texts[1] == "00000 " + "x" * 200 and texts[-1] == "last"
    assert _digest(_reports(frames)) == REPORTS_SHA256


def test_lines_give_the_same_reports_a_chunk_or_a_line_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    keeper, sock, clock, run = _keeper_in_a_turn()
    for line in STDOUT.split(b"\n")[:-1]:
        keeper._claude_line(run, line)
    clock.advance(0)
    assert _read(monkeypatch, 64 * 1024) == sock.frames
    assert _reports(_read(monkeypatch, 1000)) == _reports(sock.frames)  # (lines cut across reads)


def test_once_the_pipe_is_drained_what_it_gave_goes_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """While Claude writes faster than the keeper reads, frames wait for the next reads
    (a frame for many reads, cheaper for the supervisor); the read that drains the pipe
    sends what is left without waiting for a timer: here the clock never moves, and the
    supervisor has had every report, the result last."""
    reports = _reports(_read(monkeypatch, 64 * 1024, advance=False))
    assert reports == _reports(_read(monkeypatch, 64 * 1024))
    assert [r.kind for r in reports if isinstance(r, _wire.KeeperEvent)][-2:] == ["result", "state"]


def test_a_bug_on_one_line_of_a_read_fails_the_session_clearly(monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A bug on one line of a read (here: the machine fails on one text) fails the session
    as a bug on a line read alone does (``Keeper._internal_error``): what the lines before
    it said reaches the supervisor, in order, then the error and the failed state; the
    log names the line."""
    handle = KeeperMachine._claude_events

    def buggy(machine: KeeperMachine, events: list[tuple[str, dict[str, Any]]]) -> None:
        if any(body.get("text", "").startswith("00007 ") for _, body in events):
            raise RuntimeError("a bug")
        handle(machine, events)  # type: ignore[arg-type]

    monkeypatch.setattr(KeeperMachine, "_claude_events", buggy)
    reports = _reports(_read(monkeypatch, 64 * 1024))
    events = [r for r in reports if isinstance(r, _wire.KeeperEvent)]
    texts = [msgpack.unpackb(e.packed)["text"][:5] for e in events if e.kind == "assistant_text"]
    assert texts == ["Let m", *(f"{i:05d}" for i in range(7))]
    error, *_, state = [e for e in events if e.kind in ("error", "state")]
    assert "Internal error in the session's keeper (RuntimeError: a bug)" in msgpack.unpackb(error.packed)["message"]
    assert msgpack.unpackb(state.packed)["reason"] == "internal-error"
    [said] = [r.getMessage() for r in caplog.records if "internal error" in r.getMessage()]
    assert "00007 xxx" in said and "(14 of 233 read at once)" in said  # (the 14th line of the first read)


#: lines of every sort a machine takes (each made by the real parser)
LINES = [_claude.parse_line(_dumps(obj)) for obj in (
    {"type": "system", "subtype": "init", "session_id": "s", "model": "claude-y", "permissionMode": "plan"},
    {"type": "system", "subtype": "status", "permissionMode": "default"},
    {"type": "stream_event", "event": {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "li"}}},
    {"type": "assistant", "message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}},
    {"type": "assistant", "message": {"content": [{"type": "tool_use", "id": "t1", "name": "Bash",
                                                   "input": {"command": "ls"}}]}},
    {"type": "user", "message": {"content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}},
    {"type": "user", "isReplay": True, "uuid": "u-2"},
    {"type": "control_request", "request_id": "r1", "request": {"subtype": "can_use_tool", "tool_name": "Bash",
                                                                "input": {"command": "rm x"}, "tool_use_id": "t1"}},
    {"type": "control_response", "response": {"subtype": "success", "request_id": "i1"}},
    {"type": "result", "subtype": "success", "is_error": False, "result": "done", "total_cost_usd": 0.1},
)]


def _machine_in_a_turn() -> tuple[KeeperMachine, int]:
    machine = KeeperMachine(_wire.KeeperSpec(session="s", instance="i", runtime_dir="/nonexistent",
                                             claude_bin="claude", cwd="/", session_id="sid", started=False,
                                             idle_timeout=600))
    run = next(a.run for a in machine.start() if isinstance(a, StartClaude))
    machine.claude_started(run, 100)
    for i in (1, 2, 3):
        machine.command(_wire.Deliver(_wire.QueuedMessage(i, f"message {i}")))
    return machine, run


@given(st.lists(st.sampled_from(range(len(LINES))), max_size=40))
@settings(max_examples=200, deadline=None)
def test_lines_given_together_do_what_they_do_one_at_a_time(picks: list[int]) -> None:
    """``claude_outputs`` of a read's lines is ``claude_output`` of each in turn: the same
    actions in the same order (events, reports, the next message's write, timers), and a
    line's own parse is left as it was (a line may be fed again)."""
    lines = [LINES[i] for i in picks]
    before = [repr(p) for p in lines]
    with mock.patch.object(_turns.uuid, "uuid4", itertools.count().__next__):  # (each machine's writes alike)
        one, run = _machine_in_a_turn()
        singly: list[Action] = []
        for parsed in lines:
            singly += one.claude_output(run, parsed)
    with mock.patch.object(_turns.uuid, "uuid4", itertools.count().__next__):
        together, run = _machine_in_a_turn()
        assert together.claude_outputs(run, iter(lines)) == singly
    assert [repr(p) for p in lines] == before


#: items a keeper's run should not hold (each tried as kind, message id and body)
_ODD_ITEMS = [0, None, True, 1.5, "text", b"", b"\x90", b"\xa1x", b"\x7f", b"\xc0"]
_run_event = st.tuples(st.sampled_from(["assistant_text", "tool_use"]), st.one_of(st.none(), st.integers(0, 3)),
                       st.sampled_from([b"\x80", b"\x81\xa1a\x01", b"\xde\x00\x00", b"\xdf\x00\x00\x00\x00"]))


@settings(max_examples=500, deadline=None)
@given(events=st.lists(_run_event, min_size=1, max_size=12),
       odd=st.lists(st.tuples(st.integers(0, 11), st.integers(0, 2), st.sampled_from(_ODD_ITEMS)), max_size=2),
       cut=st.integers(0, 3))
def test_a_run_from_a_keeper_is_refused_exactly_when_one_of_its_events_is_malformed(
        events: list[tuple[Any, Any, Any]], odd: list[tuple[int, int, Any]], cut: int) -> None:
    """The supervisor checks a keeper's run an item type at a time over the whole run;
    it refuses the run exactly when one event, checked on its own as before (a str kind,
    an int or no message id, a non-empty packed map as body), would be refused."""
    flat = [item for event in events for item in event]
    for at, field, item in odd:  # (an item of another type, or a body that is no map, somewhere)
        flat[at % len(events) * 3 + field] = item
    if not cut:
        flat.pop()
    kinds, message_ids, bodies = flat[0::3], flat[1::3], flat[2::3]
    well_formed = len(flat) % 3 == 0 and all(type(k) is str for k in kinds) \
        and all(m is None or type(m) is int for m in message_ids) \
        and all(type(b) is bytes and b and (0x80 <= b[0] <= 0x8F or b[0] in (0xDE, 0xDF)) for b in bodies)
    frame = msgpack.packb({"t": _wire.KeeperEvents.TAG, "n": 1, "e": flat}, use_bin_type=True)
    if well_formed:
        assert _wire.decode(frame) == _wire.KeeperEvents(events=flat, n=1)
    else:
        with pytest.raises(_wire.WireError):
            _wire.decode(frame)
