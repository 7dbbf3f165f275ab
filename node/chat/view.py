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
from node.chat.commands import complete
from node.chat.model import ChatModel, Notification
from node.chat.render import (
    Line,
    conversation_lines,
    group_lines,
    header_text,
    member_lines,
)
from node.chat.session import ChatSession
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
Walker = urwid.SimpleFocusListWalker[Any]


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
    """The line the user types in: Enter submits, Tab completes, typing is announced."""

    def __init__(self, view: ChatView) -> None:
        super().__init__("> ")
        self.view = view

    def keypress(self, size: Any, key: str) -> str | None:
        if key == "enter":
            line = self.edit_text
            self.set_edit_text("")
            if line.strip():
                self.view.session.submit(line)
            return None
        if key == "tab":
            new, options = complete(self.edit_text, self.view.model)
            self.set_edit_text(new)
            self.set_edit_pos(len(new))
            if options:
                self.view.model.status = "  ".join(clean(o) for o in options[:12])
                self.view.render()
            return None
        result: str | None = super().keypress(size, key)
        if result is None and len(key) == 1 and not self.edit_text.startswith("/"):
            self.view.session.typed()
        return result


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
        body = urwid.Columns([
            (GROUPS_WIDTH, urwid.ListBox(self.groups)),
            ("weight", 1, urwid.LineBox(self.conv_box, tlcorner="┬", trcorner="┬", blcorner="┴",
                                        brcorner="┴", lline="│", rline="│", tline="", bline="")),
            (MEMBERS_WIDTH, urwid.ListBox(self.members)),
        ], dividechars=1)
        footer = urwid.Pile([urwid.AttrMap(self.status, "status"), self.input])
        self.frame = urwid.Frame(body, header=urwid.AttrMap(self.header, "header"),
                                 footer=footer, focus_part="footer")
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
        self._texts(self.groups, group_lines(model))
        self._texts(self.members, member_lines(model, now))
        focus = self.conversation.focus
        self._texts(self.conversation, conversation_lines(model, now), hang=True)
        if self.conversation:
            if self.at_end or focus is None:
                self.conversation.set_focus(len(self.conversation) - 1)
            else:
                self.conversation.set_focus(min(focus, len(self.conversation) - 1))
        self.status.set_text(model.status)

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
) -> None:
    """The whole client until the user quits (or SIGINT/SIGTERM)."""
    model = ChatModel(node_mode=node_mode)
    event_loop = urwid.TrioEventLoop()
    screen = urwid.display.raw.Screen()
    holder: dict[str, ChatView] = {}

    def on_change() -> None:
        if "view" in holder:
            holder["view"].render()

    def on_quit() -> None:
        raise urwid.ExitMainLoop

    session = ChatSession(client, model, on_change=on_change, on_quit=on_quit,
                          notify=lambda note: ring(screen, note, desktop))
    async with trio.open_nursery() as nursery:
        if start_node is not None:
            await nursery.start(start_node)
        await nursery.start(session.run)
        view = holder["view"] = ChatView(session, model)
        nursery.start_soon(_select_first, session, group)
        nursery.start_soon(_quit_on_signal, nursery.cancel_scope)
        loop = urwid.MainLoop(view.frame, PALETTE, screen=screen, event_loop=event_loop,
                              unhandled_input=view.unhandled, handle_mouse=False)
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
