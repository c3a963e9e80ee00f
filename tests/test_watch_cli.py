"""Conformance tier for the watcher (issue #29): the real Claude Code CLI, offline against
the fake Anthropic API. Whether "no output and almost no CPU" tells a hung turn from a
busy one depends on what the real CLI's own process does while it waits — for a tool
command and for the API — and on its tool commands being in its process tree; this is
where both are measured."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import SupervisorProcess, real_claude_bin, wait_for
from .fake_anthropic import FakeAnthropic

pytestmark = [pytest.mark.claude_cli, pytest.mark.timeout(180)]

STALL_AFTER = 3.0


@pytest.fixture
def api() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture
def sup(make_supervisor, api: FakeAnthropic) -> SupervisorProcess:
    env = {"ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "sk-test-dummy",
           "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "IS_SANDBOX": "1"}
    sup: SupervisorProcess = make_supervisor(
        claude_bin=real_claude_bin(), idle_timeout=120, env=env,
        config=f"stall_after = {STALL_AFTER}\nallow_bypass = true\nremind_after = 0\n").start()
    sup.request("create", session="work", mode="bypass")  # (Bash runs without asking)
    sup.request("send", session="work", text="hello")
    sup.wait_event("work", lambda e: e["kind"] == "result", timeout=90, what="the first answer")
    return sup


def watch_until_silent(sup: SupervisorProcess, silent_for: float) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def long_enough() -> dict[str, Any] | None:
        last.clear()
        last.update(sup.session("work").get("activity") or {})
        return dict(last) if last.get("silent_for", 0) >= silent_for else None
    found: dict[str, Any] = wait_for(long_enough, 90, what=f"{silent_for} s of silence", seen=lambda: dict(last))
    return found


def command(text: str) -> str:
    return "bash:" + text.replace(" ", "+")


def test_real_claude_running_a_command_that_hangs_is_stalled(sup: SupervisorProcess) -> None:
    gate = sup.base / "gate"
    sent = sup.request("send", session="work", text=command(f"while [ ! -e {gate} ]; do sleep 1; done"))
    stalled = sup.wait_event("work", lambda e: e["kind"] == "stalled", timeout=90, what="the stalled event")
    assert stalled["doing"] == "tool" and stalled["tool"] == "Bash" and stalled["message_id"] == sent["message_id"]
    steady = watch_until_silent(sup, 4 * STALL_AFTER)  # (past the CLI's own work on the turn's start)
    print(f"MEASURED real CLI, a Bash command that sleeps: {steady['cpu_percent']}% of a CPU over the last"
          f" {STALL_AFTER:g} s (the stall was said at {stalled['cpu_percent']}%)")
    assert steady["doing"] == "stalled"
    gate.touch()
    sup.wait_event("work", lambda e: e["kind"] == "result" and e.get("message_id") == sent["message_id"],
                   timeout=90, what="the answer")


def test_real_claude_running_a_command_that_burns_cpu_is_working(sup: SupervisorProcess) -> None:
    gate = sup.base / "gate"
    sent = sup.request("send", session="work", text=command(f"while [ ! -e {gate} ]; do :; done"))
    now = watch_until_silent(sup, 3 * STALL_AFTER)
    print(f"MEASURED real CLI, a Bash command that burns CPU: {now['cpu_percent']}% of a CPU")
    assert (now["doing"], now["tool"]) == ("tool", "Bash") and now["cpu_percent"] > 20
    gate.touch()
    sup.wait_event("work", lambda e: e["kind"] == "result" and e.get("message_id") == sent["message_id"],
                   timeout=90, what="the answer")
    assert not [e for e in sup.events("work") if e["kind"] == "stalled"]


def test_real_claude_waiting_on_a_silent_api_is_stalled(sup: SupervisorProcess, api: FakeAnthropic) -> None:
    """The API sends nothing but keep-alive pings for a minute: a hung network call."""
    sent = sup.request("send", session="work", text="slow:60 please")
    stalled = sup.wait_event("work", lambda e: e["kind"] == "stalled", timeout=90, what="the stalled event")
    assert stalled["doing"] == "writing" and stalled["message_id"] == sent["message_id"]
    steady = watch_until_silent(sup, 4 * STALL_AFTER)
    print(f"MEASURED real CLI, waiting on the API: {steady['cpu_percent']}% of a CPU over the last"
          f" {STALL_AFTER:g} s (the stall was said at {stalled['cpu_percent']}%)")
    assert steady["doing"] == "stalled"
    sup.ctl("interrupt", "work", check=True)
    sup.wait_event("work", lambda e: e["kind"] == "result" and e.get("message_id") == sent["message_id"],
                   timeout=90, what="the interrupted turn's end")
