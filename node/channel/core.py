"""The Kith channel: a Noise XX session plus message framing (pure, sans-I/O).

Theory of operation
-------------------
A ``Channel`` is one side of one TCP connection. It never touches a socket:
the driver feeds it received bytes with ``receive_data`` and asks for events
with ``next_event``; every method that produces bytes returns them (or queues
them for ``data_to_send``) and the driver writes them out. Time never enters:
handshake deadlines and keepalive timing sit in the driver.

On the wire every Noise message is a frame: 2-byte big-endian length + body.

Handshake (``Noise_XX_25519_ChaChaPoly_BLAKE2b``, prologue from
``node.crypto.netkey.prologue``; our static key is the X25519 form of our
Ed25519 identity)::

    initiator                                   responder
    -> e                      (payload empty)
                              <- e, ee, s, es  (payload Hello)
    -> s, se                  (payload Hello)

Each side checks the peer's ``Hello``: the Ed25519 identity it claims must
convert to exactly the X25519 static key Noise just authenticated. An
initiator that dialled a known peer id also checks that it reached that id
*before* sending message 3, so it never reveals itself to an impostor.

After the handshake, each Noise transport message carries one plaintext
*record*: a type byte and a body.

    0x00 PING                 empty; keeps the channel alive
    0x01 DATA  u32 total | chunk   first (or only) piece of an app message
    0x02 MORE  chunk               further pieces, in order
    0x03 CLOSE utf-8 reason        the sender is going away

Every record that decrypts and authenticates is counted (``records_received``):
that, and nothing less, is what a driver may take as a sign of life. Bytes of a
record that never completes prove nothing (a peer could drip one byte at a time
forever), so they do not count.

An application message of ``total`` bytes is one DATA record followed by
MORE records until ``total`` bytes have arrived. ``total`` is checked against
the cap before anything is buffered. Records of one message are never
interleaved with another message's (PING may appear between them).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass

import nacl.utils

from node.crypto.keys import IdentityKey, ed25519_to_x25519_public
from node.crypto.noise import MAX_MESSAGE_LEN, TAG_LEN, CipherState, HandshakeState
from node.errors import (
    HandshakeError,
    LocalProtocolError,
    RemoteProtocolError,
)
from node.ids import PeerId, format_peer_id, peer_id, short_id
from node.version import PROTOCOL_VERSION
from node.wire.framing import FrameDecoder, encode_frame
from node.wire.hello import MAX_HELLO_LEN, Hello, clean_name

NOISE_PROTOCOL = "Noise_XX_25519_ChaChaPoly_BLAKE2b"

#: Largest plaintext record inside one Noise transport message.
MAX_RECORD = MAX_MESSAGE_LEN - TAG_LEN
#: Handshake messages are small; a bigger length prefix is refused at once.
#: The largest valid one is message 2: an ephemeral key (32), the encrypted static key
#: (32 + 16), the Hello (at most 512) and its tag (16): 608 bytes; 64 more of headroom.
MAX_HANDSHAKE_FRAME = 32 + 48 + TAG_LEN + MAX_HELLO_LEN + 64
#: A CLOSE reason is at most this many UTF-8 bytes: a sender cuts a longer one (at a
#: character boundary) and a receiver keeps only this many bytes of one it receives.
MAX_CLOSE_REASON = 200

REC_PING = 0x00
REC_DATA = 0x01
REC_MORE = 0x02
REC_CLOSE = 0x03
_TOTAL = struct.Struct(">I")
FIRST_CHUNK = MAX_RECORD - 1 - _TOTAL.size
MORE_CHUNK = MAX_RECORD - 1


class SelfConnectionError(HandshakeError):
    """The peer at the other end is this very node."""


class UnexpectedPeerError(HandshakeError):
    """We dialled a known peer id and reached someone else."""

    def __init__(self, expected: PeerId, actual: PeerId) -> None:
        super().__init__(
            f"expected peer {format_peer_id(expected)} but the peer proved it is "
            f"{format_peer_id(actual)}"
        )
        self.expected = expected
        self.actual = actual


# -- events -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeCompleted:
    remote: PeerId
    name: str
    version: int
    #: The mDNS instance the peer says it announces (None without discovery).
    instance: str | None = None
    #: The peer's idle timeout in seconds, if its Hello says (section 6; None: an
    #: earlier node, which waits 100 s).
    idle: float | None = None


@dataclass(frozen=True, slots=True)
class MessageReceived:
    data: bytes


@dataclass(frozen=True, slots=True)
class PingReceived:
    pass


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """The peer said goodbye (``reason`` given) or closed the stream (``reason`` None)."""

    reason: str | None


Event = HandshakeCompleted | MessageReceived | PingReceived | ChannelClosed


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


#: Returned by ``next_event`` when more bytes must arrive first.
NEED_DATA = _NeedData()


# -- state machine ----------------------------------------------------------


class Role(enum.Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class State(enum.Enum):
    IDLE = "idle"  # initiator before start()
    AWAIT_MSG1 = "await-msg1"
    AWAIT_MSG2 = "await-msg2"
    AWAIT_MSG3 = "await-msg3"
    OPEN = "open"
    CLOSED = "closed"
    FAILED = "failed"


class Input(enum.Enum):
    START = "start"
    MSG1 = "msg1"
    MSG2 = "msg2"
    MSG3 = "msg3"
    SEND = "send"
    CLOSE = "close"  # either side said goodbye or the stream ended
    FAIL = "fail"


_TRANSITIONS: dict[State, dict[Input, State]] = {
    State.IDLE: {Input.START: State.AWAIT_MSG2, Input.FAIL: State.FAILED},
    State.AWAIT_MSG1: {Input.MSG1: State.AWAIT_MSG3, Input.FAIL: State.FAILED},
    State.AWAIT_MSG2: {Input.MSG2: State.OPEN, Input.FAIL: State.FAILED},
    State.AWAIT_MSG3: {Input.MSG3: State.OPEN, Input.FAIL: State.FAILED},
    State.OPEN: {Input.SEND: State.OPEN, Input.CLOSE: State.CLOSED, Input.FAIL: State.FAILED},
    State.CLOSED: {Input.CLOSE: State.CLOSED, Input.FAIL: State.FAILED},
    State.FAILED: {Input.FAIL: State.FAILED},
}


class Channel:
    """One side of a Kith channel. See the module docstring."""

    def __init__(
        self,
        role: Role,
        identity: IdentityKey,
        *,
        name: str = "",
        prologue: bytes = b"kith/1",
        expected_peer: PeerId | None = None,
        instance: str | None = None,
        idle: float | None = None,
        max_message_size: int = 1024 * 1024,
        rng: Callable[[int], bytes] = nacl.utils.random,
    ) -> None:
        self.role = role
        self.state = State.IDLE if role is Role.INITIATOR else State.AWAIT_MSG1
        self.remote: PeerId | None = None
        self.remote_name = ""
        self.remote_instance: str | None = None
        self.remote_idle: float | None = None
        self.max_message_size = max_message_size
        self._identity = identity
        self._hello = Hello(PROTOCOL_VERSION, identity.public_key, name, instance,
                            idle).encode()
        self._expected = expected_peer
        self._hs: HandshakeState | None = HandshakeState(
            NOISE_PROTOCOL,
            initiator=role is Role.INITIATOR,
            prologue=prologue,
            s=identity.x25519_private,
            rng=rng,
        )
        self._send_cs: CipherState | None = None
        self._recv_cs: CipherState | None = None
        self._frames = FrameDecoder(MAX_HANDSHAKE_FRAME)
        self._outgoing = bytearray()
        self._partial: bytearray | None = None
        self._partial_total = 0
        self._closed_event_given = False
        #: Transport records received that authenticated: the only liveness that counts.
        self.records_received = 0

    # -- state helpers --

    def _transition(self, inp: Input) -> None:
        try:
            self.state = _TRANSITIONS[self.state][inp]
        except KeyError:
            raise LocalProtocolError(
                f"cannot {inp.value} in state {self.state.value}"
            ) from None

    def _check(self, inp: Input) -> None:
        """Raise ``LocalProtocolError`` (state unchanged) if ``inp`` is not allowed now."""
        if inp not in _TRANSITIONS[self.state]:
            raise LocalProtocolError(f"cannot {inp.value} in state {self.state.value}")

    # -- outgoing --

    def start(self) -> bytes:
        """Initiator only: the first handshake message."""
        self._check(Input.START)
        assert self._hs is not None
        msg1 = self._hs.write_message(b"")
        self._transition(Input.START)
        return encode_frame(msg1)

    def data_to_send(self) -> bytes:
        """Bytes the handshake produced while processing received data."""
        out = bytes(self._outgoing)
        self._outgoing.clear()
        return out

    def send_message(self, data: bytes) -> bytes:
        """Encrypt one application message (split into records as needed)."""
        self._check(Input.SEND)
        if len(data) > self.max_message_size:
            raise LocalProtocolError(
                f"message of {len(data)} bytes exceeds the {self.max_message_size}-byte cap"
            )
        view = memoryview(data)
        out = [self._record(REC_DATA, _TOTAL.pack(len(data)) + bytes(view[:FIRST_CHUNK]))]
        for start in range(FIRST_CHUNK, len(data), MORE_CHUNK):
            out.append(self._record(REC_MORE, bytes(view[start : start + MORE_CHUNK])))
        return b"".join(out)

    def send_ping(self) -> bytes:
        self._check(Input.SEND)
        return self._record(REC_PING, b"")

    def send_close(self, reason: str = "") -> bytes:
        """Say goodbye. Afterwards nothing more can be sent."""
        self._check(Input.CLOSE)
        if self.state is State.CLOSED:
            return b""
        body = reason.encode("utf-8")[:MAX_CLOSE_REASON]
        body = body.decode("utf-8", errors="ignore").encode("utf-8")  # whole characters only
        record = self._record(REC_CLOSE, body)
        self._transition(Input.CLOSE)
        return record

    def _record(self, kind: int, body: bytes) -> bytes:
        assert self._send_cs is not None
        return encode_frame(self._send_cs.encrypt_with_ad(b"", bytes([kind]) + body))

    # -- incoming --

    def receive_data(self, data: bytes) -> None:
        """Feed received bytes; ``b""`` means the transport reached end of stream."""
        self._frames.feed(data)

    def next_event(self) -> Event | _NeedData:
        """The next event, or ``NEED_DATA``. Remote errors move the channel to FAILED."""
        if self.state is State.FAILED:
            raise LocalProtocolError("channel has failed")
        try:
            return self._next_event()
        except RemoteProtocolError:
            self._fail()
            raise

    def _fail(self) -> None:
        self._transition(Input.FAIL)
        self._hs = None
        self._send_cs = self._recv_cs = None
        self._partial = None

    def _next_event(self) -> Event | _NeedData:
        while True:
            if self.state is State.CLOSED:
                return self._closed(None)
            frame = self._frames.next_frame()
            if frame is None:
                if not self._frames.at_eof:
                    return NEED_DATA
                return self._eof()
            if self.state is State.OPEN:
                event = self._read_record(frame)
                if event is not None:
                    return event
            else:
                event = self._read_handshake(frame)
                if event is not None:
                    return event

    def _eof(self) -> Event | _NeedData:
        if self.state is State.AWAIT_MSG3:
            raise HandshakeError(
                "connection closed during the handshake: the peer refused our reply "
                "(a different network key, or it expected another peer id?)"
            )
        if self.state is not State.OPEN:
            raise HandshakeError(f"connection closed during the handshake ({self.state.value})")
        if self._partial is not None:
            raise RemoteProtocolError("connection closed in the middle of a message")
        self._transition(Input.CLOSE)
        return self._closed(None)

    def _closed(self, reason: str | None) -> Event | _NeedData:
        if self._closed_event_given:
            return NEED_DATA
        self._closed_event_given = True
        return ChannelClosed(reason)

    def _read_handshake(self, frame: bytes) -> Event | None:
        hs = self._hs
        if hs is None or self.state is State.IDLE:
            raise RemoteProtocolError("data received before the handshake started")
        if self.state is State.AWAIT_MSG1:
            payload = hs.read_message(frame)
            if payload:
                raise HandshakeError("handshake message 1 must have an empty payload")
            self._outgoing += encode_frame(hs.write_message(self._hello))
            self._transition(Input.MSG1)
            return None
        if self.state is State.AWAIT_MSG2:
            self._accept_hello(hs.read_message(frame), hs)
            self._outgoing += encode_frame(hs.write_message(self._hello))
            return self._complete(hs, Input.MSG2)
        # AWAIT_MSG3
        self._accept_hello(hs.read_message(frame), hs)
        return self._complete(hs, Input.MSG3)

    def _accept_hello(self, payload: bytes, hs: HandshakeState) -> None:
        try:
            hello = Hello.decode(payload)
        except RemoteProtocolError as exc:
            raise HandshakeError(f"bad handshake payload: {exc}") from exc
        if hello.version != PROTOCOL_VERSION:
            raise HandshakeError(
                f"peer speaks protocol version {hello.version}, we speak {PROTOCOL_VERSION}"
            )
        if ed25519_to_x25519_public(hello.identity) != hs.remote_static:
            raise HandshakeError("peer's identity key does not match its Noise static key")
        remote = peer_id(hello.identity)
        if remote == self._identity.peer_id:
            raise SelfConnectionError("connected to this node itself")
        if self._expected is not None and remote != self._expected:
            raise UnexpectedPeerError(self._expected, remote)
        self.remote = remote
        self.remote_name = clean_name(hello.name) or short_id(remote)
        self.remote_instance = hello.instance
        self.remote_idle = hello.idle

    def _complete(self, hs: HandshakeState, inp: Input) -> Event:
        first, second = hs.split()
        if self.role is Role.INITIATOR:
            self._send_cs, self._recv_cs = first, second
        else:
            self._send_cs, self._recv_cs = second, first
        self._hs = None
        self._frames.max_frame_len = MAX_MESSAGE_LEN
        self._transition(inp)
        assert self.remote is not None
        return HandshakeCompleted(
            self.remote, self.remote_name, PROTOCOL_VERSION, self.remote_instance,
            self.remote_idle,
        )

    def _read_record(self, frame: bytes) -> Event | _NeedData | None:
        assert self._recv_cs is not None
        plain = self._recv_cs.decrypt_with_ad(b"", frame)
        self.records_received += 1
        if not plain:
            raise RemoteProtocolError("empty transport record")
        kind, body = plain[0], plain[1:]
        if kind == REC_PING:
            if body:
                raise RemoteProtocolError("PING record with a body")
            return PingReceived()
        if kind == REC_DATA:
            return self._start_message(body)
        if kind == REC_MORE:
            return self._continue_message(body)
        if kind == REC_CLOSE:
            # An over-long reason is not an error (the peer is leaving anyway): only
            # its first MAX_CLOSE_REASON bytes are kept, invalid UTF-8 replaced.
            self._transition(Input.CLOSE)
            reason = body[:MAX_CLOSE_REASON].decode("utf-8", errors="replace")
            return self._closed(reason)
        raise RemoteProtocolError(f"unknown record type {kind}")

    def _start_message(self, body: bytes) -> Event | None:
        if self._partial is not None:
            raise RemoteProtocolError("new message started before the previous one ended")
        if len(body) < _TOTAL.size:
            raise RemoteProtocolError("DATA record too short")
        (total,) = _TOTAL.unpack_from(body)
        if total > self.max_message_size:
            raise RemoteProtocolError(
                f"peer announced a message of {total} bytes; the cap is {self.max_message_size}"
            )
        self._partial = bytearray()
        self._partial_total = total
        return self._continue_message(body[_TOTAL.size :])

    def _continue_message(self, chunk: bytes) -> Event | None:
        if self._partial is None:
            raise RemoteProtocolError("MORE record without a message in progress")
        self._partial += chunk
        if len(self._partial) > self._partial_total:
            raise RemoteProtocolError("message longer than its announced length")
        if len(self._partial) < self._partial_total:
            return None
        data = bytes(self._partial)
        self._partial = None
        return MessageReceived(data)
