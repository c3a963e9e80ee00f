"""The ops on the supervisor and the rest: hello, a session's git diff, budgets, the
kv, a backup of the store, restart and shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from protocol import (
    MAX_KV_KEYS,
    PROTOCOL_VERSION,
    ErrorCode,
)

from .. import __version__
from .._errors import OpError
from ._backup import backup_store, check_target
from ._budgets import ALL as ALL_SESSIONS
from ._control import LaterReply
from ._gitdiff import working_tree_diff
from ._opbase import OpsBase
from ._schedules import zone

log = logging.getLogger("supervisord_claude")


class AdminOps(OpsBase):
    """The supervisor itself, and what is kept beside the sessions."""

    # ops --------------------------------------------------------------------------------

    def op_hello(self, ident: bytes, client: str | None = None) -> dict[str, Any]:
        return {"server": "supervisord-claude", "version": __version__, "protocol": PROTOCOL_VERSION,
                "instance": self.instance}

    # the session's git changes -----------------------------------------------------------

    def op_diff(self, ident: bytes, session: str, path: str | None = None) -> LaterReply:
        """The session's git working-tree changes (``_gitdiff``), replied once git has
        answered (it runs as a subprocess, never blocking the loop)."""
        cwd = self._session(session, allow_archived=True).cwd
        reply = LaterReply()

        async def run() -> None:
            try:
                reply.resolve(await working_tree_diff(self.clock, cwd, path))
            except OpError as exc:
                reply.reject(exc)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return reply

    # budgets ------------------------------------------------------------------------------

    def op_budget(self, ident: bytes, session: str | None = None) -> dict[str, Any]:
        """Spend today and this month per session (one, or every one not archived) and in
        total, with the daily caps."""
        if session is not None:
            names = [self._session(session, allow_archived=True).name]
        else:
            names = [r.name for r in self.store.list_sessions(include_archived=False)]
        return self.budgets.report(names)

    def op_set_budget(self, ident: bytes, usd: float | None, session: str | None = None,
                      tz: str | None = None) -> dict[str, Any]:
        """Set (or with ``usd: null`` clear) a session's daily cap, or without ``session``
        the daily cap for all sessions; ``tz``: the zone its day is counted in from now on.
        Live Claudes get what is left at once (restarted with ``--resume`` after their turn)."""
        if session is not None:
            self._session(session)
        if tz is not None:
            zone(tz)  # (bad_request for an unknown one, before anything changes)
            self.store.set_budget_zone(session or ALL_SESSIONS, tz)
        self.store.set_budget(session or ALL_SESSIONS, usd)
        self.budgets.rebalance(self.pool.keeper_names())
        return self.budgets.report([session] if session is not None else [])

    def op_kv_get(self, ident: bytes, key: str) -> dict[str, Any]:
        return {"value": self.store.kv_get(key)}

    def op_kv_set(self, ident: bytes, key: str, value: Any) -> dict[str, Any]:
        if not self.store.kv_set(key, value, max_keys=MAX_KV_KEYS):
            raise OpError(ErrorCode.BAD_REQUEST, f"the kv holds {MAX_KV_KEYS} keys, its limit; delete some first")
        return {}

    def op_kv_delete(self, ident: bytes, key: str) -> dict[str, Any]:
        return {"existed": self.store.kv_delete(key)}

    def op_backup(self, ident: bytes, path: str, force: bool = False) -> LaterReply:
        """A consistent copy of the store at ``path`` (``_backup``), made in a worker
        thread: replied once it is written, checked and durable."""
        target = Path(path)
        check_target(target, force)
        reply = LaterReply()

        def finished(copied: asyncio.Future[dict[str, Any]]) -> None:
            if copied.cancelled():  # (the loop is closing)
                reply.reject(OpError(ErrorCode.SHUTTING_DOWN, "the supervisor stopped before the backup was done"))
                return
            error = copied.exception()
            if error is None:
                log.info("store backed up to %s", target, extra={"path": str(target)})
                reply.resolve(copied.result())
            elif isinstance(error, OpError):
                log.error("backup to %s failed: %s", target, error.message)
                reply.reject(error)
            else:  # a bug: answered all the same
                log.error("backup to %s failed: %r", target, error)
                reply.reject(OpError(ErrorCode.INTERNAL, f"the backup failed ({error!r}); see the supervisor log"))

        asyncio.get_running_loop().run_in_executor(None, backup_store, self.store.path, target) \
            .add_done_callback(finished)
        return reply

    def op_restart(self, ident: bytes) -> dict[str, Any]:
        self.request_restart()  # after this reply; keepers and their Claude keep running
        return {"pid": os.getpid()}

    def op_shutdown(self, ident: bytes) -> dict[str, Any]:
        self.request_shutdown()  # after this reply: the shutdown runs as its own task
        return {}
