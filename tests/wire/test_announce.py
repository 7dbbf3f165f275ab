"""The mDNS announcement parser against good and hostile records."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.wire.announce import (
    MAX_TXT_BYTES,
    SERVICE_TYPE,
    Announcement,
    RawRecord,
    RecordError,
    instance_name,
    network_tag,
    parse_record,
    service_name,
    tag_matches,
    txt_properties,
)

LAN = [ipaddress.ip_network("10.250.3.0/24")]


def v4(text: str) -> bytes:
    return socket.inet_aton(text)


def record(**overrides: object) -> RawRecord:
    fields: dict[str, object] = {
        "name": service_name("kith-0123456789abcdef"),
        "port": 7373,
        "addresses": [v4("10.250.3.2")],
        "properties": {b"v": b"1"},
        "text": b"\x03v=1",
    }
    fields.update(overrides)
    return RawRecord(**fields)  # type: ignore[arg-type]


def test_good_record() -> None:
    assert parse_record(record(), LAN) == Announcement(
        "kith-0123456789abcdef", ("10.250.3.2",), 7373, 1, None
    )


def test_addresses_outside_the_network_are_dropped_and_ipv4_comes_first() -> None:
    addrs = [socket.inet_pton(socket.AF_INET6, "2001:db8::5"), v4("192.168.1.9"), v4("10.250.3.7")]
    nets = [*LAN, ipaddress.ip_network("2001:db8::/64")]
    assert parse_record(record(addresses=addrs), nets).addresses == ("10.250.3.7", "2001:db8::5")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": None}, "service name missing"),
        ({"name": "x" * 200 + "." + SERVICE_TYPE}, "too long"),
        ({"name": "printer._ipp._tcp.local."}, "is not a _kith._tcp"),
        ({"name": "." + SERVICE_TYPE}, "empty or unprintable"),
        ({"name": "a\x00b." + SERVICE_TYPE}, "empty or unprintable"),
        ({"port": None}, "bad port"),
        ({"port": "7373"}, "bad port"),
        ({"port": 0}, "bad port"),
        ({"port": 70000}, "bad port"),
        ({"port": True}, "bad port"),
        ({"properties": None}, "TXT record missing"),
        ({"properties": {}}, "no protocol version"),
        ({"properties": {b"v": None}}, "no protocol version"),
        ({"properties": {b"v": b"one"}}, "not a number"),
        ({"properties": {b"v": b"2"}}, "protocol version 2"),
        ({"properties": {"v": "1"}}, "must be bytes"),
        ({"properties": {b"v": b"1", b"t": b"xyz"}}, "malformed network tag"),
        ({"properties": {b"v": b"1", b"pad": b"x" * 300}}, "over 256 bytes"),
        ({"text": b"x" * (MAX_TXT_BYTES + 1)}, "TXT record of 257 bytes"),
        ({"addresses": []}, "no addresses"),
        ({"addresses": None}, "no addresses"),
        ({"addresses": [b"\x01\x02"]}, "malformed address"),
        ({"addresses": ["10.250.3.2"]}, "malformed address"),
        ({"addresses": [v4("192.168.1.1")]}, "no address inside"),
        ({"addresses": [v4("224.0.0.251")]}, "no address inside"),
        ({"addresses": [v4("0.0.0.0")]}, "no address inside"),
    ],
)
def test_hostile_records(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(RecordError, match=message):
        parse_record(record(**overrides), LAN)


@given(
    name=st.one_of(st.none(), st.text(max_size=300), st.binary(max_size=50)),
    port=st.one_of(st.none(), st.integers(), st.text(max_size=5)),
    addresses=st.one_of(st.none(), st.lists(st.binary(max_size=20), max_size=20)),
    properties=st.one_of(
        st.none(),
        st.dictionaries(st.binary(max_size=10), st.one_of(st.none(), st.binary(max_size=40))),
    ),
)
def test_anything_parses_or_raises_record_error(
    name: object, port: object, addresses: object, properties: object
) -> None:
    raw = RawRecord(name, port, addresses, properties, b"")
    try:
        ann = parse_record(raw, LAN)
    except RecordError:
        return
    assert 0 < ann.port < 65536 and ann.version == 1
    assert all(ipaddress.ip_address(a) in LAN[0] for a in ann.addresses)


def test_instance_names_are_random_and_prefixed() -> None:
    names = {instance_name(lambda n, i=i: bytes([i]) * n) for i in range(5)}  # type: ignore[misc]
    assert len(names) == 5 and all(n.startswith("kith-") and len(n) == 21 for n in names)


def test_network_tag_rotates_hourly_and_tolerates_skew() -> None:
    key = bytes(range(32))
    now = 1_800_000_000.0
    tag = network_tag(key, now)
    assert len(tag) == 16
    assert network_tag(key, now + 3600) != tag
    assert tag_matches(key, tag, now + 3600) and tag_matches(key, tag, now - 3600)
    assert not tag_matches(key, tag, now + 2 * 3600)
    assert not tag_matches(bytes(32), tag, now)


def test_txt_properties_announce_only_version_and_tag() -> None:
    assert txt_properties(None, 0.0) == {"v": "1"}
    assert set(txt_properties(bytes(32), 0.0)) == {"v", "t"}
