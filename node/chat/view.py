"""The thin urwid layer: panes built from ``render`` lines, keys handed to the session.

    ┌ header: who I am, the group, key hints ───────────────────────────┐
    │ Groups      │ conversation (scrolls; follows the end)  │ Members   │
    ├ status line ──────────────────────────────────────────────────────┤
    └ > input line ─────────────────────────────────────────────────────┘

The UI and the session share one trio run (``urwid.TrioEventLoop``); nothing
here waits for the node: a key press at most starts a session task.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import urwid

from node.chat.backend import NodeClient
from node.chat.commands import complete, help_lines
from node.chat.editing import History, TabCycle, kill_to_end, kill_to_start, kill_word
from node.chat.model import ChatModel, Notification
from node.chat.render import (
    Line,
    conversation_lines,
    group_lines,
    header_text,
    member_lines,
)
from node.chat.session import ChatSession
from node.chat.terminal import PASTE, ChunkedScreen, Coalescer
from node.chat.text import clean, shorten

log = logging.getLogger(__name__)

PALETTE = [
    ("header", "black", "light gray"),
    ("status", "yellow", "default"),
    ("title", "bold", "default"),
    ("current", "standout", "default"),
    ("unread", "bold", "default"),
    ("group", "default", "default"),
    ("msg", "default", "default"),
    ("mine", "light cyan", "default"),
    ("mention", "yellow,bold", "default"),
    ("quote", "dark gray", "default"),
    ("reaction", "light magenta", "default"),
    ("deleted", "dark gray", "default"),
    ("info", "dark green", "default"),
    ("gap", "light red", "default"),
    ("pinned", "black", "yellow"),
    ("typing", "dark gray", "default"),
    ("notice", "light blue", "default"),
    ("member", "default", "default"),
    ("away", "dark gray", "default"),
]
GROUPS_WIDTH = 22
MEMBERS_WIDTH = 28
#: Below this many columns the side panes narrow, so the conversation keeps room (80x24).
NARROW = 110
NARROW_WIDTHS = (14, 18)
#: From this many columns up to NARROW the groups pane keeps room for "> name [muted]".
MEDIUM = 100
MEDIUM_WIDTHS = (18, 18)
Walker = urwid.SimpleFocusListWalker[Any]
#: Rows the input line takes at most (a long paste scrolls inside them).
INPUT_ROWS = 5


#: Where a conversation line's text starts: after "[12] 10:41 ", after "     10:41 " of an
#: info line, or after the indentation of a quote or reaction line. Wrapped text hangs there.
HANG = re.compile(r"^( *\[[\d?]+\] \S+ | +\S+ (?=\* )| +)")
UNHUNG = frozenset({"notice", "pinned"})


def _line(text: str, hang: bool) -> urwid.Widget:
    match = HANG.match(text) if hang else None
    if match is None or not 0 < match.end() < len(text) or match.end() > 24:
        return urwid.Text(text)
    return urwid.Columns([(match.end(), urwid.Text(text[:match.end()])),
                          urwid.Text(text[match.end():])])


class InputLine(urwid.Edit):
    """The line the user types in: Enter submits, Tab completes (again: cycles), Up/Down
    recall sent lines, Ctrl-U/K/W delete, Ctrl-A/E move; typing is announced.

    A long line (a paste) shows at most ``INPUT_ROWS`` rows, those around the cursor.
    """

    def __init__(self, view: ChatView) -> None:
        super().__init__("> ")
        self.view = view
        self.history = History()
        self.cycle = TabCycle()

    def rows(self, size: Any, focus: bool = False) -> int:
        return min(int(super().rows(size, focus)), INPUT_ROWS)

    def render(self, size: Any, focus: bool = False) -> Any:
        canvas = super().render(size, focus)
        rows = canvas.rows()
        if rows <= INPUT_ROWS:
            return canvas
        cursor_row = canvas.cursor[1] if canvas.cursor is not None else rows - 1
        top = min(max(cursor_row - INPUT_ROWS + 1, 0), rows - INPUT_ROWS)
        cropped = urwid.CompositeCanvas(canvas)
        cropped.trim(top, INPUT_ROWS)
        return cropped

    def _set(self, text: str, pos: int | None = None) -> None:
        self.set_edit_text(text)
        self.set_edit_pos(len(text) if pos is None else pos)

    def keypress(self, size: Any, key: str) -> str | None:
        if key != "tab":
            self.cycle.reset()
        if key.startswith(PASTE):  # a run of typed or pasted text, inserted at once
            self.insert_text(key[len(PASTE):])
            self._typed()
            return None
        text, pos = self.edit_text, self.edit_pos
        if key == "enter":
            if text.strip() and self.view.session.submit(text) is not False:
                self.history.add(text)
                self._set("")
            elif not text.strip():
                self._set("")
        elif key == "tab":
            self._complete(text)
        elif key in ("up", "down"):
            recalled = self.history.older(text) if key == "up" else self.history.newer()
            if recalled is not None:
                self._set(recalled)
        elif key in EDITS:
            self._set(*EDITS[key](text, pos))
        elif key == "ctrl a":
            self.set_edit_pos(0)
        elif key == "ctrl e":
            self.set_edit_pos(len(text))
        else:
            result: str | None = super().keypress(size, key)
            if result is None and len(key) == 1:
                self._typed()
            return result
        return None

    def _typed(self) -> None:
        if not self.edit_text.startswith("/"):
            self.view.session.typed()

    def _complete(self, text: str) -> None:
        model = self.view.model
        new, options, index = self.cycle.tab(text, lambda line: complete(line, model))
        self._set(new)
        if options:
            shown = [f"[{clean(o)}]" if i == index else clean(o)
                     for i, o in enumerate(options[:12])]
            more = f"  (+{len(options) - 12})" if len(options) > 12 else ""
            model.status = "  ".join(shown) + more + "  - Tab again cycles"
            self.view.render()


#: Ctrl keys that delete part of the line.
EDITS = {"ctrl u": kill_to_start, "ctrl k": kill_to_end, "ctrl w": kill_word}


class HelpBox(urwid.WidgetWrap[Any]):
    """``/help`` over the conversation: arrows and PgUp/PgDn scroll, any other key closes it."""

    def __init__(self, lines: list[str], close: Callable[[], None]) -> None:
        self.close = close
        body = urwid.ListBox(urwid.SimpleFocusListWalker([urwid.Text(line) for line in lines]))
        super().__init__(urwid.LineBox(body, title="Help - Esc (or any key) closes, "
                                       "arrows and PgUp/PgDn scroll"))

    def selectable(self) -> bool:
        return True

    def keypress(self, size: Any, key: str) -> str | None:
        if key in ("up", "down", "page up", "page down", "home", "end"):
            super().keypress(size, key)
            return None
        if key in ("ctrl c", "ctrl d", "f10"):
            return key  # quits, as everywhere
        self.close()
        return None


def pane_widths(columns: int) -> tuple[int, int]:
    """The widths of the groups and members panes on a terminal ``columns`` wide."""
    if columns >= NARROW:
        return GROUPS_WIDTH, MEMBERS_WIDTH
    return MEDIUM_WIDTHS if columns >= MEDIUM else NARROW_WIDTHS


class Panes(urwid.Columns):
    """Groups | conversation | members; the side panes narrow on a narrow terminal.

    ``on_groups_width`` is called when the groups pane changes width, so its rows are
    laid out again to fit it (``render.group_lines``)."""

    on_groups_width: Callable[[int], None] | None = None

    def render(self, size: Any, focus: bool = False) -> Any:
        groups, members = pane_widths(size[0])
        for index, width in ((0, groups), (2, members)):
            entry: Any = self.contents[index]
            widget, (_kind, current, _box) = entry
            if current != width:
                self.contents[index] = (widget, self.options("given", width))
                if index == 0 and self.on_groups_width is not None:
                    self.on_groups_width(width)
        return super().render(size, focus)


class ChatView:
    def __init__(self, session: ChatSession, model: ChatModel) -> None:
        self.session = session
        self.model = model
        self.header = urwid.Text("")
        self.groups: Walker = urwid.SimpleFocusListWalker([])
        self.conversation: Walker = urwid.SimpleFocusListWalker([])
        self.members: Walker = urwid.SimpleFocusListWalker([])
        self.conv_box = urwid.ListBox(self.conversation)
        self.status = urwid.Text("")
        self.input = InputLine(self)
        body = Panes([
            (GROUPS_WIDTH, urwid.ListBox(self.groups)),
            ("weight", 1, urwid.LineBox(self.conv_box, tlcorner="┬", trcorner="┬", blcorner="┴",
                                        brcorner="┴", lline="│", rline="│", tline="", bline="")),
            (MEMBERS_WIDTH, urwid.ListBox(self.members)),
        ], dividechars=1)
        body.on_groups_width = self._groups_width
        self.panes = body
        self.groups_width = GROUPS_WIDTH
        footer = urwid.Pile([urwid.AttrMap(self.status, "status"), self.input])
        self.frame = urwid.Frame(body, header=urwid.AttrMap(self.header, "header"),
                                 footer=footer, focus_part="footer")
        #: What the main loop shows: the frame, or the frame under the help box.
        self.top: urwid.WidgetPlaceholder[Any] = urwid.WidgetPlaceholder(self.frame)
        #: Follow the end of the conversation unless the user scrolled back.
        self.at_end = True

    @staticmethod
    def _texts(walker: Walker, lines: list[Line], *, hang: bool = False) -> None:
        walker[:] = [urwid.AttrMap(_line(text, hang and style not in UNHUNG), style)
                     for style, text in lines]

    def render(self) -> None:
        now = time.time()
        model = self.model
        self.header.set_text(header_text(model))
        self._texts(self.groups, group_lines(model, self.groups_width))
        self._texts(self.members, member_lines(model, now))
        focus = self.conversation.focus
        self._texts(self.conversation, conversation_lines(model, now), hang=True)
        if self.conversation:
            if self.at_end or focus is None:
                self.conversation.set_focus(len(self.conversation) - 1)
            else:
                self.conversation.set_focus(min(focus, len(self.conversation) - 1))
        self.status.set_text(model.status)

    def _groups_width(self, width: int) -> None:
        self.groups_width = width
        self._texts(self.groups, group_lines(self.model, width))

    @property
    def help_shown(self) -> bool:
        return self.top.original_widget is not self.frame

    def show_help(self) -> None:
        """``/help``: the commands in a box over the conversation, until a key closes it."""
        if self.help_shown:
            self.close_help()
            return
        box = HelpBox(help_lines(), self.close_help)
        self.top.original_widget = urwid.Overlay(
            box, self.frame, align="center", width=("relative", 100), valign="middle",
            height=("relative", 100), min_width=20, min_height=5)
        self.model.status = "help shown: Esc closes it"
        self.render()

    def close_help(self) -> None:
        self.top.original_widget = self.frame
        if self.model.status.startswith("help shown"):
            self.model.status = ""
        self.render()

    def scroll(self, pages: int, rows: int) -> None:
        if not self.conversation:
            return
        focus = self.conversation.focus or 0
        last = len(self.conversation) - 1
        target = max(0, min(last, focus + pages * max(rows - 6, 1)))
        self.conversation.set_focus(target)
        self.at_end = target == last

    def unhandled(self, key: Any) -> bool | None:
        if key in ("ctrl c", "ctrl d", "f10"):
            raise urwid.ExitMainLoop
        if key in ("ctrl n", "ctrl p", "meta down", "meta up"):
            self.session.switch(self.model.step_group(1 if key in ("ctrl n", "meta down") else -1))
            self.at_end = True
        elif key in ("page up", "page down"):
            rows = shutil.get_terminal_size().lines
            self.scroll(-1 if key == "page up" else 1, rows)
        else:
            return None
        self.render()
        return True


def ring(screen: Any, note: Notification, desktop: bool) -> None:
    """A bell on the terminal; with ``desktop``, ``notify-send`` too (started, not awaited)."""
    try:
        screen.write("\a")
        screen.flush()
    except (OSError, AttributeError):
        pass
    if desktop:
        title = f"kith: {'mention in ' if note.mention else ''}{clean(note.group)}"
        body = shorten(f"{clean(note.author)}: {clean(note.text)}", 200)
        try:
            import subprocess  # only here: a detached helper, never waited for by the UI

            subprocess.Popen(["notify-send", "--", title, body],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            log.debug("notify-send: %s", exc)


def desktop_available() -> bool:
    return shutil.which("notify-send") is not None and bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


async def run_chat(
    client: NodeClient,
    *,
    group: str | None = None,
    node_mode: str = "attached",
    start_node: Callable[..., Awaitable[None]] | None = None,
    desktop: bool = False,
    attach_note: Callable[[str], str] | None = None,
) -> None:
    """The whole client until the user quits (or SIGINT/SIGTERM).

    ``attach_note(name)``: a line for the status line once the node's name is known."""
    model = ChatModel(node_mode=node_mode)
    event_loop = urwid.TrioEventLoop()
    screen = ChunkedScreen(bracketed_paste_mode=True)
    holder: dict[str, ChatView] = {}

    def on_change() -> None:
        if "view" in holder:
            holder["view"].render()

    def on_quit() -> None:
        raise urwid.ExitMainLoop

    def on_help() -> None:
        if "view" in holder:
            holder["view"].show_help()

    session = ChatSession(client, model, on_change=on_change, on_quit=on_quit,
                          notify=lambda note: ring(screen, note, desktop), on_help=on_help)
    async with trio.open_nursery() as nursery:
        if start_node is not None:
            await nursery.start(start_node)
        await nursery.start(session.run)
        view = holder["view"] = ChatView(session, model)
        nursery.start_soon(_select_first, session, group)
        nursery.start_soon(_quit_on_signal, nursery.cancel_scope)
        if attach_note is not None:
            model.status = attach_note(model.my_name or model.me[:8])
        loop = urwid.MainLoop(view.top, PALETTE, screen=screen, event_loop=event_loop,
                              unhandled_input=view.unhandled, handle_mouse=False,
                              input_filter=Coalescer())
        view.render()
        with loop.start():
            await event_loop.run_async()
        nursery.cancel_scope.cancel()


async def _select_first(session: ChatSession, group: str | None) -> None:
    await session.wait_refreshed()
    if group is None:
        return
    found = session.model.find_group(group)
    if found is None:
        session.model.status = f"no group {clean(group)!r} here (yet)"
        session.on_change()
    else:
        session.switch(found.id)


async def _quit_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for _ in signals:
            scope.cancel()
            await trio.sleep(math.inf)
