"""Open groups through the node's LAN discovery, with a fake mDNS source (no multicast).

The fake records what the node asks to announce (``set_groups``) and feeds it what
"the LAN" announces, so the test checks that only open groups are ever announced and
that a peer joins a group it heard of, dialling the member named in the record.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from node.api.python import Kith
from node.app import App
from node.config import Config
from node.datadir import DataDir
from node.net.discovery import DiscoveryEvent, FoundGroup, LostGroup
from node.wire.announce import GroupRecord, parse_group_record
from tests.integration import SOON
from tests.wire.test_open_announce import raw_of


class RecordingMdns:
    """Sends the test's events to the node; records every set of announced groups."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[DiscoveryEvent](math.inf)
        self.announced: list[list[GroupRecord]] = []
        self.changed = trio.Event()

    async def run(self, events: trio.MemorySendChannel[DiscoveryEvent], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for event in self._receive:
            await events.send(event)

    async def set_groups(self, records: list[GroupRecord]) -> None:
        self.announced.append(records)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, count: int) -> list[GroupRecord]:
        with trio.fail_after(SOON):
            while len(self.announced) < count:
                await self.changed.wait()
        return self.announced[count - 1]

    def hear(self, event: DiscoveryEvent) -> None:
        self._send.send_nowait(event)


@asynccontextmanager
async def lan_node(path: Path, name: str, mdns: RecordingMdns) -> AsyncIterator[Kith]:
    datadir = DataDir(path)
    app = App(datadir.load_or_create_identity(),
              Config(listen_host="127.0.0.1", listen_port=0, name=name, mdns=True),
              datadir, discovery=mdns)
    async with trio.open_nursery() as nursery:
        await nursery.start(app.run, [])
        try:
            yield Kith(app)
        finally:
            nursery.cancel_scope.cancel()


async def test_only_open_groups_are_announced_and_a_heard_one_can_be_joined(
    tmp_path: Path
) -> None:
    mdns_a, mdns_b = RecordingMdns(), RecordingMdns()
    async with lan_node(tmp_path / "a", "alice", mdns_a) as alice, \
            lan_node(tmp_path / "b", "bob", mdns_b) as bob:
        assert await mdns_a.wait_for(1) == []  # nothing to announce yet
        secret = alice.create_group("secret")
        pairwise = alice.create_group("pw", mode="pairwise")
        lobby = alice._call("group.create", name="lobby", mode="open", policy="blacklist")["id"]
        records = await mdns_a.wait_for(2)
        assert [r.properties["g"] for r in records] == [lobby]
        assert records[0].properties["n"] == "lobby"
        everything = repr(mdns_a.announced)
        assert secret not in everything and pairwise not in everything

        # bob hears alice's record (as the real browser would parse it) and joins
        assert alice.node.instance is not None
        props = dict(records[0].properties)
        ann = parse_group_record(raw_of(props, name=f"{records[0].instance}._kith-group._tcp."
                                        "local.", port=alice.node.listen_addresses[0][1],
                                        addresses=[bytes([127, 0, 0, 1])]))
        mdns_b.hear(FoundGroup(ann))
        with trio.fail_after(SOON):
            found = await bob._call("group.discover", timeout=SOON)
        assert [(g["id"], g["name"], g["policy"], g["joined"]) for g in found] == [
            (lobby, "lobby", "blacklist", False)]
        assert found[0]["servers"][0]["address"] == f"127.0.0.1:{ann.port}"
        alice.send(lobby, "hello whoever comes")
        with trio.fail_after(SOON + 10):
            await bob._call("group.join", group="lobby")  # by name, from the announcement
        assert [r["text"] for r in bob.log(lobby) if r["kind"] == "message"] == [
            "hello whoever comes"]
        # bob now serves the group too; alice's private groups stayed private
        assert [r.properties["g"] for r in await mdns_b.wait_for(2)] == [lobby]
        bob.send(lobby, "hi alice")
        with trio.fail_after(SOON):
            await alice.service.wait_until(lambda: any(
                r["text"] == "hi alice" for r in alice.log(lobby)))
        mdns_b.hear(LostGroup(ann.instance))  # alice's goodbye: bob forgets her record
        with trio.fail_after(SOON):
            await bob.service.wait_until(lambda: not bob.service.open.heard)
        assert await bob._call("group.discover", timeout=0) == []
