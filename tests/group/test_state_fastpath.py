"""GroupCore's shortcuts give exactly the answers of the full computation.

* the membership of an event's causal past (``_state_at``: the current state, or
  a remembered fold) equals the fold of the membership events it saw;
* the membership kept up to date one step at a time (``fold_next``) equals the
  fold of every membership event;
* each signature is checked once, whether its event waits in the buffer or not.

Random histories with concurrent membership changes by several admins (and the
histories of ``test_core``), delivered in random orders with duplicates.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto.keys import IdentityKey
from node.group.bodies import (
    Add,
    Approve,
    Ban,
    Body,
    Create,
    Join,
    Leave,
    Mute,
    OpenMessage,
    Remove,
    Rename,
    Role,
    SetPolicy,
    SetRole,
    Unban,
    encode_body,
    group_id_for,
    kind_of,
)
from node.group.content import Post, encode_content
from node.group.events import Event
from node.group.membership import Membership, MembershipEvent, fold
from node.group.state import Clock, Delivered, GroupCore
from node.ids import PeerId
from node.testing.groups import Replica
from tests.group.test_core import _scenario

KEYS = [IdentityKey(bytes([i]) * 32) for i in range(40, 48)]


class CheckedCore(GroupCore):
    """A core that checks every shortcut against the full computation as it goes."""

    checked_pasts = 0

    def _state_at(self, clock: Clock, author: PeerId, seq: int, first: int) -> Membership:
        fast = super()._state_at(clock, author, seq, first)

        def seen(m: MembershipEvent) -> bool:
            return m.seq <= (seq - 1 if m.author == author else clock.get(m.author, 0))

        events = self._membership_events
        assert all(seen(m) for m in events[:first])
        assert first == len(events) or not seen(events[first])
        assert fast == fold([m for m in events if seen(m)])
        self.checked_pasts += 1
        return fast

    def receive(self, event: Event) -> list:  # type: ignore[type-arg]
        effects = super().receive(event)
        assert self.state == fold(self._membership_events)
        assert len(self._buffer._verified) <= len(self._buffer)
        return effects


def _author(replica: Replica, body: Body) -> Event | None:
    """``replica`` makes an event with ``body`` if its own core accepts it, else None."""
    core = replica.core
    unsigned = core.next_event(replica.peer_id, replica.epoch, kind_of(body), encode_body(body))
    event = unsigned.signed(bytes(replica.key.signing_key.sign(unsigned.signing_bytes()).signature))
    if any(isinstance(e, Delivered) for e in core.receive(event)):
        return event
    return None


def _membership_history(seed: int, mode: str) -> tuple[GroupCore, list[Event]]:
    """Several admins and members change the membership concurrently, and talk; in an
    open group strangers join, admins approve and unban."""
    rng = random.Random(seed)
    nonce = rng.randbytes(16)
    owner = Replica(KEYS[0], group_id_for(KEYS[0].peer_id, nonce))
    policy = rng.choice(["whitelist", "blacklist"]) if mode == "open" else ""
    owner.author(Create("test", mode, nonce, 500, policy=policy))
    replicas = [owner] + [Replica(k, owner.core.group_id) for k in KEYS[1:]]
    for key in KEYS[1:4]:
        owner.author(Add(key.peer_id, Role.MEMBER, ""))
    owner.author(SetRole(KEYS[1].peer_id, Role.ADMIN))
    for r in replicas[1:4]:
        r.receive(*owner.core.ordered())
    for _ in range(40):
        a, b = rng.sample(replicas, 2)
        if rng.random() < 0.5:  # syncs now and then, some partial: concurrent changes
            theirs = b.core.ordered()
            a.receive(*rng.sample(theirs, k=rng.choice([len(theirs), len(theirs) // 2])))
        state = a.core.state
        if a.peer_id not in state.members:
            if mode == "open" and rng.random() < 0.3:
                a.receive(*owner.core.ordered())
                _author(a, Join("me"))
            continue
        others = [p for p in state.members if p != a.peer_id] or [a.peer_id]
        strangers = [k.peer_id for k in KEYS if k.peer_id not in state.members]
        member, stranger = rng.choice(others), rng.choice(strangers or others)
        body = rng.choices([
            Add(stranger, rng.choice([Role.MEMBER, Role.GUEST, Role.ADMIN]), "x"),
            None, Remove(member), Ban(rng.choice([member, stranger])), Leave(),
            SetRole(member, rng.choice(list(Role))),
            Rename(f"n{rng.randrange(9)}"), SetPolicy(rng.choice(["members", "admins"])),
            Mute(member, rng.random() < 0.6), Approve(stranger, rng.random() < 0.8),
            Unban(rng.choice([*state.banned, stranger])),
        ], weights=[30, 25, 8, 6, 3, 10, 6, 4, 9, 8 if policy else 0, 5 if policy else 0])[0]
        if body is None and mode == "open":
            _author(a, OpenMessage(encode_content(Post("hi"))))
        elif body is None:
            if state.members[a.peer_id] is not Role.GUEST and a.peer_id not in state.muted():
                a.say("hi")  # messages are delivered against the state of their past
        else:
            _author(a, body)
    events = {e.id: e for r in replicas for e in r.core.ordered()}
    return owner.core, list(events.values())


def _deliver_shuffled(core: GroupCore, events: list[Event], rng: random.Random) -> None:
    stream = events + rng.sample(events, k=len(events) // 3)
    rng.shuffle(stream)
    for e in stream:
        core.receive(e)
    for e in events:
        core.receive(e)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 100_000), order=st.integers(0, 100_000),
       mode=st.sampled_from(["private", "pairwise", "open"]))
def test_shortcuts_equal_the_full_fold_over_random_histories(seed: int, order: int, mode: str
                                                             ) -> None:
    reference, events = _membership_history(seed, mode)
    core = CheckedCore(reference.group_id)
    _deliver_shuffled(core, events, random.Random(order))
    assert {e.id for e in core.ordered()} == {e.id for e in events}
    assert core.checked_pasts >= len(events)
    assert not core._buffer._verified and len(core._buffer) == 0


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), order=st.integers(0, 10_000))
def test_shortcuts_equal_the_full_fold_over_core_scenarios(seed: int, order: int) -> None:
    replicas, events = _scenario(seed)  # test_core's histories: messages and removals
    core = CheckedCore(replicas[0].core.group_id)
    _deliver_shuffled(core, events, random.Random(order))
    assert len(core.ordered()) == len(events)


def test_concurrent_pasts_are_folded_once_and_remembered() -> None:
    owner, create = Replica.founding(KEYS[0], mode="pairwise")
    member = Replica(KEYS[1], owner.core.group_id)
    member.receive(create, owner.author(Add(KEYS[1].peer_id, Role.MEMBER, "")))
    owner.author(Rename("concurrent"))  # the member's messages below have not seen this
    said = [member.say(f"m{i}") for i in range(5)]
    core = CheckedCore(owner.core.group_id)
    for e in owner.core.ordered():
        core.receive(e)
    for e in said:
        core.receive(e)
    assert len(core._past_states) == 1  # one past shared by the five messages
    [past] = core._past_states.values()
    assert past.name == "test" and core.state.name == "concurrent"


def test_a_signature_is_checked_once_even_when_its_event_waited() -> None:
    owner, create = Replica.founding(KEYS[0], mode="pairwise")
    history = [create] + [owner.author(Add(k.peer_id, Role.MEMBER, "")) for k in KEYS[1:4]]
    history += [owner.say(f"m{i}") for i in range(4)]
    core = GroupCore(owner.core.group_id)
    checked: list[Event] = []
    check = core._signature_ok

    def counting(event: Event) -> bool | None:
        verdict = check(event)
        if verdict is not None:  # None: no key to check with yet (messages before the CREATE)
            checked.append(event)
        return verdict

    core._signature_ok = counting  # type: ignore[method-assign]
    for e in reversed(history):  # all but the CREATE wait for their past
        core.receive(e)
    for e in history:  # duplicates, delivered or waiting: not checked again
        core.receive(e)
    assert len(core.ordered()) == len(history)
    assert sorted(e.id for e in checked) == sorted(e.id for e in history)
    assert not core._buffer._verified


def test_a_copy_evolves_on_its_own() -> None:
    owner, _ = Replica.founding(KEYS[0], mode="private")
    owner.author(Add(KEYS[1].peer_id, Role.MEMBER, ""))
    owner.say("a")  # a SENDER_KEY, then the message
    history = owner.core.ordered()
    later = [owner.author(Add(KEYS[2].peer_id, Role.MEMBER, "")), owner.say("b")]
    core = GroupCore(owner.core.group_id)
    for e in [*history, later[1]]:  # the last one waits for its past
        core.receive(e)
    twin = core.copy()
    assert twin.ordered() == core.ordered() and twin.waiting() == core.waiting()
    assert twin.state == core.state and twin.signing_keys == core.signing_keys
    # every container is the copy's own (a field added to GroupCore must be copied too)
    fresh = vars(GroupCore(core.group_id))
    assert vars(twin).keys() == fresh.keys()
    for name, value in vars(twin).items():
        if name == "memo":  # shared on purpose: derived from the (shared) states, tagged
            assert value is core.memo
        elif isinstance(value, dict | list | set):
            assert value is not vars(core)[name], name
    assert twin._buffer is not core._buffer  # and so are the waiting events'
    for name, value in vars(twin._buffer).items():
        if isinstance(value, dict | list | set):
            assert value is not vars(core._buffer)[name], name
    core.receive(later[0])
    assert len(core.ordered()) == 6 and len(twin.ordered()) == 4
    assert KEYS[2].peer_id in core.state.members and KEYS[2].peer_id not in twin.state.members
    assert twin.waiting() == [later[1]] and not core.waiting()
    twin.receive(later[0])
    assert [e.id for e in twin.ordered()] == [e.id for e in core.ordered()]
    assert twin.state == core.state


def test_a_departure_reaching_back_to_a_concurrent_add_is_folded_in_full() -> None:
    # An admin bans a peer while the owner adds it: remove wins, whatever the order.
    # The ban comes last in the total order, yet one step would let the add stand.
    owner, _ = Replica.founding(KEYS[0], mode="pairwise")
    admin = Replica(KEYS[1], owner.core.group_id)
    owner.author(Add(KEYS[1].peer_id, Role.ADMIN, ""))
    history = owner.core.ordered()
    admin.receive(*history)
    add = owner.author(Add(KEYS[2].peer_id, Role.MEMBER, "x"))
    admin.author(Rename("a"))  # a later Lamport number for the ban
    ban = admin.author(Ban(KEYS[2].peer_id))
    assert ban.order_key > add.order_key
    core = CheckedCore(owner.core.group_id)
    for e in [*history, add, *admin.core.ordered()[len(history):]]:
        core.receive(e)
    assert KEYS[2].peer_id not in core.state.members and KEYS[2].peer_id in core.state.banned
    assert KEYS[2].peer_id not in core.state.labels  # the add had no effect at all
