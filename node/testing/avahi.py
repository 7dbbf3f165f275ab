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

Readiness is an event, never a sleep: dbus-daemon prints its address when it listens,
avahi-daemon logs "Server startup complete" once it runs. ``AvahiDaemon.browse`` runs
``avahi-browse`` without ``--terminate`` and reads its lines until the wanted instances
have been resolved. On leaving the block every process gets SIGTERM, then SIGKILL after
``STOP_TIMEOUT`` seconds; the temporary directory is removed.

    async with avahi_daemon(lab.exec_argv(1, []), interface="lab0") as avahi:
        found = await avahi.browse("_kith._tcp", {"kith-0123456789abcdef"})
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

#: Seconds a process gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 5.0
#: Seconds dbus-daemon and avahi-daemon get to say they are ready.
START_TIMEOUT = 10.0

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


class AvahiError(AssertionError):
    """A helper process did not do what the harness waited for; the message has its output."""


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


class _Child:
    """A helper process whose output lines (stdout and stderr together) are kept."""

    def __init__(self, process: trio.Process, what: str) -> None:
        self.process = process
        self.what = what
        self.lines: list[str] = []
        self._changed = trio.Event()
        self._closed = False

    async def wait_for_line(self, pattern: str) -> re.Match[str]:
        """The first line matching ``pattern``; AvahiError if the process exits first.

        No deadline of its own: callers hold one (``trio.fail_after``).
        """
        regex = re.compile(pattern)
        index = 0
        while True:
            while index < len(self.lines):
                match = regex.search(self.lines[index])
                index += 1
                if match:
                    return match
            await self._next_output()

    async def wait_until(self, done: Callable[[list[str]], bool]) -> None:
        """Wait until ``done(lines)`` holds (re-checked after each chunk of output).

        Raises AvahiError if the process exits first; no deadline of its own.
        """
        while not done(self.lines):
            await self._next_output()

    async def _next_output(self) -> None:
        if self._closed:
            await self.process.wait()
            raise self.error(f"exited (status {self.process.returncode}) too early")
        await self._changed.wait()

    def error(self, what: str) -> AvahiError:
        output = "\n".join(self.lines)
        return AvahiError(f"{self.what} {what}; its output:\n{output}")

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT`` s; returns once it has exited."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(STOP_TIMEOUT):
                await self.process.wait()
                return
            self.process.kill()
        await self.process.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def read_output(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        pending = b""
        try:
            async with stream:
                while data := await stream.receive_some():
                    *complete, pending = (pending + data).split(b"\n")
                    self.lines.extend(line.decode("utf-8", "replace") for line in complete)
                    if complete:
                        self._notify()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if pending:
                self.lines.append(pending.decode("utf-8", "replace"))
            self._closed = True
            self._notify()


@asynccontextmanager
async def _child(argv: Sequence[str], env: Mapping[str, str], what: str) -> AsyncIterator[_Child]:
    """Run ``argv`` for the duration of the block; it is stopped (and reaped) on exit."""
    process = await trio.lowlevel.open_process(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env),
    )
    child = _Child(process, what)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(child.read_output)
            try:
                yield child
            finally:
                with trio.CancelScope(shield=True):
                    await child.stop()
    except BaseExceptionGroup as group:
        # The reader never raises, so a group holds what the block raised: pass that on.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        if process.returncode is None:  # only if stop() itself was interrupted
            process.kill()


class AvahiDaemon:
    """A running private avahi-daemon; ``browse`` asks it what it hears."""

    def __init__(self, exec_prefix: Sequence[str], env: Mapping[str, str], daemon: _Child):
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
        Raises ``AvahiError`` if avahi-browse exits first (say, it finds no daemon).
        """
        wanted = set(instances)
        argv = [*self.exec_prefix, "avahi-browse", "--resolve", "--parsable",
                "--no-db-lookup", service_type]
        async with _child(argv, self.env, "avahi-browse") as browser:
            self.browse_output = browser.lines
            try:
                await browser.wait_until(lambda lines: wanted <= _resolved(lines).keys())
            except AvahiError as exc:
                raise AvahiError(f"{exc}\navahi-daemon's output:\n{self.log}") from None
            return _resolved(browser.lines)


def _resolved(lines: list[str]) -> BrowsedServices:
    services = (parse_browse_line(line) for line in lines)
    return {s.instance: s for s in services if s is not None}


async def _ready(child: _Child, pattern: str) -> None:
    with trio.move_on_after(START_TIMEOUT):
        await child.wait_for_line(pattern)
        return
    raise child.error(f"did not write a line matching {pattern!r} within {START_TIMEOUT:g} s")


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
            bus = await stack.enter_async_context(_child(
                [*prefix, "dbus-daemon", f"--config-file={bus_config}", "--nofork",
                 "--nopidfile", "--nosyslog", "--print-address=1"],
                env,
                "dbus-daemon",
            ))
            await _ready(bus, rf"^unix:path={re.escape(str(bus_socket))}")
            daemon = await stack.enter_async_context(_child(
                [*prefix, "unshare", "--mount", "sh", "-c", _AVAHI_SHELL, "sh",
                 "avahi-daemon", "--file", str(avahi_config), "--no-drop-root",
                 "--no-chroot", "--no-rlimits", "--no-proc-title"],
                env,
                "avahi-daemon",
            ))
            await _ready(daemon, r"^Server startup complete\.")
            yield AvahiDaemon(prefix, env, daemon)
