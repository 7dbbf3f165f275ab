"""System tests of scripts/netns-lab, through tests.lab.netns.

These build real network namespaces, so they need root; `require_netns()` skips them
elsewhere (and fails them in CI). Nothing here sleeps to wait for the network: pings
use `ping -w`, which itself waits for the first reply, and the multicast test resends
only until the receivers report. A test that needs a command running inside a host
starts it as `sh -c 'echo ready; exec ...'` (exec keeps the PID) and blocks, with a
deadline, until it reads the "ready" line from the command's stdout.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.lab.netns import (
    IFACE,
    SCRIPT,
    NetnsLab,
    new_lab_name,
    require_netns,
    skip_or_fail,
)

pytestmark = pytest.mark.system

MDNS_GROUP = "224.0.0.251"
MDNS_PORT = 5353

# Joins the group without naming an interface and binds no address, as an mDNS
# library does by default: only the lab's multicast route makes that use lab0.
RECEIVER = r"""
import socket, struct, sys
group, port = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", port))
mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton("0.0.0.0"))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
s.settimeout(20)
print("ready", flush=True)
data, (source, _) = s.recvfrom(4096)
print(data.hex(), source, flush=True)
"""

# Says "ready" once it runs inside its host, then becomes `sleep 60` in the same
# process (same PID), so the PID the test sees is the one that must die. The `run`
# variant also names the host (netns-lab run sets KITH_LAB_HOST).
READY_THEN_SLEEP = "echo ready; exec sleep 60"
RUN_READY_THEN_SLEEP = 'echo "ready $KITH_LAB_HOST"; exec sleep 60'

SENDER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
s.sendto(bytes.fromhex(sys.argv[3]), (sys.argv[1], int(sys.argv[2])))
"""


# --- helpers -------------------------------------------------------------------------------


def _require_ping() -> None:
    if shutil.which("ping") is None:
        skip_or_fail("ping (iputils-ping) is not installed")


def _capture(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def _root_links() -> str:
    """The root namespace's interfaces, to prove a lab never adds any."""
    return _capture(["ip", "-o", "link"])


def _netns_names() -> set[str]:
    return {line.split()[0] for line in _capture(["ip", "netns", "list"]).splitlines()}


def _lab_netns(name: str) -> set[str]:
    pattern = re.compile(rf"{re.escape(name)}-(br|h[0-9]+)")
    return {ns for ns in _netns_names() if pattern.fullmatch(ns)}


def _netns_pids(netns: str) -> set[int]:
    proc = subprocess.run(
        ["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=30, check=False
    )
    return {int(pid) for pid in proc.stdout.split()}


def _ping(lab: NetnsLab, src: int, address: str, *, within_s: int) -> bool:
    """True once `address` answers from host `src`; ping itself waits up to within_s."""
    argv = ["ping", "-q", "-n", "-c", "1", "-i", "0.2", "-w", str(within_s), address]
    proc = subprocess.run(
        lab.exec_argv(src, argv), capture_output=True, timeout=within_s + 10, check=False
    )
    return proc.returncode == 0


def _ping_once(lab: NetnsLab, src: int, address: str) -> bool:
    argv = ["ping", "-q", "-n", "-c", "1", "-W", "1", address]
    proc = subprocess.run(lab.exec_argv(src, argv), capture_output=True, timeout=10, check=False)
    return proc.returncode == 0


def _read_lines(
    proc: subprocess.Popen[bytes], count: int, *, within_s: float, what: str
) -> list[str]:
    """Block until `proc` has written `count` lines to its stdout pipe, at most within_s.

    Reads the pipe's descriptor directly (not through the buffered file object), so a
    select() with the time that is left is never fooled by data already buffered.
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + within_s
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while data.count(b"\n") < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                pytest.fail(f"timed out after {within_s} s waiting for {what}; got {data!r}")
            chunk = os.read(fd, 4096)
            if not chunk:
                pytest.fail(f"stdout closed while waiting for {what}; got {data!r}")
            data += chunk
    return [line.strip() for line in data.decode().splitlines()[:count]]


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _default_sigint() -> None:
    # A child inherits an *ignored* SIGINT (e.g. pytest started in the background of
    # a script), and bash cannot trap a signal ignored at startup. Restore the default
    # so the test exercises the script, not how pytest was launched.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# --- the tests -----------------------------------------------------------------------------


def test_up_gives_each_host_an_address_and_unicast_works() -> None:
    require_netns()
    _require_ping()
    with NetnsLab(3) as lab:
        assert [host.index for host in lab.hosts] == [1, 2, 3]
        assert _lab_netns(lab.name) == {f"{lab.name}-br"} | {h.netns for h in lab.hosts}
        lab_net = ipaddress.ip_network("10.250.0.0/16")
        assert len({host.address for host in lab.hosts}) == 3
        for host in lab.hosts:
            assert host.iface == IFACE
            assert ipaddress.ip_address(host.address) in lab_net
            addrs = _capture(["ip", "-n", host.netns, "-o", "-4", "addr", "show", "dev", IFACE])
            assert f"inet {host.address}/" in addrs
        for target in lab.hosts[1:]:
            assert _ping(lab, 1, target.address, within_s=5), f"host1 -> {target}"


def test_multicast_crosses_the_bridge() -> None:
    require_netns()
    payload = f"kith netns-lab {uuid.uuid4()}".encode()
    with NetnsLab(3) as lab:
        receivers = {
            index: subprocess.Popen(
                lab.exec_argv(index, [sys.executable, "-c", RECEIVER, MDNS_GROUP, str(MDNS_PORT)]),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for index in (2, 3)
        }
        try:
            for index, receiver in receivers.items():
                assert receiver.stdout is not None
                assert receiver.stdout.readline().strip() == "ready", f"receiver in host{index}"
            send = [sys.executable, "-c", SENDER, MDNS_GROUP, str(MDNS_PORT), payload.hex()]
            # UDP may drop a datagram: resend until every receiver has one (they exit).
            deadline = time.monotonic() + 10
            while any(r.poll() is None for r in receivers.values()):
                if time.monotonic() > deadline:
                    pytest.fail("no multicast datagram crossed the bridge within 10 s")
                subprocess.run(lab.exec_argv(1, send), check=True, timeout=10)
                for receiver in receivers.values():
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        receiver.wait(timeout=0.3)
            for index, receiver in receivers.items():
                out, err = receiver.communicate(timeout=10)
                assert receiver.returncode == 0, f"receiver in host{index}: {err}"
                data_hex, source = out.split()
                assert bytes.fromhex(data_hex) == payload
                assert source == lab.host(1).address
        finally:
            for receiver in receivers.values():
                if receiver.poll() is None:
                    receiver.kill()
                    receiver.wait()


def test_link_down_cuts_a_host_off_and_link_up_restores_it() -> None:
    require_netns()
    _require_ping()
    with NetnsLab(3) as lab:
        host2, host3 = lab.host(2).address, lab.host(3).address
        assert _ping(lab, 1, host3, within_s=5)

        lab.link(3, up=False)
        assert not _ping_once(lab, 1, host3)
        assert _ping(lab, 1, host2, within_s=5), "only host3 should be cut off"

        lab.link(3, up=True)
        assert _ping(lab, 1, host3, within_s=10)


class _Boom(Exception):
    pass


def test_nothing_is_left_behind() -> None:
    require_netns()
    before = _root_links()

    lab = NetnsLab(3)
    with pytest.raises(_Boom), lab:
        assert _root_links() == before, "a running lab must not touch the root namespace"
        assert _lab_netns(lab.name), "the lab should exist while it is up"
        listed = _capture([str(SCRIPT), "list"]).split()
        assert lab.name in listed
        # `ip netns exec` and `sh -c` both exec, so sleeper.pid is sh, then sleep.
        sleeper = subprocess.Popen(
            lab.exec_argv(2, ["sh", "-c", READY_THEN_SLEEP]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        assert _read_lines(sleeper, 1, within_s=10, what="sleep to run in host2") == ["ready"]
        assert sleeper.pid in _netns_pids(lab.host(2).netns), "sleep should run in host2"
        raise _Boom
    assert _lab_netns(lab.name) == set()
    assert sleeper.wait(timeout=10) == -signal.SIGTERM, "down should stop what runs in the lab"
    assert sleeper.stdout is not None
    sleeper.stdout.close()
    assert lab.name not in _capture([str(SCRIPT), "list"]).split()
    assert _root_links() == before

    # An explicit down, twice: the second finds nothing and must not complain.
    other = NetnsLab(2)
    other.up()
    assert len(_lab_netns(other.name)) == 3
    other.down()
    other.down()
    assert _lab_netns(other.name) == set()
    assert _root_links() == before


def test_up_refuses_a_name_in_use_and_keeps_the_existing_lab() -> None:
    require_netns()
    with NetnsLab(2) as lab:
        proc = subprocess.run(
            [str(SCRIPT), "up", "--name", lab.name, "--hosts", "2"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 3
        assert len(proc.stderr.strip().splitlines()) == 1
        assert "already exists" in proc.stderr
        assert len(_lab_netns(lab.name)) == 3


def test_run_gives_each_host_its_environment() -> None:
    require_netns()
    before = _root_links()
    name = new_lab_name()
    report = 'echo "$KITH_LAB_HOST $KITH_LAB_ADDR $KITH_LAB_IFACE $(ip -o -4 addr show dev lab0)"'
    proc = subprocess.run(
        [str(SCRIPT), "run", "--name", name, "--hosts", "3", "--", "sh", "-c", report],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = sorted(proc.stdout.splitlines())
    assert [line.split()[0] for line in lines] == ["1", "2", "3"]
    for line in lines:
        _, address, iface, *addr_show = line.split()
        assert iface == IFACE
        assert f"{address}/24" in addr_show
    assert _lab_netns(name) == set()
    assert _root_links() == before


def test_run_fails_when_a_host_command_fails_and_cleans_up() -> None:
    require_netns()
    before = _root_links()
    name = new_lab_name()
    # Host 2 fails; hosts 1 and 3 would run for a minute unless run stops them.
    command = 'if [ "$KITH_LAB_HOST" = 2 ]; then exit 7; fi; exec sleep 60'
    started = time.monotonic()
    proc = subprocess.run(
        [str(SCRIPT), "run", "--name", name, "--hosts", "3", "--", "sh", "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 7
    assert "host 2" in proc.stderr
    assert time.monotonic() - started < 30, "the other hosts should have been stopped"
    assert _lab_netns(name) == set()
    assert _root_links() == before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_interrupted_cleans_up(signum: signal.Signals) -> None:
    require_netns()
    before = _root_links()
    name = new_lab_name()
    # The hosts' stdout is the script's: each says "ready <index>" before it sleeps.
    command = ["sh", "-c", RUN_READY_THEN_SLEEP]
    proc = subprocess.Popen(
        [str(SCRIPT), "run", "--name", name, "--hosts", "3", "--", *command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_default_sigint,
    )
    try:
        namespaces = [f"{name}-h{i}" for i in (1, 2, 3)]
        ready = _read_lines(proc, 3, within_s=10, what="run to start sleep in every host")
        assert sorted(ready) == ["ready 1", "ready 2", "ready 3"]
        pids = {ns: _netns_pids(ns) for ns in namespaces}
        assert all(pids.values()), f"every host should run its command: {pids}"
        sleepers = set().union(*pids.values())
        proc.send_signal(signum)
        assert proc.wait(timeout=20) == 128 + signum
        assert _lab_netns(name) == set()
        assert not any(_pid_alive(pid) for pid in sleepers)
        assert _root_links() == before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        subprocess.run([str(SCRIPT), "down", "--name", name], timeout=60, check=False)
