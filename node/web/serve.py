"""Serving the browser client: bind, then Hypercorn's trio worker, beside the node.

``serve_web`` binds the listening socket itself (so it can fall back to a free port
when the asked one is taken, and know the port before the first request: the guard
needs it for the Host check), hands it to ``hypercorn.trio.serve`` as ``fd://``, and
reports the URL with the token once the server accepts connections. It is the same
in both modes: ``kith web`` attached to a running node, and ``kith web`` or
``kith run --web`` beside the node in this process.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import time
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from node.chat.backend import NodeClient
from node.errors import ConfigError
from node.web import protocol
from node.web.app import create_app
from node.web.bridge import Hub
from node.web.state import WebState
from node.web.uploads import clean_staging

log = logging.getLogger(__name__)

EXPOSED_WARNING = ("warning: the page listens on {host}, not only on this computer: anyone "
                   "who can reach it and learns the URL's token can read and send as you; "
                   "prefer the default 127.0.0.1 (see docs/threat-model.md)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port``, or to a free port of ``host`` when that is taken."""
    try:
        infos = socket.getaddrinfo(host.strip("[]") or None, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConfigError(f"cannot listen for the page on {host}: {exc.strerror or exc}"
                          ) from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        try:
            sock.bind((address[0], port, *address[2:]))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or port == 0:
                raise
            log.info("web: port %d is taken; using a free one", port)
            sock.bind((address[0], 0, *address[2:]))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen for the page on {host}:{port}: "
                          f"{exc.strerror or exc}") from exc
    return sock


def hypercorn_config(sock: socket.socket) -> HypercornConfig:
    config = HypercornConfig()
    config.bind = [f"fd://{sock.detach()}"]  # Hypercorn's socket owns it from here
    config.websocket_max_message_size = protocol.MAX_MESSAGE
    config.accesslog = None
    config.errorlog = logging.getLogger("kith.web.http")
    config.graceful_timeout = 2.0
    config.keep_alive_timeout = 30.0
    return config


async def serve_web(
    data_dir: Path,
    control_socket: Path,
    *,
    mode: str,
    listen: tuple[str, int] = (protocol.DEFAULT_WEB_HOST, protocol.DEFAULT_WEB_PORT),
    max_file_size: int | None = None,
    token: str | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the page until cancelled; ``task_status.started(url)`` once it accepts."""
    host, port = listen
    await trio.to_thread.run_sync(clean_staging, data_dir, time.time())
    sock = bind(host, port)
    state = WebState(data_dir, host, token=token)
    state.bound(sock.getsockname()[1])
    hub = Hub(NodeClient(control_socket), mode, max_file_size=max_file_size)
    app = create_app(state, hub)
    config = hypercorn_config(sock)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve, app, config)
        log.info("web: serving the page on %s:%d", host, state.port)
        task_status.started(state.url)
