"""No msgpack extension type is accepted anywhere, the Timestamp (type -1) included.

msgpack decodes a Timestamp itself and never calls ``ext_hook``, so a decoder that
relies on ``ext_hook`` alone lets one through (issue 12, item 5). Every decode entry
point of node/ is tried here with each extension form spliced into a slot where a
normal value decodes, under both the C and the pure Python unpacker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import msgpack.fallback
import pytest

from node.errors import RemoteProtocolError
from node.files.attachment import HASH_LEN, KEY_LEN
from node.group.bodies import decode_body, decode_plaintext
from node.group.content import decode_content
from node.group.events import EventError, Kind, UnsignedEvent, decode_event
from node.ids import GroupId, PeerId
from node.wire.hello import Hello
from node.wire.messages import decode_message
from node.wire.open_messages import OpenRequest, decode_open
from node.wire.strict import pack, unpack_strict

#: The three Timestamp forms of the msgpack spec (32, 64 and 96 bits).
TIMESTAMPS = {
    "timestamp32 (fixext 4)": b"\xd6\xff" + (1_700_000_000).to_bytes(4, "big"),
    "timestamp64 (fixext 8)": b"\xd7\xff" + bytes(8),
    "timestamp96 (ext 8, 12 bytes)": b"\xc7\x0c\xff" + bytes(4) + (2**40).to_bytes(8, "big"),
}
OTHER_EXTENSIONS = {
    "timestamp with no data (ext 8)": b"\xc7\x00\xff",
    "type 5, fixext 1": b"\xd4\x05\x00",
    "type 5, no data (ext 8)": b"\xc7\x00\x05",
    "type 1, fixext 16": b"\xd8\x01" + bytes(16),
    "type 127, ext 16": b"\xc8\x00\x03\x7f" + b"abc",
    "type -128, ext 32": b"\xc9\x00\x00\x00\x02\x80" + b"ab",
}
EXTENSIONS = TIMESTAMPS | OTHER_EXTENSIONS

#: A value packed into a template to mark the slot the extension replaces.
SLOT = b"\x00extension slot\x00"


@pytest.fixture(params=["c", "pure-python"])
def unpacker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with msgpack's C unpacker and again with its pure Python one."""
    if request.param == "pure-python":
        monkeypatch.setattr(msgpack, "unpackb", msgpack.fallback.unpackb)
    return str(request.param)


def splice(template: Any, value: bytes) -> bytes:
    """``pack(template)`` with the encoded ``SLOT`` replaced by the bytes ``value``."""
    encoded, slot = pack(template), pack(SLOT)
    assert encoded.count(slot) == 1
    return encoded.replace(slot, value)


def _event_template() -> Any:
    unsigned = UnsignedEvent(GroupId(bytes(32)), PeerId(b"\x01" * 32), 1, 0, (), 1,
                             Kind.LEAVE, SLOT)
    return msgpack.unpackb(unsigned.signed(bytes(64)).raw)


_FILE = {"name": "a.txt", "size": 1, "type": "", "key": SLOT, "chunks": bytes(HASH_LEN)}


#: name -> (decoder, template with SLOT, a value that decodes in the slot, error type).
ENTRY_POINTS: dict[str, tuple[Callable[[bytes], object], Any, Any, type[Exception]]] = {
    "unpack_strict, top level": (lambda d: unpack_strict(d, max_len=1024), SLOT, 1,
                                 RemoteProtocolError),
    "unpack_strict, in an array": (lambda d: unpack_strict(d, max_len=1024), [1, [2, SLOT]], 3,
                                   RemoteProtocolError),
    "unpack_strict, a map value": (lambda d: unpack_strict(d, max_len=1024), {"a": {"b": SLOT}},
                                   3, RemoteProtocolError),
    "Hello.decode": (Hello.decode, {"v": 1, "id": SLOT, "name": "a"}, bytes(32),
                     RemoteProtocolError),
    "decode_message": (decode_message, {"t": "typing", "g": SLOT}, bytes(32),
                       RemoteProtocolError),
    "decode_message, in a list": (decode_message, {"t": "ack", "g": bytes(32), "ids": [SLOT]},
                                  bytes(32), RemoteProtocolError),
    "decode_event": (decode_event, _event_template(), pack({}), EventError),
    "decode_body": (lambda d: decode_body(Kind.REMOVE, d), {"member": SLOT}, bytes(32),
                    EventError),
    "decode_plaintext": (decode_plaintext, {"text": SLOT}, "hi", EventError),
    "decode_content": (decode_content, {"v": 2, "t": "post", "text": SLOT}, "hi", EventError),
    "decode_content, in a file": (decode_content,
                                  {"v": 2, "t": "post", "text": "", "file": _FILE},
                                  bytes(KEY_LEN), EventError),
}


def cases() -> Iterator[Any]:
    for entry, spec in ENTRY_POINTS.items():
        for ext_name, ext in EXTENSIONS.items():
            yield pytest.param(*spec, ext, id=f"{entry}: {ext_name}")


def test_the_timestamps_are_real_ones() -> None:
    """Left to itself msgpack turns each of these into a Timestamp: the danger is real."""
    for ext in TIMESTAMPS.values():
        assert isinstance(msgpack.unpackb(ext), msgpack.Timestamp)
        assert isinstance(msgpack.fallback.unpackb(ext), msgpack.Timestamp)


@pytest.mark.parametrize(("decode", "template", "valid", "error", "ext"), list(cases()))
def test_every_decoder_refuses_every_extension(
    unpacker: str,
    decode: Callable[[bytes], object],
    template: Any,
    valid: Any,
    error: type[Exception],
    ext: bytes,
) -> None:
    decode(splice(template, pack(valid)))  # the slot takes a normal value
    with pytest.raises(error, match="msgpack extension types are not allowed"):
        decode(splice(template, ext))


@pytest.mark.parametrize("ext", list(EXTENSIONS.values()), ids=list(EXTENSIONS))
def test_decode_open_refuses_every_extension(unpacker: str, ext: bytes) -> None:
    """decode_open answers None for anything that is not a well-formed open-group message;
    the channel then hands the bytes to decode_message, which refuses them (above)."""
    template = {"t": "open", "g": SLOT}
    assert decode_open(splice(template, pack(bytes(32)))) == OpenRequest(GroupId(bytes(32)))
    assert decode_open(splice(template, ext)) is None
    with pytest.raises(RemoteProtocolError, match="msgpack extension types are not allowed"):
        decode_message(splice(template, ext))
