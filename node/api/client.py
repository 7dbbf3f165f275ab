"""Control socket client for the CLI (plain blocking sockets: one request, one answer)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from node.api import protocol
from node.errors import KithError, NotRunningError

TIMEOUT = 10.0


def call(path: Path, op: str, **params: Any) -> Any:
    """Send one request to the node behind ``path``; return its result or raise ``KithError``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        try:
            sock.connect(os.fspath(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NotRunningError(
                f"no node is running for {path.parent} (start one with `kith run`)"
            ) from exc
        except OSError as exc:
            raise KithError(f"cannot reach the node at {path}: {exc.strerror}") from exc
        sock.sendall(protocol.encode({"op": op, **params}))
        buf = bytearray()
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise KithError("the node closed the control connection without answering")
            buf += chunk
            if len(buf) > protocol.MAX_LINE:
                raise KithError("the node's answer is too long")
    except TimeoutError as exc:
        raise KithError(f"the node did not answer within {TIMEOUT:g} s") from exc
    finally:
        sock.close()
    response = json.loads(buf)
    if not response.get("ok"):
        raise KithError(str(response.get("error", "unknown error")))
    return response.get("result")
