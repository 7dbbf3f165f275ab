"""Parsing ``HOST:PORT`` and ``PEERID@HOST:PORT`` (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from node.errors import ConfigError
from node.ids import PeerId, format_peer_id, parse_peer_id


def parse_hostport(text: str, *, default_port: int | None = None) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or (with a default port) a bare host."""
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if text.startswith("[") and "]" in text:
        end = text.index("]")
        host, rest = text[1:end], text[end + 1 :]
        sep, port_text = (":", rest[1:]) if rest.startswith(":") else ("", "")
    elif not sep or ":" in host:  # bare host, or a bare IPv6 address
        host, port_text, sep = text, "", ""
    if not sep:
        if default_port is None:
            raise ConfigError(f"{text!r}: expected HOST:PORT")
        port_text = str(default_port)
    if not host:
        raise ConfigError(f"{text!r}: missing host")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{text!r}: port must be a number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{text!r}: port must be 0..65535")
    return host, port


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class DialTarget:
    host: str
    port: int
    expected: PeerId | None = None

    @classmethod
    def parse(cls, text: str, *, default_port: int) -> DialTarget:
        """``[PEERID@]HOST[:PORT]``."""
        expected = None
        if "@" in text:
            id_text, _, text = text.partition("@")
            expected = parse_peer_id(id_text)
        host, port = parse_hostport(text, default_port=default_port)
        if port == 0:
            raise ConfigError(f"{text!r}: cannot dial port 0")
        return cls(host, port, expected)

    def __str__(self) -> str:
        where = format_hostport(self.host, self.port)
        return f"{format_peer_id(self.expected)}@{where}" if self.expected else where
