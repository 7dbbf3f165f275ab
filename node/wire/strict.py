"""Strict msgpack decoding shared by every wire schema (pure).

msgpack-python happily accepts duplicate map keys (the last one wins), unknown
extension types and trailing bytes. On an authenticated-but-hostile channel any
of those lets two implementations read the same bytes differently, so every
Kith decoder goes through ``unpack_strict``.

No extension type is allowed, and that includes the Timestamp (type -1):
msgpack decodes a Timestamp itself and never calls ``ext_hook``, so ``ext_hook``
alone lets one through. ``max_ext_len=0`` is checked, in both the C and the pure
Python unpacker, before the Timestamp branch, so it refuses every extension
that carries data (Timestamps have 4, 8 or 12 bytes); ``ext_hook`` refuses the
data-less ones of other types, and a data-less Timestamp is malformed anyway.
The library's wording for those refusals is turned into one clear message.
"""

from __future__ import annotations

from typing import Any

import msgpack

from node.errors import RemoteProtocolError


def _no_duplicates(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    result: dict[Any, Any] = {}
    for key, value in pairs:
        if key in result:
            raise RemoteProtocolError(f"duplicate map key {key!r}")
        result[key] = value
    return result


def _no_ext(code: int, data: bytes) -> Any:
    raise RemoteProtocolError(f"msgpack extension types are not allowed (type {code})")


#: How msgpack words the refusal of an extension (max_ext_len) or of a bad Timestamp,
#: in its C and pure Python unpackers. Only the message depends on it: the refusal
#: itself does not.
_EXT_REFUSALS = ("max_ext_len", "timestamp")


def pack(obj: Any) -> bytes:
    """Canonical msgpack: binary for bytes, UTF-8 strings, no extension types."""
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def unpack_strict(data: bytes, *, max_len: int) -> Any:
    """Decode one msgpack object, refusing trailing data, duplicates and extensions."""
    if len(data) > max_len:
        raise RemoteProtocolError(f"{len(data)} bytes of msgpack exceed the limit of {max_len}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            object_pairs_hook=_no_duplicates,
            ext_hook=_no_ext,
            max_ext_len=0,
        )
    except RemoteProtocolError:
        raise
    except msgpack.ExtraData as exc:
        raise RemoteProtocolError("trailing bytes after the msgpack object") from exc
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        if any(word in str(exc).lower() for word in _EXT_REFUSALS):
            raise RemoteProtocolError(
                "msgpack extension types are not allowed (Timestamp included)"
            ) from exc
        raise RemoteProtocolError(f"malformed msgpack: {exc}") from exc
