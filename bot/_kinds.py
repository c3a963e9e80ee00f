"""How a part of the bot answers each kind of the supervisor's events: a table keyed by
``EventKind`` (``KindTable``) — one handler per kind, or the reason nothing is done for
it. ``_show`` (a chat's events) and ``_desk`` (what is said in a terminal) each have
one; a test holds every table to every kind, so a kind the supervisor adds is never
dropped unseen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from protocol import EventKind

H = TypeVar("H")


@dataclass(frozen=True)
class KindTable(Generic[H]):
    """Handlers by event kind, and the kinds deliberately left alone (with why)."""

    handlers: Mapping[EventKind, H]
    #: the kinds nothing is done for, and why (their events are acked like the others)
    ignored: Mapping[EventKind, str]

    def handler(self, kind: Any) -> H | None:
        """The handler of ``kind``; None for an ignored one, or one newer than this bot."""
        return self.handlers.get(kind)

    def gaps(self) -> list[str]:
        """What is wrong with the table: a kind neither handled nor ignored, one both, an
        ignored one without a reason (empty: nothing)."""
        return ([f"{kind.value}: neither handled nor ignored" for kind in EventKind
                 if kind not in self.handlers and kind not in self.ignored]
                + [f"{kind.value}: both handled and ignored" for kind in self.handlers if kind in self.ignored]
                + [f"{kind.value}: ignored without a reason" for kind, why in self.ignored.items() if not why])


__all__ = ["KindTable"]
