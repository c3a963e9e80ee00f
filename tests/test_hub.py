"""The subscription hub: what a subscriber gets when its pipe was full and has room again
(the control server says so through ``resume``; no new event is needed to go on)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgpack

from protocol import EventKind
from supervisord_claude._errors import ClientSlow
from supervisord_claude.supervisor._hub import SubscriptionHub
from supervisord_claude.supervisor._store import Store


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
