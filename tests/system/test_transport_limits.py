"""A real ``kith run`` process under a flood it cannot be stopped by (issue 12, items 1 and 3).

* With only 192 descriptors (``prlimit``), a flood of completed channels (throwaway
  keys, more channels than the process has descriptors) and half-open connections:
  the node lowers its caps to fit, refuses the rest with one line, keeps running,
  and its control socket answers (``kith peers``).
* One address reopening connections as fast as it can: a new node still gets in
  within 10 s.

Attackers run in the test process on 127.0.0.0/8 (other loopback addresses are
other sources); nothing leaves the machine.
"""

from __future__ import annotations

import shutil
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from node.channel.core import Channel, Role
from node.crypto.keys import IdentityKey
from node.errors import HandshakeError, RemoteProtocolError
from node.net.secure_stream import SecureStream
from tests.lab.procs import kith_json, kith_process
from tests.system.test_cli import LISTENING, LOOPBACK

pytestmark = pytest.mark.system

#: Descriptors the flooded node gets: room for 52 channels and 12 handshakes
#: beside the 128 it keeps for itself.
NOFILE = 192
CHANNELS = 52
#: Completed channels attempted: more than the process has descriptors.
FLOOD = 240
#: A new node must get in within this many seconds while another address floods.
FAIR_WITHIN = 10.0


def prlimit() -> tuple[str, ...]:
    path = shutil.which("prlimit")
    assert path is not None, "prlimit (util-linux) is needed to run a node with few descriptors"
    return (path, f"--nofile={NOFILE}:{NOFILE}")


def split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


async def try_channel(host: str, port: int, source: str, stack: AsyncExitStack) -> bool:
    """Complete a handshake with a throwaway key and keep the channel; False if refused."""
    tcp = await trio.open_tcp_stream(host, port, local_address=source)
    stack.push_async_callback(trio.aclose_forcefully, tcp)
    stream = SecureStream(tcp, Channel(Role.INITIATOR, IdentityKey.generate(), name="flood"))
    try:
        with trio.fail_after(10):
            await stream.do_handshake()
    except (HandshakeError, RemoteProtocolError, trio.BrokenResourceError):
        return False
    return True


async def test_a_node_short_of_descriptors_survives_a_flood_of_channels(tmp: Path) -> None:
    data = tmp / "alice"
    async with kith_process(data, "run", *LOOPBACK, "--name", "alice",
                            prefix=prlimit()) as alice, AsyncExitStack() as stack:
        host, port = split((await alice.wait_for_line(LISTENING))["address"])
        await alice.wait_for_line(rf"descriptor limit {NOFILE} \(ulimit -n\): at most "
                                  rf"{CHANNELS} channels and 12 handshakes")
        admitted = 0
        started = trio.current_time()
        for i in range(FLOOD):
            admitted += await try_channel(host, port, f"127.0.0.{2 + i % 8}", stack)
        # Half-open connections on top: they wait in (or are refused) the handshake.
        for i in range(40):
            tcp = await trio.open_tcp_stream(host, port, local_address=f"127.0.1.{1 + i % 4}")
            stack.push_async_callback(trio.aclose_forcefully, tcp)
        # (A client counts its handshake done once it sent message 3: one that the node
        # finished after the last place went is told "too many channels" and not counted.)
        assert CHANNELS <= admitted < FLOOD
        await alice.wait_for_line(rf"refusing new connections: {CHANNELS} channels open "
                                  r"\(the limit, see --max-channels\)")
        # Alive, and its control socket answers while the flood holds everything it can.
        peers = await kith_json(data, "peers")
        assert alice.returncode is None
        inbound = [p for p in peers if p["direction"] == "inbound"]
        assert len(inbound) == CHANNELS, peers
        # 188 refusals, one line per 10 s (the rest counted on the next line).
        lines = alice.lines_matching(r"refusing new connections: ")
        assert 1 <= len(lines) <= 1 + (trio.current_time() - started) // 10, alice.log
    assert "Traceback" not in alice.log


async def flood(host: str, port: int, source: str, width: int, opened: list[int]) -> None:
    """Keep ``width`` silent connections from ``source`` open, reopening each one closed."""

    async def one() -> None:
        while True:
            tcp = await trio.open_tcp_stream(host, port, local_address=source)
            try:
                opened[0] += 1
                while await tcp.receive_some():
                    pass
            except trio.BrokenResourceError:
                pass
            finally:
                await trio.aclose_forcefully(tcp)

    async with trio.open_nursery() as nursery:
        for _ in range(width):
            nursery.start_soon(one)


async def test_a_new_node_gets_in_while_another_address_floods(tmp: Path) -> None:
    async with kith_process(tmp / "alice", "run", *LOOPBACK, "--name", "alice") as alice:
        listening = await alice.wait_for_line(LISTENING)
        host, port = split(listening["address"])
        opened = [0]
        async with trio.open_nursery() as flooding:
            # More than every handshake slot (64), from one address.
            flooding.start_soon(flood, host, port, "127.0.0.2", 100, opened)
            await alice.wait_for_line(r"refusing connections from 127\.0\.0\.2: 16 handshakes "
                                      r"from that address already in progress")
            async with kith_process(tmp / "bob", "run", *LOOPBACK, "--name", "bob",
                                    "--peer", listening["address"]) as bob:
                await bob.wait_for_line(LISTENING)
                started = trio.current_time()
                with trio.fail_after(FAIR_WITHIN):
                    await bob.wait_for_line(rf"connected to {listening['short']} \(alice\) at ")
                assert trio.current_time() - started < FAIR_WITHIN
                assert opened[0] > 100  # the flood was on the whole time
            flooding.cancel_scope.cancel()
        assert alice.returncode is None
