"""How ``kith log`` prints one event."""

from __future__ import annotations

from node.cli.groups import format_event


def test_a_file_without_a_caption_says_so_and_names_the_file() -> None:
    file = {"name": "talk.pdf", "size": 2048, "state": "complete", "have": 1, "chunks": 1}
    line = format_event({"kind": "message", "time": 0, "author_name": "bob", "id": "ab" * 16,
                         "text": "", "mine": False, "file": file})
    first, second = line.split("\n")
    assert first.endswith("bob: sent a file")
    assert second.strip().startswith("[file] talk.pdf")
