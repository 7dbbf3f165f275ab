"""mDNS records of open groups: building them (open groups only) and parsing hostile ones."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.wire.announce import (
    GROUP_SERVICE_TYPE,
    MAX_ANNOUNCED_NAME,
    RawRecord,
    RecordError,
    network_tag,
    open_group_records,
    parse_group_record,
)

GROUP, PRIVATE, PEER = b"\x11" * 32, b"\x22" * 32, b"\x33" * 32
INSTANCE = "kith-0123456789abcdef"
NOW = 1_700_000_000.0


def raw_of(props: dict[str, str], *, name: str | None = None, port: object = 7373,
           addresses: object = None) -> RawRecord:
    encoded = {k.encode(): v.encode() for k, v in props.items()}
    text = b"".join(bytes([len(k) + len(v) + 1]) + k + b"=" + v for k, v in encoded.items())
    return RawRecord(name=name or f"{INSTANCE}-{GROUP.hex()[:12]}.{GROUP_SERVICE_TYPE}",
                     port=port, addresses=addresses or [bytes([10, 250, 0, 2])],
                     properties=encoded, text=text)


def good() -> dict[str, str]:
    [record] = open_group_records(INSTANCE, PEER, [(GROUP, "lobby", "open", "blacklist")],
                                  None, NOW)
    return record.properties


def test_only_open_groups_are_ever_announced() -> None:
    groups = [(GROUP, "lobby", "open", "whitelist"), (PRIVATE, "secret", "private", ""),
              (b"\x44" * 32, "pw", "pairwise", ""), (b"\x55" * 32, "odd", "private", "blacklist")]
    records = open_group_records(INSTANCE, PEER, groups, None, NOW)
    assert [r.instance for r in records] == [f"{INSTANCE}-{GROUP.hex()[:12]}"]
    assert records[0].properties == {"v": "1", "g": GROUP.hex(), "p": "whitelist",
                                     "id": PEER.hex(), "n": "lobby"}
    text = repr(records)
    for secret in (PRIVATE, b"\x44" * 32, b"\x55" * 32):
        assert secret.hex() not in text and secret.hex()[:12] not in text
    assert "secret" not in text


def test_a_record_round_trips_with_a_network_key() -> None:
    key = b"k" * 32
    [record] = open_group_records(INSTANCE, PEER, [(GROUP, "lobby ☕", "open", "blacklist")],
                                  key, NOW)
    assert record.properties["t"] == network_tag(key, NOW)
    ann = parse_group_record(raw_of(record.properties))
    assert (ann.group, ann.name, ann.policy, ann.peer) == (GROUP, "lobby ☕", "blacklist", PEER)
    assert (ann.host, ann.port, ann.tag) == ("10.250.0.2", 7373, network_tag(key, NOW))


def test_a_long_name_is_cut_on_a_character_boundary() -> None:
    name = "é" * 64  # 128 bytes: fits; a 4-byte character name of 64 does not
    [record] = open_group_records(INSTANCE, PEER, [(GROUP, "😀" * 64, "open", "blacklist")],
                                  None, NOW)
    assert len(record.properties["n"].encode()) <= MAX_ANNOUNCED_NAME
    assert record.properties["n"] == "😀" * (MAX_ANNOUNCED_NAME // 4)
    assert parse_group_record(raw_of({**good(), "n": name})).name == name


@pytest.mark.parametrize(("change", "reason"), [
    ({"g": "zz" * 32}, "'g' must be 64"),
    ({"g": GROUP.hex()[:-2]}, "'g' must be 64"),
    ({"id": "AB" * 32}, "'id' must be 64"),
    ({"p": "anyone"}, "policy must be"),
    ({"n": ""}, "group name"),
    ({"n": "a\x1b[31mred"}, "group name"),
    ({"v": "2"}, "version"),
    ({"t": "nothex!!nothex!!"}, "network tag"),
])
def test_hostile_records_are_refused_with_a_reason(change: dict[str, str], reason: str) -> None:
    with pytest.raises(RecordError, match=reason):
        parse_group_record(raw_of({**good(), **change}))


def test_records_of_other_services_bad_ports_and_addresses_are_refused() -> None:
    with pytest.raises(RecordError, match="is not a _kith-group"):
        parse_group_record(raw_of(good(), name=f"{INSTANCE}._kith._tcp.local."))
    with pytest.raises(RecordError, match="bad port"):
        parse_group_record(raw_of(good(), port=0))
    with pytest.raises(RecordError, match="no address"):
        parse_group_record(raw_of(good(), addresses=[bytes([224, 0, 0, 251])]))
    props = {k.encode(): v.encode() for k, v in good().items()}
    with pytest.raises(RecordError, match="TXT"):
        parse_group_record(RawRecord(f"{INSTANCE}-x.{GROUP_SERVICE_TYPE}", 7373,
                                     [bytes([10, 0, 0, 1])], props, b"x" * 401))
    with pytest.raises(RecordError, match="TXT entries must be bytes"):
        parse_group_record(RawRecord(f"{INSTANCE}-x.{GROUP_SERVICE_TYPE}", 7373,
                                     [bytes([10, 0, 0, 1])], {"g": "x"}, b""))
    with pytest.raises(RecordError, match="not UTF-8"):
        parse_group_record(RawRecord(f"{INSTANCE}-x.{GROUP_SERVICE_TYPE}", 7373,
                                     [bytes([10, 0, 0, 1])], {**props, b"n": b"\xff\xfe"}, b""))


@given(st.dictionaries(st.binary(max_size=8), st.one_of(st.none(), st.binary(max_size=80)),
                       max_size=8), st.text(max_size=40))
def test_any_record_parses_or_raises_record_error(props: dict[bytes, bytes | None],
                                                  name: str) -> None:
    with contextlib.suppress(RecordError):
        parse_group_record(RawRecord(name + "." + GROUP_SERVICE_TYPE, 7373,
                                     [bytes([10, 0, 0, 1])], props, b""))
