"""Packaging: a wheel and an sdist, built from the tracked files, install into a fresh
venv with the three commands, and what they install runs a session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

import protocol

from .conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("supervisord-claude", "claudectl", "claude-telegram-bot")
pytestmark = pytest.mark.system  # builds and installs


def _tracked_copy(dest: Path) -> Path:
    """The repository as a fresh clone has it (no venv, no caches)."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    base = tmp_path_factory.mktemp("pkg")
    src = _tracked_copy(base / "src")
    out = base / "dist"
    # no isolation: the build backend comes from this venv, so no network is needed
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)],
                   check=True, capture_output=True, timeout=300)
    return out


def _fresh_venv(where: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=300)
    # the dependencies (pyzmq, python-telegram-bot, ...) from this venv, not the network;
    # a .pth adds the directory only, so this venv's editable install is not seen
    site = subprocess.run([str(where / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps-from-test-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return where


def test_the_wheel_holds_the_three_packages_and_no_tests(dist: Path) -> None:
    wheel = next(dist.glob("*.whl"))
    assert wheel.name == f"supervisord_claude-{protocol.__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.startswith("supervisord_claude-")}
    assert tops == {"supervisord_claude", "protocol", "bot"}
    entry_points = zipfile.ZipFile(wheel).read(
        f"supervisord_claude-{protocol.__version__}.dist-info/entry_points.txt").decode()
    assert all(f"{c} =" in entry_points for c in COMMANDS)
    sdist = next(dist.glob("*.tar.gz"))
    with tarfile.open(sdist) as tar:
        members = tar.getnames()
    assert any(m.endswith("/README.md") for m in members) and any(m.endswith("/pyproject.toml") for m in members)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("artifact", ["*.whl", "*.tar.gz"])
def test_what_is_built_installs_in_a_fresh_venv_and_runs_a_session(dist: Path, tmp_path: Path, artifact: str) -> None:
    venv = _fresh_venv(tmp_path / "venv")
    package = next(dist.glob(artifact))
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", str(package)], check=True, timeout=300, cwd=tmp_path)
    for command in COMMANDS:
        out = subprocess.run([str(venv / "bin" / command), "--version"], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path)
        assert out.stdout.strip() == f"{command} {protocol.__version__}", out.stderr
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import supervisord_claude; print(supervisord_claude.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    assert where.startswith(str(venv))  # the installed copy, not the source tree
    # the installed commands run a session (with the fake claude)
    run_dir, state = tmp_path / "run", tmp_path / "state"
    (tmp_path / "c.toml").write_text("")
    env = dict(os.environ, HOME=str(tmp_path))
    env.pop("SUPERVISORD_CLAUDE_RUNTIME_DIR", None)
    fake = tmp_path / "claude"
    fake.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "tests" / "fake_claude.py"}" "$@"\n')
    fake.chmod(0o755)
    supervisor = subprocess.Popen([str(venv / "bin" / "supervisord-claude"), "--runtime-dir", str(run_dir),
                                   "--state-dir", str(state), "--claude-bin", str(fake),
                                   "--config", str(tmp_path / "c.toml")], env=env, cwd=tmp_path,
                                  stderr=subprocess.PIPE)
    ctl = [str(venv / "bin" / "claudectl"), "--runtime-dir", str(run_dir), "--timeout", "60"]
    try:
        wait_for(lambda: subprocess.run([*ctl, "status"], env=env, capture_output=True).returncode == 0, 60,
                 what="the installed supervisor to answer")
        subprocess.run([*ctl, "new", "alpha"], check=True, timeout=60, env=env, capture_output=True)
        reply = subprocess.run([*ctl, "send", "alpha", "hello from a wheel", "--wait"], timeout=120, env=env,
                               capture_output=True, text=True)
        assert "echo: hello from a wheel" in reply.stdout, reply.stderr
        subprocess.run([*ctl, "shutdown"], check=True, timeout=60, env=env, capture_output=True)
        assert supervisor.wait(60) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
