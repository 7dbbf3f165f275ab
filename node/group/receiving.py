"""Receiving events: deliver, decrypt, store, acknowledge, react (pure).

Theory of operation
-------------------
An ``Events`` payload goes through ``GroupCore.receive`` event by event
(signatures, causal order, membership). Every delivered event is persisted
with what it decrypted to and the key state it changed; the driver writes the
whole input in one transaction, so one incoming message costs one commit,
and only after the commit do its sends (the ack, events we author in
reaction) leave. We acknowledge what we hold: delivered events, and
duplicates that are already delivered (not ones still waiting for their
causal past, which we might yet lose in a crash).

A departed member's events past its cut-off (withdrawn, ``node.group.membership``)
are stored without content: never decrypted, no copy kept, never shown; those
we had read before we learnt of the departure are erased then (``Authoring``).
A withdrawal can be undone (a concurrent departure comes first in the fold):
the messages are then read again, and one whose key we had already used (read,
erased, now back) from the start of its chain in our kept SENDER_KEY copy (or
a HISTORY for us).

Decryption never fails a delivery: a message we cannot read yet (no key, a
pairwise copy that has not reached us) is stored unreadable and read later,
when its key arrives (a SENDER_KEY or HISTORY for us: earlier messages of that
chain are decrypted again, in index order) or its copy does (a late copy).

Rejections and drops come back as ``Warn`` effects with the reason, one line
per message and reason (with a count), not one per event; an
equivocation (two events with the same author and seq) is recorded and
reported once per (author, seq), so a liar cannot grow the table.
"""

from __future__ import annotations

import logging

from node.crypto import sender_keys
from node.crypto.sender_keys import MAX_JUMP, SenderKeyState
from node.errors import DecryptError
from node.group import keys as K
from node.group.authoring import Authoring
from node.group.bodies import (
    Body,
    History,
    OpenMessage,
    PairwiseMessage,
    PrivateMessage,
    SenderKey,
    decode_body,
)
from node.group.content import Content, Edit, Post
from node.group.events import Event, EventId, Kind
from node.group.member_io import (
    Ack,
    Events,
    SaveCopy,
    SaveEquivocation,
    SaveEvent,
    SavePeerKey,
    SetContent,
)
from node.group.member_state import WALK_BURST, WALK_RATE, Budget, display_text
from node.group.state import (
    Deleted,
    Delivered,
    Dropped,
    Duplicate,
    Effect,
    Equivocation,
    MembershipChanged,
    Rejected,
)
from node.ids import PeerId, short_id

#: A peer's sender-key state to persist: (author, epoch, state).
KeyUpdate = tuple[PeerId, int, SenderKeyState]


class Receiving(Authoring):
    def receive(self, sender: PeerId, message: Events) -> list[EventId]:
        """Deliver, persist and react to ``message``'s events; returns what to acknowledge."""
        stored: list[EventId] = []
        dropped: dict[str, int] = {}
        rejected: dict[str, tuple[Event, int]] = {}  # reason -> (first event, count)
        reactions: list[Effect] = []
        late: list[Event] = []
        copies = dict(message.copies)
        readable: list[Event] = []
        own_back = 0
        for event in message.events:
            if event.id in copies and (event.kind is Kind.MESSAGE or (
                    event.kind is Kind.SENDER_KEY and event.id not in self.copies)):
                self.copies[event.id] = copies[event.id]  # (a key copy: the first one kept)
            for effect in self.core.receive(event):
                if isinstance(effect, Delivered):
                    readable.extend(self.store_delivered(effect))
                    stored.append(effect.event.id)
                    reactions.append(effect)
                    if effect.event.author == self.me:  # ours, yet not in our store
                        self.own_ids.add(effect.event.id)
                        own_back += 1
                elif isinstance(effect, MembershipChanged):
                    reactions.append(effect)
                elif isinstance(effect, Duplicate):
                    if not self.core.is_waiting(effect.event):  # ack only what is stored
                        stored.append(effect.event.id)
                        late.append(effect.event)
                elif isinstance(effect, Rejected) and self.own_fork(effect.event):
                    pass
                elif isinstance(effect, Rejected):
                    self.rejected += 1
                    first = rejected.setdefault(effect.reason, (effect.event, 0))
                    rejected[effect.reason] = (first[0], first[1] + 1)
                elif isinstance(effect, Equivocation):
                    self.equivocation(effect)
                elif isinstance(effect, Dropped):
                    self.dropped += 1
                    dropped[effect.reason] = dropped.get(effect.reason, 0) + 1
                elif isinstance(effect, Deleted):
                    self.apply_deletes([effect])
        if message.held:
            self.hold(sender, message.held)
        for author in {e.author for e in message.events} & set(self.unread_reports):
            self.report_unread(author)
        if own_back:
            self.rewound = True
            self.warn(f"group {self.label}: {own_back} event(s) this node authored came back "
                      f"from {short_id(sender)} (restored from a backup, or a copy of this data "
                      f"directory ran elsewhere?); caught up to seq "
                      f"{self.core.frontier.get(self.me, 0)}; the next message starts a fresh "
                      "sender key")
        if reactions:
            self.after_delivery(reactions)
            if message.sync:
                self.nudge()
        if readable:
            self.notify(readable)
        for event in late:
            self.late_copy(event)
        for reason, (event, count) in rejected.items():  # one line per message and reason
            more = f" (and {count - 1} more)" if count > 1 else ""
            self.warn(f"group {self.label}: rejected event {event.id.hex()[:12]}{more} from "
                      f"{short_id(event.author)}: {reason}")
        for reason, count in dropped.items():  # one line per message, not per event
            self.warn(f"group {self.label}: dropped {count} event(s) from {short_id(sender)}: "
                      f"{reason}", level=logging.INFO)
        return stored

    def store_delivered(self, delivered: Delivered) -> list[Event]:
        """Persist a delivered event with its content; returns earlier events it made
        readable (a key that opened messages stored unreadable)."""
        event, body = delivered.event, delivered.body
        content: Content | None = None
        key_update: KeyUpdate | None = None
        opened: list[Event] = []
        # cut off by a departure: never decrypted, never kept as content
        withdrawn = self.core.is_withdrawn(event.author, event.seq)
        try:
            if withdrawn:
                pass
            elif isinstance(body, SenderKey):
                key_update = self.key_from(event, body)
            elif isinstance(body, History) and body.member == self.me:
                opened = self.read_history(event.author, body)
            else:
                content, key_update = self.open_message(event, body)
        except DecryptError as exc:
            self.cannot_decrypt(event, exc)
            if isinstance(body, SenderKey):
                self.bad_key_copy(event)
        if (content is None and not withdrawn and event.kind is Kind.MESSAGE
                and event.author != self.me and self.core.mode != "open"
                and self.should_read(event)):
            self.unread_reports.setdefault(event.author, set()).add(event.id)
        if content is not None and self.erased_edit(event, content):
            content = None  # an edit of a message deleted before it arrived: not kept
        text = display_text(content)
        self.out.append(SaveEvent(event, self.now, text, content))
        if key_update is not None:
            self.keep_key(key_update)
        if event.id in self.copies:  # (ciphertext: kept even if withdrawn, see below)
            self.out.append(SaveCopy(event.id, self.me, self.copies[event.id]))
        self.texts[event.id] = text
        if content is not None:
            self.set_new_content(event.id, content)
            self.check_content(event, content)
        self.joined_at[event.id] = self.now
        return opened

    # -- decrypting, on arrival or later --

    def key_from(self, event: Event, body: SenderKey) -> KeyUpdate | None:
        """The key state ``event`` gives us, if newer than ours (``DecryptError`` if it
        cannot be opened)."""
        state = K.open_distribution(self.identity, body, self.copies.get(event.id))
        known = self.keys.peers.get((event.author, body.epoch))
        if state is not None and (known is None or known.index < state.index):
            return (event.author, body.epoch, state)
        return None

    def open_message(self, event: Event, body: Body) -> tuple[Content | None, KeyUpdate | None]:
        """A message's content with what we hold now (None if we cannot read it yet) and
        the key state reading it moved ours to (``DecryptError`` if it fails)."""
        if isinstance(body, PrivateMessage):
            state = self.keys.peers.get((event.author, event.epoch))
            if state is None:
                return None, None
            self.walk(event.author, body.index - state.index)
            new_state, content = K.decrypt_private(state, self.id, event.author, event.epoch,
                                                   body)
            return content, (event.author, event.epoch, new_state)
        if isinstance(body, OpenMessage):
            return K.read_open(body), None
        if isinstance(body, PairwiseMessage):
            blob = self.copies.get(event.id)
            if blob is not None:
                return K.decrypt_pairwise(self.identity, self.id, event.author, event.seq, body,
                                          blob), None
        return None, None

    def keep_key(self, update: KeyUpdate) -> None:
        author, epoch, state = update
        self.out.append(SavePeerKey(author, epoch, state))
        self.keys.peers[(author, epoch)] = state

    def cannot_decrypt(self, event: Event, exc: DecryptError) -> None:
        self.warn(f"group {self.label}: cannot decrypt {event.id.hex()[:12]} from "
                  f"{short_id(event.author)}: {exc}")

    def walk(self, author: PeerId, gap: int) -> None:
        """Charge ``author``'s chain-walk budget for stepping over ``gap`` message keys
        (``DecryptError`` if it cannot pay: the message stays unreadable)."""
        if gap <= 0 or gap > MAX_JUMP:
            return  # nothing to walk, or refused by the decryption before any hashing
        budget = self.walks.setdefault(author, Budget(WALK_RATE, WALK_BURST))
        if budget.take(gap, self.now) is not None:
            raise DecryptError(f"a jump of {gap} message keys is over this sender's budget "
                               f"({WALK_RATE} a second)")

    def check_content(self, event: Event, content: Content) -> None:
        """Warn (once, on arrival) of an edit or reaction the conversation will ignore."""
        if isinstance(content, Post):
            return
        reason = self.conversation().ignored.get(event.id)
        if reason is not None:
            what = "edit" if isinstance(content, Edit) else "reaction"
            self.warn(f"group {self.label}: ignoring {what} {event.id.hex()[:12]} from "
                      f"{short_id(event.author)}: {reason}")

    def read_history(self, author: PeerId, body: History) -> list[Event]:
        """Decrypt ``author``'s earlier messages we stored unreadable (their chains'
        starting keys, for us); returns the events that became readable."""
        opened: list[Event] = []
        for epoch, signing_public, sealed in body.keys:
            try:
                state = sender_keys.open_sealed(self.identity, sealed, signing_public)
            except DecryptError as exc:
                self.warn(f"group {self.label}: unusable history key from "
                          f"{short_id(author)}: {exc}")
                continue
            opened.extend(self.redecrypt(author, epoch, state))
        return opened

    def redecrypt(self, author: PeerId, epoch: int, state: SenderKeyState) -> list[Event]:
        unread = []
        for event in self.core.ordered_view():
            if (event.author == author and event.epoch == epoch
                    and event.kind is Kind.MESSAGE and self.texts.get(event.id) is None
                    and event.id not in self.core.deleted and event.id not in self.contents
                    and not self.core.is_withdrawn(author, event.seq)):
                message = decode_body(Kind.MESSAGE, event.body, mode=self.core.mode)
                if isinstance(message, PrivateMessage) and message.index >= state.index:
                    unread.append((message.index, event, message))
        opened = []
        for _, event, message in sorted(unread, key=lambda x: x[0]):
            try:
                self.walk(author, message.index - state.index)
                state, content = K.decrypt_private(state, self.id, author, epoch, message)
            except DecryptError as exc:
                self.warn(f"group {self.label}: history message {event.id.hex()[:12]} stays "
                          f"unreadable: {exc}", level=logging.INFO)
                continue
            if self.erased_edit(event, content):
                continue
            self.readable(event, content)
            opened.append(event)
        known = self.keys.peers.get((author, epoch))
        if opened and (known is None or known.index < state.index):
            self.out.append(SavePeerKey(author, epoch, state))  # go on reading from here
            self.keys.peers[(author, epoch)] = state
        return opened

    # -- withdrawals come and go as membership events arrive --

    def membership_changed(self, change: MembershipChanged, cause: Delivered | None) -> None:
        super().membership_changed(change, cause)
        before = {(d.member, d.cut, d.event.id) for d in change.before.departures}
        after = {(d.member, d.cut, d.event.id) for d in change.after.departures}
        for member, cut, _ in sorted(after - before):
            if member != self.me:
                self.erase_withdrawn(member, cut)
        for member, cut, _ in sorted(before - after):
            if member != self.me:
                self.read_unwithdrawn(member, cut)

    def erase_withdrawn(self, member: PeerId, cut: int) -> None:
        """A departure cut ``member`` off after ``cut``: forget what we read of its
        events past it (they arrived before we learnt of the departure)."""
        for event in self.core.ordered_view():
            if (event.author == member and event.seq > cut and event.kind is Kind.MESSAGE
                    and (self.texts.get(event.id) is not None or event.id in self.contents)
                    and self.core.is_withdrawn(member, event.seq)):
                self.erase(event.id)

    def read_unwithdrawn(self, member: PeerId, cut: int) -> None:
        """A departure no longer takes effect (a concurrent one came first in the total
        order): read ``member``'s messages past ``cut`` that we stored withdrawn."""
        opened: list[Event] = []
        spent: set[tuple[PeerId, int]] = set()
        for event in self.core.ordered_view():
            if (event.author != member or event.seq <= cut
                    or self.core.is_withdrawn(member, event.seq)):
                continue
            if event.kind is Kind.SENDER_KEY:  # its keys were not taken either
                self.take_key(event)
                continue
            if (event.kind is not Kind.MESSAGE or self.texts.get(event.id) is not None
                    or event.id in self.contents or event.id in self.core.deleted):
                continue
            body = decode_body(Kind.MESSAGE, event.body, mode=self.core.mode)
            try:
                content, update = self.open_message(event, body)
            except DecryptError:  # read once, then erased: its key is used up
                spent.add((event.author, event.epoch))
                continue
            if update is not None:
                self.keep_key(update)
            if content is not None and not self.erased_edit(event, content):
                self.readable(event, content)
                opened.append(event)
            elif (content is None and event.author != self.me and self.core.mode != "open"
                    and self.should_read(event)):
                # stored withdrawn, so never reported: its author sends the copy we lack
                self.unread_reports.setdefault(event.author, set()).add(event.id)
        for author, epoch in sorted(spent):
            opened.extend(self.retake(author, epoch))
        if opened:
            self.notify(opened)
        self.report_unread(member)

    def retake(self, author: PeerId, epoch: int) -> list[Event]:
        """Read ``author``'s messages of ``epoch`` that are unread although we hold the
        chain (ones read, erased as withdrawn, then no longer withdrawn: our chain has
        moved past their keys) from the earliest state a SENDER_KEY copy of ours for that
        epoch holds; returns what became readable. Nothing new is kept: the copies are."""
        start: SenderKeyState | None = None
        for state in self.kept_starts(author, epoch):
            if start is None or state.index < start.index:
                start = state
        if start is None:
            self.warn(f"group {self.label}: {short_id(author)}'s messages of epoch {epoch} "
                      "are no longer withdrawn but stay unreadable (no copy of that key "
                      "to read them again from)")
            return []
        return self.redecrypt(author, epoch, start)

    def take_key(self, event: Event) -> None:
        """Take our key from a SENDER_KEY event we stored withdrawn."""
        body = decode_body(Kind.SENDER_KEY, event.body, mode=self.core.mode)
        if not isinstance(body, SenderKey):
            return
        try:
            update = self.key_from(event, body)
        except DecryptError:
            return
        if update is not None:
            self.keep_key(update)

    def kept_starts(self, author: PeerId, epoch: int) -> list[SenderKeyState]:
        """The chain states of ``author``'s ``epoch`` we can open again: from our kept
        copies of its SENDER_KEY events, and from HISTORY events addressed to us."""
        found = []
        for event in self.core.ordered_view():
            if event.author != author or self.core.is_withdrawn(author, event.seq):
                continue
            try:
                if (event.kind is Kind.SENDER_KEY and event.epoch == epoch
                        and event.id in self.copies):
                    body = decode_body(Kind.SENDER_KEY, event.body, mode=self.core.mode)
                    if isinstance(body, SenderKey) and body.epoch == epoch:
                        state = K.open_distribution(self.identity, body, self.copies[event.id])
                        if state is not None:
                            found.append(state)
                elif event.kind is Kind.HISTORY:
                    history = decode_body(Kind.HISTORY, event.body, mode=self.core.mode)
                    if isinstance(history, History) and history.member == self.me:
                        found.extend(sender_keys.open_sealed(self.identity, sealed, public)
                                     for e, public, sealed in history.keys if e == epoch)
            except DecryptError:
                continue
        return found

    def should_read(self, event: Event) -> bool:
        """Was ``event`` made after its author saw us become a member (so it was meant
        for us to read)?"""
        admission = self.admission(self.me)
        return admission is not None and self.core.saw(event.id, admission.id)

    def readable(self, event: Event, content: Content) -> None:
        self.unread_reports.get(event.author, set()).discard(event.id)  # (if not told yet)
        if event.id in self.told_unread:  # we said we could not: take it back
            self.told_unread.discard(event.id)
            self.send(event.author, Ack((event.id,), "readable"), "ack")
        text = display_text(content)
        self.out.append(SetContent(event.id, text, content))
        self.texts[event.id] = text
        self.contents[event.id] = content
        self.version += 1

    def late_copy(self, event: Event) -> None:
        """A pairwise copy for a message we stored unreadable (relayed without it)."""
        if event.kind is Kind.SENDER_KEY:
            self.late_key(event)
            return
        blob = self.copies.get(event.id)
        if (blob is None or self.texts.get(event.id) is not None
                or event.kind is not Kind.MESSAGE or event.id in self.core.deleted
                or self.core.is_withdrawn(event.author, event.seq)):
            return
        body = decode_body(Kind.MESSAGE, event.body, mode=self.core.mode)
        if not isinstance(body, PairwiseMessage):
            return
        try:
            content, _ = self.open_message(event, body)
        except DecryptError as exc:
            self.cannot_decrypt(event, exc)
            return
        if content is None or self.erased_edit(event, content):
            return
        self.out.append(SaveCopy(event.id, self.me, blob))
        self.readable(event, content)
        self.notify([event])

    def late_key(self, event: Event) -> None:
        """Our sealed copy of a committed SENDER_KEY we stored without it (relayed by a
        member that did not hold it): take the key and read that chain's messages we
        stored unreadable."""
        blob = self.copies.get(event.id)
        if (blob is None or (event.author, event.epoch) in self.keys.peers
                or self.core.is_withdrawn(event.author, event.seq)):
            return
        body = decode_body(Kind.SENDER_KEY, event.body, mode=self.core.mode)
        if not isinstance(body, SenderKey) or not body.committed:
            return
        try:
            update = self.key_from(event, body)
        except DecryptError as exc:
            self.cannot_decrypt(event, exc)
            self.bad_key_copy(event)
            return
        self.out.append(SaveCopy(event.id, self.me, blob))
        if event.id in self.told_unread:  # we said we could not: take it back
            self.told_unread.discard(event.id)
            self.send(event.author, Ack((event.id,), "readable"), "ack")
        if update is None:
            return
        self.keep_key(update)
        author, epoch, state = update
        opened = self.redecrypt(author, epoch, state)
        if opened:
            self.notify(opened)

    def bad_key_copy(self, event: Event) -> None:
        """Our copy of a SENDER_KEY failed (forged, or not the committed state): not
        kept, and its author is told (``unread``), which sends it once more."""
        self.copies.pop(event.id, None)
        if event.author != self.me and not self.core.is_withdrawn(event.author, event.seq):
            self.unread_reports.setdefault(event.author, set()).add(event.id)

    def own_fork(self, event: Event) -> bool:
        """A member sent us an event as ours with a seq we used for another, signed with a
        sender key we never made: another copy of us (a restored backup, a copied data
        directory) made it, or someone forges. Reported once per seq; True if it was that."""
        if (event.author != self.me or not self.core.has(self.me, event.seq)
                or self.core.event_id(self.me, event.seq) == event.id):
            return False
        if (self.me, event.seq) not in self.equivocated:
            self.equivocated.add((self.me, event.seq))
            self.rewound = True
            self.warn(f"group {self.label}: a member holds a different event as this node's "
                      f"seq {event.seq}, signed with a key this node never made: another copy "
                      "of this data directory ran (a restored backup?), or someone forges it; "
                      "the next message starts a fresh sender key")
        return True

    def equivocation(self, eq: Equivocation) -> None:
        if (eq.author, eq.seq) in self.equivocated:
            return  # recorded and reported once: a liar cannot grow the table
        self.equivocated.add((eq.author, eq.seq))
        if eq.author == self.me:
            self.rewound = True
            self.warn(f"group {self.label}: another copy of this node signed a different "
                      f"event with seq {eq.seq} (this data directory was restored from a "
                      "backup or copied and run twice?); members keep whichever they got "
                      "first, so some of this node's events may not be accepted; the next "
                      "message starts a fresh sender key")
        else:
            self.warn(f"group {self.label}: {short_id(eq.author)} signed two different "
                      f"events with seq {eq.seq} (equivocation); keeping the first")
            held = self.core.get(eq.first)
            if held is not None:  # tell its author: it may not know another copy of it ran
                self.send(eq.author, Events((held,)), "equivocation")
        self.out.append(SaveEquivocation(eq.author, eq.seq, eq.first, eq.second.raw, self.now))
