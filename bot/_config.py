"""The bot's configuration: token, allowlist and Bot API root from env or the TOML file."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from supervisord_claude._config import add_arguments, resolve
from supervisord_claude._errors import ConfigError

DEFAULT_API_URL = "https://api.telegram.org"
#: Bot API servers in the cloud hand out files of at most 20 MB.
MAX_FILE_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class BotConfig:
    token: str
    allowed_users: frozenset[int]
    api_url: str
    runtime_dir: Path
    max_file_bytes: int = MAX_FILE_BYTES

    @property
    def base_url(self) -> str:
        return f"{self.api_url.rstrip('/')}/bot"

    @property
    def base_file_url(self) -> str:
        return f"{self.api_url.rstrip('/')}/file/bot"


def parse_user_ids(raw: str) -> frozenset[int]:
    ids = set()
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            ids.add(int(part))
        except ValueError:
            raise ConfigError(
                f"TELEGRAM_ALLOWED_USERS: {part!r} is not a numeric Telegram user id"
            ) from None
    return frozenset(ids)


def load(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> BotConfig:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="claude-telegram-bot", description="Telegram front end of supervisord-claude"
    )
    add_arguments(parser)
    parser.add_argument("--check", action="store_true", help="only check that a token is configured")
    args = parser.parse_args(argv)
    config = resolve(args, env)
    token = env.get("TELEGRAM_BOT_TOKEN") or config.telegram.token
    if not token:
        raise ConfigError(
            "no Telegram bot token: set TELEGRAM_BOT_TOKEN or [telegram] token in "
            f"{config.config_path or 'the config file'} (get one from @BotFather)"
        )
    raw_users = env.get("TELEGRAM_ALLOWED_USERS")
    users = parse_user_ids(raw_users) if raw_users is not None else frozenset(config.telegram.allowed_users)
    api_url = env.get("TELEGRAM_API_URL") or config.telegram.api_url or DEFAULT_API_URL
    return BotConfig(token=token, allowed_users=users, api_url=api_url, runtime_dir=config.runtime_dir)
