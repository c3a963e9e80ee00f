"""claudectl's commands that talk with Claude: ``send`` (and ``--wait`` for the answer,
``--stream`` it as it is written), ``tail`` (a session's events, ``--follow``),
``permit`` and ``answer`` (what Claude asked)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any

from protocol import Client, ConnectionFailed, SessionState, idle_note, permission_mode_of

from ._common import EXIT_INTERRUPTED, EXIT_TIMED_OUT, show
from ._events import LiveAnswer, render_event, turn_ending
from ._files import put_local_file, put_local_file_async
from ._views import request_text, terminal_note


def waits(args: argparse.Namespace) -> bool:
    """Does the command wait on a client of its own (asyncio's, to subscribe), so that
    claudectl makes no other (on another host each is an ssh connection)?"""
    return args.command == "tail" or (args.command == "send" and bool(args.wait))


#: ``tail`` without ``--follow`` gives up when no event comes for this long (seconds)
TAIL_STALL = 30.0


def _attachments(args: argparse.Namespace) -> list[str] | None:
    """``--attach``'s files as the supervisor takes them (for another host: put there
    first by ``cmd_send``)."""
    if args.attach and not args.on_host.is_local:
        return list(args.put_there)
    if not args.attach:
        return None
    # the file a link points to: the supervisor takes no link (it could be swapped)
    return [os.path.realpath(os.path.expanduser(p)) for p in args.attach]


async def ack(sub: Any, event_id: int) -> None:
    """Acknowledge an event; a link down for a moment (ssh to another host redialling, a
    loaded supervisor slow to answer) does not end the command: acks are cumulative, so
    the next one covers this one, and ``next`` subscribes again if the supervisor lost
    the subscription."""
    with contextlib.suppress(ConnectionFailed):
        await sub.ack(event_id)


async def _send_and_wait(args: argparse.Namespace, timeout: float) -> int:
    from protocol import AsyncClient  # (asyncio only for the commands that wait)

    async with AsyncClient(args.runtime_dir, host=args.on_host) as client:  # (the command's one connection)
        if args.attach and not args.on_host.is_local:  # (that supervisor reads only its own disk)
            args.put_there = [await put_local_file_async(client, args.name, path) for path in args.attach]
        status = await client.status(args.name)
        stream = bool(getattr(args, "stream", False)) and not args.json
        sub = await client.subscribe(args.name, after_seq=status["last_seq"], live=stream)
        sent = await client.send(args.name, args.text, attachments=_attachments(args), queue=args.queue)
        message_id = sent["message_id"]
        if sent.get("terminal") and not args.json:
            print(terminal_note(args.name, sent["terminal"]), file=sys.stderr)
        # the turn that answers it: its own, or the running one it joined (steered, taken)
        turn = message_id
        deadline = time.monotonic() + timeout
        live = LiveAnswer()  # what of the answer has been printed as it was written
        while True:
            event = await sub.next(timeout=max(0.1, deadline - time.monotonic()))
            if event is None:
                print(f"claudectl: no answer within {timeout:g}s (--timeout); the message stays queued and"
                      " will be answered (claudectl tail shows it)", file=sys.stderr)
                return EXIT_TIMED_OUT
            if "id" not in event:  # live text of the answer
                if event.get("message_id") == turn:
                    live.add(event)
                continue
            if event.get("kind") == "taken" and event.get("message_id") == message_id \
                    and isinstance(event.get("turn"), int):
                turn = event["turn"]
                if not args.json:
                    print(f"claudectl: Claude took the message into the running turn (message {turn})",
                          file=sys.stderr, flush=True)
            await ack(sub, event["id"])  # releases the window; a long turn never stalls
            if args.json:
                print(json.dumps(event), flush=True)
            elif event.get("kind") == "state" and event.get("state") == SessionState.RESUMING.value:
                print(f"Resuming session{idle_note(event.get('idle_for'))}...", file=sys.stderr)
            if event.get("message_id") != turn and event.get("kind") != "message_failed":
                continue
            if event.get("kind") == "message_failed" and event.get("message_id") not in (message_id, turn):
                continue
            if event.get("kind") == "permission_request" and not args.json:
                print(request_text(event), file=sys.stderr, flush=True)
            if event.get("kind") in ("reminder", "stalled") and not args.json:  # (the watcher's: once each)
                print(f"claudectl: {render_event(event)}", file=sys.stderr, flush=True)
            if event.get("kind") == "assistant_text" and live.shown:
                print(event["text"][len(live.shown):] if event["text"].startswith(live.shown) else
                      "\n" + event["text"], end="", flush=True)
                live.shown = event["text"]
            if event.get("kind") == "result":
                if not args.json:
                    final = event.get("text", "")
                    print(final[len(live.shown):] if live.shown and final.startswith(live.shown) else
                          ("\n" if live.shown else "") + final)
                    live.shown = ""
                ending = turn_ending(event)
                if ending is not None:
                    if not args.json:
                        print(f"claudectl: {ending}", file=sys.stderr)
                    return 1
                return 0
            if event.get("kind") == "message_failed":
                what = "message" if event.get("message_id") == message_id else "the turn it joined was"
                print(f"claudectl: {what} not delivered: {event.get('reason')}", file=sys.stderr)
                return 1


def cmd_send(client: Client | None, args: argparse.Namespace) -> int:
    """``send``; with ``--wait`` on a client of its own (``waits``: no ``client``)."""
    if args.text == "-":  # the message from stdin, as Unix tools take a file
        args.text = sys.stdin.read()
    if args.wait:
        import asyncio

        return asyncio.run(_send_and_wait(args, args.timeout))
    assert client is not None
    if args.attach and not args.on_host.is_local:  # (that supervisor reads only its own disk)
        args.put_there = [put_local_file(client, args.name, path) for path in args.attach]
    result = client.send(args.name, args.text, attachments=_attachments(args), queue=args.queue)
    note = f"\n{terminal_note(args.name, result['terminal'])}" if result.get("terminal") else ""
    show(args, result, (f"message {result['message_id']} added to the running turn" if result.get("steering")
                          else f"queued message {result['message_id']}") + note)
    return 0


async def _tail(args: argparse.Namespace) -> int:
    """Print the session's events; without ``--follow``, up to the last one when the
    command started, and no further."""
    from protocol import AsyncClient

    async with AsyncClient(args.runtime_dir, host=args.on_host) as client:  # (the command's one connection)
        last_seq = int((await client.status(args.name))["last_seq"])  # also: a clear error
        after = max(0, last_seq - args.lines) if args.lines is not None else args.from_seq or 0
        if not args.follow and after >= last_seq:
            return 0
        stream = bool(getattr(args, "stream", False)) and args.follow and not args.json
        sub = await client.subscribe(args.name, after_seq=after, live=stream)
        shown: dict[Any, LiveAnswer] = {}
        while True:
            event = await sub.next(timeout=None if args.follow else TAIL_STALL)
            if event is None:
                print(f"claudectl: the events stopped before sequence number {last_seq}", file=sys.stderr)
                return 1
            if "id" not in event:  # live text
                key = event.get("message_id")
                if key not in shown:
                    print(f"[{args.name}] ", end="")
                    shown[key] = LiveAnswer()
                shown[key].add(event)
                continue
            if event["kind"] == "assistant_text" and event.get("message_id") in shown:
                print()  # it was shown as it was written
                del shown[event.get("message_id")]
                await ack(sub, event["id"])
                continue
            await ack(sub, event["id"])
            print(json.dumps(event) if args.json else render_event(event), flush=True)
            if not args.follow and event["seq"] >= last_seq:
                return 0


def cmd_tail(client: None, args: argparse.Namespace) -> int:
    """``tail``, on a client of its own (``waits``: no ``client``)."""
    try:
        import asyncio

        return asyncio.run(_tail(args))
    except KeyboardInterrupt:  # (how tail --follow is ended: quietly, with the status Ctrl-C gives)
        return EXIT_INTERRUPTED


def cmd_permit(client: Client, args: argparse.Namespace) -> int:
    result = client.permit(args.name, args.request_id, args.allow, message=args.message or None,
                           always=args.always, permission_mode=args.mode or None)
    done = "allowed" if args.allow else "denied"
    if result.get("always"):
        done = f"always allowed ({', '.join(result['always'])})"
    if mode := permission_mode_of(result):
        done += f"; mode {mode}"
    show(args, result, f"{done}: {args.request_id}")
    return 0


def cmd_answer(client: Client, args: argparse.Namespace) -> int:
    info = client.status(args.name)
    pending: dict[str, Any] = {p["request_id"]: p for p in info.get("pending") or []}
    questions = (pending.get(args.request_id) or {}).get("questions") or []
    labels: list[str] = args.labels
    if len(questions) > 1:
        if len(labels) != len(questions):
            print(f"claudectl: request {args.request_id} has {len(questions)} questions: give one LABEL each"
                  " (several options of a multi-select one as A,B)", file=sys.stderr)
            return 2
        answers = [[part.strip() for part in label.split(",")] if q.get("multiSelect") else [label]
                   for q, label in zip(questions, labels, strict=True)]
    else:  # one question (or the supervisor says what is wrong)
        answers = [labels]
    result = client.answer(args.name, args.request_id, answers)
    shown = "; ".join(f"{q} = {a}" for q, a in result["answers"].items())
    show(args, result, f"answered: {shown}")
    return 0

