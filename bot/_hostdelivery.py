"""The delivery of one remote host (``[hosts.NAME]``): its own ``Core`` for the
``telegram-bot`` consumer of that host's supervisor — its subscription, acks and the
delivery's own progress kept in that host's kv — and everything about chats (active
sessions, owners, prompts, who wrote what) through the local link, kept once."""

from __future__ import annotations

import logging
from typing import Any

from telegram.ext import Application

from protocol import Op

from . import _hosts as hosts
from ._core import Core
from ._delivery import delivery_loop
from ._link import Link
from ._live import KV_PREVIEWS
from ._send import KV_PROGRESS
from ._workers import KV_DELIVERED

log = logging.getLogger("claude_telegram_bot")

#: what the delivery keeps about its own progress: per host, in that host's kv
HOST_KEYS = frozenset({KV_PROGRESS, KV_PREVIEWS, KV_DELIVERED})


class HostLink(Link):
    """The local link (the same chat state, kept once), but the delivery's own keys go
    to the host's supervisor."""

    def __init__(self, local: Link, client: hosts.HostClient) -> None:
        self.__dict__.update(local.__dict__)
        self._local, self._host_client = local, client

    async def request(self, op: Op | str, timeout: float | None = None, **args: Any) -> dict[str, Any]:
        if op.startswith("kv_") and args.get("key") in HOST_KEYS:
            return await self._host_client.request(op, timeout=timeout, **args)
        return await self._local.request(op, timeout=timeout, **args)


async def host_delivery(app: Application[Any, Any, Any, Any, Any, Any], local: Core, host: str,
                        client: hosts.HostClient) -> None:
    """One remote host's delivery loop, started once its link is up (a host that is down
    holds up only this loop)."""
    await hosts.connect(client)
    log.info("host %s: connected (supervisord-claude %s)", host, client.version)
    core = Core(local.config)
    core.client = client
    core.link = HostLink(local.link, client)
    await delivery_loop(app, core)
