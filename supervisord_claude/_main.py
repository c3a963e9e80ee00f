"""Command-line entry point of the ``supervisord-claude`` daemon."""

from __future__ import annotations

import logging
import sys

from . import _config
from ._errors import ConfigError, StartupRefused, StoreError


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s supervisord-claude %(levelname)s %(message)s",
    )
    try:
        config = _config.parse(argv)
        from ._startup import run

        return run(config)
    except (ConfigError, StartupRefused, StoreError) as exc:
        print(f"supervisord-claude: {exc}", file=sys.stderr)
        return 1
