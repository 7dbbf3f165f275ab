"""The commands about this node itself: ``init``, ``id``, ``peers``, ``network-key``, ``demo``
and ``run`` (the parser and the dispatch are in ``node.cli.main``).

``run`` is the only one that starts a node: it checks the port before it makes an
identity (a first run that cannot listen leaves nothing behind), locks the data
directory, builds the ``Config`` from the options and runs the ``App`` (and, with
``--web``, the browser client beside it) until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import trio

from node.api import client
from node.cli import web
from node.cli.common import check_name, load_network_key, lock_data_dir, only_error, table
from node.config import DEFAULT_PORT, Config
from node.crypto.keys import IdentityKey
from node.crypto.netkey import key_id
from node.datadir import DataDir
from node.errors import ConfigError, KithError, NotRunningError
from node.ids import fingerprint, format_peer_id, short_id
from node.net.address import DialTarget, parse_hostport
from node.version import PROTOCOL_VERSION

if TYPE_CHECKING:
    from node.app import App

log = logging.getLogger("kith")


def _print_json(obj: Any, out: TextIO = sys.stdout) -> None:
    json.dump(obj, out, indent=2)
    out.write("\n")


def _identity_view(datadir: DataDir, key: IdentityKey) -> dict[str, Any]:
    pid = key.peer_id
    return {
        "peer_id": format_peer_id(pid),
        "short_id": short_id(pid),
        "public_key": bytes(pid).hex(),
        "name": datadir.load_name(),
        "fingerprint": fingerprint(pid),
        "data_dir": str(datadir.path),
        "listen": None,
        "mdns_instance": None,
        "running": False,
    }


def cmd_init(args: argparse.Namespace, datadir: DataDir) -> int:
    created = not datadir.has_identity()
    key = datadir.create_identity() if created else datadir.load_identity()
    if args.name is not None:
        datadir.save_name(check_name(args.name))
    elif created:
        datadir.save_name(datadir.load_name())
    view = _identity_view(datadir, key) | {"created": created}
    if args.json:
        _print_json(view)
    else:
        print(("Created" if created else "Existing") + f" identity in {datadir.path}")
        _print_identity(view)
    return 0


def _print_identity(view: dict[str, Any]) -> None:
    print(f"  peer id      {view['peer_id']}")
    print(f"  name         {view['name']}")
    print(f"  fingerprint  {view['fingerprint']}")
    if view.get("listen"):
        print(f"  listening on {view['listen']}")


def cmd_id(args: argparse.Namespace, datadir: DataDir) -> int:
    key = datadir.load_identity()
    view = _identity_view(datadir, key)
    try:
        live = client.call(datadir.control_socket, "id")
    except NotRunningError:
        pass
    else:
        view |= {"listen": live["listen"], "name": live["name"],
                 "mdns_instance": live.get("mdns_instance"), "running": True}
    if args.json:
        _print_json(view)
    else:
        _print_identity(view)
        if not view["running"]:
            print("  (node not running)")
    return 0


def cmd_peers(args: argparse.Namespace, datadir: DataDir) -> int:
    peers: list[dict[str, Any]] = client.call(datadir.control_socket, "peers")
    if args.json:
        _print_json(peers)
        return 0
    if not peers:
        print("no peers known yet")
        return 0
    rows = [("ID", "NAME", "STATE", "ADDRESS", "FOUND", "SINCE / LAST SEEN")]
    for p in peers:
        when = p["since"] if p["state"] == "online" else p["last_seen"]
        rows.append((
            p["short_id"] or "?",
            p["name"],
            p["state"],
            p["address"],
            ",".join(p["found"]),
            time.strftime("%H:%M:%S", time.localtime(when)) if when else "-",
        ))
    table(rows)
    return 0


def cmd_demo(args: argparse.Namespace, datadir: DataDir) -> int:
    from node.cli import demo

    logging.getLogger().setLevel(logging.WARNING if not args.verbose else logging.DEBUG)
    return demo.main(args.nodes, args.mode)


def cmd_network_key(args: argparse.Namespace, datadir: DataDir) -> int:
    path = Path(args.file)
    key = os.urandom(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; not overwriting it") from None
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    if args.json:
        _print_json({"file": str(path), "key_id": key_id(key)})
    else:
        print(f"wrote network key {key_id(key)} to {path}")
    return 0


def cmd_run(args: argparse.Namespace, datadir: DataDir) -> int:
    from node.app import App

    host, port = parse_hostport(args.listen, default_port=DEFAULT_PORT)
    targets = [DialTarget.parse(t, default_port=DEFAULT_PORT) for t in args.peer]
    network_key = load_network_key(args.network_key) if args.network_key else None
    datadir.ensure()
    datadir.check_socket_path()
    lock = lock_data_dir(datadir)
    try:
        created = not datadir.has_identity()
        if created:  # a first run that cannot listen leaves no identity behind
            trio.run(_check_can_listen, host, port)
        key = datadir.load_or_create_identity()
        if created:
            log.info("created identity %s in %s", format_peer_id(key.peer_id), datadir.path)
            datadir.save_name(datadir.load_name())
        name = check_name(args.name) if args.name else datadir.load_name()
        if args.name and name != datadir.load_name():
            datadir.save_name(name)  # who this node is, also when it is stopped (kith log)
        config = Config(
            listen_host=host,
            listen_port=port,
            name=name,
            network_key=network_key,
            handshake_timeout=args.handshake_timeout,
            max_handshaking=args.max_handshaking,
            max_channels=args.max_channels,
            mdns=not args.no_mdns,
            mdns_interface=args.mdns_interface,
            read_receipts=not args.no_read_receipts,
            max_file_size=args.max_file_size,
            relay=args.relay,
            relay_budget=args.relay_budget,
            relay_expiry=args.relay_expiry,
            relay_max_groups=args.relay_max_groups,
            fanout=args.fanout,
        )
        if network_key is not None:
            log.info("network key %s: only peers holding it can connect", key_id(network_key))
        app = App(key, config, datadir)
        try:
            web_listen = web.web_address(args.web_listen) if args.web else None
            trio.run(_run_until_signal, app, targets, web_listen)
        except BaseExceptionGroup as group:
            # Nurseries wrap errors; a KithError (say, the port is taken) is still one line.
            error = only_error(group)
            if isinstance(error, KithError):
                raise error from None
            raise
    finally:
        os.close(lock)
    log.info("node stopped")
    return 0


async def _check_can_listen(host: str, port: int) -> None:
    """Raise the node's own "cannot listen" error now if ``host:port`` is taken."""
    from node.node import open_listeners

    for listener in await open_listeners(host, port):
        await listener.aclose()


async def _run_until_signal(app: App, targets: list[DialTarget],
                            web_listen: tuple[str, int] | None = None) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run, targets)
            if web_listen is not None:
                await nursery.start(web.serve_beside, app.data_dir, web_listen,
                                    app.node.config.max_file_size, "in this process")
            log.info("control socket %s; protocol kith/%d", app.data_dir.control_socket,
                     PROTOCOL_VERSION)
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
