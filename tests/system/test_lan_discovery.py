"""Kith nodes on a simulated LAN find each other over real mDNS (the LAN discovery issue).

Each node runs in its own host of a ``NetnsLab`` (network namespaces joined by a bridge
that floods multicast), listens on its lab address and does mDNS on ``lab0`` only, so
no test traffic reaches the machine's own network. The nodes get no ``--peer``: all
they know of each other comes over multicast.

Nothing sleeps. Every wait is for a line a process writes (a node's "connected to" /
"disconnected from" log line, avahi-browse's resolved service), under a deadline that is
the bound being tested. States that have no line of their own (``kith peers --json``)
are read once, right after the line that marks the change. ``kith peers`` and
``kith id`` talk to a node over the Unix socket in its data directory, which any
network namespace reaches, so they run in the root namespace.

Timing (defaults, docs/protocol.md section 6): the kernel fails a channel whose peer's
machine has not answered for 25 s (TCP keepalive, TCP_USER_TIMEOUT), redial backoff 0.5 s
doubling to 30 s. The cable test therefore takes about 25 s to see a host go and a few
seconds to see it return.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.lab.avahi import avahi_available, avahi_daemon
from tests.lab.netns import NetnsLab, require_netns, skip_or_fail
from tests.lab.nodes import deadline, mdns_node
from tests.lab.procs import Proc, kith_json

pytestmark = pytest.mark.system

#: The issue's bounds (seconds).
DISCOVERY_BOUND = 5.0  # from process start until every node is connected to the others
DEAD_BOUND = 31.0  # from pulling a cable until the others call that host offline
RETURN_BOUND = 60.0  # from plugging it back until everyone is connected again (backoff)
#: For things with no bound of their own in the issue (a browse, a node's first lines).
STEP_TIMEOUT = 10.0

ANNOUNCING = (
    r"announcing on mDNS as (?P<instance>kith-[0-9a-f]{16}) at (?P<address>\S+) "
    r"port (?P<port>\d+)$"
)
#: Its channel fails in the kernel (ETIMEDOUT, usually) before any watchdog of ours.
SILENT_PEER = r"connection lost: \[Errno \d+\] .*"


# --- helpers -----------------------------------------------------------------------------


async def peers_by_name(
    nodes: Sequence[Proc], dirs: dict[str, Path]
) -> dict[str, dict[str, Any]]:
    """Every node's ``kith peers --json`` at once: {node name: {peer name: row}}."""
    views: dict[str, dict[str, Any]] = {}

    async def ask(node: Proc) -> None:
        rows = await kith_json(dirs[node.name], "peers")
        views[node.name] = {row["name"]: row for row in rows}

    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(ask, node)
    return views


def host_of(address: str) -> str:
    return address.rsplit(":", 1)[0]


# --- the tests ---------------------------------------------------------------------------


async def test_nodes_find_each_other_lose_a_host_and_get_it_back(tmp: Path) -> None:
    require_netns()
    dirs = {f"host{i}": tmp / f"n{i}" for i in (1, 2, 3)}
    with NetnsLab(3) as lab:
        addresses = {f"host{i}": lab.host(i).address for i in (1, 2, 3)}
        async with AsyncExitStack() as stack:
            started = trio.current_time()
            nodes = [await stack.enter_async_context(mdns_node(lab, i, dirs[f"host{i}"]))
                     for i in (1, 2, 3)]
            n1, n2, n3 = nodes
            pairs = [(a, b) for a in nodes for b in nodes if a is not b]

            # 1. Through multicast alone, everyone finds and connects to everyone else
            # within 5 s of starting.
            with deadline(DISCOVERY_BOUND, "all three nodes connected", nodes, since=started):
                instance = {n.name: (await n.wait_for_line(ANNOUNCING))["instance"]
                            for n in nodes}
                for a, b in pairs:
                    await a.wait_for_line(rf"mDNS: found {instance[b.name]} at "
                                          rf"{re.escape(addresses[b.name])}:\d+$")
                    await a.wait_for_line(rf"connected to \S+ \({b.name}\) at ")
            ids = {n.name: await kith_json(dirs[n.name], "id") for n in nodes}
            short = {name: re.escape(ids[name]["short_id"]) for name in ids}
            first = await peers_by_name(nodes, dirs)
            for a, b in pairs:
                row = first[a.name][b.name]
                assert row["peer_id"] == ids[b.name]["peer_id"], row
                assert row["state"] == "online", row
                assert host_of(row["address"]) == addresses[b.name], row
            for a in nodes:
                assert len(first[a.name]) == 2, first[a.name]

            # 2. Host 3's cable is pulled: the others call it offline within 31 s.
            mark = [len(n.lines) for n in nodes]
            pulled, pulled_wall = trio.current_time(), time.time()
            await trio.to_thread.run_sync(lab.link, 3, False)
            with deadline(DEAD_BOUND, "host3 declared dead", nodes, since=pulled):
                for node, at in ((n1, mark[0]), (n2, mark[1])):
                    await node.wait_for_line(
                        rf"disconnected from {short[n3.name]} \(host3\): {SILENT_PEER}$", after=at
                    )
                # Host 3 (still running) sees the others go too: its redials start afresh.
                for other in (n1, n2):
                    await n3.wait_for_line(
                        rf"disconnected from {short[other.name]} \({other.name}\): ", after=mark[2]
                    )
            gone = await peers_by_name((n1, n2), dirs)
            for a in (n1, n2):
                row = gone[a.name]["host3"]
                assert row["state"] == "offline", row
                assert row["last_seen"] is not None, row
                assert pulled_wall <= row["last_seen"] <= time.time(), row
                assert gone[a.name][(n2 if a is n1 else n1).name]["state"] == "online"
            assert n3.returncode is None, n3.log

            # 3. The cable is back: they reconnect without a restart.
            mark = [len(n.lines) for n in nodes]
            plugged = trio.current_time()
            await trio.to_thread.run_sync(lab.link, 3, True)
            with deadline(RETURN_BOUND, "host3 reconnected", nodes, since=plugged):
                for node, at in ((n1, mark[0]), (n2, mark[1])):
                    await node.wait_for_line(
                        rf"connected to {short[n3.name]} \(host3\) at ", after=at
                    )
                for other in (n1, n2):
                    await n3.wait_for_line(
                        rf"connected to {short[other.name]} \({other.name}\) at ", after=mark[2]
                    )
            back = await peers_by_name(nodes, dirs)
            for a, b in pairs:
                assert back[a.name][b.name]["state"] == "online", back[a.name][b.name]
            # Nodes 1 and 2 never lost each other: same channel since the start.
            for a, b in ((n1, n2), (n2, n1)):
                assert not a.lines_matching(rf"disconnected from {short[b.name]} "), a.log
                assert back[a.name][b.name]["since"] == first[a.name][b.name]["since"]
    for node in nodes:
        assert node.returncode == 0, node.log
        assert "Traceback" not in node.log, node.log
    # Checked last, so that a failure here does not hide how the cable scenario went.
    for a, b in pairs:
        for when, view in (("at first", first), ("after the cable came back", back)):
            row = view[a.name][b.name]
            assert "mdns" in row["found"], (
                f"{a.name} found {b.name} over mDNS, yet `kith peers` {when} says "
                f"found={row['found']}\n{a.log}"
            )
    for node in nodes:
        assert ids[node.name].get("mdns_instance") == instance[node.name], ids[node.name]


async def test_avahi_browse_sees_the_kith_services(tmp: Path) -> None:
    require_netns()
    reason = avahi_available()
    if reason is not None:
        skip_or_fail(reason)
    dirs = {f"host{i}": tmp / f"n{i}" for i in (1, 2, 3)}
    with NetnsLab(3) as lab:
        async with (
            avahi_daemon(lab.exec_argv(1, []), interface=lab.host(1).iface) as avahi,
            AsyncExitStack() as stack,
        ):
            # Host 1 runs a node too: Kith and avahi-daemon share port 5353 there.
            started = trio.current_time()
            nodes = [await stack.enter_async_context(mdns_node(lab, i, dirs[f"host{i}"]))
                     for i in (1, 2, 3)]
            others = nodes[1:]
            with deadline(STEP_TIMEOUT, "nodes announcing on mDNS", nodes, since=started):
                # The instance names as each node announces them (`kith id --json` reporting
                # the same is checked by the test above).
                instances = {n.name: (await n.wait_for_line(ANNOUNCING))["instance"]
                             for n in others}
            ids = {n.name: await kith_json(dirs[n.name], "id") for n in others}
            try:
                with trio.fail_after(STEP_TIMEOUT):
                    services = await avahi.browse("_kith._tcp", instances.values())
            except trio.TooSlowError:
                pytest.fail(
                    f"avahi-browse did not resolve {sorted(instances.values())} within "
                    f"{STEP_TIMEOUT:g} s; it wrote:\n" + "\n".join(avahi.browse_output)
                    + f"\navahi-daemon wrote:\n{avahi.log}",
                    pytrace=False,
                )
            for index, node in enumerate(others, start=2):
                service = services[instances[node.name]]
                listen_host, listen_port = ids[node.name]["listen"].rsplit(":", 1)
                assert service.address == lab.host(index).address == listen_host, service
                assert service.port == int(listen_port), service
                assert (service.interface, service.protocol) == ("lab0", "IPv4"), service
                assert service.service_type == "_kith._tcp", service
                assert service.host_name == f"{instances[node.name]}.local", service
                assert '"v=1"' in service.txt, service
    for node in nodes:
        assert node.returncode == 0, node.log
        assert "Traceback" not in node.log, node.log
