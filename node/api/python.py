"""The Python API for scripts and experiments.

    import trio
    from node.api.python import open_node

    async def main():
        async with open_node("/tmp/alice", name="alice") as alice, \\
                   open_node("/tmp/bob", name="bob", peers=[alice.listen]) as bob:
            await alice.wait_for_peer(bob.peer_id)
            group = alice.create_group("lab")
            alice.add(group, bob.peer_id)
            alice.send(group, "hello bob")
            async for event in bob.events(group):   # waits until bob has the group
                if event["kind"] == "message":
                    print(event["author_name"], "says", event["text"])
                    break

    trio.run(main)

Everything returns plain dicts (the same views ``kith ... --json`` prints).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from node.api import group_ops
from node.api.group_ops import notice_view
from node.api.views import log_view
from node.app import App
from node.config import Config
from node.datadir import DataDir
from node.errors import KithError
from node.ids import format_peer_id, parse_peer_id
from node.net.address import DialTarget, parse_hostport
from node.service.groups import Group, GroupService


class Kith:
    """A running node, driven from Python (see the module docstring).

    ``app`` is the composition root (``node.app.App``: its ``data_dir`` too),
    ``node`` its peer manager (``node.node.Node``), ``service`` its group service.
    """

    def __init__(self, app: App) -> None:
        self.app = app
        self.node = app.node

    @property
    def peer_id(self) -> str:
        return format_peer_id(self.node.peer_id)

    @property
    def listen(self) -> str:
        assert self.node.listen is not None
        return self.node.listen

    @property
    def service(self) -> GroupService:
        assert self.app.groups is not None
        return self.app.groups

    def _call(self, op: str, **params: Any) -> Any:
        # Synchronous: a burst of sends waits in the node's outboxes, never in a full
        # peer queue (``node.service.outbox``), so no peer is dropped because of it.
        result = group_ops.DIRECT[op](self.app, params)
        if self.app.groups is not None and self.app.groups.pending():
            self.app.groups.commit_now()  # stored before it returns (group commit aside)
        return result

    async def wait_for_peer(self, peer_id: str) -> None:
        peer = parse_peer_id(peer_id)
        await self.node.wait_until(lambda: peer in self.node.connections)

    def create_group(self, name: str, mode: str = "private", share_history: bool = False) -> str:
        """Create a group; returns its id (hex)."""
        return str(self._call("group.create", name=name, mode=mode,
                              share_history=share_history)["id"])

    def groups(self) -> list[dict[str, Any]]:
        return list(self._call("group.list"))

    def members(self, group: str) -> list[dict[str, Any]]:
        return list(self._call("group.members", group=group))

    def add(self, group: str, peer_id: str, role: str = "member") -> dict[str, Any]:
        return dict(self._call("group.add", group=group, peer=peer_id, role=role))

    def remove(self, group: str, peer_id: str) -> dict[str, Any]:
        return dict(self._call("group.remove", group=group, peer=peer_id))

    def relay(self, group: str, peer_id: str, on: bool = True) -> dict[str, Any]:
        """Designate (``on``) or undesignate ``peer_id`` as a relay of ``group``."""
        return dict(self._call("group.relay", group=group, peer=peer_id, on=on))

    def send(self, group: str, text: str, reply_to: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"group": group, "text": text}
        if reply_to is not None:
            params["reply_to"] = reply_to
        return dict(self._call("send", **params))

    def edit(self, group: str, event: str, text: str) -> dict[str, Any]:
        return dict(self._call("edit", group=group, event=event, text=text))

    def delete(self, group: str, event: str) -> dict[str, Any]:
        return dict(self._call("delete", group=group, event=event))

    def react(self, group: str, event: str, emoji: str, remove: bool = False) -> dict[str, Any]:
        return dict(self._call("react", group=group, event=event, emoji=emoji, remove=remove))

    def pin(self, group: str, event: str, unpin: bool = False) -> dict[str, Any]:
        return dict(self._call("pin", group=group, event=event, unpin=unpin))

    async def send_file(self, group: str, path: str | Path, text: str = "") -> dict[str, Any]:
        """Send a file (encrypted, in chunks); returns the message once it is out."""
        result = group_ops.DIRECT["file.send"](self.app, {
            "group": group, "file": _absolute(path), "text": text, "wait": True})
        return dict(await result)

    def file_status(self, group: str, event: str) -> dict[str, Any]:
        """How much of the file of message ``event`` this node holds."""
        return dict(self._call("file.status", group=group, event=event))

    async def save_file(self, group: str, event: str, directory: str | Path) -> Path:
        """Save the file of ``event`` into ``directory``; returns where (never overwrites)."""
        result = group_ops.DIRECT["file.save"](self.app, {
            "group": group, "event": event, "dir": _absolute(directory)})
        return Path((await result)["path"])

    def typing(self, group: str) -> None:
        self._call("typing", group=group)

    def mute(self, group: str, peer_id: str, minutes: int | None = None,
             unmute: bool = False) -> dict[str, Any]:
        return dict(self._call("group.mute", group=group, peer=peer_id, minutes=minutes,
                               unmute=unmute))

    def notify(self, group: str, muted: bool) -> dict[str, Any]:
        return dict(self._call("group.notify", group=group, muted=muted))

    def log(self, group: str, *, read: bool = False) -> list[dict[str, Any]]:
        """The conversation; with ``read=True`` it also counts as having read it."""
        return list(self._call("log", group=group, read=read))

    async def group(self, group: str) -> Group:
        """The group, waiting until this node has it (someone may be adding us)."""
        while True:
            try:
                return self.service.find(group)
            except KithError:
                await self.service.wait_until(lambda: _has(self.service, group))

    async def events(self, group: str) -> AsyncIterator[dict[str, Any]]:
        """The log so far, then every new event (edits, reactions, ... included) and typing
        notices (``{"kind": "typing", ...}``) as they arrive."""
        g = await self.group(group)
        with self.service.watch_notices(g) as new:
            for view in log_view(self.service, g):
                yield view
            async for notice in new:
                update = notice_view(self.service, g, notice)
                if update is not None:
                    yield update


def _absolute(path: str | Path) -> str:
    """An absolute path (the node may run with another working directory; no I/O)."""
    return str(Path.cwd() / path) if not Path(path).is_absolute() else str(path)


def _has(service: GroupService, group: str) -> bool:
    try:
        service.find(group)
    except KithError:
        return False
    return True


@asynccontextmanager
async def open_node(
    data: str | Path,
    *,
    name: str | None = None,
    listen: str = "127.0.0.1:0",
    peers: Sequence[str] = (),
    mdns: bool = False,
    **config: Any,
) -> AsyncIterator[Kith]:
    """Run a node on data directory ``data`` for the duration of the ``async with``."""
    datadir = DataDir(Path(data))
    identity = datadir.load_or_create_identity()
    host, port = parse_hostport(listen)
    app = App(identity, Config(listen_host=host, listen_port=port,
                               name=name or datadir.load_name(), mdns=mdns, **config), datadir)
    targets = [DialTarget.parse(p, default_port=port or 7373) for p in peers]
    async with trio.open_nursery() as nursery:
        await nursery.start(app.run, targets)
        try:
            yield Kith(app)
        finally:
            nursery.cancel_scope.cancel()
