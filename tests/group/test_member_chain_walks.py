"""Sender-key chain walks are bounded in CPU per event and per sender (issue 12, item 11).

An insider signs (with its own sender key, so the log takes them) messages whose index is
just under the jump limit and whose tag is wrong: each used to cost a 25,000-step walk,
repeatable at will. Now one message walks at most MAX_JUMP steps and one sender's messages
at most WALK_BURST steps at once and WALK_RATE a second after that.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from node.crypto import sender_keys
from node.crypto.sender_keys import MAX_JUMP
from node.group import commands as C
from node.group.bodies import PrivateMessage
from node.group.member_state import WALK_BURST, WALK_RATE
from tests.group.test_member_bad_input import (
    feed,
    forge,
    scene,
    sender_key,
    still_talking,
    warnings,
)


def test_repeated_long_jumps_with_bad_tags_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    c, alice, bob, mallory = scene()
    first = c.do(mallory, C.SendText("index 0"))
    c.settle()
    victim = c.members[alice]
    assert victim.texts[first.id] == "index 0"
    steps: list[int] = []
    real: Callable[[bytes], bytes] = sender_keys.next_chain_key

    def counted(ck: bytes) -> bytes:
        steps.append(1)
        return real(ck)

    monkeypatch.setattr(sender_keys, "next_chain_key", counted)
    jump = MAX_JUMP - 1
    lines = []
    for _ in range(20):  # each one signed, so each one is a valid event in the log
        bad = forge(c.members[mallory].core.copy(), mallory,
                    PrivateMessage(1 + jump, c.rng.randbytes(64)), sender_key(c, mallory))
        c.members[mallory].core.receive(bad)  # (her own core, so the next one follows it)
        lines += warnings(feed(c, alice, mallory, bad))
        assert victim.texts[bad.id] is None
    assert len(steps) <= WALK_BURST  # not 20 x 5,000
    assert sum("over this sender's budget" in line for line in lines) >= 20 - WALK_BURST // jump
    # as time passes the budget comes back, at WALK_RATE steps a second
    steps.clear()
    c.now += 10
    for _ in range(20):
        bad = forge(c.members[mallory].core.copy(), mallory,
                    PrivateMessage(1 + jump, c.rng.randbytes(64)), sender_key(c, mallory))
        c.members[mallory].core.receive(bad)
        feed(c, alice, mallory, bad)
    assert len(steps) <= 10 * WALK_RATE
    monkeypatch.undo()
    # the group goes on; bob was not charged for mallory's walks
    c.settle()
    still_talking(c, alice, bob)
