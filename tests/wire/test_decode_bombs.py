"""A message cannot make a decode build millions of objects (issue 12: memory budget)."""

from __future__ import annotations

import struct
import tracemalloc

import pytest

from node.errors import RemoteProtocolError
from node.wire.strict import MAX_CONTAINERS, MAX_ITEMS, pack, unpack_strict

MIB = 1024 * 1024


def array32(n: int, item: bytes) -> bytes:
    return b"\xdd" + struct.pack(">I", n) + item * n


@pytest.mark.parametrize("item", [b"\x90", b"\x80"], ids=["empty arrays", "empty maps"])
def test_a_megabyte_of_empty_containers_is_refused_cheaply(item: bytes) -> None:
    # nested so no single array is over MAX_ITEMS: 64 x 16,000 empty containers
    inner = array32(16_000, item)
    bomb = array32(64, inner)
    assert len(bomb) < 1.1 * MIB
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError, match="arrays and maps in one msgpack object"):
            unpack_strict(bomb, max_len=2 * MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MIB  # not the ~70 MB a million containers cost


def test_one_array_longer_than_any_message_needs_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="malformed msgpack"):
        unpack_strict(array32(MAX_ITEMS + 1, b"\xc0"), max_len=2 * MIB)


def test_the_largest_legitimate_shapes_still_decode() -> None:
    vector = [[bytes(32), 2**40 - 1] for _ in range(20_000)]  # a version vector's limit
    assert unpack_strict(pack({"vv": vector}), max_len=2 * MIB) == {"vv": vector}
    nested = [[[] for _ in range(16_000)] for _ in range(4)]  # 64,005 containers
    assert MAX_CONTAINERS >= 64_005
    assert unpack_strict(pack(nested), max_len=2 * MIB) == nested
