"""Typed client methods: one method per op (``client.send(session, text)``), written once
for both clients.

Each method of ``OpMethods`` is a declaration: its parameters are the op's fields, by
their wire names (``docs/protocol.md``), and its return type is the reply (``_replies``);
its body is only its docstring. ``@op`` turns it into a method that sends those
arguments as the request's fields — a field left at its default (None, False: the
supervisor's own default) is not sent, so a request carries what the caller said, and
an older supervisor never meets a field it does not know. ``timeout`` (every method's
last, keyword-only) is the request's, not a field.

How the request is made is the client's: a class that inherits ``BlockingOps`` and has
a blocking ``request`` (``Client``) gets plain methods; one that inherits ``AsyncOps``
and has an ``async request`` (``AsyncClient``, or a front end's own wrapper of one)
gets coroutine methods. mypy checks the callers of both from the one declaration: the
descriptor's ``__get__`` is overloaded on the two bases.

``request(op, **fields)`` stays the generic call (an op or a field this library does not
know yet). ``subscribe``, ``ack`` and ``unsubscribe`` are ``AsyncClient.subscribe`` and
its ``Subscription``.
"""

# (a declaration's body is its docstring: mypy would call it an empty body)
# mypy: disable-error-code="empty-body"

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from ._messages import Op
from ._replies import (
    BudgetReport,
    Diff,
    DirListing,
    FilePiece,
    FileWritten,
    ForkReply,
    Hello,
    InterruptReply,
    Reply,
    RuleAdded,
    RuleRemoved,
    Schedule,
    SendReply,
    SessionInfo,
    SessionStatus,
    SupervisorStatus,
)
from ._vocabulary import SENT_AS

P = ParamSpec("P")
T = TypeVar("T")

#: the parameter of every method that is the request's timeout, not a field
TIMEOUT = "timeout"


def _as_sent(result: dict[str, Any]) -> Any:
    return result


class OpMethod(Generic[P, T]):
    """A method that sends its arguments as one op's fields (see the module docstring)."""

    def __init__(self, op: Op, declaration: Callable[Concatenate[Any, P], T],
                 read: Callable[[dict[str, Any]], Any]) -> None:
        self.op = op
        self.declaration = declaration
        self.read = read
        self.signature = inspect.signature(declaration)
        #: the op's fields this method can send: name -> its default (None: required)
        self.fields: dict[str, Any] = {}
        for name, param in list(self.signature.parameters.items())[1:]:  # (after self)
            if name == TIMEOUT:
                continue
            default = None if param.default is inspect.Parameter.empty else param.default
            if default not in (None, False):  # (left out when not given: the supervisor's default)
                raise TypeError(f"{declaration.__name__}: an optional field defaults to None or False, not"
                                f" {default!r}")
            self.fields[name] = default
        self.required = frozenset(name for name, param in self.signature.parameters.items()
                                  if name in self.fields and param.default is inspect.Parameter.empty)

        # (the client positional-only: ``hello`` has a field named ``client``)
        def blocking(client: BlockingOps, /, *args: Any, **kwargs: Any) -> Any:
            timeout, fields = self.bind(client, args, kwargs)
            return read(client.request(op, timeout, **fields))

        async def awaiting(client: AsyncOps, /, *args: Any, **kwargs: Any) -> Any:
            timeout, fields = self.bind(client, args, kwargs)
            return read(await client.request(op, timeout, **fields))

        self._blocking = functools.wraps(declaration)(blocking)
        self._awaiting = functools.wraps(declaration)(awaiting)

    def bind(self, client: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[float | None, Reply]:
        """The request's timeout, and its fields: those given and not at their default."""
        given = self.signature.bind(client, *args, **kwargs).arguments
        # (under the name every supervisor of protocol 1 reads: ``_vocabulary.SENT_AS``)
        fields = {SENT_AS.get(name, name): given[name] for name in self.fields
                  if name in given and (name in self.required or given[name] is not self.fields[name])}
        return given.get(TIMEOUT), fields

    @overload
    def __call__(self, client: AsyncOps, /, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T]: ...
    @overload
    def __call__(self, client: BlockingOps, /, *args: P.args, **kwargs: P.kwargs) -> T: ...

    def __call__(self, client: object, /, *args: Any, **kwargs: Any) -> Any:
        """Called on the class, as a function is: ``Client.suspend(client, name)``."""
        return self._method_of(client)(*args, **kwargs)

    @overload
    def __get__(self, client: None, owner: type) -> OpMethod[P, T]: ...
    @overload
    def __get__(self, client: AsyncOps, owner: type) -> Callable[P, Coroutine[Any, Any, T]]: ...
    @overload
    def __get__(self, client: BlockingOps, owner: type) -> Callable[P, T]: ...

    def __get__(self, client: object, owner: type) -> Any:
        return self if client is None else self._method_of(client)

    def _method_of(self, client: object) -> Any:
        if isinstance(client, AsyncOps):
            return types.MethodType(self._awaiting, client)
        return types.MethodType(self._blocking, client)


def op(name: Op, read: Callable[[dict[str, Any]], Any] = _as_sent,
       ) -> Callable[[Callable[Concatenate[Any, P], T]], OpMethod[P, T]]:
    """Make a declaration the method of op ``name``; ``read`` makes its return value of the
    reply's result (default: the result as it came)."""

    def make(declaration: Callable[Concatenate[Any, P], T]) -> OpMethod[P, T]:
        return OpMethod(name, declaration, read)

    return make


def _item(field: str) -> Callable[[dict[str, Any]], Any]:
    return lambda result: result[field]


class OpMethods:
    """The ops as methods. Mixed into ``BlockingOps`` and ``AsyncOps``; the request and
    reply fields are in ``docs/protocol.md`` ("Ops")."""

    # the supervisor and its sessions ----------------------------------------------------

    @op(Op.HELLO)
    def hello(self, *, client: str | None = None, timeout: float | None = None) -> Hello:
        """Who answers: server, version, protocol, instance."""

    @op(Op.STATUS)
    def supervisor_status(self, *, timeout: float | None = None) -> SupervisorStatus:
        """The supervisor's own status (``status`` without a session)."""

    @op(Op.STATUS)
    def status(self, session: str, *, timeout: float | None = None) -> SessionStatus:
        """One session's record and what runs for it now."""

    @op(Op.LIST, read=_item("sessions"))
    def list_sessions(self, *, all: bool = False, timeout: float | None = None) -> list[SessionInfo]:
        """The sessions, most recently active first (``all``: archived ones too)."""

    @op(Op.CREATE)
    def create(self, session: str, *, permission_mode: str | None = None, model: str | None = None,
               cwd: str | None = None, persona: str | None = None, conversation: str | None = None,
               force: bool = False, timeout: float | None = None) -> SessionInfo:
        """A new session (``conversation``: continue that Claude Code conversation of ``cwd``)."""

    @op(Op.FORK)
    def fork(self, session: str, name: str, *, timeout: float | None = None) -> ForkReply:
        """A new session ``name`` continuing a copy of ``session``'s conversation."""

    @op(Op.CONVERSATIONS, read=_item("conversations"))
    def conversations(self, *, cwd: str | None = None, timeout: float | None = None) -> list[Reply]:
        """Claude Code's conversations on disk (of ``cwd``), newest first."""

    @op(Op.RESTART)
    def restart(self, *, timeout: float | None = None) -> Reply:
        """Restart the supervisor in place: ``{pid}``."""

    @op(Op.SHUTDOWN)
    def shutdown(self, *, timeout: float | None = None) -> Reply:
        """Stop the supervisor gracefully."""

    @op(Op.BACKUP)
    def backup(self, path: str, *, force: bool = False, timeout: float | None = None) -> Reply:
        """A consistent copy of the store at ``path``: ``{path, bytes, sessions}``."""

    # messages and turns -----------------------------------------------------------------

    @op(Op.SEND)
    def send(self, session: str, text: str, *, attachments: list[str] | None = None, origin: str | None = None,
             idempotency_key: str | None = None, queue: bool = False, timeout: float | None = None) -> SendReply:
        """Send a message (stored before the reply); ``queue``: a turn of its own."""

    @op(Op.INTERRUPT)
    def interrupt(self, session: str, *, timeout: float | None = None) -> InterruptReply:
        """Interrupt the running turn; replied once Claude confirmed it, or why not."""

    @op(Op.DROP_QUEUED)
    def drop_queued(self, session: str, *, timeout: float | None = None) -> Reply:
        """Drop the messages Claude has not started on: ``{kept}``."""

    @op(Op.PERMIT)
    def permit(self, session: str, request_id: str, allow: bool, *, message: str | None = None,
               always: bool = False, permission_mode: str | None = None, directory: str | None = None,
               timeout: float | None = None) -> Reply:
        """Answer a permission request, or a plan (``permission_mode``: the one to go on in);
        ``directory``: where ``always`` allows a file tool (one of ``always_dirs``)."""

    @op(Op.ANSWER)
    def answer(self, session: str, request_id: str, answers: list[list[str]], *,
               timeout: float | None = None) -> Reply:
        """Answer a question: one list of labels per question."""

    # a session's settings ---------------------------------------------------------------

    @op(Op.SUSPEND)
    def suspend(self, session: str, *, timeout: float | None = None) -> Reply:
        """Suspend a session now: ``{state}``."""

    @op(Op.ARCHIVE)
    def archive(self, session: str, *, timeout: float | None = None) -> Reply:
        """Stop and hide a session: ``{state}``."""

    @op(Op.UNARCHIVE)
    def unarchive(self, session: str, *, timeout: float | None = None) -> Reply:
        """Bring an archived session back: ``{state}``."""

    @op(Op.NEW_CONVERSATION)
    def new_conversation(self, session: str, *, timeout: float | None = None) -> Reply:
        """A fresh conversation from the next message: ``{session_id}``."""

    @op(Op.SET_CWD)
    def set_cwd(self, session: str, cwd: str, *, timeout: float | None = None) -> Reply:
        """Move a session to another directory: ``{session_id, cwd}``."""

    @op(Op.SET_TIMEOUT)
    def set_timeout(self, session: str, minutes: int, *, timeout: float | None = None) -> Reply:
        """Set the idle timeout: ``{idle_timeout}`` (seconds)."""

    @op(Op.SET_MODEL)
    def set_model(self, session: str, model: str, *, timeout: float | None = None) -> Reply:
        """Change the model: ``{model}``."""

    @op(Op.SET_MODE)
    def set_mode(self, session: str, permission_mode: str, *, timeout: float | None = None) -> Reply:
        """Change the permission mode: ``{permission_mode, changed}``."""

    @op(Op.RULES, read=_item("rules"))
    def rules(self, session: str, *, timeout: float | None = None) -> list[str]:
        """The session's always-allow rules, in the order given."""

    @op(Op.REMOVE_RULE)
    def remove_rule(self, session: str, *, index: int | None = None, rule: str | None = None,
                    timeout: float | None = None) -> RuleRemoved:
        """Forget one rule, by its number (from 1) or its text: ``{removed, rules}``."""

    @op(Op.ADD_RULE)
    def add_rule(self, session: str, tool: str, scope: str, *, timeout: float | None = None) -> RuleAdded:
        """Always allow a file tool in a directory, a Bash command prefix or WebFetch for a
        domain from now on: ``{added, rules}``."""

    @op(Op.ATTACH)
    def attach(self, session: str, pid: int, *, tty: str | None = None, now: bool = False,
               timeout: float | None = None) -> Reply:
        """Hand a session to Claude Code's terminal UI run by ``pid``: what to run."""

    @op(Op.DIFF)
    def diff(self, session: str, *, path: str | None = None, timeout: float | None = None) -> Diff:
        """The session's git working-tree changes."""

    # spending ---------------------------------------------------------------------------

    @op(Op.BUDGET)
    def budget(self, *, session: str | None = None, timeout: float | None = None) -> BudgetReport:
        """Spend today and this month, per session and in total, with the daily caps."""

    @op(Op.SET_BUDGET)
    def set_budget(self, usd: float | None, *, session: str | None = None, tz: str | None = None,
                   timeout: float | None = None) -> BudgetReport:
        """Set (None: remove) a session's daily cap, or without ``session`` the cap for all;
        ``tz``: the zone its day ends in."""

    @op(Op.BUDGET_ALLOW)
    def budget_allow(self, usd: float, *, session: str | None = None,
                     timeout: float | None = None) -> BudgetReport:
        """Raise a cap once: ``usd`` more may be spent today (the cap is back tomorrow)."""

    # schedules --------------------------------------------------------------------------

    @op(Op.SCHEDULE_ADD)
    def schedule_add(self, session: str, when: str, *, prompt: str | None = None, origin: str | None = None,
                     tz: str | None = None, timeout: float | None = None) -> Schedule:
        """A prompt sent at the times ``when`` names (cron, or e.g. ``weekdays 9:00``)."""

    @op(Op.SCHEDULES, read=_item("schedules"))
    def schedules(self, *, session: str | None = None, timeout: float | None = None) -> list[Schedule]:
        """The schedules (of one session)."""

    @op(Op.SCHEDULE_SET)
    def schedule_set(self, schedule: int, paused: bool, *, timeout: float | None = None) -> Schedule:
        """Pause or resume a schedule."""

    @op(Op.SCHEDULE_REMOVE)
    def schedule_remove(self, schedule: int, *, timeout: float | None = None) -> Schedule:
        """Remove a schedule: the one removed."""

    # front ends' state and cursors ------------------------------------------------------

    @op(Op.KV_GET, read=_item("value"))
    def kv_get(self, key: str, *, timeout: float | None = None) -> Any:
        """The value kept under ``key`` (None if unset)."""

    @op(Op.KV_SET, read=lambda result: None)
    def kv_set(self, key: str, value: Any, *, timeout: float | None = None) -> None:
        """Keep ``value`` (a plain msgpack value) under ``key``."""

    @op(Op.KV_DELETE, read=_item("existed"))
    def kv_delete(self, key: str, *, timeout: float | None = None) -> bool:
        """Forget ``key``; whether it existed."""

    @op(Op.CONSUMERS)
    def consumers(self, *, timeout: float | None = None) -> Reply:
        """The named consumers' cursors: ``{consumers: [...]}``."""

    @op(Op.REMOVE_CONSUMER)
    def remove_consumer(self, consumer: str, *, timeout: float | None = None) -> Reply:
        """Forget a consumer's cursor."""

    @op(Op.PING)
    def ping(self, *, sub: int | None = None, timeout: float | None = None) -> Reply:
        """``{time}``; with ``sub``, also checks the subscription and resumes sending."""

    # the files of a session's directory (issue #26) -------------------------------------

    @op(Op.PUT_FILE)
    def put_file(self, session: str, name: str, data: bytes, *, offset: int | None = None, more: bool = False,
                 timeout: float | None = None) -> FileWritten:
        """A piece (at most ``FILE_CHUNK_BYTES``) of a file sent to ``uploads/<name>`` of
        the session, at ``offset``; ``more``: pieces follow (without it, the file is
        complete and the reply names its path)."""

    @op(Op.READ_FILE)
    def read_file(self, session: str, path: str, *, offset: int | None = None, length: int | None = None,
                  timeout: float | None = None) -> FilePiece:
        """A piece of a file inside the session's directory."""

    @op(Op.LIST_DIR)
    def list_dir(self, *, session: str | None = None, path: str | None = None, within: list[str] | None = None,
                 timeout: float | None = None) -> DirListing:
        """A directory's entries, inside ``within`` (default: the session's directory and
        the sessions dir)."""

    @op(Op.OUTBOX_SENT)
    def outbox_sent(self, session: str, name: str, *, timeout: float | None = None) -> Reply:
        """Move a file of the session's outbox to ``outbox/sent``: ``{path}``."""


class BlockingOps(OpMethods):
    """The op methods over a blocking ``request`` (``Client``)."""

    def request(self, op: Op | str, timeout: float | None = None, **args: Any) -> Reply:
        raise NotImplementedError


class AsyncOps(OpMethods):
    """The op methods over an ``async request`` (``AsyncClient``; or a front end's own
    link that routes requests, as the bot's to several hosts)."""

    async def request(self, op: Op | str, timeout: float | None = None, **args: Any) -> Reply:
        raise NotImplementedError


def op_methods() -> dict[str, OpMethod[Any, Any]]:
    """Every typed method by its name (for the tests that hold them to the schemas)."""
    return {name: value for name, value in vars(OpMethods).items() if isinstance(value, OpMethod)}
