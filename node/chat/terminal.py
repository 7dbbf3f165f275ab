"""Terminal input in bounded steps, so a large paste is taken in at once and never freezes.

Why a paste of 20,000 characters used to freeze the client for minutes: its cost
grew with the square of its length, twice over.

* urwid's raw screen decodes the bytes of one read key by key and copies the
  rest of the list after each key: a read of n bytes costs n²/2 copies.
  ``ChunkedScreen`` hands the decoder pieces of at most ``PIECE`` bytes,
  cut only inside plain text (never inside an escape sequence or a UTF-8
  character), so a read costs n·PIECE.
* Every key pressed into the input line made urwid lay out the whole line
  again (the footer asks the line how many rows it needs): n keys cost n²/2
  characters of layout. ``coalesce`` turns each run of printable keys (and
  everything between "begin paste" and "end paste") into one ``PASTE`` key that
  the input line inserts in one go.

While the client works through a paste, trio runs between two reads, so the
screen keeps updating and Ctrl-C or SIGTERM end it.
"""

from __future__ import annotations

from typing import Any

import urwid

#: Bytes handed to urwid's key decoder at once.
PIECE = 512
#: Bytes before a cut that must hold no ESC (no escape sequence is longer in input).
SEQUENCE = 32
#: A key made of this and text: insert the text (no printable key starts with it).
PASTE = "\x00"


def _plain(code: int) -> bool:
    return 0x20 <= code < 0x7F


def pieces(codes: list[int], size: int = PIECE) -> list[list[int]]:
    """``codes`` cut into pieces of about ``size``, only between two plain ASCII characters
    with no ESC shortly before (so no escape sequence or UTF-8 character is split)."""
    out: list[list[int]] = []
    start = 0
    cut = size
    while cut < len(codes):
        if (_plain(codes[cut - 1]) and _plain(codes[cut])
                and 0x1B not in codes[max(start, cut - SEQUENCE):cut]):
            out.append(codes[start:cut])
            start, cut = cut, cut + size
        else:
            cut += 1
    out.append(codes[start:])
    return out


class ChunkedScreen(urwid.display.raw.Screen):
    """urwid's raw screen, decoding input piece by piece (see the module docstring)."""

    def parse_input(self, event_loop: Any, callback: Any, codes: list[int],
                    wait_for_more: bool = True) -> Any:
        if callback is None or len(codes) <= PIECE:
            return super().parse_input(event_loop, callback, codes, wait_for_more)
        parts = pieces(codes)
        for part in parts[:-1]:
            super().parse_input(event_loop, callback, part, False)
        return super().parse_input(event_loop, callback, parts[-1], wait_for_more)


class Coalescer:
    """A MainLoop ``input_filter``: runs of typed or pasted text become one ``PASTE`` key.

    Inside a bracketed paste, Enter and Tab are text (a newline, a tab): a pasted
    paragraph is one message, not one message per line.
    """

    def __init__(self) -> None:
        self.pasting = False

    def __call__(self, keys: list[Any], raw: list[int]) -> list[Any]:
        out: list[Any] = []
        run: list[str] = []

        def flush() -> None:
            if len(run) == 1 and run[0].isprintable():
                out.append(run[0])
            elif run:
                out.append(PASTE + "".join(run))
            run.clear()

        for key in keys:
            if key == "begin paste":
                self.pasting = True
            elif key == "end paste":
                self.pasting = False
            elif isinstance(key, str) and len(key) == 1 and key.isprintable():
                run.append(key)
            elif self.pasting and key in ("enter", "tab"):
                run.append("\n" if key == "enter" else "\t")
            else:
                flush()
                out.append(key)
        flush()
        return out
