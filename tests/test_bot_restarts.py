"""``bot/_restarts``: a loop kept running logs each distinct failure's traceback once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot import _restarts


def test_a_failing_loop_is_started_again_and_a_repeated_failure_is_one_line(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(_restarts, "FIRST_BACKOFF", 0.01)
    runs: list[str] = []

    async def run() -> None:
        runs.append("run")
        if len(runs) <= 2:
            raise TypeError("the same bug")
        if len(runs) == 3:
            raise KeyError("another")

    with caplog.at_level(logging.WARNING, logger="claude_telegram_bot"):
        asyncio.run(_restarts.keep_running("host gpu's delivery", run))
    assert len(runs) == 4  # (it returned on its fourth start)
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert [type(r.exc_info[1]).__name__ for r in tracebacks if r.exc_info] == ["TypeError", "KeyError"]
    assert "host gpu's delivery failed again (TypeError: the same bug)" in caplog.text
