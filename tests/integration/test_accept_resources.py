"""Both accept loops (peers over TCP, the control socket) outlive running out of a resource.

``accept()`` is made to fail with each errno that means "out of descriptors or
memory" a few times, as the kernel does while a flood holds every descriptor; the
node must log one line, pause, and then accept the next connection as usual.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from node.api.server import serve_control
from node.config import Config
from node.crypto.keys import IdentityKey
from node.net.admission import RESOURCE_ERRNOS
from node.node import Node
from tests.integration import NODE_LOG, SOON, LogWatch, one_line, start_node, wait_connected

CODES = sorted(RESOURCE_ERRNOS)
IDS = [errno.errorcode[c] for c in CODES]
FAILURES = 4

Accept = Callable[[trio.SocketListener], Awaitable[trio.SocketStream]]


def failing_accept(monkeypatch: pytest.MonkeyPatch, code: int) -> list[int]:
    """Make every ``SocketListener.accept`` fail with ``code`` ``FAILURES`` times in all."""
    real: Accept = trio.SocketListener.accept
    failed: list[int] = []

    async def accept(self: trio.SocketListener) -> trio.SocketStream:
        await trio.lowlevel.checkpoint()
        if len(failed) < FAILURES:
            failed.append(code)
            raise OSError(code, os.strerror(code))
        return await real(self)

    monkeypatch.setattr(trio.SocketListener, "accept", accept)
    return failed


@pytest.mark.parametrize("code", CODES, ids=IDS)
async def test_peer_accept_loop_survives(
    code: int, nursery: trio.Nursery, logs: LogWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = await start_node(nursery, "bob")
    await trio.testing.wait_all_tasks_blocked()  # bob's accept loop waits: not patched
    failed = failing_accept(monkeypatch, code)
    a = await start_node(nursery, "alice")
    with trio.fail_after(SOON):
        await b.node.connect(a.target(a.peer_id))
    await wait_connected((a, b), (b, a))
    assert failed == [code] * FAILURES
    lines = logs.matching(r"^cannot accept connections: ", logger=NODE_LOG)
    assert len(lines) == 1, lines  # one line for the whole burst
    one_line(lines)
    assert os.strerror(code) in lines[0]


async def ask(path: Path, request: dict[str, Any]) -> dict[str, Any]:
    """One request on a new control connection; its JSON answer."""
    with trio.fail_after(SOON):
        stream = await trio.open_unix_socket(os.fspath(path))
        async with stream:
            await stream.send_all(json.dumps(request).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                data = await stream.receive_some()
                assert data, "the control socket closed without answering"
                buf += data
    answer = json.loads(buf)
    assert isinstance(answer, dict)
    return answer


@pytest.mark.parametrize("code", CODES, ids=IDS)
async def test_control_accept_loop_survives(
    code: int, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "node.api.server")
    failed = failing_accept(monkeypatch, code)
    node = Node(IdentityKey.generate(), Config(name="alice"))
    app: Any = SimpleNamespace(node=node)  # ``id`` needs only the node
    with tempfile.TemporaryDirectory(prefix="kith-") as tmp:
        path = Path(tmp) / "control.sock"
        await nursery.start(serve_control, app, path)
        assert (await ask(path, {"op": "id"}))["result"]["name"] == "alice"
    assert failed == [code] * FAILURES
    lines = [r.getMessage() for r in caplog.records
             if r.getMessage().startswith("cannot accept control connections: ")]
    assert len(lines) == 1, lines


