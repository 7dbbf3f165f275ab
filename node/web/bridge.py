"""The web server's link to the node: one ``Hub`` for every open page.

The hub talks to the node only through the control socket (``NodeClient``), so it works
the same attached to a running node or to the node ``kith web`` started itself. Like
``kith chat`` (node/chat/session.py) it

* refreshes ``id``, ``group.list`` and ``peers`` every ``POLL`` seconds, or at once
  when poked (a new event, an op done), and pushes ``groups``/``peers`` to every page
  only when they changed;
* follows every group (``log`` with follow, one connection per group) for the
  ``event`` pushes (notifications), ``typing``, and to poke the pages watching the
  group so they refetch its log;
* notices the node going away (a refresh fails) and coming back: ``node`` pushes; in
  attach mode the followers and the refresh simply retry until it answers again.

Each page is a ``Listener`` (node/web/sockets.py) with a bounded outbox: the hub hands
it pushes and never waits for a slow page.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from node.chat.backend import NodeClient
from node.errors import KithError
from node.web import protocol

log = logging.getLogger(__name__)

#: Seconds between refreshes when nothing happens (delivery and read marks change
#: without an event, hence the polling).
POLL = 1.5
#: Shortest interval between two refreshes.
GAP = 0.1
#: Seconds before a dropped follow stream or a down node is tried again.
RETRY = 1.0


class Listener(Protocol):
    """A page the hub pushes to (``node.web.sockets.Page``)."""

    watching: str | None

    def put(self, message: dict[str, Any]) -> None: ...

    def poke(self) -> None: ...


class Hub:
    """The node as every page sees it: its identity, groups, peers, and a push for changes."""

    def __init__(self, client: NodeClient, mode: str, *, poll: float = POLL,
                 max_file_size: int | None = None) -> None:
        self.client = client
        self.mode = mode
        self.poll = poll
        self.listeners: set[Listener] = set()
        self.me: dict[str, Any] | None = None
        self.up = True
        self.groups: Any = None
        self.peers: Any = None
        self.max_file_size = max_file_size
        self._nursery: trio.Nursery | None = None
        self._poke = trio.Event()
        self._following: set[str] = set()
        #: group id -> author -> (name, when the notice came)
        self._typing: dict[str, dict[str, tuple[str, float]]] = {}
        #: Bumped by each finished refresh (tests wait on it).
        self.refreshed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self.refresh()
            nursery.start_soon(self._refresh_loop)
            task_status.started()
            await trio.sleep(math.inf)

    def spawn(self, job: Callable[[], Awaitable[None]]) -> None:
        """Run ``job`` in the background (tracking an upload), for as long as the server."""
        if self._nursery is not None:
            self._nursery.start_soon(job)

    # -- pages ---------------------------------------------------------------------

    def attach(self, page: Listener) -> None:
        """A new page: hello, then the current groups and peers (and the node's state)."""
        self.listeners.add(page)
        page.put(protocol.push("hello", me=self.me, mode=self.mode))
        if not self.up:
            page.put(protocol.push("node", state="down"))
        if self.groups is not None:
            page.put(protocol.push("groups", groups=self.groups))
        if self.peers is not None:
            page.put(protocol.push("peers", peers=self.peers))

    def detach(self, page: Listener) -> None:
        self.listeners.discard(page)

    def broadcast(self, message: dict[str, Any]) -> None:
        for page in list(self.listeners):
            page.put(message)

    def poke(self) -> None:
        """Refresh now (something changed), and the watched logs with it."""
        self._poke.set()
        for page in list(self.listeners):
            page.poke()

    # -- refreshing ----------------------------------------------------------------

    async def _refresh_loop(self) -> None:
        while True:
            with trio.move_on_after(self.poll if self.up else RETRY):
                await self._poke.wait()
            self._poke = trio.Event()
            await self.refresh()
            await trio.sleep(GAP)  # a burst of events costs one refresh per GAP, not each

    async def refresh(self) -> None:
        try:
            me = await self.client.call("id") if self.me is None or not self.up else self.me
            groups = await self.client.call("group.list")
            peers = await self.client.call("peers")
        except KithError as exc:
            if self.up:
                log.info("web: the node is not answering: %s", exc)
                self.up = False
                self.broadcast(protocol.push("node", state="down"))
            self._refreshed()
            return
        if not self.up:
            log.info("web: the node is back")
            self.up = True
            self.me = me
            self.broadcast(protocol.push("node", state="up"))
            self.broadcast(protocol.push("hello", me=me, mode=self.mode))
        self.me = me
        if isinstance(me, dict) and isinstance(me.get("max_file_size"), int):
            self.max_file_size = me["max_file_size"]
        if groups != self.groups:
            self.groups = groups
            self.broadcast(protocol.push("groups", groups=groups))
        if peers != self.peers:
            self.peers = peers
            self.broadcast(protocol.push("peers", peers=peers))
        for group in groups if isinstance(groups, list) else []:
            if isinstance(group, dict) and isinstance(group.get("id"), str):
                self._follow(group["id"])
        for page in list(self.listeners):
            page.poke()  # delivery and read marks: the pages refetch (and push if changed)
        self._refreshed()

    def _refreshed(self) -> None:
        self.refreshed.set()
        self.refreshed = trio.Event()

    def group_id(self, text: str) -> str | None:
        """The id of the group the page named (id, id prefix or name), if the hub knows it."""
        groups = self.groups if isinstance(self.groups, list) else []
        for test in (lambda g: g.get("id") == text, lambda g: g.get("name") == text,
                     lambda g: len(text) >= 4 and str(g.get("id", "")).startswith(text)):
            found = [g["id"] for g in groups if isinstance(g, dict) and test(g)]
            if len(found) == 1:
                return str(found[0])
        return None

    # -- following -----------------------------------------------------------------

    def _follow(self, group_id: str) -> None:
        if group_id not in self._following and self._nursery is not None:
            self._following.add(group_id)
            self._nursery.start_soon(self._follow_group, group_id)

    async def _follow_group(self, group_id: str) -> None:
        def on_item(view: Any) -> None:
            if not isinstance(view, dict):
                return
            if view.get("kind") == "typing":
                self._typed(group_id, view)
                return
            author = view.get("author")
            typing = self._typing.get(group_id)
            if typing is not None and isinstance(author, str) and author in typing:
                del typing[author]  # their message is here: they stopped typing
                self._push_typing(group_id)
            self.broadcast(protocol.push("event", group=group_id, event=view))
            self.poke()

        while True:
            try:
                await self.client.follow(on_item, "log", group=group_id, limit=1)
            except KithError as exc:
                log.debug("web: follow %s: %s", group_id[:12], exc)
            await trio.sleep(RETRY)

    def _typed(self, group_id: str, view: dict[str, Any]) -> None:
        author = str(view.get("author", ""))
        if self.me is not None and author == self.me.get("peer_id"):
            return
        name = str(view.get("author_name") or author[:8])
        now = trio.current_time()
        self._typing.setdefault(group_id, {})[author] = (name, now)
        self._push_typing(group_id)
        if self._nursery is not None:
            self._nursery.start_soon(self._expire_typing, group_id, author, now)

    async def _expire_typing(self, group_id: str, author: str, when: float) -> None:
        await trio.sleep_until(when + protocol.TYPING_SHOWN)
        typing = self._typing.get(group_id, {})
        if typing.get(author, ("", None))[1] == when:
            del typing[author]
            self._push_typing(group_id)

    def typing_names(self, group_id: str) -> list[str]:
        return sorted(name for name, _ in self._typing.get(group_id, {}).values())

    def _push_typing(self, group_id: str) -> None:
        message = protocol.push("typing", group=group_id, names=self.typing_names(group_id))
        for page in list(self.listeners):
            if page.watching == group_id:
                page.put(message)
