"""The daily driver's ops added with issue #27's remainder: raising a cap once
(``budget_allow``) and an always-allow rule named by the user (``add_rule``).
"""

from __future__ import annotations

from typing import Any

from protocol import EventKind

from .. import _permissions as permissions
from .. import _wire
from ._budgets import ALL as ALL_SESSIONS
from ._opbase import OpsBase


class DailyOps(OpsBase):
    def op_budget_allow(self, ident: bytes, usd: float, session: str | None = None) -> dict[str, Any]:
        """Raise a cap once: ``usd`` more may be spent today by ``session`` (without it: by
        all sessions together), on top of what was spent; the cap is back tomorrow."""
        if session is not None:
            self._session(session)
        self.budgets.allow(session or ALL_SESSIONS, usd)
        self.budgets.rebalance(self.pool.keeper_names())
        return self.budgets.report([session] if session is not None else [])

    def op_add_rule(self, ident: bytes, session: str, tool: str, scope: str) -> dict[str, Any]:
        """Always allow ``tool`` in ``scope`` from now on: a file tool in a directory, a Bash
        command prefix, WebFetch for a domain (``permissions.user_rule``). Kept in the store
        at once; a live Claude restarts with it (``--resume``) once no turn runs."""
        rec = self._session(session)
        rule = permissions.user_rule(tool, scope, rec.cwd)
        rules = permissions.merged_rules(rec.allowed_tools, [rule])
        self.events.record(session, EventKind.SETTINGS, {"allowed_tools": rules})
        self.pool.session(session).command(_wire.SetRules(tuple(rules)))
        return {"added": rule, "rules": rules}


__all__ = ["DailyOps"]
