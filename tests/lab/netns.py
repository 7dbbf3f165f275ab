"""Simulated LANs for system tests: a thin Python face on ``scripts/netns-lab``.

Theory of operation: the script does all the work (namespaces, bridge, veths,
teardown); this module only runs it, parses what ``up`` prints and builds argv lists,
so a test and a person at a shell use the very same lab. Each host of a lab is a
network namespace with one interface (``IFACE``) carrying an address in
10.250.0.0/16; the hosts share a bridge that floods multicast, so mDNS works between
them. Nothing is ever added to the machine's own network namespace.

Labs need root and iproute2. Tests call ``require_netns()`` first: it skips the test
on a developer machine that cannot run labs, and fails it in CI (``CI=true``), where a
silently skipped system test would hide a broken setup.

    with NetnsLab(3) as lab:
        subprocess.run(lab.exec_argv(1, ["ping", "-c", "1", lab.hosts[1].address]))
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]  # tests/lab/netns.py
SCRIPT = REPO_ROOT / "scripts" / "netns-lab"

IFACE = "lab0"
"""The lab interface inside every host namespace (fixed by the script)."""

MAX_HOSTS = 253

# `netns-lab up` exits with this status when the lab name is already taken.
_EXIT_NAME_IN_USE = 3
# Creating or removing a lab takes well under a second; this only stops a hang.
_SCRIPT_TIMEOUT_S = 60.0
_NAME_ATTEMPTS = 5

_counter = itertools.count(1)


class NetnsLabError(RuntimeError):
    """``scripts/netns-lab`` failed; the message is its one-line error."""


@dataclass(frozen=True, slots=True)
class LabHost:
    """One simulated host of a lab."""

    index: int  # 1-based
    netns: str  # the network namespace, e.g. "k1a2b_1-h1"
    address: str  # its IPv4 address on ``iface``, e.g. "10.250.3.2"
    iface: str  # the interface name inside the namespace


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, rem = divmod(n, 36)
        out = digits[rem] + out
        if n == 0:
            return out


def new_lab_name() -> str:
    """A lab name unique to this process and call: ``k<pid>_<counter>`` in base 36.

    At most 10 characters (the script's limit, which keeps namespace names short).
    """
    return f"k{_base36(os.getpid())}_{_base36(next(_counter) % 36**3)}"


def _run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=_SCRIPT_TIMEOUT_S,
        check=False,
    )


def _error_line(proc: subprocess.CompletedProcess[str]) -> str:
    text = proc.stderr.strip() or proc.stdout.strip()
    return text.splitlines()[-1] if text else f"exit status {proc.returncode}"


class NetnsLab:
    """A lab of ``hosts`` simulated hosts; a context manager that removes it on exit.

    ``__enter__`` runs ``netns-lab up`` and ``__exit__`` always runs ``netns-lab down``,
    which also kills whatever still runs inside the lab. Without ``name`` a name unique
    to this process is chosen (and another one if it is taken by a leftover lab).
    """

    def __init__(self, hosts: int, name: str | None = None) -> None:
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"a lab has 1 to {MAX_HOSTS} hosts, not {hosts}")
        self.size = hosts
        self.name = name if name is not None else new_lab_name()
        self._name_given = name is not None
        self.hosts: list[LabHost] = []

    def __enter__(self) -> NetnsLab:
        try:
            self.up()
        except BaseException:
            # `up` removes a half-built lab itself, unless it was killed midway.
            self.down()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    def up(self) -> None:
        """Create the lab and fill ``hosts``; raises ``NetnsLabError`` on failure."""
        for _ in range(_NAME_ATTEMPTS):
            proc = _run_script("up", "--name", self.name, "--hosts", str(self.size))
            if proc.returncode == _EXIT_NAME_IN_USE and not self._name_given:
                self.name = new_lab_name()
                continue
            if proc.returncode != 0:
                raise NetnsLabError(_error_line(proc))
            self.hosts = self._parse_up(proc.stdout)
            return
        raise NetnsLabError(f"no free lab name after {_NAME_ATTEMPTS} attempts")

    def _parse_up(self, stdout: str) -> list[LabHost]:
        hosts = []
        for index, line in enumerate(stdout.splitlines(), start=1):
            netns, address = line.split()
            hosts.append(LabHost(index=index, netns=netns, address=address, iface=IFACE))
        if len(hosts) != self.size:
            raise NetnsLabError(f"netns-lab up printed {len(hosts)} hosts, not {self.size}")
        return hosts

    def down(self) -> None:
        """Remove the lab and kill what runs in it; harmless if it is already gone."""
        proc = _run_script("down", "--name", self.name)
        self.hosts = []
        if proc.returncode != 0:
            raise NetnsLabError(_error_line(proc))

    def host(self, index: int) -> LabHost:
        """Host ``index`` (1-based)."""
        if not 1 <= index <= len(self.hosts):
            raise IndexError(f"lab {self.name} has no host {index}")
        return self.hosts[index - 1]

    def link(self, index: int, up: bool) -> None:
        """Plug host ``index``'s cable in (``up``) or pull it out.

        The bridge side of the host's veth goes down: the host keeps its address but
        loses carrier, and no other host hears from it. After plugging back in, allow
        about a second before traffic flows (the kernel's link-watch delay).
        """
        host = self.host(index)
        proc = _run_script(
            "link", "--name", self.name, "--host", str(host.index), "up" if up else "down"
        )
        if proc.returncode != 0:
            raise NetnsLabError(_error_line(proc))

    def exec_argv(self, index: int, argv: list[str]) -> list[str]:
        """argv that runs ``argv`` inside host ``index``, for Popen or trio.run_process."""
        return ["ip", "netns", "exec", self.host(index).netns, *argv]


@functools.cache
def netns_available() -> str | None:
    """None if this machine can run labs, else the reason it cannot.

    Really creates (and removes) a namespace with a bridge and a veth in it, so a
    kernel without those features is caught here rather than in the middle of a test.
    """
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespace labs need root (run the system tests as root)"
    ip = shutil.which("ip")
    if ip is None:
        return "the 'ip' command (iproute2) is not installed"
    if not os.access(SCRIPT, os.X_OK):
        return f"{SCRIPT} is missing or not executable"

    def ip_error(*args: str) -> str | None:
        proc = subprocess.run([ip, *args], capture_output=True, text=True, timeout=30, check=False)
        if proc.returncode == 0:
            return None
        return f"`ip {' '.join(args)}` fails: {proc.stderr.strip() or proc.returncode}"

    probe = f"kprobe{os.getpid()}"
    error = ip_error("netns", "add", probe)
    if error is not None:
        return error
    try:
        return ip_error("-n", probe, "link", "add", "br0", "type", "bridge") or ip_error(
            "-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1"
        )
    finally:
        ip_error("netns", "del", probe)


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the current test, or fail it when running in CI (``CI=true``)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: system tests must not be skipped)", pytrace=False)
    pytest.skip(reason)


def require_netns() -> None:
    """Call first in every system test that builds a lab: skip or fail if unusable."""
    reason = netns_available()
    if reason is not None:
        skip_or_fail(reason)
