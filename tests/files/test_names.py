"""Saving an attachment: hostile names become one harmless path component."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.files.names import MAX_NAME_BYTES, candidates, safe_name


@pytest.mark.parametrize("name, expected", [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "_.._etc_passwd"),
    ("/etc/shadow", "_etc_shadow"),
    ("a\\b:c", "a_b_c"),
    ("\x1b[31mred\x07.txt", "_[31mred_.txt"),
    ("evil\u202etxt.exe", "evil_txt.exe"),
    ("line\nbreak", "line_break"),
    ("..", "attachment"),
    ("", "attachment"),
    ("   ", "attachment"),
    (".bashrc", "bashrc"),
    ("con.txt", "_con.txt"),
    ("trailing. ", "trailing"),
])
def test_safe_name(name: str, expected: str) -> None:
    assert safe_name(name) == expected


def test_long_names_keep_their_extension() -> None:
    name = safe_name("é" * 300 + ".pdf")
    assert name.endswith(".pdf") and len(name.encode()) <= MAX_NAME_BYTES


def test_candidates_never_repeat_and_stay_short() -> None:
    names = list(itertools.islice(candidates("x" * 400 + ".tar"), 12))
    assert names[1].endswith(" (1).tar") and names[11].endswith(" (11).tar")
    assert len(set(names)) == 12
    assert all(len(n.encode()) <= MAX_NAME_BYTES for n in names)
    assert list(itertools.islice(candidates("a.b"), 3)) == ["a.b", "a (1).b", "a (2).b"]


@given(st.text(max_size=300))
def test_any_name_is_one_printable_component(name: str) -> None:
    for out in itertools.islice(candidates(name), 3):
        assert out and out.isprintable()
        assert "/" not in out and "\\" not in out and "\0" not in out
        assert not out.startswith(".")
        assert len(out.encode()) <= MAX_NAME_BYTES
