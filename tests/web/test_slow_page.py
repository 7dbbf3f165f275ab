"""A page that stops reading costs the server a bounded outbox, not a growing queue.

Real Hypercorn on 127.0.0.1 and a raw WebSocket client (wsproto) with a tiny receive
buffer that never reads after the handshake (and the server's send buffer made small
too, so that a few hundred events fill both): once the kernel buffers are full the
writer blocks, and the events that keep coming replace older ones in the outbox.
"""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
import trio
from hypercorn.trio import serve
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request

from node.api.python import open_node
from node.chat.backend import NodeClient
from node.web import protocol
from node.web.app import create_app
from node.web.bridge import Hub
from node.web.serve import bind, hypercorn_config
from node.web.sockets import Page
from node.web.state import WebState
from tests.web.helpers import SOON, tmp

__all__ = ["tmp"]


async def handshake(port: int, cookie: str) -> trio.SocketStream:
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    ws = WSConnection(ConnectionType.CLIENT)
    host = f"127.0.0.1:{port}"
    await stream.send_all(ws.send(Request(host=host, target="/ws", extra_headers=[
        (b"origin", f"http://{host}".encode()), (b"cookie", cookie.encode())])))
    while True:
        ws.receive_data(await stream.receive_some(4096))
        for event in ws.events():
            assert isinstance(event, AcceptConnection), event
            return stream


async def test_a_page_that_does_not_read_has_a_bounded_outbox(
    tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "MAX_EVENTS", 10)  # (fewer messages to send)
    async with open_node(tmp / "alice", name="alice") as alice:
        data = alice.app.data_dir
        state = WebState(data.path, "127.0.0.1")
        sock = bind("127.0.0.1", 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # (accepted ones inherit it)
        state.bound(sock.getsockname()[1])
        hub = Hub(NodeClient(data.control_socket), "attached", poll=0.2)
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, create_app(state, hub), hypercorn_config(sock))
            async with httpx.AsyncClient() as client:
                await client.get(state.url)
                cookie = f"{protocol.COOKIE}={client.cookies[protocol.COOKIE]}"
            stream = await handshake(state.port, cookie)
            with trio.fail_after(SOON):
                while not hub.listeners:
                    await hub.refreshed.wait()
            [page] = hub.listeners
            assert isinstance(page, Page)
            group = alice.create_group("lab")
            most = 0
            with trio.fail_after(SOON):
                n = 0
                while page.outbox.dropped == 0:
                    alice.send(group, f"message {n} " + "x" * 15000)
                    n += 1
                    await hub.refreshed.wait()  # the event reached the hub (it pokes)
                    most = max(most, len(page.outbox))
            assert n > protocol.MAX_EVENTS  # the page really was owed more than that
            assert most <= protocol.MAX_EVENTS + 5  # + one per coalesced kind
            await stream.aclose()
            nursery.cancel_scope.cancel()
