"""What a user (or an admin's node on its own) asks a member core to do.

Each command is an input of ``Member.handle``. It either authors events, in
which case the effects start with ``Authored(event)`` for the event the
command was about, or it cannot be done, in which case the only effect is
``Refused(reason)``, one line a user can read. A command never raises.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.group.bodies import Body, Role
from node.group.content import Content
from node.group.events import EventId
from node.ids import PeerId


@dataclass(frozen=True, slots=True)
class SendText:
    text: str
    reply_to: EventId | None = None
    mentions: tuple[PeerId, ...] = ()


@dataclass(frozen=True, slots=True)
class PostContent:
    """A MESSAGE with any content (a file reference, a raw edit...), checked as a post."""

    content: Content


@dataclass(frozen=True, slots=True)
class EditText:
    target: EventId
    text: str
    mentions: tuple[PeerId, ...] = ()


@dataclass(frozen=True, slots=True)
class ReactTo:
    target: EventId
    emoji: str
    remove: bool = False


@dataclass(frozen=True, slots=True)
class DeleteMessage:
    target: EventId


@dataclass(frozen=True, slots=True)
class PinMessage:
    target: EventId
    pin: bool = True


@dataclass(frozen=True, slots=True)
class MuteMember:
    peer: PeerId
    until: int = 0  # unix seconds, 0 = until unmuted
    mute: bool = True


@dataclass(frozen=True, slots=True)
class AddMember:
    peer: PeerId
    role: Role = Role.MEMBER
    label: str = ""


@dataclass(frozen=True, slots=True)
class RemoveMember:
    peer: PeerId


@dataclass(frozen=True, slots=True)
class BanMember:
    peer: PeerId
    until: int = 0  # unix seconds when an admin's node lifts it, 0 = never


@dataclass(frozen=True, slots=True)
class SetMemberRole:
    peer: PeerId
    role: Role


@dataclass(frozen=True, slots=True)
class LeaveGroup:
    pass


@dataclass(frozen=True, slots=True)
class AuthorBody:
    """Any other membership or open-group operation (JOIN, APPROVE, UNBAN...), as is."""

    body: Body


@dataclass(frozen=True, slots=True)
class MarkRead:
    """The user has seen everything delivered so far (local mark; a receipt follows)."""


@dataclass(frozen=True, slots=True)
class StartTyping:
    """Tell the online members we are typing (rate-limited; never stored)."""


@dataclass(frozen=True, slots=True)
class ExpireMutes:
    """As owner or admin, end the timed mutes whose end ``now`` has passed."""


@dataclass(frozen=True, slots=True)
class RotateKey:
    """Start a fresh sender key now (private groups; otherwise lazily, before a message)."""


Command = (
    SendText | PostContent | EditText | ReactTo | DeleteMessage | PinMessage | MuteMember
    | AddMember | RemoveMember | BanMember | SetMemberRole | LeaveGroup | AuthorBody | MarkRead
    | StartTyping | ExpireMutes | RotateKey
)
