"""Name limits count code points, not bytes (docs/protocol.md, "Lengths of text").

Each name below is made of 4-byte UTF-8 characters, so a limit that counted bytes
would refuse the longest allowed name (64 code points are 256 bytes).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from node.group.bodies import MAX_GROUP_NAME, Add, Create, Join, Rename, decode_body
from node.group.events import EventError, Kind
from node.wire.strict import pack

GRIN = "\U0001f600"  # 4 bytes of UTF-8, one code point
ACCENTED = "e\u0301"  # two code points (e + combining acute), one grapheme

BODIES: dict[Kind, Callable[[str], dict[str, object]]] = {
    Kind.CREATE: lambda name: {"name": name, "mode": "private", "nonce": bytes(16), "max": 10,
                               "add": "members", "history": False},
    Kind.RENAME: lambda name: {"name": name},
    Kind.ADD: lambda name: {"member": bytes(32), "role": "member", "name": name},
    Kind.JOIN: lambda name: {"name": name},
}
NAME_OF = {Kind.CREATE: Create, Kind.RENAME: Rename, Kind.ADD: Add, Kind.JOIN: Join}


def name_in(kind: Kind, name: str) -> str:
    """The name ``decode_body`` reads from a ``kind`` body carrying ``name``."""
    body = decode_body(kind, pack(BODIES[kind](name)))
    assert isinstance(body, Create | Rename | Add | Join)
    assert isinstance(body, NAME_OF[kind])
    return body.name


def test_the_limit_is_64() -> None:
    assert MAX_GROUP_NAME == 64
    assert len((GRIN * 64).encode()) == 256


@pytest.mark.parametrize("kind", list(BODIES), ids=lambda k: k.name)
def test_a_name_of_64_four_byte_characters_is_accepted(kind: Kind) -> None:
    assert name_in(kind, GRIN * MAX_GROUP_NAME) == GRIN * MAX_GROUP_NAME


@pytest.mark.parametrize("kind", list(BODIES), ids=lambda k: k.name)
def test_a_name_of_65_is_refused(kind: Kind) -> None:
    with pytest.raises(EventError, match="name"):
        decode_body(kind, pack(BODIES[kind](GRIN * (MAX_GROUP_NAME + 1))))


@pytest.mark.parametrize("kind", list(BODIES), ids=lambda k: k.name)
def test_combining_characters_count_one_each(kind: Kind) -> None:
    """32 graphemes of two code points each are 64 characters; one more code point is over."""
    assert name_in(kind, ACCENTED * 32) == ACCENTED * 32
    with pytest.raises(EventError, match="name"):
        decode_body(kind, pack(BODIES[kind](ACCENTED * 32 + "e")))
