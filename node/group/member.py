"""The member core: everything one member does in one group (pure).

Theory of operation
-------------------
``Member.handle(input, now) -> list[Effect]`` is the whole protocol a member
runs: receiving events, copies, acks and vectors from peers (``Received``),
channels coming and going (``PeerUp``, ``PeerDown``), time passing (``Tick``,
``Announce``) and the user's commands (``node.group.commands``). The node's
``GroupService`` and the simulator both drive it; neither holds a copy of the
protocol. Effects and the order a driver runs them in are described in
``node.group.member_io``; the behaviour is layered by concern:

* ``member_state``: the data, the conversation fold, effect helpers;
* ``delivery``: acks, the outbox, invitations, batched pushes;
* ``authoring``: our own events, fanout, sender keys, membership reactions;
* ``receiving``: delivering, decrypting and storing others' events;
* ``sessions``: version vectors, sync sessions, nudges.

``handle`` never raises: a peer's input that breaks a rule is dropped with a
``Warn`` effect saying why; a command that cannot be done returns
``Refused(reason)``. If handling ever fails on a bug, the rest of the input is
dropped with an ERROR warning; the effects gathered so far are returned, since
the state already took them in (the stateful test fails on any such warning).

A member restarts from exactly what it persisted: ``restore`` takes the
stored events (in storage order), contents and key state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from node.crypto.keys import IdentityKey
from node.crypto.sender_keys import OwnSenderKey, SenderKeyState
from node.errors import KithError
from node.group import commands as C
from node.group import keys as K
from node.group.authoring import NotAccepted
from node.group.bodies import (
    Add,
    Ban,
    Create,
    Delete,
    Leave,
    Mute,
    Pin,
    Relay,
    Remove,
    Role,
    SetRole,
    group_id_for,
)
from node.group.content import Content, Edit, Post, React, Thread, check_emoji
from node.group.events import Event, EventError, EventId
from node.group.member_io import (
    Ack,
    Announce,
    Authored,
    Effect,
    Events,
    Got,
    HistoryWanted,
    Input,
    PeerDown,
    PeerUp,
    Received,
    Refused,
    SaveReadMarks,
    SetLeft,
    Tick,
    Typing,
    TypingSeen,
    Vector,
    Warn,
)
from node.group.member_state import Settings
from node.group.sessions import Sessions
from node.group.state import Delivered, GroupCore
from node.ids import PeerId


class Member(Sessions):
    """One group as one member runs it (see the module docstring)."""

    @classmethod
    def found(
        cls, identity: IdentityKey, rng: K.Rng, now: float, name: str, mode: str = "private",
        max_members: int = 500, share_history: bool = False, policy: str = "",
        settings: Settings | None = None,
    ) -> tuple[Member, list[Effect]]:
        """A new group with us as its owner (the effects persist its CREATE)."""
        nonce = rng(16)
        group_id = group_id_for(identity.peer_id, nonce)
        member = cls(identity, GroupCore(group_id), rng, joined_at=now, settings=settings)
        body = Create(name, mode, nonce, max_members, share_history=share_history,
                      policy=policy)
        return member, member.handle(C.AuthorBody(body), now)

    # -- the one entry point --

    def handle(self, input: Input | C.Command, now: float) -> list[Effect]:
        self.out, self.now = [], now
        try:
            self._dispatch(input)
        except (KithError, NotAccepted, ValueError, KeyError, AssertionError) as exc:
            # A bug, or an input we failed to anticipate: stop handling it, keep the group
            # alive. The effects so far stay: they match what the state already took in.
            self.out.append(Warn(logging.ERROR, f"group {self.label}: stopped handling "
                                 f"{type(input).__name__}: {type(exc).__name__}: {exc}"))
        out, self.out = self.out, []
        return out

    def _dispatch(self, input: Input | C.Command) -> None:
        if isinstance(input, Received):
            self._received(input.sender, input)
        elif isinstance(input, PeerUp):
            self.peer_up(input.peer)
        elif isinstance(input, PeerDown):
            self.peer_down(input.peer)
        elif isinstance(input, Tick):
            self.tick()
            self.flush_receipts()
            self.flush_acks()
        elif isinstance(input, Announce):
            self.announce_all()
        elif isinstance(input, HistoryWanted):
            self.invited.add(input.peer)  # as for an ADD: we owe it what it lacks
            self.push(input.peer, self.core.ordered())
            # then our vector: the asker has everything once its frontier covers it
            self.send(input.peer, Vector(self.vector(), want=False), "vector")
        else:
            self._command(input)

    def _received(self, sender: PeerId, message: Received) -> None:
        payload = message.payload
        if isinstance(payload, Ack | Got):
            self.on_ack(sender, payload)
        elif isinstance(payload, Vector):
            self.on_vector_receipt(sender, payload)
            self.on_vector(sender, payload)
        elif isinstance(payload, Typing):
            self.on_typing(sender)
        elif isinstance(payload, Events):
            self.ack(sender, self.receive(sender, payload), payload)

    def on_typing(self, sender: PeerId) -> None:
        state = self.core.state
        if sender not in state.members or state.role(sender) is Role.GUEST \
                or sender in state.muted():
            return  # only members who may post; never stored
        self.typing[sender] = self.now
        self.out.append(TypingSeen(sender))

    # -- commands --

    def _command(self, cmd: C.Command) -> None:
        try:
            event = self._run(cmd)
        except NotAccepted as exc:
            self.out = [Refused(exc.reason)]
            return
        except _Refusal as exc:
            self.out = [Refused(str(exc))]
            return
        if event is not None:
            self.out.insert(0, Authored(event))

    def _run(self, cmd: C.Command) -> Event | None:
        if isinstance(cmd, C.SendText):
            if cmd.reply_to is not None:
                self._thread(cmd.reply_to)  # must be a message we can see
            return self._post(Post(cmd.text, cmd.reply_to, tuple(sorted(set(cmd.mentions)))))
        if isinstance(cmd, C.PostContent):
            return self._post(cmd.content)
        if isinstance(cmd, C.EditText):
            thread = self._thread(cmd.target, readable=True)
            if thread.author != self.me:
                raise _Refusal("only the author may edit a message")
            return self._post(Edit(cmd.target, cmd.text, tuple(sorted(set(cmd.mentions)))))
        if isinstance(cmd, C.ReactTo):
            self._thread(cmd.target)
            try:
                check_emoji(cmd.emoji)
            except EventError as exc:
                raise _Refusal(str(exc)) from None
            return self._post(React(cmd.target, cmd.emoji, cmd.remove))
        if isinstance(cmd, C.DeleteMessage):
            self._thread(cmd.target)
            return self.author(Delete(cmd.target))
        if isinstance(cmd, C.PinMessage):
            self._thread(cmd.target)
            return self.author(Pin(cmd.target, cmd.pin))
        if isinstance(cmd, C.MuteMember):
            return self.author(Mute(cmd.peer, cmd.mute, cmd.until))
        if isinstance(cmd, C.AddMember):
            event = self.author(Add(cmd.peer, cmd.role, cmd.label))
            self.invite(cmd.peer)
            return event
        if isinstance(cmd, C.RemoveMember):
            return self.author(Remove(cmd.peer))
        if isinstance(cmd, C.BanMember):
            return self.author(Ban(cmd.peer, cmd.until))
        if isinstance(cmd, C.SetMemberRole):
            return self.author(SetRole(cmd.peer, cmd.role))
        if isinstance(cmd, C.LeaveGroup):
            event = self.author(Leave())
            self.out.append(SetLeft(True))
            return event
        if isinstance(cmd, C.AuthorBody) and isinstance(cmd.body, Relay) and cmd.body.on:
            event = self.author(cmd.body)
            self.invited.add(cmd.body.peer)  # a relay, like a newcomer, is owed the log
            self.invite(cmd.body.peer)
            return event
        if isinstance(cmd, C.AuthorBody):
            return self.author(cmd.body)
        if isinstance(cmd, C.MarkRead):
            self._mark_read()
            return None
        if isinstance(cmd, C.StartTyping):
            if self.me not in self.core.state.members:
                raise _Refusal("you are not a member of this group")
            if not self.start_typing():
                raise _Refusal("rate-limited")
            return None
        if isinstance(cmd, C.ExpireMutes):
            self.expire_mutes()
            return None
        if isinstance(cmd, C.RotateKey):
            if self.core.mode != "private":
                raise _Refusal("only private groups have sender keys")
            reason = self.check_can_key()
            if reason is not None:
                raise _Refusal(reason)
            return self.rotate()
        raise _Refusal(f"unknown command {type(cmd).__name__}")

    def _post(self, content: Content) -> Event:
        reason = self.check_can_post()
        if reason is not None:
            raise _Refusal(reason)
        return self.post(content)

    def _thread(self, target: EventId, *, readable: bool = False) -> Thread:
        thread = self.thread(target, readable=readable)
        if isinstance(thread, str):
            raise _Refusal(thread)
        return thread

    def _mark_read(self) -> None:
        latest = self.last_messages_of_others()
        moved = {a: n for a, n in latest.items() if n > self.read_marks.get(a, 0)}
        if moved:
            self.out.append(SaveReadMarks(tuple(sorted(moved.items()))))
            self.read_marks.update(moved)
        if self.me not in self.core.state.members or not self.settings.read_receipts:
            return
        if self.read_delta():
            self.unread_receipt = True

    def unread(self) -> int:
        """Visible posts from others after our (local) read position."""
        count = 0
        for thread in self.conversation().threads.values():
            event = self.core.get(thread.id)
            if (event is not None and thread.author != self.me and thread.deleted_by is None
                    and event.seq > self.read_marks.get(thread.author, 0)):
                count += 1
        return count

    # -- restarting from what was persisted --

    def restore_from(
        self, events: Iterable[tuple[Event, float, str | None, Content | None]],
        own: tuple[int, OwnSenderKey, frozenset[PeerId]] | None,
        own_history: list[tuple[int, OwnSenderKey]],
        peer_keys: dict[tuple[PeerId, int], SenderKeyState],
        acked: dict[EventId, dict[PeerId, float]],
        copies: dict[EventId, bytes], own_copies: dict[EventId, dict[PeerId, bytes]],
        read_marks: dict[PeerId, int],
    ) -> list[Effect]:
        """Rebuild from the store (events in storage order); returns effects to run (a
        delete that did not finish erasing before a crash is erased again)."""
        self.out = []
        if own is not None:
            self.keys.own = K.OwnKey(*own)
        self.own_history = list(own_history)
        self.keys.peers = dict(peer_keys)
        self.acked = {k: dict(v) for k, v in acked.items()}
        self.copies = dict(copies)
        self.own_copies = {k: dict(v) for k, v in own_copies.items()}
        self.read_marks = dict(read_marks)
        for event, received_at, text, content in events:
            for effect in self.core.receive(event):
                if isinstance(effect, Delivered):
                    self.note(effect)
            if event.author == self.me:
                self.own_ids.add(event.id)
            self.texts[event.id] = text
            self.joined_at[event.id] = received_at
            if content is not None:
                self.contents[event.id] = content
        self.restore_receipts()
        for target in self.core.deleted:  # a delete is final, also after a crash
            if self.texts.get(target) is not None or target in self.contents:
                self.erase(target)
        out, self.out = self.out, []
        return out


class _Refusal(Exception):
    pass

