"""The daemon's internal wire: every message between the supervisor, the fork server and
the keepers, typed, with one ``encode`` and one ``decode``.

Not part of the public protocol (``protocol/``): these messages cross only processes of
one supervisor instance. Each is one msgpack map whose ``t`` field names its type.

    supervisor -> fork server   Spawn{token, spec: KeeperSpec}
    fork server -> supervisor   Spawned{token, pid} | SpawnFailed{token, error}
                                | Exited{pid, status}
    keeper -> supervisor        Hello{pid, version, session, claude_pid, state, current,
                                      queued, started, pending, steered, last_n}
                                | ClaudeStarted{pid} | ConversationStarted{session_id}
                                | KeeperEvents{n, e: [kind, m, b, ...]} (a run of events)
                                | KeeperEvent{kind, m, b} (one event: wire 6 and before)
                                | Rejected{ids} | Bye{state, reason}
                                | Delta{message_id, text}  (live text, not numbered)
                                | InterruptReport{confirmed, detail, next}  (not numbered)
    supervisor -> keeper        Welcome{resend_from} | Ack{upto}
                                | Deliver{message} | Interrupt{} | Suspend{reason} | DropQueued{}
                                | Stop{reason} | SetTimeout{seconds} | SetModel{model}
                                | SetMode{mode} | SetRules{rules} | SetBudget{usd}
                                | Permit{request_id, decision, report, rules, mode}

Everything a keeper sends after its Hello is numbered (``n``, from 1) and kept by the
keeper until the supervisor acks it (``Ack{upto}``, once stored). A run of events
(``KeeperEvents``: the events a keeper reported in one loop turn, as one message) takes
one number per event, its ``n`` the first's, so acks and resends count events whatever
message carried them. A keeper says Hello on
every connection — the first, and each one to a new supervisor after the old one died;
``Welcome{resend_from}`` names the first number that supervisor has not stored, and the
keeper sends everything from there, in order. So no event is lost or stored twice
across a supervisor crash or restart. The Hello's ``last_n`` (the number of its last
report then) tells the new supervisor when it has them all: until they are stored, what
the keeper did with the messages it was given is not known (``KeeperHandle.resend_until``).

An upgrade is such a restart: the keepers that run on were forked by the previous
release and speak its wire. A supervisor adopts the keepers of every version in
``ADOPTABLE_WIRE_VERSIONS`` and reads their messages in this release's shapes (what an
older wire sends differently is translated on decode, below); the commands it sends are
the ones every adoptable version knows. Bumping ``WIRE_VERSION`` means keeping the
previous version adoptable, with its translation: ``tests/test_upgrade.py`` runs the
keepers of the releases CHANGELOG.md marks under this supervisor.

Split by what each part owns: the message types (``_wiremessages``), how they become
frames and back (``_wirecodec``); this module holds what the supervisor and its keepers
agree on (socket, versions, grace times) and names every part, so each side imports
``_wire`` alone.
"""

from __future__ import annotations

from pathlib import Path

from ._wirecodec import (
    WireError,
    decode,
    decode_all,
    encode,
    encode_event,
    encode_flat_run,
    encode_run,
    run_item,
    run_item_packed,
    spec_from,
)
from ._wiremessages import (
    EVENT_FIELDS,
    RUN_BYTES,
    RUN_EVENTS,
    Ack,
    Bye,
    ClaudeStarted,
    ConversationStarted,
    Deliver,
    Delta,
    DropQueued,
    Exited,
    Hello,
    Interrupt,
    InterruptReport,
    KeeperEvent,
    KeeperEvents,
    KeeperSpec,
    Message,
    Numbered,
    Permit,
    QueuedMessage,
    Rejected,
    SetBudget,
    SetMode,
    SetModel,
    SetRules,
    SetTimeout,
    Spawn,
    Spawned,
    SpawnFailed,
    Stop,
    Suspend,
    Welcome,
    pack_body,
)

KEEPER_SOCKET = "keepers.sock"
#: bumped when a message changes shape (keepers say it in their Hello)
WIRE_VERSION = 9
#: the versions of the keepers a supervisor takes over at a restart: its own, and the
#: releases it upgrades from — 3: 0.2.0 (events carried their body as a map, a
#: tool_use its call's id as ``id``); 4: main after 0.2.0 (see CHANGELOG.md); 5: 0.3.0
#: (an Interrupt is answered with an InterruptReport); 6: a message may steer the running
#: turn (``QueuedMessage.steer``; Hello says the ones written and not taken); 7: a keeper
#: sends its events as runs (``KeeperEvents``; a keeper of 6 and before sends one
#: ``KeeperEvent`` a message, which the supervisor still reads); 8: its Hello says the
#: number of its last report (``last_n``: a keeper of 7 and before does not, and its
#: messages are requeued without waiting for its reports to come again); 9: a keeper
#: ignores a message handed to it again (``REPEATS_IGNORED_SINCE``), and a stopped one
#: gives back in ``Rejected`` the messages steered that Claude never took (a keeper of 8
#: and before failed them; same shapes). A keeper of another version is reaped at
#: start-up, and its turn reported not delivered.
ADOPTABLE_WIRE_VERSIONS = frozenset({3, 4, 5, 6, 7, 8, WIRE_VERSION})
#: keepers of an older wire never answer an Interrupt: the supervisor does not wait for it
INTERRUPT_REPORTS_SINCE = 5
#: keepers of an older wire ignore ``steer``: every message waits for its own turn there
STEERING_SINCE = 6
#: keepers of an older wire take a message handed to them again as a new one: what may
#: have reached one already is not handed to it again (see ``KeeperPool._reconnected``)
REPEATS_IGNORED_SINCE = 9
#: SIGTERM to Claude's process group, this long, then SIGKILL (the keeper does it; the
#: supervisor waits this long, plus its own margin, for a keeper to go)
STOP_GRACE = 5.0
#: why a message the user dropped was not delivered (the keeper says it; so do the ops
#: for messages still held by the supervisor)
DROPPED = "dropped at your request before Claude saw it"


def keeper_title(instance: str, session: str) -> str:
    """A keeper's process title: how the supervisor finds (and reaps) its keepers."""
    return f"supervisord-claude[{instance}]: keeper {session}"


def keeper_endpoint(runtime_dir: Path | str) -> str:
    """Where keepers connect to their supervisor (inside the private runtime dir)."""
    return f"ipc://{Path(runtime_dir) / KEEPER_SOCKET}"


__all__ = [
    "ADOPTABLE_WIRE_VERSIONS", "DROPPED", "EVENT_FIELDS", "INTERRUPT_REPORTS_SINCE", "KEEPER_SOCKET",
    "REPEATS_IGNORED_SINCE", "RUN_BYTES", "RUN_EVENTS", "STEERING_SINCE", "STOP_GRACE", "WIRE_VERSION", "Ack", "Bye",
    "ClaudeStarted",
    "ConversationStarted", "Deliver", "Delta", "DropQueued", "Exited", "Hello", "Interrupt", "InterruptReport",
    "KeeperEvent", "KeeperEvents", "KeeperSpec", "Message", "Numbered", "Permit", "QueuedMessage", "Rejected",
    "SetBudget", "SetMode", "SetModel", "SetRules", "SetTimeout", "Spawn", "SpawnFailed", "Spawned", "Stop",
    "Suspend", "Welcome", "WireError", "decode", "decode_all", "encode", "encode_event", "encode_flat_run", "encode_run",
    "keeper_endpoint", "keeper_title", "pack_body", "run_item", "run_item_packed", "spec_from",
]
