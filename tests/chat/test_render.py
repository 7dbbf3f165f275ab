"""What the panes show: rows, marks, quotes, reactions, gaps, presence, escaping."""

from __future__ import annotations

from node.chat.model import ChatModel
from node.chat.render import (
    conversation_lines,
    delivery_mark,
    group_lines,
    header_text,
    member_lines,
)
from tests.chat.helpers import BOB, CAROL, GROUP, ME, group_view, member, message


def clock(t: float) -> str:
    return f"t{int(t)}"


def model_with(*events: dict[str, object], **group: object) -> ChatModel:
    model = ChatModel(me=ME, my_name="alice")
    model.set_groups([group_view(**group)])
    model.set_log(GROUP, list(events))
    model.set_members(GROUP, [member(ME, "alice", role="owner"), member(BOB, "bob"),
                              member(CAROL, "carol", presence="offline", last_seen=7.0)])
    return model


def texts(model: ChatModel, now: float = 0.0) -> list[str]:
    return [text for _, text in conversation_lines(model, now, clock)]


def test_message_row_has_handle_time_author_text() -> None:
    model = model_with(message(1, text="hello", time=5.0))
    assert texts(model) == [" [1] t5 bob: hello"]


def test_escape_sequences_in_text_names_and_reactions_are_escaped() -> None:
    evil = message(1, text="\x1b[2Jgone", author_name="b\x1b]0;x\x07",
                   reactions={"\x1b[31m": ["\x9bm"]},
                   reply_to="00", reply_preview={"author_name": "\x1bq", "text": "\x07"})
    model = model_with(evil, missing={"\x1b[5m": 2})
    out = "\n".join(texts(model))
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "\\x1b[2Jgone" in out and "b\\x1b]0;x\\x07" in out
    assert "\\x1b[31m \\x9bm" in out
    assert "2 event(s) from \\x1b[5m not yet received" in out
    model.set_groups([group_view(name="t\x1b[H")])
    assert "\x1b" not in "".join(t for _, t in group_lines(model)) + header_text(model)


def test_delivery_and_read_marks_on_own_messages_only() -> None:
    model = model_with(message(1, author=ME, state="pending"),
                       message(2, author=ME, state="sent"),
                       message(3, author=ME, state="delivered", read_by=[BOB, CAROL]),
                       message(4))
    lines = texts(model)
    assert lines[0].endswith("alice: hi [pending]")
    assert lines[1].endswith("[sent]")
    assert lines[2].endswith("[read by bob, carol]")
    assert lines[3].endswith("bob: hi")
    assert delivery_mark(model, message(5, author=ME, read_by=["z" * 56])) == "[read by zzzzzzzz]"


def test_reply_is_quoted_above_and_edits_pins_reactions_are_marked() -> None:
    original = message(1, text="lunch?")
    reply = message(2, author=ME, text="yes", reply_to=original["id"], edited=True, pinned=True,
                    reply_preview={"author_name": "bob", "text": "lunch?"},
                    reactions={"👍": ["bob", "carol"], "🎉": []})
    lines = texts(model_with(original, reply))
    assert lines[1].strip() == "┌ bob: lunch?"
    assert lines[2] == " [2] t0 alice: yes (edited) [pinned] [delivered]"
    assert lines[3].strip() == "👍 bob, carol"


def test_long_quote_is_shortened_and_unknown_reply_target_said() -> None:
    lines = texts(model_with(
        message(1, reply_to="ab", reply_preview={"author_name": "x", "text": "y" * 200}),
        message(2, reply_to="cd")))
    assert lines[0].endswith("…") and len(lines[0]) < 100
    assert "reply to a message not shown here" in lines[2]


def test_deleted_and_undecryptable() -> None:
    lines = texts(model_with(message(1, text=None, deleted=True, deleted_by="carol"),
                             message(2, text=None)))
    assert lines[0] == " [1] t0 bob: (message deleted by carol)"
    assert lines[1] == " [2] t0 bob: [cannot decrypt: sent before you joined]"


def test_membership_event_line() -> None:
    view = {"id": "e" * 64, "kind": "add", "info": "alice added bob as member", "time": 3.0}
    assert texts(model_with(view)) == ["     t3 * alice added bob as member"]


def test_gap_marker_per_author() -> None:
    lines = texts(model_with(message(1), missing={"carol": 3, "bob": 1}))
    assert lines[-2:] == ["     ... 1 event(s) from bob not yet received",
                          "     ... 3 event(s) from carol not yet received"]


def test_typing_line_and_notices_at_the_end() -> None:
    model = model_with(message(1))
    model.saw_typing(GROUP, CAROL, "carol", 10.0)
    model.notice("a notice")
    assert texts(model, now=11.0)[-2:] == ["     carol is typing…", "a notice"]


def test_group_list_unread_muted_current() -> None:
    model = model_with()
    model.set_groups([group_view(unread=4), group_view(id="ab" * 16, name="lab", unread=2,
                                                       muted=True)])
    lines = group_lines(model)
    assert lines[1] == ("current", "> team")  # no count for the group on screen
    assert lines[2] == ("unread", "  lab (2) [muted]")


def test_members_presence_last_seen_typing() -> None:
    model = model_with()
    model.saw_typing(GROUP, BOB, "bob", 0.0)
    out = [t for _, t in member_lines(model, now=1.0, clock=clock)]
    assert out[0] == "Members (3)"
    assert out[1:3] == ["● alice owner", "    you"]
    assert out[3:5] == ["● bob", "    typing…"]
    assert out[5:7] == ["○ carol", "    offline, seen t7"]


def test_no_group_yet_says_what_to_do() -> None:
    assert "/create NAME" in texts(ChatModel())[0]


def test_pinned_messages_are_listed_above() -> None:
    model = model_with(message(1, text="rules: be nice\x1b[5m", pinned=True), message(2),
                       pinned=[message(1)["id"], "9" * 64])
    lines = texts(model)
    assert lines[0] == "pinned [1] bob: rules: be nice\\x1b[5m"
    assert lines[1].endswith("bob: rules: be nice\\x1b[5m [pinned]")


def test_a_file_without_a_caption_says_so() -> None:
    file = {"name": "talk.pdf", "size": 2048, "state": "complete", "have": 1, "chunks": 1}
    model = model_with(message(1, text="", time=5.0, file=file))
    shown = texts(model)
    assert shown[0] == " [1] t5 bob: sent a file"
    assert "talk.pdf" in shown[1]


def test_line_breaks_start_new_rows_and_other_controls_stay_escaped() -> None:
    model = model_with(message(1, text="first line\nsecond \x1b[2J line\r\nthird", time=5.0))
    assert texts(model) == [" [1] t5 bob: first line",
                            "       second \\x1b[2J line\\r",
                            "       third"]
