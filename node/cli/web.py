"""``kith web``: the browser client, and the page beside ``kith run --web``.

Like ``kith chat``: if a node already runs on the data directory (it holds
``node.lock``), the page attaches to it through the control socket; otherwise
``kith web`` starts the node itself, in the same process, with the options
``kith run`` takes. Either way it serves the page (node/web/), prints one line on
stdout (the URL with the secret token), opens it in the default browser unless
``--no-open``, logs to stderr, and stops cleanly on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
from functools import partial
from typing import Any

import trio

from node.cli.chat import NODE_OPTIONS, add_node_options, ignored_options, node_config
from node.cli.common import lock_data_dir, only_error
from node.datadir import DataDir
from node.errors import ConfigError, KithError
from node.net.address import parse_hostport
from node.web.protocol import DEFAULT_WEB_HOST, DEFAULT_WEB_PORT

log = logging.getLogger("kith")

WEB_LISTEN = f"{DEFAULT_WEB_HOST}:{DEFAULT_WEB_PORT}"

DESCRIPTION = f"""\
Kith in your web browser: your groups with unread counts, the conversation
(replies, edits, reactions, pins, delivery and read marks, typing), members
with presence, roles and fingerprints, files with progress, open groups to
join, notifications. The page is served by this process on {WEB_LISTEN}
(a free port if that one is taken) and talks to nothing but this node.

It prints one line on stdout, the page's URL with a secret token, and opens it
in your default browser (--no-open: only print it). The token is exchanged for
a cookie on first load; anyone who has the URL can use the page as you, so do
not share it. Logs go to stderr. Ctrl-C stops it.

If no node is running on this data directory, `kith web` starts one in its own
process (with the --listen/--peer/... options below, as `kith run` takes them)
and stops it on exit. If a node is running, it attaches to it (those options
are then ignored) and follows it if it restarts.

examples:
  kith web                          open the page (starting the node if needed)
  kith web --no-open                only print the URL
  kith --data ~/.kith-bob web --web-listen 127.0.0.1:8800   a second node, second page
  kith run --web                    the node, with the page beside it
"""


def add_web_listen(p: argparse.ArgumentParser) -> None:
    p.add_argument("--web-listen", metavar="HOST:PORT", default=WEB_LISTEN,
                   help=f"address of the page (default {WEB_LISTEN}; a free port if taken; "
                   "anything but loopback exposes the page to your network)")


def add_parser(sub: Any, data_again: argparse.ArgumentParser) -> None:
    """Register ``kith web``."""
    p = sub.add_parser("web", parents=[data_again], help="the browser client",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_web_listen(p)
    p.add_argument("--no-open", action="store_true",
                   help="do not open the page in a browser; only print its URL")
    add_node_options(p)
    p.set_defaults(func=cmd_web, web_defaults={
        dest: p.get_default(dest) for dest, _ in NODE_OPTIONS})


def web_address(text: str) -> tuple[str, int]:
    """``--web-listen`` as (host, port); a warning on stderr when it is not loopback."""
    from node.web.serve import EXPOSED_WARNING, is_loopback

    host, port = parse_hostport(text, default_port=DEFAULT_WEB_PORT)
    if not is_loopback(host):
        print(EXPOSED_WARNING.format(host=host), file=sys.stderr, flush=True)
    return host, port


def cmd_web(args: argparse.Namespace, datadir: DataDir) -> int:
    datadir.ensure()
    datadir.check_socket_path()
    listen = web_address(args.web_listen)
    try:
        lock = lock_data_dir(datadir)
    except ConfigError:  # a node runs on this data directory: attach to it
        ignored = ignored_options(args, args.web_defaults)
        log.info("a node is already running in %s; attaching to it%s", datadir.path,
                 f" ({', '.join(ignored)} ignored)" if ignored else "")
        _run(partial(_serve, datadir, None, [], listen, "attached", not args.no_open, None))
        return 0
    try:
        from node.app import App

        key, config, targets = node_config(args, datadir)
        app = App(key, config, datadir)
        _run(partial(_serve, datadir, app, targets, listen, "in this process",
                     not args.no_open, args.max_file_size))
    finally:
        os.close(lock)
    log.info("stopped")
    return 0


async def serve_beside(datadir: DataDir, listen: tuple[str, int], max_file_size: int | None,
                       mode: str, *, task_status: trio.TaskStatus[str]) -> None:
    """The page for the node of ``datadir``; prints its URL line once it is served."""
    from node.web.serve import serve_web

    async with trio.open_nursery() as nursery:
        url = await nursery.start(partial(serve_web, datadir.path, datadir.control_socket,
                                          mode=mode, listen=listen,
                                          max_file_size=max_file_size))
        print(url, flush=True)
        task_status.started(url)


async def _serve(datadir: DataDir, app: Any, targets: list[Any], listen: tuple[str, int],
                 mode: str, open_page: bool, max_file_size: int | None) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            if app is not None:
                await nursery.start(app.run, targets)
            url = await nursery.start(serve_beside, datadir, listen, max_file_size, mode)
            if open_page:
                nursery.start_soon(_open, url)
            async for signum in signals:
                log.info("received %s, stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


#: Opens the URL in a child process whose output goes to our stderr: a browser started
#: by ``webbrowser`` inherits stdout, and stdout carries only the URL line.
_OPEN = "import sys, webbrowser; sys.exit(0 if webbrowser.open(sys.argv[1]) else 3)"


async def _open(url: str) -> None:
    try:
        done = await trio.run_process([sys.executable, "-c", _OPEN, url],
                                      stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno(),
                                      check=False)
    except OSError as exc:
        log.info("cannot start a browser (%s): open the URL above yourself", exc)
        return
    if done.returncode != 0:
        log.info("no browser found: open the URL above yourself")


def _run(main: Any) -> None:
    """``trio.run(main)``; a KithError inside nursery groups comes out as itself (one line)."""
    try:
        trio.run(main)
    except BaseExceptionGroup as group:
        error = only_error(group)
        if isinstance(error, KithError):
            raise error from None
        raise
