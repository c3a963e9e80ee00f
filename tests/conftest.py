"""Shared fixtures: a real supervisor process on a private runtime dir, with the fake
``claude``; a guard that fails any test leaving one of its processes alive; and the test
tiers (``unit``, ``core``, ``system``), given to each test here by what it uses."""

from __future__ import annotations

import _posixsubprocess
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from protocol import Client, ConnectionFailed, instance_id
from supervisord_claude._claude import INSTANCE_ENV
from supervisord_claude._os import System

from .fake_telegram import TOKEN, FakeTelegram

ROOT = Path(__file__).resolve().parent.parent
FAKE_CLAUDE = ROOT / "tests" / "fake_claude.py"
SYSTEM = System()


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "",
             seen: Callable[[], Any] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test on timeout,
    saying what was awaited and what was last seen (``seen()``, else the last value).
    ``timeout`` is a generous bound for a loaded machine: it only decides when to give up."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            last = seen() if seen is not None else value
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}; last seen: {last!r}"[:4000])
        time.sleep(interval)


class EventFollower:
    """One subscription to a session's stored events, read as they are published: a test
    waits for the event that proves what it needs, not for a poll to notice it."""

    def __init__(self, sup: SupervisorProcess, name: str, after: int = 0) -> None:
        self.client = sup.client()
        self.events: list[dict[str, Any]] = []
        self.sub = self.client.request("subscribe", session=name, after=after, window=1024)["sub"]
        self.name = name

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> EventFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, timeout: float) -> bool:
        frame = self.client.next_event(timeout=timeout)
        if frame is None:
            return False
        self.events.append(frame["event"])
        if len(self.events) % 256 == 0:
            self.client.request("ack", sub=self.sub, upto=frame["event"]["id"])
        return True

    def wait(self, predicate: Callable[[list[dict[str, Any]]], Any], timeout: float = 60.0, what: str = "") -> Any:
        """Read events until ``predicate(events so far)`` is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self.events)
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                tail = [(e["seq"], e["kind"], e.get("state") or e.get("text") or e.get("reason"))
                        for e in self.events[-15:]]
                pytest.fail(f"timed out after {timeout}s waiting for {what or predicate} in {self.name};"
                            f" last events seen: {tail!r}"[:4000])
            self._read(min(left, 1.0))

    def wait_event(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60.0,
                   what: str = "") -> dict[str, Any]:
        """The first event (from the start) matching ``predicate``."""
        found: dict[str, Any] = self.wait(lambda evs: next((e for e in evs if predicate(e)), None),
                                          timeout, what or "a matching event")
        return found

    def wait_count(self, predicate: Callable[[dict[str, Any]], bool], count: int, timeout: float = 60.0,
                   what: str = "") -> list[dict[str, Any]]:
        """The first ``count`` events matching ``predicate``."""
        def enough(evs: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
            hits = [e for e in evs if predicate(e)]
            return hits[:count] if len(hits) >= count else None
        found: list[dict[str, Any]] = self.wait(enough, timeout, what or f"{count} matching events")
        return found


def processes_of(instance: str) -> list[int]:
    """Every live process that belongs to one supervisor instance: supervisor, fork
    server and keepers by title, Claude children by their environment marker."""
    titled = [pid for pid, _ in SYSTEM.processes_titled(f"supervisord-claude[{instance}]:")]
    marked = SYSTEM.processes_with_env(INSTANCE_ENV, instance)
    return sorted(set(titled + marked))


def real_claude_bin() -> str:
    """The real Claude Code CLI bundled in the pinned claude-agent-sdk test dependency."""
    import importlib.util

    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("claude-agent-sdk is not installed; run ./scripts/test, which installs it")
    path = Path(next(iter(spec.submodule_search_locations))) / "_bundled" / "claude"
    if not path.exists():
        pytest.fail(f"no bundled claude binary at {path}")
    return str(path)


# --- test tiers ------------------------------------------------------------------------
# Every test gets one tier, here, from what it uses (no test file lists its own):
#   system — starts processes: a supervisor or a bot (the fixtures below), or marked
#            ``system`` by hand when it runs one itself (claudectl, a build, a fork);
#   core   — the supervisor's parts in-process (its module imports supervisord_claude.supervisor);
#   unit   — the rest: no process, no supervisor core.
# A unit or core test that starts a process fails (``_processes_only_in_system``), so
# ``-m "not system"`` stays a loop of seconds. ``slow`` is given by hand, beside the tier.

#: fixtures that start processes (``supervisor`` and ``bot_env`` ask for ``make_supervisor``)
SYSTEM_FIXTURES = frozenset({"make_supervisor"})
TIERS = ("unit", "core", "system")


def _uses_supervisor_core(module: object) -> bool:
    for value in vars(module).values():
        where = getattr(value, "__module__", None) or getattr(value, "__name__", None)
        if isinstance(where, str) and where.startswith("supervisord_claude.supervisor"):
            return True
    return False


def _tier(item: pytest.Item) -> str:
    if item.get_closest_marker("system") or item.get_closest_marker("claude_cli"):
        return "system"
    if SYSTEM_FIXTURES & set(getattr(item, "fixturenames", ())):
        return "system"
    module = getattr(item, "module", None)
    return "core" if module is not None and _uses_supervisor_core(module) else "unit"


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tier = _tier(item)
        if not item.get_closest_marker(tier):
            item.add_marker(tier)


def _no_process(what: str) -> Callable[..., Any]:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a unit or core test started a process ({what}): it belongs to the system"
                             " tier — use a process fixture or mark it @pytest.mark.system")
    return refuse


@pytest.fixture(autouse=True)
def _processes_only_in_system(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("system"):
        return
    for module, name in ((os, "fork"), (os, "forkpty"), (os, "posix_spawn"), (os, "posix_spawnp"),
                         (_posixsubprocess, "fork_exec"), (subprocess, "_fork_exec")):
        monkeypatch.setattr(module, name, _no_process(f"{module.__name__}.{name}"))


def pytest_report_header(config: pytest.Config) -> str:
    try:
        version = subprocess.run([real_claude_bin(), "--version"], capture_output=True, text=True,
                                 timeout=30).stdout.strip()
    except BaseException as exc:  # pytest.fail raises outside a test here
        version = f"unavailable ({exc})"
    return f"claude CLI (conformance tier): {version}"


class SupervisorProcess:
    """A real ``supervisord-claude`` started as a subprocess for one test."""

    def __init__(self, base: Path, claude_bin: Path | str = FAKE_CLAUDE, idle_timeout: float = 60.0,
                 env: dict[str, str] | None = None, extra_args: list[str] | None = None,
                 config: str = "") -> None:
        self.base = base
        self.runtime_dir = base / "run"
        self.state_dir = base / "state"
        self.home = base / "home"
        self.home.mkdir(exist_ok=True)
        self.claude_log = base / "fake-claude.jsonl"
        self.log_path = base / "supervisor.log"
        if claude_bin == FAKE_CLAUDE:
            # exec this interpreter directly: no PATH shims forking helper processes
            wrapper = base / "claude"
            wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_CLAUDE}" "$@"\n')
            wrapper.chmod(0o755)
            claude_bin = wrapper
        self.claude_bin = str(claude_bin)
        self.idle_timeout = idle_timeout
        self.extra_args = extra_args or []
        self.env = dict(os.environ)
        self.env.update({"HOME": str(self.home), "FAKE_CLAUDE_LOG": str(self.claude_log),
                         "PYTHONUNBUFFERED": "1"})
        self.env.pop("SUPERVISORD_CLAUDE_RUNTIME_DIR", None)
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.instance = instance_id(self.runtime_dir)
        self.config_text = config

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "supervisord_claude", "--runtime-dir", str(self.runtime_dir),
                "--state-dir", str(self.state_dir), "--claude-bin", self.claude_bin,
                "--idle-timeout", str(self.idle_timeout), "--config", str(self.config_path()),
                *self.extra_args]

    def config_path(self) -> Path:
        path = self.base / "config.toml"
        if not path.exists():
            path.write_text(self.config_text + '\n[personas.reviewer]\nprompt = "You review code."\nmodel = "persona-model"\n')
        return path

    def start(self, wait: bool = True) -> SupervisorProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv(), env=self.env, stdout=log, stderr=log, cwd=self.base)
        log.close()
        if wait:
            wait_for(self._answers, 60, what="the supervisor to answer hello")
        return self

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            pytest.fail(f"supervisor exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with Client(self.runtime_dir, timeout=1.0) as c:
                c.request("hello")
            return True
        except ConnectionFailed:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def client(self, timeout: float = 10.0) -> Client:
        return Client(self.runtime_dir, timeout=timeout)

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        with self.client() as c:
            return c.request(op, **args)

    def ctl(self, *args: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "supervisord_claude.ctl", "--runtime-dir", str(self.runtime_dir), *args],
            capture_output=True, text=True, env=self.env, timeout=timeout,
        )
        if check and result.returncode != 0:
            pytest.fail(f"claudectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result

    def _claude_log(self, event: str) -> list[dict[str, Any]]:
        if not self.claude_log.exists():
            return []
        lines = [json.loads(line) for line in self.claude_log.read_text().splitlines()]
        return [line for line in lines if line.get("event") == event]

    def claude_starts(self) -> list[dict[str, Any]]:
        """Every start of the fake claude: {pid, argv, cwd}."""
        return self._claude_log("start")

    def claude_received(self) -> list[dict[str, Any]]:
        """Every user message the fake claude has read (and saved in its history)."""
        return self._claude_log("received")

    def wait_received(self, text: str, timeout: float = 60) -> dict[str, Any]:
        """Wait until the fake claude has read a message containing ``text``: the proof
        that Claude has it, which no session state gives (``busy`` = written to stdin)."""
        found: dict[str, Any] = wait_for(
            lambda: next((r for r in self.claude_received() if text in r["text"]), None), timeout,
            what=f"the fake claude to read a message with {text!r}",
            seen=lambda: [r["text"] for r in self.claude_received()][-5:])
        return found

    def wait_consumer(self, consumer: str, upto: int | None = None, timeout: float = 60) -> int:
        """Wait until the named consumer (e.g. the bot) has acked every event up to
        ``upto`` (default: every event stored now): proof it has handled them."""
        target = self.request("status")["last_event_id"] if upto is None else upto
        last: list[int] = [0]

        def acked() -> bool:
            last[0] = self.request("status")["consumers"].get(consumer, 0)
            return last[0] >= target
        wait_for(acked, timeout, what=f"consumer {consumer} to ack event {target}", seen=lambda: last[0])
        return target

    def follow(self, name: str, after: int = 0) -> EventFollower:
        return EventFollower(self, name, after)

    def session(self, name: str) -> dict[str, Any]:
        return self.request("status", session=name)

    def events(self, name: str, after: int = 0) -> list[dict[str, Any]]:
        """All stored events of a session after ``after`` (via a subscription)."""
        out: list[dict[str, Any]] = []
        with self.client() as c:
            last = c.request("status", session=name)["last_seq"]
            if last <= after:
                return out
            sub = c.request("subscribe", session=name, after=after)["sub"]
            while True:
                frame = c.next_event(timeout=5)
                assert frame is not None, "events stopped before the last sequence number"
                out.append(frame["event"])
                if frame["event"]["seq"] >= last:
                    return out
                if len(out) % 100 == 0:  # release the subscription window
                    c.request("ack", sub=sub, upto=frame["event"]["id"])

    def wait_event(self, name: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60,
                   after: int = 0, what: str = "") -> dict[str, Any]:
        """The first stored event of ``name`` after ``after`` that matches, waiting for it
        to be published if it is not there yet."""
        with self.follow(name, after) as events:
            return events.wait_event(predicate, timeout, what or f"an event of {name}")

    def wait_state(self, name: str, *states: str, timeout: float = 60) -> dict[str, Any]:
        last: dict[str, Any] = {}

        def reached() -> dict[str, Any] | None:
            last.update(self.session(name))
            return dict(last) if last["state"] in states else None
        found: dict[str, Any] = wait_for(reached, timeout, what=f"{name} to reach {states}",
                                         seen=lambda: last.get("state"))
        return found

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("supervisor did not stop within 20s of SIGTERM")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def crash(self) -> None:
        """Everything of this instance dies at once (supervisor, fork server, keepers,
        Claude), as in a power cut: what is left to a restart is the store."""
        self.kill9()
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not self.pids(), what="every process of the instance to die")

    def pids(self) -> list[int]:
        return processes_of(self.instance)

    def keeper_pid(self, name: str) -> int | None:
        for pid, title in SYSTEM.processes_titled(f"supervisord-claude[{self.instance}]: keeper {name}"):
            if title.split()[-1] == name:
                return pid
        return None

    def claude_pids(self) -> list[int]:
        return SYSTEM.processes_with_env(INSTANCE_ENV, self.instance)


@pytest.fixture
def tmp_base() -> Iterator[Path]:
    # short paths: a Unix socket path must stay under ~107 bytes
    with tempfile.TemporaryDirectory(prefix="scl-") as d:
        base = Path(d)
        os.chmod(base, 0o700)
        yield base


_instances: list[str] = []


@pytest.fixture
def make_supervisor(tmp_base: Path) -> Iterator[Callable[..., SupervisorProcess]]:
    started: list[SupervisorProcess] = []
    counter = iter(range(100))

    def make(**kwargs: Any) -> SupervisorProcess:
        base = tmp_base / f"s{next(counter)}"
        base.mkdir()
        sup = SupervisorProcess(base, **kwargs)
        started.append(sup)
        _instances.append(sup.instance)
        return sup

    yield make
    for sup in started:
        sup.stop()


@pytest.fixture
def supervisor(make_supervisor: Callable[..., SupervisorProcess]) -> SupervisorProcess:
    return make_supervisor(idle_timeout=60).start()


@pytest.fixture
def telegram() -> Iterator[Any]:
    """The in-process fake Telegram Bot API."""
    api = FakeTelegram().start()
    yield api
    api.stop()


@pytest.fixture(autouse=True)
def no_processes_left_behind() -> Iterator[None]:
    """Fail the test if any process of a supervisor it started is still alive."""
    before = len(_instances)
    yield
    mine = _instances[before:]
    del _instances[before:]
    leftover: dict[int, str] = {}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        leftover = {pid: SYSTEM.title(pid) for inst in mine for pid in processes_of(inst)}
        if not leftover:
            return
        time.sleep(0.1)
    for pid in leftover:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    pytest.fail(f"processes left behind: {leftover}")


# --- the Telegram bot as a process -------------------------------------------------------

USER = 111


class BotProcess:
    def __init__(self, sup: SupervisorProcess, api: FakeTelegram) -> None:
        self.sup = sup
        self.api = api
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = sup.base / "bot.log"
        self.allowed = str(USER)
        self.extra_args: list[str] = []
        #: how the bot is started (e.g. a systemd unit's ExecStart)
        self.command = [sys.executable, "-m", "bot"]

    def start(self) -> BotProcess:
        env = dict(self.sup.env, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_ALLOWED_USERS=self.allowed,
                   TELEGRAM_API_URL=self.api.url)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.command, "--runtime-dir", str(self.sup.runtime_dir),
             "--config", str(self.sup.config_path()), *self.extra_args],
            env=env, stdout=log, stderr=log,
        )
        log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"bot did not stop on SIGTERM; its log ends:\n{self.log()[-3000:]}")
            if self.proc.returncode != 0:  # e.g. its stop hung and it gave up at its deadline
                pytest.fail(f"bot exited {self.proc.returncode} on SIGTERM; its log ends:\n{self.log()[-3000:]}")


@pytest.fixture
def bot_env(make_supervisor, telegram):
    """(supervisor, fake telegram, bot factory); every bot is stopped afterwards."""
    bots: list[BotProcess] = []

    def make(sup: SupervisorProcess, extra_args: Sequence[str] = (), command: Sequence[str] = (),
             allowed: Sequence[int] = (USER,)) -> BotProcess:
        b = BotProcess(sup, telegram)
        b.extra_args = list(extra_args)
        b.command = list(command) or b.command
        b.allowed = ",".join(map(str, allowed))
        bots.append(b)
        return b.start()

    yield make
    for b in bots:
        b.stop()
        assert b.proc is None or b.proc.poll() is not None
        print(f"--- bot log\n{b.log()[-6000:]}\n--- supervisor log\n{b.sup.log()[-4000:]}")  # shown on failure
