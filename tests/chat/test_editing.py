"""The input line's editing (issue 15, item 6): kill keys, history, Tab cycling, paths."""

from __future__ import annotations

from node.chat.commands import complete, path_options
from node.chat.editing import History, TabCycle, kill_to_end, kill_to_start, kill_word
from node.chat.model import ChatModel
from tests.chat.helpers import BOB, CAROL, ME, group_view, member


def test_kill_keys() -> None:
    assert kill_to_start("hello brave world", 6) == ("brave world", 0)
    assert kill_to_end("hello brave world", 6) == ("hello ", 6)
    assert kill_word("hello brave world", 12) == ("hello world", 6)
    assert kill_word("hello brave   ", 14) == ("hello ", 6)
    assert kill_word("", 0) == ("", 0)


def test_history_walks_back_and_returns_to_the_draft() -> None:
    history = History(limit=3)
    assert history.older("draft") is None
    for line in ("one", "two", "two", "three", "four"):
        history.add(line)
    assert history.lines == ["two", "three", "four"]  # no repeats, at most the limit
    assert history.older("draft") == "four"
    assert history.older("four") == "three"
    assert history.older("three") == "two"
    assert history.older("two") is None  # the oldest stays
    assert history.newer() == "three"
    assert history.newer() == "four"
    assert history.newer() == "draft"
    assert history.newer() is None


def _model() -> ChatModel:
    model = ChatModel(me=ME)
    model.set_groups([group_view()])
    model.set_members(model.current or "", [member(ME, "alice"), member(BOB, "bob"),
                                            member(CAROL, "bobby")])
    return model


def test_tab_again_cycles_through_the_matches() -> None:
    model = _model()
    cycle = TabCycle()

    def tab(line: str) -> tuple[str, list[str], int]:
        return cycle.tab(line, lambda text: complete(text, model))

    assert tab("/re") == ("/re", ["/react", "/remove", "/reply"], -1)
    assert tab("/re") == ("/react", ["/react", "/remove", "/reply"], 0)
    assert tab("/react") == ("/remove", ["/react", "/remove", "/reply"], 1)
    assert tab("/remove")[0] == "/reply"
    assert tab("/reply")[0] == "/react"  # round again
    cycle.reset()  # another key
    assert tab("hi @bo") == ("hi @bob", ["@bob", "@bobby"], -1)  # the common part first
    assert tab("hi @bob")[0] == "hi @bob"
    assert tab("hi @bob")[0] == "hi @bobby"
    assert tab("/pe") == ("/peers ", [], -1)  # one match: no cycle


def test_file_completes_paths() -> None:
    tree = {".": [("photos", True), ("notes.txt", False), (".hidden", False)],
            "photos/": [("beach.jpg", False), ("berlin.png", False), ("old", True)],
            "/home/a b/": [("x y.txt", False)]}

    def listdir(path: str) -> list[tuple[str, bool]]:
        return tree.get(path, [])

    model = _model()
    assert complete("/file ph", model, listdir) == ("/file photos/", [])
    assert complete("/file photos/", model, listdir) == (
        "/file photos/", ["photos/beach.jpg", "photos/berlin.png", "photos/old/"])
    assert complete("/file photos/be", model, listdir) == (
        "/file photos/be", ["photos/beach.jpg", "photos/berlin.png"])
    assert complete("/file photos/bea", model, listdir) == ("/file photos/beach.jpg", [])
    assert complete("/file /home/a b/x", model, listdir) == ("/file /home/a b/x y.txt", [])
    assert path_options("", listdir) == ["photos/", "notes.txt"]  # no dot files ...
    assert path_options(".h", listdir) == [".hidden"]  # ... unless asked for
    assert complete("/file nothing", model, listdir) == ("/file nothing", [])
