"""A private avahi-daemon inside a lab host, so tests can ask Linux's own mDNS stack what it sees.

Theory of operation: ``avahi-browse`` asks ``avahi-daemon`` over the D-Bus *system* bus,
and the daemon does the multicast. A test must not use (or disturb) the machine's own
bus or daemon, and the daemon must run inside one lab host so its multicast stays on
that host's ``lab0``. So ``avahi_daemon()`` starts, for the duration of an ``async with``
block, all in the host's network namespace:

* a ``dbus-daemon`` with its own config, listening on a socket in a temporary directory;
  ``DBUS_SYSTEM_BUS_ADDRESS`` points both the daemon and ``avahi-browse`` at it;
* ``avahi-daemon --no-drop-root --no-chroot`` with a config that allows only the lab
  interface, IPv4 only, and publishes nothing (no host-name records to clash between
  hosts). avahi-daemon insists on ``/run/avahi-daemon`` (its pid file and socket; a
  second daemon refuses to start when the pid file names a live process), so it runs in
  a private mount namespace (``unshare --mount``) with a fresh tmpfs on ``/run``: it
  neither sees nor touches a system avahi, nor one of a test running next to it.

All three run through ``procs.running``. Readiness is a line, never a sleep:
dbus-daemon prints its address when it listens, avahi-daemon logs "Server startup
complete" once it runs (each within ``procs.WAIT_TIMEOUT``). ``AvahiDaemon.browse``
runs ``avahi-browse`` without ``--terminate`` and reads its lines until the wanted
instances have been resolved. On leaving the block every process is stopped
(``procs.Proc.stop``) and the temporary directory is removed.

    async with avahi_daemon(lab.exec_argv(1, []), interface="lab0") as avahi:
        found = await avahi.browse("_kith._tcp", {"kith-0123456789abcdef"})
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.lab.procs import Proc, ProcessError, running

TOOLS = ("dbus-daemon", "avahi-daemon", "avahi-browse", "unshare", "mount")

_BUS_CONFIG = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

_AVAHI_CONFIG = """\
[server]
use-ipv4=yes
use-ipv6=no
allow-interfaces={interface}
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
disable-publishing=yes
"""

# Inside the private mount namespace: a fresh /run, then become avahi-daemon (same PID).
_AVAHI_SHELL = 'mount -t tmpfs kith-avahi /run && exec "$@"'


def avahi_available() -> str | None:
    """None if this machine can run the harness, else the reason it cannot."""
    if os.geteuid() != 0:
        return "a private avahi-daemon needs root (it mounts a tmpfs in its own mount namespace)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install avahi-daemon avahi-utils dbus)"
    return None


@dataclass(frozen=True, slots=True)
class BrowsedService:
    """One resolved service, from a ``=`` line of ``avahi-browse --parsable --resolve``."""

    interface: str
    protocol: str  # "IPv4" or "IPv6"
    instance: str
    service_type: str
    domain: str
    host_name: str
    address: str
    port: int
    txt: str  # the TXT strings as avahi-browse prints them: '"k=v" "k2=v2"'


_ESCAPE = re.compile(r"\\(\d{3})")


def _unescape(field: str) -> str:
    # --parsable escapes ';' and '\\' (and other bytes) in names as \DDD (decimal).
    return _ESCAPE.sub(lambda m: chr(int(m.group(1))), field)


def parse_browse_line(line: str) -> BrowsedService | None:
    """The service a resolved (``=``) line describes; None for any other line."""
    fields = line.split(";")
    if len(fields) < 10 or fields[0] != "=":
        return None
    _, interface, protocol, instance, service_type, domain, host, address, port, *txt = fields
    return BrowsedService(
        interface=interface,
        protocol=protocol,
        instance=_unescape(instance),
        service_type=_unescape(service_type),
        domain=_unescape(domain),
        host_name=_unescape(host),
        address=address,
        port=int(port),
        txt=";".join(txt),
    )


BrowsedServices = dict[str, BrowsedService]


class AvahiDaemon:
    """A running private avahi-daemon; ``browse`` asks it what it hears."""

    def __init__(self, exec_prefix: Sequence[str], env: Mapping[str, str], daemon: Proc):
        self.exec_prefix = list(exec_prefix)
        #: The environment that points D-Bus clients at the private bus.
        self.env = dict(env)
        self._daemon = daemon
        #: The output lines of the latest (or running) ``browse``.
        self.browse_output: list[str] = []

    @property
    def log(self) -> str:
        """avahi-daemon's output so far."""
        return "\n".join(self._daemon.lines)

    async def browse(self, service_type: str, instances: Collection[str]) -> BrowsedServices:
        """Run ``avahi-browse --resolve --parsable SERVICE_TYPE`` until it has resolved
        every one of ``instances``; return every service it resolved, by instance name.

        No deadline of its own: the caller holds one (``trio.fail_after``), and on a
        timeout finds what avahi-browse wrote so far in ``browse_output``.
        Raises ``ProcessError`` if avahi-browse exits first (say, it finds no daemon).
        """
        wanted = set(instances)
        argv = ["avahi-browse", "--resolve", "--parsable", "--no-db-lookup", service_type]
        async with running(argv, prefix=self.exec_prefix, env=self.env, name="avahi-browse",
                           watch="both", bounded=False) as browser:
            self.browse_output = browser.lines
            try:
                await browser.wait_until(lambda lines: wanted <= _resolved(lines).keys(),
                                         f"resolved {sorted(wanted)}")
            except ProcessError as exc:
                raise ProcessError(f"{exc}\navahi-daemon's output:\n{self.log}") from None
            return _resolved(browser.lines)


def _resolved(lines: list[str]) -> BrowsedServices:
    services = (parse_browse_line(line) for line in lines)
    return {s.instance: s for s in services if s is not None}


@asynccontextmanager
async def avahi_daemon(
    exec_prefix: Sequence[str], *, interface: str = "lab0"
) -> AsyncIterator[AvahiDaemon]:
    """Run a private dbus-daemon and avahi-daemon (see the module docstring).

    ``exec_prefix`` runs a command inside the host, e.g. ``lab.exec_argv(1, [])``;
    ``interface`` is the only interface avahi-daemon uses.
    """
    # Short path on purpose: a Unix socket path must fit in 107 bytes.
    with tempfile.TemporaryDirectory(prefix="kith-avahi-") as tmp:
        root = Path(tmp)
        bus_socket = root / "bus"
        bus_config = root / "bus.conf"
        bus_config.write_text(_BUS_CONFIG.format(socket=bus_socket))
        avahi_config = root / "avahi-daemon.conf"
        avahi_config.write_text(_AVAHI_CONFIG.format(interface=interface))
        env = {k: v for k, v in os.environ.items() if not k.startswith("DBUS_")}
        env["DBUS_SYSTEM_BUS_ADDRESS"] = f"unix:path={bus_socket}"
        prefix = list(exec_prefix)
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(running(
                ["dbus-daemon", f"--config-file={bus_config}", "--nofork", "--nopidfile",
                 "--nosyslog", "--print-address=1"],
                prefix=prefix, env=env, name="dbus-daemon", watch="both",
                ready=rf"^unix:path={re.escape(str(bus_socket))}",
            ))
            daemon = await stack.enter_async_context(running(
                ["unshare", "--mount", "sh", "-c", _AVAHI_SHELL, "sh", "avahi-daemon",
                 "--file", str(avahi_config), "--no-drop-root", "--no-chroot", "--no-rlimits",
                 "--no-proc-title"],
                prefix=prefix, env=env, name="avahi-daemon", watch="both",
                ready=r"^Server startup complete\.",
            ))
            yield AvahiDaemon(prefix, env, daemon)
