"""``Member.conversation`` folds incrementally and always equals the fold from scratch."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto.keys import IdentityKey
from node.group.bodies import Add, Role
from node.group.content import Content, Conversation, Edit, Item, Post, React, fold_conversation
from node.group.events import Event, EventId, Kind
from node.group.member import Member
from node.group.state import GroupCore
from node.testing.groups import Replica

KEYS = [IdentityKey.generate() for _ in range(3)]
EMOJI = ("👍",)  # one emoji: concurrent reactions collide, so their order matters


def _history(seed: int) -> tuple[list[Event], dict[EventId, Content]]:
    """Three members posting, editing and reacting, partly concurrently."""
    rng = random.Random(seed)
    owner, create = Replica.founding(KEYS[0], mode="private")
    events = [create] + [owner.author(Add(k.peer_id, Role.MEMBER, "")) for k in KEYS[1:]]
    replicas = [owner]
    for key in KEYS[1:]:
        replica = Replica(key, owner.core.group_id)
        replica.receive(*events)
        replicas.append(replica)
    contents: dict[EventId, Content] = {}
    for step in range(24):
        i = rng.randrange(3)
        me = replicas[i]
        seen = [e for e in me.core.ordered()
                if e.kind is Kind.MESSAGE and isinstance(contents.get(e.id), Post)]
        choice = rng.random()
        event = me.say(f"m{step}")
        if seen and choice < 0.25:
            mine = [e for e in seen if e.author == me.peer_id]
            if mine:
                contents[event.id] = Edit(rng.choice(mine).id, f"edited {step}")
            else:
                contents[event.id] = React(rng.choice(seen).id, rng.choice(EMOJI))
        elif seen and choice < 0.6:  # mostly the first post: concurrent reactions meet
            target = seen[0] if rng.random() < 0.7 else rng.choice(seen)
            contents[event.id] = React(target.id, rng.choice(EMOJI), remove=rng.random() < 0.3)
        else:
            contents[event.id] = Post(f"post {step}")
        events.extend(e for e in me.core.ordered() if e not in events)
        if rng.random() < 0.5:  # sometimes everyone catches up; otherwise concurrency
            for other in replicas:
                other.receive(*[e for e in events if not other.core.has(e.author, e.seq)])
    return events, contents


def _expected(core: GroupCore, contents: dict[EventId, Content]) -> Conversation:
    items = [Item(e.id, e.author, contents.get(e.id)) for e in core.ordered()
             if e.kind is Kind.MESSAGE and not core.is_withdrawn(e.author, e.seq)]
    return fold_conversation(items, core.saw, {t: d.author for t, d in core.deleted.items()})


def _shape(conv: Conversation) -> object:
    return ({k: (t.text, t.edits, t.edit_ids, t.reactions) for k, t in conv.threads.items()},
            conv.targets, conv.ignored)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), order_seed=st.integers(0, 10_000))
def test_incremental_conversation_equals_the_full_fold(seed: int, order_seed: int) -> None:
    events, contents = _history(seed)
    rng = random.Random(order_seed)
    stream = list(events)
    rng.shuffle(stream)
    core = GroupCore(events[0].group)
    group = Member(IdentityKey.generate(), core, random.randbytes)
    for event in stream:
        before = core.delivered_count()
        core.receive(event)
        for new in core.delivered_since(before):
            if new.id in contents:
                group.set_new_content(new.id, contents[new.id])
        if rng.random() < 0.7:  # the service asks at arbitrary moments
            assert _shape(group.conversation()) == _shape(_expected(core, contents))
    assert core.delivered_count() == len(events)
    assert _shape(group.conversation()) == _shape(_expected(core, contents))


def test_a_content_set_after_its_event_was_folded_refolds() -> None:
    events, contents = _history(7)
    core = GroupCore(events[0].group)
    group = Member(IdentityKey.generate(), core, random.randbytes)
    for event in events:
        core.receive(event)
    group.conversation()  # everything folded as unreadable
    for event_id, content in contents.items():
        group.set_new_content(event_id, content)
    assert _shape(group.conversation()) == _shape(_expected(core, contents))


def test_concurrent_reactions_list_reactors_in_the_total_order_whatever_arrives_first() -> None:
    owner, create = Replica.founding(KEYS[0], mode="private")
    history = [create] + [owner.author(Add(k.peer_id, Role.MEMBER, "")) for k in KEYS[1:]]
    bob, carol = (Replica(k, owner.core.group_id) for k in KEYS[1:])
    post = owner.say("lunch?")
    history += [e for e in owner.core.ordered() if e not in history]
    bob.receive(*history)
    carol.receive(*history)
    contents: dict[EventId, Content] = {post.id: Post("lunch?")}
    reactions = []
    for member in (bob, carol):  # concurrent: neither has seen the other's
        event = member.say("+1")
        contents[event.id] = React(post.id, "👍")
        reactions.append(event)
    keys = [e for e in bob.core.ordered() + carol.core.ordered() if e.author != owner.peer_id]
    first, second = sorted(reactions, key=lambda e: e.order_key)

    core = GroupCore(owner.core.group_id)
    group = Member(IdentityKey.generate(), core, random.randbytes)
    for event in history + [k for k in keys if k.kind is Kind.SENDER_KEY]:
        core.receive(event)
    for event_id, content in contents.items():
        if core.get(event_id) is not None:
            group.set_new_content(event_id, content)
    for event in (second, first):  # the later one in the order arrives first
        core.receive(event)
        group.set_new_content(event.id, contents[event.id])
        group.conversation()
    thread = group.conversation().threads[post.id]
    assert thread.reactions == {"👍": [first.author, second.author]}
    assert _shape(group.conversation()) == _shape(_expected(core, contents))
