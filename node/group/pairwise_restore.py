"""Fresh pairwise copies for a restored member (pure).

Theory of operation
-------------------
In a pairwise group the author encrypts each message separately for every
member it believes in at that moment, and only the author holds the copies
(docs/protocol.md section 13). After a partition, conflicting removals (two
admins removing each other, say) resolve so that one of them stays, although
some authors had already seen it removed and sent messages without a copy
for it: it stores those messages (they are in the one order) but can never
read them. There is no sender key to hand over; the author re-encrypts
instead.

When the member core sees a peer become a member again *without* an event
that admits it (``Authoring.restore``), each author calls ``owed_copies``:
for every message of its own that the peer is entitled to (it has the
peer's latest admission in its causal past), that is not deleted or
withdrawn, and for which the author holds no copy for the peer, it encrypts
the stored content for the peer again, with the message's own ``ad`` (group,
author, seq). The plaintext must match the signed commitment (it always does
for content we encoded ourselves; a mismatch is skipped, never sent). At most
``MAX_RESTORED`` messages, the most recent, are re-encrypted per restore, so a
long partition costs a bounded burst. The copies are persisted with the
author's other copies and pushed with the events like any outbox push; the
receiver reads them as late copies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from node.crypto import pairwise
from node.crypto.keys import IdentityKey
from node.errors import RemoteProtocolError
from node.group.bodies import PairwiseMessage, decode_body
from node.group.content import Content, encode_content
from node.group.events import Event, EventError, EventId, GroupId, Kind
from node.group.keys import pairwise_ad
from node.ids import PeerId

#: Most of our messages re-encrypted for one restored member at once (the most recent).
MAX_RESTORED = 1000


def owed_copies(
    identity: IdentityKey, group: GroupId, peer: PeerId, owed: Iterable[Event],
    contents: Mapping[EventId, Content | None],
    held: Mapping[EventId, Mapping[PeerId, bytes]], rng: Callable[[int], bytes],
) -> list[tuple[Event, bytes]]:
    """A fresh copy for ``peer`` of each of ``owed`` (our messages it is entitled to, in
    order) that has none yet and whose content we still have; at most ``MAX_RESTORED``."""
    missing = [e for e in owed
               if e.kind is Kind.MESSAGE and e.author == identity.peer_id
               and peer not in held.get(e.id, {}) and contents.get(e.id) is not None]
    out = []
    for event in missing[-MAX_RESTORED:]:
        content = contents[event.id]
        assert content is not None
        try:
            body = decode_body(Kind.MESSAGE, event.body, mode="pairwise")
        except EventError:
            continue
        plaintext = encode_content(content)
        if not isinstance(body, PairwiseMessage) or not pairwise.verify_commitment(
                plaintext, body.salt, body.commitment):
            continue
        try:
            blob = pairwise.encrypt_for(identity, peer, plaintext,
                                        pairwise_ad(group, event.author, event.seq), rng)
        except RemoteProtocolError:
            continue  # (an identity without a usable X25519 key: it had no copy either)
        out.append((event, blob))
    return out
