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

**Decode bombs.** msgpack builds the whole object before any schema check, and
a container costs one byte on the wire but tens of bytes as a Python object: a
1 MiB message of a million empty arrays would hold about 70 MB. So one call
builds at most ``MAX_CONTAINERS`` arrays and maps (counted by the hooks msgpack
calls as each completes, so the count stops it midway), and no array or map
has more than ``MAX_ITEMS`` entries (the largest legitimate one is a version
vector of 20,000 authors).
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


#: Most arrays and maps one decode may build, and most entries in one of them.
MAX_CONTAINERS = 65_536
MAX_ITEMS = 32_768


class _Budget:
    """Counts the containers one decode builds (see "Decode bombs" above)."""

    __slots__ = ("left",)

    def __init__(self, limit: int) -> None:
        self.left = limit

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise RemoteProtocolError(f"more than {MAX_CONTAINERS} arrays and maps in one "
                                      "msgpack object")

    def list_hook(self, items: list[Any]) -> list[Any]:
        self.spend()
        return items

    def pairs_hook(self, pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
        self.spend()
        return _no_duplicates(pairs)


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
    """Decode one msgpack object, refusing trailing data, duplicates, extensions and
    decode bombs."""
    if len(data) > max_len:
        raise RemoteProtocolError(f"{len(data)} bytes of msgpack exceed the limit of {max_len}")
    budget = _Budget(MAX_CONTAINERS)
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            object_pairs_hook=budget.pairs_hook,
            list_hook=budget.list_hook,
            ext_hook=_no_ext,
            max_ext_len=0,
            max_array_len=MAX_ITEMS,
            max_map_len=MAX_ITEMS,
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
