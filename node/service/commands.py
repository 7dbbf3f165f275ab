"""``GroupCommands``: what a user can do to a group, as commands for its member core.

Each operation turns into one ``node.group.commands`` input; a refusal comes
back as a ``GroupError`` with the core's one-line reason. While storage is paused
(``node.service.driver``) every operation that writes is refused with one line
(``StoragePausedError``, a ``GroupError`` too) before it reaches the core.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence

import nacl.utils

from node.errors import GroupError, StoragePausedError, StorageUnavailableError
from node.group import commands as C
from node.group.bodies import Body, Role
from node.group.bodies import Relay as RelayBody
from node.group.content import Content, Thread
from node.group.events import Event, EventId
from node.group.member import Member
from node.ids import PeerId
from node.service.driver import EffectDriver
from node.store.db import GroupRow

log = logging.getLogger("node.service.groups")  # one logger for the group service


#: What a relay-only node says to anything that would author.
RELAY_NODE_REFUSAL = ("this node is a relay (kith run --relay): it stores and forwards "
                      "groups' events but cannot create, post to or change a group")

class GroupCommands(EffectDriver):
    def expire_mutes(self, now: float) -> list[Event]:
        """As owner or admin, UNMUTE the members whose timed mute ended by our clock."""
        unmuted: list[Event] = []
        if self.storage_paused is not None or self.node.config.relay:
            return unmuted  # the next beat after resuming does it; a relay never authors
        for group in list(self.groups.values()):
            if group.core.state.muted():  # (nothing to end: no input, no idle work)
                unmuted += self.run_effects(group, group.handle(C.ExpireMutes(), now))
        return unmuted

    def create(
        self, name: str, mode: str = "private", max_members: int = 500,
        share_history: bool = False, policy: str = "",
    ) -> Member:
        if self.storage_paused is not None:
            raise self.storage_refusal()
        if self.node.config.relay:
            raise GroupError(RELAY_NODE_REFUSAL)
        now = time.time()
        group, effects = Member.found(self.identity, nacl.utils.random, now, name, mode,
                                      max_members, share_history, policy, self.settings)
        group.connected = set(self.node.connections)
        self.groups[group.id] = group
        try:  # the group's row and its first events in one transaction
            self._run(group, effects, local=True,
                      first=lambda: self.store.add_group(GroupRow(group.id, name, mode, now)))
        except StorageUnavailableError as exc:
            del self.groups[group.id]  # never stored, never sent: as if not asked
            self.storage_failed(exc)
            raise self.storage_refusal() from exc
        except BaseException:
            del self.groups[group.id]
            raise
        log.info("created %s group %s (%s)", mode, name, group.id.hex()[:12])
        return group

    def find(self, text: str) -> Member:
        """A group by id (hex, or a unique prefix of at least 6 digits) or by unique name."""
        text = text.strip()
        by_name = [g for g in self.groups.values() if g.core.state.name == text]
        if len(by_name) == 1:
            return by_name[0]
        if len(by_name) > 1:
            raise GroupError(f"several groups are called {text!r}; use the group id")
        lowered = text.lower()
        if len(lowered) >= 6 and all(c in "0123456789abcdef" for c in lowered):
            by_id = [g for g in self.groups.values() if g.id.hex().startswith(lowered)]
            if len(by_id) == 1:
                return by_id[0]
            if len(by_id) > 1:
                raise GroupError(f"{text!r} matches several groups; give more of the id")
        raise GroupError(f"no group {text!r} (see `kith group list`)")

    def command(self, group: Member, command: C.Command) -> Event:
        """Run a command that authors an event; ``GroupError`` with the reason if refused."""
        event = self.handle(group, command)
        if event is None:
            raise GroupError("nothing was sent")
        return event

    def author(self, group: Member, body: Body) -> Event:
        """Author ``body`` as is (membership and open-group operations)."""
        return self.command(group, C.AuthorBody(body))

    def add(self, group: Member, peer: PeerId, role: Role = Role.MEMBER,
            label: str = "") -> Event:
        return self.command(group, C.AddMember(peer, role, label))

    def remove(self, group: Member, peer: PeerId) -> Event:
        return self.command(group, C.RemoveMember(peer))

    def relay(self, group: Member, peer: PeerId, on: bool = True) -> Event:
        """Designate (``on``) or undesignate ``peer`` as a relay of ``group`` (admins)."""
        return self.command(group, C.AuthorBody(RelayBody(peer, on)))

    def ban(self, group: Member, peer: PeerId, until: int = 0) -> Event:
        """Ban ``peer`` (``until``: unix seconds when an admin's node lifts it, 0 = never)."""
        return self.command(group, C.BanMember(peer, until))

    def set_role(self, group: Member, peer: PeerId, role: Role) -> Event:
        return self.command(group, C.SetMemberRole(peer, role))

    def leave(self, group: Member) -> Event:
        return self.command(group, C.LeaveGroup())

    def send(self, group: Member, text: str, *, reply_to: EventId | None = None,
             mentions: Sequence[PeerId] = ()) -> Event:
        """Post ``text`` (a reply to ``reply_to``, mentioning ``mentions``)."""
        return self.command(group, C.SendText(text, reply_to, tuple(mentions)))

    def post(self, group: Member, content: Content) -> Event:
        """Encrypt and send one MESSAGE with ``content``."""
        return self.command(group, C.PostContent(content))

    def thread(self, group: Member, target: EventId, *, readable: bool = False) -> Thread:
        """The visible, not deleted post ``target``, or a GroupError saying why not."""
        thread = group.thread(target, readable=readable)
        if isinstance(thread, str):
            raise GroupError(thread)
        return thread

    def edit(self, group: Member, target: EventId, text: str,
             mentions: Sequence[PeerId] = ()) -> Event:
        return self.command(group, C.EditText(target, text, tuple(mentions)))

    def react(self, group: Member, target: EventId, emoji: str, remove: bool = False) -> Event:
        return self.command(group, C.ReactTo(target, emoji, remove))

    def delete(self, group: Member, target: EventId) -> Event:
        return self.command(group, C.DeleteMessage(target))

    def pin(self, group: Member, target: EventId, pin: bool = True) -> Event:
        return self.command(group, C.PinMessage(target, pin))

    def mute(self, group: Member, peer: PeerId, until: int = 0, *, mute: bool = True) -> Event:
        """An admin's mute of a member (``until``: unix seconds, 0 = until unmuted)."""
        return self.command(group, C.MuteMember(peer, until, mute))

    def set_notify_muted(self, group: Member, muted: bool) -> None:
        if self.storage_paused is not None:
            raise self.storage_refusal()
        try:
            self.store.set_notify_muted(group.id, muted)
        except StorageUnavailableError as exc:
            self.storage_failed(exc)
            raise self.storage_refusal() from exc
        group.notify_muted = muted

    def unread(self, group: Member) -> int:
        """Visible posts from others after our (local) read position."""
        return group.unread()

    def mark_read(self, group: Member) -> None:
        """The user has seen everything delivered so far: remember it, announce it (coalesced).

        While storage is paused nothing is remembered (the next read after it counts).
        """
        with contextlib.suppress(StoragePausedError):
            self.handle(group, C.MarkRead())

    def typing(self, group: Member, now: float | None = None) -> bool:
        """Tell the online members we are typing; False if rate-limited (not sent)."""
        if self.me not in group.core.state.members:
            raise GroupError("you are not a member of this group")
        try:
            self.handle(group, C.StartTyping(), now)
        except GroupError:
            return False
        return True

    def is_typing(self, group: Member, peer: PeerId, now: float | None = None) -> bool:
        return group.is_typing(peer, time.time() if now is None else now)

    def label(self, group: Member) -> str:
        return group.label

