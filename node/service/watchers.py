"""``Watchers``: who hears of a group's new events as they are stored (trio; a base of
the effect driver, ``node.service.driver.EffectDriver``).

A watcher (``log --follow``, chat, the web client, a benchmark's receiver) gets a
memory channel of a group's events (``watch``) or of its events and typing
notices (``watch_notices``). The driver tells them once a batch is stored, in
input order (``notify``): nothing reaches a watcher before it is in the store.
A watcher that falls ``WATCH_BUFFER`` items behind is cut off (its channel
closes) rather than hold memory for it; a closed one is forgotten.
``wait_until`` waits for any change the driver announces (``notify_all``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import trio

from node.errors import StorageError
from node.group.events import Event, GroupId
from node.group.member import Member
from node.ids import PeerId
from node.service.files import FileService

log = logging.getLogger("node.service.groups")  # one logger for the group service
_T = TypeVar("_T")

#: A watcher (log --follow, chat) that falls this many events behind is cut off. Events a
#: batch stores reach it at once and it takes one per scheduling round, so this is well
#: above a batch (the buffer holds references to events the member core keeps anyway).
WATCH_BUFFER = 16384


@dataclass(frozen=True, slots=True)
class TypingNotice:
    """``author`` is typing in ``group`` (ephemeral: streamed to followers, never stored)."""

    group: GroupId
    author: PeerId


Notice = Event | TypingNotice


class Watchers:
    """The watchers of every group, and the change event ``wait_until`` waits on."""

    files: FileService | None

    def __init__(self) -> None:
        super().__init__()
        self._watchers: dict[GroupId, list[trio.MemorySendChannel[Event]]] = {}
        self._notice_watchers: dict[GroupId, list[trio.MemorySendChannel[Notice]]] = {}
        self._changed = trio.Event()

    def commit(self) -> bool:
        """Store the open batch (the driver's): a watch starts after it."""
        raise NotImplementedError

    def notify(self, group: Member, events: Sequence[Notice] = ()) -> None:
        """Tell watchers of ``group`` (and whoever waits in ``wait_until``)."""
        self._notify(group, events)

    def _notify(self, group: Member, events: Sequence[Notice]) -> None:
        plain = [e for e in events if isinstance(e, Event)]
        if plain and self.files is not None:
            try:
                self.files.notice(group, plain)  # files in newly readable messages
            except StorageError as exc:  # tracked again when the node next starts
                log.warning("%s", exc)
        _send_all(self._watchers.get(group.id, []), plain)
        _send_all(self._notice_watchers.get(group.id, []), events)
        self.notify_all()

    def watch(self, group: Member) -> trio.MemoryReceiveChannel[Event]:
        """New events of ``group`` as they are delivered (the open batch is stored first:
        a snapshot taken after this holds nothing the watch will announce again)."""
        self.commit()
        send, receive = trio.open_memory_channel[Event](WATCH_BUFFER)
        self._watchers.setdefault(group.id, []).append(send)
        return receive

    def watch_notices(self, group: Member) -> trio.MemoryReceiveChannel[Notice]:
        """New events of ``group`` and typing notices, as they happen (as ``watch``)."""
        self.commit()
        send, receive = trio.open_memory_channel[Notice](WATCH_BUFFER)
        self._notice_watchers.setdefault(group.id, []).append(send)
        return receive

    def notify_all(self) -> None:
        """Wake whoever waits in ``wait_until``."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self._changed.wait()


def _send_all(watchers: list[trio.MemorySendChannel[_T]], items: Sequence[_T]) -> None:
    for watcher in list(watchers):
        for item in items:
            try:
                watcher.send_nowait(item)
            except trio.WouldBlock:  # a follower that fell far behind: end its stream
                watcher.close()
                watchers.remove(watcher)
                break
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                watchers.remove(watcher)
                break
