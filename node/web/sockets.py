"""One page's WebSocket: its requests, its watched conversation, and its bounded outbox.

``serve`` runs three kinds of task per socket, in one nursery:

* the reader takes one JSON request at a time (at most ``MAX_INFLIGHT`` running: the
  reader waits for a free slot, so a page that floods requests is slowed, not queued);
* one task per request: a control-socket op through the hub's client, or a web op
  (``watch``, ``verify``, ``verified``), answered by ``id``;
* the writer sends what the ``Outbox`` holds, oldest first;
* the log task refetches the watched group's log and members when poked (at most every
  ``DEBOUNCE`` s) and pushes them when they changed.

The outbox keeps memory bounded whatever the page's speed: one pending push per kind
(``groups``, ``peers``, ``log``, ``typing``, ``node``; a newer replaces the older),
one per file transfer, the newest ``MAX_EVENTS`` events, and answers (bounded by the
requests in flight, whose slots the writer frees once an answer is sent).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import OrderedDict, deque
from typing import Any

import trio
from starlette.websockets import WebSocket, WebSocketDisconnect

from node.errors import KithError
from node.web import protocol
from node.web.bridge import Hub
from node.web.state import WebState

log = logging.getLogger(__name__)

#: Ops that change nothing: no refresh is needed after them.
READ_ONLY = frozenset({"id", "peers", "group.list", "group.members", "log", "file.status",
                       "file.upload", "files.usage", "group.discover", "typing"})


class Outbox:
    """Messages for one page: coalesced by kind, bounded in number (module docstring)."""

    def __init__(self) -> None:
        self._items: OrderedDict[Any, dict[str, Any]] = OrderedDict()
        self._events: deque[int] = deque()
        self._serial = itertools.count()
        self._ready = trio.Event()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, message: dict[str, Any]) -> None:
        kind = message.get("push")
        key: Any
        if kind in ("groups", "peers", "log", "typing", "node"):
            key = kind
            self._items.pop(key, None)  # the newer one goes last, after what came before it
        elif kind == "transfer":
            key = ("transfer", message.get("upload") or message.get("event"))
            self._items.pop(key, None)
        else:
            key = next(self._serial)
            if kind == "event":
                self._events.append(key)
                while len(self._events) > protocol.MAX_EVENTS:
                    if self._items.pop(self._events.popleft(), None) is not None:
                        self.dropped += 1
        self._items[key] = message
        self._ready.set()

    async def get(self) -> dict[str, Any]:
        while not self._items:
            self._ready = trio.Event()
            await self._ready.wait()
        key, message = self._items.popitem(last=False)
        if self._events and self._events[0] == key:
            self._events.popleft()
        return message


class Page:
    """One connected page: what it watches and what it is owed."""

    def __init__(self, hub: Hub, state: WebState) -> None:
        self.hub = hub
        self.state = state
        self.outbox = Outbox()
        self.watching: str | None = None
        #: Does fetching the watched log mark it read (the page is visible)?
        self.read = True
        self.slots = trio.Semaphore(protocol.MAX_INFLIGHT)
        self._poke = trio.Event()
        self._last_log: Any = None
        self._watch_lock = trio.Lock()

    def put(self, message: dict[str, Any]) -> None:
        self.outbox.put(message)

    def poke(self) -> None:
        self._poke.set()

    async def writer(self, websocket: WebSocket, scope: trio.CancelScope) -> None:
        """Send the outbox, oldest first; when the page is gone, end the socket's tasks."""
        try:
            while True:
                message = await self.outbox.get()
                await websocket.send_text(json.dumps(message, separators=(",", ":")))
                if "id" in message:
                    self.slots.release()
        except Exception as exc:  # the page went away (WebSocketDisconnect, OSError, ...)
            log.debug("web: page gone: %r", exc)
            scope.cancel()

    async def log_loop(self) -> None:
        while True:
            await self._poke.wait()
            self._poke = trio.Event()
            group = self.watching
            if group is not None:
                try:
                    await self.push_log(group)
                except KithError as exc:
                    log.debug("web: log of %s: %s", group[:12], exc)
            await trio.sleep(protocol.DEBOUNCE)

    async def push_log(self, group: str, views: Any = None) -> None:
        client = self.hub.client
        if views is None:
            views = await client.call("log", group=group, read=self.read,
                                      limit=protocol.LOG_LIMIT)
        members = await client.call("group.members", group=group)
        if self.watching != group or (views, members) == self._last_log:
            return
        self._last_log = (views, members)
        self.put(protocol.push("log", group=group, log=views, members=members))

    async def run_request(self, request_id: int | None, op: str, params: dict[str, Any]) -> None:
        try:
            result = await self.execute(op, params)
        except KithError as exc:
            self.put(protocol.failure(request_id, str(exc)))
        except Exception as exc:  # a bug costs this request, never the page
            log.exception("web: %s failed", op)
            self.put(protocol.failure(request_id, f"internal error ({type(exc).__name__})"))
        else:
            self.put(protocol.answer(request_id, result))
            if op not in READ_ONLY:
                self.hub.poke()

    async def execute(self, op: str, params: dict[str, Any]) -> Any:
        if op == "watch":
            read = params.get("read", True)
            if not isinstance(read, bool):
                raise KithError('"read" is true or false')
            return await self.watch(params.get("group"), read)
        if op == "verify":
            peer, verified = params.get("peer"), params.get("verified")
            if not isinstance(peer, str) or not isinstance(verified, bool):
                raise KithError('verify needs "peer" (a peer id) and "verified" (true or false)')
            await trio.to_thread.run_sync(self.state.verified.set, peer, verified)
            return None
        if op == "verified":
            return await trio.to_thread.run_sync(self.state.verified.load)
        return await self.hub.client.call(op, **params)

    async def watch(self, group: Any, read: bool = True) -> Any:
        async with self._watch_lock:  # two quick switches: the later one wins
            return await self._watch(group, read)

    async def _watch(self, group: Any, read: bool) -> Any:
        if group is None:
            self.watching = None
            return None
        if not isinstance(group, str) or not group:
            raise KithError('watch needs "group" (a group id or name, or null)')
        views = await self.hub.client.call("log", group=group, read=read,
                                           limit=protocol.LOG_LIMIT)
        if self.hub.group_id(group) is None:
            await self.hub.refresh()  # a group made a moment ago
        group_id = self.hub.group_id(group) or group
        self.watching = group_id
        self.read = read
        self._last_log = None
        self.put(protocol.push("typing", group=group_id, names=self.hub.typing_names(group_id)))
        self.poke()
        self.hub.poke()  # its unread count is now 0
        return views


async def serve(websocket: WebSocket, hub: Hub, state: WebState) -> None:
    """The WebSocket of one page, until it closes (already guarded by ``Guard``)."""
    await websocket.accept()
    page = Page(hub, state)
    hub.attach(page)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(page.writer, websocket, nursery.cancel_scope)
            nursery.start_soon(page.log_loop)
            await _read(websocket, page, nursery)
            nursery.cancel_scope.cancel()
    except* WebSocketDisconnect:
        pass
    finally:
        hub.detach(page)


async def _read(websocket: WebSocket, page: Page, nursery: trio.Nursery) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("text")
        if data is None:
            data = message.get("bytes") or b""
        size = len(data.encode()) if isinstance(data, str) else len(data)
        if size > protocol.MAX_MESSAGE:  # (Hypercorn closes it first; this is for others)
            await websocket.close(code=1009, reason="message too big")
            return
        await page.slots.acquire()
        try:
            request_id, op, params = protocol.parse(data)
        except protocol.BadRequest as exc:
            page.put(protocol.failure(exc.request_id, str(exc)))
            continue
        nursery.start_soon(page.run_request, request_id, op, params)
