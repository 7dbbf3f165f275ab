"""Control socket client for the CLI (plain blocking sockets: one request, one answer)."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

from node.api import protocol
from node.errors import KithError, NotRunningError

TIMEOUT = 120.0
#: Answers come from our own node and may be long (a whole group log); requests stay small.
MAX_ANSWER = 256 * 1024 * 1024


class ConnectionClosed(KithError):
    """The node closed the control connection (it is stopping, most likely)."""


def _connect(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(os.fspath(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise NotRunningError(
            f"no node is running for {path.parent} (start one with `kith run`)"
        ) from exc
    except OSError as exc:
        sock.close()
        raise KithError(f"cannot reach the node at {path}: {exc.strerror}") from exc
    return sock


def _lines(sock: socket.socket) -> Iterator[dict[str, Any]]:
    buf = bytearray()
    while True:
        while b"\n" not in buf:
            try:
                chunk = sock.recv(65536)
            except TimeoutError as exc:
                raise KithError(f"the node did not answer within {TIMEOUT:g} s") from exc
            except OSError as exc:
                raise ConnectionClosed("the node closed the control connection "
                                       f"({exc.strerror})") from None
            if not chunk:
                raise ConnectionClosed("the node closed the control connection")
            buf += chunk
            if len(buf) > MAX_ANSWER:
                raise KithError("the node's answer is too long")
        line, _, rest = bytes(buf).partition(b"\n")
        buf = bytearray(rest)
        response = json.loads(line)
        if not response.get("ok"):
            raise KithError(str(response.get("error", "unknown error")))
        yield response


def _send(sock: socket.socket, request: bytes) -> None:
    try:
        sock.sendall(request)
    except OSError as exc:  # not a BrokenPipeError: that means our stdout's reader left
        raise ConnectionClosed(f"the node closed the control connection ({exc.strerror})"
                               ) from None


def call(path: Path, op: str, **params: Any) -> Any:
    """Send one request to the node behind ``path``; return its result or raise ``KithError``."""
    sock = _connect(path)
    try:
        _send(sock, protocol.encode({"op": op, **params}))
        return next(_lines(sock)).get("result")
    finally:
        sock.close()


def follow(path: Path, op: str, **params: Any) -> Generator[Any, None, None]:
    """Like ``call`` with ``follow``: yields the result, then each streamed event, forever."""
    sock = _connect(path)
    try:
        _send(sock, protocol.encode({"op": op, "follow": True, **params}))
        lines = _lines(sock)
        yield next(lines).get("result")
        sock.settimeout(None)
        for response in lines:
            yield response.get("event")
    finally:
        sock.close()
