"""``kith chat [GROUP]``: the interactive terminal client.

If a node already runs on the data directory (it holds ``node.lock``), the
client attaches to it through the control socket. Otherwise it starts the node
itself, in the same process, with the options ``kith run`` takes, and stops it
on exit; the node logs to ``chat.log`` in the data directory meanwhile (the
terminal belongs to the client).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

import trio

from node.cli.common import check_name, load_network_key, lock_data_dir, mebibytes, only_error
from node.config import DEFAULT_HOST, DEFAULT_PORT, Config
from node.datadir import DataDir
from node.errors import ConfigError, KithError
from node.files.attachment import HARD_MAX_FILE

DESCRIPTION = """\
An interactive chat on the terminal: your groups with unread counts, the
conversation (replies, edits, reactions, pins, delivery and read marks), the
members and who is online or typing, and a line to type in. Type /help inside
for the commands; Tab completes commands, peer names and group names;
Ctrl-N/Ctrl-P switch groups; Ctrl-C quits.

If no node is running on this data directory, `kith chat` starts one in its own
process (with the --listen/--peer/... options below, as `kith run` takes them)
and stops it when you quit; its log goes to chat.log in the data directory.
If a node is running, it attaches to it and those options are ignored (the
client says so when you gave any).
Notifications: a terminal bell for new messages in unmuted groups and for
mentions; a desktop notification too with --desktop-notify (needs notify-send).
"""


def add_parser(sub: Any, data_again: argparse.ArgumentParser) -> None:
    """Register ``kith chat``."""
    p = sub.add_parser("chat", parents=[data_again], help="the interactive chat client",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("group", metavar="GROUP", nargs="?",
                   help="group to open first (name or id prefix)")
    add_node_options(p)
    p.add_argument("--desktop-notify", action="store_true",
                   help="also show desktop notifications (notify-send, when a display is set)")
    p.set_defaults(func=cmd_chat, chat_defaults={
        dest: p.get_default(dest) for dest, _ in NODE_OPTIONS})


#: The options that only matter when the client starts the node: (dest, option).
NODE_OPTIONS = (("listen", "--listen"), ("peer", "--peer"), ("network_key", "--network-key"),
                ("name", "--name"), ("no_mdns", "--no-mdns"),
                ("no_read_receipts", "--no-read-receipts"),
                ("mdns_interface", "--mdns-interface"), ("max_file_size", "--max-file-size"))
DEFAULTS = Config()


def add_node_options(p: argparse.ArgumentParser) -> None:
    """The options ``kith run`` takes, for when ``kith chat`` or ``kith web`` starts the node."""
    p.add_argument("--listen", metavar="HOST:PORT", default=f"{DEFAULT_HOST}:{DEFAULT_PORT}",
                   help="when starting the node: address to accept peers on")
    p.add_argument("--peer", metavar="[PEERID@]HOST:PORT", action="append", default=[],
                   help="when starting the node: dial this peer (repeatable)")
    p.add_argument("--network-key", metavar="FILE",
                   help="when starting the node: only accept peers holding this key")
    p.add_argument("--name", help="when starting the node: display name for this run")
    p.add_argument("--no-mdns", action="store_true",
                   help="when starting the node: no LAN discovery (use --peer)")
    p.add_argument("--no-read-receipts", action="store_true",
                   help="when starting the node: do not tell others what you have read")
    p.add_argument("--mdns-interface", metavar="IFACE",
                   help="when starting the node: announce and browse only on this interface "
                   "(name or IPv4 address)")
    p.add_argument("--max-file-size", type=mebibytes, default=DEFAULTS.max_file_size,
                   metavar="MIB", help="when starting the node: largest attachment sent or "
                   f"fetched, in MiB (default {DEFAULTS.max_file_size >> 20}, at most "
                   f"{HARD_MAX_FILE >> 20})")


def node_config(args: argparse.Namespace, datadir: DataDir) -> tuple[Any, Config, list[Any]]:
    """(identity key, config, peers to dial) of the node ``kith chat`` or ``kith web``
    starts in its own process, from the options ``add_node_options`` added."""
    from node.net.address import DialTarget, parse_hostport

    host, port = parse_hostport(args.listen, default_port=DEFAULT_PORT)
    targets = [DialTarget.parse(t, default_port=DEFAULT_PORT) for t in args.peer]
    network_key = load_network_key(args.network_key) if args.network_key else None
    key = datadir.load_or_create_identity()
    name = check_name(args.name) if args.name else datadir.load_name()
    config = Config(listen_host=host, listen_port=port, name=name, network_key=network_key,
                    mdns=not args.no_mdns, mdns_interface=args.mdns_interface,
                    max_file_size=args.max_file_size, read_receipts=not args.no_read_receipts)
    return key, config, targets


def ignored_options(args: argparse.Namespace, parser_defaults: dict[str, Any]) -> list[str]:
    """The node options given on the command line (they differ from their defaults)."""
    ignored = []
    for dest, option in NODE_OPTIONS:
        value = getattr(args, dest, None)
        if value != parser_defaults.get(dest):
            ignored.append(f"{option} {value}" if isinstance(value, str) else option)
    return ignored


def attach_note(path: str, ignored: list[str]) -> Any:
    """The status line when the client attaches to a node already running."""
    def note(name: str) -> str:
        text = f"a node is already running in {path} as {name}; attaching to it"
        return text + (f" ({', '.join(ignored)} ignored)" if ignored else "")

    return note


def _log_to_file(datadir: DataDir) -> None:
    """The node logs to chat.log: stderr is the client's screen."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    path = datadir.path / "chat.log"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    os.chmod(path, 0o600)  # (made before with the umask's mode: like the rest, 0600)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    root.addHandler(handler)


def cmd_chat(args: argparse.Namespace, datadir: DataDir) -> int:
    from node.chat.backend import NodeClient, serve_node
    from node.chat.view import desktop_available, run_chat
    if not sys.stdin.isatty() or not sys.stdout.isatty():
        raise ConfigError("kith chat needs a terminal (for scripts: kith send / kith log)")
    datadir.ensure()
    datadir.check_socket_path()
    desktop = args.desktop_notify and desktop_available()
    client = NodeClient(datadir.control_socket)
    try:
        lock = lock_data_dir(datadir)
    except ConfigError:  # a node runs on this data directory: attach to it
        note = attach_note(str(datadir.path), ignored_options(args, args.chat_defaults))
        _run(lambda: run_chat(client, group=args.group, node_mode="attached", desktop=desktop,
                              attach_note=note))
        return 0
    try:
        from node.app import App

        key, config, targets = node_config(args, datadir)
        _log_to_file(datadir)
        app = App(key, config, datadir)

        async def start_node(task_status: trio.TaskStatus[None]) -> None:
            await serve_node(app, targets, task_status=task_status)

        _run(lambda: run_chat(client, group=args.group, node_mode="in this process",
                              start_node=start_node, desktop=desktop))
    finally:
        os.close(lock)
    return 0


def _run(main: Any) -> None:
    """``trio.run(main)``; a KithError inside nursery groups comes out as itself (one line)."""
    try:
        trio.run(main)
    except BaseExceptionGroup as group:
        error = only_error(group)
        if isinstance(error, KithError):
            raise error from None
        raise
