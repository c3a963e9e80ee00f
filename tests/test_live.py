"""Live answers: the text as Claude writes it reaches live subscribers, is never stored
piece by piece, and a subscriber that comes in the middle of a turn gets the text so far."""

from __future__ import annotations

from typing import Any

import pytest

from protocol import MAX_LIVE_EVERY_MS, RemoteError

from .conftest import SupervisorProcess


def read_turn(sup: SupervisorProcess, sub_args: dict[str, Any], until_text: str) -> list[dict[str, Any]]:
    """Frames (stored and live) of one subscription until the assistant_text with ``until_text``."""
    frames = []
    with sup.client() as c:
        sub = c.request("subscribe", **sub_args)["sub"]
        while True:
            frame = c.next_event(timeout=60)
            assert frame is not None, f"no assistant_text with {until_text!r}; saw {[f['event']['kind'] for f in frames]}"
            frames.append(frame)
            event = frame["event"]
            if "id" in event:
                c.request("ack", sub=sub, upto=event["id"])
            if event["kind"] == "assistant_text" and until_text in event["text"]:
                return frames


def test_a_live_subscriber_sees_the_answer_as_it_is_written_then_the_stored_text(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    with supervisor.client() as c:
        c.request("send", session="alpha", text="stream:1 tell me a story", origin="tg:5")
    frames = read_turn(supervisor, {"session": "alpha", "after": 0, "live": True}, "tell me a story")
    live = [f["event"] for f in frames if f["type"] == "live"]
    final = frames[-1]["event"]
    assert len(live) >= 3  # in pieces, before the complete text
    assert all(e["kind"] == "assistant_delta" and e["message_id"] == final["message_id"] for e in live)
    assert all(e["origin"] == "tg:5" for e in live)
    text = ""
    for e in live:
        assert e["offset"] == len(text)  # each piece continues the last
        text += e["text"]
    assert text == final["text"]
    # nothing of it was stored piece by piece
    kinds = [e["kind"] for e in supervisor.events("alpha")]
    assert "assistant_delta" not in kinds and kinds.count("assistant_text") == 1


def test_a_subscriber_that_does_not_ask_for_live_text_gets_none(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    with supervisor.client() as c:
        c.request("send", session="alpha", text="stream:0.5 quietly")
    frames = read_turn(supervisor, {"session": "alpha", "after": 0}, "quietly")
    assert [f for f in frames if f["type"] == "live"] == []


def test_a_subscriber_coming_in_mid_answer_gets_the_text_so_far_then_the_rest(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    with supervisor.follow("alpha") as events, supervisor.client() as c:
        c.request("send", session="alpha", text="stream:4 a long story to tell slowly")
        with supervisor.client() as early:
            early.request("subscribe", session="alpha", after=0, live=True)
            while True:  # wait until some of the answer has been written
                frame = early.next_event(timeout=60)
                assert frame is not None
                if frame["type"] == "live":
                    break
        frames = read_turn(supervisor, {"session": "alpha", "after": 0, "live": True}, "long story")
        final = events.wait_event(lambda e: e["kind"] == "assistant_text")
    live = [f["event"] for f in frames if f["type"] == "live"]
    assert live and live[0]["offset"] == 0 and len(live[0]["text"]) >= 12  # the text so far, at once
    assert "".join(e["text"] for e in live) == final["text"]
    stored = [f for f in frames if f["type"] == "event"]
    first_live = frames.index(next(f for f in frames if f["type"] == "live"))
    assert all(frames.index(f) < first_live for f in stored if f["event"]["kind"] == "user")  # after the stored


def test_claudectl_streams_the_answer_as_it_is_written(supervisor: SupervisorProcess) -> None:
    supervisor.ctl("new", "alpha", check=True)
    out = supervisor.ctl("send", "alpha", "stream:1 hello there", "--wait", "--stream", check=True).stdout
    assert out.startswith("echo: stream:1 hello there") and out.count("echo:") == 1


def test_live_text_asked_for_coalesced_brings_every_sessions_text_together_and_a_plain_subscriber_as_before(
        supervisor: SupervisorProcess) -> None:
    """Two sessions write at once: a subscriber with ``live_every`` gets ``lives`` frames,
    each with the newest text of every session that wrote (a frame with both of them),
    each piece continuing what it had; one without gets a ``live`` frame per piece."""
    for name in ("alpha", "beta"):
        supervisor.ctl("new", name, check=True)
    with supervisor.client() as coalesced, supervisor.client() as plain:
        with pytest.raises(RemoteError, match="live_every"):
            coalesced.request("subscribe", live_every=100)  # (without live)
        with pytest.raises(RemoteError, match="live_every"):
            coalesced.request("subscribe", live=True, live_every=MAX_LIVE_EVERY_MS + 1)
        sub = coalesced.request("subscribe", live=True, live_every=400)["sub"]
        plain_sub = plain.request("subscribe", live=True)["sub"]
        for name in ("alpha", "beta"):
            coalesced.request("send", session=name, text=f"stream:3 {name} writes this answer " + "word " * 40)
        finals: dict[str, str] = {}
        shown: dict[str, str] = {}
        lives: list[dict[str, Any]] = []
        while len(finals) < 2:
            frame = coalesced.next_event(timeout=60)
            assert frame is not None, f"no answers; saw {finals}"
            assert frame["type"] in ("event", "lives") and frame["sub"] == sub
            if frame["type"] == "lives":
                lives.append(frame)
                for event in frame["events"]:
                    session = event["session"]
                    assert event["offset"] == len(shown.get(session, ""))  # it continues what it had
                    shown[session] = shown.get(session, "") + event["text"]
            else:
                event = frame["event"]
                coalesced.request("ack", sub=sub, upto=event["id"])
                if event["kind"] == "assistant_text":
                    finals[event["session"]] = event["text"]
        assert any({e["session"] for e in frame["events"]} == {"alpha", "beta"} for frame in lives)
        for name in ("alpha", "beta"):
            assert shown[name] and finals[name].startswith(shown[name])
        frames = []
        while (frame := plain.next_event(timeout=1)) is not None:
            frames.append(frame)
        assert frames and all(f["sub"] == plain_sub for f in frames)
        assert {f["type"] for f in frames} <= {"event", "live"} and any(f["type"] == "live" for f in frames)
        assert all(f["event"]["kind"] == "assistant_delta" for f in frames if f["type"] == "live")
