"""Faults of issue #30 (items 5, 6, 10, 12): two supervisors on one state dir, the fork
server killed, a runtime dir someone else made, a keeper or the bot stopped, the wall
clock stepped, a store that cannot be written, a Claude printing a malformed or enormous
line. Each test proves what a user would notice; ``./scripts/reliability`` runs them and
writes their figures into docs/reliability.md.
"""

from __future__ import annotations

import os
import time

import pytest

from .test_faults import record
from .test_supervisor import run_supervisor

pytestmark = pytest.mark.timeout(300)


def test_a_second_supervisor_on_the_same_state_dir_is_refused_naming_the_first(make_supervisor) -> None:
    first = make_supervisor().start()
    first.ctl("new", "alpha", check=True)
    second = make_supervisor()
    second.state_dir = first.state_dir  # its own runtime dir, the first one's store
    t0 = time.monotonic()
    result = run_supervisor(second, timeout=60)
    assert result.returncode == 1, result.stderr
    assert f"pid {first.proc.pid}" in result.stderr and str(first.state_dir) in result.stderr, result.stderr
    assert not second.pids()  # it started nothing: no keeper, no Claude of its own
    # the first goes on serving, alone
    assert "echo: still here" in first.ctl("send", "alpha", "still here", "--wait", check=True).stdout
    record("a second supervisor on the same state dir (another runtime dir)", rounds=1,
           outcome="refused, exit 1, naming the pid that holds it", seconds=round(time.monotonic() - t0, 1),
           first_supervisor="serves on")


NOBODY = 65534


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a directory to another user")
def test_a_runtime_dir_made_by_another_user_is_refused_saying_what_to_do_instead(make_supervisor) -> None:
    sup = make_supervisor()
    sup.runtime_dir.mkdir(mode=0o700)
    os.chown(sup.runtime_dir, NOBODY, NOBODY)  # as if another user made /tmp/supervisord-claude-<uid> first
    result = run_supervisor(sup)
    assert result.returncode == 1
    message = result.stderr
    assert f"owned by uid {NOBODY}" in message and "you cannot remove it" in message
    assert "--runtime-dir" in message and "XDG_RUNTIME_DIR" in message and "administrator" in message
    assert not sup.pids()
