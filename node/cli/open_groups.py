"""``kith group discover|join|approve|unban|purge`` and the open-group options of create/ban."""

from __future__ import annotations

import argparse
from typing import Any

from node.api import client
from node.cli.common import escape, out, table
from node.datadir import DataDir


def cmd_discover(args: argparse.Namespace, datadir: DataDir) -> int:
    groups = client.call(datadir.control_socket, "group.discover", timeout=args.timeout)
    if args.json or not groups:
        return out(args, groups, "no open groups heard nearby (yet)")
    rows = [("ID", "NAME", "POLICY", "MEMBERS SERVING", "")]
    rows += [(g["id"][:12], escape(g["name"]), g["policy"],
              ", ".join(f"{s['short_id']}@{s['address']}" for s in g["servers"]),
              "(joined)" if g["joined"] else "") for g in groups]
    table(rows)
    return 0


def cmd_join(args: argparse.Namespace, datadir: DataDir) -> int:
    g = client.call(datadir.control_socket, "group.join", group=args.group)
    return out(args, g, f"joined open group {escape(g['name'])!r} ({g['policy']})\n"
                         f"  id {g['id']}")


def cmd_ban(args: argparse.Namespace, datadir: DataDir) -> int:
    params: dict[str, Any] = {"group": args.group, "peer": args.peer, "purge": args.purge}
    if args.minutes:
        params["minutes"] = args.minutes
    event = client.call(datadir.control_socket, "group.ban", **params)
    return out(args, event, escape(event["info"] or "done"))


def cmd_peer_op(args: argparse.Namespace, datadir: DataDir) -> int:
    params: dict[str, Any] = {"group": args.group, "peer": args.peer}
    if args.op == "group.approve":
        params["unapprove"] = args.unapprove
    result = client.call(datadir.control_socket, args.op, **params)
    if args.op == "group.purge":
        return out(args, result, f"deleted {result['deleted']} message(s)")
    return out(args, result, escape(result["info"] or "done"))


def add_open_parsers(gsub: Any, common: list[argparse.ArgumentParser]) -> None:
    p = gsub.add_parser("discover", parents=common, help="list open groups nearby (mDNS)")
    p.add_argument("--timeout", type=float, default=3.0, metavar="S",
                   help="wait up to S seconds for the first group to be heard (default 3)")
    p.set_defaults(func=cmd_discover)
    p = gsub.add_parser("join", parents=common, help="join an open group heard nearby")
    p.add_argument("group", metavar="NAME|ID")
    p.set_defaults(func=cmd_join)
    p = gsub.add_parser("approve", parents=common,
                        help="let a peer join an open group with a whitelist (admin)")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("peer", metavar="PEER_ID")
    p.add_argument("--unapprove", action="store_true", help="take the approval back")
    p.set_defaults(func=cmd_peer_op, op="group.approve")
    p = gsub.add_parser("unban", parents=common, help="lift a peer's ban (admin)")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("peer", metavar="PEER_ID")
    p.set_defaults(func=cmd_peer_op, op="group.unban")
    p = gsub.add_parser("purge", parents=common,
                        help="delete every message of a member (admin)")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("peer", metavar="PEER_ID")
    p.set_defaults(func=cmd_peer_op, op="group.purge")
    ban = gsub.choices["ban"]
    ban.add_argument("--minutes", type=int, metavar="N",
                     help="lift the ban after N minutes (an admin's node does it)")
    ban.add_argument("--purge", action="store_true", help="also delete all its messages")
    ban.set_defaults(func=cmd_ban)
    create = gsub.choices["create"]
    create.add_argument("--policy", choices=["whitelist", "blacklist"],
                        help="open groups: who may join (whitelist: peers an admin approved; "
                        "blacklist: anyone not banned)")
