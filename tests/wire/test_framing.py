from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.errors import LocalProtocolError, RemoteProtocolError
from node.wire.framing import FrameDecoder, encode_frame


@given(
    frames=st.lists(st.binary(min_size=1, max_size=2000), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=20000), max_size=20),
)
def test_any_split_gives_the_same_frames(frames: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    out: list[bytes] = []
    points = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
    for start, end in itertools.pairwise(points):
        decoder.feed(wire[start:end])
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
    decoder.feed(b"")
    assert decoder.next_frame() is None and decoder.at_eof
    assert out == frames


def test_length_over_the_limit_is_refused_before_the_body() -> None:
    decoder = FrameDecoder(max_frame_len=100)
    decoder.feed(b"\x00\x65")
    with pytest.raises(RemoteProtocolError, match="101 exceeds the limit of 100"):
        decoder.next_frame()


def test_zero_length_frame_is_refused() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x00\x00")
    with pytest.raises(RemoteProtocolError, match="length 0"):
        decoder.next_frame()


def test_stream_ending_inside_a_frame() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\x00\x05abc")
    assert decoder.next_frame() is None
    decoder.feed(b"")
    with pytest.raises(RemoteProtocolError, match=r"3 bytes|5 bytes"):
        decoder.next_frame()


def test_encoder_limits() -> None:
    with pytest.raises(LocalProtocolError):
        encode_frame(b"")
    with pytest.raises(LocalProtocolError):
        encode_frame(bytes(65536))
    assert encode_frame(bytes(65535))[:2] == b"\xff\xff"


def test_data_after_eof_is_a_local_error() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"")
    with pytest.raises(LocalProtocolError):
        decoder.feed(b"x")
