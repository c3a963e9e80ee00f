"""Configuration: precedence and errors that name the key."""

import argparse

import pytest

from supervisord_claude._config import add_arguments, resolve
from supervisord_claude._errors import ConfigError


def args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_follow_xdg(tmp_path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path / "xdg"), "XDG_STATE_HOME": str(tmp_path / "state"),
           "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    import os
    old = dict(os.environ)
    os.environ.update(env)
    try:
        cfg = resolve(args(), env)
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert cfg.runtime_dir == tmp_path / "xdg" / "supervisord-claude"
    assert cfg.idle_timeout == 600 and cfg.claude_bin == "claude"


def test_command_line_beats_env_beats_file(tmp_path) -> None:
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('idle_timeout = 30\nmodel = "file-model"\n')
    env = {"SUPERVISORD_CLAUDE_IDLE_TIMEOUT": "20", "SUPERVISORD_CLAUDE_CONFIG": str(cfg_file)}
    assert resolve(args(), env).idle_timeout == 20
    assert resolve(args("--idle-timeout", "10"), env).idle_timeout == 10
    assert resolve(args(), {"SUPERVISORD_CLAUDE_CONFIG": str(cfg_file)}).idle_timeout == 30
    assert resolve(args(), env).model == "file-model"


def test_personas_and_telegram_section(tmp_path) -> None:
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(
        '[personas.reviewer]\nprompt = "Review."\nmodel = "m"\n'
        '[telegram]\ntoken = "123:abc"\nallowed_users = [1, 2]\n'
    )
    cfg = resolve(args("--config", str(cfg_file)), {})
    assert cfg.personas["reviewer"].prompt == "Review." and cfg.personas["reviewer"].model == "m"
    assert cfg.telegram.token == "123:abc" and cfg.telegram.allowed_users == (1, 2)


@pytest.mark.parametrize(
    "text, key",
    [
        ('idle_timeout = "x"', "idle_timeout"),
        ("idle_timeout = -5", "idle_timeout"),
        ("idle_timeout = true", "idle_timeout"),
        ('colour = "red"', "colour"),
        ("[personas.p]\nmodel = 'm'", "personas.p.prompt"),
        ("[telegram]\nallowed_users = ['me']", "telegram.allowed_users"),
        ("claude_args = [1]", "claude_args"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_bad_config_is_an_error_naming_the_key(tmp_path, text: str, key: str) -> None:
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(text)
    with pytest.raises(ConfigError) as err:
        resolve(args("--config", str(cfg_file)), {})
    assert key in str(err.value)


def test_bad_idle_timeout_option(tmp_path) -> None:
    with pytest.raises(ConfigError, match="idle_timeout"):
        resolve(args("--idle-timeout", "0", "--config", str(tmp_path / "none.toml")), {})


def test_the_readme_example_config_is_valid(tmp_path) -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(example)
    cfg = resolve(args("--config", str(cfg_file)), {})
    assert cfg.idle_timeout == 900 and cfg.permission_timeout == 600 and "reviewer" in cfg.personas
    assert cfg.telegram.allowed_users == (11111111,)


def test_the_watcher_s_thresholds_can_be_set_turned_off_and_are_checked(tmp_path) -> None:
    from supervisord_claude._config import describe

    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text("stall_after = 120\nstall_cpu_percent = 3\nremind_after = 0\n")
    cfg = resolve(args("--config", str(cfg_file)), {})
    assert (cfg.stall_after, cfg.stall_cpu_percent, cfg.remind_after) == (120, 3, 0)
    shown = {key: (value, where) for key, value, where in describe(cfg)}
    assert shown["stall_after"] == ("120 s", "file") and shown["remind_after"] == ("0 (off)", "file")
    assert shown["stall_cpu_percent"] == ("3 %", "file")
    cfg_file.write_text("")
    default = resolve(args("--config", str(cfg_file)), {})
    assert (default.stall_after, default.stall_cpu_percent, default.remind_after) == (300, 5, 600)
    for text, key in (("stall_after = -1", "stall_after"), ("remind_after = 'x'", "remind_after"),
                      ("stall_cpu_percent = 0", "stall_cpu_percent"), ("stall_cpu_percent = 101", "stall_cpu_percent")):
        cfg_file.write_text(text)
        with pytest.raises(ConfigError, match=key):
            resolve(args("--config", str(cfg_file)), {})
