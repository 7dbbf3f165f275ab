"""``GroupHost``: what the attachment and open-group services need of the group service.

``FileService`` (node.service.files) and ``OpenGroups`` (node.service.open_groups)
work beside ``GroupService``: they read the groups it runs and ask it to author,
deliver and push events. They type against this protocol, never the class, so the
group service can build them without an import cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from node.group.bodies import Body
from node.group.content import Content
from node.group.events import Event
from node.group.member import Member
from node.group.state import GroupCore
from node.ids import EventId, GroupId, PeerId
from node.service.links import PeerLinks
from node.store.db import Store


class GroupHost(Protocol):
    @property
    def node(self) -> PeerLinks: ...

    @property
    def store(self) -> Store: ...

    @property
    def me(self) -> PeerId: ...

    @property
    def groups(self) -> dict[GroupId, Member]: ...

    def find(self, text: str) -> Member: ...

    def label(self, group: Member) -> str: ...

    def author(self, group: Member, body: Body) -> Event: ...

    def post(self, group: Member, content: Content) -> Event: ...

    def deliver(self, group: Member, events: Sequence[Event], sender: PeerId) -> None: ...

    def adopt(self, core: GroupCore, sender: PeerId, events: Sequence[Event],
              copies: dict[EventId, bytes]) -> Member: ...

    def offer_history(self, group: Member, peer: PeerId) -> None: ...

    def notify(self, group: Member, events: Sequence[Event] = ()) -> None: ...

    def notify_all(self) -> None: ...
