"""One word per concept (``docs/protocol.md``, "Vocabulary"), and the version-1 names
the protocol keeps beside some of them.

Three fields had a vaguer name in version 1: ``mode`` is ``permission_mode``; ``subscribe``'s
``after`` is ``after_seq`` with a session (a sequence number of that session) and
``after_id`` without one (a global event id). The supervisor accepts either name of a
request field (never both) and sends both names of what it reports (session records,
replies, ``settings`` and ``permission_resolved`` events). A client reads either with
``permission_mode_of``.

The Python clients' methods take the new names, and send the version-1 ones: those every
supervisor of protocol 1 reads — a client may reach an older supervisor on another
machine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._messages import Op

PERMISSION_MODE = "permission_mode"
#: the version-1 name of ``permission_mode`` (deprecated)
V1_MODE = "mode"
AFTER_SEQ = "after_seq"
AFTER_ID = "after_id"
#: the version-1 name of ``after_seq`` (with a session) and ``after_id`` (without one)
V1_AFTER = "after"


def permission_mode_of(fields: Mapping[str, Any]) -> str | None:
    """The permission mode of a session record, a reply or an event: under its name, or
    its version-1 name (what a supervisor of an earlier release sends)."""
    value = fields.get(PERMISSION_MODE, fields.get(V1_MODE))
    return value if isinstance(value, str) else None


def mode_fields(mode: str | None) -> dict[str, str]:
    """A permission mode under both its names, as the supervisor reports it (none for
    None)."""
    return {} if mode is None else {PERMISSION_MODE: mode, V1_MODE: mode}


def missing_mode_fields(fields: Mapping[str, Any]) -> dict[str, str]:
    """The name of the permission mode ``fields`` carries under one name only: what to
    add so it carries both."""
    return {name: value for name, value in mode_fields(permission_mode_of(fields)).items() if name not in fields}


def _named(name: str) -> Callable[[Mapping[str, Any]], str]:
    return lambda frame: name


def _after(frame: Mapping[str, Any]) -> str:
    return AFTER_SEQ if "session" in frame else AFTER_ID


#: per op, a request field's version-1 name -> its name now (given the whole request)
V1_FIELDS: dict[Op, dict[str, Callable[[Mapping[str, Any]], str]]] = {
    Op.CREATE: {V1_MODE: _named(PERMISSION_MODE)},
    Op.SET_MODE: {V1_MODE: _named(PERMISSION_MODE)},
    Op.PERMIT: {V1_MODE: _named(PERMISSION_MODE)},
    Op.SUBSCRIBE: {V1_AFTER: _after},
}

#: what a Python client's method sends a field as (the version-1 name: see above)
SENT_AS: dict[str, str] = {PERMISSION_MODE: V1_MODE}
