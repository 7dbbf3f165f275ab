"""A web server (Starlette's TestClient) in front of a real node, over its real control socket.

The node runs in the test's trio loop; the TestClient runs the app in its own trio loop
in a worker thread (``backend="trio"``), so every blocking TestClient call goes through
``call`` (a thread, abandoned on timeout: a test that waits too long fails, it never
hangs). The app reaches the node through the control socket, as ``kith web`` does.
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from node.api.python import Kith, open_node
from node.chat.backend import NodeClient
from node.web.app import create_app
from node.web.bridge import Hub
from node.web.state import WebState

with warnings.catch_warnings():  # Starlette 1.x prefers httpx2 for its test client
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient, WebSocketTestSession

SOON = 15.0
PORT = 8707
BASE = f"http://127.0.0.1:{PORT}"
ORIGIN = {"Origin": BASE}
WS = f"ws://127.0.0.1:{PORT}/ws"
T = TypeVar("T")


@pytest.fixture
def tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kw-") as path:  # short: socket paths
        yield Path(path)


async def call(fn: Callable[[], T], seconds: float = SOON) -> T:
    """``fn()`` in a worker thread, failing the test after ``seconds``."""
    with trio.fail_after(seconds):
        return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


@dataclass
class Web:
    client: TestClient
    state: WebState
    hub: Hub
    node: Kith
    sockets: list[WebSocketTestSession] = field(default_factory=list)

    async def login(self) -> None:
        response = await call(lambda: self.client.get(f"/?token={self.state.token}",
                                                      follow_redirects=False))
        assert response.status_code == 303

    async def connect(self) -> WebSocketTestSession:
        ws = await call(lambda: self.client.websocket_connect(WS, headers=ORIGIN)
                        .__enter__())
        self.sockets.append(ws)
        hello = await receive(ws)
        assert hello["push"] == "hello"
        return ws

    async def close(self, ws: WebSocketTestSession) -> None:
        if ws in self.sockets:
            self.sockets.remove(ws)
            await call(lambda: ws.__exit__(None, None, None))


async def receive(ws: WebSocketTestSession) -> dict[str, Any]:
    message: dict[str, Any] = await call(ws.receive_json)
    return message


async def until(ws: WebSocketTestSession, test: Callable[[dict[str, Any]], bool],
                what: str) -> dict[str, Any]:
    """The first message from the server for which ``test`` holds (skipping others)."""
    seen: list[Any] = []
    try:
        with trio.fail_after(SOON):
            while True:
                message = await receive(ws)
                if test(message):
                    return message
                seen.append(message.get("push", message.get("id")))
    except trio.TooSlowError:
        raise AssertionError(f"no {what}; saw {seen}") from None


async def request(ws: WebSocketTestSession, request_id: int, op: str,
                  **params: Any) -> dict[str, Any]:
    """Send one request; its answer (pushes in between are skipped)."""
    await call(lambda: ws.send_json({"id": request_id, "op": op, **params}))
    return await until(ws, lambda m: m.get("id") == request_id and "push" not in m,
                       f"answer to {op}")


async def first_event(node: Kith, group: str, test: Callable[[dict[str, Any]], bool],
                      what: str) -> dict[str, Any]:
    """The first event of ``group`` (old or new) at ``node`` for which ``test`` holds."""
    try:
        with trio.fail_after(SOON):
            async for event in node.events(group):
                if test(event):
                    return event
    except trio.TooSlowError:
        pass
    raise AssertionError(f"no {what} in {group} at {node.node.name}")


@asynccontextmanager
async def web_for(node: Kith, *, mode: str = "attached") -> AsyncIterator[Web]:
    data = node.app.data_dir
    state = WebState(data.path, "127.0.0.1")
    state.bound(PORT)
    hub = Hub(NodeClient(data.control_socket), mode, poll=0.2)
    client = TestClient(create_app(state, hub), base_url=BASE, backend="trio")
    await call(client.__enter__)
    web = Web(client, state, hub, node)
    try:
        yield web
    finally:
        for ws in list(web.sockets):  # (the client waits for its open sockets)
            with contextlib.suppress(Exception):
                await web.close(ws)
        await call(lambda: client.__exit__(None, None, None))


@asynccontextmanager
async def two_nodes(tmp: Path) -> AsyncIterator[tuple[Kith, Kith]]:
    async with AsyncExitStack() as stack:
        alice = await stack.enter_async_context(
            open_node(tmp / "alice", name="alice", receipt_interval=0.05))
        bob = await stack.enter_async_context(
            open_node(tmp / "bob", name="bob", peers=[alice.listen], receipt_interval=0.05))
        with trio.fail_after(SOON):
            await alice.wait_for_peer(bob.peer_id)
            await bob.wait_for_peer(alice.peer_id)
        yield alice, bob
