"""The control socket server (trio driver): lets ``kith`` commands talk to the running node.

The socket lives in the data directory with mode 0600, so only the node's
owner can use it; that is the whole access control (as for ssh-agent).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import socket as stdlib_socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from node.api import file_ops, group_ops, protocol
from node.errors import ConfigError, KithError
from node.ids import fingerprint, format_peer_id, short_id
from node.logs import RateLimitedLog
from node.net import admission

if TYPE_CHECKING:
    from node.api.context import NodeApp
    from node.node import Node

log = logging.getLogger(__name__)
_accept_log = RateLimitedLog(log)


def identity_view(node: Node) -> dict[str, Any]:
    """Who this node is and where it listens (``kith id`` while it runs)."""
    return {
        "peer_id": format_peer_id(node.peer_id),
        "short_id": short_id(node.peer_id),
        "public_key": bytes(node.peer_id).hex(),
        "name": node.name,
        "fingerprint": fingerprint(node.peer_id),
        "listen": node.listen,
        "mdns_instance": node.instance,
        "max_file_size": node.config.max_file_size,  # (the browser client's upload limit)
        "running": True,
    }


def peers_view(node: Node) -> list[dict[str, Any]]:
    """Every peer the node knows of: online, reachable (announced) or offline."""
    rows = []
    for view in node.mesh.views():
        conn = node.connections.get(view.peer_id) if view.peer_id is not None else None
        rows.append(
            {
                "peer_id": format_peer_id(view.peer_id) if view.peer_id is not None else None,
                "short_id": short_id(view.peer_id) if view.peer_id is not None else None,
                "name": view.name,
                "state": view.state.value,
                "address": view.address,
                "found": list(view.found),
                "direction": conn.info.direction if conn is not None else None,
                "since": view.since,
                "last_seen": view.last_seen,
            }
        )
    return rows


OPS: dict[str, Callable[[NodeApp, dict[str, Any]], Any]] = {
    "id": lambda app, req: identity_view(app.node),
    "peers": lambda app, req: peers_view(app.node),
    **group_ops.OPS,
    **file_ops.OPS,
}


async def serve_control(
    app: NodeApp, path: Path, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    raw = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        _unlink(path)  # stale: the node lock guarantees no live owner
        # Bound synchronously (a local path: no waiting) so that the umask, which is
        # process-wide, is back before any other task or thread runs: created 0600.
        old_umask = os.umask(0o177)
        try:
            raw.bind(os.fspath(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        raw.listen(16)
        sock = trio.socket.from_stdlib_socket(raw)
    except OSError as exc:
        raw.close()
        raise ConfigError(f"cannot create control socket {path}: {exc.strerror}") from exc
    listener = trio.SocketListener(sock)
    try:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:  # out of descriptors or memory: pause and go on, never end the node
                stream = await admission.accept(listener, _accept_log, "control connections")
                nursery.start_soon(_handle_client, app, stream)
    finally:
        with trio.CancelScope(shield=True):
            await listener.aclose()
        _unlink(path)


def _unlink(path: Path) -> None:
    # A tiny local unlink; not worth a worker thread.
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


async def _handle_client(app: NodeApp, stream: trio.SocketStream) -> None:
    buf = bytearray()
    async with stream:
        try:
            while True:
                while b"\n" not in buf:
                    if len(buf) > protocol.MAX_LINE:
                        await stream.send_all(protocol.encode(protocol.error("request too long")))
                        return
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                line, _, rest = bytes(buf).partition(b"\n")
                buf = bytearray(rest)
                # For log --follow, watch *before* taking the snapshot, so that nothing
                # delivered in between is missed.
                follow = group_ops.follow_request(app, line)
                watch = group_ops.watch(app, follow[0]) if follow is not None else None
                response = await _dispatch(app, line)
                await stream.send_all(protocol.encode(response))
                if follow is not None and watch is not None and response["ok"]:
                    await group_ops.stream_events(app, follow[0], stream, watch,
                                                  read=follow[1])
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


async def _dispatch(app: NodeApp, line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return protocol.error("request is not JSON")
    if not isinstance(request, dict) or not isinstance(request.get("op"), str):
        return protocol.error('request must be a JSON object with an "op" string')
    handler = OPS.get(request["op"])
    if handler is None:
        return protocol.error(f"unknown op {request['op']!r}")
    try:
        result = handler(app, request)
        if inspect.isawaitable(result):  # long operations yield to the rest of the node
            result = await result
        groups = getattr(app, "groups", None)  # (a bare app in tests has none)
        if groups is not None:  # answer once what the op wrote is stored (group commit)
            await groups.committed()
        return protocol.ok(result)
    except KithError as exc:
        return protocol.error(str(exc))
    except Exception as exc:  # a bug must cost this request, never the node
        log.exception("control request %r failed", request["op"])
        return protocol.error(f"internal error ({type(exc).__name__}): {exc}")
