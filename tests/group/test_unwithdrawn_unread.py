"""Regression (found by the member machine): a pairwise message stored while its author
looked banned (withdrawn), then no longer withdrawn (the ban lost to a conflicting one),
is reported ``unread`` to its author, who sends the copy: every member reads it."""

from __future__ import annotations

from node.group.events import Kind
from tests.group.test_member_machine import MemberProtocol


def test_a_message_no_longer_withdrawn_gets_its_copy() -> None:
    m = MemberProtocol()
    m.found(n=4, seed=0, mode="pairwise")
    m.crash_and_restart(i=0)
    m.send(i=2)
    m.send(i=3)
    m.ban(i=1, j=2)
    m.ban(i=2, j=3)  # withdrawn: m2 was banned first
    m.heal()  # (checks that every member reads what it is entitled to)
    owner = m.c.members[m.c.ids[0]]
    author = m.c.ids[3]
    [message] = [e for e in owner.core.ordered()
                 if e.kind is Kind.MESSAGE and e.author == author]
    assert owner.texts.get(message.id) is not None
