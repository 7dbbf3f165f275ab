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

Timing (defaults): keepalive every 8 s, a peer silent for 25 s is dead, redial backoff
0.5 s doubling to 30 s. The cable test therefore takes 17-25 s to see a host go and a
few seconds to see it return.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from node.testing.avahi import avahi_available, avahi_daemon
from node.testing.netns import NetnsLab, require_netns, skip_or_fail
from node.testing.procs import KithProcess, kith_cli, kith_command, kith_env

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
SILENT_PEER = "no data from peer for 25 s"


# --- running nodes inside lab hosts ------------------------------------------------------


class LabNode(KithProcess):
    """``kith run`` inside one lab host, named ``host<index>``."""

    def __init__(self, process: trio.Process, command: list[str], index: int) -> None:
        super().__init__(process, command)
        self.index = index
        self.name = f"host{index}"

    async def wait_for(self, pattern: str, *, after: int = 0) -> re.Match[str]:
        """Like ``wait_for_line`` but without its 10 s limit: the caller holds a deadline."""
        regex = re.compile(pattern)
        index = after
        while True:
            while index < len(self.lines):
                match = regex.search(self.lines[index])
                index += 1
                if match:
                    return match
            if self._stderr_closed:
                await self.process.wait()
                raise self._error(f"exited (status {self.returncode}) before a line matched "
                                  f"{regex.pattern!r}")
            await self._changed.wait()

    def lines_matching(self, pattern: str, *, after: int = 0) -> list[str]:
        return [line for line in self.lines[after:] if re.search(pattern, line)]


@asynccontextmanager
async def lab_node(lab: NetnsLab, index: int, data_dir: Path) -> AsyncIterator[LabNode]:
    """``kith_process`` run through ``ip netns exec`` (procs.py takes no argv prefix).

    The node listens on its host's lab address (any port) and does mDNS on ``lab0``.
    """
    host = lab.host(index)
    args = ("run", "--listen", f"{host.address}:0", "--mdns-interface", host.iface,
            "--name", f"host{index}")
    command = lab.exec_argv(index, kith_command(data_dir, *args))
    process = await trio.lowlevel.open_process(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=kith_env(),
    )
    node = LabNode(process, command, index)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(node._read_stderr)
            nursery.start_soon(node._read_stdout)
            try:
                yield node
            finally:
                with trio.CancelScope(shield=True):
                    await node.stop()
    except BaseExceptionGroup as group:
        # The readers never raise, so a group holds what the block raised: pass that on.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        if process.returncode is None:  # only if stop() itself was interrupted
            process.kill()


@contextmanager
def deadline(at: float, what: str, nodes: Sequence[LabNode]) -> Iterator[None]:
    """``trio.fail_at(at)``, failing the test with every node's log if it passes."""
    try:
        with trio.fail_at(at):
            yield
    except trio.TooSlowError:
        logs = "\n".join(f"--- {node.name}:\n{node.log}" for node in nodes)
        pytest.fail(f"{what}: not within the bound\n{logs}", pytrace=False)


async def kith_json(data_dir: Path, *args: str) -> Any:
    result = await kith_cli(data_dir, *args, "--json")
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


async def peers_by_name(
    nodes: Sequence[LabNode], dirs: dict[int, Path]
) -> dict[int, dict[str, Any]]:
    """Every node's ``kith peers --json`` at once: {node index: {peer name: row}}."""
    views: dict[int, dict[str, Any]] = {}

    async def ask(node: LabNode) -> None:
        rows = await kith_json(dirs[node.index], "peers")
        views[node.index] = {row["name"]: row for row in rows}

    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(ask, node)
    return views


def host_of(address: str) -> str:
    return address.rsplit(":", 1)[0]


@pytest.fixture
def tmp() -> Iterator[Path]:
    # Short on purpose: a control socket path must fit in 107 bytes.
    with tempfile.TemporaryDirectory(prefix="kith-") as path:
        yield Path(path)


# --- the tests ---------------------------------------------------------------------------


async def test_nodes_find_each_other_lose_a_host_and_get_it_back(tmp: Path) -> None:
    require_netns()
    dirs = {i: tmp / f"n{i}" for i in (1, 2, 3)}
    with NetnsLab(3) as lab:
        addresses = {i: lab.host(i).address for i in (1, 2, 3)}
        async with AsyncExitStack() as stack:
            started = trio.current_time()
            nodes = [await stack.enter_async_context(lab_node(lab, i, dirs[i])) for i in (1, 2, 3)]
            n1, n2, n3 = nodes
            pairs = [(a, b) for a in nodes for b in nodes if a is not b]

            # 1. Through multicast alone, everyone finds and connects to everyone else
            # within 5 s of starting.
            with deadline(started + DISCOVERY_BOUND, "all three nodes connected", nodes):
                instance = {n.index: (await n.wait_for(ANNOUNCING))["instance"] for n in nodes}
                for a, b in pairs:
                    await a.wait_for(rf"mDNS: found {instance[b.index]} at "
                                     rf"{re.escape(addresses[b.index])}:\d+$")
                    await a.wait_for(rf"connected to \S+ \({b.name}\) at ")
            ids = {n.index: await kith_json(dirs[n.index], "id") for n in nodes}
            short = {i: re.escape(ids[i]["short_id"]) for i in ids}
            first = await peers_by_name(nodes, dirs)
            for a, b in pairs:
                row = first[a.index][b.name]
                assert row["peer_id"] == ids[b.index]["peer_id"], row
                assert row["state"] == "online", row
                assert host_of(row["address"]) == addresses[b.index], row
            for a in nodes:
                assert len(first[a.index]) == 2, first[a.index]

            # 2. Host 3's cable is pulled: the others call it offline within 31 s.
            mark = [len(n.lines) for n in nodes]
            pulled, pulled_wall = trio.current_time(), time.time()
            await trio.to_thread.run_sync(lab.link, 3, False)
            with deadline(pulled + DEAD_BOUND, "host3 declared dead", nodes):
                for node, at in ((n1, mark[0]), (n2, mark[1])):
                    await node.wait_for(
                        rf"disconnected from {short[3]} \(host3\): {SILENT_PEER}$", after=at
                    )
                # Host 3 (still running) sees the others go too: its redials start afresh.
                for other in (n1, n2):
                    await n3.wait_for(rf"disconnected from {short[other.index]} \({other.name}\): ",
                                      after=mark[2])
            gone = await peers_by_name((n1, n2), dirs)
            for a in (n1, n2):
                row = gone[a.index]["host3"]
                assert row["state"] == "offline", row
                assert row["last_seen"] is not None, row
                assert pulled_wall <= row["last_seen"] <= time.time(), row
                assert gone[a.index][(n2 if a is n1 else n1).name]["state"] == "online"
            assert n3.returncode is None, n3.log

            # 3. The cable is back: they reconnect without a restart.
            mark = [len(n.lines) for n in nodes]
            plugged = trio.current_time()
            await trio.to_thread.run_sync(lab.link, 3, True)
            with deadline(plugged + RETURN_BOUND, "host3 reconnected", nodes):
                for node, at in ((n1, mark[0]), (n2, mark[1])):
                    await node.wait_for(rf"connected to {short[3]} \(host3\) at ", after=at)
                for other in (n1, n2):
                    await n3.wait_for(rf"connected to {short[other.index]} \({other.name}\) at ",
                                      after=mark[2])
            back = await peers_by_name(nodes, dirs)
            for a, b in pairs:
                assert back[a.index][b.name]["state"] == "online", back[a.index][b.name]
            # Nodes 1 and 2 never lost each other: same channel since the start.
            for a, b in ((n1, n2), (n2, n1)):
                assert not a.lines_matching(rf"disconnected from {short[b.index]} "), a.log
                assert back[a.index][b.name]["since"] == first[a.index][b.name]["since"]
    for node in nodes:
        assert node.returncode == 0, node.log
        assert "Traceback" not in node.log, node.log
    # Checked last, so that a failure here does not hide how the cable scenario went.
    for a, b in pairs:
        for when, view in (("at first", first), ("after the cable came back", back)):
            row = view[a.index][b.name]
            assert "mdns" in row["found"], (
                f"{a.name} found {b.name} over mDNS, yet `kith peers` {when} says "
                f"found={row['found']}\n{a.log}"
            )
    for node in nodes:
        assert ids[node.index].get("mdns_instance") == instance[node.index], ids[node.index]


async def test_avahi_browse_sees_the_kith_services(tmp: Path) -> None:
    require_netns()
    reason = avahi_available()
    if reason is not None:
        skip_or_fail(reason)
    dirs = {i: tmp / f"n{i}" for i in (1, 2, 3)}
    with NetnsLab(3) as lab:
        async with (
            avahi_daemon(lab.exec_argv(1, []), interface=lab.host(1).iface) as avahi,
            AsyncExitStack() as stack,
        ):
            # Host 1 runs a node too: Kith and avahi-daemon share port 5353 there.
            started = trio.current_time()
            nodes = [await stack.enter_async_context(lab_node(lab, i, dirs[i])) for i in (1, 2, 3)]
            others = nodes[1:]
            with deadline(started + STEP_TIMEOUT, "nodes announcing on mDNS", nodes):
                # The instance names as each node announces them (`kith id --json` reporting
                # the same is checked by the test above).
                instances = {n.index: (await n.wait_for(ANNOUNCING))["instance"] for n in others}
            ids = {n.index: await kith_json(dirs[n.index], "id") for n in others}
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
            for node in others:
                service = services[instances[node.index]]
                listen_host, listen_port = ids[node.index]["listen"].rsplit(":", 1)
                assert service.address == lab.host(node.index).address == listen_host, service
                assert service.port == int(listen_port), service
                assert (service.interface, service.protocol) == ("lab0", "IPv4"), service
                assert service.service_type == "_kith._tcp", service
                assert service.host_name == f"{instances[node.index]}.local", service
                assert '"v=1"' in service.txt, service
    for node in nodes:
        assert node.returncode == 0, node.log
        assert "Traceback" not in node.log, node.log
