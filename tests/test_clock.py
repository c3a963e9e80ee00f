"""A total clock: every timer and wait of the daemon's loops runs on its injected clock, so
a ``FakeClock`` drives each — the keeper's stop grace, the adoption wait, the prune and
store-watch loops — and the store stamps what it writes with the wall clock it is given.
(Waiting for a coroutine to reach its wait is a yield to the loop, not a sleep: nothing
here depends on real time.)"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from protocol import EventKind
from supervisord_claude._clock import FakeClock, wait_for
from supervisord_claude._configkeys import Config
from supervisord_claude._wire import STOP_GRACE, KeeperSpec
from supervisord_claude.keeper._actions import StopClaude
from supervisord_claude.keeper._keeper import Keeper
from supervisord_claude.supervisor import _supervisor
from supervisord_claude.supervisor._core import build_core
from supervisord_claude.supervisor._store import Store
from supervisord_claude.supervisor._supervisor import ADOPT_WINDOW, PRUNE_EVERY, Supervisor

from .test_lifecycle import FakeForkServer, RecordingLink, RecordingSystem


async def until(predicate: Callable[[], Any], what: str) -> None:
    """Let the loop run until ``predicate()`` holds (the coroutine under test reached its
    wait); fail, saying what, if it never does."""
    deadline = time.monotonic() + 30  # only decides when to give up
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"never reached: {what}")
        await asyncio.sleep(0)


class ReapingSystem(RecordingSystem):
    def __init__(self) -> None:
        super().__init__()
        self.terminated: list[int] = []

    def terminate(self, pids: Iterable[int], grace: float, poll: float = 0.05) -> int:
        self.terminated += pids
        return len(self.terminated)

    def processes_with_env(self, key: str, value: str) -> list[int]:
        return []


async def test_wait_for_ends_when_the_clock_says_not_before() -> None:
    clock = FakeClock()
    never = asyncio.Event()
    waiting = asyncio.ensure_future(wait_for(clock, never.wait(), 10.0))
    await until(lambda: clock.pending, "wait_for arms its timeout on the clock")
    clock.advance(9.9)
    await asyncio.sleep(0)
    assert not waiting.done()
    clock.advance(0.1)
    with pytest.raises(TimeoutError):
        await waiting
    assert clock.pending == 0  # nothing left armed


async def test_the_keeper_kills_a_claude_that_ignores_sigterm_when_its_clock_says_the_grace_is_over() -> None:
    clock, system = FakeClock(), RecordingSystem()
    spec = KeeperSpec(session="unit", instance="i", runtime_dir="/nonexistent", claude_bin="claude", cwd="/",
                      session_id="x", started=True, idle_timeout=10)
    keeper = Keeper(spec, death_fd=None, clock=clock, system=system)
    fed: list[Any] = []
    keeper.do = fed.append  # type: ignore[method-assign,assignment]

    class Claude:  # a Claude process that ignores SIGTERM
        pid, returncode = 4242, None
        exited = asyncio.Event()

        async def wait(self) -> int | None:
            await self.exited.wait()
            return self.returncode

    claude = Claude()
    killpg = system.killpg

    def signalled(pgid: int, sig: int) -> bool:
        if sig == signal.SIGKILL:
            claude.returncode = -9
            claude.exited.set()
        return killpg(pgid, sig)
    system.killpg = signalled  # type: ignore[method-assign]

    stopping = asyncio.ensure_future(keeper._stop_claude(StopClaude(run=1), claude))  # type: ignore[arg-type]
    await until(lambda: clock.pending, "the stop grace armed on the keeper's clock")
    assert system.signals == [("killpg", 4242, signal.SIGTERM)]
    clock.advance(STOP_GRACE - 0.5)
    await asyncio.sleep(0)
    assert not stopping.done() and len(system.signals) == 1
    clock.advance(0.5)
    await stopping
    assert system.signals[-1] == ("killpg", 4242, signal.SIGKILL)
    assert fed  # what the machine said about the stop was carried out


def supervisor_on(tmp_path: Path, clock: FakeClock, system: RecordingSystem,
                  adoptable: dict[int, str] | None = None) -> Supervisor:
    config = Config(runtime_dir=tmp_path / "run", state_dir=tmp_path / "state", claude_bin="/bin/true")
    store = Store(config.db_path)
    sup = Supervisor(config, store, system, FakeForkServer(), clock=clock, wall=lambda: 1_000_000.0,  # type: ignore[arg-type]
                     adoptable=adoptable)
    sup.core = build_core(config, store, system, clock, sup.wall, sup.fork, RecordingLink(),
                          lambda ident, frame: None, lambda: None, lambda: None)
    return sup


async def test_start_up_waits_for_a_left_keeper_as_long_as_its_clock_says_then_reaps_it(tmp_path: Path) -> None:
    clock, system = FakeClock(), ReapingSystem()
    sup = supervisor_on(tmp_path, clock, system, adoptable={4242: "alpha"})
    adopting = asyncio.ensure_future(sup._adopt())
    await until(lambda: clock.pending, "the adoption wait on the supervisor's clock")
    clock.advance(ADOPT_WINDOW - 0.5)
    await asyncio.sleep(0)
    assert not adopting.done() and system.terminated == []  # still waiting for it to say hello
    clock.advance(ADOPT_WINDOW)
    await adopting
    assert system.terminated == [4242]  # it never introduced itself: reaped
    sup.store.close()


async def test_the_prune_loop_runs_at_start_and_then_each_time_its_clock_says(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    sup = supervisor_on(tmp_path, clock, RecordingSystem())
    cutoffs: list[float] = []
    monkeypatch.setattr(sup.store, "prune", lambda older_than, max_runs=None: cutoffs.append(older_than) or 0)
    pruning = asyncio.ensure_future(sup._prune_loop())
    await until(lambda: clock.pending, "the prune loop waits on the supervisor's clock")
    assert len(cutoffs) == 1
    clock.advance(PRUNE_EVERY - 1)
    await asyncio.sleep(0)
    assert len(cutoffs) == 1
    clock.advance(1)
    await until(lambda: len(cutoffs) == 2, "a second prune, an hour of the clock later")
    assert cutoffs[0] == 1_000_000.0 - sup.config.event_retention_days * 86400  # on its wall clock
    pruning.cancel()
    sup.store.close()


async def test_the_store_watch_checks_the_file_each_time_its_clock_says(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    sup = supervisor_on(tmp_path, clock, RecordingSystem())
    checks: list[None] = []
    monkeypatch.setattr(sup.store, "file_problem", lambda: checks.append(None))
    watching = asyncio.ensure_future(sup._watch_store())
    await until(lambda: clock.pending, "the store watch waits on the supervisor's clock")
    assert len(checks) == 1
    clock.advance(_supervisor.STORE_CHECK_EVERY)
    await until(lambda: len(checks) == 2, "the next check")
    watching.cancel()
    sup.store.close()


def test_the_store_stamps_what_it_writes_with_the_wall_clock_it_is_given(tmp_path: Path) -> None:
    store = Store(tmp_path / "db", wall=lambda: 1234.5)
    try:
        created = store.create_session("a", "id", "/a", None, None)
        assert created.created == created.last_active == 1234.5
        event = store.append_event("a", EventKind.ASSISTANT_TEXT, {"text": "hi"})
        assert event["ts"] == 1234.5
        message_id, _ = store.add_message("a", "hello", [])
        assert store._read("SELECT created FROM messages WHERE id=?", (message_id,))[0][0] == 1234.5
        store.set_cursor("bot", event["id"])
        assert [moved for _, _, moved in store._read("SELECT consumer, position, moved FROM cursors")] == [1234.5]
    finally:
        store.close()


@pytest.mark.system  # (runs a stand-in git)
async def test_a_git_that_hangs_is_given_up_on_when_the_clock_says(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``/diff``'s git runs with a timeout on the supervisor's clock: a repository on a
    hung network mount answers "took too long", and the git process is killed."""
    from supervisord_claude._errors import OpError
    from supervisord_claude.supervisor._gitdiff import GIT_TIMEOUT, working_tree_diff

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    started = tmp_path / "git.pid"
    git = bin_dir / "git"
    git.write_text(f"#!/bin/sh\necho $$ > {started}\nexec sleep 600\n")
    git.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    clock = FakeClock()
    diff = asyncio.ensure_future(working_tree_diff(clock, str(tmp_path), None))
    deadline = time.monotonic() + 120  # (only decides when to give up; a loaded machine starts processes slowly)
    while not (clock.pending and started.exists() and started.read_text().strip()):
        assert time.monotonic() < deadline, "the stand-in git never started"
        await asyncio.sleep(0.02)
    clock.advance(GIT_TIMEOUT - 1)
    await asyncio.sleep(0)
    assert not diff.done()
    clock.advance(1)
    with pytest.raises(OpError, match="took more than"):
        await diff
    pid = int(started.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
