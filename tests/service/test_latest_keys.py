"""A batch stores a sender's chain state once: the last of the burst (an upsert each)."""

from __future__ import annotations

import random

from node.crypto.keys import IdentityKey
from node.crypto.sender_keys import OwnSenderKey
from node.group.events import GroupId
from node.group.member import Member
from node.group.member_io import Effect, SaveOwnKey, SavePeerKey, SetName
from node.group.state import GroupCore
from node.ids import PeerId
from node.service.driver import _latest_keys


def test_only_the_last_key_state_of_each_chain_is_written() -> None:
    rng = random.Random(1)
    member = Member(IdentityKey(rng.randbytes(32)), GroupCore(GroupId(b"\x01" * 32)),
                    rng.randbytes)
    a, b = PeerId(b"\x02" * 32), PeerId(b"\x03" * 32)
    own = OwnSenderKey.generate(rng.randbytes)
    state = own.receiver_state()
    rows: list[tuple[Member, Effect]] = [
        (member, SavePeerKey(a, 0, state)),  # replaced by row 3
        (member, SaveOwnKey(0, own, frozenset())),  # replaced by row 5
        (member, SetName("kept")),
        (member, SavePeerKey(a, 0, state)),
        (member, SavePeerKey(a, 1, state)),  # another epoch: its own chain
        (member, SaveOwnKey(0, own, frozenset({b}))),
        (member, SavePeerKey(b, 0, state)),
    ]
    kept = _latest_keys(rows)
    assert kept == [rows[i] for i in (2, 3, 4, 5, 6)]  # in their order
    assert _latest_keys(kept) == kept  # nothing left to replace
