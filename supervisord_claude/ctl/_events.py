"""claudectl's text for events: ``render_event`` (``tail``, and the watcher's notes during
``send --wait``) as a table keyed by event kind, one small function per kind; what a
turn's ``result`` says went wrong; the live text of an answer as it is written."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from protocol import (
    AssistantTextEvent,
    ErrorEvent,
    EventKind,
    MessageFailedEvent,
    PermissionRequestEvent,
    PermissionResolvedEvent,
    ReminderEvent,
    ResultEvent,
    SettingsEvent,
    StalledEvent,
    StateEvent,
    SteeredEvent,
    TakenEvent,
    ToolResultEvent,
    ToolUseEvent,
    UserEvent,
    idle_note,
    permission_mode_of,
    turn_cost,
    turn_duration_text,
    usd_text,
)

from ._views import doing_text, duration, request_text, what_is_asked

#: an event as it came (a kind from a newer supervisor has no type here)
Event = Mapping[str, Any]
#: the text of an event of one kind, after its head (``[session #seq]``); each takes its
#: kind's TypedDict (``protocol._events``), so mypy checks the fields it reads (with
#: ``.get``: an event stored by an earlier release may lack a field added since)
Render = Callable[[Any], str]


def _state(event: StateEvent) -> str:
    return f"state {event.get('state')} ({event.get('reason')}){idle_note(event.get('idle_for'))}"


def _user(event: UserEvent) -> str:
    return f"> {event.get('text')}"


def _steered(event: SteeredEvent) -> str:
    return f">> {event.get('text')} (sent while message {event.get('turn')} was answered)"


def _taken(event: TakenEvent) -> str:
    return f"message {event.get('message_id')} joined the turn of message {event.get('turn')}"


def _assistant_text(event: AssistantTextEvent) -> str:
    return f"{event.get('text')}"


def _tool_use(event: ToolUseEvent) -> str:
    tool_input = json.dumps(event.get("input"))
    return f"tool {event.get('name')}: {tool_input[:200]}"


def _tool_result(event: ToolResultEvent) -> str:
    content: Any = event.get("content")  # (text; an older supervisor's could be a list)
    shown = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    return f"tool result: {shown[:200]}"


def _result(event: ResultEvent) -> str:
    status = "interrupted" if event.get("interrupted") else "error" if event.get("is_error") else "done"
    # the turn's own cost and its duration, worded as the bot's footer says them (cost_usd
    # is the conversation's total)
    duration_ms = event.get("duration_ms")
    took = f" in {turn_duration_text(duration_ms)}" if isinstance(duration_ms, (int, float)) else ""
    return f"{status}{took}, cost {usd_text(turn_cost(event))}"


def _message_failed(event: MessageFailedEvent) -> str:
    return f"message {event.get('message_id')} not delivered: {event.get('reason')}"


def _error(event: ErrorEvent) -> str:
    return f"error: {event.get('message')}"


def _permission_request(event: PermissionRequestEvent) -> str:
    return f"{request_text(event)} (id {event.get('request_id')})"


def _permission_resolved(event: PermissionResolvedEvent) -> str:
    verdict = "allowed" if event.get("allow") else "denied"
    if event.get("answers"):
        verdict = "answered " + json.dumps(event.get("answers"), ensure_ascii=False)
    elif always := event.get("always"):
        verdict = "always allowed " + ", ".join(always)
    by = {"timeout": " (no answer in time)", "claude": f" ({event.get('message')})"}.get(event.get("by") or "", "")
    return f"request {verdict}{by} ({event.get('request_id')})"


def _reminder(event: ReminderEvent) -> str:
    return (f"reminder: Claude has waited {duration(round(event.get('waited') or 0))} for your answer to"
            f" {what_is_asked(event)} (id {event.get('request_id')}; denied in"
            f" {duration(round(event.get('denied_in') or 0))} unless answered)")


def _stalled(event: StalledEvent) -> str:
    return (f"stalled: no output for {duration(round(event.get('silent_for') or 0))} and almost no CPU"
            f" ({event.get('cpu_percent')}%) while {doing_text(event)}; claudectl interrupt"
            f" {event.get('session')} stops it")


#: what a settings event's line leaves out: the event's own fields, and the version-1 name
#: of the permission mode (shown once, as "permission mode", read by ``permission_mode_of``)
_NOT_A_SETTING = frozenset({"id", "session", "seq", "ts", "kind", "origin", "permission_mode", "mode"})


def _settings(event: SettingsEvent) -> str:
    mode = permission_mode_of(event)
    fields = ", ".join([f"{k.replace('_', ' ')} {v if isinstance(v, str) else json.dumps(v)}"
                        for k, v in event.items() if k not in _NOT_A_SETTING]
                       + ([f"permission mode {mode}"] if mode is not None else []))
    return f"settings: {fields}"


#: every kind's text, keyed by EventKind (a str: the event's ``kind`` as it came finds it);
#: a kind not here, from a newer supervisor, is shown by its name
RENDER: dict[str, Render] = {
    EventKind.STATE: _state,
    EventKind.USER: _user,
    EventKind.STEERED: _steered,
    EventKind.TAKEN: _taken,
    EventKind.ASSISTANT_TEXT: _assistant_text,
    EventKind.TOOL_USE: _tool_use,
    EventKind.TOOL_RESULT: _tool_result,
    EventKind.RESULT: _result,
    EventKind.ERROR: _error,
    EventKind.MESSAGE_FAILED: _message_failed,
    EventKind.SETTINGS: _settings,
    EventKind.PERMISSION_REQUEST: _permission_request,
    EventKind.PERMISSION_RESOLVED: _permission_resolved,
    EventKind.REMINDER: _reminder,
    EventKind.STALLED: _stalled,
}


def render_event(event: Event) -> str:
    """One line (or block) of human output for an event."""
    kind = event.get("kind")
    head = f"[{event.get('session')} #{event.get('seq')}]"
    if event.get("from") == "terminal":  # said in Claude Code's own terminal UI (claudectl attach)
        head += " 📟"
    render = RENDER.get(kind) if isinstance(kind, str) else None
    return f"{head} {render(event) if render is not None else kind}"


def turn_ending(result: Event) -> str | None:
    """What went wrong with a turn, as a sentence; None if it simply ended."""
    if result.get("interrupted"):
        return "interrupted"
    denied = result.get("permission_denials") or []
    if result.get("is_error"):
        if result.get("terminal_reason") == "api_error" or result.get("api_error_status"):
            status = result.get("api_error_status")
            return f"Claude's API call failed{f' (HTTP {status})' if status else ''}: {result.get('text') or ''}".strip()
        detail = "; ".join(result.get("errors") or []) or result.get("text") or result.get("subtype")
        return f"the turn failed: {detail}"
    if denied:
        tools = ", ".join(str(d.get("tool_name")) for d in denied if isinstance(d, dict))
        return f"Claude was not allowed to use: {tools} (see claudectl mode, and Claude's settings.json rules)"
    return None


class LiveAnswer:
    """An answer printed as Claude writes it (``--stream``): what is shown of it.

    Only a piece that continues what is shown is printed. The text so far comes again
    after a reconnect (skipped). A supervisor that restarted mid-answer holds only what
    was written since, so its pieces do not line up with what is shown: from the first
    that does not, nothing more of the answer is printed live — a later piece of the new
    supervisor's can line up by its length alone, and would print text out of place —
    and the stored answer completes it (``_messages._send_and_wait``)."""

    def __init__(self) -> None:
        self.shown = ""
        #: its pieces stopped continuing what is shown (another supervisor's, or a gap)
        self.lost = False

    def add(self, piece: Event) -> None:
        """Print the new part of a piece of live text, if it continues what is shown."""
        if self.lost:
            return
        offset, text = int(piece.get("offset") or 0), str(piece.get("text") or "")
        so_far = self.shown[:offset] + text
        if offset > len(self.shown) or not so_far.startswith(self.shown):
            self.lost = True
            return
        print(so_far[len(self.shown):], end="", flush=True)
        self.shown = so_far
