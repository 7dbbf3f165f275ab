"""The groups pane at 120, 100 and 80 columns: a row never wraps, ``[muted]`` stays on
the name's row (issue 15: ``[muted]`` wrapped in the 100-column pane), and the ``[N]``
numbers chat shows are the node's (the same in every session).

The whole screen is rendered through urwid, as the terminal would show it.
"""

from __future__ import annotations

import pytest

from node.chat.model import ChatModel
from node.chat.render import group_row
from node.chat.text import columns
from node.chat.view import ChatView, pane_widths
from tests.chat.helpers import GROUP, ME, group_view, member, message
from tests.chat.test_terminal import FakeSession

OTHER = "fedcba9876543210" * 4


def screen(model: ChatModel, size: tuple[int, int]) -> list[str]:
    view = ChatView(FakeSession(), model)  # type: ignore[arg-type]
    view.render()
    rows = view.top.render(size, focus=True).text
    return [row.decode() for row in rows]


def groups_pane(rows: list[str], width: int) -> list[str]:
    """The groups pane's column of each screen row (after the header row)."""
    return [row[:width].rstrip() for row in rows[1:]]


def picnic_model() -> ChatModel:
    model = ChatModel(me=ME, my_name="alice")
    model.set_groups([group_view(id=OTHER, name="lab", unread=3, muted=True),
                      group_view(name="picnic", muted=True)])
    model.current = GROUP
    model.set_log(GROUP, [message(1, text="Who brings what?", number=1)])
    model.set_members(GROUP, [member(ME, "alice", role="owner")])
    return model


@pytest.mark.parametrize("size", [(120, 30), (100, 30), (80, 24)])
def test_muted_stays_on_the_name_row_at_every_width(size: tuple[int, int]) -> None:
    width = pane_widths(size[0])[0]
    pane = groups_pane(screen(picnic_model(), size), width)
    assert pane[0] == "Groups"
    # Each group is one row: its name and its marks (never a wrapped row below it).
    picnic, lab = pane[2], pane[1]
    assert picnic.startswith("> pic") and lab.startswith("  lab ("), pane
    if size[0] >= 100:
        assert picnic == "> picnic [muted]" and lab == "  lab (3) [muted]"
    else:
        assert picnic == "> pic… [muted]" and lab == "  lab (3) [m]"
    assert pane[3] == ""  # nothing wrapped onto the next row


def test_a_row_always_fits_its_pane() -> None:
    for width in (14, 18, 22):
        for name in ("picnic", "a-very-long-group-name", "家族 🎉 party", "x"):
            for badges in ([], ["[muted]"], ["(12)", "[muted]"], ["(12)", "[muted]", "[left]"]):
                row = group_row(">", name, badges, width)
                assert columns(row) <= width, (width, name, badges, row)
                assert row.startswith("> " + name[:1])


def test_numbers_are_the_nodes_in_every_session() -> None:
    """Two chat sessions that first see the messages in different orders show the same
    [N]: the node's number, not the order a session happened to see them in."""
    late = message(3, text="late, ordered first", number=3)
    first, second = message(1, number=1), message(2, number=2)
    one, two = ChatModel(me=ME), ChatModel(me=ME)
    for model in (one, two):
        model.set_groups([group_view()])
    one.set_log(GROUP, [first, second])
    one.set_log(GROUP, [late, first, second])
    two.set_log(GROUP, [late, first, second])
    for model in (one, two):
        assert [model.handle_of(v["id"]) for v in (first, second, late)] == [1, 2, 3]
        assert model.event_for(3) == late
    rows = screen(two, (120, 30))
    assert any("[3]" in row and "late, ordered first" in row for row in rows)


def test_a_node_without_numbers_still_gets_session_numbers() -> None:
    model = ChatModel(me=ME)
    model.set_groups([group_view()])
    model.set_log(GROUP, [message(7), message(9)])
    assert [model.handle_of(f"{n:064x}") for n in (7, 9)] == [1, 2]
