"""Open groups on a running node: discovery, joining, admin powers (trio driver).

Theory of operation
-------------------
An open group is a public channel on the LAN: its events are signed like any
group's, but a MESSAGE carries its content in clear (the channel's Noise
encryption still protects it on the wire). Its members announce it over mDNS
(``node.wire.announce``: one ``_kith-group._tcp`` record per open group per
member), and a peer that is not a member joins by itself. The protocol of
joining is in the pure core (``node.group.joining``); this driver only:

* picks members to ask: from the announcements it heard (``heard``), or,
  given a full group id, among the peers it is already connected to;
* dials the member, runs one ``Joining`` attempt per member (sends its
  ``open`` request, feeds it the ``events``, ``vv`` and ``open-refused``
  that member sends), and on a timeout tells it ``TimedOut`` and asks the
  next member;
* runs what the attempt decides: ``Adopt`` (store the group through the
  group service, then author the JOIN) or ``JoinFailed`` (the reason);
* answers other peers' ``open`` requests as ``answer_open`` decides: an
  ``open-refused``, or the member input ``HistoryWanted`` (the member core
  pushes the history and its vector).

Timed bans work like timed mutes: the ``until`` of a BAN is informational; the
node of every owner or admin checks on the receipts beat and, once its own
clock is past it and the peer is still banned, authors an UNBAN.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from node.errors import GroupError, HandshakeError, RemoteProtocolError
from node.group.bodies import Approve, Ban, Delete, Role, Unban
from node.group.events import Event, GroupId, Kind
from node.group.joining import (
    Adopt,
    AskOpen,
    HistoryArrived,
    JoinEffect,
    JoinFailed,
    Joining,
    JoinInput,
    RefusalArrived,
    RefuseOpen,
    TimedOut,
    VectorArrived,
    answer_open,
)
from node.group.member_io import Warn
from node.ids import PeerId, short_id
from node.logs import RateLimitedLog, clip, line_key, reason_key
from node.net.address import DialTarget
from node.service.incoming import decode_events
from node.wire.announce import GroupAnnouncement, GroupRecord, open_group_records
from node.wire.messages import EventsMessage, PeerMessage, VectorMessage
from node.wire.open_messages import OpenRefused, OpenRequest, decode_open, encode_open

if TYPE_CHECKING:
    from node.group.member import Member as Group
    from node.service.host import GroupHost
    from node.service.links import PeerLink

log = logging.getLogger(__name__)
peer_log = RateLimitedLog(log)  # lines a peer can repeat: limited per peer and reason

#: How long ``join`` waits for one member's answer before trying the next.
JOIN_TIMEOUT = 10.0
#: Most open groups (announcements) remembered from mDNS.
MAX_HEARD = 256


@dataclass(slots=True)
class _Attempt:
    """A join in progress with one member: the pure attempt and how it ended."""

    joining: Joining
    outcome: Adopt | JoinFailed | None = None
    done: trio.Event = field(default_factory=trio.Event)


class OpenGroups:
    def __init__(self, service: GroupHost) -> None:
        self.service = service
        #: mDNS instance -> (announcement, when heard).
        self.heard: dict[str, tuple[GroupAnnouncement, float]] = {}
        self._joining: dict[GroupId, _Attempt] = {}

    # -- what we announce, what we hear --

    def records(self) -> list[GroupRecord]:
        """The mDNS records for the open groups we are a member of (never any other)."""
        node = self.service.node
        if node.instance is None:
            return []
        groups = [(bytes(g.id), g.core.state.name, g.core.mode, g.core.state.policy)
                  for g in self.service.groups.values()
                  if self.service.me in g.core.state.members]
        return open_group_records(node.instance, bytes(self.service.me), groups,
                                  node.config.network_key, time.time())

    def heard_group(self, ann: GroupAnnouncement) -> None:
        if ann.instance not in self.heard and len(self.heard) >= MAX_HEARD:
            return
        new = ann.instance not in self.heard
        self.heard[ann.instance] = (ann, time.time())
        if new:
            log.info("mDNS: open group %r (%s) served by %s at %s:%d", ann.name, ann.policy,
                     short_id(PeerId(ann.peer)), ann.host, ann.port)
        self.service.notify_all()

    def lost_group(self, instance: str) -> None:
        if self.heard.pop(instance, None) is not None:
            self.service.notify_all()

    def discovered(self) -> list[dict[str, object]]:
        """Open groups heard nearby, one entry per group with the members serving it."""
        out: dict[bytes, dict[str, object]] = {}
        for ann, _ in self.heard.values():
            entry = out.setdefault(ann.group, {
                "id": ann.group.hex(), "name": ann.name, "policy": ann.policy, "servers": [],
                "joined": self._member_of(GroupId(ann.group)),
            })
            servers = entry["servers"]
            assert isinstance(servers, list)
            servers.append({"peer_id": ann.peer.hex(), "short_id": short_id(PeerId(ann.peer)),
                            "address": f"{ann.host}:{ann.port}"})
        return sorted(out.values(), key=lambda e: (str(e["name"]), str(e["id"])))

    def _member_of(self, group_id: GroupId) -> bool:
        group = self.service.groups.get(group_id)
        return group is not None and self.service.me in group.core.state.members

    # -- peer messages --

    def on_raw(self, conn: PeerLink, data: bytes) -> bool:
        """Handle an ``open``/``open-refused`` message; False if ``data`` is neither."""
        sender = conn.info.peer_id
        try:
            message = decode_open(data)
        except RemoteProtocolError as exc:
            peer_log.warning((sender, reason_key(str(exc))), "dropping message from %s: %s",
                             short_id(sender), clip(str(exc)))
            return True
        if message is None:
            return False
        if isinstance(message, OpenRequest):
            self._answer(conn, message.group)
        else:
            self._feed(message.group, RefusalArrived(sender, message.reason))
        return True

    def on_message(self, sender: PeerId, message: PeerMessage) -> bool:
        """Events and the closing vector for a join in progress (True: handled here)."""
        attempt = self._joining.get(message.group)
        if attempt is None or sender != attempt.joining.peer:
            return False
        if isinstance(message, EventsMessage):
            self._feed(message.group,
                       HistoryArrived(sender, tuple(decode_events(sender, message.events))))
        elif isinstance(message, VectorMessage):
            self._feed(message.group, VectorArrived(sender, message.vector))
        else:
            return False
        return True

    def _answer(self, conn: PeerLink, group_id: GroupId) -> None:
        """A peer asks for an open group's events: the core decides, we send or refuse."""
        peer = conn.info.peer_id
        group = self.service.groups.get(group_id)
        answer = answer_open(group_id, group, peer)
        if isinstance(answer, RefuseOpen):
            peer_log.info((peer, "refused"), "refused %s the events of %s: %s",
                          short_id(peer), group_id.hex()[:12], answer.reason)
            conn.send_nowait(encode_open(OpenRefused(answer.group, answer.reason)))
            return
        assert group is not None
        self.service.offer_history(group, peer)  # the member pushes the events, its vector
        log.info("open group %s: sending %d event(s) to %s, who wants to join",
                 self.service.label(group), group.core.delivered_count(), short_id(peer))

    def _feed(self, group_id: GroupId, input: JoinInput) -> None:
        attempt = self._joining.get(group_id)
        if attempt is not None:
            self._run(attempt, attempt.joining.handle(input))

    def _run(self, attempt: _Attempt, effects: list[JoinEffect]) -> None:
        """Run what the joining core decided."""
        for effect in effects:
            if isinstance(effect, AskOpen):
                conn = self.service.node.connections.get(effect.peer)
                if conn is not None:
                    conn.send_nowait(encode_open(OpenRequest(effect.group)))
            elif isinstance(effect, Warn):
                peer_log.log((attempt.joining.peer, line_key(effect.text)), effect.level,
                             "%s", clip(effect.text))
            else:
                attempt.outcome = effect
                attempt.done.set()

    # -- joining --

    async def join(self, text: str, patience: float = JOIN_TIMEOUT) -> Group:
        """Join the open group ``text`` (name or id) heard nearby, or known here."""
        local = self._local(text)  # we were a member once (left, or were banned)
        servers = self._servers(text if local is None else local.id.hex(), local)
        reasons: list[str] = []
        for group_id, peer, target in servers:
            outcome = await self._fetch(group_id, peer, target, local, patience)
            if isinstance(outcome, Adopt):
                return self._adopt(outcome, local)
            if outcome is not None:
                log.info("joining %s through %s: %s", group_id.hex()[:12], short_id(peer),
                         outcome.reason)
                reasons.append(outcome.reason)
        refusals = [r for r in reasons if not r.startswith("no answer")]
        if refusals:
            raise GroupError(refusals[-1])
        raise GroupError(f"no member of open group {text!r} answered")

    def _local(self, text: str) -> Group | None:
        try:
            group = self.service.find(text)
        except GroupError:
            return None
        if group.core.mode != "open":
            raise GroupError(f"{text!r} is not an open group; a member must add you")
        if self.service.me in group.core.state.members:
            raise GroupError(f"you are already a member of {group.core.state.name!r}")
        return group

    def _servers(self, text: str, local: Group | None
                 ) -> list[tuple[GroupId, PeerId, DialTarget | None]]:
        """Members to ask: heard over mDNS, or (given a full id) the connected peers."""
        lowered = text.strip().lower()
        anns = [a for a, _ in self.heard.values() if a.name == text.strip()]
        if not anns and len(lowered) >= 6 and all(c in "0123456789abcdef" for c in lowered):
            anns = [a for a, _ in self.heard.values() if a.group.hex().startswith(lowered)]
        ids = {a.group for a in anns}
        if len(ids) > 1:
            raise GroupError(f"several open groups match {text!r}; use the group id "
                             "(see `kith group discover`)")
        out: list[tuple[GroupId, PeerId, DialTarget | None]] = [
            (GroupId(a.group), PeerId(a.peer), DialTarget(a.host, a.port, PeerId(a.peer)))
            for a in anns]
        if len(lowered) == 64 and all(c in "0123456789abcdef" for c in lowered):
            group_id = GroupId(bytes.fromhex(lowered))
            known = local.core.state.members if local is not None else {}
            connected = sorted(self.service.node.connections, key=lambda p: p not in known)
            out += [(group_id, peer, None) for peer in connected
                    if all(peer != p for _, p, _ in out)]
        if not out:
            raise GroupError(f"no open group {text!r} nearby (see `kith group discover`)")
        return out

    async def _fetch(
        self, group_id: GroupId, peer: PeerId, target: DialTarget | None,
        local: Group | None, patience: float,
    ) -> Adopt | JoinFailed | None:
        """One attempt through ``peer``: how it ended, or None if we could not reach it."""
        node = self.service.node
        attempt: _Attempt | None = None
        with trio.move_on_after(patience):
            if peer not in node.connections and target is not None:
                try:
                    await node.connect(target)
                except (HandshakeError, RemoteProtocolError, trio.BrokenResourceError,
                        OSError) as exc:
                    log.info("cannot reach %s to join: %s", short_id(peer), exc)
                    return None
                await node.wait_until(lambda: peer in node.connections)
            if peer not in node.connections:
                return None
            known = local.core.ordered() if local is not None else ()
            joining = Joining(self.service.me, group_id, peer, self.service.node.name, known)
            attempt = self._joining[group_id] = _Attempt(joining)
            try:
                self._run(attempt, joining.start())
                await attempt.done.wait()
            finally:
                if self._joining.get(group_id) is attempt:
                    del self._joining[group_id]
        if attempt is None:
            log.info("no answer from %s about group %s", short_id(peer), group_id.hex()[:12])
            return None
        if attempt.outcome is None:  # our patience ran out first
            self._run(attempt, attempt.joining.handle(TimedOut()))
        return attempt.outcome

    def _adopt(self, adopt: Adopt, local: Group | None) -> Group:
        """Store the group (or bring our old copy up to date) and author our JOIN."""
        service = self.service
        group = local
        if group is None:
            group = service.adopt(adopt.core, adopt.peer, adopt.events, {})
        else:
            service.deliver(group, adopt.events, adopt.peer)
            with service.store.transaction():
                service.store.set_group_left(group.id, False)
        service.author(group, adopt.join)
        log.info("joined open group %s (%d events from %s)", group.core.state.name,
                 len(adopt.events), short_id(adopt.peer))
        return group

    # -- admin powers --

    def purge(self, group: Group, peer: PeerId) -> list[Event]:
        """Delete every message of ``peer`` we have (one DELETE each; owner/admin)."""
        role = group.core.state.role(self.service.me)
        if role is None or role < Role.ADMIN:
            raise GroupError("only owner and admins may delete someone's messages")
        doomed = [e for e in group.core.ordered()
                  if e.kind is Kind.MESSAGE and e.author == peer and e.id not in group.core.deleted]
        return [self.service.author(group, Delete(e.id)) for e in doomed]

    def expire_bans(self, now: float) -> list[Event]:
        """As owner or admin, UNBAN the peers whose timed ban ended by our clock."""
        lifted = []
        for group in list(self.service.groups.values()):
            state = group.core.state
            mine = state.role(self.service.me)
            if mine is None or mine < Role.ADMIN:
                continue
            for peer, until in list(state.ban_until.items()):
                if 0 < until <= now and peer in state.banned:
                    try:
                        lifted.append(self.service.author(group, Unban(peer)))
                    except GroupError as exc:
                        log.info("group %s: cannot end the ban of %s: %s",
                                 self.service.label(group), short_id(peer), exc)
        return lifted

    def approve(self, group: Group, peer: PeerId, approve: bool = True) -> Event:
        return self.service.author(group, Approve(peer, approve))

    def unban(self, group: Group, peer: PeerId) -> Event:
        return self.service.author(group, Unban(peer))

    def ban(self, group: Group, peer: PeerId, until: int = 0, *, purge: bool = False
            ) -> Event:
        event = self.service.author(group, Ban(peer, until))
        if purge:
            self.purge(group, peer)
        return event

