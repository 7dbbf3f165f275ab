"""The ``kith`` command line.

``kith [--data DIR] COMMAND ...``; with no command, ``kith`` runs the node.
Commands other than ``init``, ``id`` and ``run`` talk to the running node
through its control socket. Every command that prints data takes ``--json``.
Errors are one line on stderr and a non-zero exit status, never a traceback.
This module builds the parser and dispatches; the commands live beside it
(``node_commands``: the node itself; ``groups``, ``files``, ``chat``, ``web``...).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import cast

from node.cli import web
from node.cli.common import IntermixedParser, mebibytes
from node.cli.node_commands import (
    cmd_demo,
    cmd_id,
    cmd_init,
    cmd_network_key,
    cmd_peers,
    cmd_run,
)
from node.config import DEFAULT_HOST, DEFAULT_PORT, Config
from node.datadir import DataDir, resolve_data_dir
from node.errors import KithError, NotRunningError
from node.files.attachment import HARD_MAX_FILE
from node.version import __version__
from node.wire.hello import MAX_NAME_CHARS

EXIT_ERROR = 1
EXIT_NOT_RUNNING = 3

DEFAULTS = Config()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kith",
        description="Serverless, end-to-end encrypted group chat for a local network.",
        epilog="With no command, `kith` runs the node (same as `kith run`; see "
        "`kith run --help` for --listen, --peer and the other options). "
        "Data directory: --data, else $KITH_DATA, else the platform's user data directory.",
    )
    parser.add_argument("--data", metavar="DIR", help="data directory (identity, sockets)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"kith {__version__}")
    data_again = argparse.ArgumentParser(add_help=False)
    data_again.add_argument("--data", metavar="DIR", default=argparse.SUPPRESS,
                            help="data directory (also accepted before the command)")
    json_flag = argparse.ArgumentParser(add_help=False)
    json_flag.add_argument("--json", action="store_true", help="print JSON")

    # Options anywhere: `kith send lab --count 2 hello` (IntermixedParser).
    sub = cast("argparse._SubParsersAction[argparse.ArgumentParser]", parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=IntermixedParser))

    p = sub.add_parser("init", parents=[data_again, json_flag],
                       help="create this node's identity (or rename it)",
                       description="Create the identity key pair in the data directory if it "
                       "does not exist yet; with --name, set the display name peers see.")
    p.add_argument("--name", help=f"display name (at most {MAX_NAME_CHARS} characters)")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("id", parents=[data_again, json_flag], help="show this node's identity",
                       description="Show the peer id, fingerprint and name; while the node runs, "
                       "also the address it listens on.")
    p.set_defaults(func=cmd_id)

    p = sub.add_parser("run", parents=[data_again], help="run the node in the foreground",
                       description="Run the node until Ctrl-C or SIGTERM. Creates the identity "
                       "on first use.")
    p.add_argument("--listen", metavar="HOST:PORT",
                   default=f"{DEFAULT_HOST}:{DEFAULT_PORT}",
                   help=f"address to accept peers on (default {DEFAULT_HOST}:{DEFAULT_PORT}; "
                   "port 0 picks a free port)")
    p.add_argument("--peer", metavar="[PEERID@]HOST:PORT", action="append", default=[],
                   help="dial this peer and keep the channel up (repeatable); with PEERID@ the "
                   "peer must prove that identity")
    p.add_argument("--network-key", metavar="FILE",
                   help="only accept peers holding this 32-byte key (see `kith network-key`)")
    p.add_argument("--name", help="display name for this run (default: from `kith init`)")
    p.add_argument("--no-read-receipts", action="store_true",
                   help="do not tell others what you have read")
    p.add_argument("--relay", action="store_true",
                   help="run as a relay only: store and forward the events of the groups "
                   "whose admins designate this node (kith group relay add); it cannot read "
                   "or post")
    p.add_argument("--relay-budget", type=mebibytes, default=DEFAULTS.relay_budget,
                   metavar="MIB", help="with --relay: most bytes kept per group (default "
                   f"{DEFAULTS.relay_budget >> 20}); events over it are refused")
    p.add_argument("--relay-expiry", type=float, default=DEFAULTS.relay_expiry,
                   metavar="SECONDS", help="with --relay: how long a copy is held for an "
                   f"offline member (default {DEFAULTS.relay_expiry:g}, 7 days)")
    p.add_argument("--relay-max-groups", type=int, default=DEFAULTS.relay_max_groups,
                   metavar="N", help="with --relay: most groups relayed (default "
                   f"{DEFAULTS.relay_max_groups}); further designations are ignored")
    p.add_argument("--fanout", choices=["client", "relay"], default=DEFAULTS.fanout,
                   help="client: push each message to every member (default); relay: send "
                   "one copy to a connected relay of the group, which pushes it on")
    p.add_argument("--no-mdns", action="store_true",
                   help="do not announce or browse on mDNS (LAN discovery); use --peer instead")
    p.add_argument("--mdns-interface", metavar="IFACE",
                   help="announce and browse only on this interface (name or IPv4 address)")
    p.add_argument("--max-file-size", type=mebibytes, default=DEFAULTS.max_file_size,
                   metavar="MIB", help="largest attachment sent or fetched, in MiB (default "
                   f"{DEFAULTS.max_file_size >> 20}, at most {HARD_MAX_FILE >> 20}); larger "
                   "files are not fetched")
    p.add_argument("--handshake-timeout", type=float, default=DEFAULTS.handshake_timeout,
                   metavar="SECONDS", help=argparse.SUPPRESS)
    p.add_argument("--max-handshaking", type=int, default=DEFAULTS.max_handshaking,
                   metavar="N", help=argparse.SUPPRESS)
    p.add_argument("--max-channels", type=int, default=DEFAULTS.max_channels, metavar="N",
                   help=f"most peers connected at once; more are refused (default "
                   f"{DEFAULTS.max_channels}, lowered to fit `ulimit -n`)")
    p.add_argument("--web", action="store_true",
                   help="also serve the browser client (see `kith web`); prints its URL")
    web.add_web_listen(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("peers", parents=[data_again, json_flag],
                       help="list connected peers (asks the running node)",
                       description="List the peers this node knows: connected ones first, "
                       "then those it saw recently, with how they were found (mdns, dial, "
                       "inbound). A peer's name or short ID is what `kith group add` takes. "
                       "Times are this computer's local time.")
    p.set_defaults(func=cmd_peers)
    p = sub.add_parser("relay", help="what a relay node holds (kith run --relay)")
    rsub = p.add_subparsers(dest="relay_command", metavar="ACTION", required=True)
    p = rsub.add_parser("status", parents=[data_again, json_flag],
                        help="the groups this node relays: events, bytes, copies held, "
                        "members and how many are connected")
    from node.cli.groups import cmd_relay_status

    p.set_defaults(func=cmd_relay_status)

    _add_group_commands(sub, data_again, json_flag)

    from node.cli import chat

    chat.add_parser(sub, data_again)
    web.add_parser(sub, data_again)

    from node.cli import share

    share.add_parser(sub)

    p = sub.add_parser("demo", help="watch a group survive a network cut (no setup)",
                       description="Start a small group of nodes on 127.0.0.1 in this process, "
                       "run a short conversation, cut one node off while everybody keeps "
                       "typing, reconnect it and watch every node converge to the same history.")
    p.add_argument("--nodes", type=int, default=4, choices=range(3, 9), metavar="N",
                   help="how many nodes (3-8, default 4)")
    p.add_argument("--mode", choices=["private", "pairwise"], default="private",
                   help="how the demo group encrypts: private, Sender Keys, one encryption "
                   "per message (default); pairwise, one encryption per recipient")
    p.set_defaults(func=cmd_demo)

    # Only for `kith --help`: main() hands `kith bench ...` to node.cli.bench before parsing.
    sub.add_parser("bench", add_help=False, help="measure what client-side fanout costs "
                   "(kith bench fanout|rekey|catchup|scale|hostile|sim, see kith bench --help)")

    p = sub.add_parser("network-key", parents=[data_again, json_flag],
                       help="create a LAN network key file",
                       description="Write a new random 32-byte network key to FILE (mode 0600). "
                       "Share it out of band; nodes run with --network-key FILE only accept "
                       "peers holding the same key.")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(func=cmd_network_key)
    from node.cli.groups import add_examples

    add_examples(sub)
    return parser


def _add_group_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    data_again: argparse.ArgumentParser,
    json_flag: argparse.ArgumentParser,
) -> None:
    from node.cli import groups

    common = [data_again, json_flag]
    g = sub.add_parser("group", parents=[data_again], help="create and manage groups",
                       description="Groups are end-to-end encrypted conversations. GROUP is a "
                       "group's id (or a unique prefix of 6+ hex digits) or its unique name.")
    gsub = g.add_subparsers(dest="group_command", metavar="ACTION", required=True)
    p = gsub.add_parser("create", parents=common, help="create a group (you are its owner)")
    p.add_argument("name")
    p.add_argument("--mode", choices=["private", "pairwise", "open"], default="private",
                   help="private: Sender Keys, one encryption per message (default); "
                   "pairwise: one encryption per recipient (for comparison); "
                   "open: a public channel announced on the LAN, not end-to-end encrypted "
                   "(needs --policy)")
    p.add_argument("--max-members", type=int, default=500, metavar="N",
                   help="cap on members (default 500, at most 5000)")
    p.add_argument("--share-history", action="store_true",
                   help="private groups: members added later can read earlier messages "
                   "(members keep old keys to give them; see docs/threat-model.md)")
    p.set_defaults(func=groups.cmd_create)
    p = gsub.add_parser("list", parents=common, help="list your groups")
    p.set_defaults(func=groups.cmd_list)
    p = gsub.add_parser("members", parents=common, help="list a group's members")
    p.add_argument("group", metavar="GROUP")
    p.set_defaults(func=groups.cmd_members)
    member_ops = [
        ("add", "add a peer to a group",
         "Add a peer to GROUP (owners, admins and members). It learns of the group as soon "
         "as the two nodes are connected and can read what is sent from then on."),
        ("remove", "remove a member",
         "Remove a member of GROUP (owners and admins): it cannot read anything new."),
        ("ban", "ban a peer (removes it and keeps it out)",
         "Ban a peer from GROUP (owners and admins): it is removed and cannot be added or "
         "join again until unbanned."),
    ]
    for name, helptext, description in member_ops:
        p = gsub.add_parser(name, parents=common, help=helptext, description=description)
        p.add_argument("group", metavar="GROUP")
        p.add_argument("peer", metavar="PEER", help=PEER_HELP)
        if name == "add":
            p.add_argument("--role", choices=["admin", "member", "guest"], default="member",
                           help="admin: may remove, ban and change roles below its own; "
                           "member: may post and add members (default); guest: reads only")
            p.add_argument("--name", dest="label", default="",
                           help="how to call the new member until it connects")
        p.set_defaults(func=groups.cmd_member_op, op=f"group.{name}")
    p = gsub.add_parser("relay", help="designate or undesignate a relay of a group",
                        description="A relay (a node run with `kith run --relay`) stores and "
                        "forwards a group's events for members who are offline, and can fan "
                        "messages out; it can neither read nor post (docs/threat-model.md). "
                        "Owners and admins only.")
    rsub = p.add_subparsers(dest="relay_command", metavar="ACTION", required=True)
    for name, on in (("add", True), ("remove", False)):
        p = rsub.add_parser(name, parents=common,
                            help=("make PEER a relay of GROUP" if on
                                  else "stop PEER relaying GROUP"))
        p.add_argument("group", metavar="GROUP")
        p.add_argument("peer", metavar="PEER", help=PEER_HELP)
        p.set_defaults(func=groups.cmd_relay, on=on)
    p = gsub.add_parser("role", parents=common, help="change a member's role")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("peer", metavar="PEER", help=PEER_HELP)
    p.add_argument("role", choices=["admin", "member", "guest"])
    p.set_defaults(func=groups.cmd_member_op, op="group.role")
    p = gsub.add_parser("leave", parents=common, help="leave a group")
    p.add_argument("group", metavar="GROUP")
    p.set_defaults(func=groups.cmd_member_op, op="group.leave", peer=None)

    p = sub.add_parser("send", parents=common, help="send a message to a group",
                       description="Send a message to everyone in GROUP. Options may come "
                       "anywhere. While the node is stopped the message (with --file, a copy "
                       "of the file) is queued in the data directory and goes out when the "
                       "node starts; it keeps the time you sent it.")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("text", nargs="*", metavar="TEXT",
                   help="the message (words are joined with spaces); - reads it from stdin")
    p.add_argument("--count", type=int, default=1, metavar="N",
                   help="send N numbered copies (TEXT #1 .. TEXT #N), for load and demos")
    p.set_defaults(func=groups.cmd_send)
    p = sub.add_parser("log", parents=common, help="show a group's conversation",
                       description="Every node shows the same events in the same order "
                       "(lamport, author, seq). Your messages show their delivery state. "
                       "The time before each line is when this node got the event (yours: "
                       "when you sent it) by this computer's clock and time zone, so it may "
                       "differ by a second or more between nodes. [N] is a message's number "
                       "on this node, which EVENT arguments take (`kith react lab 3 👍`). "
                       "Works while the node is stopped too (reads the stored history; "
                       "--follow then waits for the node).")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("--follow", "-f", action="store_true",
                   help="keep printing new events until Ctrl-C (waits for a stopped node)")
    p.add_argument("--all", action="store_true", help="include sender-key events")
    p.add_argument("--limit", type=int, metavar="N", help="only the last N events")
    p.add_argument("--mark-read", action="store_true",
                   help="with --json: count this as reading (plain output always does)")
    p.set_defaults(func=groups.cmd_log)
    groups.add_message_parsers(sub, gsub, common)
    from node.cli.open_groups import add_open_parsers

    add_open_parsers(gsub, common)
    from node.cli import files

    files.add_parsers(sub, common)


#: What PEER means wherever a command takes one.
PEER_HELP = ("a peer: its name as `kith peers` shows it, its short ID (or a longer prefix "
             "of its ID) or its full 56-character ID")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``kith`` command; its exit status."""
    try:
        try:
            code = _main(argv)
        finally:  # --help exits through SystemExit: its output is flushed here too
            sys.stdout.flush()  # a closed pipe shows here, not at exit
    except BrokenPipeError:
        return _reader_went_away()
    return code


def _main(argv: Sequence[str] | None) -> int:
    argv = _default_to_run(list(sys.argv[1:] if argv is None else argv))
    at = _command_index(argv)
    if argv[at:at + 1] == ["bench"]:  # its own parsers, --help included
        from node.cli.bench import main as bench_main

        return bench_main(argv[at + 1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    datadir = DataDir(resolve_data_dir(args.data))
    try:
        code: int = args.func(args, datadir)
        return code
    except NotRunningError as exc:
        print(f"kith: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except KithError as exc:
        print(f"kith: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _reader_went_away() -> int:
    """stdout's reader has gone (``kith log lab | head -2``): stop quietly, as Unix tools do.

    Output still buffered would fail again when Python flushes it at exit, so stdout
    is pointed at /dev/null first. The status is a SIGPIPE death's (128 + 13).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


COMMANDS = {"init", "id", "run", "peers", "network-key", "group", "send", "log", "demo", "bench",
            "chat", "edit", "delete", "react", "pin", "save", "share", "files", "web", "relay"}


def _command_index(argv: list[str]) -> int:
    """Where the command is: after the global options."""
    i = 0
    while i < len(argv):
        if argv[i] == "--data":
            i += 2
        elif argv[i].startswith("--data=") or argv[i] in ("-v", "--verbose"):
            i += 1
        else:
            break
    return i


def _default_to_run(argv: list[str]) -> list[str]:
    """``kith [global options] [run options]`` means ``kith ... run ...``."""
    i = _command_index(argv)
    if i < len(argv) and (argv[i] in COMMANDS or argv[i] in ("-h", "--help", "--version")):
        return argv
    return [*argv[:i], "run", *argv[i:]]
