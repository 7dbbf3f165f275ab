"""``kith share``: hand Kith to the other machines of a LAN that has no internet.

Theory of operation: ``./scripts/bundle`` leaves a wheelhouse (Kith and every dependency
as wheels for each platform) in ``dist/wheelhouse/``. This command serves it over plain
HTTP, which pip reads as a ``--find-links`` page: the index page is both the one-page
instruction a person reads in a browser and the list of links pip follows, each link
carrying the file's SHA-256 so pip checks what it got. Only the files found in the
wheelhouse when the command starts are served, looked up by exact name in a table: no
path is ever joined from the request, so ``..`` or an absolute path has nothing to reach.

The node need not run; this is a small blocking server (stdlib ``http.server``, one thread
per download) that stops on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import logging
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import ifaddr  # zeroconf's own dependency: the interface addresses on every platform

from node.datadir import DataDir
from node.errors import ConfigError
from node.net.address import format_hostport, parse_hostport

log = logging.getLogger(__name__)

DEFAULT_SHARE_PORT = 7374
#: Where ./scripts/bundle puts it, relative to a source checkout (this file is node/cli/).
CHECKOUT_WHEELHOUSE = Path(__file__).resolve().parents[2] / "dist" / "wheelhouse"
_TYPES = {".whl": "application/octet-stream", ".gz": "application/gzip",
          ".zip": "application/zip", ".json": "application/json"}

DESCRIPTION = """\
Serve the wheelhouse built by ./scripts/bundle (Kith and every dependency, for
Linux, macOS and Windows) over HTTP on this network, so other machines install
Kith from it with no internet: it prints the one command to run on them, and
http://ADDRESS:PORT/ shows the same instructions in a browser. The node need not
run. Ctrl-C stops sharing.

The wheelhouse is --wheelhouse DIR, else $KITH_WHEELHOUSE, else dist/wheelhouse
of this checkout, else ./dist/wheelhouse.

examples:
  kith share                                serve on every interface, port 7374
  kith share --listen 192.168.1.5:8080      only on that address
"""


def add_parser(sub: Any) -> None:
    """Register ``kith share``."""
    p = sub.add_parser("share", help="serve Kith's installer to this LAN (no internet needed)",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", metavar="HOST:PORT", default=f"0.0.0.0:{DEFAULT_SHARE_PORT}",
                   help=f"address to serve on (default 0.0.0.0:{DEFAULT_SHARE_PORT}, every "
                   "interface; port 0 picks a free port)")
    p.add_argument("--wheelhouse", metavar="DIR", type=Path,
                   help="the directory of wheels to serve (default: see above)")
    p.set_defaults(func=cmd_share)


@dataclass(frozen=True, slots=True)
class SharedFile:
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class Wheelhouse:
    path: Path
    files: dict[str, SharedFile]  # by exact file name: the only things ever served
    kith_version: str
    manifest: dict[str, Any]


def find_wheelhouse(explicit: Path | None) -> Path:
    if explicit is not None:
        candidates = [explicit]
    elif os.environ.get("KITH_WHEELHOUSE"):
        candidates = [Path(os.environ["KITH_WHEELHOUSE"])]
    else:
        candidates = [CHECKOUT_WHEELHOUSE, Path.cwd() / "dist" / "wheelhouse"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise ConfigError(f"no wheelhouse at {candidates[0]}: run ./scripts/bundle first "
                      "(or pass --wheelhouse DIR)")


def load_wheelhouse(path: Path) -> Wheelhouse:
    """Index the wheelhouse's files (not its subdirectories, dotfiles or symlinks)."""
    files: dict[str, SharedFile] = {}
    for entry in sorted(path.iterdir()):
        if entry.name.startswith(".") or entry.is_symlink() or not entry.is_file():
            continue
        digest = hashlib.sha256()
        with entry.open("rb") as f:
            for block in iter(lambda: f.read(1 << 16), b""):
                digest.update(block)
        files[entry.name] = SharedFile(entry, entry.stat().st_size, digest.hexdigest())
    kith = [name for name in files if name.startswith("kith-") and name.endswith(".whl")]
    if not kith:
        raise ConfigError(f"{path} has no Kith wheel: run ./scripts/bundle first")
    manifest: dict[str, Any] = {}
    if "manifest.json" in files:
        try:
            manifest = json.loads(files["manifest.json"].path.read_text())
        except (OSError, ValueError):
            manifest = {}
    return Wheelhouse(path, files, max(kith).split("-")[1], manifest)


def install_commands(url: str, host: str) -> tuple[str, str]:
    """The command for Linux and macOS, and the one for Windows."""
    pip_args = f"install --no-index --find-links {url} --trusted-host {host} kith"
    return (f"python3 -m venv kith-env && kith-env/bin/pip {pip_args}",
            f"py -m venv kith-env && kith-env\\Scripts\\pip {pip_args}")


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses others can reach (not loopback or link-local)."""
    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith(("127.", "169.254.")):
                found.append(ip.ip)
    return list(dict.fromkeys(found))


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1_000_000 else f"{max(1, round(n / 1e3))} kB"


def _targets(manifest: dict[str, Any]) -> str:
    targets = manifest.get("targets") or []
    systems = list(dict.fromkeys(str(t.get("os")) for t in targets))
    pythons = sorted({str(t.get("python")) for t in targets})
    if not systems:
        return ""
    return f"for {', '.join(systems)}; Python {', '.join(pythons)}"


def render_page(house: Wheelhouse, host_header: str) -> bytes:
    """The one-page instruction, which is also pip's --find-links page."""
    host = urlsplit(f"http://{host_header}/").hostname or host_header
    url = f"http://{host_header}/"
    unix, windows = install_commands(url, host)
    links = "\n".join(
        f'<li><a href="{quote(name)}#sha256={f.sha256}">{html.escape(name)}</a> '
        f"({_size(f.size)})</li>" for name, f in house.files.items())
    e = html.escape
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Install Kith {e(house.kith_version)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: sans-serif; max-width: 50em; margin: 2em auto; line-height: 1.5">
<h1>Install Kith {e(house.kith_version)} from this network</h1>
<p>Kith is a serverless, end-to-end encrypted group chat for a local network. Everything it
needs is served here: no internet is needed. You need Python 3.11 or newer
(on Debian or Ubuntu also the <code>python3-venv</code> package).</p>
<h2>Linux and macOS</h2>
<p>In a terminal:</p>
<pre>{e(unix)}</pre>
<p>Then start chatting with <code>kith-env/bin/kith chat</code>.</p>
<h2>Windows</h2>
<p>In a Command Prompt (cmd.exe):</p>
<pre>{e(windows)}</pre>
<p>Then start chatting with <code>kith-env\\Scripts\\kith chat</code>.</p>
<h2>Files</h2>
<p>{e(_targets(house.manifest))}</p>
<ul>
{links}
</ul>
</body></html>
""".encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    house: Wheelhouse


    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):  # the other side went away mid-download
            log.debug("%s: %s", client_address[0], exc)
        else:
            log.warning("%s: %s: %s", client_address[0], type(exc).__name__, exc)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "kith-share"

    def do_GET(self) -> None:
        self._respond(body=True)

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def _respond(self, *, body: bool) -> None:
        house = self.server.house
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            page = render_page(house, self.headers.get("Host") or "localhost")
            self._headers(200, "text/html; charset=utf-8", len(page))
            if body:
                self.wfile.write(page)
            return
        shared = house.files.get(unquote(path.removeprefix("/")))
        if shared is None:  # includes every "..", "/etc/..." and subdirectory
            message = b"not found: only the files of the wheelhouse are served\n"
            self._headers(404, "text/plain; charset=utf-8", len(message))
            if body:
                self.wfile.write(message)
            return
        self._headers(200, _TYPES.get(shared.path.suffix, "application/octet-stream"),
                      shared.size)
        if body:
            with shared.path.open("rb") as f:
                shutil.copyfileobj(f, self.wfile)
            log.info("%s fetched %s", self.client_address[0], shared.path.name)

    def _headers(self, status: int, content_type: str, length: int) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def cmd_share(args: argparse.Namespace, datadir: DataDir) -> int:
    house = load_wheelhouse(find_wheelhouse(args.wheelhouse))
    host, port = parse_hostport(args.listen, default_port=DEFAULT_SHARE_PORT)
    server_class = _Server6 if ":" in host else _Server
    try:
        server = server_class((host, port), _Handler)
    except OSError as exc:
        raise ConfigError(f"cannot serve on {format_hostport(host, port)}: "
                          f"{exc.strerror or exc}") from exc
    server.house = house
    port = server.server_address[1]
    wildcard = host in ("0.0.0.0", "::", "")
    hosts = (lan_addresses() or ["127.0.0.1"]) if wildcard else [host]
    urls = [f"http://{format_hostport(h, port)}/" for h in hosts]
    size = sum(f.size for f in house.files.values())
    print(f"Sharing Kith {house.kith_version} ({len(house.files)} files, {_size(size)}) "
          f"from {house.path}")
    if _targets(house.manifest):
        print(f"  {_targets(house.manifest)}")
    print(f"Serving on {urls[0]}" + (f" (also {', '.join(urls[1:])})" if urls[1:] else ""))
    unix, windows = install_commands(urls[0], hosts[0])
    print("On another machine on this network (Python 3.11 or newer, no internet needed), run:")
    print(f"  {unix}")
    print("or on Windows (Command Prompt):")
    print(f"  {windows}")
    print(f"then `kith-env/bin/kith chat`. {urls[0]} shows the same in a browser.")
    print("Ctrl-C stops sharing.", flush=True)
    # Also when started in the background, where the shell leaves SIGINT ignored.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("Stopped sharing.", file=sys.stderr)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()
    return 0
