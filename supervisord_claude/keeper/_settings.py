"""What Claude is launched with, and what changing it means: the keeper's ``Settings``.

It owns the model, the permission mode and the always-allow rules Claude is started with
(its argv: ``launch``), the model Claude says it runs, and the session's budget: what it
may still spend today, less each turn's cost (Claude's ``total_cost_usd`` is the
conversation's running total across ``--resume``, so the last total seen is the baseline
of the next turn's cost). A change the running Claude cannot take (model, mode, rules, a
new budget: each is a flag of its command line) waits in ``pending`` until the machine
restarts Claude between turns; ``apply`` takes them and says why Claude restarts. Pure:
no I/O, no clock.
"""

from __future__ import annotations

from typing import Any

from protocol import PermissionMode, Reason

from .. import _claude, _wire

#: what is left of a budget below which no turn starts (a rounding's worth above nothing)
BUDGET_SPENT = 1e-9
BUDGET_REACHED = ("not sent: the daily cap is reached — what was left of it went to the turns of this and other"
                  " sessions answering at the same time. Raise it (/budget, claudectl budget) or wait for tomorrow")

#: why Claude restarts for each kind of pending change, the one said first when several wait
RESTART_REASONS = {"model": Reason.MODEL_CHANGE, "mode": Reason.MODE_CHANGE, "rules": Reason.RULES_CHANGE,
                   "budget": Reason.BUDGET_CHANGE}

SettingChange = _wire.SetModel | _wire.SetMode | _wire.SetRules | _wire.SetBudget


class Settings:
    """Claude's launch settings and the session's budget; changes wait for a restart."""

    def __init__(self, spec: _wire.KeeperSpec) -> None:
        self.model = spec.model
        self.mode = PermissionMode(spec.permission_mode)
        self.allowed_tools = list(spec.allowed_tools)
        self.claude_model: str | None = None  # what Claude says it runs (a front end shows it)
        #: changes the running Claude does not have: applied by a restart once no turn runs
        self.pending: dict[str, Any] = {}
        self.last_cost = spec.cost_baseline
        #: what this session may still spend today (None: no cap), less each turn's cost
        self.budget_left = spec.budget_usd

    def change(self, cmd: SettingChange, claude_running: bool) -> bool:
        """Take a change the supervisor asked for; whether Claude should restart for it."""
        if isinstance(cmd, _wire.SetModel):
            self.pending["model"] = cmd.model
        elif isinstance(cmd, _wire.SetMode):
            self.pending["mode"] = PermissionMode(cmd.mode)
        elif isinstance(cmd, _wire.SetRules):
            self.pending["rules"] = list(cmd.rules)
        else:
            if cmd.usd == self.budget_left or (cmd.usd is not None and self.budget_left is not None
                                               and abs(cmd.usd - self.budget_left) < 1e-9):
                return False  # (what it counted itself, or no cap still: its Claude has that limit)
            self.budget_left = cmd.usd
            if not claude_running:
                return False  # the next Claude is started with it
            self.pending["budget"] = cmd.usd  # the running Claude has the old limit
        return True

    def apply(self) -> Reason:
        """Take the pending changes (for the Claude started next); why Claude restarts."""
        changes, self.pending = self.pending, {}
        self.model = changes.get("model", self.model)
        self.mode = changes.get("mode", self.mode)
        self.allowed_tools = changes.get("rules", self.allowed_tools)
        # one restart for all of them: it is said for the first of these that changed
        return next(reason for key, reason in RESTART_REASONS.items() if key in changes)

    def permitted(self, rules: list[str] | tuple[str, ...], mode: str | None) -> None:
        """The user answered a request: the rules it added, the mode Claude switched itself to."""
        self.allowed_tools += [rule for rule in dict.fromkeys(rules) if rule not in self.allowed_tools]
        if mode is not None:
            self.mode = PermissionMode(mode)  # Claude switches itself (a setMode update)

    def claude_says(self, model: str | None, mode: PermissionMode | None) -> list[dict[str, Any]]:
        """What Claude reports it runs with; the changes, each a ``settings`` event's body."""
        changed: list[dict[str, Any]] = []
        if model is not None and model != self.claude_model:
            self.claude_model = model
            changed.append({"claude_model": model})
        if mode is not None and mode is not self.mode:
            self.mode = mode  # e.g. Claude left plan mode by itself
            changed.append({"mode": mode.value})
        return changed

    def count_cost(self, total: Any) -> float:
        """A turn's result said the conversation's total ``total``: the turn's cost, taken
        from the budget (a total below the baseline is a new conversation's)."""
        if not isinstance(total, (int, float)):
            return 0.0
        delta = total - self.last_cost if total >= self.last_cost else float(total)
        self.last_cost = float(total)
        if self.budget_left is not None:
            self.budget_left -= delta
        return delta

    @property
    def budget_spent(self) -> bool:
        """No turn starts: the caps are reached (the room for all went to other sessions' turns)."""
        return self.budget_left is not None and self.budget_left <= BUDGET_SPENT

    def launch(self, spec: _wire.KeeperSpec, resume: bool) -> _claude.LaunchSpec:
        return _claude.LaunchSpec(
            claude_bin=spec.claude_bin, cwd=spec.cwd, session_id=spec.session_id, resume=resume,
            model=self.model, system_prompt=spec.system_prompt, permission_mode=self.mode,
            allowed_tools=tuple(self.allowed_tools), extra_args=spec.extra_args,
            max_budget_usd=None if self.budget_left is None else max(0.0, self.budget_left),
            fork_from=spec.fork_from,
        )
