"""``LanDiscovery``: turns mDNS announcements into channels (trio driver).

It runs ``Discovery`` (announce + browse), feeds what it hears into the
node's pure ``MeshState``, and keeps one dial task per announced node. The
decisions (who dials first, when to stop, when to forget) are the mesh
state's; this module only waits, dials and logs. Open groups heard go to the
group service (``OpenGroups.heard_group``); the open groups this node is a
member of are announced (``set_groups``) whenever that set changes. The group
service is seen through ``LanGroups``, and given by whoever starts discovery
(the composition root, ``node.app``); without it no groups are announced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

import trio

from node.channel.core import SelfConnectionError
from node.errors import HandshakeError, RemoteProtocolError
from node.net.address import DialTarget
from node.net.backoff import Backoff
from node.net.connection import explain
from node.net.discovery import Discovery, DiscoveryEvent, FoundGroup, Lost, LostGroup
from node.wire.announce import Announcement, GroupAnnouncement, GroupRecord, tag_matches

if TYPE_CHECKING:
    from node.node import Node

log = logging.getLogger(__name__)

#: At most one "too many announced nodes" line per this many seconds.
FLOOD_LOG_INTERVAL = 30.0
#: A channel that lived at least this long resets the redial backoff.
STABLE_CONNECTION = 10.0


class DiscoverySource(Protocol):
    """What ``Discovery`` offers; tests substitute a fake that sends chosen events."""

    async def run(
        self,
        events: trio.MemorySendChannel[DiscoveryEvent],
        *,
        task_status: trio.TaskStatus[None] = ...,
    ) -> None: ...


class OpenGroupDirectory(Protocol):
    """The open groups announced and heard (``node.service.open_groups.OpenGroups``)."""

    def records(self) -> list[GroupRecord]: ...

    def heard_group(self, ann: GroupAnnouncement) -> None: ...

    def lost_group(self, instance: str) -> None: ...


class LanGroups(Protocol):
    """What discovery needs of the group service: its open groups, and to wait for change."""

    @property
    def open(self) -> OpenGroupDirectory: ...

    async def wait_until(self, predicate: Callable[[], bool]) -> None: ...


class LanDiscovery:
    def __init__(
        self, node: Node, source: DiscoverySource | None = None, groups: LanGroups | None = None
    ) -> None:
        self.node = node
        self.source = source  # None: real mDNS (``Discovery``)
        self.groups = groups
        self._scopes: dict[str, trio.CancelScope] = {}
        self._last_flood_log = -FLOOD_LOG_INTERVAL
        self._flooded = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        node = self.node
        assert node.instance is not None
        source = self.source or Discovery(
            node.instance,
            node.listen_addresses[0][1],
            interface=node.config.mdns_interface,
            announce_host=node.config.listen_host,
            network_key=node.config.network_key,
        )
        send, receive = trio.open_memory_channel[DiscoveryEvent](64)
        async with trio.open_nursery() as nursery:
            await nursery.start(source.run, send)
            set_groups = getattr(source, "set_groups", None)
            if set_groups is not None and self.groups is not None:
                nursery.start_soon(self._announce_groups, set_groups)
            task_status.started()
            async for event in receive:
                self._handle(event, nursery)

    async def _announce_groups(
        self, set_groups: Callable[[list[GroupRecord]], Awaitable[None]]
    ) -> None:
        """Keep the announced open groups equal to the open groups we are a member of."""
        service = self.groups
        assert service is not None

        def names(records: list[GroupRecord]) -> list[tuple[str, str, str]]:
            return [(r.instance, r.properties["n"], r.properties["p"]) for r in records]

        while True:
            records = service.open.records()
            await set_groups(records)
            announced = names(records)

            def changed(done: list[tuple[str, str, str]] = announced) -> bool:
                return names(service.open.records()) != done

            await service.wait_until(changed)

    def _handle(self, event: DiscoveryEvent, nursery: trio.Nursery) -> None:
        mesh = self.node.mesh
        if isinstance(event, FoundGroup | LostGroup):
            self._handle_group(event)
            return
        if isinstance(event, Lost):
            if mesh.withdrawn(event.instance) is not None:
                log.info("mDNS: %s withdrew its announcement", event.instance)
                scope = self._scopes.pop(event.instance, None)
                if scope is not None:
                    scope.cancel()
                self.node._notify()
            return
        ann = event.announcement
        if not self._welcome(ann):
            return
        try:
            new = mesh.announced(ann, time.time())
        except OverflowError as exc:
            self._flood(str(exc))
            return
        self.node._notify()
        if new:
            log.info("mDNS: found %s at %s:%d", ann.instance, ann.host, ann.port)
            scope = trio.CancelScope()
            self._scopes[ann.instance] = scope
            nursery.start_soon(self._dial_loop, ann.instance, scope)

    def _handle_group(self, event: FoundGroup | LostGroup) -> None:
        service = self.groups
        if service is None:
            return
        if isinstance(event, LostGroup):
            service.open.lost_group(event.instance)
        elif self._welcome(event.announcement):
            service.open.heard_group(event.announcement)

    def _welcome(self, ann: Announcement | GroupAnnouncement) -> bool:
        """Skip strangers: nodes without our network key (by the announced tag)."""
        key = self.node.config.network_key
        if key is None:
            if ann.tag is not None:
                log.debug("mDNS: skipping %s: it uses a network key", ann.instance)
                return False
            return True
        if ann.tag is None or not tag_matches(key, ann.tag, time.time()):
            log.debug("mDNS: skipping %s: not on our network key", ann.instance)
            return False
        return True

    def _flood(self, reason: str) -> None:
        self._flooded += 1
        now = trio.current_time()
        if now - self._last_flood_log >= FLOOD_LOG_INTERVAL:
            log.warning("mDNS: ignored %d announcement(s): %s", self._flooded, reason)
            self._last_flood_log = now
            self._flooded = 0

    async def _dial_loop(self, instance: str, scope: trio.CancelScope) -> None:
        node, mesh, cfg = self.node, self.node.mesh, self.node.config
        backoff = Backoff(cfg.redial_initial, cfg.redial_max, cfg.redial_jitter)
        connected_at: float | None = None
        with scope:
            await trio.sleep(mesh.first_dial_delay(instance))
            while instance in mesh.candidates:
                if node.offline:
                    await node.wait_until(lambda: not node.offline)
                    continue
                if not mesh.should_dial(instance):
                    if mesh.candidates[instance].is_self:
                        return
                    await node.wait_until(
                        lambda: mesh.should_dial(instance) or instance not in mesh.candidates
                    )
                    if connected_at is not None:  # our channel ended: pause before redialling
                        if trio.current_time() - connected_at >= STABLE_CONNECTION:
                            backoff.reset()
                        connected_at = None
                        await trio.sleep(backoff.next_delay())
                    continue
                ann = mesh.candidates[instance].announcement
                try:
                    conn = await node._connect(DialTarget(ann.host, ann.port))
                except SelfConnectionError:
                    log.info("mDNS: %s is this node itself (a stale announcement); ignoring it",
                             instance)
                    mesh.dialled_self(instance)
                    node._notify()
                    return
                except (HandshakeError, RemoteProtocolError, trio.BrokenResourceError,
                        OSError) as exc:
                    first = backoff.failures == 0
                    forgotten = mesh.dial_failed(instance)
                    node._notify()
                    if forgotten:
                        log.info("mDNS: forgetting %s at %s:%d: no answer after %d tries",
                                 instance, ann.host, ann.port, cfg.forget_after)
                        return
                    if first:
                        log.warning("cannot connect to %s at %s:%d: %s; retrying quietly",
                                    instance, ann.host, ann.port, explain(exc))
                    await trio.sleep(backoff.next_delay())
                    continue
                # The channel belongs to the node, not to this announcement: a
                # withdrawn announcement stops redialling but keeps the channel.
                node.serve_in_background(conn, "mdns", instance)
                connected_at = trio.current_time()
        self._scopes.pop(instance, None)
