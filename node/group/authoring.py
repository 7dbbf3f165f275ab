"""Authoring our own events, fanout, and reacting to membership changes (pure).

Theory of operation
-------------------
**Author.** An event of ours is signed (a private message with the epoch's
signing key, everything else with the identity key), delivered to our own
``GroupCore`` first (so we never send what we ourselves would reject), then
persisted, with the key state it changed and its pairwise copies, and only
then pushed (effects run persist-first). Our sender-chain step is persisted in
the same transaction as the event, so a crash can never reuse a message key.

**Fanout.** The author pushes each new event straight to every other member
that is connected, one payload shared by all (pairwise mode: each recipient's
own ciphertext added). Who was a member before the event hears of it too, so
a member being removed learns of its removal. The group's connected relays get
it too, with every recipient's copy addressed by recipient (``held``), so they
can hand it to members who are offline now. With ``Settings.fanout == "relay"``
and a relay connected, the author sends one copy to one relay (the first in
peer-id order), flagged ``fanout``, and nothing to the members: the relay
pushes it on (``node.group.relaying``); members still sync with each other,
so a relay that withholds it delays it, no more.

**Sender keys.** A member rotates lazily, before its next message, whenever
someone who holds its current key is no longer a member. It hands its current
chain to newcomers (they read from now on) and, if the group shares history,
the starting keys of its earlier epochs. Every epoch's starting key is kept
(``own_history``) for one more reason: after a partition in which conflicting
removals resolved so that a member stays, that member never received the keys
we made while it looked removed to us. When it shows up as a member who lacks
our current key without having been added again (``restore``), we hand it our
current chain and a HISTORY with the starting keys of the epochs it missed, so
content converges, not only event ids. A guest (or a member that left since)
may author neither, so it hands a fresh sealed copy of each missed epoch's
starting SENDER_KEY instead.

**Membership reactions always look at the current state.** One incoming batch
can hold a newcomer's ADD and, after it, our own removal or demotion; reacting
to the ADD's snapshot would author a SENDER_KEY the core no longer accepts.
Reactions check the state as it is now, and a refusal is a warning, never an
exception.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from node.crypto.sender_keys import OwnSenderKey
from node.group import keys as K
from node.group.bodies import (
    Body,
    Mute,
    OpenMessage,
    PrivateMessage,
    Receipt,
    Role,
    SenderKey,
    decode_body,
    encode_body,
    kind_of,
)
from node.group.content import Content, Edit, Thread, encode_content
from node.group.events import Event, EventId, Kind
from node.group.key_copies import KeyCopies, within
from node.group.member_io import (
    Authored,
    EraseContent,
    Events,
    SaveCopy,
    SaveEvent,
    SaveOwnHistory,
    SaveOwnKey,
    SendMany,
    SetLeft,
    SetName,
    Typing,
)
from node.group.member_state import ACK_TIMEOUT, BATCH_BYTES, TYPING_INTERVAL, display_text
from node.group.membership import MembershipEvent
from node.group.pairwise_restore import owed_copies
from node.group.state import Deleted, Delivered, Effect, MembershipChanged, Rejected
from node.ids import PeerId, short_id


class NotAccepted(Exception):
    """Our own core refused an event we were about to author."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Authoring(KeyCopies):
    # -- authoring --

    def author(
        self, body: Body, *, new_own: K.OwnKey | None = None, content: Content | None = None,
        copies: dict[PeerId, bytes] | None = None, counters: K.Counters | None = None,
        kind: str = "membership",
    ) -> Event:
        """Sign, deliver locally, persist (with key state), then push to the members."""
        behind = self.catching_up()
        if behind:
            raise NotAccepted(
                f"other members hold this node's own events up to seq {behind}, this node "
                f"only up to {self.core.frontier.get(self.me, 0)} (a restored backup or a "
                "copied data directory?); getting them first: try again in a moment")
        epoch = new_own.epoch if new_own is not None else self.epoch()
        audience = set(self.core.state.members)  # before: a removed member hears of it
        relays_before = frozenset(self.core.state.relays)  # (so does an undesignated relay)
        unsigned = self.core.next_event(self.me, epoch, kind_of(body), encode_body(body))
        if isinstance(body, PrivateMessage):
            assert new_own is not None
            signature = new_own.key.sign(unsigned.signing_bytes())
            signer = new_own.key.signing_public
        else:
            signature = self.identity.sign(unsigned.signing_bytes())
            signer = self.identity.public_key
        event = unsigned.signed(signature)
        effects = self.core.receive(event, signed_with=signer)  # (not verified again)
        rejected = [e for e in effects if isinstance(e, Rejected)]
        if rejected:
            raise NotAccepted(rejected[0].reason)
        text = display_text(content)
        self.out.append(SaveEvent(event, self.now, text, content))
        if new_own is not None:
            self.out.append(SaveOwnKey(new_own.epoch, new_own.key, new_own.recipients))
            self.keys.own = new_own
        for member, blob in (copies or {}).items():
            self.out.append(SaveCopy(event.id, member, blob))
        if copies:
            self.own_copies[event.id] = dict(copies)
        if content is not None:
            self.set_new_content(event.id, content)
        self.texts[event.id] = text
        self.apply_deletes(effects)
        self.own_ids.add(event.id)
        self.joined_at[event.id] = self.now
        if counters is not None:
            self.counters[event.id] = counters
        self.fanout(event, copies or {}, audience, kind, relays_before)
        self.after_delivery(effects)  # may author more (keys for newcomers): after
        return event

    def author_quietly(self, body: Body, what: str, *, new_own: K.OwnKey | None = None,
                       copies: dict[PeerId, bytes] | None = None,
                       kind: str = "membership") -> Event | None:
        """``author`` for reactions: a refusal is a warning, never an exception."""
        try:
            return self.author(body, new_own=new_own, copies=copies, kind=kind)
        except NotAccepted as exc:
            self.warn(f"group {self.label}: cannot {what}: {exc.reason}", level=logging.INFO)
            return None

    def fanout(self, event: Event, copies: dict[PeerId, bytes], audience: set[PeerId],
               kind: str, relays_before: frozenset[PeerId] = frozenset()) -> None:
        relays = self.connected_relays(relays_before)
        for_relay, whole = within([(event.id, m, copies[m]) for m in sorted(copies)],
                                  BATCH_BYTES)
        if relays and whole and self.settings.fanout == "relay" and self.send(
                relays[0], Events((event,), held=for_relay, fanout=True), kind):
            # server-side fanout: the relay pushes it to the members it reaches; it is
            # not in flight to them from us (a member that asks gets it from us at once)
            self.via_relay[event.seq] = self.now
            if len(self.via_relay) > 1024:
                self.via_relay = {s: t for s, t in self.via_relay.items()
                                  if self.now - t < ACK_TIMEOUT}
            return
        for relay in relays:  # client-side: the relays hold it (and the copies) too
            self.send(relay, Events((event,), held=for_relay), kind)
        everyone = []
        holding = self.holders_for(event, copies)  # copies for members we cannot reach
        for member in sorted(set(self.core.state.members) | audience):
            own = ((event.id, copies[member]),) if member in copies else ()
            if own or member in holding:  # its own pairwise ciphertext or sealed sender key
                self.send(member, Events((event,), own, held=holding.get(member, ())), kind)
            elif member != self.me and member in self.connected:
                everyone.append(member)
        if everyone:  # the same payload (and bytes) for everyone else: one effect
            self.out.append(SendMany(tuple(everyone), Events((event,)), kind))

    def connected_relays(self, also: frozenset[PeerId] = frozenset()) -> list[PeerId]:
        """The group's relays (and ``also``) we have a channel to, in peer-id order."""
        relays = self.core.state.relays
        if also:
            relays = relays | also
        return sorted(r for r in relays if r in self.connected) if relays else []

    # -- posting --

    def check_can_post(self) -> str | None:
        state = self.core.state
        role = state.role(self.me)
        if role is None:
            return "you are not a member of this group"
        if role is Role.GUEST:
            return "guests can read but not post"
        if self.me in state.muted():
            return "an admin has muted you in this group"
        return None

    def post(self, content: Content) -> Event:
        """Encrypt and send one MESSAGE with ``content`` (call ``check_can_post`` first)."""
        counters = K.Counters()
        if self.core.mode == "open":  # no end-to-end encryption: signed content in clear
            counters.signatures += 1
            return self.author(OpenMessage(encode_content(content)), content=content,
                               counters=counters, kind="message")
        if self.core.mode == "pairwise":
            seq = self.core.frontier.get(self.me, 0) + 1
            recipients = [m for m in self.core.state.members if m != self.me]
            body, copies = K.encrypt_pairwise(self.identity, recipients, self.id, seq, content,
                                              counters, self.rng)
            counters.signatures += 1
            return self.author(body, content=content, copies=copies, counters=counters,
                               kind="message")
        if self.rewound or K.needs_rotation(self.keys, set(self.core.state.members)):
            self.rotate()
        assert self.keys.own is not None
        own, message = K.encrypt_private(self.keys.own, self.id, self.me, content, counters,
                                         self.rng)
        counters.signatures += 1
        return self.author(message, new_own=own, content=content, counters=counters,
                           kind="message")

    def rotate(self) -> Event:
        """A fresh sender key (new epoch) sealed to every other member."""
        # after a rewind, past every epoch our events used (ours, from another copy of us)
        floor = self.core.epoch_of(self.me) + 1 if self.rewound else 0
        fresh, distribution, copies = K.new_sender_key(
            self.keys, self.me, set(self.core.state.members), self.rng, floor=floor)
        self.rewound = False
        self.own_history.append((fresh.epoch, fresh.key))
        self.out.append(SaveOwnHistory(fresh.epoch, fresh.key))
        event = self.author(distribution, new_own=fresh, copies=copies, kind="rekey")
        self.warn(f"group {self.label}: new sender key, epoch {fresh.epoch}, for "
                  f"{len(fresh.recipients)} member(s)", level=logging.INFO)
        return event

    def thread(self, target: EventId, *, readable: bool = False) -> Thread | str:
        """The visible, not deleted post ``target``, or why not."""
        thread = self.conversation().threads.get(target)
        if thread is None:
            return f"no message {target.hex()[:12]} in this group"
        if thread.deleted_by is not None:
            return f"message {target.hex()[:12]} was deleted"
        if readable and thread.text is None:
            return f"message {target.hex()[:12]} cannot be read here"
        return thread

    # -- deletes --

    def apply_deletes(self, effects: Sequence[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Deleted):
                self.erase(effect.target)

    def erase(self, target: EventId) -> None:
        """Forget a deleted message: its text, content, copies, and its author's edits of it."""
        message = self.core.get(target)
        doomed = [target] + [
            eid for eid, c in self.contents.items()
            if isinstance(c, Edit) and c.target == target and message is not None
            and (e := self.core.get(eid)) is not None and e.author == message.author
        ]
        for eid in doomed:
            self.out.append(EraseContent(eid))
            self.texts[eid] = None
            self.contents.pop(eid, None)
            self.copies.pop(eid, None)
            self.own_copies.pop(eid, None)
        self.version += 1

    def erased_edit(self, event: Event, content: Content) -> bool:
        """An edit of a message deleted before it arrived: not kept."""
        if not isinstance(content, Edit) or content.target not in self.core.deleted:
            return False
        target = self.core.get(content.target)
        return target is not None and target.author == event.author

    # -- receipts, mutes, typing --

    def read_delta(self) -> tuple[tuple[PeerId, int], ...]:
        mine = self.read.get(self.me, {})
        latest = self.last_messages_of_others()
        return tuple(sorted((a, n) for a, n in latest.items() if n > mine.get(a, 0)))

    def flush_receipts(self) -> None:
        if not self.unread_receipt:
            return
        self.unread_receipt = False
        delta = self.read_delta()
        if delta and self.me in self.core.state.members:
            self.author_quietly(Receipt(delta), "send a read receipt")

    def expire_mutes(self) -> list[Event]:
        state = self.core.state
        mine = state.role(self.me)
        if mine is None or mine < Role.ADMIN:
            return []
        unmuted = []
        for peer, until in state.muted().items():
            theirs = state.role(peer)
            if 0 < until <= self.now and (theirs is None or theirs < mine):
                event = self.author_quietly(Mute(peer, False, 0),
                                            f"end the mute of {short_id(peer)}")
                if event is not None:
                    unmuted.append(event)
                    self.out.append(Authored(event))
        return unmuted

    def start_typing(self) -> bool:
        if self.now - self.typing_sent < TYPING_INTERVAL:
            return False
        self.typing_sent = self.now
        for member in sorted(self.core.state.members):
            self.send(member, Typing(), "typing")
        return True

    # -- membership side effects --

    def after_delivery(self, effects: list[Effect]) -> None:
        cause: Delivered | None = None
        for effect in effects:
            if isinstance(effect, Delivered):
                self.note(effect)
                cause = effect
            if isinstance(effect, MembershipChanged):
                self.membership_changed(effect, cause)
            elif isinstance(effect, Delivered) and effect.event.kind is Kind.RENAME:
                self.out.append(SetName(self.core.state.name))
        self.notify([e.event for e in effects if isinstance(e, Delivered)])

    def membership_changed(self, change: MembershipChanged, cause: Delivered | None) -> None:
        now = self.core.state  # the state as it is now, not the change's snapshot
        added = set(change.after.members) - set(change.before.members)
        removed = set(change.before.members) - set(change.after.members)
        for peer in sorted(removed):
            self.warn(f"group {self.label}: {short_id(peer)} left or was removed",
                      level=logging.INFO)
        if self.me in removed and self.me not in now.members:
            self.out.append(SetLeft(True))
        newcomers = frozenset(p for p in added if p != self.me and p in now.members)
        for peer in sorted(newcomers):
            # Our events from before we saw it join are in its causal past: it needs them.
            self.flush(peer)
        if newcomers and self.core.mode == "open":
            self.nudge()  # a JOIN reaches only who the joiner knew: spread it
        admits = None if cause is None else admitted_by(cause.event.author, cause.event.kind,
                                                         cause.body)
        admitted = frozenset(p for p in newcomers if cause is None or admits == p)
        self.hand_keys(admitted, history=now.share_history)
        for peer in sorted(newcomers - admitted):
            self.restore(peer)

    def hand_keys(self, peers: frozenset[PeerId], *, history: bool,
                  epochs: list[tuple[int, OwnSenderKey]] | None = None) -> None:
        """Give ``peers`` our current chain (they read from now on) and, if ``history``,
        the starting keys of our earlier epochs (or of ``epochs``)."""
        own = self.keys.own
        if own is None or not peers or self.check_can_key() is not None:
            return
        body, copies = K.distribution(own.key, own.epoch, peers, self.rng)
        updated = K.OwnKey(own.epoch, own.key, own.recipients | peers)
        if self.author_quietly(body, "hand our sender key to new members", new_own=updated,
                               copies=copies, kind="rekey") is None:
            return
        if not history:
            return
        chosen = epochs if epochs is not None else self.own_history
        for peer in sorted(peers):
            shared = K.history_for(peer, chosen)
            if shared is not None:
                self.author_quietly(shared, "share our history")

    def check_can_key(self) -> str | None:
        role = self.core.state.role(self.me)
        if role is None:
            return "not a member"
        if role is Role.GUEST:
            return "guests cannot post"
        return None

    def restore(self, peer: PeerId) -> None:
        """``peer`` is a member again without being added again: a removal we had seen
        lost to a conflicting one. It is owed our keys of the epochs since it joined
        (pairwise: a fresh copy of each of our messages since then that it lacks)."""
        if self.core.mode == "pairwise":
            self.restore_copies(peer)
            return
        if self.keys.own is None or self.core.mode != "private":
            return
        since = self.member_since(peer)
        epochs = [(e, k) for e, k in self.own_history
                  if since is not None and self.epoch_start(e) > since]
        if self.check_can_key() is not None:  # a guest now, or departed since
            self.restore_by_copies(peer, epochs)
            return
        self.warn(f"group {self.label}: {short_id(peer)} is a member after all: handing it "
                  f"our keys of {len(epochs)} earlier epoch(s)", level=logging.INFO)
        self.hand_keys(frozenset({peer}), history=bool(epochs), epochs=epochs)

    def restore_by_copies(self, peer: PeerId, epochs: list[tuple[int, OwnSenderKey]]) -> None:
        """A guest (or a member that departed since) authors no SENDER_KEY or HISTORY,
        yet ``peer`` is owed the keys of the epochs we started while we could post (our
        messages from then are valid, and it was a member): a fresh sealed copy of each such
        epoch's starting SENDER_KEY (its commitment authenticates it, whoever seals it),
        kept with our other copies and pushed with the event."""
        starts = dict(epochs)
        sent: list[Event] = []
        for event in self.core.ordered_view():
            if (event.author != self.me or event.kind is not Kind.SENDER_KEY
                    or event.epoch not in starts
                    or peer in self.own_copies.get(event.id, {})):
                continue
            body = decode_body(Kind.SENDER_KEY, event.body, mode=self.core.mode)
            if not isinstance(body, SenderKey):
                continue
            blob = K.copy_of_start(peer, starts[event.epoch], body)
            if blob is None:
                continue
            del starts[event.epoch]  # one copy per epoch: its first, starting, SENDER_KEY
            self.own_copies.setdefault(event.id, {})[peer] = blob
            self.out.append(SaveCopy(event.id, peer, blob))
            sent.append(event)
        own = self.keys.own
        if own is not None and any(e.epoch == own.epoch for e in sent):
            # it holds our current chain now: were it to leave, we would have to rotate
            self.keys.own = K.OwnKey(own.epoch, own.key, own.recipients | {peer})
            self.out.append(SaveOwnKey(own.epoch, own.key, self.keys.own.recipients))
        self.warn(f"group {self.label}: {short_id(peer)} is a member after all: handing it "
                  f"our keys of {len(sent)} earlier epoch(s) (copies only: we may not post)",
                  level=logging.INFO)
        if sent:
            self.push(peer, sent)

    def restore_copies(self, peer: PeerId) -> None:
        """Re-encrypt for ``peer`` our messages it is owed and has no copy of (bounded:
        ``node.group.pairwise_restore``); persisted, then pushed with the copies."""
        admission = self.admission(peer)
        if admission is None or self.me not in self.core.state.members:
            return
        owed = [e for e in self.core.ordered_view()
                if e.author == self.me and e.kind is Kind.MESSAGE and e.id not in self.core.deleted
                and self.core.saw(e.id, admission.id)
                and not self.core.is_withdrawn(e.author, e.seq)]
        fresh = owed_copies(self.identity, self.id, peer, owed, self.contents,
                            self.own_copies, self.rng)
        for event, blob in fresh:
            self.own_copies.setdefault(event.id, {})[peer] = blob
            self.out.append(SaveCopy(event.id, peer, blob))
        self.warn(f"group {self.label}: {short_id(peer)} is a member after all: fresh copies "
                  f"of {len(fresh)} of our message(s)", level=logging.INFO)
        if fresh:
            self.push(peer, [e for e, _ in fresh])

    def admission(self, peer: PeerId) -> MembershipEvent | None:
        """The event that last made ``peer`` a member (its latest ADD, JOIN or APPROVE,
        or the CREATE if it founded the group); None if none."""
        found = None
        for event in self.core.membership_events():
            if admitted_by(event.author, event.kind, event.body) == peer:
                found = event
        return found

    def member_since(self, peer: PeerId) -> tuple[int, bytes, int] | None:
        """The order key of the event that made ``peer`` a member."""
        admission = self.admission(peer)
        return None if admission is None else admission.order_key

    def epoch_start(self, epoch: int) -> tuple[int, bytes, int]:
        """The order key of our first SENDER_KEY of ``epoch`` (where it began)."""
        for event in self.core.ordered_view():
            if event.author == self.me and event.kind is Kind.SENDER_KEY and event.epoch == epoch:
                return event.order_key
        return (0, b"", 0)


def admitted_by(author: PeerId, kind: Kind, body: Body) -> PeerId | None:
    """Whom an event makes a member: its author (CREATE, JOIN), or the member an ADD or
    APPROVE names; None for any other event."""
    if kind in (Kind.CREATE, Kind.JOIN):
        return author
    if kind in (Kind.ADD, Kind.APPROVE):
        member = getattr(body, "member", None)
        return PeerId(member) if isinstance(member, bytes) else None
    return None
