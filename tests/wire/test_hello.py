from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.errors import RemoteProtocolError
from node.wire.hello import MAX_HELLO_LEN, MAX_IDLE, MAX_NAME_CHARS, Hello, clean_name


@given(
    version=st.integers(min_value=0, max_value=2**32),
    key=st.binary(min_size=32, max_size=32),
    name=st.text(max_size=MAX_NAME_CHARS),
)
def test_round_trip(version: int, key: bytes, name: str) -> None:
    hello = Hello(version, key, name)
    assert Hello.decode(hello.encode()) == hello


def test_instance_is_optional() -> None:
    hello = Hello(1, bytes(32), "a", "kith-0123456789abcdef")
    assert Hello.decode(hello.encode()) == hello
    assert b"inst" not in Hello(1, bytes(32), "a").encode()


def test_idle_is_optional_and_a_positive_number_of_seconds() -> None:
    for idle in (160.0, 0.3, MAX_IDLE):
        hello = Hello(1, bytes(32), "a", None, idle)
        assert Hello.decode(hello.encode()) == hello
    assert msgpack.unpackb(Hello(1, bytes(32), "a", None, 160.0).encode())["idle"] == 160
    assert b"idle" not in Hello(1, bytes(32), "a").encode()
    # the largest Hello, with a stated idle timeout, still fits
    assert len(Hello(1, bytes(32), "\U0001f600" * 64, "k" * 32, 0.1).encode()) <= MAX_HELLO_LEN


def test_unknown_keys_are_ignored() -> None:
    data = msgpack.packb({"v": 1, "id": bytes(32), "name": "a", "future": [1, 2]})
    assert Hello.decode(data) == Hello(1, bytes(32), "a")


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (msgpack.packb([1, 2, 3]), "not a map"),
        (msgpack.packb({"v": "1", "id": bytes(32), "name": ""}), "'v'"),
        (msgpack.packb({"v": True, "id": bytes(32), "name": ""}), "'v'"),
        (msgpack.packb({"v": -1, "id": bytes(32), "name": ""}), "'v'"),
        (msgpack.packb({"v": 1, "id": bytes(31), "name": ""}), "'id'"),
        (msgpack.packb({"v": 1, "id": "x" * 32, "name": ""}), "'id'"),
        (msgpack.packb({"v": 1, "id": bytes(32), "name": "n" * 65}), "'name'"),
        (msgpack.packb({"v": 1, "id": bytes(32)}), "'name'"),
        (msgpack.packb({"v": 1, "id": bytes(32), "name": "", "inst": 5}), "'inst'"),
        (msgpack.packb({"v": 1, "id": bytes(32), "name": "", "inst": "i" * 33}), "'inst'"),
        (msgpack.packb({"v": 1, "id": bytes(32), "name": "", "idle": "60"}), "'idle'"),
        (msgpack.packb({"v": 1, "id": bytes(32), "name": "", "idle": True}), "'idle'"),
        (msgpack.packb({"v": 1, "id": bytes(32), "name": "", "idle": 0}), "'idle'"),
        (msgpack.packb({"v": 1, "id": bytes(32), "name": "", "idle": -5.0}), "'idle'"),
        (msgpack.packb({"v": 1, "id": bytes(32), "name": "", "idle": MAX_IDLE + 1}), "'idle'"),
        (msgpack.packb({"v": 1, "id": bytes(32), "name": "", "idle": float("nan")}), "'idle'"),
        (msgpack.packb({"v": 1, "id": bytes(32), "name": ""}) + b"\x00", "trailing"),
        (b"\x83\xa1v\x01\xa1v\x02\xa2id\xc4\x20" + bytes(32), "duplicate map key"),
        (msgpack.packb(msgpack.ExtType(5, b"x")), "extension types are not allowed"),
        (b"\xc1", "malformed"),
        (bytes(600), "exceed the limit"),
    ],
)
def test_malformed_payloads(payload: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        Hello.decode(payload)


def test_clean_name_removes_control_characters() -> None:
    assert clean_name("eve\x1b[2J\nx") == "eve?[2J?x"
    assert len(clean_name("z" * 500)) == MAX_NAME_CHARS


def test_the_name_limit_counts_code_points() -> None:
    """64 characters of 4 bytes each (256 bytes of UTF-8) pass; the 65th is refused."""
    grin = "\U0001f600"
    assert MAX_NAME_CHARS == 64
    hello = Hello(1, bytes(32), grin * 64, "kith-0123456789abcdef")
    assert Hello.decode(hello.encode()) == hello
    too_long = msgpack.packb({"v": 1, "id": bytes(32), "name": grin * 65})
    with pytest.raises(RemoteProtocolError, match="'name'"):
        Hello.decode(too_long)
