"""Editing the input line, as a shell does: kill keys, history, Tab that cycles.

Pure functions and small state objects on ``(text, cursor)``; the urwid input
line in ``view`` maps keys onto them.

* Ctrl-U deletes from the start of the line to the cursor, Ctrl-K from the
  cursor to the end, Ctrl-W the word before the cursor; Ctrl-A / Ctrl-E go to
  the start / end.
* Up and Down walk through the lines sent in this session (``History``); what
  was being typed comes back after the newest.
* Tab completes (``commands.completion``); pressed again at once it puts each
  candidate in turn (``TabCycle``).
"""

from __future__ import annotations

from collections.abc import Callable

#: Lines kept by the history.
HISTORY = 500

Edit = tuple[str, int]


def kill_to_start(text: str, pos: int) -> Edit:
    return text[pos:], 0


def kill_to_end(text: str, pos: int) -> Edit:
    return text[:pos], pos


def kill_word(text: str, pos: int) -> Edit:
    """Delete the word before the cursor (and the spaces after it), as Ctrl-W does."""
    start = pos
    while start > 0 and text[start - 1].isspace():
        start -= 1
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return text[:start] + text[pos:], start


class History:
    """The lines sent, oldest first; ``older``/``newer`` step through them."""

    def __init__(self, limit: int = HISTORY) -> None:
        self.lines: list[str] = []
        self.limit = limit
        self._index: int | None = None  # None: at the line being typed
        self._draft = ""

    def add(self, line: str) -> None:
        if line.strip() and (not self.lines or self.lines[-1] != line):
            self.lines.append(line)
            del self.lines[:-self.limit]
        self._index = None

    def older(self, current: str) -> str | None:
        """The line before the one shown (None at the oldest)."""
        if self._index is None:
            if not self.lines:
                return None
            self._draft = current
            self._index = len(self.lines)
        if self._index == 0:
            return None
        self._index -= 1
        return self.lines[self._index]

    def newer(self) -> str | None:
        """The line after the one shown; past the newest, what was being typed."""
        if self._index is None:
            return None
        self._index += 1
        if self._index >= len(self.lines):
            self._index = None
            return self._draft
        return self.lines[self._index]


class TabCycle:
    """Tab completes; Tab again at once cycles through the candidates."""

    def __init__(self) -> None:
        self._head = ""
        self._options: list[str] = []
        self._index = -1
        self._shown: str | None = None

    def reset(self) -> None:
        self._shown = None

    def tab(self, line: str, complete: Callable[[str], tuple[str, list[str]]]) -> \
            tuple[str, list[str], int]:
        """The new line, the candidates to list and which one is on the line (-1: none)."""
        if self._shown is not None and line == self._shown and self._options:
            self._index = (self._index + 1) % len(self._options)
            self._shown = self._head + self._options[self._index]
            return self._shown, self._options, self._index
        new, options = complete(line)
        if options:
            self._options = options
            self._index = -1
            self._head = line[:len(line) - len(_token(line, options))]
            self._shown = new
        else:
            self._shown = None
        return new, options, -1


def _token(line: str, options: list[str]) -> str:
    """The longest end of ``line`` that starts one of ``options`` (the word being completed)."""
    for start in range(len(line) + 1):
        end = line[start:].lower()
        if any(o.lower().startswith(end) for o in options):
            return line[start:]
    return ""
