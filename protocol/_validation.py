"""Request validation at the boundary: the envelope, and every op's fields (``SCHEMAS``:
which fields, which are required, the check of each — the checks are in ``_fields``).

``validate_request`` turns a decoded frame into a ``Request`` or raises
``ValidationError`` with a code and a message a human can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._errors import ValidationError
from ._fields import (
    Check,
    abs_path,
    answers,
    attachments,
    bad,
    boolean,
    chunk,
    chunk_length,
    consumer_name,
    directories,
    entry_name,
    file_name,
    file_path,
    is_session_name,
    kv_key,
    kv_value,
    live_every_ms,
    non_negative_int,
    permission_mode,
    positive_int,
    reason,
    session_name,
    short_text,
    text,
    timeout_minutes,
    usd_amount,
    usd_cap,
)
from ._messages import PROTOCOL_VERSION, ErrorCode, Op
from ._vocabulary import V1_FIELDS

__all__ = ["SCHEMAS", "Request", "is_session_name", "request_id_of", "validate_request"]


@dataclass(frozen=True)
class Request:
    """A validated request: ``args`` holds only the op's known fields."""

    id: int | str
    op: Op
    args: dict[str, Any]


# op -> {field: (check, required)}
SCHEMAS: dict[Op, dict[str, tuple[Check, bool]]] = {
    Op.HELLO: {"client": (short_text, False)},
    Op.STATUS: {"session": (session_name, False)},
    Op.LIST: {"all": (boolean, False)},
    Op.CREATE: {
        "session": (session_name, True),
        "permission_mode": (permission_mode, False),
        "model": (short_text, False),
        "cwd": (abs_path, False),
        "persona": (short_text, False),
        "conversation": (short_text, False),
        "force": (boolean, False),
    },
    Op.SEND: {
        "session": (session_name, True),
        "text": (text, True),
        "attachments": (attachments, False),
        "origin": (short_text, False),
        "idempotency_key": (short_text, False),
        "queue": (boolean, False),
    },
    Op.INTERRUPT: {"session": (session_name, True)},
    Op.DROP_QUEUED: {"session": (session_name, True)},
    Op.SUSPEND: {"session": (session_name, True)},
    Op.SET_TIMEOUT: {"session": (session_name, True), "minutes": (timeout_minutes, True)},
    Op.SET_MODEL: {"session": (session_name, True), "model": (short_text, True)},
    Op.ARCHIVE: {"session": (session_name, True)},
    Op.UNARCHIVE: {"session": (session_name, True)},
    Op.NEW_CONVERSATION: {"session": (session_name, True)},
    Op.SET_CWD: {"session": (session_name, True), "cwd": (abs_path, True)},
    Op.SUBSCRIBE: {
        "session": (session_name, False),
        "after_seq": (non_negative_int, False),
        "after_id": (non_negative_int, False),
        "consumer": (consumer_name, False),
        "window": (positive_int, False),
        "live": (boolean, False),
        "live_every": (live_every_ms, False),
        "batch": (boolean, False),
    },
    Op.ACK: {"sub": (positive_int, True), "upto": (non_negative_int, True)},
    Op.UNSUBSCRIBE: {"sub": (positive_int, True)},
    Op.PING: {"sub": (positive_int, False)},
    Op.PERMIT: {
        "session": (session_name, True),
        "request_id": (short_text, True),
        "allow": (boolean, True),
        "message": (reason, False),
        "always": (boolean, False),
        "permission_mode": (permission_mode, False),
        "directory": (abs_path, False),
    },
    Op.ANSWER: {
        "session": (session_name, True),
        "request_id": (short_text, True),
        "answers": (answers, True),
    },
    Op.SET_MODE: {"session": (session_name, True), "permission_mode": (permission_mode, True)},
    Op.KV_GET: {"key": (kv_key, True)},
    Op.KV_SET: {"key": (kv_key, True), "value": (kv_value, True)},
    Op.KV_DELETE: {"key": (kv_key, True)},
    Op.CONSUMERS: {},
    Op.REMOVE_CONSUMER: {"consumer": (consumer_name, True)},
    Op.BACKUP: {"path": (abs_path, True), "force": (boolean, False)},
    Op.RESTART: {},
    Op.SHUTDOWN: {},
    Op.RULES: {"session": (session_name, True)},
    Op.DIFF: {"session": (session_name, True), "path": (text, False)},
    Op.FORK: {"session": (session_name, True), "name": (session_name, True)},
    Op.SCHEDULE_ADD: {"session": (session_name, True), "when": (text, True), "prompt": (text, False),
                      "origin": (short_text, False), "tz": (short_text, False)},
    Op.SCHEDULES: {"session": (session_name, False)},
    Op.SCHEDULE_SET: {"schedule": (positive_int, True), "paused": (boolean, True)},
    Op.SCHEDULE_REMOVE: {"schedule": (positive_int, True)},
    Op.BUDGET: {"session": (session_name, False)},
    Op.SET_BUDGET: {"session": (session_name, False), "usd": (usd_cap, True), "tz": (short_text, False)},
    Op.REMOVE_RULE: {"session": (session_name, True), "index": (positive_int, False), "rule": (text, False)},
    Op.ATTACH: {
        "session": (session_name, True),
        "pid": (positive_int, True),
        "tty": (short_text, False),
        "now": (boolean, False),
    },
    Op.CONVERSATIONS: {"cwd": (abs_path, False)},
    Op.PUT_FILE: {"session": (session_name, True), "name": (file_name, True), "data": (chunk, True),
                  "offset": (non_negative_int, False), "more": (boolean, False)},
    Op.READ_FILE: {"session": (session_name, True), "path": (file_path, True),
                   "offset": (non_negative_int, False), "length": (chunk_length, False)},
    Op.LIST_DIR: {"session": (session_name, False), "path": (file_path, False), "within": (directories, False)},
    Op.OUTBOX_SENT: {"session": (session_name, True), "name": (entry_name, True)},
    Op.BUDGET_ALLOW: {"session": (session_name, False), "usd": (usd_amount, True)},
    Op.ADD_RULE: {"session": (session_name, True), "tool": (short_text, True), "scope": (text, True)},
}

_ENVELOPE = {"v", "id", "op"}


def validate_request(frame: dict[str, Any]) -> Request:
    """Check a decoded frame against the envelope and its op's schema."""
    version = frame.get("v")
    # exactly the integer: True and 1.0 compare equal to 1 in Python, but are not it
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ValidationError(
            ErrorCode.BAD_VERSION,
            f"unsupported protocol version {version!r}; this supervisor speaks {PROTOCOL_VERSION}",
        )
    req_id = frame.get("id")
    if isinstance(req_id, bool) or not isinstance(req_id, (int, str)):
        raise bad("'id' must be an integer or a string")
    if isinstance(req_id, str) and len(req_id) > 200:
        raise bad("'id' is too long")
    raw_op = frame.get("op")
    if not isinstance(raw_op, str):
        raise bad("'op' must be a string")
    try:
        op = Op(raw_op)
    except ValueError:
        raise ValidationError(
            ErrorCode.UNKNOWN_OP,
            f"unknown op {raw_op[:60]!r}; known ops: {', '.join(o.value for o in Op)}",
        ) from None
    schema = SCHEMAS[op]
    frame = _renamed(op, frame)
    unknown = sorted(set(frame) - _ENVELOPE - set(schema))
    if unknown:
        raise bad(f"unknown field(s) for '{op.value}': {', '.join(unknown)[:200]}")
    args: dict[str, Any] = {}
    for field, (check, required) in schema.items():
        if field not in frame:
            if required:
                raise bad(f"'{op.value}' needs the field '{field}'")
            continue
        args[field] = check(field, frame[field])
    return Request(id=req_id, op=op, args=args)


def _renamed(op: Op, frame: dict[str, Any]) -> dict[str, Any]:
    """The frame with each field given by its version-1 name under its name now
    (``_vocabulary.V1_FIELDS``); both names at once are refused."""
    renames = V1_FIELDS.get(op)
    if not renames or not renames.keys() & frame.keys():
        return frame
    out = dict(frame)
    for old, new_name in renames.items():
        if old in frame:
            new = new_name(frame)
            if new in frame:
                raise bad(f"'{new}' and its old name '{old}' were both given: give '{new}'")
            out[new] = out.pop(old)
    return out


def request_id_of(frame: dict[str, Any]) -> int | str | None:
    """The id to echo in an error reply, if the frame carried a usable one."""
    req_id = frame.get("id")
    if isinstance(req_id, bool):
        return None
    if isinstance(req_id, int) or (isinstance(req_id, str) and len(req_id) <= 200):
        return req_id
    return None
