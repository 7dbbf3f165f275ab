"""``kith group ...``, ``kith send`` and ``kith log``: thin clients of the running node."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from node.api import client
from node.datadir import DataDir


def _out(args: argparse.Namespace, result: Any, text: str) -> int:
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(text)
    return 0


def cmd_create(args: argparse.Namespace, datadir: DataDir) -> int:
    g = client.call(datadir.control_socket, "group.create", name=args.name, mode=args.mode,
                    share_history=args.share_history, max_members=args.max_members)
    return _out(args, g, f"created {g['mode']} group {g['name']!r}\n  id {g['id']}")


def cmd_list(args: argparse.Namespace, datadir: DataDir) -> int:
    groups = client.call(datadir.control_socket, "group.list")
    if args.json or not groups:
        return _out(args, groups, "no groups yet (kith group create NAME)")
    rows = [("ID", "NAME", "MODE", "ROLE", "MEMBERS")]
    rows += [(g["id"][:12], g["name"], g["mode"], g["role"] or "(left)", str(g["members"]))
             for g in groups]
    _table(rows)
    return 0


def cmd_members(args: argparse.Namespace, datadir: DataDir) -> int:
    members = client.call(datadir.control_socket, "group.members", group=args.group)
    if args.json:
        return _out(args, members, "")
    rows = [("ID", "NAME", "ROLE", "PRESENCE")]
    rows += [(m["short_id"], m["name"] + (" (you)" if m["me"] else ""), m["role"],
              m["presence"]) for m in members]
    _table(rows)
    return 0


def cmd_member_op(args: argparse.Namespace, datadir: DataDir) -> int:
    params: dict[str, Any] = {"group": args.group}
    if getattr(args, "peer", None):
        params["peer"] = args.peer
    for key in ("role", "label"):
        if getattr(args, key, None):
            params[key] = getattr(args, key)
    event = client.call(datadir.control_socket, args.op, **params)
    return _out(args, event, event["info"] or "done")


def cmd_send(args: argparse.Namespace, datadir: DataDir) -> int:
    text = " ".join(args.text)
    params: dict[str, Any] = {"group": args.group, "text": text}
    if args.count != 1:
        params["count"] = args.count
    event = client.call(datadir.control_socket, "send", **params)
    return _out(args, event, f"{event['state']}: {event['id'][:12]}")


def cmd_log(args: argparse.Namespace, datadir: DataDir) -> int:
    # Looking at the conversation is reading it; --json is for scripts (use --mark-read).
    params: dict[str, Any] = {"group": args.group, "all": args.all,
                              "read": args.mark_read or not args.json}
    if args.limit:
        params["limit"] = args.limit
    if not args.follow:
        events = client.call(datadir.control_socket, "log", **params)
        if args.json:
            return _out(args, events, "")
        for event in events:
            print(format_event(event))
        for line in gap_lines(datadir, args.group):
            print(line)
        return 0
    stream = client.follow(datadir.control_socket, "log", **params)
    try:
        for i, item in enumerate(stream):
            for event in item if i == 0 else [item]:
                print(json.dumps(event) if args.json else format_event(event), flush=True)
    except KeyboardInterrupt:
        return 0
    return 0


def gap_lines(datadir: DataDir, group: str) -> list[str]:
    """"N events from NAME not yet received" while sync has not filled a causal gap."""
    groups = client.call(datadir.control_socket, "group.list")
    match = [g for g in groups if g["name"] == group or g["id"].startswith(group.lower())]
    if len(match) != 1:
        return []
    return [f"         ... {n} event(s) from {who} not yet received"
            for who, n in sorted(match[0]["missing"].items())]


def format_event(e: dict[str, Any]) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(e["time"])) if e.get("time") else "--:--:--"
    if e["kind"] == "message":
        text = e["text"] if e["text"] is not None else "[cannot decrypt: sent before you joined]"
        mark = ""
        if e["mine"]:
            mark = {"pending": "  (pending)", "sent": "  (sent)", "delivered": "  (delivered)"}[
                e["state"]]
            if e.get("read_by"):
                mark = f"  (read by {len(e['read_by'])})"
        return f"{when} {e['author_name']}: {text}{mark}"
    return f"{when} * {e['info'] or e['kind']}"


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
