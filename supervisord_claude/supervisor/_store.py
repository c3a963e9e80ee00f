"""The durable store: sessions, the event log, queued messages, consumer cursors, a small kv.

One SQLite file in WAL mode, written only by the supervisor process. Every event is
committed before it is published, so a subscriber can always re-read what it missed.

The newest events stored (a bounded number and size) are also kept in memory, as they
were committed, so subscribers that keep up are served without reading them back; and an
event's body is packed once: what a subscriber gets is that stored map with the event's
own fields added (``StoredEvent.data``), not a second encoding of it.

``Store`` is built in layers, one module each: the file (``_storefile``: schema,
migrations, transactions), sessions and messages (``_storesessions``), events
(``_storeevents``), cost, caps and schedules (``_storespend``), what budgets count on a
day of any zone (``_storebudgets``), and here the consumers' cursors and the kv; the
values they hold are in ``_storerecords``.
"""

from __future__ import annotations

from typing import Any

import msgpack

from ._storebudgets import BudgetRows
from ._storerecords import (
    COST_ADDED,
    DONE,
    FAILED,
    NO_UPDATES,
    QUEUED,
    WRITTEN,
    EventWrite,
    Message,
    SessionRecord,
    StoredEvent,
)


class Store(BudgetRows):
    """The whole store: the file (``_storefile``), sessions and messages
    (``_storesessions``), events (``_storeevents``), cost, caps and schedules
    (``_storespend``), and here the consumers' cursors and the kv."""

    # cursors and kv -------------------------------------------------------------------

    def cursors(self) -> dict[str, int]:
        """Every named consumer's position (the last event id it acked)."""
        return {str(r[0]): int(r[1]) for r in self._read("SELECT consumer, position FROM cursors")}

    def get_cursor(self, consumer: str) -> int:
        rows = self._read("SELECT position FROM cursors WHERE consumer=?", (consumer,))
        return int(rows[0][0]) if rows else 0

    def set_cursor(self, consumer: str, position: int) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO cursors(consumer, position, moved) VALUES (?,?,?)"
                " ON CONFLICT(consumer) DO UPDATE SET position=max(position, excluded.position),"
                " moved=CASE WHEN excluded.position > position THEN excluded.moved ELSE moved END",
                (consumer, position, self.wall()),
            )

    def cursor_details(self) -> list[tuple[str, int, float | None]]:
        """Every named consumer: (name, position, when it last moved), by name."""
        rows = self._read("SELECT consumer, position, moved FROM cursors ORDER BY consumer")
        return [(str(r[0]), int(r[1]), None if r[2] is None else float(r[2])) for r in rows]

    def remove_cursor(self, consumer: str) -> bool:
        """Forget a consumer's cursor; False if there was none."""
        with self._tx() as db:
            return db.execute("DELETE FROM cursors WHERE consumer=?", (consumer,)).rowcount > 0

    def kv_get(self, key: str) -> Any:
        rows = self._read("SELECT value FROM kv WHERE key=?", (key,))
        return msgpack.unpackb(rows[0][0]) if rows else None

    def kv_set(self, key: str, value: Any, max_keys: int | None = None) -> bool:
        """Store a value; False (nothing written) if the key is new and ``max_keys`` are
        kept already."""
        blob = msgpack.packb(value, use_bin_type=True)
        with self._tx() as db:
            if max_keys is not None and db.execute("SELECT 1 FROM kv WHERE key=?", (key,)).fetchone() is None \
                    and db.execute("SELECT count(*) FROM kv").fetchone()[0] >= max_keys:
                return False
            db.execute(
                "INSERT INTO kv(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, blob),
            )
        return True

    def kv_delete(self, key: str) -> bool:
        with self._tx() as db:
            cur = db.execute("DELETE FROM kv WHERE key=?", (key,))
        return cur.rowcount > 0


__all__ = ["COST_ADDED", "DONE", "FAILED", "NO_UPDATES", "QUEUED", "WRITTEN", "EventWrite", "Message",
           "SessionRecord", "Store", "StoredEvent"]
