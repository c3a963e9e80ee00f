"""Each op's schema (``protocol._validation.SCHEMAS``) agrees with its handler (the
supervisor's ``op_*`` method) and with its typed client method (``protocol._methods``):
a field added on one side only fails here, not in front of a user as ``bad_request``
or as a handler that never gets what the schema let through."""

from __future__ import annotations

import ast
import inspect
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NotRequired, get_args, get_origin, get_type_hints, is_typeddict

import pytest

from protocol import BudgetReport, Diff, InProcessClient, Op, RuleAdded, RuleRemoved
from protocol._methods import TIMEOUT, OpMethod, op_methods
from protocol._validation import SCHEMAS
from supervisord_claude.supervisor._ops import Ops

from .test_bot_core import Core


def handler_fields(op: Op) -> dict[str, bool]:
    """The handler's keyword parameters (after ``self`` and the client's ``ident``):
    name -> whether it is required."""
    handler = getattr(Ops, f"op_{op.value}")
    params = list(inspect.signature(handler).parameters.values())[2:]
    return {p.name: p.default is inspect.Parameter.empty for p in params}


def schema_fields(op: Op) -> dict[str, bool]:
    return {field: required for field, (_, required) in SCHEMAS[op].items()}


def test_every_op_has_a_schema_and_a_handler() -> None:
    assert set(SCHEMAS) == set(Op)
    missing = [op.value for op in Op if not callable(getattr(Ops, f"op_{op.value}", None))]
    assert missing == [], f"ops without a handler (Ops.op_<name>): {missing}"


def test_every_handler_takes_exactly_its_ops_fields_required_as_the_schema_says() -> None:
    differ = {op.value: {"schema": schema_fields(op), "handler": handler_fields(op)}
              for op in Op if schema_fields(op) != handler_fields(op)}
    assert differ == {}, f"schema and handler disagree (field: required): {differ}"


def method_fields(method: OpMethod[Any, Any]) -> dict[str, bool]:
    return {name: name in method.required for name in method.fields}


def test_every_typed_method_sends_only_fields_its_op_knows_and_every_field_it_needs() -> None:
    for name, method in op_methods().items():
        schema = schema_fields(method.op)
        sent = method_fields(method)
        assert set(sent) <= set(schema), f"{name} sends {set(sent) - set(schema)}, unknown to '{method.op}'"
        needed = {field for field, required in schema.items() if required}
        assert needed <= {field for field, required in sent.items() if required}, \
            f"{name} can leave out a field '{method.op}' needs: {needed}"
        assert list(inspect.signature(method.declaration).parameters)[-1] == TIMEOUT


def test_a_typed_methods_defaults_are_its_handlers() -> None:
    # (a field left at its default is not sent: the handler's default must be the same)
    for name, method in op_methods().items():
        handler = inspect.signature(getattr(Ops, f"op_{method.op.value}")).parameters
        for field, default in method.fields.items():
            if field not in method.required:
                param = handler.get(field)
                assert param is not None and param.default == default, \
                    f"{name}({field}=...): the handler has no such field, or another default"



# the typed replies (protocol._replies) against what the supervisor's core sends --------------


def misfits(reply: Any, typed: Any, where: str = "reply") -> list[str]:
    """How ``reply`` differs from the TypedDict ``typed``, nested ones and lists of them
    included: a key it needs and lacks, or a key it does not list (a field the typed view
    would hide from mypy's checks)."""
    if get_origin(typed) is list:
        return [m for i, item in enumerate(reply) for m in misfits(item, get_args(typed)[0], f"{where}[{i}]")]
    if not is_typeddict(typed):
        return []
    # (``__required_keys__`` is wrong under ``from __future__ import annotations`` before
    # Python 3.12: the hints still say which are NotRequired)
    hints = get_type_hints(typed, include_extras=True)
    optional = {key for key, hint in hints.items() if get_origin(hint) is NotRequired}
    hints = {key: get_args(hint)[0] if key in optional else hint for key, hint in hints.items()}
    out = [f"{where} lacks '{key}'" for key in hints if key not in optional and key not in reply]
    out += [f"{where} has '{key}', which {typed.__name__} does not list" for key in reply if key not in hints]
    return out + [m for key, hint in hints.items() if key in reply for m in misfits(reply[key], hint, f"{where}.{key}")]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Any]:
    core = Core(tmp_path)
    client = await InProcessClient(core.control).connect()
    yield client
    await client.close()
    core.store.close()


async def test_the_typed_replies_of_rules_and_budgets_are_what_the_supervisor_sends(client: Any) -> None:
    await client.create("alpha")
    added = await client.add_rule("alpha", "Bash", "npm test")
    assert misfits(added, RuleAdded) == [] and added["rules"] == [added["added"]]
    removed = await client.remove_rule("alpha", index=1)
    assert misfits(removed, RuleRemoved) == [] and removed["rules"] == []
    capped = await client.set_budget(5.0, session="alpha", tz="Europe/Berlin")
    assert misfits(capped, BudgetReport) == [] and capped["sessions"][0]["cap"] == 5.0
    allowed = await client.budget_allow(2.0, session="alpha")
    assert misfits(allowed, BudgetReport) == [] and "extra" in allowed["sessions"][0]
    report = await client.budget()
    assert misfits(report, BudgetReport) == [] and [row["session"] for row in report["sessions"]] == ["alpha"]


@pytest.mark.system  # (the supervisor asks git)
async def test_the_typed_reply_of_diff_is_what_the_supervisor_sends(client: Any, tmp_path: Path) -> None:
    plain, repo = tmp_path / "plain", tmp_path / "repo"
    plain.mkdir(), repo.mkdir()
    await client.create("plain", cwd=str(plain))
    outside = await client.diff("plain")
    assert misfits(outside, Diff) == [] and not outside["repo"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "notes.txt").write_text("one\n")
    subprocess.run(["git", "-C", str(repo), "add", "notes.txt"], check=True)
    (repo / "new.txt").write_text("two\n")
    await client.create("repo", cwd=str(repo))
    changes = await client.diff("repo")
    assert misfits(changes, Diff) == [] and changes["staged"]["files"][0]["path"] == "notes.txt"
    assert changes["untracked"] == ["new.txt"]


def test_misfits_names_a_key_missing_or_unlisted_at_any_depth() -> None:
    row = {"session": "a", "today": 0.0, "month": 0.0, "cap": None}
    report = {"sessions": [row], "today": 0.0, "month": 0.0, "cap": None, "default_session_cap": None, "warn_at": 0.8}
    assert misfits(report, BudgetReport) == []
    assert misfits({**report, "sessions": [{**row, "colour": "red"}]}, BudgetReport) == [
        "reply.sessions[0] has 'colour', which BudgetRow does not list"]
    assert misfits({k: v for k, v in report.items() if k != "warn_at"}, BudgetReport) == ["reply lacks 'warn_at'"]


FRONT_ENDS = Path(__file__).parent.parent


def test_the_bot_and_claudectl_name_no_op_as_a_string() -> None:
    """They call the typed methods (mypy checks those calls and their replies);
    ``request(op, ...)`` is left for passing on an op a caller chose (``_hosts.route``)."""
    found = []
    for package in ("bot", "supervisord_claude/ctl"):
        for path in sorted((FRONT_ENDS / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr == "request" and node.args and isinstance(node.args[0], ast.Constant):
                    found.append(f"{path.relative_to(FRONT_ENDS)}:{node.lineno} request({node.args[0].value!r})")
    assert found == []
