"""``kith log`` names who read a message, as ``kith chat`` does."""

from __future__ import annotations

from node.cli.groups import format_event


def mine(**fields: object) -> dict[str, object]:
    return {"kind": "message", "time": 0, "author_name": "alice", "id": "ab" * 16,
            "text": "hi", "mine": True, "state": "delivered", **fields}


def test_read_by_names_not_a_count() -> None:
    line = format_event(mine(read_by=["x", "y"], read_by_names=["bob", "carol"]))
    assert line.endswith("(read by bob, carol)")


def test_many_readers_are_summed_up() -> None:
    names = ["bob", "carol", "dave", "erin", "frank"]
    line = format_event(mine(read_by=names, read_by_names=names))
    assert line.endswith("(read by bob, carol, dave and 2 more)")
