"""Logging for every program of the project (supervisor, keepers, bot, claudectl): one
line per record, as text or as JSON (``--log-format``), at ``--log-level``, with secrets
masked whatever a message contains.

Fields given as ``extra`` (``session``, ``state``, ``reason``, ``pid``, ``keeper_pid``,
``claude_pid``...) are part of the JSON object and follow the text line as ``key=value``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from types import TracebackType
from typing import Any

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
#: environment variables that select the format and level where no option does
LOG_FORMAT_ENV = "SUPERVISORD_CLAUDE_LOG_FORMAT"
LOG_LEVEL_ENV = "SUPERVISORD_CLAUDE_LOG_LEVEL"

#: the attributes every LogRecord has; anything else on a record came as ``extra``
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}

# a Telegram bot token (digits:35 chars) and Anthropic keys, wherever they appear (an URL
# that python-telegram-bot or httpx logs carries the token)
_SECRETS = re.compile(r"\b\d{5,}:[A-Za-z0-9_-]{30,}\b|\bsk-ant-[A-Za-z0-9_-]{10,}")
_MASK = "«secret»"
#: environment variables that hold secrets: their values are masked in every record of
#: every program, whether or not it reads them
#: literal secrets shorter than this are not masked (no token or key is this short)
MIN_SECRET_LEN = 8
SECRET_ENV = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN", "TELEGRAM_BOT_TOKEN")


def mask_secrets(text: str, extra: tuple[str, ...] = ()) -> str:
    """The text with bot tokens, API keys and the given literal secrets replaced."""
    for secret in extra:
        if secret:
            text = text.replace(secret, _MASK)
    return _SECRETS.sub(_MASK, text)


class _Formatter(logging.Formatter):
    def __init__(self, program: str, as_json: bool, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.program = program
        self.as_json = as_json
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
        if self.as_json:
            doc: dict[str, Any] = {
                "ts": round(record.created, 3),
                "level": record.levelname.lower(),
                "program": self.program,
                "logger": record.name,
                "msg": message,
                **fields,
            }
            return mask_secrets(json.dumps(doc, default=str, ensure_ascii=False), self.secrets)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        line = f"{stamp},{int(record.msecs):03d} {self.program} {record.levelname} {message}"
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return mask_secrets(line, self.secrets)


def configure_logging(program: str, fmt: str | None = None, level: str | None = None,
                      secrets: tuple[str, ...] = ()) -> None:
    """Log to stderr as ``fmt`` (text, json; default from the environment, else text) at
    ``level`` (default from the environment, else info); ``secrets`` never appear."""
    fmt = (fmt or os.environ.get(LOG_FORMAT_ENV) or "text").lower()
    level = (level or os.environ.get(LOG_LEVEL_ENV) or "info").lower()
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(LOG_FORMATS)}")
    if level not in LOG_LEVELS:
        raise ValueError(f"log level {level!r} is not one of {', '.join(LOG_LEVELS)}")
    secrets = (*secrets, *(os.environ.get(name, "") for name in SECRET_ENV))
    handler = logging.StreamHandler(sys.stderr)
    # (a value too short to be a real secret is not masked: masking "t" would mangle every line)
    handler.setFormatter(_Formatter(program, fmt == "json", tuple(s for s in secrets if len(s) >= MIN_SECRET_LEN)))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    # a traceback that reaches the top goes through the handler too, so it is masked and
    # formatted like every other line (Python's default hook writes it raw to stderr)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    # libraries' chatter (every HTTP request the bot makes) only when asked for
    logging.getLogger("httpx").setLevel(logging.WARNING if level != "debug" else logging.DEBUG)


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger().critical("uncaught exception", exc_info=(kind, exc, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    logging.getLogger().critical("uncaught exception in thread %s", args.thread.name if args.thread else "?",
                                 exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
