"""The log lines every program writes: secrets masked, and nothing else mangled."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.system  # runs a program


def test_a_value_too_short_to_be_a_secret_does_not_mangle_the_log() -> None:
    """An environment variable of the secret kind set to a placeholder ("t") is not a
    secret: masking it replaced every "t" of every line (seen in the bot's log)."""
    code = ("import logging\nfrom protocol import configure_logging\n"
            "configure_logging('claude-telegram-bot')\n"
            "logging.getLogger('x').warning('the token is 123456:TEST-token-that-is-long-enough and so on')\n")
    done = subprocess.run([sys.executable, "-c", code], env={"ANTHROPIC_AUTH_TOKEN": "t", "PATH": "/usr/bin",
                                                              "TELEGRAM_BOT_TOKEN": "123456:TEST-token-that-is-long-enough",
                                                              "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "claude-telegram-bot WARNING the token is «secret» and so on" in done.stderr, done.stderr
