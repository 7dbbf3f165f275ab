"""Encrypting and decrypting group messages with the node's keys (pure given its inputs).

Private groups (Sender Keys): each member encrypts with its own chain for its
current epoch; the associated data binds the ciphertext to the group, the
author, the epoch and the chain index, so a ciphertext cannot be replayed into
another group, another author's chain or another position. A member rotates
(new epoch, fresh chain and signing key) lazily, before its next message,
whenever someone who holds its current key is no longer a member: the
departed member never receives the new key, so cannot read anything sent
after. Rotating lazily means a removal costs one SENDER_KEY event per member
who speaks again, not one per member (O(N) instead of O(N^2) sealed keys). A
SENDER_KEY event only commits to the chain state; each recipient's sealed copy
travels beside the event to that recipient alone, so a rotation costs O(N) bytes,
not O(N^2) (every member receives the event, but only its own copy).

Pairwise groups: the message is encrypted separately for every other member;
the signed event carries a salted commitment to the plaintext, and each
recipient checks its own ciphertext against it.

Open groups: no end-to-end encryption. The content is in clear inside the
signed event (only the channels' Noise encryption protects it on the wire);
anyone who may join, and every member's node, can read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from node.crypto import pairwise, sender_keys
from node.crypto.keys import IdentityKey, ed25519_to_x25519_public
from node.crypto.sender_keys import OwnSenderKey, SenderKeyState
from node.errors import DecryptError, RemoteProtocolError
from node.group.bodies import (
    History,
    OpenMessage,
    PairwiseMessage,
    PrivateMessage,
    SenderKey,
)
from node.group.content import Content, Post, decode_content, encode_content
from node.group.events import EventError, GroupId
from node.ids import PeerId
from node.wire.strict import pack

#: Where fresh key material, salts and nonces come from (injected: the core has no ``random``).
Rng = Callable[[int], bytes]


@dataclass(slots=True)
class Counters:
    """What one message cost its author (for the research harness)."""

    encryptions: int = 0
    signatures: int = 0
    bytes_out: int = 0


@dataclass(slots=True)
class OwnKey:
    epoch: int
    key: OwnSenderKey
    recipients: frozenset[PeerId]


@dataclass(slots=True)
class GroupKeys:
    """One group's key material on this node."""

    own: OwnKey | None = None
    peers: dict[tuple[PeerId, int], SenderKeyState] = field(default_factory=dict)


def private_ad(group: GroupId, author: PeerId, epoch: int, index: int) -> bytes:
    return pack([group, author, epoch, index])


def pairwise_ad(group: GroupId, author: PeerId, seq: int) -> bytes:
    return pack([group, author, seq])


def needs_rotation(keys: GroupKeys, members: set[PeerId]) -> bool:
    """Our current sender key reached someone who is no longer a member (or there is none)."""
    return keys.own is None or not keys.own.recipients <= members


def new_sender_key(
    keys: GroupKeys, me: PeerId, members: set[PeerId], rng: Rng, floor: int = 0
) -> tuple[OwnKey, SenderKey, dict[PeerId, bytes]]:
    """A fresh epoch (at least ``floor``): the new key, the SENDER_KEY body that hands it
    to every other member and each one's sealed copy."""
    epoch = max(floor, 0 if keys.own is None else keys.own.epoch + 1)
    own = OwnSenderKey.generate(rng)
    recipients = frozenset(m for m in members if m != me)
    body, copies = distribution(own, epoch, recipients, rng)
    return OwnKey(epoch, own, recipients), body, copies


def distribution(own: OwnSenderKey, epoch: int, recipients: frozenset[PeerId], rng: Rng
                 ) -> tuple[SenderKey, dict[PeerId, bytes]]:
    """A committed SENDER_KEY body for our current chain state, and that state sealed to
    each of ``recipients`` (their copies, which travel beside the event)."""
    state = own.receiver_state()
    salt = rng(sender_keys.COMMIT_SALT_LEN)
    copies = {}
    for member in sorted(recipients):
        try:
            copies[member] = sender_keys.seal_for(ed25519_to_x25519_public(member), state)
        except RemoteProtocolError:
            continue  # a member whose key is unusable cannot receive anything anyway
    body = SenderKey(epoch, own.signing_public, salt=salt,
                     commitment=sender_keys.commitment(state, salt))
    return body, copies


def history_for(member: PeerId, epochs: list[tuple[int, OwnSenderKey]]) -> History | None:
    """A HISTORY body giving ``member`` the starting state of each of our past epochs."""
    sealed = []
    for epoch, key in epochs:
        try:
            blob = sender_keys.seal_for(ed25519_to_x25519_public(member), key.receiver_state())
        except RemoteProtocolError:
            return None
        sealed.append((epoch, key.signing_public, blob))
    return History(member, tuple(sealed)) if sealed else None


def copy_of_start(member: PeerId, start: OwnSenderKey, body: SenderKey) -> bytes | None:
    """A fresh sealed copy for ``member`` of a committed SENDER_KEY of ours that handed out
    ``start`` (an epoch's starting state); None if ``body`` committed to another state."""
    state = start.receiver_state()
    if (not body.committed or body.salt is None or body.commitment is None
            or not sender_keys.matches(state, body.salt, body.commitment)):
        return None
    try:
        return sender_keys.seal_for(ed25519_to_x25519_public(member), state)
    except RemoteProtocolError:
        return None


def open_distribution(
    identity: IdentityKey, body: SenderKey, copy: bytes | None
) -> SenderKeyState | None:
    """Our chain state from a SENDER_KEY: in a committed body, from our ``copy`` (None if
    it has not reached us), which must match the commitment; in an inline body, from our
    entry (None if there is none). ``DecryptError`` if ours cannot be opened or does not
    match."""
    if body.committed:
        if copy is None:
            return None
        assert body.salt is not None and body.commitment is not None
        state = sender_keys.open_sealed(identity, copy, body.signing_public)
        if not sender_keys.matches(state, body.salt, body.commitment):
            raise DecryptError("sender key copy does not match the signed commitment")
        return state
    me = identity.peer_id
    for member, blob in body.keys:
        if member == me:
            return sender_keys.open_sealed(identity, blob, body.signing_public)
    return None


def _plaintext(content: str | Content) -> bytes:
    return encode_content(Post(content) if isinstance(content, str) else content)


def encrypt_private(
    own: OwnKey, group: GroupId, me: PeerId, content: str | Content, counters: Counters,
    rng: Rng,
) -> tuple[OwnKey, PrivateMessage]:
    index = own.key.index
    new_key, used, blob = sender_keys.encrypt(
        own.key, _plaintext(content), private_ad(group, me, own.epoch, index), rng
    )
    counters.encryptions += 1
    return OwnKey(own.epoch, new_key, own.recipients), PrivateMessage(used, blob)


def decrypt_private(
    state: SenderKeyState, group: GroupId, author: PeerId, epoch: int, body: PrivateMessage
) -> tuple[SenderKeyState, Content]:
    ad = private_ad(group, author, epoch, body.index)
    new_state, plaintext = sender_keys.decrypt(state, body.index, body.ciphertext, ad)
    try:
        return new_state, decode_content(plaintext)
    except EventError as exc:
        raise DecryptError(f"message decrypted to garbage: {exc}") from exc


def encrypt_pairwise(
    identity: IdentityKey, recipients: list[PeerId], group: GroupId, seq: int,
    content: str | Content, counters: Counters, rng: Rng,
) -> tuple[PairwiseMessage, dict[PeerId, bytes]]:
    plaintext = _plaintext(content)
    salt = pairwise.new_salt(rng)
    ad = pairwise_ad(group, identity.peer_id, seq)
    copies = {}
    for member in recipients:
        try:
            copies[member] = pairwise.encrypt_for(identity, member, plaintext, ad, rng)
        except RemoteProtocolError:
            continue
        counters.encryptions += 1
    return PairwiseMessage(salt, pairwise.commitment(plaintext, salt)), copies


def decrypt_pairwise(
    identity: IdentityKey, group: GroupId, author: PeerId, seq: int, body: PairwiseMessage,
    blob: bytes,
) -> Content:
    plaintext = pairwise.decrypt_from(identity, author, blob, pairwise_ad(group, author, seq))
    if not pairwise.verify_commitment(plaintext, body.salt, body.commitment):
        raise DecryptError("pairwise copy does not match the signed commitment")
    try:
        return decode_content(plaintext)
    except EventError as exc:
        raise DecryptError(f"message decrypted to garbage: {exc}") from exc


def read_open(body: OpenMessage) -> Content:
    """The content of an open group's message (in clear); DecryptError if it is garbage."""
    try:
        return decode_content(body.content)
    except EventError as exc:
        raise DecryptError(f"message content is garbage: {exc}") from exc
