"""``kith group ...``, ``kith send`` and ``kith log``: thin clients of the running node."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from node.api import client
from node.cli.common import escape, out, table
from node.datadir import DataDir
from node.errors import KithError


def cmd_create(args: argparse.Namespace, datadir: DataDir) -> int:
    g = client.call(datadir.control_socket, "group.create", name=args.name, mode=args.mode,
                    share_history=args.share_history, max_members=args.max_members,
                    policy=getattr(args, "policy", None))
    return out(args, g, f"created {g['mode']} group {g['name']!r}\n  id {g['id']}")


def cmd_list(args: argparse.Namespace, datadir: DataDir) -> int:
    groups = client.call(datadir.control_socket, "group.list")
    if args.json or not groups:
        return out(args, groups, "no groups yet (kith group create NAME)")
    rows = [("ID", "NAME", "MODE", "ROLE", "MEMBERS")]
    rows += [(g["id"][:12], g["name"], g["mode"], g["role"] or "(left)", str(g["members"]))
             for g in groups]
    table(rows)
    return 0


def cmd_members(args: argparse.Namespace, datadir: DataDir) -> int:
    members = client.call(datadir.control_socket, "group.members", group=args.group)
    if args.json:
        return out(args, members, "")
    rows = [("ID", "NAME", "ROLE", "PRESENCE")]
    rows += [(m["short_id"], m["name"] + (" (you)" if m["me"] else ""), m["role"],
              m["presence"]) for m in members]
    table(rows)
    return 0


def cmd_member_op(args: argparse.Namespace, datadir: DataDir) -> int:
    params: dict[str, Any] = {"group": args.group}
    if getattr(args, "peer", None):
        params["peer"] = args.peer
    for key in ("role", "label"):
        if getattr(args, key, None):
            params[key] = getattr(args, key)
    event = client.call(datadir.control_socket, args.op, **params)
    return out(args, event, event["info"] or "done")


def cmd_send(args: argparse.Namespace, datadir: DataDir) -> int:
    if getattr(args, "file", None):
        from node.cli.files import cmd_send_file

        return cmd_send_file(args, datadir)
    if not args.text:
        raise KithError("nothing to send (give TEXT, or --file PATH)")
    text = " ".join(args.text)
    params: dict[str, Any] = {"group": args.group, "text": text}
    if args.count != 1:
        params["count"] = args.count
    if getattr(args, "reply", None):
        params["reply_to"] = args.reply
    event = client.call(datadir.control_socket, "send", **params)
    return out(args, event, f"{event['state']}: {event['id'][:12]}")


def cmd_log(args: argparse.Namespace, datadir: DataDir) -> int:
    # Looking at the conversation is reading it; --json is for scripts (use --mark-read).
    params: dict[str, Any] = {"group": args.group, "all": args.all,
                              "read": args.mark_read or not args.json}
    if args.limit:
        params["limit"] = args.limit
    if not args.follow:
        events = client.call(datadir.control_socket, "log", **params)
        if args.json:
            return out(args, events, "")
        for event in events:
            print(format_event(event))
        for line in gap_lines(datadir, args.group):
            print(line)
        return 0
    stream = client.follow(datadir.control_socket, "log", **params)
    try:
        for i, item in enumerate(stream):
            for event in item if i == 0 else [item]:
                if args.json:
                    print(json.dumps(event), flush=True)
                elif event.get("kind") != "typing":  # ephemeral: for interactive clients
                    print(format_event(event), flush=True)
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
    who = escape(str(e.get("author_name", "")))
    short = e.get("id", "")[:8]
    if e["kind"] == "message":
        if e.get("deleted"):
            text = f"[deleted by {escape(e.get('deleted_by') or '?')}]"
        elif e["text"] is None:
            text = "[cannot decrypt: sent before you joined]"
        else:
            text = escape(e["text"])
        mark = ""
        if e["mine"]:
            mark = {"pending": "  (pending)", "sent": "  (sent)", "delivered": "  (delivered)"}[
                e["state"]]
            if e.get("read_by"):
                mark = f"  (read by {len(e['read_by'])})"
        extra = ("  (edited)" if e.get("edited") else "") + ("  [pinned]" if e.get("pinned")
                                                            else "")
        line = f"{when} {short} {who}: {text}{extra}{mark}"
        preview = e.get("reply_preview")
        if e.get("reply_to"):
            if preview is None:
                quoted = f"(message {e['reply_to'][:8]})"
            elif preview.get("deleted"):
                quoted = f"{escape(preview['author_name'])}: [deleted]"
            else:
                quoted = (f"{escape(preview['author_name'])}: "
                          f"{escape((preview.get('text') or '')[:60])}")
            line = f"{' ' * 18}> {quoted}\n{line}"
        if e.get("file"):
            from node.cli.files import describe

            line += "\n         " + describe(e["file"])
        if e.get("reactions"):
            line += "\n         " + "  ".join(
                f"{escape(emoji)} {len(names)} ({', '.join(escape(n) for n in names)})"
                for emoji, names in e["reactions"].items())
        return line
    if e["kind"] in ("edit", "reaction"):
        what = (f"edited {e['target'][:8]}: {escape(e['text'] or '')}" if e["kind"] == "edit"
                else f"{'removed' if e.get('remove') else 'reacted'} {escape(e.get('emoji', ''))}"
                f" on {e['target'][:8]}")
        return f"{when} {short} * {who} {what}"
    return f"{when} {short} * {escape(e['info'] or e['kind'])}"


def cmd_target_op(args: argparse.Namespace, datadir: DataDir) -> int:
    """``kith edit|delete|react|pin``: an action on one message."""
    params: dict[str, Any] = {"group": args.group, "event": args.event}
    if args.op == "edit":
        params["text"] = " ".join(args.text)
    elif args.op == "react":
        params["emoji"], params["remove"] = args.emoji, args.remove
    elif args.op == "pin":
        params["unpin"] = args.unpin
    event = client.call(datadir.control_socket, args.op, **params)
    return out(args, event, f"{args.op}: {event['id'][:12]}")


def cmd_mute(args: argparse.Namespace, datadir: DataDir) -> int:
    event = client.call(datadir.control_socket, "group.mute", group=args.group, peer=args.peer,
                        minutes=args.minutes, unmute=args.unmute)
    return out(args, event, escape(event["info"] or "done"))


def cmd_notify(args: argparse.Namespace, datadir: DataDir) -> int:
    g = client.call(datadir.control_socket, "group.notify", group=args.group, muted=args.muted)
    state = "muted (no notifications)" if g["muted"] else "on"
    return out(args, g, f"notifications for {escape(g['name'])}: {state}")


def add_message_parsers(sub: Any, gsub: Any, common: list[argparse.ArgumentParser]) -> None:
    """``kith edit/delete/react/pin``, ``send --reply``, ``group mute/notify``."""
    sub.choices["send"].add_argument("--reply", metavar="EVENT",
                                     help="reply to this message (its id or 8+ hex digits)")
    p = sub.add_parser("edit", parents=common, help="edit one of your messages")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("event", metavar="EVENT")
    p.add_argument("text", nargs="+", help="the new text")
    p.set_defaults(func=cmd_target_op, op="edit")
    p = sub.add_parser("delete", parents=common,
                       help="delete a message (yours, or anyone's as owner/admin)")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("event", metavar="EVENT")
    p.set_defaults(func=cmd_target_op, op="delete")
    p = sub.add_parser("react", parents=common, help="react to a message with an emoji")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("event", metavar="EVENT")
    p.add_argument("emoji", metavar="EMOJI")
    p.add_argument("--remove", action="store_true", help="take your reaction back")
    p.set_defaults(func=cmd_target_op, op="react")
    p = sub.add_parser("pin", parents=common, help="pin a message (owner/admin)")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("event", metavar="EVENT")
    p.add_argument("--unpin", action="store_true")
    p.set_defaults(func=cmd_target_op, op="pin")
    p = gsub.add_parser("mute", parents=common,
                        help="mute a member: its messages are refused by everyone (admin)")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("peer", metavar="PEER_ID")
    p.add_argument("--minutes", type=int, metavar="N",
                   help="end the mute after N minutes (default: until --unmute)")
    p.add_argument("--unmute", action="store_true")
    p.set_defaults(func=cmd_mute)
    p = gsub.add_parser("notify", parents=common,
                        help="turn this group's notifications off or on (local only)")
    p.add_argument("group", metavar="GROUP")
    flag = p.add_mutually_exclusive_group(required=True)
    flag.add_argument("--mute", dest="muted", action="store_true")
    flag.add_argument("--unmute", dest="muted", action="store_false")
    p.set_defaults(func=cmd_notify)
