"""The chat client's state: groups, handles, members, typing, notification decisions."""

from __future__ import annotations

from node.chat.model import BELL_INTERVAL, ChatModel, GroupInfo, should_notify
from tests.chat.helpers import BOB, GROUP, ME, group_view, member, message


def model_with(*events: dict[str, object], **group: object) -> ChatModel:
    model = ChatModel(me=ME, my_name="alice")
    model.set_groups([group_view(**group)])
    model.set_log(GROUP, list(events))
    model.set_members(GROUP, [member(ME, "alice", role="owner"), member(BOB, "bob")])
    return model


def test_first_group_is_selected_and_old_fields_default() -> None:
    model = ChatModel()
    model.set_groups([{"id": GROUP, "name": "team"}])  # a node without unread/muted/pinned
    g = model.current_group
    assert g is not None and g.id == GROUP
    assert (g.unread, g.muted, g.pinned, g.missing) == (0, False, [], {})


def test_handles_are_stable_when_a_late_message_is_ordered_before() -> None:
    m1, m2, late = message(1), message(2), message(3)
    model = model_with(m1, m2)
    assert model.handle_of(m1["id"]) == 1 and model.handle_of(m2["id"]) == 2
    model.set_log(GROUP, [m1, late, m2])
    assert model.handle_of(m2["id"]) == 2
    assert model.handle_of(late["id"]) == 3
    assert model.event_for(3) == late
    assert model.event_for(4) is None


def test_membership_events_get_no_handle() -> None:
    info: dict[str, object] = {"id": "f" * 64, "kind": "add", "info": "alice added bob",
                               "author": ME}
    model = model_with(info, message(1))
    assert model.handle_of("f" * 64) is None
    assert model.handle_of(message(1)["id"]) == 1


def test_log_for_another_group_is_ignored() -> None:
    model = model_with(message(1))
    model.set_log("ff" * 16, [message(9)])
    assert [e["id"] for e in model.events] == [message(1)["id"]]


def test_find_group_by_name_id_prefix_and_name_prefix() -> None:
    model = ChatModel()
    model.set_groups([group_view(), group_view(id="ab" * 16, name="lab")])
    assert model.find_group("team").id == GROUP  # type: ignore[union-attr]
    assert model.find_group("TEAM").id == GROUP  # type: ignore[union-attr]
    assert model.find_group("abab").name == "lab"  # type: ignore[union-attr]
    assert model.find_group("la").name == "lab"  # type: ignore[union-attr]
    assert model.find_group("nope") is None


def test_switching_groups_clears_the_conversation_and_wraps() -> None:
    model = model_with(message(1))
    model.set_groups([group_view(), group_view(id="ab" * 16, name="lab")])
    model.notice("hello")
    nxt = model.step_group(1)
    assert nxt == "ab" * 16
    model.switch(nxt)
    assert model.events == [] and model.notices == [] and model.members == []
    assert model.step_group(1) == GROUP


def test_typing_notice_expires_and_a_message_ends_it() -> None:
    model = model_with()
    typing = {"kind": "typing", "author": BOB, "author_name": "bob", "group": GROUP}
    assert model.on_stream_event(GROUP, typing, now=100.0) is None
    assert model.typing_now(GROUP, 101.0) == ["bob"]
    assert model.is_typing(BOB, 101.0)
    assert model.typing_now(GROUP, 200.0) == []
    model.on_stream_event(GROUP, typing, now=300.0)
    model.on_stream_event(GROUP, message(5), now=301.0)
    assert model.typing_now(GROUP, 301.0) == []


def test_a_message_ends_the_nodes_typing_flag_too() -> None:
    """Issue 15 item 7: the node's member view keeps "typing" a few seconds after the
    message; the message that arrived on the stream ends it at once, in both panes."""
    model = model_with()
    typing = {"kind": "typing", "author": BOB, "author_name": "bob", "group": GROUP}
    model.on_stream_event(GROUP, typing, now=100.0)
    model.set_members(GROUP, [member(ME, "alice"), member(BOB, "bob", typing=True)])
    bob = model.members[1]
    assert model.typing_now(GROUP, 100.5) == ["bob"] and model.member_typing(bob, 100.5)
    model.on_stream_event(GROUP, message(5), now=101.0)
    model.set_members(GROUP, [member(ME, "alice"), member(BOB, "bob", typing=True)])
    bob = model.members[1]
    assert model.typing_now(GROUP, 101.0) == []
    assert not model.member_typing(bob, 101.0)
    model.on_stream_event(GROUP, typing, now=102.0)  # typing again after the message
    assert model.typing_now(GROUP, 102.0) == ["bob"] and model.member_typing(bob, 102.0)


def test_own_typing_is_not_shown() -> None:
    model = model_with()
    model.on_stream_event(GROUP, {"kind": "typing", "author": ME, "author_name": "alice"}, 1.0)
    assert model.typing_now(GROUP, 1.0) == []


def test_members_typing_flag_counts_too() -> None:
    model = model_with()
    model.set_members(GROUP, [member(ME, "alice"), member(BOB, "bob", typing=True)])
    assert model.typing_now(GROUP, 0.0) == ["bob"]


# -- notifications ----------------------------------------------------------------


def test_notify_new_message_from_someone_else_in_unmuted_group() -> None:
    g = GroupInfo(id=GROUP, name="team")
    note = should_notify(message(1, text="yo"), g, ME)
    assert note is not None and (note.author, note.text, note.mention) == ("bob", "yo", False)


def test_no_notification_for_own_muted_or_other_kinds() -> None:
    g = GroupInfo(id=GROUP, name="team")
    assert should_notify(message(1, author=ME), g, ME) is None
    assert should_notify(message(1, mine=False, author=ME), g, ME) is None
    assert should_notify(message(1), GroupInfo(id=GROUP, name="t", muted=True), ME) is None
    assert should_notify({"kind": "reaction", "author": BOB, "target": "x"}, g, ME) is None
    assert should_notify(message(1, deleted=True, text=None), g, ME) is None
    assert should_notify(message(1, text=None), g, ME) is None


def test_mentions_notify_even_when_muted() -> None:
    muted = GroupInfo(id=GROUP, name="team", muted=True)
    note = should_notify(message(1, mentions_me=True), muted, ME)
    assert note is not None and note.mention


def test_a_burst_rings_once() -> None:
    model = model_with()
    assert model.on_stream_event(GROUP, message(1), now=10.0) is not None
    assert model.on_stream_event(GROUP, message(2), now=10.0 + BELL_INTERVAL / 2) is None
    assert model.on_stream_event(GROUP, message(3), now=10.0 + BELL_INTERVAL) is not None


def test_notification_follows_the_mute_flag_from_group_list() -> None:
    model = model_with(muted=True)
    assert model.on_stream_event(GROUP, message(1), now=1.0) is None
    model.set_groups([group_view(muted=False)])
    assert model.on_stream_event(GROUP, message(2), now=2.0) is not None
