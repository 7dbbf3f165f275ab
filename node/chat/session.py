"""The chat controller: keeps the model fresh and runs the user's commands, off the UI.

Tasks (all in one nursery, owned by ``ChatSession.run``):

* refresh: asks the node for ``group.list``, ``peers``, and for the current group
  its ``log`` (marking it read: it is on screen) and ``group.members``; again
  every ``poll`` seconds, or at once when poked (a new event, a command done).
  Delivery and read marks change without an event (acks), hence the polling.
* one follower per group: ``log`` with follow, for live events and typing
  notices in every group, and so for notifications in groups not on screen.
  A follower whose connection drops comes back after ``RETRY`` seconds.
* one task per command the user enters, so a slow node never blocks typing.

Every failure lands in the status line; nothing here raises into the UI.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import trio

from node.chat.backend import NodeClient
from node.chat.commands import (
    Local,
    Request,
    UsageError,
    discovered_lines,
    help_lines,
    interpret,
    peer_lines,
)
from node.chat.model import ChatModel, Notification
from node.chat.render import size_text
from node.chat.text import clean
from node.errors import KithError

log = logging.getLogger(__name__)

#: Seconds between refreshes when nothing happens.
POLL = 1.5
#: Seconds before a dropped follow stream is opened again.
RETRY = 2.0
#: Messages of the current group fetched for the screen.
LOG_LIMIT = 500
#: Shortest interval between two typing notices we send.
TYPING_EVERY = 3.0
#: Seconds between progress polls while a file is sent or received.
FILE_POLL = 0.2


def absolute(path: str) -> str:
    """``path`` for the node (which may run elsewhere in the file system): ``~`` expanded,
    relative to where the client runs."""
    return os.path.abspath(os.path.expanduser(path))


def progress_text(verb: str, name: str, done: int, total: int) -> str:
    percent = done * 100 // total if total else 100
    return f"{verb} {clean(name)}: {percent}% ({size_text(done)} of {size_text(total)})"


def unsupported(error: str, command: str) -> str | None:
    """The node is older than the client: say so for ``command`` instead of a raw error."""
    if error.startswith("unknown op"):
        return f"this node does not support {command} yet"
    return None


class ChatSession:
    def __init__(
        self,
        client: NodeClient,
        model: ChatModel,
        *,
        on_change: Callable[[], None] = lambda: None,
        notify: Callable[[Notification], None] = lambda note: None,
        on_quit: Callable[[], None] = lambda: None,
        on_help: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.time,
        poll: float = POLL,
    ) -> None:
        self.client = client
        self.model = model
        self.on_change = on_change
        self.notify = notify
        self.on_quit = on_quit
        self.on_help = on_help
        self.clock = clock
        self.poll = poll
        self._nursery: trio.Nursery | None = None
        self._poke = trio.Event()
        self._following: set[str] = set()
        self._typing_sent: dict[str, float] = {}
        self._typing_supported = True
        #: Bumped by each finished refresh (tests wait on it).
        self.refreshes = 0
        self._refreshed = trio.Event()

    # -- running ----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        me = await self.client.call("id")
        self.model.me = str(me["peer_id"])
        self.model.my_name = str(me.get("name") or "")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._refresh_loop)
            task_status.started()
            await trio.sleep(math.inf)

    def poke(self) -> None:
        self._poke.set()

    async def wait_refreshed(self) -> None:
        """Until the next refresh has finished (for tests)."""
        await self._refreshed.wait()

    async def _refresh_loop(self) -> None:
        while True:
            self._poke = trio.Event()
            await self.refresh()
            self.refreshes += 1
            self._refreshed.set()
            self._refreshed = trio.Event()
            with trio.move_on_after(self.poll):
                await self._poke.wait()

    async def refresh(self) -> None:
        model = self.model
        try:
            model.set_groups(await self.client.call("group.list"))
            for group in model.groups:
                self._follow(group.id)
            model.set_peers(await self.client.call("peers"))
            current = model.current
            if current is not None:
                views = await self.client.call("log", group=current, read=True, limit=LOG_LIMIT)
                model.set_log(current, views)
                model.set_members(current, await self.client.call("group.members",
                                                                   group=current))
            if model.status.startswith("node: "):
                model.status = ""
        except KithError as exc:
            model.status = f"node: {exc}"
        self.on_change()

    def _follow(self, group_id: str) -> None:
        if group_id not in self._following and self._nursery is not None:
            self._following.add(group_id)
            self._nursery.start_soon(self._follow_group, group_id)

    async def _follow_group(self, group_id: str) -> None:
        def on_item(view: Any) -> None:
            if not isinstance(view, dict):
                return
            note = self.model.on_stream_event(group_id, view, self.clock())
            if note is not None:
                self.notify(note)
            if view.get("kind") == "typing":
                self.on_change()
            else:
                self.poke()

        while True:
            try:
                await self.client.follow(on_item, "log", group=group_id, limit=1)
            except KithError as exc:
                log.debug("follow %s: %s", group_id[:12], exc)
            await trio.sleep(RETRY)

    # -- user actions ------------------------------------------------------------

    def switch(self, group_id: str | None) -> None:
        if group_id is not None and group_id != self.model.current:
            self.model.switch(group_id)
            self.on_change()
            self.poke()

    def submit(self, line: str) -> bool:
        """Run what the user entered, in the background; the status line tells how it went.

        False when the line cannot be run as it is (the user may want to fix it)."""
        try:
            action = interpret(line, self.model)
        except UsageError as exc:
            self.model.status = str(exc)
            self.on_change()
            return False
        if isinstance(action, Local):
            self._local(action)
        elif self._nursery is not None:
            self._nursery.start_soon(self.execute, action)
        self.on_change()
        return True

    def _local(self, action: Local) -> None:
        model = self.model
        if action.action == "help" and self.on_help is not None:
            self.on_help()
        elif action.action == "help":
            for line in help_lines():
                model.notice(line)
            model.status = "commands listed below the conversation"
        elif action.action == "quit":
            self.on_quit()
        elif action.action == "switch":
            self.switch(action.arg)
        elif action.action == "notice":
            model.notice(action.arg)
            model.status = action.arg

    async def execute(self, request: Request) -> Any:
        """Send ``request`` to the node; report in the status line. Returns the result."""
        model = self.model
        if request.then in ("upload", "save"):
            return await self._file(request)
        if request.op == "send":
            model.status = "sending…"
            self.on_change()
        try:
            result = await self.client.call(request.op, **request.params)
        except KithError as exc:
            message = str(exc)
            model.status = unsupported(message, request.command) or f"{request.command}: {message}"
            self.on_change()
            return None
        model.status = request.done
        if request.op == "send" and "reply_to" in request.params and isinstance(result, dict) \
                and "reply_to" not in result:
            model.status = "this node does not support /reply yet (sent as a plain message)"
        if request.then == "switch" and isinstance(result, dict) and result.get("id"):
            model.set_groups(await self._groups_or(model))
            self.switch(str(result["id"]))
        elif request.then == "peers" and isinstance(result, list):
            model.set_peers(result)
            model.notice("Peers this node knows:")
            for line in peer_lines(model):
                model.notice(line)
        elif request.then == "discover" and isinstance(result, list):
            for line in discovered_lines(result):
                model.notice(line)
            model.status = f"{len(result)} open group(s) nearby" + (
                ": /join NAME" if result else "")
        self.poke()
        self.on_change()
        return result

    async def _file(self, request: Request) -> Any:
        """``/file`` and ``/save``, with progress in the status line."""
        model = self.model
        params = dict(request.params)
        try:
            if request.then == "upload":
                params["file"] = absolute(params["file"])
                upload = await self.client.call("file.send", **params)
                while upload["state"] == "encrypting":
                    model.status = progress_text("sending", upload["name"], upload["done"],
                                                 upload["size"])
                    self.on_change()
                    await trio.sleep(FILE_POLL)
                    upload = await self.client.call("file.upload", group=params["group"],
                                                    upload=upload["upload"])
                if upload["state"] == "failed":
                    raise KithError(upload["error"] or "sending failed")
                model.status = f"sent {clean(upload['name'])} ({size_text(upload['size'])})"
                result = upload
            else:
                params["dir"] = absolute(params["dir"])
                status = await self.client.call("file.status", group=params["group"],
                                                event=params["event"])
                while status["state"] == "fetching":
                    model.status = progress_text("receiving", status["name"],
                                                 status["bytes_have"], status["size"])
                    if status["stalled"]:
                        model.status += " - waiting for a member who has it"
                    self.on_change()
                    await trio.sleep(FILE_POLL)
                    status = await self.client.call("file.status", group=params["group"],
                                                    event=params["event"])
                result = await self.client.call("file.save", **params)
                model.status = f"saved {clean(result['path'])}"
        except KithError as exc:
            message = str(exc)
            model.status = unsupported(message, request.command) or f"{request.command}: {message}"
            result = None
        self.poke()
        self.on_change()
        return result

    async def _groups_or(self, model: ChatModel) -> list[dict[str, Any]]:
        try:
            groups: list[dict[str, Any]] = await self.client.call("group.list")
            return groups
        except KithError:
            return [{"id": g.id, "name": g.name} for g in model.groups]

    def typed(self) -> None:
        """The user is typing a message: tell the group now and then (if the node can)."""
        group = self.model.current
        if group is None or not self._typing_supported or self._nursery is None:
            return
        now = self.clock()
        if now - self._typing_sent.get(group, -math.inf) < TYPING_EVERY:
            return
        self._typing_sent[group] = now
        self._nursery.start_soon(self._send_typing, group)

    async def _send_typing(self, group: str) -> None:
        try:
            await self.client.call("typing", group=group)
        except KithError as exc:
            if str(exc).startswith("unknown op"):
                self._typing_supported = False
