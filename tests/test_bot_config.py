"""The bot's configuration and its refusal to start without a token."""

import subprocess
import sys

import pytest

from bot._app import safe_filename
from bot._config import load, parse_user_ids
from supervisord_claude._errors import ConfigError


def test_env_overrides_the_file(tmp_path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[telegram]\ntoken = "file-token"\nallowed_users = [1]\napi_url = "http://file"\n')
    env = {"TELEGRAM_BOT_TOKEN": "env-token", "TELEGRAM_ALLOWED_USERS": "5, 6",
           "TELEGRAM_API_URL": "http://127.0.0.1:9/"}
    conf = load(["--config", str(cfg)], env)
    assert conf.token == "env-token" and conf.allowed_users == {5, 6}
    assert conf.base_url == "http://127.0.0.1:9/bot" and conf.base_file_url == "http://127.0.0.1:9/file/bot"
    from_file = load(["--config", str(cfg)], {})
    assert from_file.token == "file-token" and from_file.allowed_users == {1}


def test_default_api_is_telegram_and_allowlist_is_empty(tmp_path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    conf = load(["--config", str(empty)], {"TELEGRAM_BOT_TOKEN": "t"})
    assert conf.api_url == "https://api.telegram.org" and conf.allowed_users == frozenset()


def test_bad_user_ids_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="TELEGRAM_ALLOWED_USERS"):
        parse_user_ids("12, bob")


def test_missing_token_exits_1_with_a_clear_message(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "bot"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 1
    assert "no Telegram bot token" in result.stderr and "TELEGRAM_BOT_TOKEN" in result.stderr


@pytest.mark.parametrize("name, expected", [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "passwd"),
    ("..", "fallback"),
    (".hidden", "hidden"),
    ("my file (1).txt", "my_file_1_.txt"),
    (None, "fallback"),
])
def test_uploaded_file_names_are_made_safe(name, expected) -> None:
    assert safe_filename(name, "fallback") == expected
