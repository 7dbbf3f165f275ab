"""Message content (replies, edits, reactions, mentions) and the conversation fold."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.group.bodies import MAX_TEXT, decode_plaintext, encode_plaintext
from node.group.content import (
    Edit,
    Item,
    Post,
    React,
    decode_content,
    encode_content,
    fold_conversation,
)
from node.group.events import EventError, EventId
from node.ids import PeerId
from node.wire.strict import pack

A, B = PeerId(b"\xaa" * 32), PeerId(b"\xbb" * 32)


def eid(n: int) -> EventId:
    return EventId(bytes([n]) * 32)


ids = st.binary(min_size=32, max_size=32).map(EventId)
peers = st.lists(st.binary(min_size=32, max_size=32), max_size=5, unique=True).map(
    lambda xs: tuple(PeerId(x) for x in sorted(xs)))
texts = st.text(max_size=200)
contents = st.one_of(
    st.builds(Post, texts, st.none() | ids, peers),
    st.builds(Edit, ids, texts, peers),
    st.builds(React, ids, st.sampled_from(["👍", "ok", "🎉🎉", "x" * 16]), st.booleans()),
)


@given(contents)
def test_content_round_trips(content: Post | Edit | React) -> None:
    assert decode_content(encode_content(content)) == content


def test_plain_posts_keep_the_old_format_both_ways() -> None:
    assert encode_content(Post("hi")) == encode_plaintext("hi")
    assert decode_content(encode_plaintext("hi")) == Post("hi")
    assert decode_plaintext(encode_content(Post("hi"))) == "hi"


@pytest.mark.parametrize("obj", [
    [1, 2],
    {"text": 5},
    {"text": "x" * (MAX_TEXT + 1)},
    {"v": 3, "t": "post", "text": "x"},
    {"v": 2, "t": "post"},
    {"v": 2, "t": "post", "text": "x", "extra": 1},
    {"v": 2, "t": "post", "text": "x", "reply": b"short"},
    {"v": 2, "t": "post", "text": "x", "mentions": []},
    {"v": 2, "t": "post", "text": "x", "mentions": [b"\2" * 32, b"\1" * 32]},
    {"v": 2, "t": "edit", "text": "x"},
    {"v": 2, "t": "react", "target": b"\1" * 32, "emoji": "x" * 17, "remove": False},
    {"v": 2, "t": "react", "target": b"\1" * 32, "emoji": "", "remove": False},
    {"v": 2, "t": "react", "target": b"\1" * 32, "emoji": "\x1b[2J", "remove": False},
    {"v": 2, "t": "react", "target": b"\1" * 32, "emoji": "ok", "remove": 1},
    {"v": 2, "t": "shout", "text": "x"},
])
def test_malformed_content_is_refused(obj: object) -> None:
    with pytest.raises(EventError):
        decode_content(pack(obj))


def test_garbage_bytes_are_refused() -> None:
    with pytest.raises(EventError):
        decode_content(b"\xc1\xff")


def _saw_all(a: EventId, b: EventId) -> bool:
    return a[0] > b[0]  # in these tests an event sees every event with a smaller number


def test_edits_keep_history_and_only_the_author_edits() -> None:
    items = [Item(eid(1), A, Post("helo")),
             Item(eid(2), A, Edit(eid(1), "hello")),
             Item(eid(3), B, Edit(eid(1), "hijacked")),
             Item(eid(4), A, Edit(eid(1), "hello!"))]
    conv = fold_conversation(items, _saw_all, {})
    thread = conv.threads[eid(1)]
    assert thread.text == "hello!"
    assert [t for _, t in thread.edits] == ["helo", "hello"]
    assert conv.ignored == {eid(3): "only the author may edit a message"}
    assert conv.targets == {eid(2): eid(1), eid(4): eid(1)}


def test_reactions_add_and_remove_and_unknown_targets_are_ignored() -> None:
    items = [Item(eid(1), A, Post("lunch?")),
             Item(eid(2), B, React(eid(1), "👍")),
             Item(eid(3), A, React(eid(1), "👍")),
             Item(eid(4), B, React(eid(1), "👍", remove=True)),
             Item(eid(5), B, React(eid(9), "🎉")),
             Item(eid(6), B, React(eid(7), "🎉"))]  # eid(7) comes later: not in its past
    items.append(Item(eid(7), A, Post("later")))
    conv = fold_conversation(items, _saw_all, {})
    assert conv.threads[eid(1)].reactions == {"👍": [A]}
    assert "in its past" in conv.ignored[eid(5)] and "in its past" in conv.ignored[eid(6)]


def test_deleted_posts_lose_text_edits_and_reactions_but_replies_stay() -> None:
    items = [Item(eid(1), A, Post("secret")),
             Item(eid(2), A, Edit(eid(1), "more secret")),
             Item(eid(3), B, React(eid(1), "👀")),
             Item(eid(4), B, Post("what?", reply_to=eid(1)))]
    conv = fold_conversation(items, _saw_all, {eid(1): B})
    thread = conv.threads[eid(1)]
    assert (thread.text, thread.edits, thread.reactions, thread.deleted_by) == (None, [], {}, B)
    assert conv.threads[eid(4)].reply_to == eid(1)
    assert conv.ignored[eid(2)] == conv.ignored[eid(3)] == "its message was deleted"
