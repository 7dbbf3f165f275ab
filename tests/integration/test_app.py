"""The composition root (``node.app.App``): what ``kith run`` promises once it says it listens."""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from node.api import client
from node.app import App
from node.datadir import DataDir

from . import NODE_LOG, config


class ListeningLine(logging.Handler):
    """Notes, at the moment the "listening on" line is logged, whether the socket exists."""

    def __init__(self, socket: Path) -> None:
        super().__init__()
        self.socket = socket
        self.socket_then: bool | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if "listening on" in record.getMessage():
            self.socket_then = self.socket.exists()


async def test_the_control_socket_answers_when_the_node_says_it_listens(tmp_path: Path) -> None:
    datadir = DataDir(tmp_path / "alice")
    app = App(datadir.load_or_create_identity(), config("alice"), datadir)
    line = ListeningLine(datadir.control_socket)
    logger = logging.getLogger(NODE_LOG)
    logger.addHandler(line)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            # Scripts and the system tests wait for that line, then run kith commands.
            assert line.socket_then is True
            view = await trio.to_thread.run_sync(
                lambda: client.call(datadir.control_socket, "id"))
            assert view["listen"] == app.node.listen
            assert await trio.to_thread.run_sync(
                lambda: client.call(datadir.control_socket, "group.list")) == []
            nursery.cancel_scope.cancel()
    finally:
        logger.removeHandler(line)
        logger.setLevel(level)
    assert not datadir.control_socket.exists()  # removed when the node stops

