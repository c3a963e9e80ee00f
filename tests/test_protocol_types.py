"""Typed pieces of the public protocol: an error reply's code is an ``ErrorCode``."""

from __future__ import annotations

import json

import pytest

from protocol import ErrorCode, RemoteError
from protocol._client import _result_of


def test_an_error_replys_code_is_an_error_code_equal_to_its_string() -> None:
    with pytest.raises(RemoteError) as caught:
        _result_of({"type": "reply", "id": 1, "ok": False, "error": {"code": "not_found", "message": "no session"}})
    exc = caught.value
    assert exc.code is ErrorCode.NOT_FOUND
    assert exc.code == "not_found" and exc.code in ("not_found", "exists")  # what clients compared before
    assert str(exc) == "not_found: no session" and json.dumps({"code": exc.code}) == '{"code": "not_found"}'


def test_a_code_this_client_does_not_know_stays_its_string() -> None:
    exc = RemoteError("from_the_future", "a newer supervisor")
    assert exc.code == "from_the_future" and not isinstance(exc.code, ErrorCode)
    assert str(exc) == "from_the_future: a newer supervisor"
