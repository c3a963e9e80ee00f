"""Commands on a session's settings: /timeout, /model, /mode."""

from __future__ import annotations

import re

from protocol import PermissionMode, permission_mode_of, timeout_in_range

from . import _render as render
from ._link import Link
from ._reply import Reply, on_active_session


@on_active_session
async def timeout(link: Link, active: str, args: list[str]) -> Reply:
    if not args:
        info = await link.status(active)
        return Reply(render.timeout_text(info["idle_timeout"]))
    try:
        minutes = int(args[0])
    except ValueError:
        return Reply(render.TIMEOUT_INVALID)
    if not timeout_in_range(minutes):
        return Reply(render.TIMEOUT_RANGE)
    await link.set_timeout(active, minutes)
    return Reply(f"Idle timeout set to {render.minutes_text(minutes * 60)} for session '{active}'.")


#: the model aliases Claude Code resolves (measured with the pinned CLI, 2.1.331); each
#: also takes a "[1m]" suffix (the 1M-token context)
MODEL_ALIASES = ("sonnet", "opus", "haiku", "opusplan", "best")
#: full model names of the families Claude Code knows (claude-sonnet-4-5,
#: claude-3-5-haiku, claude-opus-4-1-20250805); it passes anything else on to the API,
#: which refuses it, and the next turn fails
MODEL_NAME = re.compile(r"claude-(\d+-\d+-)?(opus|sonnet|haiku)(-\d+){0,2}(-\d{8})?")


def known_model(name: str) -> bool:
    base = name.removesuffix("[1m]")
    return base in MODEL_ALIASES or MODEL_NAME.fullmatch(base) is not None


def _model_buttons(current: str | None) -> list[tuple[str, str]]:
    return [(alias, f"model:{alias}") for alias in MODEL_ALIASES if alias != current]


@on_active_session
async def model(link: Link, active: str, args: list[str]) -> Reply:
    info = await link.status(active)
    if not args:
        return Reply(f"Model: {render.model_text(info)}\n\nUsage: /model <name>, or pick one:",
                     buttons=_model_buttons(info.get("model")))
    if len(args) > 1 or not (known_model(args[0]) or args[0] == info.get("claude_model")):
        return Reply(render.unknown_model_text(" ".join(args)[:60], MODEL_ALIASES),
                     buttons=_model_buttons(info.get("model")))
    await link.set_model(active, args[0])
    return Reply(f"Model set to {args[0]} for session '{active}'. Claude restarts with its history.")


MODES = tuple(m.value for m in PermissionMode)


@on_active_session
async def mode(link: Link, active: str, args: list[str]) -> Reply:
    current = permission_mode_of(await link.status(active)) or "ask"
    buttons = [(f"Mode {m}", f"mode:{m}") for m in MODES if m != current]
    if not args:
        return Reply(render.mode_text(current), buttons=buttons)
    if args[0] not in MODES or len(args) > 1:
        return Reply(f"Unknown mode '{' '.join(args)[:40]}'.\n\n" + render.mode_text(None), buttons=buttons)
    result = await link.set_mode(active, args[0])
    if not result["changed"]:
        return Reply(f"Session '{active}' is already in mode {args[0]}.")
    return Reply(f"Permission mode set to {args[0]} for session '{active}'. Claude restarts with its history"
                 " (after the current answer).")
