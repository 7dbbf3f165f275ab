"""The handshake payload, ``Hello`` (pure).

Noise XX messages 2 (responder) and 3 (initiator) carry a msgpack map:

    {"v": <int protocol version>, "id": <32-byte Ed25519 public key>, "name": <str>,
     "inst": <str, optional: the mDNS instance name the sender announces>,
     "idle": <number, optional: seconds the sender waits without hearing from us before
              it closes the channel; the dialler probes in time (docs/protocol.md 6)>}

Keys a receiver does not know are ignored (room to grow); duplicate keys,
wrong types, a wrong key length or an over-long name are errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.errors import RemoteProtocolError
from node.ids import PUBLIC_KEY_LEN
from node.wire.strict import pack, unpack_strict

MAX_HELLO_LEN = 512
MAX_NAME_CHARS = 64
MAX_INSTANCE_CHARS = 32
#: The largest idle timeout a Hello may state (a day).
MAX_IDLE = 86_400


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    identity: bytes
    name: str
    instance: str | None = None
    idle: float | None = None

    def encode(self) -> bytes:
        fields: dict[str, object] = {"v": self.version, "id": self.identity, "name": self.name}
        if self.instance is not None:
            fields["inst"] = self.instance
        if self.idle is not None:
            fields["idle"] = int(self.idle) if float(self.idle).is_integer() else self.idle
        return pack(fields)

    @classmethod
    def decode(cls, data: bytes) -> Hello:
        obj = unpack_strict(data, max_len=MAX_HELLO_LEN)
        if not isinstance(obj, dict):
            raise RemoteProtocolError("handshake payload is not a map")
        version, identity, name = obj.get("v"), obj.get("id"), obj.get("name")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise RemoteProtocolError("handshake payload: 'v' must be a non-negative integer")
        if not isinstance(identity, bytes) or len(identity) != PUBLIC_KEY_LEN:
            raise RemoteProtocolError(f"handshake payload: 'id' must be {PUBLIC_KEY_LEN} bytes")
        if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
            raise RemoteProtocolError(
                f"handshake payload: 'name' must be a string of at most {MAX_NAME_CHARS} characters"
            )
        instance = obj.get("inst")
        if instance is not None and (
            not isinstance(instance, str) or len(instance) > MAX_INSTANCE_CHARS
        ):
            raise RemoteProtocolError(
                f"handshake payload: 'inst' must be a string of at most {MAX_INSTANCE_CHARS} "
                "characters"
            )
        idle = obj.get("idle")
        if idle is not None and (not isinstance(idle, int | float) or isinstance(idle, bool)
                                 or not 0 < idle <= MAX_IDLE):
            raise RemoteProtocolError(
                f"handshake payload: 'idle' must be a number of seconds in (0, {MAX_IDLE}]")
        return cls(version, identity, name, instance, None if idle is None else float(idle))


def printable(text: str) -> str:
    """A peer's words made safe to show or log on one line: control characters become "?"."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def clean_name(name: str) -> str:
    """What we show of a peer's chosen name: printable, single line, capped."""
    return printable(name)[:MAX_NAME_CHARS]
