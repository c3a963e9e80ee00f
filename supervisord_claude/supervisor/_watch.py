"""The watcher: what each running turn is doing now, and since when.

It is fed every session event (the event log hands it each one as it is recorded), the
live text (``output``) and a clock; the only I/O it does is reading CPU time through
``System.tree_cpu``, so every state is tested on a ``FakeClock`` with a fake reader
(tests/test_watch.py). What a turn does, in this order of precedence:

- ``waiting``: Claude waits for the user — a permission request, a question or a plan
  (which one, since when);
- ``stalled``: no output for ``stall_after`` seconds *and* Claude's process tree used less
  than ``stall_cpu_percent`` of a CPU in that window (a long test run that burns CPU is
  working, a hung network call is stalled); it says what the turn was doing;
- ``tool``: a tool call runs (which, since when);
- ``writing``: Claude writes (or thinks about what it read).

Once per occurrence it records an event of its own, stored and published like any other
(so claudectl ``tail`` and a bot that was down see it too): ``reminder`` when a prompt has
waited ``remind_after`` seconds (or 80% of ``permission_timeout``, if that comes first:
a reminder after the prompt was denied would be no use), and ``stalled`` when a turn
stalls. Nothing repeats while the situation does not change: a turn that stalled is
reported again only after it wrote something and stalled anew.

CPU is sampled on a tick (a tenth of the smallest threshold, at most every 30 s) that runs
only while some turn runs; the CPU used in a window is the sum of what the tree's total
grew by between samples (a total that shrinks — a process reaped outside the tree — adds
nothing).

What it keeps of each running turn, and ``Doing``, are in ``_watchturn``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgpack

from protocol import EventKind, SessionState

from .._clock import Clock, TimerHandle
from ._watchturn import CpuReader, Doing, _request, _Tool, _Turn, detail_of

log = logging.getLogger("supervisord_claude")

#: the tick's bounds: a tenth of the smallest threshold, within these
MAX_TICK = 30.0
MIN_TICK = 0.05
#: a reminder comes by this share of ``permission_timeout`` at the latest
REMIND_BEFORE_TIMEOUT = 0.8
#: kinds that end the turn they belong to
_ENDS_TURN = frozenset({EventKind.RESULT})
#: what Claude writes in a turn: each is output (a turn Claude began by itself starts with one);
#: any other kind (settings, errors, the watcher's own, kinds added later) is none
_OUTPUT = frozenset({EventKind.USER, EventKind.ASSISTANT_TEXT, EventKind.TOOL_USE, EventKind.TOOL_RESULT,
                     EventKind.PERMISSION_REQUEST, EventKind.PERMISSION_RESOLVED})
#: (an enum member read from its class costs ~0.2 µs on Python 3.11: every event is
#: compared with these)
_STATE, _MESSAGE_FAILED, _PERMISSION_RESOLVED = EventKind.STATE, EventKind.MESSAGE_FAILED, EventKind.PERMISSION_RESOLVED
#: the output whose fields the watcher reads
_WITH_FIELDS = frozenset({EventKind.TOOL_USE, EventKind.TOOL_RESULT, EventKind.PERMISSION_REQUEST,
                          EventKind.PERMISSION_RESOLVED})
#: states in which no turn runs
_NO_TURN = frozenset(s for s in SessionState if s is not SessionState.BUSY)


class Watcher:
    def __init__(self, clock: Clock, wall: Callable[[], float], cpu: CpuReader,
                 record: Callable[[str, EventKind, dict[str, Any]], None],
                 claude_pid_of: Callable[[str], int | None],
                 stall_after: float, stall_cpu_percent: float, remind_after: float,
                 permission_timeout: float) -> None:
        self.clock = clock
        self.wall = wall
        self.cpu = cpu
        self.record = record
        self.claude_pid_of = claude_pid_of
        self.stall_after = stall_after
        self.stall_cpu_percent = stall_cpu_percent
        self.permission_timeout = permission_timeout
        self.remind_at = min(remind_after, REMIND_BEFORE_TIMEOUT * permission_timeout) if remind_after else 0.0
        thresholds = [t for t in (stall_after, self.remind_at) if t > 0]
        self.tick_every = max(MIN_TICK, min(MAX_TICK, min(thresholds) / 10)) if thresholds else 0.0
        self.turns: dict[str, _Turn] = {}
        self._timer: TimerHandle | None = None

    # what it is fed ----------------------------------------------------------------------

    def event(self, session: str, kind: EventKind, message_id: int | None,
              body: dict[str, Any] | None, packed: bytes | None) -> None:
        """One recorded event of ``session``. ``body`` may be None for a keeper's event
        that came packed: it is unpacked here only for the few kinds whose fields matter.
        Never raises: watching must not stand in the way of an event."""
        try:
            self._event(session, kind, message_id, body, packed, self.clock.monotonic())
        except Exception:
            log.exception("watching %s failed on a %s event", session, kind.value)

    def _event(self, session: str, kind: EventKind, message_id: int | None,
               body: dict[str, Any] | None, packed: bytes | None, now: float) -> None:
        if body is not None and body.get("from") == "terminal":
            return  # said in Claude Code's own terminal UI (claudectl attach): no turn of ours
        if kind is _STATE:
            state = (body if body is not None else _unpack(packed)).get("state")
            if state in _NO_TURN:
                self._end(session)
            elif session not in self.turns:  # busy with no `user` event first: a message carried over
                self._turn(session, None, now)  # to a restarted Claude
            return
        if kind is _MESSAGE_FAILED:
            # (a message dropped from the queue is no end of the turn that runs)
            turn = self.turns.get(session)
            if turn is not None and turn.message_id == message_id:
                self._end(session)
            return
        if kind in _ENDS_TURN:
            self._end(session)
            return
        if kind not in _OUTPUT:
            return
        if kind is _PERMISSION_RESOLVED and session not in self.turns:
            return  # (the requests a turn leaves are resolved as it ends)
        turn = self._turn(session, message_id, now)
        self._output(turn, now)
        if kind in _WITH_FIELDS:
            fields = body if body is not None else _unpack(packed)
            if kind is EventKind.TOOL_USE:
                tool_id = str(fields.get("tool_use_id"))
                turn.tools[tool_id] = _Tool(str(fields.get("name") or "tool"), detail_of(fields.get("input")), now)
            elif kind is EventKind.TOOL_RESULT:
                turn.tools.pop(str(fields.get("tool_use_id")), None)
                if not turn.tools:
                    turn.writing_since = now  # Claude reads what the tool said
            elif kind is EventKind.PERMISSION_REQUEST:
                request = _request(fields, now)
                turn.requests[request.request_id] = request
            else:
                turn.requests.pop(str(fields.get("request_id")), None)
                if not turn.requests and not turn.tools:
                    turn.writing_since = now

    def output(self, session: str, message_id: int | None) -> None:
        """Claude wrote a piece of its answer (live text)."""
        now = self.clock.monotonic()
        self._output(self._turn(session, message_id, now), now)

    def replay(self, session: str, stored: list[tuple[str, int | None, dict[str, Any], float]]) -> None:
        """What a previous supervisor recorded of the session lately — (kind, message_id,
        body, Unix time) in order — so an adopted keeper's turn is seen as it was: since
        when it runs its tool or waits, and which reminder or stall was already said (it
        is not said twice across a restart). Call ``adopted`` next."""
        now, wall = self.clock.monotonic(), self.wall()
        for name, message_id, body, ts in stored:
            try:
                kind = EventKind(name)
            except ValueError:
                continue  # (a kind of another release)
            at = now - max(0.0, wall - ts)
            turn = self.turns.get(session)
            if kind is EventKind.REMINDER and turn is not None:
                request = turn.requests.get(str(body.get("request_id")))
                if request is not None:
                    request.reminded = True
            elif kind is EventKind.STALLED and turn is not None:
                turn.stall_told = True
            else:
                self._event(session, kind, message_id, body, None, at)

    def adopted(self, session: str, busy: bool, message_id: int | None, pending: list[dict[str, Any]]) -> None:
        """A keeper a previous supervisor left: its turn (if one runs) is watched from now
        on (from when it began, after ``replay``); its pending requests are its keeper's."""
        if not busy and not pending:
            self._end(session)
            return
        now = self.clock.monotonic()
        turn = self._turn(session, message_id, now)
        asked = {str(body.get("request_id")): body for body in pending
                 if isinstance(body, dict) and "request_id" in body}
        for request_id in [r for r in turn.requests if r not in asked]:
            del turn.requests[request_id]  # (answered or timed out while no supervisor heard of it)
        for request_id, body in asked.items():
            if request_id not in turn.requests:
                turn.requests[request_id] = _request(body, now)

    # what it says ----------------------------------------------------------------------------

    def activity(self, session: str) -> dict[str, Any] | None:
        """What the session's running turn does now and since when (None: no turn runs):
        ``{doing, since, seconds, message_id, turn_since, last_output, silent_for,
        cpu_percent}``, with ``request_id``, ``tool_name``, ``detail``, ``waiting`` (how
        many prompts) when waiting; ``tool``, ``detail`` when a tool runs (also when it
        stalled in one). Times are Unix seconds; ``seconds``, ``silent_for`` durations."""
        turn = self.turns.get(session)
        if turn is None:
            return None
        now = self.clock.monotonic()
        out: dict[str, Any] = {"message_id": turn.message_id, "turn_since": self._wall(turn.started, now),
                               "last_output": self._wall(turn.last_output, now),
                               "silent_for": now - turn.last_output, "cpu_percent": turn.cpu_percent}
        tool = next(iter(turn.tools.values()), None)
        if turn.requests:
            request = next(iter(turn.requests.values()))
            out.update(doing=Doing.WAITING.value, request_id=request.request_id, tool_name=request.tool_name,
                       detail=request.detail, waiting=len(turn.requests))
            since = request.since
        elif turn.stalled:
            out.update(doing=Doing.STALLED.value, was=Doing.TOOL.value if tool else Doing.WRITING.value)
            since = turn.last_output
        elif tool is not None:
            out.update(doing=Doing.TOOL.value)
            since = tool.since
        else:
            out.update(doing=Doing.WRITING.value)
            since = turn.writing_since
        if tool is not None and not turn.requests:
            out.update(tool=tool.name, detail=tool.detail, tools=len(turn.tools))
        out.update(since=self._wall(since, now), seconds=now - since)
        return out

    # inside --------------------------------------------------------------------------------------

    def _wall(self, moment: float, now: float) -> float:
        return self.wall() - (now - moment)

    def _turn(self, session: str, message_id: int | None, now: float) -> _Turn:
        turn = self.turns.get(session)
        if turn is None:
            turn = self.turns[session] = _Turn(message_id, now, now, now)
            self._arm()
        elif turn.message_id is None and message_id is not None:
            turn.message_id = message_id
        return turn

    def _output(self, turn: _Turn, now: float) -> None:
        if turn.stalled and not turn.tools and not turn.requests:
            turn.writing_since = now  # it writes again
        turn.last_output = now
        turn.stalled = turn.stall_told = False  # a new silence is a new occurrence

    def _end(self, session: str) -> None:
        self.turns.pop(session, None)

    def _arm(self) -> None:
        if self._timer is None and self.tick_every:
            self._timer = self.clock.call_later(self.tick_every, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if not self.turns:
            return
        now = self.clock.monotonic()
        totals: dict[int, float] = {}
        if self.stall_after:
            pids = {session: self.claude_pid_of(session) for session in self.turns}
            try:
                totals = self.cpu.tree_cpu({pid for pid in pids.values() if pid})
            except OSError as exc:  # (never fatal: the turn is then simply not called stalled)
                log.warning("cannot read Claude's CPU time: %s", exc)
        for session, turn in list(self.turns.items()):
            try:
                if self.stall_after:
                    pid = pids.get(session)
                    self._sample(turn, totals.get(pid) if pid else None, now)
                    self._check_stall(session, turn, now)
                self._check_requests(session, turn, now)
            except Exception:  # a bug here must not stop the watching of the others
                log.exception("watching %s failed", session)
        self._arm()

    def _sample(self, turn: _Turn, total: float | None, now: float) -> None:
        if total is None:
            turn.samples.clear()
            turn.last_total = None
            turn.cpu_percent = None
            return
        if turn.last_total is not None:
            turn.used += max(0.0, total - turn.last_total)
        turn.last_total = total
        turn.samples.append((now, turn.used))
        # keep one sample at or before the window's start, and what follows it
        start = now - self.stall_after
        while len(turn.samples) > 1 and turn.samples[1][0] <= start:
            turn.samples.popleft()
        first_at, first_used = turn.samples[0]
        span = now - first_at
        turn.cpu_percent = round(100.0 * (turn.used - first_used) / span, 2) if span > 0 else None

    def _check_stall(self, session: str, turn: _Turn, now: float) -> None:
        silent_for = now - turn.last_output
        span = now - turn.samples[0][0] if turn.samples else 0.0
        turn.stalled = (not turn.requests and silent_for >= self.stall_after and turn.cpu_percent is not None
                        and span >= self.stall_after / 2 and turn.cpu_percent < self.stall_cpu_percent)
        if not turn.stalled or turn.stall_told:
            return
        turn.stall_told = True
        tool = next(iter(turn.tools.values()), None)
        body: dict[str, Any] = {"doing": Doing.TOOL.value if tool else Doing.WRITING.value,
                                "since": self._wall(turn.last_output, now), "silent_for": silent_for,
                                "cpu_percent": round(turn.cpu_percent or 0.0, 2)}
        if tool is not None:
            body.update(tool=tool.name, detail=tool.detail, tool_for=now - tool.since)
        if turn.message_id is not None:
            body["message_id"] = turn.message_id
        log.info("session %s stalled: no output for %.0f s, CPU %.1f%%", session, silent_for,
                 turn.cpu_percent or 0.0, extra={"session": session})
        self.record(session, EventKind.STALLED, body)

    def _check_requests(self, session: str, turn: _Turn, now: float) -> None:
        if not self.remind_at:
            return
        for request in list(turn.requests.values()):
            waited = now - request.since
            if request.reminded or waited < self.remind_at:
                continue
            request.reminded = True
            body: dict[str, Any] = {"request_id": request.request_id, "tool_name": request.tool_name,
                                    "detail": request.detail, "since": self._wall(request.since, now),
                                    "waited": waited, "denied_in": max(0.0, self.permission_timeout - waited)}
            if turn.message_id is not None:
                body["message_id"] = turn.message_id
            self.record(session, EventKind.REMINDER, body)


def _unpack(packed: bytes | None) -> dict[str, Any]:
    if packed is None:
        return {}
    body = msgpack.unpackb(packed)
    return body if isinstance(body, dict) else {}


#: how many of an adopted session's newest stored events ``replay`` is given
REPLAY_EVENTS = 500

__all__ = ["REPLAY_EVENTS", "CpuReader", "Doing", "Watcher", "detail_of"]
