"""The watcher (``supervisor/_watch.py``) on a fake clock with a fake CPU reader: every
state a running turn can be in — writing, running a tool, waiting for the user, stalled —
and its events (one ``stalled`` per silence, one ``reminder`` per prompt); then the real
``System.tree_cpu`` against real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Collection
from typing import Any

import pytest

from protocol import EventKind
from supervisord_claude._clock import FakeClock
from supervisord_claude._os import System
from supervisord_claude.supervisor._watch import MAX_TICK, Watcher

from .conftest import wait_for

CLAUDE_PID = 4242
WALL0 = 1_000_000.0


class FakeCpu:
    """Claude's process tree: ``busy`` (its share of a CPU) is what it burns from now on."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.busy = 0.0
        self.total = 3.0
        self.at = 0.0
        self.reads = 0

    def tree_cpu(self, roots: Collection[int]) -> dict[int, float]:
        self.reads += 1
        self.total += self.busy * (self.clock.now - self.at)
        self.at = self.clock.now
        return {CLAUDE_PID: self.total} if CLAUDE_PID in roots else {}

    def burn(self, share: float) -> None:
        self.tree_cpu(())  # (what was burnt until now at the old rate)
        self.busy = share


class Rig:
    def __init__(self, stall_after: float = 300, remind_after: float = 600, permission_timeout: float = 3600,
                 cpu_percent: float = 2, claude_pid: int | None = CLAUDE_PID) -> None:
        self.clock = FakeClock()
        self.cpu = FakeCpu(self.clock)
        self.recorded: list[tuple[str, EventKind, dict[str, Any]]] = []
        self.watch = Watcher(self.clock, lambda: WALL0 + self.clock.now, self.cpu,
                             lambda s, k, b: self.recorded.append((s, k, b)), lambda s: claude_pid,
                             stall_after, cpu_percent, remind_after, permission_timeout)

    def feed(self, kind: EventKind, message_id: int | None = 7, **body: Any) -> None:
        if message_id is not None:
            body["message_id"] = message_id
        self.watch.event("work", kind, message_id, body, None)

    def turn(self) -> None:
        self.feed(EventKind.USER, text="run the tests")
        self.feed(EventKind.STATE, None, state="busy", reason="message")

    def doing(self) -> dict[str, Any]:
        activity = self.watch.activity("work")
        assert activity is not None
        return activity

    def events(self, kind: EventKind) -> list[dict[str, Any]]:
        return [b for _, k, b in self.recorded if k is kind]


def test_no_turn_no_activity() -> None:
    rig = Rig()
    assert rig.watch.activity("work") is None
    rig.turn()
    rig.feed(EventKind.RESULT, text="done")
    assert rig.watch.activity("work") is None
    rig.clock.advance(3600)
    assert rig.recorded == []


def test_writing_since_the_turn_began_and_again_after_a_tool() -> None:
    rig = Rig()
    rig.clock.advance(10)
    rig.turn()
    rig.clock.advance(5)
    rig.watch.output("work", 7)  # live text
    rig.feed(EventKind.ASSISTANT_TEXT, text="Looking.")
    activity = rig.doing()
    assert activity["doing"] == "writing" and activity["since"] == WALL0 + 10 and activity["seconds"] == 5
    assert activity["message_id"] == 7 and activity["silent_for"] == 0 and activity["turn_since"] == WALL0 + 10
    rig.feed(EventKind.TOOL_USE, tool_use_id="t1", name="Read", input={"file_path": "/src/app.py"})
    rig.clock.advance(2)
    rig.feed(EventKind.TOOL_RESULT, tool_use_id="t1", content="...")
    rig.clock.advance(1)
    activity = rig.doing()
    assert activity["doing"] == "writing" and activity["since"] == WALL0 + 17 and "tool" not in activity


def test_running_a_tool_which_and_for_how_long() -> None:
    rig = Rig()
    rig.turn()
    rig.clock.advance(4)
    rig.feed(EventKind.TOOL_USE, tool_use_id="t1", name="Bash", input={"command": "npm   test\n --ci"})
    rig.clock.advance(100)
    activity = rig.doing()
    assert (activity["doing"], activity["tool"], activity["detail"]) == ("tool", "Bash", "npm test --ci")
    assert activity["since"] == WALL0 + 4 and activity["seconds"] == 100 and activity["silent_for"] == 100
    # a second call in parallel: the first still names what runs longest
    rig.feed(EventKind.TOOL_USE, tool_use_id="t2", name="Grep", input={"pattern": "TODO"})
    assert rig.doing()["tool"] == "Bash" and rig.doing()["tools"] == 2
    rig.feed(EventKind.TOOL_RESULT, tool_use_id="t1", content="ok")
    assert (rig.doing()["tool"], rig.doing()["since"]) == ("Grep", WALL0 + 104)


def test_waiting_for_you_which_request_since_when_and_it_outranks_the_tool() -> None:
    rig = Rig()
    rig.turn()
    rig.feed(EventKind.TOOL_USE, tool_use_id="t1", name="Bash", input={"command": "rm -rf build"})
    rig.clock.advance(3)
    rig.feed(EventKind.PERMISSION_REQUEST, request_id="r1", tool_name="Bash", input={"command": "rm -rf build"})
    rig.clock.advance(60)
    activity = rig.doing()
    assert (activity["doing"], activity["request_id"], activity["tool_name"], activity["detail"]) == \
        ("waiting", "r1", "Bash", "rm -rf build")
    assert activity["since"] == WALL0 + 3 and activity["seconds"] == 60 and activity["waiting"] == 1
    rig.feed(EventKind.PERMISSION_RESOLVED, request_id="r1", allow=True, by="user")
    activity = rig.doing()
    assert (activity["doing"], activity["tool"], activity["since"]) == ("tool", "Bash", WALL0)


def test_a_question_is_waiting_for_you_with_what_it_asks() -> None:
    rig = Rig()
    rig.turn()
    questions = [{"question": "Pick a colour", "options": [{"label": "Red"}, {"label": "Blue"}]}]
    rig.feed(EventKind.PERMISSION_REQUEST, request_id="q1", tool_name="AskUserQuestion",
             input={"questions": questions})
    activity = rig.doing()
    assert (activity["doing"], activity["tool_name"], activity["detail"]) == \
        ("waiting", "AskUserQuestion", "Pick a colour")


def test_silent_without_cpu_is_stalled_once_with_what_it_was_doing() -> None:
    rig = Rig(stall_after=300)
    rig.turn()
    rig.clock.advance(20)
    rig.feed(EventKind.TOOL_USE, tool_use_id="t1", name="Bash", input={"command": "curl https://example.test"})
    rig.clock.advance(299)
    assert rig.doing()["doing"] == "tool" and rig.events(EventKind.STALLED) == []
    rig.clock.advance(MAX_TICK)
    activity = rig.doing()
    assert (activity["doing"], activity["was"], activity["tool"]) == ("stalled", "tool", "Bash")
    assert activity["since"] == WALL0 + 20 and activity["cpu_percent"] == 0
    [stalled] = rig.events(EventKind.STALLED)
    assert stalled["doing"] == "tool" and stalled["tool"] == "Bash" and stalled["detail"] == "curl https://example.test"
    assert stalled["message_id"] == 7 and stalled["since"] == WALL0 + 20 and stalled["silent_for"] >= 300
    rig.clock.advance(3600)  # nothing repeats while nothing changes
    assert len(rig.events(EventKind.STALLED)) == 1 and rig.doing()["doing"] == "stalled"


def test_silent_but_burning_cpu_is_working_not_stalled() -> None:
    rig = Rig(stall_after=300)
    rig.turn()
    rig.feed(EventKind.TOOL_USE, tool_use_id="t1", name="Bash", input={"command": "pytest -q"})
    rig.cpu.burn(0.9)  # a long test run
    rig.clock.advance(1800)
    activity = rig.doing()
    assert (activity["doing"], activity["tool"], activity["seconds"]) == ("tool", "Bash", 1800)
    assert activity["cpu_percent"] == pytest.approx(90)
    assert rig.events(EventKind.STALLED) == []


def test_a_little_cpu_is_almost_none_and_the_threshold_is_configurable() -> None:
    for share, threshold, stalls in ((0.01, 2, True), (0.03, 2, False), (0.03, 5, True)):
        rig = Rig(cpu_percent=threshold)
        rig.turn()
        rig.cpu.burn(share)
        rig.clock.advance(400)
        assert (rig.doing()["doing"] == "stalled") is stalls, (share, threshold)


def test_stalled_ends_with_output_or_cpu_and_a_new_silence_is_a_new_occurrence() -> None:
    rig = Rig(stall_after=300)
    rig.turn()
    rig.clock.advance(400)
    assert rig.doing()["doing"] == "stalled" and rig.doing()["was"] == "writing"
    rig.cpu.burn(1.0)  # it works again, still without a word: working
    rig.clock.advance(300)
    assert rig.doing()["doing"] == "writing"
    rig.cpu.burn(0)  # and stops again within the same silence: no second message
    rig.clock.advance(400)
    assert rig.doing()["doing"] == "stalled" and len(rig.events(EventKind.STALLED)) == 1
    rig.watch.output("work", 7)  # it writes: a new occurrence may come
    assert rig.doing()["doing"] == "writing" and rig.doing()["silent_for"] == 0
    rig.clock.advance(400)
    assert len(rig.events(EventKind.STALLED)) == 2


def test_waiting_for_you_is_never_stalled() -> None:
    rig = Rig(stall_after=300, remind_after=0)
    rig.turn()
    rig.feed(EventKind.PERMISSION_REQUEST, request_id="r1", tool_name="Bash", input={"command": "ls"})
    rig.clock.advance(3000)
    assert rig.doing()["doing"] == "waiting" and rig.events(EventKind.STALLED) == []


def test_without_claude_pid_there_is_no_cpu_reading_and_no_stall() -> None:
    rig = Rig(claude_pid=None)
    rig.turn()
    rig.clock.advance(1000)
    assert rig.doing()["doing"] == "writing" and rig.doing()["cpu_percent"] is None
    assert rig.events(EventKind.STALLED) == []


def test_stall_detection_off_reads_no_cpu() -> None:
    rig = Rig(stall_after=0)
    rig.turn()
    rig.clock.advance(5000)
    assert rig.cpu.reads == 0 and rig.doing()["doing"] == "writing" and rig.events(EventKind.STALLED) == []


def test_a_prompt_waiting_gets_one_reminder_each() -> None:
    rig = Rig(remind_after=600, stall_after=0)
    rig.turn()
    rig.feed(EventKind.PERMISSION_REQUEST, request_id="r1", tool_name="Bash", input={"command": "make deploy"})
    rig.clock.advance(590)
    assert rig.events(EventKind.REMINDER) == []
    rig.feed(EventKind.PERMISSION_REQUEST, request_id="r2", tool_name="Write", input={"file_path": "/tmp/x"})
    rig.clock.advance(MAX_TICK)
    [first] = rig.events(EventKind.REMINDER)
    assert (first["request_id"], first["tool_name"], first["detail"], first["message_id"]) == \
        ("r1", "Bash", "make deploy", 7)
    assert first["since"] == WALL0 and 600 <= first["waited"] <= 600 + MAX_TICK
    assert first["denied_in"] == 3600 - first["waited"]
    rig.clock.advance(3600)
    assert [r["request_id"] for r in rig.events(EventKind.REMINDER)] == ["r1", "r2"]


def test_a_reminder_comes_before_the_prompt_is_denied_and_can_be_turned_off() -> None:
    rig = Rig(remind_after=600, permission_timeout=600, stall_after=0)
    rig.turn()
    rig.feed(EventKind.PERMISSION_REQUEST, request_id="r1", tool_name="Bash", input={})
    rig.clock.advance(480 + MAX_TICK)  # 80% of the timeout: two minutes left to answer
    [reminder] = rig.events(EventKind.REMINDER)
    assert reminder["waited"] < 600 and reminder["denied_in"] > 0
    off = Rig(remind_after=0, stall_after=0)
    off.turn()
    off.feed(EventKind.PERMISSION_REQUEST, request_id="r1", tool_name="Bash", input={})
    off.clock.advance(5000)
    assert off.recorded == []


def test_an_answered_prompt_gets_no_reminder() -> None:
    rig = Rig(remind_after=600)
    rig.turn()
    rig.feed(EventKind.PERMISSION_REQUEST, request_id="r1", tool_name="Bash", input={})
    rig.clock.advance(300)
    rig.feed(EventKind.PERMISSION_RESOLVED, request_id="r1", allow=True, by="user")
    rig.feed(EventKind.RESULT, text="done")
    rig.clock.advance(3600)
    assert rig.recorded == []


def test_the_turn_ends_with_its_result_or_failure_not_with_a_dropped_message() -> None:
    rig = Rig()
    rig.turn()
    rig.feed(EventKind.MESSAGE_FAILED, 8, reason="dropped at your request")  # a queued one
    assert rig.doing()["message_id"] == 7
    rig.feed(EventKind.MESSAGE_FAILED, 7, reason="the session keeper died")
    assert rig.watch.activity("work") is None
    rig.turn()
    rig.feed(EventKind.STATE, None, state="failed", reason="killed")
    assert rig.watch.activity("work") is None


def test_busy_without_a_user_event_is_a_turn_too() -> None:
    """A message carried over to a Claude that restarted is written again with only a
    `busy` state: a hang there is seen as well."""
    rig = Rig()
    rig.feed(EventKind.STATE, None, state="busy", reason="message")
    rig.clock.advance(400)
    assert rig.doing()["doing"] == "stalled" and len(rig.events(EventKind.STALLED)) == 1


def test_a_turn_claude_began_by_itself_is_watched_too() -> None:
    rig = Rig()
    rig.feed(EventKind.ASSISTANT_TEXT, None, text="follow-up: the background task finished")
    activity = rig.doing()
    assert activity["doing"] == "writing" and activity["message_id"] is None
    rig.clock.advance(400)
    [stalled] = rig.events(EventKind.STALLED)
    assert "message_id" not in stalled


def test_an_adopted_keeper_s_turn_and_prompt_are_watched() -> None:
    rig = Rig()
    rig.watch.adopted("work", True, 9, [{"request_id": "r9", "tool_name": "Edit",
                                         "input": {"file_path": "/src/a.py"}, "message_id": 9}])
    activity = rig.doing()
    assert (activity["doing"], activity["request_id"], activity["detail"], activity["message_id"]) == \
        ("waiting", "r9", "/src/a.py", 9)
    rig.watch.adopted("idle", False, None, [])
    assert rig.watch.activity("idle") is None


def test_what_is_no_output_of_claude_neither_starts_a_turn_nor_breaks_a_silence() -> None:
    rig = Rig()
    rig.feed(EventKind.SETTINGS, None, model="opus")
    rig.feed(EventKind.ERROR, None, message="Could not start Claude")
    assert rig.watch.activity("work") is None
    rig.turn()
    rig.clock.advance(200)
    rig.feed(EventKind.SETTINGS, None, claude_model="claude-x")
    rig.clock.advance(200)
    assert rig.doing()["silent_for"] == 400 and rig.doing()["doing"] == "stalled"


def test_a_bad_event_body_does_not_raise() -> None:
    rig = Rig()
    rig.turn()
    rig.watch.event("work", EventKind.TOOL_USE, 7, None, b"\xc1 not msgpack")
    rig.feed(EventKind.TOOL_USE, tool_use_id=None, name=None, input="not a map")
    assert rig.doing()["doing"] == "tool"


# the real CPU reader ------------------------------------------------------------------

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


@pytest.mark.system  # starts processes
def test_tree_cpu_counts_the_session_and_descendants_in_sessions_of_their_own() -> None:
    """A root in a session of its own (as Claude is) that starts a child in another
    session (as a tool may): the child's CPU is the root's tree's."""
    script = ("import os, subprocess, sys, time\n"
              f"subprocess.Popen([sys.executable, '-c', {BURN.format(seconds=0.6)!r}], start_new_session=True)\n"
              "time.sleep(60)\n")
    root = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    system = System()
    try:
        used = wait_for(lambda: (lambda t: t if t.get(root.pid, 0) >= 0.5 else None)(
            system.tree_cpu({root.pid, idle.pid})), 60, what="the burning grandchild's CPU to count")
        assert used[idle.pid] < 0.3  # (its interpreter's start-up)
        assert system.tree_cpu({999_999_999}) == {} and system.tree_cpu(()) == {}
    finally:
        for proc in (root, idle):
            os.killpg(proc.pid, 9)
            proc.wait()
    # (the grandchild, in a session of its own, exits once it has burnt its 0.6 s)


def test_an_adopted_turn_is_seen_as_the_previous_supervisor_saw_it_and_nothing_is_said_twice() -> None:
    """After a supervisor restart: since when the tool runs and the prompt waits come from
    the stored events; a stall or a reminder already said is not said again."""
    rig = Rig(stall_after=300, remind_after=600)
    rig.clock.advance(5000)  # (the new supervisor's clock; the wall says WALL0 + 5000)
    wall = WALL0 + 5000
    stored = [("user", 7, {"message_id": 7, "text": "go"}, wall - 1000),
              ("state", None, {"state": "busy", "reason": "message"}, wall - 1000),
              ("tool_use", 7, {"tool_use_id": "t1", "name": "Bash", "input": {"command": "make"}}, wall - 900),
              ("permission_request", 7, {"request_id": "r1", "tool_name": "Bash", "input": {"command": "make"}},
               wall - 800),
              ("reminder", 7, {"request_id": "r1"}, wall - 200),
              ("some_future_kind", 7, {}, wall - 100)]
    rig.watch.replay("work", stored)
    rig.watch.adopted("work", True, 7, [{"request_id": "r1", "tool_name": "Bash", "input": {"command": "make"}}])
    activity = rig.doing()
    assert (activity["doing"], activity["request_id"], activity["since"]) == ("waiting", "r1", wall - 800)
    assert activity["turn_since"] == wall - 1000
    rig.clock.advance(3000)
    assert rig.events(EventKind.REMINDER) == []
    # a stall that was said, with no output since: not said again
    stalled = Rig(stall_after=300)
    stalled.clock.advance(5000)
    stalled.watch.replay("work", [*stored[:3], ("stalled", 7, {"doing": "tool"}, wall - 500)])
    stalled.watch.adopted("work", True, 7, [])
    assert (stalled.doing()["doing"], stalled.doing()["since"]) == ("tool", wall - 900)
    stalled.clock.advance(1000)
    assert stalled.doing()["doing"] == "stalled" and stalled.events(EventKind.STALLED) == []
    # a request answered while no supervisor heard of it is gone; a finished turn is none
    rig.watch.adopted("work", True, 7, [])
    assert rig.doing()["doing"] == "tool"
    rig.watch.replay("done", [*stored[:3], ("result", 7, {"message_id": 7}, wall - 10)])
    rig.watch.adopted("done", False, None, [])
    assert rig.watch.activity("done") is None
