"""A large paste into the chat client (issue 15, item 1): linear cost, nothing split.

Driven here through urwid's real key decoder and the real input line, without a
terminal; tests/system/test_chat_input_tmux.py pastes into a real ``kith chat``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from node.chat.model import ChatModel
from node.chat.terminal import PASTE, ChunkedScreen, Coalescer, pieces
from node.chat.view import INPUT_ROWS, ChatView

SIZE = (120, 40)


class FakeSession:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.typing = 0

    def typed(self) -> None:
        self.typing += 1

    def submit(self, line: str) -> bool:
        self.sent.append(line)
        return True


def test_pieces_cut_only_inside_plain_text() -> None:
    text = ("é" * 300 + "\x1b[A" + "x" * 2000 + "\x1b[200~" + "y" * 700).encode()
    codes = list(text)
    parts = pieces(codes, size=64)
    assert [c for part in parts for c in part] == codes
    assert len(parts) > 20
    for part in parts[:-1]:
        assert 0x20 <= part[-1] < 0x7F  # ends on plain ASCII: no UTF-8 char or sequence cut
        assert 0x1B not in part[-32:]


def test_coalescer_joins_runs_and_keeps_pasted_lines_together() -> None:
    flt = Coalescer()
    assert flt(["h", "i", "enter", "x"], []) == [PASTE + "hi", "enter", "x"]
    assert flt(["begin paste", "a", "enter", "b"], []) == [PASTE + "a\nb"]
    assert flt(["tab", "c", "end paste", "enter"], []) == [PASTE + "\tc", "enter"]


def feed(view: ChatView, screen: Any, data: bytes) -> None:
    flt = Coalescer()

    def callback(keys: list[Any], raw: list[int]) -> None:
        for key in flt(keys, raw):
            view.top.keypress(SIZE, key)
        view.top.render(SIZE, focus=True)  # what the main loop does when idle

    codes = list(data)
    for start in range(0, len(codes), 4096):  # a pty hands over about 4 KiB per read
        screen.parse_input(None, callback, codes[start:start + 4096], True)


@pytest.mark.parametrize("length", [2_000, 20_000])
def test_a_large_paste_costs_little(length: int) -> None:
    session = FakeSession()
    view = ChatView(session, ChatModel())  # type: ignore[arg-type]
    view.render()
    text = ("lorem ipsum dolor sit amet " * 1000)[:length]
    started = time.process_time()
    feed(view, ChunkedScreen(), b"\x1b[200~" + text.encode() + b"\x1b[201~")
    spent = time.process_time() - started
    assert view.input.edit_text == text
    assert spent < 3.0  # was about 150 s for 20,000 characters: the square of the length
    canvas = view.top.render(SIZE, focus=True)
    assert canvas.rows() == SIZE[1]  # the input line takes at most INPUT_ROWS rows ...
    assert canvas.cursor is not None and canvas.cursor[1] == SIZE[1] - 1  # ... cursor shown
    assert view.input.rows((SIZE[0],)) == min(INPUT_ROWS, view.input.rows((SIZE[0],)))
    assert session.typing >= 1


def test_keys_after_a_paste_still_work() -> None:
    session = FakeSession()
    view = ChatView(session, ChatModel())  # type: ignore[arg-type]
    feed(view, ChunkedScreen(), b"\x1b[200~first line\nsecond line\x1b[201~\r")
    assert session.sent == ["first line\nsecond line"]  # a pasted paragraph is one message
    assert view.input.edit_text == ""


def test_help_is_a_box_that_any_key_closes() -> None:
    """Issue 15, item 5: /help covers the conversation until Esc (or any key) closes it."""
    session = FakeSession()
    model = ChatModel()
    view = ChatView(session, model)  # type: ignore[arg-type]
    view.render()
    view.show_help()
    screen = b"\n".join(view.top.render((80, 24), focus=True).text).decode()
    assert "Help - Esc" in screen and "/create NAME" in screen
    view.top.keypress((80, 24), "page down")
    assert view.help_shown  # scrolling keeps it
    assert view.top.keypress((80, 24), "ctrl c") == "ctrl c"  # quitting still works
    view.top.keypress((80, 24), "esc")
    assert not view.help_shown
    assert "Help - Esc" not in b"\n".join(view.top.render((80, 24), focus=True).text).decode()
    assert model.notices == []  # nothing left in the conversation
