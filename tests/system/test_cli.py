"""The ``kith`` command line, as real processes talking over loopback TCP.

Every node listens on 127.0.0.1:0; tests learn its address from its
"listening on" log line and wait for log lines (never sleep) to know that
something happened. ``tests.lab.procs`` stops every process it started.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
import trio

from node.crypto.keys import IdentityKey
from node.ids import format_peer_id, parse_peer_id
from tests.lab.procs import (
    WAIT_TIMEOUT,
    Proc,
    ProcessError,
    kith_cli,
    kith_env,
    kith_json,
    kith_process,
)

pytestmark = pytest.mark.system

LISTENING = r"node (?P<short>[a-z2-7]{8}) \((?P<name>[^)]*)\) listening on (?P<address>\S+)$"
# Loopback only, and no mDNS: test traffic must not leave 127.0.0.0/8 (the lab tests do mDNS).
LOOPBACK = ("--listen", "127.0.0.1:0", "--no-mdns")


async def listening_on(proc: Proc) -> str:
    """The ``host:port`` a node logged it listens on."""
    return (await proc.wait_for_line(LISTENING))["address"]


def one_error_line(stderr: bytes) -> str:
    """The only line on stderr, which must be a ``kith:`` error and no traceback."""
    text = stderr.decode()
    assert "Traceback" not in text, text
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("kith: "), text
    return lines[0]


async def test_two_nodes_list_each_other_as_peers(tmp: Path) -> None:
    a_dir, b_dir = tmp / "a", tmp / "b"
    async with kith_process(a_dir, "run", *LOOPBACK, "--name", "alice") as a:
        a_address = await listening_on(a)
        a_id = await kith_json(a_dir, "id")
        assert a_id["listen"] == a_address
        async with kith_process(b_dir, "run", *LOOPBACK, "--name", "bob", "--peer", a_address) as b:
            await b.wait_for_line(
                rf"connected to {a_id['short_id']} \(alice\) at {a_address} \(outbound\)$"
            )
            b_id = await kith_json(b_dir, "id")
            await a.wait_for_line(
                rf"connected to {b_id['short_id']} \(bob\) at 127\.0\.0\.1:\d+ \(inbound\)$"
            )
            a_peers = await kith_json(a_dir, "peers")
            b_peers = await kith_json(b_dir, "peers")
    assert [p["peer_id"] for p in a_peers] == [b_id["peer_id"]]
    assert [p["peer_id"] for p in b_peers] == [a_id["peer_id"]]
    for peer, name in ((a_peers[0], "bob"), (b_peers[0], "alice")):
        assert {"peer_id", "name", "address", "since"} <= peer.keys()
        assert peer["name"] == name
        assert re.fullmatch(r"127\.0\.0\.1:\d+", peer["address"])
        assert abs(peer["since"] - time.time()) < 60
    assert b_peers[0]["address"] == a_address
    assert (a_peers[0]["direction"], b_peers[0]["direction"]) == ("inbound", "outbound")


async def test_id_json(tmp: Path) -> None:
    created = await kith_json(tmp, "init", "--name", "alice")
    assert created["created"] is True
    offline = await kith_json(tmp, "id")
    assert offline["name"] == "alice"
    assert offline["peer_id"] == created["peer_id"]
    assert re.fullmatch(r"[0-9a-f]{64}", offline["public_key"])
    assert parse_peer_id(offline["peer_id"]).hex() == offline["public_key"]
    assert re.fullmatch(r"\d{5}( \d{5}){5}", offline["fingerprint"])
    assert (offline["listen"], offline["running"]) == (None, False)

    async with kith_process(tmp, "run", *LOOPBACK) as node:
        address = await listening_on(node)
        online = await kith_json(tmp, "id")
    assert online["running"] is True
    assert online["listen"] == address
    assert re.fullmatch(r"127\.0\.0\.1:[1-9]\d*", online["listen"])
    for field in ("peer_id", "public_key", "name", "fingerprint"):
        assert online[field] == offline[field]


@pytest.mark.parametrize("initialised", [False, True], ids=["empty", "initialised"])
async def test_peers_without_a_running_node(tmp: Path, initialised: bool) -> None:
    if initialised:
        assert (await kith_cli(tmp, "init")).returncode == 0
    for args in (("peers",), ("peers", "--json")):
        result = await kith_cli(tmp, *args)
        assert result.returncode != 0
        assert "no node is running" in one_error_line(result.stderr)
        assert result.stdout == b""


async def test_key_file_readable_by_others_is_refused(tmp: Path) -> None:
    assert (await kith_cli(tmp, "init")).returncode == 0
    key_file = tmp / "identity.key"
    key_file.chmod(0o644)
    result = await kith_cli(tmp, "run", *LOOPBACK)
    assert result.returncode != 0
    line = one_error_line(result.stderr)
    assert f"chmod 600 {key_file}" in line
    assert "0644" in line
    assert not (tmp / "control.sock").exists()


async def test_sigterm_stops_cleanly_and_says_goodbye(tmp: Path) -> None:
    a_dir, b_dir = tmp / "a", tmp / "b"
    async with kith_process(a_dir, "run", *LOOPBACK, "--name", "alice") as a:
        a_address = await listening_on(a)
        short = (await kith_json(a_dir, "id"))["short_id"]
        async with kith_process(b_dir, "run", *LOOPBACK, "--peer", a_address) as b:
            mark = len(b.lines)
            await b.wait_for_line(rf"connected to {short} \(alice\)", after=mark)
            await a.wait_for_line(r"connected to .* \(inbound\)$")
            assert (a_dir / "control.sock").exists()

            a.send_signal(signal.SIGTERM)
            with trio.fail_after(WAIT_TIMEOUT):
                status = await a.wait()
            assert status == 0, a.log
            await b.wait_for_line(
                rf"disconnected from {short} \(alice\): peer left \(node shutting down\)$"
            )
    assert not (a_dir / "control.sock").exists()
    assert re.search(r"received SIGTERM, shutting down", a.log)
    assert a.lines[-1].endswith("node stopped")
    assert "Traceback" not in a.log
    result = await kith_cli(a_dir, "peers")
    assert "no node is running" in one_error_line(result.stderr)


async def test_one_data_directory_runs_one_node(tmp: Path) -> None:
    async with kith_process(tmp, "run", *LOOPBACK) as first:
        await listening_on(first)
        second = await kith_cli(tmp, "run", *LOOPBACK)
        assert second.returncode != 0
        assert "already running" in one_error_line(second.stderr)
        # The first node is unharmed: its control socket still answers.
        assert (await kith_json(tmp, "id"))["running"] is True


async def test_a_taken_port_is_one_line(tmp: Path) -> None:
    a_dir, b_dir = tmp / "a", tmp / "b"
    assert (await kith_cli(b_dir, "init")).returncode == 0
    async with kith_process(a_dir, "run", *LOOPBACK) as a:
        address = await listening_on(a)
        result = await kith_cli(b_dir, "run", "--no-mdns", "--listen", address)
    assert result.returncode != 0
    line = one_error_line(result.stderr)
    assert f"cannot listen on {address}" in line
    assert "--listen HOST:0" in line


BAD_ARGUMENTS = {
    "listen address not ours": ("run", "--no-mdns", "--listen", "192.0.2.1:0"),  # TEST-NET-1
    "bad listen port": ("run", "--no-mdns", "--listen", "127.0.0.1:99999"),
    "listen port not a number": ("run", "--no-mdns", "--listen", "127.0.0.1:http"),
    "bad peer id": ("run", *LOOPBACK, "--peer", "notapeerid@127.0.0.1:1"),
    "missing network key": ("run", *LOOPBACK, "--network-key", "/nonexistent/kith.key"),
    "empty name": ("init", "--name", ""),
}


@pytest.mark.parametrize("args", BAD_ARGUMENTS.values(), ids=list(BAD_ARGUMENTS))
async def test_bad_arguments_are_one_line(tmp: Path, args: tuple[str, ...]) -> None:
    assert (await kith_cli(tmp, "init")).returncode == 0  # so `run` has nothing else to say
    result = await kith_cli(tmp, *args)
    assert result.returncode != 0
    one_error_line(result.stderr)


async def test_help(tmp: Path) -> None:
    with trio.fail_after(WAIT_TIMEOUT):
        top = await trio.run_process(
            [sys.executable, "-m", "node", "--help"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=kith_env(),
        )
    assert top.returncode == 0, top.stderr.decode()
    text = top.stdout.decode()
    for word in ("--listen", "--peer", "init", "id", "run", "peers"):
        assert word in text
    run = await kith_cli(tmp, "run", "--help")
    assert run.returncode == 0, run.stderr.decode()
    run_text = run.stdout.decode()
    assert "--listen HOST:PORT" in run_text
    assert "--peer [PEERID@]HOST:PORT" in run_text
    assert not os.listdir(tmp), "--help must not create files"


async def test_peer_must_prove_the_expected_id(tmp: Path) -> None:
    a_dir, b_dir, c_dir = tmp / "a", tmp / "b", tmp / "c"
    wrong = format_peer_id(IdentityKey.generate().peer_id)
    async with kith_process(a_dir, "run", *LOOPBACK, "--name", "alice") as a:
        a_address = await listening_on(a)
        a_id = await kith_json(a_dir, "id")
        async with kith_process(b_dir, "run", *LOOPBACK, "--peer", f"{wrong}@{a_address}") as b:
            await b.wait_for_line(
                rf"cannot connect to {wrong}@{re.escape(a_address)}: expected peer {wrong} "
                rf"but the peer proved it is {a_id['peer_id']}"
            )
            [target] = await kith_json(b_dir, "peers")  # the --peer target, never reached
            assert (target["peer_id"], target["state"], target["found"]) == (
                wrong, "offline", ["manual"]
            )
            assert await kith_json(a_dir, "peers") == []
            assert not [line for line in b.lines if " connected to " in line]
        right = f"{a_id['peer_id']}@{a_address}"
        async with kith_process(c_dir, "run", *LOOPBACK, "--peer", right) as c:
            await c.wait_for_line(rf"connected to {a_id['short_id']} \(alice\)")
            c_peers = await kith_json(c_dir, "peers")
            assert [p["peer_id"] for p in c_peers] == [a_id["peer_id"]]


async def test_harness_reports_a_process_that_exits_first(tmp: Path) -> None:
    async with kith_process(tmp, "peers") as proc:
        with pytest.raises(ProcessError, match=r"(?s)exited \(status 3\).*no node is running"):
            await proc.wait_for_line("a line that never comes")
    assert proc.returncode == 3
