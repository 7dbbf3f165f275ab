"""Length-prefixed frames on a byte stream (pure).

Theory of operation: every Noise message travels as a 2-byte big-endian length
followed by that many bytes. ``FrameDecoder`` is fed whatever the transport
delivered, in any split, and hands out whole frames. It checks the length
prefix as soon as its two bytes are in, so a peer announcing a frame larger
than the current limit is refused before a single byte of the body is
buffered. The limit changes with the channel's state (handshake messages are
small; transport messages may use Noise's full 65,535 bytes).
"""

from __future__ import annotations

import struct

from node.errors import LocalProtocolError, RemoteProtocolError

LENGTH_PREFIX = 2
MAX_FRAME_LEN = 0xFFFF
_LEN = struct.Struct(">H")


def encode_frame(body: bytes) -> bytes:
    """Prefix ``body`` with its length."""
    if not 0 < len(body) <= MAX_FRAME_LEN:
        raise LocalProtocolError(f"frame of {len(body)} bytes: must be 1..{MAX_FRAME_LEN}")
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Reassembles length-prefixed frames from arbitrary chunks."""

    def __init__(self, max_frame_len: int = MAX_FRAME_LEN) -> None:
        self.max_frame_len = max_frame_len
        self._buf = bytearray()
        self._eof = False

    def feed(self, data: bytes) -> None:
        """Add received bytes; ``b""`` means the peer closed its side."""
        if self._eof and data:
            raise LocalProtocolError("data fed after end of stream")
        if not data:
            self._eof = True
        self._buf += data

    @property
    def at_eof(self) -> bool:
        """True once the peer closed and every whole frame has been taken."""
        return self._eof and not self._buf

    def next_frame(self) -> bytes | None:
        """Return the next whole frame, or None if more bytes are needed.

        Raises ``RemoteProtocolError`` for a zero or oversized length prefix and
        for a stream that ended inside a frame.
        """
        if len(self._buf) >= LENGTH_PREFIX:
            (length,) = _LEN.unpack_from(self._buf)
            if length == 0:
                raise RemoteProtocolError("frame with length 0")
            if length > self.max_frame_len:
                raise RemoteProtocolError(
                    f"frame length {length} exceeds the limit of {self.max_frame_len} bytes"
                )
            end = LENGTH_PREFIX + length
            if len(self._buf) >= end:
                frame = bytes(self._buf[LENGTH_PREFIX:end])
                del self._buf[:end]
                return frame
        if self._eof and self._buf:
            raise RemoteProtocolError(
                f"connection closed in the middle of a frame ({len(self._buf)} bytes left over)"
            )
        return None
