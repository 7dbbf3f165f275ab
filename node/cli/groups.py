"""``kith group ...``, ``kith send`` and ``kith log``: thin clients of the running node."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Generator
from typing import Any

from node.api import client
from node.cli.common import EVENT_HELP, escape, examples, out, table
from node.datadir import DataDir
from node.errors import KithError, NotRunningError


def cmd_create(args: argparse.Namespace, datadir: DataDir) -> int:
    g = client.call(datadir.control_socket, "group.create", name=args.name, mode=args.mode,
                    share_history=args.share_history, max_members=args.max_members,
                    policy=getattr(args, "policy", None))
    return out(args, g, f"created {g['mode']} group {g['name']!r}\n  id {g['id']}")


def cmd_list(args: argparse.Namespace, datadir: DataDir) -> int:
    groups = client.call(datadir.control_socket, "group.list")
    if args.json or not groups:
        return out(args, groups, "no groups yet (kith group create NAME)")
    rows = [("ID", "NAME", "MODE", "ROLE", "MEMBERS", "RELAYS")]
    rows += [(g["id"][:12], g["name"], g["mode"],
              g["role"] or ("relay" if g.get("relaying") else "(left)"), str(g["members"]),
              str(len(g.get("relays", []))))
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


def cmd_relay(args: argparse.Namespace, datadir: DataDir) -> int:
    """kith group relay add|remove GROUP PEER."""
    event = client.call(datadir.control_socket, "group.relay", group=args.group,
                        peer=args.peer, on=args.on)
    return out(args, event, event["info"] or "done")


def cmd_relay_status(args: argparse.Namespace, datadir: DataDir) -> int:
    """kith relay status: the groups this node relays (a relay node)."""
    relayed = [g for g in client.call(datadir.control_socket, "group.list")
               if g.get("relay") is not None]
    if args.json or not relayed:
        return out(args, relayed, "this node relays no group (run it with kith run --relay, "
                   "then have an admin run kith group relay add GROUP PEER)")
    rows = [("ID", "NAME", "RELAYING", "EVENTS", "BYTES", "COPIES", "MEMBERS", "ONLINE")]
    rows += [(g["id"][:12], g["name"], "yes" if g["relaying"] else "no",
              str(g["relay"]["events"]), str(g["relay"]["bytes"]),
              str(g["relay"]["held_copies"]), str(g["relay"]["members"]),
              str(g["relay"]["connected_members"])) for g in relayed]
    table(rows)
    return 0


def cmd_send(args: argparse.Namespace, datadir: DataDir) -> int:
    if getattr(args, "file", None):
        from node.cli.files import cmd_send_file

        return cmd_send_file(args, datadir)
    if not args.text:
        raise KithError("nothing to send (give TEXT, - to read it from stdin, or --file PATH)")
    text = read_stdin() if args.text == ["-"] else " ".join(args.text)
    params: dict[str, Any] = {"group": args.group, "text": text}
    if args.count != 1:
        params["count"] = args.count
    if getattr(args, "reply", None):
        params["reply_to"] = args.reply
    try:
        event = client.call(datadir.control_socket, "send", **params)
    except NotRunningError:
        from node.cli import offline

        queued = offline.send(datadir, args.group, text, args.count, params.get("reply_to"))
        return out(args, queued, offline.QUEUED)
    return out(args, event, f"{send_state(event)}: {event['id'][:12]}")


def read_stdin() -> str:
    """``kith send GROUP -``: the message is stdin (one final newline dropped)."""
    if sys.stdin.isatty():
        print("type the message, then Ctrl-D on a line of its own", file=sys.stderr)
    text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text


def send_state(event: dict[str, Any]) -> str:
    """What became of a message just sent, in words (``pending`` read like a failure)."""
    n = event.get("recipients", 0)
    members = f"{n} member{'s' if n != 1 else ''}"
    if not n:
        return "stored (no other members yet)"
    if event["state"] == "pending":
        return f"queued for {members} (not yet delivered)"
    if event["state"] == "sent":
        return f"delivered to {len(event['delivered_to'])} of {members}, queued for the rest"
    return f"delivered to {'both' if n == 2 else 'all'} {members}" if n > 1 else \
        f"delivered to {members}"


def cmd_log(args: argparse.Namespace, datadir: DataDir) -> int:
    # Looking at the conversation is reading it; --json is for scripts (use --mark-read).
    params: dict[str, Any] = {"group": args.group, "all": args.all,
                              "read": args.mark_read or not args.json}
    if args.limit:
        params["limit"] = args.limit
    if not args.follow:
        try:
            events = client.call(datadir.control_socket, "log", **params)
            missing = None
        except NotRunningError:
            from node.cli import offline

            events, missing = offline.log(datadir, args.group, include_keys=args.all,
                                          limit=args.limit)
        if args.json:
            return out(args, events, "")
        for event in events:
            print(format_event(event))
        for line in gap_lines(datadir, args.group, missing):
            print(line)
        return 0
    return follow_log(args, datadir, params)


#: Seconds between looks for the node while ``log --follow`` waits for it to start.
WAIT_POLL = 0.25


def follow_log(args: argparse.Namespace, datadir: DataDir, params: dict[str, Any]) -> int:
    """``kith log --follow``: the log so far, then each new event, until Ctrl-C.

    With the node stopped, what is stored is printed first; the command then says (on
    stderr) that it waits for the node, and follows once it is up, printing only what it
    has not printed yet. The same when the node stops while followed.
    """
    printed: set[str] = set()

    def show(event: dict[str, Any]) -> None:
        if event.get("id"):
            printed.add(event["id"])
        if args.json:
            print(json.dumps(event), flush=True)
        elif event.get("kind") != "typing":  # ephemeral: for interactive clients
            print(format_event(event), flush=True)

    try:
        try:
            stream = client.follow(datadir.control_socket, "log", **params)
            first = next(stream)
        except NotRunningError:
            from node.cli import offline

            events, _ = offline.log(datadir, args.group, include_keys=args.all,
                                    limit=args.limit)
            for event in events:
                show(event)
            stream, first = _wait_for_node(datadir, params, "not running")
        while True:
            for event in first:
                if event.get("id") not in printed:
                    show(event)
            try:
                for event in stream:
                    show(event)
            except client.ConnectionClosed:
                stream.close()
            stream, first = _wait_for_node(datadir, params, "stopped")
    except KeyboardInterrupt:
        return 0


def _wait_for_node(datadir: DataDir, params: dict[str, Any], why: str
                   ) -> tuple[Generator[Any, None, None], list[dict[str, Any]]]:
    """Say so on stderr, then wait until the node answers; its stream and first answer."""
    print(f"kith: node {why}; following as soon as it starts (Ctrl-C to stop)",
          file=sys.stderr, flush=True)
    while True:
        try:
            stream = client.follow(datadir.control_socket, "log", **params)
            return stream, next(stream)
        except (NotRunningError, client.ConnectionClosed):  # (a node stopping, or starting)
            time.sleep(WAIT_POLL)


def gap_lines(datadir: DataDir, group: str, missing: dict[str, int] | None = None
              ) -> list[str]:
    """"N events from NAME not yet received" while sync has not filled a causal gap.

    ``missing`` (author name -> count) as read from the store, else asked of the node.
    """
    if missing is None:
        groups = client.call(datadir.control_socket, "group.list")
        match = [g for g in groups if g["name"] == group or g["id"].startswith(group.lower())]
        if len(match) != 1:
            return []
        missing = match[0]["missing"]
    return [f"         ... {n} event(s) from {who} not yet received"
            for who, n in sorted(missing.items())]


def read_by_text(e: dict[str, Any]) -> str:
    """``read by bob, carol`` (as ``kith chat`` shows it; more than three: ``and N more``)."""
    names = [escape(str(n)) for n in e.get("read_by_names") or e["read_by"]]
    shown = ", ".join(names[:3])
    return f"read by {shown}" + (f" and {len(names) - 3} more" if len(names) > 3 else "")


#: Columns of the message number in ``kith log`` (``[123]``; longer ones push the line).
NUMBER_WIDTH = 5
#: Where a message's file and reactions lines start: under its id.
DETAIL = " " * (10 + NUMBER_WIDTH)


def format_event(e: dict[str, Any]) -> str:
    """One event as ``kith log`` prints it: time, number (messages), id prefix, text."""
    when = time.strftime("%H:%M:%S", time.localtime(e["time"])) if e.get("time") else "--:--:--"
    who = escape(str(e.get("author_name", "")))
    short = e.get("id", "")[:8]
    number = f"[{e['number']}]" if e.get("number") else ""
    if e["kind"] == "message":
        if e.get("deleted"):
            text = f"[deleted by {escape(e.get('deleted_by') or '?')}]"
        elif e["text"] is None:
            text = "[cannot decrypt: sent before you joined]"
        elif not e["text"] and e.get("file"):
            text = "sent a file"  # (no caption: the file line below names it)
        else:
            text = escape(e["text"])
        mark = ""
        if e["mine"]:
            mark = {"pending": "  (pending)", "sent": "  (sent)", "delivered": "  (delivered)"}[
                e["state"]]
            if e.get("read_by"):
                mark = f"  ({read_by_text(e)})"
        extra = ("  (edited)" if e.get("edited") else "") + ("  [pinned]" if e.get("pinned")
                                                            else "")
        line = f"{when} {number:>{NUMBER_WIDTH}} {short} {who}: {text}{extra}{mark}"
        preview = e.get("reply_preview")
        if e.get("reply_to"):
            if preview is None:
                quoted = f"(message {e['reply_to'][:8]})"
            elif preview.get("deleted"):
                quoted = f"{escape(preview['author_name'])}: [deleted]"
            else:
                quoted = (f"{escape(preview['author_name'])}: "
                          f"{escape((preview.get('text') or '')[:60])}")
            if preview is not None and preview.get("number"):
                quoted = f"[{preview['number']}] {quoted}"
            line = f"{' ' * (19 + NUMBER_WIDTH)}> {quoted}\n{line}"
        if e.get("file"):
            from node.cli.files import describe

            line += "\n" + DETAIL + describe(e["file"])
        if e.get("reactions"):
            line += "\n" + DETAIL + "  ".join(
                f"{escape(emoji)} {len(names)} ({', '.join(escape(n) for n in names)})"
                for emoji, names in e["reactions"].items())
        return line
    if e["kind"] in ("edit", "reaction"):
        target = f"[{e['target_number']}]" if e.get("target_number") else e["target"][:8]
        what = (f"edited {target}: {escape(e['text'] or '')}" if e["kind"] == "edit"
                else f"{'removed' if e.get('remove') else 'reacted'} {escape(e.get('emoji', ''))}"
                f" on {target}")
        return f"{when} {number:>{NUMBER_WIDTH}} {short} * {who} {what}"
    return f"{when} {number:>{NUMBER_WIDTH}} {short} * {escape(e['info'] or e['kind'])}"


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
                                     help="reply to this message: its number as `kith log` "
                                     "shows it, or its id")
    p = sub.add_parser("edit", parents=common, help="edit one of your messages",
                       description="Replace the text of one of your messages. Everyone sees "
                       "the new text, marked (edited); the earlier versions stay in --json.")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("event", metavar="EVENT", help=EVENT_HELP)
    p.add_argument("text", nargs="+", metavar="TEXT", help="the new text")
    p.set_defaults(func=cmd_target_op, op="edit")
    p = sub.add_parser("delete", parents=common,
                       help="delete a message (yours, or anyone's as owner/admin)",
                       description="Delete a message for everyone: its text, edits and "
                       "reactions are dropped on every node; it shows as [deleted by NAME].")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("event", metavar="EVENT", help=EVENT_HELP)
    p.set_defaults(func=cmd_target_op, op="delete")
    p = sub.add_parser("react", parents=common, help="react to a message with an emoji",
                       description="Add your reaction (one emoji) to a message; `kith log` "
                       "shows each emoji with who reacted. --remove takes it back.")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("event", metavar="EVENT", help=EVENT_HELP)
    p.add_argument("emoji", metavar="EMOJI", help="one emoji, like 👍 (modifiers allowed)")
    p.add_argument("--remove", action="store_true", help="take your reaction back")
    p.set_defaults(func=cmd_target_op, op="react")
    p = sub.add_parser("pin", parents=common, help="pin a message (owner/admin)",
                       description="Pin a message for everyone in the group (owners and "
                       "admins): it shows [pinned] in `kith log` and is listed in `kith group "
                       "list --json`.")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("event", metavar="EVENT", help=EVENT_HELP)
    p.add_argument("--unpin", action="store_true", help="take the pin off again")
    p.set_defaults(func=cmd_target_op, op="pin")
    p = gsub.add_parser("mute", parents=common,
                        help="mute a member: its messages are refused by everyone (admin)")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("peer", metavar="PEER", help="a member: name, short ID or full ID")
    p.add_argument("--minutes", type=int, metavar="N",
                   help="end the mute after N minutes (default: until --unmute)")
    p.add_argument("--unmute", action="store_true", help="lift the mute")
    p.set_defaults(func=cmd_mute)
    p = gsub.add_parser("notify", parents=common,
                        help="turn this group's notifications off or on (local only)",
                        description="Turn notifications for GROUP off (--mute) or on again "
                        "(--unmute). Only this node is affected: messages still arrive and "
                        "others see no difference.")
    p.add_argument("group", metavar="GROUP")
    flag = p.add_mutually_exclusive_group(required=True)
    flag.add_argument("--mute", dest="muted", action="store_true",
                      help="no notifications for this group (messages still arrive)")
    flag.add_argument("--unmute", dest="muted", action="store_false",
                      help="notify again")
    p.set_defaults(func=cmd_notify)


#: An example for each command's help, by command path (``--help`` ends with it).
EXAMPLES: dict[str, tuple[str, ...]] = {
    "init": ("kith init --name alice",),
    "id": ("kith id", "kith --data /tmp/bob id --json"),
    "run": ("kith run --name alice", "kith --data /tmp/bob run --listen 127.0.0.1:0 --no-mdns "
            "--peer 127.0.0.1:7654"),
    "peers": ("kith peers",),
    "chat": ("kith chat lab",),
    "demo": ("kith demo --nodes 5",),
    "network-key": ("kith network-key lan.key", "kith run --network-key lan.key"),
    "send": ("kith send lab hello everyone", "kith send lab --file slides.pdf \"the slides\"",
             "fortune | kith send lab -", "kith send lab --reply 3 sure"),
    "log": ("kith log lab --limit 20", "kith log lab --follow", "kith log lab --json | jq ."),
    "edit": ("kith edit lab 3 see you at 10, not 9",),
    "delete": ("kith delete lab 3", "kith delete lab 1a2b3c4d"),
    "react": ("kith react lab 3 👍", "kith react lab 3 👍 --remove"),
    "pin": ("kith pin lab 3", "kith pin lab 3 --unpin"),
    "save": ("kith save lab 4 ~/Downloads",),
    "group create": ("kith group create lab", "kith group create lobby --mode open "
                     "--policy blacklist"),
    "group list": ("kith group list",),
    "group members": ("kith group members lab",),
    "group add": ("kith group add lab bob", "kith group add lab 5vq3kx2d --role admin"),
    "group remove": ("kith group remove lab bob",),
    "group ban": ("kith group ban lab mallory",),
    "group role": ("kith group role lab bob admin",),
    "group leave": ("kith group leave lab",),
    "group mute": ("kith group mute lab bob --minutes 10", "kith group mute lab bob --unmute"),
    "group notify": ("kith group notify lab --mute",),
    "group discover": ("kith group discover",),
    "group join": ("kith group join lobby",),
    "group approve": ("kith group approve lobby bob",),
    "group unban": ("kith group unban lobby mallory",),
    "group purge": ("kith group purge lobby mallory",),
}


def add_examples(sub: Any) -> None:
    """End each command's help with its example (``EXAMPLES``), whoever registered it."""
    gsub = next(a for a in sub.choices["group"]._actions
                if isinstance(a, argparse._SubParsersAction))
    for path, lines in EXAMPLES.items():
        words = path.split()
        parsers = sub.choices if len(words) == 1 else gsub.choices
        parser = parsers.get(words[-1])
        if parser is not None and not parser.epilog:
            parser.epilog = examples(*lines)
