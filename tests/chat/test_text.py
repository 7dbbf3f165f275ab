"""Untrusted text never reaches the terminal as control characters."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from node.chat.text import clean, is_unsafe, shorten


def test_escape_sequences_are_shown_not_run() -> None:
    assert clean("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert clean("\x1b]0;title\x07") == "\\x1b]0;title\\x07"
    assert clean("\x9b31m") == "\\x9b31m"  # C1 CSI
    assert clean("x\x7fy") == "x\\x7fy"
    assert clean("two\nlines\r\t") == "two\\nlines\\r\\t"


def test_bidi_overrides_are_escaped() -> None:
    assert clean("abc\u202edcb") == "abc\\u202edcb"
    assert clean("\u2066x\u2069") == "\\u2066x\\u2069"


def test_ordinary_text_is_untouched() -> None:
    for text in ["hello", "héllo wörld", "日本語", "👍", "👨‍👩‍👧", "a\\x1b", "tab-less  spaces"]:
        assert clean(text) == text


@given(st.text())
def test_cleaned_text_has_no_control_characters(text: str) -> None:
    out = clean(text)
    assert not any(is_unsafe(ch) for ch in out)
    assert "\x1b" not in out and "\x07" not in out


@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))))
def test_text_without_controls_is_kept(text: str) -> None:
    if not any(is_unsafe(ch) for ch in text):
        assert clean(text) == text


def test_shorten() -> None:
    assert shorten("abcdef", 10) == "abcdef"
    assert shorten("abcdef", 4) == "abc…"
