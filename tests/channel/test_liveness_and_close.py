"""What counts as a sign of life, and what a receiver keeps of a peer's CLOSE reason."""

from __future__ import annotations

from node.channel.core import MAX_CLOSE_REASON, REC_CLOSE, ChannelClosed, MessageReceived
from node.crypto.keys import IdentityKey
from tests.helpers import drain, feed, handshake

KEY_A = IdentityKey(bytes(range(32)))
KEY_B = IdentityKey(bytes(range(32, 64)))


def test_only_complete_authenticated_records_count() -> None:
    a, b, _, _ = handshake(KEY_A, KEY_B)
    assert b.records_received == 0
    record = a.send_ping()
    for byte in record[:-1]:  # all but the last byte, one at a time
        b.receive_data(bytes([byte]))
        assert drain(b) == []
        assert b.records_received == 0
    b.receive_data(record[-1:])
    drain(b)
    assert b.records_received == 1


def test_every_record_of_a_long_message_counts() -> None:
    a, b, _, _ = handshake(KEY_A, KEY_B)
    data = bytes(200_000)  # four records: DATA and three MORE
    wire = a.send_message(data)
    events = feed(b, wire, splits=list(range(0, len(wire), 70_000)))
    assert events == [MessageReceived(data)]
    assert b.records_received == 4


def test_a_zero_length_message_is_delivered_as_such() -> None:
    a, b, _, _ = handshake(KEY_A, KEY_B)
    assert feed(b, a.send_message(b"")) == [MessageReceived(b"")]


def test_an_over_long_close_reason_is_cut_to_the_limit() -> None:
    a, b, _, _ = handshake(KEY_A, KEY_B)
    huge = ("é" * 40_000).encode()  # 80,000 bytes in one record (within a frame's 65,519)
    [event] = feed(b, a._record(REC_CLOSE, huge[:65_000]))
    assert isinstance(event, ChannelClosed) and event.reason is not None
    assert event.reason == "é" * (MAX_CLOSE_REASON // 2)


def test_a_cut_inside_a_character_is_replaced_not_an_error() -> None:
    a, b, _, _ = handshake(KEY_A, KEY_B)
    body = b"x" + "é".encode() * 150  # the 200-byte cut falls inside an "é"
    [event] = feed(b, a._record(REC_CLOSE, body))
    assert event == ChannelClosed("x" + "é" * 99 + "\ufffd")


def test_a_sender_cuts_its_reason_at_a_character_boundary() -> None:
    a, b, _, _ = handshake(KEY_A, KEY_B)
    reason = "x" + "é" * 150
    [event] = feed(b, a.send_close(reason))
    assert event == ChannelClosed("x" + "é" * 99)  # 199 bytes: half an "é" is not sent
