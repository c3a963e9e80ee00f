"""The bot across machines: a session of another host is ``name@host``.

Each ``[hosts.NAME]`` of the config file is a machine whose supervisor the bot reaches
through ssh (``protocol.AsyncClient(host=…)``: one link per host). What concerns the
chats — each chat's active session, owners, prompts, who wrote which message — stays in
this machine's supervisor (``local``), as for local sessions; a request about
``work@gpu`` goes to gpu's supervisor as ``work`` (``Link.request``). Each host has its
own delivery loop, as the consumer ``telegram-bot`` of that host's supervisor: its
cursor, acks and the idempotency keys of what is sent there are that host's own, and a
host that is down holds up only its own loop. Files cross machines through the session's
own supervisor (``_files``: uploads, ``/get``, the outbox; ``/ls`` and ``/cd`` by
``list_dir``), routed like any request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from protocol import (
    LOCAL,
    AsyncClient,
    ConnectionFailed,
    Host,
    LinkState,
    ProtocolError,
    RemoteError,
    Subscription,
    VersionMismatch,
)

from . import _render as render

log = logging.getLogger("claude_telegram_bot")

#: how long a host whose protocol version differs waits before it is tried again
VERSION_RETRY = 60.0
#: how long a request waits for a host whose link is being dialled
CONNECTING_WAIT = 10.0


def split(name: str) -> tuple[str, str]:
    """``("work", "gpu")`` of ``work@gpu``; ``("work", "local")`` of ``work`` (a session
    name never holds an ``@``)."""
    session, _, host = name.partition("@")
    return session, host or LOCAL


def qualified(session: str, host: str) -> str:
    return session if host == LOCAL else f"{session}@{host}"


def is_remote(name: str | None) -> bool:
    return name is not None and "@" in name


#: a message as the bot keeps it (Retry, failures kept for a button): each supervisor
#: numbers its own messages, so one of another host is ``"<id>@<host>"``
MessageKey = int | str


def message_key(message_id: int, session: str) -> MessageKey:
    host = split(session)[1]
    return message_id if host == LOCAL else f"{message_id}@{host}"


def parse_message_key(text: str) -> MessageKey:
    """A ``MessageKey`` from a button's data (-1, which names no message, if it is none)."""
    number, at, host = text.partition("@")
    if not number.isdigit():
        return -1
    return f"{int(number)}@{host}" if at else int(number)


class ChatLink(Protocol):
    """What this module needs of the bot's ``_commands.Link`` (which depends on it)."""

    client: AsyncClient
    remotes: Remotes | None

    async def kv_cached(self, key: str, timeout: float | None = None) -> Any: ...
    async def kv_put(self, key: str, value: Any) -> None: ...
    async def visible(self, session: str) -> bool: ...
    async def with_failures(self, sessions: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]: ...
    def remember(self, message_id: int, fields: dict[str, Any]) -> None: ...


class HostUnreachable(ConnectionFailed):
    """A request for a host whose link is down: says why (ssh's words)."""


class HostSubscription(Subscription):
    """A subscription on a remote host's supervisor: each event's session is named as
    the chats know it, ``name@host``."""

    host = ""

    async def next(self, timeout: float | None = None, keepalive: float = 3.0) -> dict[str, Any] | None:
        event = await super().next(timeout, keepalive)
        if event is not None and isinstance(event.get("session"), str):
            event["session"] = qualified(event["session"], self.host)
        return event


class HostClient(AsyncClient):
    """The client of one remote host; its subscriptions name sessions ``name@host``."""

    def __init__(self, host: Host) -> None:
        super().__init__(host=host, timeout=15.0)
        self.subscription_class = type(f"HostSubscription_{host.name}", (HostSubscription,), {"host": host.name})
        #: why it is not usable, beyond its link (e.g. another protocol version)
        self.problem: str | None = None
        #: the remote supervisor's release, once it answered hello
        self.version: str | None = None


class Remotes:
    """The remote hosts of the config file and their clients."""

    def __init__(self, hosts: Mapping[str, Host]) -> None:
        self.hosts = {name: host for name, host in hosts.items() if not host.is_local}
        self.clients: dict[str, HostClient] = {name: HostClient(host) for name, host in self.hosts.items()}
        #: messages kept while their host is unreachable (``hold``), in order, by host
        self.waiting: dict[str, list[dict[str, Any]]] = {}
        self.wake: dict[str, asyncio.Event] = {name: asyncio.Event() for name in self.hosts}

    async def client(self, host: str, wait: float = CONNECTING_WAIT) -> HostClient:
        """The host's client once it is connected; HostUnreachable saying why if its link
        fails, or is not up within ``wait`` (a link being dialled is given that long)."""
        if host not in self.clients:
            raise RemoteError("not_found", f"no host named '{host}' (hosts: {', '.join([LOCAL, *self.hosts])})")
        client = self.clients[host]
        deadline = time.monotonic() + wait
        while not (client.connected and client.reachable is not False):
            link = client.link
            failing = link is not None and link.failures > 0 and link.state is not LinkState.UP
            if client.problem or failing or time.monotonic() >= deadline:
                raise HostUnreachable(self.state_text(host))
            await asyncio.sleep(0.05)
        return client

    def state_text(self, host: str) -> str:
        """How the host is: "up (supervisord-claude 0.3.0)", or why it is not."""
        client = self.clients[host]
        if client.problem:
            return f"{host} is unusable: {client.problem}"
        link = client.link
        if client.connected and client.reachable is not False and link is not None and link.state is LinkState.UP:
            return f"{host} is up (supervisord-claude {client.version or '?'})"
        if link is not None and link.problem:
            return link.problem  # ("host gpu (me@gpu) is unreachable: ssh says …")
        return f"host {host} is unreachable: connecting through ssh…"

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()


async def connect(client: HostClient) -> None:
    """Connect (waiting while the host is unreachable: its link redials with backoff);
    a host speaking another protocol version is tried again every minute, its problem
    shown by /hosts. A client already connected (a delivery restarted after a failure)
    is not opened twice."""
    while True:
        try:
            if not client.connected:
                await client.connect(wait=3600)
            client.version = str((await client.hello(client="claude-telegram-bot")).get("version"))
            client.problem = None
            return
        except VersionMismatch as exc:
            client.problem = str(exc)
            log.error("%s", exc)
            await asyncio.sleep(VERSION_RETRY)
        except ProtocolError as exc:
            log.warning("host %s: %s; trying again", client.host.name, exc)
            await asyncio.sleep(5)


async def route(link: ChatLink, op: str, timeout: float | None, args: dict[str, Any]) -> dict[str, Any] | None:
    """A request about ``name@host``, sent to that host as ``name``; None for a local one."""
    session = args.get("session")
    if link.remotes is None or not is_remote(session):
        return None
    assert isinstance(session, str)
    name, host = split(session)
    if op == "send" and link.remotes.waiting.get(host):  # (after what waits for it: in order)
        raise HostUnreachable(f"{host} has messages waiting to be sent")
    client = await link.remotes.client(host)
    try:
        # (the generic call on purpose: this passes on whichever op the link was asked, as it was asked)
        result = await client.request(op, timeout=timeout, **{**args, "session": name})
    except HostUnreachable:
        raise
    except ConnectionFailed as exc:
        # (no answer: the link may be down before its keepalives tell; whichever path
        # notices first, the chat is told which host, and a send is held for it)
        dest = client.host.ssh or client.host.destination
        raise HostUnreachable(f"host {host} ({dest}) is unreachable: {exc}") from exc
    if result.get("name") == name:  # (a session's record: named as the chats know it)
        result = {**result, "name": session}
    return result


# messages for a host that is down -------------------------------------------------------

KV_WAITING = "telegram.hosts.waiting.{host}"


def waiting_text(problem: str) -> str:
    return f"⏳ {problem.rstrip('.')}. Your message is kept and will be sent once it is back."


async def hold(link: ChatLink, host: str, fields: dict[str, Any]) -> None:
    """Keep a message for ``host`` (it is unreachable): in this machine's kv, so a bot
    restart does not lose it; ``send_waiting`` sends it, with its idempotency key, once
    the host is back — in order with every other message held for that host."""
    remotes = link.remotes
    assert remotes is not None
    waiting = remotes.waiting.setdefault(host, [])
    waiting.append(fields)
    remotes.wake[host].set()
    try:
        await link.kv_put(KV_WAITING.format(host=host), list(waiting))
    except ProtocolError as exc:  # (too big for the kv, or this machine's supervisor away): kept in memory
        log.warning("messages held for %s are kept in memory only (%s)", host, exc)


def sendable(host: str, fields: dict[str, Any]) -> dict[str, Any] | None:
    """A held message as the typed ``send`` takes it: fields it does not take (kept by
    another release of the bot) are left out, so the user's text is still sent; None if
    it lacks one that ``send`` needs (its session, its text). Either is said in the log."""
    send = AsyncClient.send
    lacking = sorted(name for name in send.required if name not in fields)
    if lacking or not isinstance(fields["session"], str):
        log.warning("a message held for %s is dropped: it has no %s", host, " or ".join(lacking) or "session name")
        return None
    extra = sorted(set(fields) - set(send.fields))
    if extra:
        log.warning("a message held for %s is sent without the fields send does not take: %s", host, ", ".join(extra))
    return {name: value for name, value in fields.items() if name in send.fields}


async def send_waiting(link: ChatLink, host: str) -> None:
    """Send what was held for ``host`` (also by a bot that stopped meanwhile), in order,
    each once: a send that got no answer is sent again with the same key."""
    remotes = link.remotes
    assert remotes is not None
    key = KV_WAITING.format(host=host)
    while True:
        try:
            stored = await link.kv_cached(key)
            break
        except ProtocolError:  # (this machine's supervisor is away: try again)
            await asyncio.sleep(2)
    waiting = remotes.waiting.setdefault(host, [])
    waiting[:0] = [f for f in stored if isinstance(f, dict) and f not in waiting] if isinstance(stored, list) else []
    while True:
        if not waiting:
            remotes.wake[host].clear()
            await remotes.wake[host].wait()
            continue
        try:
            client = await remotes.client(host)
            fields = sendable(host, waiting[0])
            if fields is not None:
                sent = await client.send(**{**fields, "session": split(fields["session"])[0]})
        except RemoteError as exc:  # (e.g. the session was archived meanwhile): not sent, said in the log
            log.warning("a message held for %s could not be sent: %s", host, exc.message)
        except ConnectionFailed:
            await asyncio.sleep(2)
            continue
        else:
            if fields is not None and isinstance(sent.get("message_id"), int):
                link.remember(sent["message_id"], waiting[0])
        waiting.pop(0)
        with contextlib.suppress(ProtocolError):
            await link.kv_put(key, list(waiting) or None)


# commands --------------------------------------------------------------------------------


async def hosts_reply(link: ChatLink) -> str:
    """``/hosts``: every host, its state and the release of its supervisor."""
    from protocol import __version__

    lines = [f"{LOCAL} (this machine): up (supervisord-claude {__version__})"]
    try:
        hello = await link.client.hello(client="claude-telegram-bot")
        lines[0] = f"{LOCAL} (this machine): up (supervisord-claude {hello.get('version')})"
    except ProtocolError as exc:
        lines[0] = f"{LOCAL} (this machine): unreachable: {exc}"
    remotes = link.remotes
    for name in remotes.hosts if remotes is not None else ():
        assert remotes is not None
        lines.append(f"{remotes.state_text(name)} — {remotes.hosts[name].describe()}")
    return "\n".join(lines)


async def sessions_by_host(link: ChatLink, active: str | None) -> tuple[str, list[str]]:
    """``/sessions`` with remote hosts: each host's sessions under its name, a host that
    is down as one line saying why; asked at once, so a slow host delays none of the
    others beyond the request's timeout. Returns (Markdown, the names listed)."""
    remotes = link.remotes
    assert remotes is not None

    async def listing(host: str) -> list[Mapping[str, Any]]:
        if host == LOCAL:
            found = await link.client.list_sessions()
        else:
            found = await (await remotes.client(host)).list_sessions(timeout=10.0)
        out = []
        for session in found:
            session = {**session, "name": qualified(session["name"], host)}
            if await link.visible(session["name"]):
                out.append(session)
        return await link.with_failures(out)

    names = [LOCAL, *remotes.hosts]
    results = await asyncio.gather(*(listing(host) for host in names), return_exceptions=True)
    blocks, listed = [], []
    for host, result in zip(names, results, strict=True):
        if isinstance(result, BaseException):
            why = result.message if isinstance(result, RemoteError) else str(result)
            # (in a code span: ssh's words are not Markdown)
            plain = why.replace("`", "'")
            blocks.append(f"*{host}*: unreachable — `{plain}`")
            continue
        listed += [s["name"] for s in result]
        body = render.sessions_markdown(result, active) if result else "(no sessions)"
        blocks.append(f"*{host}*\n{body}")
    return "\n\n".join(blocks), listed

