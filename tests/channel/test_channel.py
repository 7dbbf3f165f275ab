"""The sans-I/O Kith channel: handshake, records, limits and every way a peer can break it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.channel.core import (
    FIRST_CHUNK,
    MAX_HANDSHAKE_FRAME,
    MORE_CHUNK,
    NEED_DATA,
    Channel,
    ChannelClosed,
    HandshakeCompleted,
    MessageReceived,
    PingReceived,
    Role,
    SelfConnectionError,
    State,
    UnexpectedPeerError,
)
from node.crypto.keys import IdentityKey
from node.crypto.netkey import prologue
from node.errors import (
    DecryptError,
    HandshakeError,
    LocalProtocolError,
    RemoteProtocolError,
)
from node.wire.hello import Hello
from tests.helpers import drain, feed, handshake

KEY_A = IdentityKey(bytes(range(32)))
KEY_B = IdentityKey(bytes(range(32, 64)))
KEY_C = IdentityKey(bytes(range(64, 96)))


def test_handshake_tells_each_side_who_the_other_is() -> None:
    a, b, a_events, b_events = handshake(KEY_A, KEY_B)
    assert a_events == [HandshakeCompleted(KEY_B.peer_id, "bob", 1)]
    assert b_events == [HandshakeCompleted(KEY_A.peer_id, "alice", 1)]
    assert a.state is State.OPEN and b.state is State.OPEN
    assert a.remote == KEY_B.peer_id and b.remote == KEY_A.peer_id


@given(
    payloads=st.lists(st.binary(max_size=3000), min_size=1, max_size=5),
    splits=st.lists(st.integers(min_value=0, max_value=20000), max_size=30),
)
def test_random_split_points_do_not_matter(payloads: list[bytes], splits: list[int]) -> None:
    a = Channel(Role.INITIATOR, KEY_A, name="alice")
    b = Channel(Role.RESPONDER, KEY_B, name="bob")
    b_events = feed(b, a.start(), splits)
    a_events = feed(a, b.data_to_send(), splits)
    stream = a.data_to_send() + b"".join(a.send_message(p) for p in payloads) + a.send_ping()
    b_events += feed(b, stream, splits)
    assert a_events == [HandshakeCompleted(KEY_B.peer_id, "bob", 1)]
    assert b_events == [
        HandshakeCompleted(KEY_A.peer_id, "alice", 1),
        *(MessageReceived(p) for p in payloads),
        PingReceived(),
    ]


@pytest.mark.parametrize(
    "size",
    [0, 1, FIRST_CHUNK - 1, FIRST_CHUNK, FIRST_CHUNK + 1, FIRST_CHUNK + MORE_CHUNK, 1024 * 1024],
)
def test_messages_are_split_and_joined(size: int) -> None:
    a, b, _, _ = handshake(KEY_A, KEY_B)
    data = bytes(i % 251 for i in range(size))
    wire = a.send_message(data)
    assert feed(b, wire) == [MessageReceived(data)]
    # Each Noise message is at most 65535 bytes plus the 2-byte prefix.
    expected_records = 1 + max(0, -(-(size - FIRST_CHUNK) // MORE_CHUNK))
    assert len(wire) <= expected_records * (2 + 65535)


def test_both_directions_and_close_reason() -> None:
    a, b, _, _ = handshake(KEY_A, KEY_B)
    assert feed(a, b.send_message(b"hi alice")) == [MessageReceived(b"hi alice")]
    assert feed(b, a.send_close("bye now")) == [ChannelClosed("bye now")]
    assert a.state is State.CLOSED and b.state is State.CLOSED
    with pytest.raises(LocalProtocolError):
        a.send_message(b"too late")


def test_end_of_stream_after_handshake_is_a_clean_close() -> None:
    _, b, _, _ = handshake(KEY_A, KEY_B)
    b.receive_data(b"")
    assert drain(b) == [ChannelClosed(None)]
    assert b.next_event() is NEED_DATA


# -- sending more than the cap --


def test_sender_refuses_a_message_over_the_cap() -> None:
    a, _, _, _ = handshake(KEY_A, KEY_B, max_message_size=1000)
    with pytest.raises(LocalProtocolError, match="exceeds the 1000-byte cap"):
        a.send_message(bytes(1001))
    assert a.state is State.OPEN
    a.send_message(bytes(1000))


def test_receiver_refuses_an_announced_oversize_message_before_buffering() -> None:
    a = Channel(Role.INITIATOR, KEY_A, max_message_size=4 * 1024 * 1024)
    b = Channel(Role.RESPONDER, KEY_B, max_message_size=1024 * 1024)
    feed(b, a.start())
    feed(a, b.data_to_send())
    feed(b, a.data_to_send())
    wire = a.send_message(bytes(2 * 1024 * 1024))
    first_frame = wire[: 2 + int.from_bytes(wire[:2], "big")]
    b.receive_data(first_frame)  # only the first record: the refusal must not wait for more
    with pytest.raises(RemoteProtocolError, match="2097152 bytes; the cap is 1048576"):
        b.next_event()
    assert b.state is State.FAILED


# -- the state machine: inputs not in the table raise and change nothing --


def test_inputs_outside_the_table_raise_and_leave_state_unchanged() -> None:
    responder = Channel(Role.RESPONDER, KEY_B)
    with pytest.raises(LocalProtocolError, match="cannot start in state await-msg1"):
        responder.start()
    assert responder.state is State.AWAIT_MSG1

    initiator = Channel(Role.INITIATOR, KEY_A)
    with pytest.raises(LocalProtocolError, match="cannot send in state idle"):
        initiator.send_message(b"x")
    assert initiator.state is State.IDLE
    initiator.start()
    with pytest.raises(LocalProtocolError, match="cannot start in state await-msg2"):
        initiator.start()
    with pytest.raises(LocalProtocolError, match="cannot send in state await-msg2"):
        initiator.send_ping()
    assert initiator.state is State.AWAIT_MSG2


def test_failed_channel_stays_failed() -> None:
    b = Channel(Role.RESPONDER, KEY_B)
    b.receive_data(b"\x00\x05hello")
    with pytest.raises(HandshakeError):
        b.next_event()
    assert b.state is State.FAILED
    with pytest.raises(LocalProtocolError, match="failed"):
        b.next_event()


# -- bad input during the handshake --


def test_garbage_instead_of_a_handshake() -> None:
    b = Channel(Role.RESPONDER, KEY_B)
    b.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(RemoteProtocolError):
        b.next_event()


def test_oversized_length_prefix_is_refused_from_two_bytes() -> None:
    b = Channel(Role.RESPONDER, KEY_B)
    b.receive_data((MAX_HANDSHAKE_FRAME + 1).to_bytes(2, "big"))
    with pytest.raises(RemoteProtocolError, match="exceeds the limit"):
        b.next_event()


def test_truncated_handshake_message() -> None:
    a = Channel(Role.INITIATOR, KEY_A)
    b = Channel(Role.RESPONDER, KEY_B)
    msg1 = a.start()
    b.receive_data(msg1[:10])
    assert b.next_event() is NEED_DATA
    b.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        b.next_event()


def test_connection_closed_between_handshake_messages() -> None:
    a = Channel(Role.INITIATOR, KEY_A)
    b = Channel(Role.RESPONDER, KEY_B)
    feed(b, a.start())
    b.receive_data(b"")
    with pytest.raises(HandshakeError, match="closed during the handshake"):
        b.next_event()


def test_message_1_with_a_payload_is_refused() -> None:
    from node.crypto.noise import HandshakeState

    hs = HandshakeState(
        "Noise_XX_25519_ChaChaPoly_BLAKE2b", initiator=True, prologue=b"kith/1",
        s=KEY_A.x25519_private,
    )
    b = Channel(Role.RESPONDER, KEY_B)
    msg1 = hs.write_message(b"hello?")
    b.receive_data(len(msg1).to_bytes(2, "big") + msg1)
    with pytest.raises(HandshakeError, match="empty payload"):
        b.next_event()


@pytest.mark.parametrize(
    "low_order",
    [bytes(32), bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")],
)
def test_low_order_ephemeral_is_a_failed_handshake(low_order: bytes) -> None:
    b = Channel(Role.RESPONDER, KEY_B)
    b.receive_data(b"\x00\x20" + low_order)
    with pytest.raises(HandshakeError):
        b.next_event()
    assert b.state is State.FAILED


@pytest.mark.parametrize("which", ["msg2", "msg3"])
def test_a_flipped_bit_in_the_handshake_fails_it(which: str) -> None:
    a = Channel(Role.INITIATOR, KEY_A)
    b = Channel(Role.RESPONDER, KEY_B)
    feed(b, a.start())
    msg2 = bytearray(b.data_to_send())
    if which == "msg2":
        msg2[-5] ^= 0x01
        a.receive_data(bytes(msg2))
        with pytest.raises(HandshakeError):
            a.next_event()
        assert a.data_to_send() == b""  # msg3 (our identity) never goes out
        return
    feed(a, bytes(msg2))
    msg3 = bytearray(a.data_to_send())
    msg3[10] ^= 0x80
    b.receive_data(bytes(msg3))
    with pytest.raises(HandshakeError):
        b.next_event()


def test_wrong_prologue_or_network_key_fails_at_message_2() -> None:
    key1, key2 = bytes(32), bytes([1] * 32)
    for a_prologue, b_prologue in [
        (prologue(key1), prologue(key2)),
        (prologue(None), prologue(key1)),
        (b"kith/2", b"kith/1"),
    ]:
        a = Channel(Role.INITIATOR, KEY_A, prologue=a_prologue)
        b = Channel(Role.RESPONDER, KEY_B, prologue=b_prologue)
        feed(b, a.start())
        a.receive_data(b.data_to_send())
        with pytest.raises(HandshakeError):
            a.next_event()
        assert a.remote is None and a.data_to_send() == b""


def test_same_network_key_connects() -> None:
    _, _, a_events, b_events = handshake(KEY_A, KEY_B, prologue=prologue(bytes(range(32))))
    assert isinstance(a_events[0], HandshakeCompleted)
    assert isinstance(b_events[0], HandshakeCompleted)


def test_dialling_a_known_id_and_reaching_someone_else() -> None:
    a = Channel(Role.INITIATOR, KEY_A, expected_peer=KEY_C.peer_id)
    b = Channel(Role.RESPONDER, KEY_B)
    feed(b, a.start())
    a.receive_data(b.data_to_send())
    with pytest.raises(UnexpectedPeerError, match="expected peer") as info:
        a.next_event()
    assert info.value.actual == KEY_B.peer_id
    assert a.data_to_send() == b""  # we never revealed ourselves to the impostor


def test_dialling_a_known_id_and_reaching_it() -> None:
    _, _, a_events, _ = handshake(KEY_A, KEY_B, expected_peer=None)
    a = Channel(Role.INITIATOR, KEY_A, expected_peer=KEY_B.peer_id)
    b = Channel(Role.RESPONDER, KEY_B, name="bob")
    feed(b, a.start())
    assert feed(a, b.data_to_send()) == a_events


def test_identity_that_does_not_match_the_static_key() -> None:
    a = Channel(Role.INITIATOR, KEY_A)
    b = Channel(Role.RESPONDER, KEY_B)
    # b claims C's identity while its Noise static key is B's.
    b._hello = Hello(1, KEY_C.public_key, "mallory").encode()
    feed(b, a.start())
    a.receive_data(b.data_to_send())
    with pytest.raises(HandshakeError, match="does not match its Noise static key"):
        a.next_event()


def test_wrong_protocol_version_in_hello() -> None:
    a = Channel(Role.INITIATOR, KEY_A)
    b = Channel(Role.RESPONDER, KEY_B)
    b._hello = Hello(7, KEY_B.public_key, "future").encode()
    feed(b, a.start())
    a.receive_data(b.data_to_send())
    with pytest.raises(HandshakeError, match="protocol version 7"):
        a.next_event()


def test_connecting_to_itself() -> None:
    a = Channel(Role.INITIATOR, KEY_A)
    b = Channel(Role.RESPONDER, KEY_A)
    feed(b, a.start())
    a.receive_data(b.data_to_send())
    with pytest.raises(SelfConnectionError):
        a.next_event()


# -- bad input after the handshake --


def test_flipped_bit_in_a_transport_message() -> None:
    a, b, _, _ = handshake(KEY_A, KEY_B)
    wire = bytearray(a.send_message(b"important"))
    wire[-1] ^= 0x01
    b.receive_data(bytes(wire))
    with pytest.raises(DecryptError):
        b.next_event()
    assert b.state is State.FAILED


def test_replayed_transport_message_fails() -> None:
    a, b, _, _ = handshake(KEY_A, KEY_B)
    wire = a.send_message(b"once")
    assert feed(b, wire) == [MessageReceived(b"once")]
    b.receive_data(wire)
    with pytest.raises(DecryptError):
        b.next_event()


def test_stream_ending_inside_a_message() -> None:
    a, b, _, _ = handshake(KEY_A, KEY_B)
    wire = a.send_message(bytes(200_000))
    first = 2 + int.from_bytes(wire[:2], "big")
    assert feed(b, wire[:first]) == []
    b.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a message"):
        b.next_event()


def _raw_record(channel: Channel, plaintext: bytes) -> bytes:
    """Encrypt an arbitrary record with ``channel``'s send key (a misbehaving peer)."""
    assert channel._send_cs is not None
    ct = channel._send_cs.encrypt_with_ad(b"", plaintext)
    return len(ct).to_bytes(2, "big") + ct


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([b"\x02more"], "MORE record without a message"),
        ([b"\x01\x00\x00\x00\x09abc", b"\x01\x00\x00\x00\x01x"], "before the previous one ended"),
        ([b"\x01\x00\x00\x00\x02abc"], "longer than its announced length"),
        ([b"\x01\x00\x00"], "DATA record too short"),
        ([b"\x00extra"], "PING record with a body"),
        ([b"\x09"], "unknown record type 9"),
        ([b""], "empty transport record"),
    ],
)
def test_malformed_records(records: list[bytes], message: str) -> None:
    a, b, _, _ = handshake(KEY_A, KEY_B)
    b.receive_data(b"".join(_raw_record(a, r) for r in records))
    with pytest.raises(RemoteProtocolError, match=message):
        drain(b)
    assert b.state is State.FAILED
