"""Showing untrusted text on a terminal.

Everything a peer controls (message text, display names, group names, emoji
of reactions) may contain terminal control sequences: ``ESC [ 2 J`` clears the
screen, ``ESC ] 0 ; ... BEL`` retitles the window, OSC 52 writes the clipboard.
The client never hands such characters to the terminal. ``clean`` turns every
control character into a visible escape (``\\x1b``), so a message shows what was
sent, harmlessly. Bidirectional overrides are escaped too: they can make text
read differently from what it is ("Trojan Source").
"""

from __future__ import annotations

import unicodedata

#: Characters that reorder text (bidi embeddings, overrides, isolates, marks).
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def is_unsafe(ch: str) -> bool:
    """Whether ``ch`` must not reach the terminal as it is."""
    category = unicodedata.category(ch)
    # Cc: C0 and C1 controls (ESC, BEL, CSI 0x9b, ...), DEL; Zl/Zp: line/paragraph separators;
    # Cs: lone surrogates (not valid text); bidi controls are Cf.
    return category in ("Cc", "Zl", "Zp", "Cs") or ch in BIDI_CONTROLS


def clean(text: str) -> str:
    """``text`` with every unsafe character shown as a visible escape; a backslash stays."""
    if text.isprintable() and not any(ch in BIDI_CONTROLS for ch in text):
        return text
    return "".join(_escape(ch) if is_unsafe(ch) else ch for ch in text)


def is_clean(text: str) -> bool:
    return clean(text) == text


def columns(text: str) -> int:
    """Terminal columns ``text`` takes, as urwid lays it out (wide characters take two)."""
    import urwid

    return int(urwid.calc_width(text, 0, len(text)))


def fit(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` columns, ending with an ellipsis when cut."""
    if columns(text) <= width:
        return text
    while text and columns(text) > width - 1:
        text = text[:-1]
    return text + "…"


def shorten(text: str, width: int) -> str:
    """At most ``width`` characters, with an ellipsis when cut."""
    if len(text) <= width:
        return text
    return text[: max(width - 1, 0)] + "…"
