"""What Kith announces over mDNS, and the parser for what others announce (pure).

Theory of operation
-------------------
Every node announces one DNS-SD service of type ``_kith._tcp.local.``:

* instance name: ``kith-`` + 16 random hex digits, new at every start, so the
  announcement cannot be linked to a person or to the node's last run;
* host name: ``<instance>.local.`` (never the machine's host name);
* port: the TCP port the node accepts on; A/AAAA: its addresses;
* TXT: ``v=<protocol version>`` and, only with a LAN network key,
  ``t=<tag>``: 16 hex digits of ``BLAKE2b(key=network key, "kith/1 mdns" ||
  hour)`` where ``hour = floor(unix time / 3600)``. Members compute the tag
  for the previous, current and next hour (clock skew) and skip strangers'
  announcements without dialling; outsiders see a value that changes every
  hour and reveals nothing. Nothing else is announced about the node.

Open groups (and only they) are announced too, one ``_kith-group._tcp.local.``
service per open group per serving member: see the section at the end.

The zeroconf thread copies the fields of a resolved record into a
``RawRecord`` (plain data); ``parse_record`` here decides whether it is a
Kith node worth dialling, rejecting anything malformed, hostile or pointing
outside the network it was heard on. It raises ``RecordError`` with a reason.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from node.errors import RemoteProtocolError
from node.version import PROTOCOL_VERSION

SERVICE_TYPE = "_kith._tcp.local."
INSTANCE_PREFIX = "kith-"
#: More than this much TXT data is hostile: ours is under 30 bytes.
MAX_TXT_BYTES = 256
MAX_NAME_LEN = 128
MAX_ADDRESSES = 16
TAG_PERIOD = 3600
TAG_HEX_LEN = 16

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RecordError(RemoteProtocolError):
    """An mDNS record that is not a usable Kith announcement."""


@dataclass(frozen=True, slots=True)
class RawRecord:
    """The fields of a resolved service, copied as they came (nothing checked yet)."""

    name: object
    port: object
    addresses: object  # a sequence of packed 4- or 16-byte addresses
    properties: object  # the TXT record as a mapping of bytes to bytes-or-None
    text: object = b""  # the raw TXT bytes, for the size check


@dataclass(frozen=True, slots=True)
class Announcement:
    """A Kith node heard over mDNS."""

    instance: str
    addresses: tuple[str, ...]  # usable addresses, IPv4 first
    port: int
    version: int
    tag: str | None

    @property
    def host(self) -> str:
        return self.addresses[0]


def instance_name(random_bytes: Callable[[int], bytes]) -> str:
    return INSTANCE_PREFIX + random_bytes(8).hex()


def service_name(instance: str) -> str:
    return f"{instance}.{SERVICE_TYPE}"


def network_tag(key: bytes, now: float, offset: int = 0) -> str:
    hour = int(now // TAG_PERIOD) + offset
    data = b"kith/1 mdns" + hour.to_bytes(8, "big", signed=True)
    return hashlib.blake2b(data, key=key, digest_size=TAG_HEX_LEN // 2).hexdigest()


def tag_matches(key: bytes, tag: str, now: float) -> bool:
    return any(network_tag(key, now, offset) == tag for offset in (-1, 0, 1))


def txt_properties(network_key: bytes | None, now: float) -> dict[str, str]:
    props = {"v": str(PROTOCOL_VERSION)}
    if network_key is not None:
        props["t"] = network_tag(network_key, now)
    return props


def parse_record(raw: RawRecord, networks: Sequence[Network] | None = None) -> Announcement:
    """Validate a record; ``networks``, when given, are where addresses must lie."""
    instance = _instance(raw.name)
    port = raw.port
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise RecordError(f"{instance}: bad port {port!r}")
    props = _properties(raw.properties, raw.text)
    version = _version(props.get(b"v"))
    tag = props.get(b"t")
    tag_text: str | None = None
    if tag is not None:
        tag_text = tag.decode("ascii", errors="replace")
        if len(tag_text) != TAG_HEX_LEN or any(c not in "0123456789abcdef" for c in tag_text):
            raise RecordError(f"{instance}: malformed network tag")
    return Announcement(instance, _addresses(instance, raw.addresses, networks), port, version,
                        tag_text)


def _instance(name: object) -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME_LEN:
        raise RecordError("service name missing or too long")
    if not name.endswith("." + SERVICE_TYPE):
        raise RecordError(f"{name!r} is not a {SERVICE_TYPE} service")
    instance = name[: -len(SERVICE_TYPE) - 1]
    if not instance or not instance.isprintable():
        raise RecordError("empty or unprintable instance name")
    return instance


def _properties(props: object, text: object, limit: int = MAX_TXT_BYTES) -> dict[bytes, bytes]:
    if isinstance(text, bytes | bytearray) and len(text) > limit:
        raise RecordError(f"TXT record of {len(text)} bytes (limit {limit})")
    if not isinstance(props, Mapping):
        raise RecordError("TXT record missing")
    out: dict[bytes, bytes] = {}
    size = 0
    for key, value in props.items():
        if not isinstance(key, bytes) or not (value is None or isinstance(value, bytes)):
            raise RecordError("TXT entries must be bytes")
        size += len(key) + len(value or b"")
        if size > limit:
            raise RecordError(f"TXT record over {limit} bytes")
        if value is not None:
            out[key] = value
    return out


def _version(value: bytes | None) -> int:
    if value is None:
        raise RecordError("TXT record has no protocol version 'v'")
    if not value.isdigit() or len(value) > 6:
        raise RecordError(f"protocol version {value!r} is not a number")
    version = int(value)
    if version != PROTOCOL_VERSION:
        raise RecordError(f"speaks protocol version {version}, we speak {PROTOCOL_VERSION}")
    return version


def _addresses(
    instance: str, packed: object, networks: Sequence[Network] | None
) -> tuple[str, ...]:
    if not isinstance(packed, list | tuple) or not packed:
        raise RecordError(f"{instance}: no addresses")
    usable: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for item in list(packed)[:MAX_ADDRESSES]:
        if not isinstance(item, bytes) or len(item) not in (4, 16):
            raise RecordError(f"{instance}: malformed address {item!r}")
        addr = ipaddress.ip_address(item)
        if addr.is_multicast or addr.is_unspecified or addr.is_reserved:
            continue
        if networks is not None and not any(addr in net for net in networks):
            continue
        if addr.version == 6 and addr.is_link_local:
            continue  # needs a scope id we do not carry; IPv4 or global IPv6 only
        usable.append(addr)
    if not usable:
        raise RecordError(f"{instance}: no address inside the network it was heard on")
    usable.sort(key=lambda a: a.version)
    return tuple(str(a) for a in usable)


# -- open groups -----------------------------------------------------------------------
#
# A node that is a member of an *open* group announces, besides itself, one DNS-SD
# service of type ``_kith-group._tcp.local.`` per open group it serves:
#
# * instance name: the node's instance + ``-`` + the first 12 hex digits of the group
#   id (so it changes with the node's instance, at every start);
# * SRV/A: the node's own address and port (where to dial to join);
# * TXT: ``v`` (protocol version), ``g`` (the group id, 64 hex digits), ``p``
#   (``whitelist`` or ``blacklist``), ``id`` (the announcing member's peer id, 64 hex
#   digits: a joiner can dial it as PEERID@host:port), ``n`` (the group's name, UTF-8,
#   cut to ``MAX_ANNOUNCED_NAME`` bytes: a hint, the CREATE or RENAME is authoritative)
#   and, with a network key, ``t`` as for the node record.
#
# Private and pairwise groups are never announced: ``open_group_records`` drops them.

GROUP_SERVICE_TYPE = "_kith-group._tcp.local."
#: The group name travels in one TXT string (at most 255 bytes with its ``n=``).
MAX_ANNOUNCED_NAME = 180
MAX_GROUP_TXT_BYTES = 400
POLICIES = ("whitelist", "blacklist")


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """What this node announces for one open group it is a member of."""

    instance: str
    properties: dict[str, str]


@dataclass(frozen=True, slots=True)
class GroupAnnouncement:
    """An open group heard over mDNS, served by one member (``peer``) at an address."""

    instance: str
    group: bytes
    name: str
    policy: str
    peer: bytes
    addresses: tuple[str, ...]
    port: int
    tag: str | None

    @property
    def host(self) -> str:
        return self.addresses[0]


def announced_name(name: str) -> str:
    """``name`` cut (on a character boundary) to fit ``MAX_ANNOUNCED_NAME`` UTF-8 bytes."""
    raw = name.encode()[:MAX_ANNOUNCED_NAME]
    return raw.decode("utf-8", errors="ignore")


def group_service_name(instance: str) -> str:
    return f"{instance}.{GROUP_SERVICE_TYPE}"


def open_group_records(
    node_instance: str,
    peer: bytes,
    groups: Sequence[tuple[bytes, str, str, str]],
    network_key: bytes | None,
    now: float,
) -> list[GroupRecord]:
    """The records for ``groups`` given as (id, name, mode, policy): open ones only."""
    records = []
    for group_id, name, mode, policy in groups:
        if mode != "open" or policy not in POLICIES:
            continue  # a private group's existence is never told to the LAN
        props = txt_properties(network_key, now)
        props.update({"g": group_id.hex(), "p": policy, "id": peer.hex(),
                      "n": announced_name(name)})
        records.append(GroupRecord(f"{node_instance}-{group_id.hex()[:12]}", props))
    return records


def parse_group_record(
    raw: RawRecord, networks: Sequence[Network] | None = None
) -> GroupAnnouncement:
    """Validate an open-group record (same hostile-input rules as ``parse_record``)."""
    instance = _group_instance(raw.name)
    port = raw.port
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise RecordError(f"{instance}: bad port {port!r}")
    if isinstance(raw.text, bytes | bytearray) and len(raw.text) > MAX_GROUP_TXT_BYTES:
        raise RecordError(f"TXT record of {len(raw.text)} bytes (limit {MAX_GROUP_TXT_BYTES})")
    props = _properties(raw.properties, b"", limit=MAX_GROUP_TXT_BYTES)
    _version(props.get(b"v"))
    group = _hex_field(instance, props, b"g")
    peer = _hex_field(instance, props, b"id")
    policy = props.get(b"p", b"").decode("ascii", errors="replace")
    if policy not in POLICIES:
        raise RecordError(f"{instance}: policy must be one of {', '.join(POLICIES)}")
    try:
        name = props.get(b"n", b"").decode("utf-8")
    except UnicodeDecodeError:
        raise RecordError(f"{instance}: group name is not UTF-8") from None
    if not name or not name.isprintable() or len(name.encode()) > MAX_ANNOUNCED_NAME:
        raise RecordError(f"{instance}: empty, unprintable or too long group name")
    tag = props.get(b"t")
    tag_text: str | None = None
    if tag is not None:
        tag_text = tag.decode("ascii", errors="replace")
        if len(tag_text) != TAG_HEX_LEN or any(c not in "0123456789abcdef" for c in tag_text):
            raise RecordError(f"{instance}: malformed network tag")
    return GroupAnnouncement(instance, group, name, policy, peer,
                             _addresses(instance, raw.addresses, networks), port, tag_text)


def _group_instance(name: object) -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME_LEN:
        raise RecordError("service name missing or too long")
    if not name.endswith("." + GROUP_SERVICE_TYPE):
        raise RecordError(f"{name!r} is not a {GROUP_SERVICE_TYPE} service")
    instance = name[: -len(GROUP_SERVICE_TYPE) - 1]
    if not instance or not instance.isprintable():
        raise RecordError("empty or unprintable instance name")
    return instance


def _hex_field(instance: str, props: Mapping[bytes, bytes], key: bytes) -> bytes:
    value = props.get(key, b"")
    text = value.decode("ascii", errors="replace")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise RecordError(f"{instance}: {key.decode()!r} must be 64 lowercase hex digits")
    return bytes.fromhex(text)
