"""Each op's schema (``protocol._validation.SCHEMAS``) agrees with its handler (the
supervisor's ``op_*`` method) and with its typed client method (``protocol._methods``):
a field added on one side only fails here, not in front of a user as ``bad_request``
or as a handler that never gets what the schema let through."""

from __future__ import annotations

import inspect
from typing import Any

from protocol import Op
from protocol._methods import TIMEOUT, OpMethod, op_methods
from protocol._validation import SCHEMAS
from supervisord_claude.supervisor._ops import Ops


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

