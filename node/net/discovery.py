"""mDNS discovery with python-zeroconf, bridged into trio (driver).

zeroconf runs its own thread and event loop. The only code of ours that runs
there is ``_on_service_change``: it copies a record's fields out of
zeroconf's cache into a ``RawRecord``, parses it with the pure
``parse_record``, and hands the result to trio with ``run_sync_soon`` (which
never blocks) into a bounded memory channel. It never touches node state and
never sleeps. Records not yet complete in the cache are resolved from the
trio side, in a worker thread, a few at a time.

A flood of announcements cannot grow memory: the channel is bounded (excess
events are dropped and counted) and so is the number of concurrent resolves.

Open groups: the node also announces one ``_kith-group._tcp`` service per open
group it is a member of (``set_groups``, whenever that set changes) and browses
for others' (``FoundGroup``/``LostGroup``); the records are built and parsed
by ``node.wire.announce`` like the node's own.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio
import zeroconf
from zeroconf import (
    InterfaceChoice,
    IPVersion,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)

from node.errors import ConfigError
from node.logs import LogLimiter
from node.wire.announce import (
    GROUP_SERVICE_TYPE,
    SERVICE_TYPE,
    Announcement,
    GroupAnnouncement,
    GroupRecord,
    Network,
    RawRecord,
    RecordError,
    group_service_name,
    parse_group_record,
    parse_record,
    service_name,
    txt_properties,
)

log = logging.getLogger(__name__)

QUEUE_SIZE = 256
RESOLVE_TIMEOUT_MS = 3000
MAX_RESOLVING = 4
CLOSE_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True)
class Found:
    announcement: Announcement


@dataclass(frozen=True, slots=True)
class Lost:
    instance: str


@dataclass(frozen=True, slots=True)
class FoundGroup:
    announcement: GroupAnnouncement


@dataclass(frozen=True, slots=True)
class LostGroup:
    instance: str


DiscoveryEvent = Found | Lost | FoundGroup | LostGroup


@dataclass(frozen=True, slots=True)
class _Resolve:
    name: str


@dataclass(frozen=True, slots=True)
class _Rejected:
    name: str
    reason: str


def interface_ipv4(name: str) -> ipaddress.IPv4Interface:
    """The IPv4 address and network of interface ``name`` (Linux ioctls), or ConfigError."""
    siocgifaddr, siocgifnetmask = 0x8915, 0x891B
    packed = struct.pack("256s", name.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            addr = socket.inet_ntoa(fcntl.ioctl(s.fileno(), siocgifaddr, packed)[20:24])
            mask = socket.inet_ntoa(fcntl.ioctl(s.fileno(), siocgifnetmask, packed)[20:24])
        except OSError as exc:
            raise ConfigError(f"interface {name!r} has no IPv4 address ({exc.strerror})") from exc
    return ipaddress.IPv4Interface(f"{addr}/{mask}")


def resolve_interface(spec: str) -> ipaddress.IPv4Interface:
    """``--mdns-interface`` takes an interface name or one of its IPv4 addresses."""
    try:
        address = ipaddress.IPv4Address(spec)
    except ValueError:
        return interface_ipv4(spec)
    for _, ifname in socket.if_nameindex():
        try:
            iface = interface_ipv4(ifname)
        except ConfigError:
            continue
        if iface.ip == address:
            return iface
    raise ConfigError(f"no interface has the address {spec}")


class Discovery:
    """Announce this node and report Kith nodes heard on the LAN."""

    def __init__(
        self,
        instance: str,
        port: int,
        *,
        interface: str | None = None,
        announce_host: str | None = None,
        network_key: bytes | None = None,
    ) -> None:
        self.instance = instance
        self.port = port
        self.interface = interface
        self.announce_host = announce_host
        self.network_key = network_key
        self.dropped = 0
        self._zc: Zeroconf | None = None
        self._networks: list[Network] | None = None
        self._addresses: list[str] = []
        #: Open-group services registered now, by instance.
        self._groups: dict[str, ServiceInfo] = {}
        self._lock = trio.Lock()

    async def run(
        self,
        events: trio.MemorySendChannel[DiscoveryEvent],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Announce and browse until cancelled; found and lost nodes go to ``events``."""
        addresses, zc_interfaces = self._plan()
        self._addresses = addresses
        zc = await trio.to_thread.run_sync(
            lambda: Zeroconf(interfaces=zc_interfaces, ip_version=IPVersion.V4Only)
        )
        self._zc = zc
        info = ServiceInfo(
            SERVICE_TYPE,
            service_name(self.instance),
            port=self.port,
            properties=txt_properties(self.network_key, time.time()),
            server=f"{self.instance}.local.",
            addresses=[socket.inet_aton(a) for a in addresses],
        )
        raw_send, raw_receive = trio.open_memory_channel[DiscoveryEvent | _Resolve | _Rejected](
            QUEUE_SIZE
        )
        token = trio.lowlevel.current_trio_token()
        browser: ServiceBrowser | None = None
        try:
            await trio.to_thread.run_sync(zc.register_service, info)
            browser = ServiceBrowser(
                zc, [SERVICE_TYPE, GROUP_SERVICE_TYPE], handlers=[self._handler(token, raw_send)]
            )
            log.info("announcing on mDNS as %s at %s port %d", self.instance,
                     ", ".join(addresses), self.port)
            task_status.started()
            await self._pump(zc, raw_receive, events)
        finally:
            groups, self._groups = list(self._groups.values()), {}
            self._zc = None
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                await trio.to_thread.run_sync(
                    self._close, zc, [info, *groups], browser, abandon_on_cancel=True
                )

    async def set_groups(self, records: list[GroupRecord]) -> None:
        """Announce exactly these open groups (withdrawing the others)."""
        async with self._lock:
            zc = self._zc
            if zc is None:
                return
            wanted = {r.instance: r for r in records}
            for instance in [i for i in self._groups if i not in wanted]:
                info = self._groups.pop(instance)
                await trio.to_thread.run_sync(zc.unregister_service, info)
            for instance, record in wanted.items():
                old = self._groups.get(instance)
                info = ServiceInfo(
                    GROUP_SERVICE_TYPE, group_service_name(instance), port=self.port,
                    properties=record.properties, server=f"{self.instance}.local.",
                    addresses=[socket.inet_aton(a) for a in self._addresses],
                )
                if old is not None and old.properties == info.properties:
                    continue
                if old is not None:
                    await trio.to_thread.run_sync(zc.update_service, info)
                else:
                    await trio.to_thread.run_sync(zc.register_service, info)
                self._groups[instance] = info
                log.info("announcing open group %s on mDNS as %s", record.properties.get("n"),
                         instance)

    def _plan(self) -> tuple[list[str], list[str] | InterfaceChoice]:
        """Which addresses to announce and which interfaces zeroconf should use."""
        if self.interface is not None:
            iface = resolve_interface(self.interface)
            self._networks = [iface.network]
            return [str(iface.ip)], [str(iface.ip)]
        if self.announce_host and self.announce_host not in ("0.0.0.0", ""):
            return [self.announce_host], InterfaceChoice.All
        addresses = [a for a in zeroconf.get_all_addresses() if not a.startswith("127.")]  # type: ignore[attr-defined]
        if not addresses:
            raise ConfigError("no non-loopback IPv4 address to announce on mDNS")
        return addresses, InterfaceChoice.All

    @staticmethod
    def _close(zc: Zeroconf, infos: list[ServiceInfo], browser: ServiceBrowser | None) -> None:
        if browser is not None:
            browser.cancel()
        try:
            for info in infos:
                zc.unregister_service(info)  # sends a goodbye so others forget us at once
        finally:
            zc.close()

    # -- zeroconf's thread --

    def _handler(
        self,
        token: trio.lowlevel.TrioToken,
        send: trio.MemorySendChannel[DiscoveryEvent | _Resolve | _Rejected],
    ) -> Callable[..., None]:
        networks = self._networks

        def deliver(event: DiscoveryEvent | _Resolve | _Rejected) -> None:  # runs in trio
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                self.dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        def on_change(
            zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
        ) -> None:
            event: DiscoveryEvent | _Resolve | _Rejected
            if state_change is ServiceStateChange.Removed:
                instance = _instance_of(name)
                event = LostGroup(instance) if service_type == GROUP_SERVICE_TYPE else Lost(
                    instance)
            else:
                info = ServiceInfo(service_type, name)
                cached = info.load_from_cache(zeroconf)
                event = _parse(info, networks) if cached else _Resolve(name)
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(deliver, event)

        return on_change

    # -- trio side --

    async def _pump(
        self,
        zc: Zeroconf,
        raw: trio.MemoryReceiveChannel[DiscoveryEvent | _Resolve | _Rejected],
        out: trio.MemorySendChannel[DiscoveryEvent],
    ) -> None:
        limiter = trio.CapacityLimiter(MAX_RESOLVING)
        resolving: set[str] = set()
        reported_drops = 0
        drop_log = LogLimiter()
        async with trio.open_nursery() as nursery:
            async for event in raw:
                # One line per interval however long the flood lasts, with the count since.
                if (self.dropped != reported_drops
                        and drop_log.check("mdns-flood", time.monotonic()) is not None):
                    log.warning("mDNS flood: dropped %d announcement(s)",
                                self.dropped - reported_drops)
                    reported_drops = self.dropped
                if isinstance(event, _Rejected):
                    log.debug("ignoring mDNS record %s: %s", event.name, event.reason)
                elif isinstance(event, _Resolve):
                    if event.name not in resolving and len(resolving) < QUEUE_SIZE:
                        resolving.add(event.name)
                        nursery.start_soon(self._resolve, zc, event.name, limiter, resolving, out)
                elif _instance(event) != self.instance:
                    await out.send(event)

    async def _resolve(
        self,
        zc: Zeroconf,
        name: str,
        limiter: trio.CapacityLimiter,
        resolving: set[str],
        out: trio.MemorySendChannel[DiscoveryEvent],
    ) -> None:
        try:
            info = ServiceInfo(_type_of(name), name)
            ok = await trio.to_thread.run_sync(
                info.request, zc, RESOLVE_TIMEOUT_MS, limiter=limiter, abandon_on_cancel=True
            )
            if not ok:
                log.debug("mDNS record %s did not resolve", name)
                return
            event = _parse(info, self._networks)
            if isinstance(event, _Rejected):
                log.debug("ignoring mDNS record %s: %s", name, event.reason)
            elif _instance(event) != self.instance:
                await out.send(event)
        finally:
            resolving.discard(name)


def _instance(event: DiscoveryEvent) -> str:
    if isinstance(event, Lost | LostGroup):
        instance = event.instance
    else:
        instance = event.announcement.instance
    if isinstance(event, FoundGroup | LostGroup):  # "<node instance>-<group>": whose is it?
        return instance.rsplit("-", 1)[0]
    return instance


def _type_of(name: str) -> str:
    return GROUP_SERVICE_TYPE if name.endswith("." + GROUP_SERVICE_TYPE) else SERVICE_TYPE


def _instance_of(name: str) -> str:
    suffix = "." + _type_of(name)
    return name[: -len(suffix)] if name.endswith(suffix) else name


def _parse(info: ServiceInfo, networks: list[Network] | None
           ) -> Found | FoundGroup | _Rejected:
    raw = RawRecord(
        name=info.name,
        port=info.port,
        addresses=list(info.addresses_by_version(IPVersion.V4Only)),
        properties=info.properties,
        text=info.text,
    )
    try:
        if _type_of(info.name) == GROUP_SERVICE_TYPE:
            return FoundGroup(parse_group_record(raw, networks))
        return Found(parse_record(raw, networks))
    except RecordError as exc:
        return _Rejected(info.name, str(exc))

