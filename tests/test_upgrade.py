"""An upgrade is a restart that keeps Claude running (issue #30, item 11): the keepers a
previous release forked — each release is marked in CHANGELOG.md by its commit on main —
are adopted by this release's supervisor in the middle of a turn, and the turn's answer
arrives once.

The previous release's code really runs: its ``supervisord_claude`` and ``protocol`` are
taken from git (``git archive`` of the commit) into a temp dir, and a supervisor is
started with ``PYTHONPATH`` naming it (the same venv for the dependencies); its fork
server, and so its keepers, run that code. The upgrade swaps what ``PYTHONPATH`` names
for this checkout, as installing the new version swaps the installed code.

``UPGRADE_SESSIONS`` (default 4) sets how many sessions are mid-turn in the upgrade under
load; ``./scripts/reliability`` runs it with more and writes its figures (``RELIABILITY_LOG``)
into docs/reliability.md.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest

from protocol import RemoteError, __version__
from supervisord_claude import _wire

from .conftest import ROOT, SYSTEM, SupervisorProcess, wait_for
from .test_faults import no_gaps, one_outcome, record
from .test_restart import outcomes

SESSIONS = int(os.environ.get("UPGRADE_SESSIONS") or 4)

#: a row of CHANGELOG.md's release table: | version | date | `commit` | internal wire |
RELEASE_ROW = re.compile(r"^\| (?P<name>[^|]+?) \| [^|]+? \| `(?P<commit>[0-9a-f]{7,40})` \| (?P<wire>\d+) \|$",
                         re.MULTILINE)


@dataclass(frozen=True)
class Release:
    name: str
    commit: str
    wire: int


def releases() -> list[Release]:
    """Every release CHANGELOG.md marks by its commit on main."""
    text = (ROOT / "CHANGELOG.md").read_text()
    return [Release(m["name"], m["commit"], int(m["wire"])) for m in RELEASE_ROW.finditer(text)]


def adoptable() -> list[Release]:
    return [r for r in releases() if r.wire in _wire.ADOPTABLE_WIRE_VERSIONS]


def code_of(commit: str, into: Path) -> Path:
    """The daemon's code as it was at ``commit`` (its two packages), in ``into``."""
    git = shutil.which("git")
    if git is None or subprocess.run([git, "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
                                     capture_output=True).returncode != 0:
        pytest.skip(f"this checkout does not hold commit {commit} (no git, a shallow clone or a source archive):"
                    " the release's keeper cannot be run")
    into.mkdir()
    archive = subprocess.Popen([git, "-C", str(ROOT), "archive", commit, "supervisord_claude", "protocol"],
                               stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True)
    assert archive.wait() == 0
    return into


def install(code: Path, tree: Path) -> None:
    """Make ``code`` (what the supervisor's PYTHONPATH names) that tree, at once."""
    staged = code.with_name(code.name + ".new")
    staged.symlink_to(tree)
    os.replace(staged, code)


def forkservers(sup: SupervisorProcess) -> list[int]:
    return [pid for pid, _ in SYSTEM.processes_titled(f"supervisord-claude[{sup.instance}]: forkserver")]


def test_the_marked_releases_include_the_previous_one() -> None:
    """The release table is what the upgrade test runs: it must name at least the release
    before this one, with a wire this supervisor adopts."""
    marked = releases()
    assert marked, "CHANGELOG.md marks no release by its commit"
    assert marked[0].wire in _wire.ADOPTABLE_WIRE_VERSIONS, f"the newest marked release {marked[0]} is not adopted"


@pytest.mark.parametrize("how", ["kill9", "reload"])
@pytest.mark.parametrize("release", adoptable(), ids=lambda r: r.commit)
def test_a_turn_goes_on_through_an_upgrade_and_ends_once(make_supervisor, tmp_base: Path, release: Release,
                                                         how: str) -> None:
    code = tmp_base / "code"
    code.symlink_to(code_of(release.commit, tmp_base / f"release-{release.commit}"))
    sup = make_supervisor(env={"PYTHONPATH": str(code)}).start()
    # the release's code runs, not this checkout's (a main commit of the same version number
    # is told apart by its keepers' wire version, which the adoption below logs)
    assert sup.request("hello")["version"] != __version__ or release.wire != _wire.WIRE_VERSION
    sup.ctl("new", "alpha", check=True)
    sup.ctl("send", "alpha", "first", "--wait", check=True)
    gate = sup.base / "gate"
    with sup.client() as c:
        mid = c.request("send", session="alpha", text=f"waitfile:{gate} tool long job")["message_id"]
        claude = sup.wait_received("long job")["pid"]
        queued = c.request("send", session="alpha", text="queued behind it")["message_id"]
    keeper = sup.keeper_pid("alpha")
    old_forkserver = forkservers(sup)

    install(code, ROOT)  # the upgrade: this checkout's code is what is installed now
    if how == "kill9":  # the old supervisor dies; the new release is started
        sup.kill9()
        sup.start()
    else:  # the documented way: SIGHUP (claudectl restart) re-executes it in place
        os.kill(sup.proc.pid, signal.SIGHUP)
        wait_for(lambda: "Adopted 1 keepers" in sup.log(), what="the new release to adopt the keeper")
        wait_for(sup._answers, what="the new release to answer")
    assert sup.request("hello")["version"] == __version__
    assert "Adopted 1 keepers, reaped 0 stale" in sup.log(), sup.log()
    assert f"wire version {release.wire})" in sup.log()
    assert sup.keeper_pid("alpha") == keeper and SYSTEM.alive(claude)  # no new keeper, no new Claude
    assert sup.session("alpha")["state"] == "busy"
    # the old fork server went with its supervisor; the new one forks this release's keepers
    wait_for(lambda: len(forkservers(sup)) == 1 and forkservers(sup) != old_forkserver,
             what="one fork server, the new release's", seen=lambda: (forkservers(sup), old_forkserver))

    gate.touch()  # the turn ends, under the new supervisor
    with sup.follow("alpha") as events:
        events.wait(lambda evs: [e for e in evs if e.get("message_id") == queued and e["kind"] == "result"],
                    what="the queued message's answer")
    [done] = outcomes(sup, "alpha", mid)  # exactly one outcome: its result
    assert done["kind"] == "result" and "long job" in done["text"]
    [tool] = [e for e in sup.events("alpha") if e["kind"] == "tool_use" and e.get("message_id") == mid]
    assert tool["tool_use_id"] == "toolu_1" and tool["name"] == "Bash"  # in this release's shape
    [after] = outcomes(sup, "alpha", queued)
    assert after["kind"] == "result" and "history: 4 earlier" in after["text"]

    # the next message goes to the same keeper and Claude...
    sent = sup.ctl("send", "alpha", "next one", "--wait", check=True)
    assert "history: 6 earlier" in sent.stdout
    assert len(sup.claude_starts()) == 1
    # ...and once suspended, the session resumes on a keeper of this release, same conversation
    sup.ctl("suspend", "alpha", check=True)
    sup.wait_state("alpha", "suspended")
    wait_for(lambda: not SYSTEM.alive(keeper), what="the previous release's keeper to exit")
    resumed = sup.ctl("send", "alpha", "on the new keeper", "--wait", check=True)
    assert "history: 8 earlier" in resumed.stdout
    assert sup.keeper_pid("alpha") not in (None, keeper)
    assert len(sup.claude_starts()) == 2

    events = sup.events("alpha")
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))  # no event stored twice, none lost
    users = [e["message_id"] for e in events if e["kind"] == "user"]
    assert len(users) == len(set(users)) == 5  # nothing was sent to Claude twice


@pytest.mark.timeout(300 + 10 * SESSIONS)
@pytest.mark.parametrize("release", adoptable(), ids=lambda r: r.commit)
def test_an_upgrade_under_load_loses_and_doubles_nothing(make_supervisor, tmp_base: Path, release: Release) -> None:
    """Many sessions mid-turn: half hold a turn across the upgrade, half stream one through
    it (events flowing while the supervisor re-executes); every answer arrives once."""
    code = tmp_base / "code"
    code.symlink_to(code_of(release.commit, tmp_base / f"release-{release.commit}"))
    sup = make_supervisor(env={"PYTHONPATH": str(code)}).start()
    names = [f"s{i}" for i in range(SESSIONS)]
    gates = {name: sup.base / f"gate-{name}" for name in names}
    held: dict[str, int] = {}
    queued: dict[str, int] = {}
    with sup.client() as c:
        for name in names:
            c.request("create", session=name)
            held[name] = c.request("send", session=name, text=f"waitfile:{gates[name]} tools:3 held in {name}.")[
                "message_id"]
            queued[name] = c.request("send", session=name, text=f"stream:2 burst:200 queued in {name}.")["message_id"]
    for name in names:
        sup.wait_received(f"held in {name}.")
    keepers = {name: sup.keeper_pid(name) for name in names}
    streaming = names[::2]  # their held turn ends now: the queued one streams through the upgrade
    for name in streaming:
        gates[name].touch()
    for name in streaming:
        sup.wait_received(f"queued in {name}.")

    install(code, ROOT)
    os.kill(sup.proc.pid, signal.SIGHUP)
    wait_for(lambda: f"Adopted {SESSIONS} keepers," in sup.log(), what="the new release to adopt every keeper",
             seen=lambda: sup.log()[-2000:])
    wait_for(sup._answers, what="the new release to answer")
    assert sup.request("hello")["version"] == __version__
    for name in names:
        gates[name].touch()

    for name in names:
        for mid in (held[name], queued[name]):
            assert one_outcome(sup, name, mid)["kind"] == "result"
    with sup.client() as c:
        after = {name: c.request("send", session=name, text=f"after the upgrade in {name}.")["message_id"]
                 for name in names}
    for name in names:
        assert one_outcome(sup, name, after[name])["kind"] == "result"
        no_gaps(sup, name)
        users = [e["message_id"] for e in sup.events(name) if e["kind"] == "user"]
        assert sorted(users) == sorted({held[name], queued[name], after[name]})  # each to Claude once
    assert {name: sup.keeper_pid(name) for name in names} == keepers  # adopted, none replaced
    assert len(sup.claude_starts()) == SESSIONS  # no Claude restarted
    record(f"an upgrade from {release.name} (commit {release.commit}): the code swapped, then SIGHUP,"
           " with every session mid-turn", sessions=SESSIONS, keepers_adopted=SESSIONS,
           turns_through_the_upgrade=2 * SESSIONS, answered_once=f"{3 * SESSIONS}/{3 * SESSIONS}",
           events_lost_or_doubled=0, claude_restarted=0)


@pytest.mark.parametrize("release", [r for r in adoptable() if r.wire < _wire.INTERRUPT_REPORTS_SINCE],
                         ids=lambda r: r.commit)
def test_an_interrupt_of_an_adopted_older_keeper_is_sent_and_said_unconfirmable(make_supervisor, tmp_base: Path,
                                                                                release: Release) -> None:
    """A keeper of an older wire never reports what became of an interrupt: the reply says
    so at once (it waited interrupt_timeout, then blamed a stopped keeper), and the turn
    ends interrupted, once."""
    code = tmp_base / "code"
    code.symlink_to(code_of(release.commit, tmp_base / f"release-{release.commit}"))
    sup = make_supervisor(env={"PYTHONPATH": str(code)}).start()
    sup.ctl("new", "alpha", check=True)
    mid = sup.request("send", session="alpha", text="sleep:600 long job")["message_id"]
    sup.wait_received("long job")
    install(code, ROOT)
    sup.kill9()
    sup.start()
    assert "Adopted 1 keepers, reaped 0 stale" in sup.log()

    with sup.client(timeout=30) as c:
        reply = c.request("interrupt", session="alpha")
    assert reply["confirmed"] is False and "cannot report whether Claude confirmed it" in reply["detail"], reply
    done = one_outcome(sup, "alpha", mid)
    assert done["kind"] == "result" and done["interrupted"] is True
    sent = sup.ctl("send", "alpha", "next one", "--wait", check=True)
    assert "history: 1 earlier" in sent.stdout  # the same conversation (the cut turn left no answer)


def test_an_event_of_wire_3_reads_as_this_release_writes_it() -> None:
    """0.2.0's keepers send an event's body as a map, and a tool call's id as ``id``."""
    frame = msgpack.packb({"t": "event", "kind": "tool_use", "n": 7, "body": {
        "id": "toolu_9", "name": "Bash", "input": {"command": "ls"}, "message_id": 12}}, use_bin_type=True)
    [event] = _wire.decode_all(frame)
    assert isinstance(event, _wire.KeeperEvent)
    assert (event.kind, event.n, event.message_id) == ("tool_use", 7, 12)
    assert event.body == {"tool_use_id": "toolu_9", "name": "Bash", "input": {"command": "ls"}, "message_id": 12}
    with pytest.raises(_wire.WireError):
        _wire.decode(msgpack.packb({"t": "event", "kind": "tool_use", "n": 7, "body": "not a map"}))


def test_a_restart_into_code_that_cannot_start_is_refused_and_the_turn_goes_on(make_supervisor,
                                                                               tmp_base: Path) -> None:
    """An upgrade whose new dependency is not installed would not come back: the restart
    is refused (op and SIGHUP), this supervisor goes on; once it is installed, it goes."""
    code = tmp_base / "code"
    code.symlink_to(ROOT)
    broken = tmp_base / "broken"  # this release, without a dependency it imports
    broken.mkdir()
    for package in ("supervisord_claude", "protocol"):
        (broken / package).symlink_to(ROOT / package)
    (broken / "orjson.py").write_text("raise ModuleNotFoundError(\"No module named 'orjson'\")\n")
    sup = make_supervisor(env={"PYTHONPATH": str(code)}).start()
    sup.ctl("new", "alpha", check=True)
    gate = sup.base / "gate"
    mid = sup.request("send", session="alpha", text=f"waitfile:{gate} long job")["message_id"]
    claude = sup.wait_received("long job")["pid"]
    keeper = sup.keeper_pid("alpha")

    install(code, broken)
    with pytest.raises(RemoteError) as refused:
        sup.request("restart")
    assert refused.value.code == "restart_refused" and "No module named 'orjson'" in refused.value.message
    os.kill(sup.proc.pid, signal.SIGHUP)
    wait_for(lambda: sup.log().count("restart refused") == 2, what="the SIGHUP to be refused too")
    assert sup.proc.poll() is None and sup.request("hello")["version"] == __version__
    assert "restarting in place" not in sup.log() and "Traceback" not in sup.log()

    install(code, ROOT)  # the dependency is there now
    sup.request("restart")
    wait_for(lambda: "Adopted 1 keepers" in sup.log(), what="the restart to adopt the keeper")
    wait_for(sup._answers, what="the restarted supervisor to answer")
    assert sup.keeper_pid("alpha") == keeper and SYSTEM.alive(claude)
    gate.touch()
    sup.wait_event("alpha", lambda e: e.get("message_id") == mid and e["kind"] == "result", what="the answer")
    assert len(outcomes(sup, "alpha", mid)) == 1
