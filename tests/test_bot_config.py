"""The bot's configuration and its refusal to start without a token."""

import subprocess
import sys

import pytest

from bot._config import load, parse_user_ids
from bot._errors import BotConfigError
from bot._uploads import safe_filename


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
    with pytest.raises(BotConfigError, match="TELEGRAM_ALLOWED_USERS"):
        parse_user_ids("12, bob")


@pytest.mark.system  # runs a program
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


def test_the_bot_reads_only_its_own_table_of_the_shared_config(tmp_path) -> None:
    cfg = tmp_path / "c.toml"
    # the supervisor's keys, even ones it would refuse, are not the bot's business
    cfg.write_text('idle_timeout = -5\n[personas.x]\nbogus = 1\n[telegram]\ntoken = "t"\nallowed_users = [3]\n')
    conf = load(["--config", str(cfg)], {})
    assert conf.token == "t" and conf.allowed_users == {3}


def test_a_bad_telegram_key_names_it(tmp_path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[telegram]\ntoken = "t"\nallowed_user = [3]\n')
    with pytest.raises(BotConfigError, match=r"telegram\.allowed_user"):
        load(["--config", str(cfg)], {})


def test_the_bot_has_no_idle_timeout_option() -> None:
    with pytest.raises(SystemExit):
        load(["--idle-timeout", "5"], {"TELEGRAM_BOT_TOKEN": "t"})


def test_check_is_read_from_the_given_arguments(tmp_path) -> None:
    from bot import main

    cfg = tmp_path / "c.toml"
    cfg.write_text('[telegram]\ntoken = "t"\n')
    assert load(["--config", str(cfg), "--check"], {}).check_only
    assert not load(["--config", str(cfg)], {}).check_only
    assert main(["--config", str(cfg), "--check"]) == 0  # returns at once: no bot is started


def test_merge_window_is_seconds_within_bounds(tmp_path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[telegram]\nmerge_window = 0.5\n')
    assert load(["--config", str(cfg)], {"TELEGRAM_BOT_TOKEN": "t"}).merge_window == 0.5
    cfg.write_text('[telegram]\nmerge_window = "soon"\n')
    with pytest.raises(BotConfigError, match=r"telegram\.merge_window"):
        load(["--config", str(cfg)], {"TELEGRAM_BOT_TOKEN": "t"})
