"""Schedules (issue #27): ``/every <when> <prompt>`` sends a prompt to the chat's session
at set times (kept and run by the supervisor), ``/schedules`` lists them with buttons to
pause, resume or remove each. Part of the daily commands (``_daily``).

Buttons (callback data, at most 64 bytes):

    sch:<p|r|x>:<id>          pause, resume or remove schedule <id>
"""

from __future__ import annotations

import datetime
import zoneinfo

from protocol import Schedule

from . import _commands as commands
from . import _render as render
from ._commands import Link, Reply
from ._zone import user_zone

EVERY_USAGE = ("Usage: /every <when> <prompt> — when: weekdays 9:00, daily 18:30, mon,thu 8am, weekends 10:00,"
               " hourly, every 15m, every 2h, or a cron expression (0 9 * * 1-5). Each time, the prompt is sent to"
               " this session as a message; its answer comes here.")


def _next_text(schedule: Schedule) -> str:
    next_run, zone = schedule["next_run"], schedule.get("tz")
    if schedule["paused"]:
        return "paused"
    if next_run is None:  # (only while paused, the supervisor says)
        return "no next run"
    shown = datetime.datetime.fromtimestamp(next_run, zoneinfo.ZoneInfo(zone) if zone else None)
    return f"next {shown.strftime('%a %d %b %H:%M')}" + (f" ({zone})" if zone else "")


async def every(link: Link, chat: int, args: list[str]) -> Reply:
    """``/every <when> <prompt>``: a schedule for the active session, answered in this chat."""
    session = await link.active(chat)
    if session is None:
        return Reply(render.NO_ACTIVE)
    if not args:
        return Reply(EVERY_USAGE)
    # (it runs on this user's clock, if they set a zone)
    made = await link.schedule_add(session, " ".join(args), origin=commands.origin_of(chat),
                                   tz=await user_zone(link) or None)
    return Reply(f"⏰ Schedule {made['id']}: '{made['prompt']}' to '{session}' at {made['cron']} —"
                 f" {_next_text(made)}. /schedules lists, pauses and removes them.")


def schedules_reply(listed: list[Schedule]) -> Reply:
    if not listed:
        return Reply("No schedules. " + EVERY_USAGE)
    lines, buttons = ["⏰ Schedules"], []
    for s in listed:
        lines.append(f"{s['id']}. [{s['session']}] {s['cron']}: {s['prompt'][:80]} — {_next_text(s)}")
        pause = ("▶️ Resume", "r") if s["paused"] else ("⏸ Pause", "p")
        buttons += [(f"{pause[0]} {s['id']}", f"sch:{pause[1]}:{s['id']}"), (f"🗑 Remove {s['id']}", f"sch:x:{s['id']}")]
    return Reply("\n".join(lines), buttons=buttons)


async def schedules(link: Link, chat: int, args: list[str]) -> Reply:
    """``/schedules``: every schedule of the user's sessions, with pause/resume/remove."""
    listed = await link.schedules()
    return schedules_reply([s for s in listed if await link.visible(s["session"])])


async def schedule_button(link: Link, data: str) -> Reply:
    """A /schedules button (``<p|r|x>:<id>``); then the list as it is now."""
    action, _, raw = data.partition(":")
    schedule_id = int(raw) if raw.isdigit() else 0
    known = {s["id"]: s for s in await link.schedules()}
    if schedule_id not in known:
        return Reply("That schedule is gone (removed already).")
    await link.check_visible(known[schedule_id]["session"])
    if action == "x":
        await link.schedule_remove(schedule_id)
        said = f"🗑 Schedule {schedule_id} removed."
    else:
        await link.schedule_set(schedule_id, action == "p")
        said = f"⏸ Schedule {schedule_id} paused." if action == "p" else f"▶️ Schedule {schedule_id} resumed."
    listed = await link.schedules()
    now = schedules_reply([s for s in listed if await link.visible(s["session"])])
    return Reply(f"{said}\n\n{now.text}", buttons=now.buttons)


__all__ = [
    "EVERY_USAGE",
    "every",
    "schedule_button",
    "schedules",
    "schedules_reply",
]
