"""The wire protocol: codec, validation, and a live supervisor fed bad input."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import (
    MAX_FRAME_BYTES,
    AsyncClient,
    ConnectionFailed,
    ErrorCode,
    FrameError,
    Op,
    RemoteError,
    ValidationError,
    decode,
    encode,
    validate_request,
)

from .conftest import SupervisorProcess

# --- codec and validation, no server ---------------------------------------------------


def test_encode_adds_the_version_and_round_trips() -> None:
    assert decode(encode({"id": 1, "op": "hello"})) == {"v": 1, "id": 1, "op": "hello"}


@pytest.mark.parametrize(
    "frame, code",
    [
        (b"\xc1garbage", ErrorCode.BAD_FRAME),
        (msgpack.packb([1, 2, 3]), ErrorCode.BAD_FRAME),
        (msgpack.packb({1: "int key"}), ErrorCode.BAD_FRAME),
        (b"\x00" * (MAX_FRAME_BYTES + 1), ErrorCode.TOO_LARGE),
    ],
)
def test_undecodable_frames_are_rejected_with_a_code(frame: bytes, code: ErrorCode) -> None:
    with pytest.raises(FrameError) as err:
        decode(frame)
    assert err.value.code is code


@pytest.mark.parametrize(
    "frame, code, fragment",
    [
        ({"v": 2, "id": 1, "op": "hello"}, ErrorCode.BAD_VERSION, "unsupported protocol version"),
        ({"v": 1, "id": 1, "op": "explode"}, ErrorCode.UNKNOWN_OP, "unknown op 'explode'"),
        ({"v": 1, "id": 1.5, "op": "hello"}, ErrorCode.BAD_REQUEST, "'id'"),
        ({"v": 1, "id": 1, "op": "send", "session": "a"}, ErrorCode.BAD_REQUEST, "needs the field 'text'"),
        ({"v": 1, "id": 1, "op": "send", "session": "a", "text": 5}, ErrorCode.BAD_REQUEST, "'text' must be a string"),
        ({"v": 1, "id": 1, "op": "create", "session": "../etc"}, ErrorCode.BAD_NAME, "invalid session name"),
        ({"v": 1, "id": 1, "op": "create", "session": "a" * 65}, ErrorCode.BAD_NAME, "invalid session name"),
        ({"v": 1, "id": 1, "op": "create", "session": "-x"}, ErrorCode.BAD_NAME, "invalid session name"),
        ({"v": 1, "id": 1, "op": "set_timeout", "session": "a", "minutes": 0}, ErrorCode.BAD_REQUEST, "between 1 and 120"),
        ({"v": 1, "id": 1, "op": "set_timeout", "session": "a", "minutes": True}, ErrorCode.BAD_REQUEST, "minutes"),
        ({"v": 1, "id": 1, "op": "send", "session": "a", "text": "x", "attachments": ["rel/path"]}, ErrorCode.BAD_REQUEST, "absolute path"),
        ({"v": 1, "id": 1, "op": "hello", "surprise": 1}, ErrorCode.BAD_REQUEST, "unknown field(s) for 'hello': surprise"),
        ({"v": 1, "id": 1, "op": "send", "session": "a", "text": "x" * 200_001}, ErrorCode.TOO_LARGE, "limit"),
    ],
)
def test_invalid_requests_get_clear_errors(frame: dict, code: ErrorCode, fragment: str) -> None:
    with pytest.raises(ValidationError) as err:
        validate_request(frame)
    assert err.value.code is code and fragment in err.value.message


def test_valid_request_keeps_only_known_fields() -> None:
    req = validate_request({"v": 1, "id": "r1", "op": "create", "session": "my_session-2", "model": "m"})
    assert req.op is Op.CREATE and req.args == {"session": "my_session-2", "model": "m"}


@given(st.binary(max_size=2048))
@settings(max_examples=300, deadline=None)
def test_decoder_never_raises_anything_but_frame_error(data: bytes) -> None:
    try:
        decode(data)
    except FrameError:
        pass


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@given(
    st.fixed_dictionaries(
        {"v": st.sampled_from([1, 1, 2, "1"]), "id": st.one_of(st.integers(), st.text(max_size=5), st.none())},
        optional={"op": st.sampled_from([o.value for o in Op] + ["nope", ""]),
                  "session": json_like, "text": json_like, "minutes": json_like,
                  "attachments": json_like, "after": json_like, "sub": json_like},
    )
)
@settings(max_examples=400, deadline=None)
def test_validation_either_accepts_or_raises_validation_error(frame: dict) -> None:
    try:
        validate_request(frame)
    except ValidationError as exc:
        assert exc.message


# --- a live supervisor fed bad input ------------------------------------------------------


def raw_exchange(sup: SupervisorProcess, frames: list[bytes], timeout: float = 5) -> dict:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{sup.runtime_dir / 'control.sock'}")
    try:
        sock.send_multipart(frames)
        assert sock.poll(int(timeout * 1000)), "no reply"
        return msgpack.unpackb(sock.recv(), raw=False)
    finally:
        sock.close()
        ctx.term()


@pytest.mark.parametrize(
    "frames, code",
    [
        ([b"not msgpack \xc1"], "bad_frame"),
        ([msgpack.packb("a string")], "bad_frame"),
        ([msgpack.packb({"v": 1, "id": 7, "op": "fly"})], "unknown_op"),
        ([msgpack.packb({"v": 1, "id": 7, "op": "send", "session": "no/slash", "text": "x"})], "bad_name"),
        ([msgpack.packb({"v": 1, "id": 7, "op": "send", "session": "ghost", "text": "x"})], "not_found"),
        ([b"one", b"two"], "bad_frame"),
        ([b"\x00" * (MAX_FRAME_BYTES + 10)], "too_large"),
    ],
)
def test_bad_input_gets_an_error_reply_and_the_daemon_keeps_serving(
    supervisor: SupervisorProcess, frames: list[bytes], code: str
) -> None:
    reply = raw_exchange(supervisor, frames)
    assert reply["ok"] is False and reply["error"]["code"] == code and reply["error"]["message"]
    if code in ("unknown_op", "bad_name", "not_found"):
        assert reply["id"] == 7  # the request id is echoed when it could be read
    assert supervisor.request("hello")["protocol"] == 1


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=3))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzzed_frames_never_take_the_supervisor_down(supervisor: SupervisorProcess, frames: list[bytes]) -> None:
    reply = raw_exchange(supervisor, frames)
    assert reply["type"] == "reply"
    assert supervisor.proc.poll() is None


def test_frames_over_the_hard_limit_drop_only_that_connection(supervisor: SupervisorProcess) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{supervisor.runtime_dir / 'control.sock'}")
    sock.send(b"\x00" * (9 * MAX_FRAME_BYTES))
    assert not sock.poll(500)  # no reply is possible: libzmq dropped the peer
    sock.close()
    ctx.term()
    assert supervisor.request("hello")["server"] == "supervisord-claude"


# --- subscriptions: durable, ordered, exactly once --------------------------------------


async def collect(sub, n: int, timeout: float = 10) -> list[dict]:
    out = []
    while len(out) < n:
        event = await sub.next(timeout=timeout)
        assert event is not None, f"only {len(out)} of {n} events arrived"
        out.append(event)
    return out


def test_subscriber_gets_history_then_live_events_in_order_exactly_once(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    supervisor.ctl("send", "alpha", "one", "--wait", check=True)

    async def scenario() -> list[dict]:
        async with AsyncClient(supervisor.runtime_dir) as client:
            sub = await client.subscribe("alpha", after=0)
            before = supervisor.session("alpha")["last_seq"]
            first = await collect(sub, before)
            await client.request("send", session="alpha", text="two")
            later = []
            while not any(e["kind"] == "state" and e["state"] == "idle" for e in later):
                later += await collect(sub, 1)
            return first + later

    events = asyncio.run(scenario())
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))


def test_named_consumer_resumes_after_its_acked_cursor(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    supervisor.ctl("send", "alpha", "one", "--wait", check=True)

    async def first_run() -> int:
        async with AsyncClient(supervisor.runtime_dir) as client:
            sub = await client.subscribe(consumer="bot", after=0)
            events = await collect(sub, 3)
            await sub.ack(events[2]["id"])  # handled three; the rest is still owed
            await collect(sub, 2)  # seen but never acked: delivered again next time
            return events[2]["id"]

    acked = asyncio.run(first_run())

    async def second_run() -> dict:
        async with AsyncClient(supervisor.runtime_dir) as client:
            sub = await client.subscribe(consumer="bot")
            return (await collect(sub, 1))[0]

    assert asyncio.run(second_run())["id"] == acked + 1


def test_window_limits_unacked_events(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    supervisor.ctl("send", "alpha", "one", "--wait", check=True)

    async def scenario() -> tuple[int, int]:
        async with AsyncClient(supervisor.runtime_dir) as client:
            sub = await client.subscribe("alpha", after=0, window=2)
            got = await collect(sub, 2)
            stalled = await sub.next(timeout=0.5, keepalive=10)
            await sub.ack(got[-1]["id"])
            more = await collect(sub, 1)
            return (stalled is None, more[0]["seq"])

    stalled, next_seq = asyncio.run(scenario())
    assert stalled and next_seq == 3


def test_subscription_survives_a_supervisor_restart(make_supervisor) -> None:
    sup = make_supervisor().start()
    sup.ctl("new", "alpha", check=True)

    async def scenario() -> list[str]:
        async with AsyncClient(sup.runtime_dir, timeout=2) as client:
            sub = await client.subscribe(consumer="watcher", after=0)
            texts = []
            await collect(sub, 1)
            await asyncio.to_thread(sup.stop)
            await asyncio.to_thread(sup.start)
            await asyncio.to_thread(sup.ctl, "send", "alpha", "after restart", "--wait")
            while not texts:
                event = await sub.next(timeout=20, keepalive=0.5)
                assert event is not None
                if event["kind"] == "assistant_text":
                    texts.append(event["text"])
            return texts

    assert asyncio.run(scenario())[0].startswith("echo: after restart")


def test_acks_of_someone_elses_subscription_are_refused(supervisor: SupervisorProcess) -> None:
    with supervisor.client() as a, supervisor.client() as b:
        sub = a.request("subscribe")["sub"]
        with pytest.raises(RemoteError) as err:
            b.request("ack", sub=sub, upto=1)
        assert err.value.code == "no_subscription"


def test_kv_round_trip(supervisor: SupervisorProcess) -> None:
    supervisor.request("kv_set", key="bot.chat.1", value={"active": "alpha"})
    assert supervisor.request("kv_get", key="bot.chat.1")["value"] == {"active": "alpha"}
    assert supervisor.request("kv_get", key="missing")["value"] is None


def test_events_of_a_turn_carry_the_message_id_and_origin(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    with supervisor.client() as c:
        sent = c.request("send", session="alpha", text="tool run", origin="tg:42")
        again = c.request("send", session="alpha", text="tool run", origin="tg:42", idempotency_key="k1")
        dup = c.request("send", session="alpha", text="tool run", origin="tg:42", idempotency_key="k1")
    assert again["duplicate"] is False and dup["duplicate"] is True and dup["message_id"] == again["message_id"]
    events = supervisor.wait_event("alpha", lambda e: e["kind"] == "result" and e["message_id"] == again["message_id"])
    assert events["origin"] == "tg:42"
    turn = [e for e in supervisor.events("alpha") if e.get("message_id") == sent["message_id"]]
    assert {e["kind"] for e in turn} >= {"user", "tool_use", "tool_result", "assistant_text", "result"}
    assert all(e["origin"] == "tg:42" for e in turn)
    users = [e for e in supervisor.events("alpha") if e["kind"] == "user"]
    assert len(users) == 2  # the duplicate was not sent to Claude


def _raw_subscriber(supervisor: SupervisorProcess, ctx: zmq.Context, **args) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"ipc://{supervisor.runtime_dir / 'control.sock'}")
    sock.send(msgpack.packb({"v": 1, "id": 1, "op": "subscribe", "session": "alpha", "after": 0,
                             "window": 4096, **args}))
    return sock


def _read_turn(sock: zmq.Socket) -> tuple[list[dict], list[int]]:
    """Every event a raw subscriber gets until the turn has ended (its result, then idle),
    and how many came per frame."""
    events: list[dict] = []
    per_frame: list[int] = []

    def ended() -> bool:
        kinds = [(e["kind"], e.get("state")) for e in events]
        return ("result", None) in kinds and kinds[-1] == ("state", "idle")

    while not ended():
        assert sock.poll(60_000), f"no frame; last events: {events[-3:]}"
        frame = msgpack.unpackb(sock.recv())
        if frame.get("type") == "event":
            events.append(frame["event"])
            per_frame.append(1)
        elif frame.get("type") == "events":
            events += frame["events"]
            per_frame.append(len(frame["events"]))
    return events, per_frame


@settings(max_examples=200, deadline=None)
@given(sub_id=st.integers(0, 2**64 - 1), events=st.lists(st.dictionaries(st.text(max_size=4), st.integers(0, 9),
                                                                         max_size=3), max_size=40),
       cuts=st.lists(st.integers(0, 40), max_size=4))
def test_an_events_frame_from_parts_is_the_frame_of_the_events_joined(sub_id, events, cuts) -> None:
    """The supervisor builds an ``events`` frame from views of its stored runs in one
    join (``encode_events_parts``): the same bytes as joining them first and adding the
    header (how frames were built before), and what a client decodes."""
    from protocol._codec import encode_events_joined, encode_events_parts
    from protocol._packedmap import with_packed_value

    packed = [msgpack.packb(e) for e in events]
    joined = b"".join(packed)
    bounds = sorted({0, len(joined), *(c * len(joined) // 40 for c in cuts)})
    parts = [memoryview(joined)[a:b] for a, b in itertools.pairwise(bounds)]
    before = with_packed_value(msgpack.packb({"v": 1, "type": "events", "sub": sub_id}), "events",
                               msgpack.Packer().pack_array_header(len(events)) + joined)
    frame = encode_events_parts(sub_id, len(events), parts)
    assert frame == before == encode_events_joined(sub_id, len(events), joined)
    assert decode(frame) == {"v": 1, "type": "events", "sub": sub_id, "events": events}


_ids_of_a_frame = st.lists(st.one_of(st.integers(0, 30), st.none(), st.just("x")), max_size=12)


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(st.tuples(_ids_of_a_frame, st.booleans(), st.booleans()), max_size=8),
       start=st.one_of(st.none(), st.integers(0, 10)))
def test_a_frame_of_events_is_taken_as_each_of_its_events_alone(frames, start) -> None:
    """``AsyncClient`` takes an ``events`` frame whole when it can (``_accept_all``);
    what a subscription then holds, its last id and seq, are what taking each of the
    frame's events alone gives, for any ids (repeated, out of order, missing, not ints),
    seqs (missing on the last) and items that are not maps."""

    def taker() -> Any:
        client = AsyncClient("/nonexistent")
        sub = client.subscription_class(client, {} if start is None else {"after": start})
        sub.sub_id = 7
        client._subs[7] = sub
        return client, sub

    whole, by_frame = taker()
    alone, by_event = taker()
    for ids, last_has_seq, with_a_non_map in frames:
        events: list[Any] = [{"kind": "k", "n": i, **({} if event_id is None else {"id": event_id}),
                              **({"seq": i} if last_has_seq or i < len(ids) - 1 else {})}
                             for i, event_id in enumerate(ids)]
        if with_a_non_map:
            events.insert(len(events) // 2, 5)
        whole._take(encode({"type": "events", "sub": 7, "events": events}))
        for event in events:
            alone._take(encode({"type": "event", "sub": 7, "event": event}))
    assert list(by_frame._events) == list(by_event._events)
    assert (by_frame.last_id, by_frame.last_seq) == (by_event.last_id, by_event.last_seq)


def test_a_batch_subscriber_gets_the_same_events_several_to_a_frame(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    ctx = zmq.Context()
    try:
        batched = _raw_subscriber(supervisor, ctx, batch=True)
        single = _raw_subscriber(supervisor, ctx)
        for sock in (batched, single):  # both subscribed before the burst
            assert sock.poll(10_000) and msgpack.unpackb(sock.recv())["ok"]
        supervisor.ctl("send", "alpha", "burst:2000", check=True)
        got_batched, frames_batched = _read_turn(batched)
        got_single, frames_single = _read_turn(single)
    finally:
        ctx.destroy(0)
    assert got_batched == got_single  # the same events, in the same order
    texts = [e["text"] for e in got_batched if e["kind"] == "assistant_text"]
    assert texts[:2000] == [f"b{i}" for i in range(2000)]
    assert [e["seq"] for e in got_batched] == list(range(1, len(got_batched) + 1))
    assert set(frames_single) == {1}
    assert len(frames_batched) < len(got_batched) / 10  # a burst goes many to a frame


def test_a_request_while_the_supervisor_is_away_is_refused_at_once_and_works_when_it_is_back(
        make_supervisor) -> None:
    sup = make_supervisor().start()

    async def until(predicate: Any, what: str) -> None:
        for _ in range(600):  # up to 60 s
            if predicate():
                return
            await asyncio.sleep(0.1)
        pytest.fail(f"timed out waiting for {what}")

    async def scenario() -> str:
        # a long timeout: a request that waited for a reply would fail the test's own
        # timeout, not come back "not sent"
        async with AsyncClient(sup.runtime_dir, timeout=600) as client:
            await client.request("hello")
            assert client.reachable is True
            await asyncio.to_thread(sup.stop)
            await until(lambda: client.reachable is False, "the client to see the supervisor go")
            with pytest.raises(ConnectionFailed, match="not running; 'hello' was not sent"):
                await client.request("hello")
            await asyncio.to_thread(sup.start)
            await until(lambda: client.reachable, "the client to reconnect by itself")
            return (await client.request("hello"))["instance"]

    assert asyncio.run(scenario()) == sup.instance


def test_the_subscribe_send_match_ack_recipe_in_protocol_md_works_as_written(supervisor) -> None:  # type: ignore[no-untyped-def]
    """docs/protocol.md's recipe, run as printed, against a real supervisor; with a window
    of 256 and more events than that before the answer, so a missing ack would stall it."""
    import subprocess
    import sys
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
    code = doc.split("## Recipe: send a message", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    supervisor.ctl("new", "work", check=True)
    code = code.replace('text="hello"', 'text="burst:300 hello"')  # 300 events of its own first
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**supervisor.env, "SUPERVISORD_CLAUDE_RUNTIME_DIR": str(supervisor.runtime_dir)})
    assert done.returncode == 0, done.stderr
    assert "echo: burst:300 hello" in done.stdout
