"""Fakes for group tests, benchmarks and the simulator: replicas that author signed events.

A ``Replica`` is one member's ``GroupCore`` plus its identity key. It signs
its events with the identity key; in private groups it also keeps a sender
key per epoch (it publishes the signing half in a SENDER_KEY event, with no
sealed chain keys: the core does not decrypt) so that its messages verify.

The simulator (``node.sim``) wraps a ``Replica`` with real keys: it passes the
founding nonce (so a seed fixes the group id) and signs private messages with
its own sender key (``author_effects(body, sign=...)``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import nacl.signing

from node.crypto.keys import IdentityKey
from node.group.bodies import (
    Body,
    Create,
    PairwiseMessage,
    PrivateMessage,
    SenderKey,
    encode_body,
    group_id_for,
    kind_of,
)
from node.group.events import Event, GroupId
from node.group.state import Delivered, Effect, GroupCore
from node.ids import PeerId


class Replica:
    def __init__(self, key: IdentityKey, group: GroupId) -> None:
        self.key = key
        self.core = GroupCore(group)
        self.epoch = 0
        self._sender_keys: dict[int, nacl.signing.SigningKey] = {}

    @property
    def peer_id(self) -> PeerId:
        return self.key.peer_id

    @classmethod
    def founding(
        cls, key: IdentityKey, name: str = "test", mode: str = "private", max_members: int = 500,
        nonce: bytes | None = None,
    ) -> tuple[Replica, Event]:
        nonce = os.urandom(16) if nonce is None else nonce
        replica = cls(key, group_id_for(key.peer_id, nonce))
        event = replica.author(Create(name, mode, nonce, max_members))
        return replica, event

    def author(self, body: Body) -> Event:
        """Sign, deliver locally and return the next event with ``body``."""
        return self.author_effects(body)[0]

    def author_effects(
        self, body: Body, *, sign: Callable[[bytes], bytes] | None = None
    ) -> tuple[Event, list[Effect]]:
        """Like ``author``, also returning what delivering it locally did; ``sign`` (if
        given) signs instead of the identity key or this replica's own sender key."""
        unsigned = self.core.next_event(self.peer_id, self.epoch, kind_of(body), encode_body(body))
        if sign is None:
            signer = self.key.signing_key
            if isinstance(body, PrivateMessage):
                signer = self._sender_keys[unsigned.epoch]
            signature = bytes(signer.sign(unsigned.signing_bytes()).signature)
        else:
            signature = sign(unsigned.signing_bytes())
        event = unsigned.signed(signature)
        effects = self.core.receive(event)
        assert any(isinstance(e, Delivered) for e in effects), effects
        return event, effects

    def new_sender_key(self) -> Event:
        """Start a new epoch with a fresh sender key (SENDER_KEY event)."""
        if self._sender_keys:
            self.epoch += 1
        signing = nacl.signing.SigningKey.generate()
        self._sender_keys[self.epoch] = signing
        return self.author(SenderKey(self.epoch, bytes(signing.verify_key), ()))

    def say(self, text: str) -> Event:
        """A MESSAGE event (the test core never decrypts, so the ciphertext is the text)."""
        if self.core.mode == "pairwise":
            return self.author(PairwiseMessage(os.urandom(16), os.urandom(32)))
        if self.epoch not in self._sender_keys:
            self.new_sender_key()
        return self.author(PrivateMessage(0, text.encode()))

    def receive(self, *events: Event) -> list[Effect]:
        effects: list[Effect] = []
        for event in events:
            effects += self.core.receive(event)
        return effects
