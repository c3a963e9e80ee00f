"""The subscription hub: what a subscriber gets when its pipe was full and has room again
(the control server says so through ``resume``; no new event is needed to go on)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack

from protocol import EventKind
from supervisord_claude._clock import FakeClock
from supervisord_claude._errors import ClientSlow
from supervisord_claude.supervisor._hub import SubscriptionHub
from supervisord_claude.supervisor._store import EventWrite, Store


def test_a_subscriber_whose_pipe_was_full_gets_the_rest_once_it_has_room(tmp_path: Path) -> None:
    """Its pipe fills after a few events; nothing new is published after that, yet once the
    pipe has room (the control server's resume) every stored event comes, once, in order."""
    store = Store(tmp_path / "s.sqlite3")
    store.create_session("alpha", "sid", str(tmp_path), None, None)
    got: list[dict[str, Any]] = []
    room = {"left": 5}

    def send(ident: bytes, frame: bytes) -> None:
        if room["left"] == 0:
            raise ClientSlow("full")
        room["left"] -= 1
        got.append(msgpack.unpackb(frame)["event"])

    for i in range(20):
        store.append_event("alpha", EventKind.ASSISTANT_TEXT, {"text": str(i)})
    hub = SubscriptionHub(store, send)
    hub.pump(hub.subscribe(b"reader", "alpha", 0, None, window=1000))
    assert [e["text"] for e in got] == [str(i) for i in range(5)]  # then the pipe was full
    room["left"] = 1_000
    hub.resume(b"reader")
    assert [e["text"] for e in got] == [str(i) for i in range(20)]


# --- live text coalesced (``live_every``) ---------------------------------------------------


def _two_sessions(tmp_path: Path) -> Store:
    store = Store(tmp_path / "s.sqlite3")
    for name in ("alpha", "beta"):
        store.create_session(name, f"sid-{name}", str(tmp_path), None, None)
    return store


def _frames_to(frames: list[tuple[bytes, dict[str, Any]]], ident: bytes) -> list[dict[str, Any]]:
    return [frame for to, frame in frames if to == ident and frame.get("type") != "keepalive"]


def _shown(frames: list[dict[str, Any]]) -> dict[str, str]:
    """What a client shows of each session's live text from these frames (offset, text)."""
    text: dict[str, str] = {}
    for frame in frames:
        for event in frame.get("events") or [frame.get("event")]:
            if event and event.get("kind") == "assistant_delta":
                text[event["session"]] = text.get(event["session"], "")[:event["offset"]] + event["text"]
    return text


def test_coalesced_live_text_brings_every_sessions_newest_text_in_one_frame_at_most_so_often(tmp_path: Path) -> None:
    """A session writing fast does not crowd out one writing slowly: each frame has both
    sessions' newest text; pieces in between go as one; a subscriber without the option
    gets a frame per piece, as before."""
    store = _two_sessions(tmp_path)
    clock = FakeClock()
    frames: list[tuple[bytes, dict[str, Any]]] = []
    hub = SubscriptionHub(store, lambda ident, frame: frames.append((ident, msgpack.unpackb(frame))), clock)
    sub = hub.subscribe(b"bot", None, 0, "bot", None, live=True, live_every_ms=100)
    hub.subscribe(b"old", None, 0, None, None, live=True)
    hub.delta("alpha", 1, "a0 ", "tg:1")  # the first after a pause: at once
    assert _frames_to(frames, b"bot") == [{"v": 1, "type": "lives", "sub": sub.sub_id,
                                           "events": [{"kind": "assistant_delta", "session": "alpha",
                                                       "message_id": 1, "offset": 0, "text": "a0 ",
                                                       "origin": "tg:1"}]}]
    for i in range(1, 50):
        hub.delta("alpha", 1, f"a{i} ", "tg:1")
    hub.delta("beta", 2, "b0 ", "tg:2")
    assert len(_frames_to(frames, b"bot")) == 1  # (within 0.1 s of the last frame: held)
    clock.advance(0.1)
    bot = _frames_to(frames, b"bot")
    assert len(bot) == 2 and [e["session"] for e in bot[1]["events"]] == ["alpha", "beta"]
    assert bot[1]["events"][0]["offset"] == 3  # (what the first frame had is not sent again)
    assert _shown(bot) == {"alpha": "".join(f"a{i} " for i in range(50)), "beta": "b0 "}
    old = _frames_to(frames, b"old")
    assert [f["type"] for f in old] == ["live"] * 51  # unchanged: a frame per piece
    assert _shown(old) == _shown(bot)
    clock.advance(1.0)
    assert len(_frames_to(frames, b"bot")) == 2  # nothing new: no frame


def test_coalesced_live_text_a_full_pipe_keeps_it_due_until_it_has_room(tmp_path: Path) -> None:
    store = _two_sessions(tmp_path)
    clock = FakeClock()
    got: list[dict[str, Any]] = []
    full = {"now": True}

    def send(ident: bytes, frame: bytes) -> None:
        if full["now"]:
            raise ClientSlow("full")
        got.append(msgpack.unpackb(frame))

    hub = SubscriptionHub(store, send, clock)
    hub.subscribe(b"bot", None, 0, None, None, live=True, live_every_ms=100)
    hub.delta("alpha", 1, "one ", None)
    hub.delta("beta", 2, "two ", None)
    clock.advance(1.0)
    assert got == []
    full["now"] = False
    hub.resume(b"bot")
    assert _shown(got) == {"alpha": "one ", "beta": "two "} and len(got) == 1


def test_coalesced_live_text_comes_after_the_stored_events_before_it_and_not_after_the_one_ending_it(
        tmp_path: Path) -> None:
    """Live text is sent only to a subscriber that has every stored event; text that a
    stored ``assistant_text`` completed is not sent live after it."""
    store = _two_sessions(tmp_path)
    clock = FakeClock()
    got: list[dict[str, Any]] = []
    hub = SubscriptionHub(store, lambda ident, frame: got.append(msgpack.unpackb(frame)), clock)
    sub = hub.subscribe(b"bot", None, 0, None, 1, live=True, live_every_ms=100, batch=True)
    hub.publish(store.append_runs([EventWrite("beta", EventKind.USER, {"text": "hi"}, message_id=2),
                                   EventWrite("beta", EventKind.STATE, {"state": "busy"}, message_id=2)]))
    assert [f["type"] for f in got] == ["events"]  # the window (1) is full: not acked yet
    hub.delta("alpha", 1, "alpha's ", None)
    hub.delta("beta", 2, "beta's ", None)
    clock.advance(1.0)
    assert [f["type"] for f in got] == ["events"]  # (the second stored event is not sent yet)
    hub.ack(b"bot", sub.sub_id, got[0]["events"][0]["id"])
    assert [f["type"] for f in got] == ["events", "events", "lives"]
    assert _shown(got) == {"alpha": "alpha's ", "beta": "beta's "}
    hub.delta("alpha", 1, "more", None)
    hub.publish(store.append_runs([EventWrite("alpha", EventKind.ASSISTANT_TEXT, {"text": "alpha's more"},
                                              message_id=1)]))
    hub.ack(b"bot", sub.sub_id, got[1]["events"][-1]["id"])  # the window has room: the text goes
    clock.advance(1.0)
    assert [f["type"] for f in got] == ["events", "events", "lives", "events"]
    assert got[-1]["events"][0]["kind"] == "assistant_text"  # ("more" is in it, not sent live after it)


def test_coalesced_live_text_too_big_for_one_frame_goes_in_several(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    names = [f"s{i}" for i in range(4)]
    for name in names:
        store.create_session(name, f"sid-{name}", str(tmp_path), None, None)
    got: list[dict[str, Any]] = []
    hub = SubscriptionHub(store, lambda ident, frame: got.append(msgpack.unpackb(frame)), FakeClock())
    hub.subscribe(b"bot", None, 0, None, None, live=True, live_every_ms=100)
    hub.delta("s0", 1, "warm", None)  # (the first goes at once; the rest wait for the next frame)
    for i, name in enumerate(names):
        hub.delta(name, i + 1, "x" * 100_000, None)
    assert isinstance(hub.clock, FakeClock)
    hub.clock.advance(0.1)
    assert len(got) > 2 and all(len(msgpack.packb(f)) < 1024 * 1024 for f in got)
    assert _shown(got) == {name: ("warm" if name == "s0" else "") + "x" * 100_000 for name in names}


def test_a_turns_next_piece_of_text_after_a_tool_is_sent_live_from_its_start(tmp_path: Path) -> None:
    """Claude writes, runs a tool, writes again — one turn, one message id. The second
    piece of text was sent from the first one's length on (its beginning lost: a draft
    showed "in line 3, fixed now." without "Done. The file has a bug"); now from its start,
    to a subscriber with coalesced live text and to one without alike."""
    store = _two_sessions(tmp_path)
    clock = FakeClock()
    frames: list[tuple[bytes, dict[str, Any]]] = []
    hub = SubscriptionHub(store, lambda ident, frame: frames.append((ident, msgpack.unpackb(frame))), clock)
    hub.subscribe(b"bot", "alpha", 0, None, None, live=True, live_every_ms=100)
    hub.subscribe(b"old", "alpha", 0, None, None, live=True)
    hub.delta("alpha", 1, "Let me look at the file.", None)
    hub.publish(store.append_runs([EventWrite("alpha", EventKind.ASSISTANT_TEXT, {"text": "Let me look at the file."},
                                              message_id=1)]))
    clock.advance(1.0)
    for piece in ("Done.", " The file has a bug", " in line 3, fixed now."):
        hub.delta("alpha", 1, piece, None)
    clock.advance(1.0)
    for ident in (b"bot", b"old"):
        after_text = [f for f in _frames_to(frames, ident)][2:]  # (the first piece, its stored text)
        assert _shown(after_text) == {"alpha": "Done. The file has a bug in line 3, fixed now."}, ident
