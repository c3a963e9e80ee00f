"""What one field of a request may hold: a check per kind of value (a session name, a
text, a path, an integer in range, a permission mode, a piece of a file, ...).

A check takes the field's name (for the message) and its value, and returns the value
as the handler gets it or raises ``ValidationError`` with a code and a sentence a human
can act on. ``_validation`` puts them together per op (``SCHEMAS``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any

import msgpack

from ._errors import ValidationError
from ._messages import (
    CONSUMER_NAME_PATTERN,
    CONSUMER_NAME_RE,
    FILE_CHUNK_BYTES,
    MAX_ATTACHMENTS,
    MAX_INT,
    MAX_KV_VALUE_BYTES,
    MAX_LIVE_EVERY_MS,
    MAX_TEXT_CHARS,
    MAX_TIMEOUT_MINUTES,
    MIN_TIMEOUT_MINUTES,
    SESSION_NAME_MAX_BYTES,
    SESSION_NAME_MAX_CHARS,
    SESSION_NAME_RULE,
    ErrorCode,
    PermissionMode,
)

#: a field's check: (field name, value) -> the value as the handler gets it
Check = Callable[[str, Any], Any]


def bad(message: str) -> ValidationError:
    return ValidationError(ErrorCode.BAD_REQUEST, message)


def _type_name(value: Any) -> str:
    return type(value).__name__


def is_session_name(value: str) -> bool:
    """Does ``value`` follow ``SESSION_NAME_RULE``?"""
    if not 0 < len(value) <= SESSION_NAME_MAX_CHARS or len(value.encode()) > SESSION_NAME_MAX_BYTES:
        return False
    if not unicodedata.is_normalized("NFC", value):
        return False
    first = unicodedata.category(value[0])
    if not (first.startswith("L") or first == "Nd"):
        return False
    return all(c in "_-" or unicodedata.category(c)[0] in "LM" or unicodedata.category(c) == "Nd" for c in value)


def session_name(field: str, value: Any) -> str:
    """A session name (``SESSION_NAME_RULE``)."""
    if not isinstance(value, str):
        raise bad(f"'{field}' must be a string, got {_type_name(value)}")
    if not is_session_name(value):
        why = ""
        if isinstance(value, str) and value and not unicodedata.is_normalized("NFC", value):
            why = " (it is not in Unicode NFC form: type it again, or normalise it)"
        elif len(value.encode()) > SESSION_NAME_MAX_BYTES:
            why = f" (it is {len(value.encode())} bytes in UTF-8; a directory name holds {SESSION_NAME_MAX_BYTES})"
        raise ValidationError(ErrorCode.BAD_NAME, f"invalid session name {value[:80]!r}: use {SESSION_NAME_RULE}{why}")
    return value


def consumer_name(field: str, value: Any) -> str:
    if not isinstance(value, str) or not CONSUMER_NAME_RE.match(value):
        raise ValidationError(
            ErrorCode.BAD_NAME, f"'{field}' must match {CONSUMER_NAME_PATTERN}"
        )
    return value


def text(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise bad(f"'{field}' must be a string, got {_type_name(value)}")
    if len(value) > MAX_TEXT_CHARS:
        raise ValidationError(
            ErrorCode.TOO_LARGE, f"'{field}' has {len(value)} characters, limit is {MAX_TEXT_CHARS}"
        )
    return value


def short_text(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 200 or "\0" in value:
        raise bad(f"'{field}' must be a non-empty string of at most 200 characters")
    return value


def reason(field: str, value: Any) -> str:
    """What a person wrote for Claude to read (a deny's reason, a plan's feedback): any
    length a message may have, but not empty."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise bad(f"'{field}' must be a non-empty string")
    if len(value) > MAX_TEXT_CHARS:
        raise ValidationError(ErrorCode.TOO_LARGE, f"'{field}' has {len(value)} characters, limit is {MAX_TEXT_CHARS}")
    return value


def abs_path(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise bad(f"'{field}' must be an absolute path")
    if len(value) > 4096:
        raise bad(f"'{field}' is too long")
    return value


def attachments(field: str, value: Any) -> list[str]:
    if not isinstance(value, list):
        raise bad(f"'{field}' must be a list of absolute paths")
    if len(value) > MAX_ATTACHMENTS:
        raise bad(f"'{field}' may hold at most {MAX_ATTACHMENTS} paths")
    return [abs_path(f"{field}[{i}]", item) for i, item in enumerate(value)]


def non_negative_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise bad(f"'{field}' must be an integer from 0 to 2**63-1")
    return value


def positive_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_INT:
        raise bad(f"'{field}' must be an integer from 1 to 2**63-1")
    return value


def live_every_ms(field: str, value: Any) -> int:
    """How long coalesced live text may wait, in milliseconds (``subscribe``)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIVE_EVERY_MS:
        raise bad(f"'{field}' must be an integer number of milliseconds from 0 to {MAX_LIVE_EVERY_MS}")
    return value


def timeout_minutes(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"'{field}' must be an integer number of minutes")
    if not MIN_TIMEOUT_MINUTES <= value <= MAX_TIMEOUT_MINUTES:
        raise bad(
            f"Timeout must be between {MIN_TIMEOUT_MINUTES} and {MAX_TIMEOUT_MINUTES} minutes"
        )
    return value


def usd_cap(field: str, value: Any) -> float | None:
    """A cap in US dollars: a positive number, or null for none."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e9:
        raise bad(f"'{field}' must be a positive number of US dollars, or null")
    return float(value)


def usd_amount(field: str, value: Any) -> float:
    """An amount in US dollars: a positive number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e9:
        raise bad(f"'{field}' must be a positive number of US dollars")
    return float(value)


def boolean(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise bad(f"'{field}' must be true or false")
    return value


def kv_key(field: str, value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 200:
        raise bad(f"'{field}' must be a string of 1-200 characters")
    return value


def kv_value(field: str, value: Any) -> Any:
    if not isinstance(value, (str, int, float, bool, list, dict, type(None))):
        raise bad(f"'{field}' must be a plain msgpack value")
    try:
        size = len(msgpack.packb(value, use_bin_type=True))
    except (TypeError, ValueError, OverflowError):
        raise bad(f"'{field}' must be a plain msgpack value") from None
    if size > MAX_KV_VALUE_BYTES:
        raise bad(f"'{field}' is {size} bytes encoded; at most {MAX_KV_VALUE_BYTES} may be kept")
    return value


def permission_mode(field: str, value: Any) -> PermissionMode:
    try:
        return PermissionMode(value)
    except ValueError:
        known = ", ".join(m.value for m in PermissionMode)
        raise bad(f"'{field}' must be one of: {known}") from None


def answers(field: str, value: Any) -> list[list[str]]:
    """Labels per question, in the question's order: ``[["Red"], ["a", "b"]]`` (a question
    answered in words is a list of that one text)."""
    if not isinstance(value, list) or not 0 < len(value) <= 16:
        raise bad(f"'{field}' must be a list (one entry per question, 1-16)")
    out = []
    for entry in value:
        if not isinstance(entry, list) or not 0 < len(entry) <= 32 or not all(
                isinstance(label, str) and 0 < len(label) <= 2000 for label in entry):
            raise bad(f"each entry of '{field}' must be a list of 1-32 non-empty texts")
        out.append(list(entry))
    return out


# files of a session's directory (put_file, read_file, list_dir, outbox_sent) -----------

#: longest file name ``put_file`` and ``outbox_sent`` take, in UTF-8 bytes (under a
#: directory entry's 255, with room for the partial upload's ``.`` and
#: ``.supervisord-claude.part``: 225 in all)
MAX_FILE_NAME_BYTES = 200


def file_name(field: str, value: Any) -> str:
    """One file name: no directory part, nothing hidden (a leading ``.``), no NUL."""
    if not isinstance(value, str) or not value or "/" in value or "\0" in value or value.startswith("."):
        raise bad(f"'{field}' must be a file name: no '/', not starting with '.'")
    if len(value.encode()) > MAX_FILE_NAME_BYTES:
        raise bad(f"'{field}' is {len(value.encode())} bytes in UTF-8; a file name may have {MAX_FILE_NAME_BYTES}")
    return value


def entry_name(field: str, value: Any) -> str:
    """The name of an entry of a directory: no directory part, not ``.`` or ``..``."""
    if not isinstance(value, str) or value in ("", ".", "..") or "/" in value or "\0" in value \
            or len(value.encode()) > 255:
        raise bad(f"'{field}' must be the name of a directory entry (no '/', at most 255 bytes)")
    return value


def file_path(field: str, value: Any) -> str:
    """A path (relative to a session's directory, or absolute)."""
    if not isinstance(value, str) or not value or "\0" in value or len(value) > 4096:
        raise bad(f"'{field}' must be a path of 1-4096 characters")
    return value


def chunk(field: str, value: Any) -> bytes:
    """A piece of a file: bytes (msgpack bin), at most ``FILE_CHUNK_BYTES``."""
    if not isinstance(value, bytes):
        raise bad(f"'{field}' must be bytes (msgpack bin), got {_type_name(value)}")
    if len(value) > FILE_CHUNK_BYTES:
        raise ValidationError(ErrorCode.TOO_LARGE, f"'{field}' has {len(value)} bytes; a piece of a file may have"
                              f" {FILE_CHUNK_BYTES}: send it in pieces (offset)")
    return value


def chunk_length(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= FILE_CHUNK_BYTES:
        raise bad(f"'{field}' must be an integer from 1 to {FILE_CHUNK_BYTES}")
    return value


def directories(field: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not 0 < len(value) <= 64:
        raise bad(f"'{field}' must be a list of 1-64 absolute paths")
    return [abs_path(f"{field}[{i}]", item) for i, item in enumerate(value)]
