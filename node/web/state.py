"""What the web server remembers: the token, the sessions, its address, the verified marks.

``WebState`` is what the guard (node/web/app.py) checks requests against: the secret
token printed in the URL, the session cookies it was exchanged for (the newest
``MAX_SESSIONS``), and the Host headers the page may be reached under (known once the
server has bound its port). ``VerifiedStore`` keeps the peers the user compared
fingerprints with out of band, in a small 0600 JSON file of the data directory.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
from collections import OrderedDict
from pathlib import Path

from node.errors import ConfigError, KithError
from node.ids import format_peer_id, parse_peer_id
from node.web import protocol

#: The file of "verified" marks in the data directory.
VERIFIED_FILE = "web-verified.json"


class VerifiedStore:
    """The peers the user checked out of band: a small 0600 JSON file, written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        peers = data.get("verified") if isinstance(data, dict) else None
        return sorted(p for p in peers if isinstance(p, str)) if isinstance(peers, list) else []

    def set(self, peer: str, verified: bool) -> None:
        try:
            peer = format_peer_id(parse_peer_id(peer))
        except ConfigError as exc:
            raise KithError(str(exc)) from None
        peers = set(self.load())
        if verified:
            peers.add(peer)
        else:
            peers.discard(peer)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump({"verified": sorted(peers)}, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class WebState:
    """What the guard checks against; ``bound`` once the server knows its port."""

    def __init__(self, data_dir: Path, listen_host: str, *, token: str | None = None) -> None:
        self.data_dir = data_dir
        self.listen_host = listen_host
        self.token = token or protocol.new_secret()
        self.sessions: OrderedDict[str, None] = OrderedDict()
        self.port = 0
        self.hosts: frozenset[str] = frozenset()
        self.verified = VerifiedStore(data_dir / VERIFIED_FILE)

    def bound(self, port: int) -> None:
        self.port = port
        self.hosts = protocol.allowed_hosts(self.listen_host, port)

    def host_ok(self, host: str) -> bool:
        """Is ``host`` (a Host header) one this page answers to?

        Listening on every address (0.0.0.0 or ::), an IP literal with our port is fine
        too (how others on the LAN reach it): only names can be rebound by DNS.
        """
        host = host.lower()
        if host in self.hosts:
            return True
        if self.listen_host not in ("0.0.0.0", "::"):
            return False
        name, _, port = host.rpartition(":")
        if port != str(self.port):
            return False
        try:
            ipaddress.ip_address(name.removeprefix("[").removesuffix("]"))
        except ValueError:
            return False
        return True

    @property
    def url(self) -> str:
        return protocol.page_url(self.listen_host, self.port, self.token)

    def token_ok(self, token: str) -> bool:
        return secrets.compare_digest(token.encode(), self.token.encode())

    def new_session(self) -> str:
        session = protocol.new_secret()
        self.sessions[session] = None
        while len(self.sessions) > protocol.MAX_SESSIONS:
            self.sessions.popitem(last=False)
        return session

    def session_ok(self, cookie: str | None) -> bool:
        if not cookie:
            return False
        return any(secrets.compare_digest(cookie.encode(), s.encode()) for s in self.sessions)
