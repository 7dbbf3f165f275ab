"""Strict msgpack decoding shared by every wire schema (pure).

msgpack-python happily accepts duplicate map keys (the last one wins), unknown
extension types and trailing bytes. On an authenticated-but-hostile channel any
of those lets two implementations read the same bytes differently, so every
Kith decoder goes through ``unpack_strict``.
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
    raise RemoteProtocolError(f"msgpack extension type {code} is not allowed")


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
        )
    except RemoteProtocolError:
        raise
    except msgpack.ExtraData as exc:
        raise RemoteProtocolError("trailing bytes after the msgpack object") from exc
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise RemoteProtocolError(f"malformed msgpack: {exc}") from exc
