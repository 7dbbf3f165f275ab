"""Open groups on a running node: discovery, joining, admin powers (trio driver).

Theory of operation
-------------------
An open group is a public channel on the LAN: its events are signed like any
group's, but a MESSAGE carries its content in clear (the channel's Noise
encryption still protects it on the wire). Its members announce it over mDNS
(``node.wire.announce``: one ``_kith-group._tcp`` record per open group per
member), and a peer that is not a member joins by itself:

1. It finds a member: from the announcements it heard (``heard``), or, given a
   full group id, among the peers it is already connected to.
2. It asks that member for the group's events (``open`` peer message,
   ``node.wire.open_messages``). The member answers only for an open group and
   only a peer that may join (not banned; approved, under a whitelist): it pushes
   everything it has, then its version vector; otherwise ``open-refused``.
3. The asker delivers the events into a side core (nothing is stored yet) until
   it has everything the vector names, checks that a JOIN would be valid in that
   state (else it reports why and keeps nothing), adopts the group, and authors
   its JOIN, causally after everything it received. From then on the group is
   like any other: fanout, outbox, anti-entropy and receipts between members.

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
from node.group.bodies import Approve, Ban, Delete, Join, Role, Unban
from node.group.events import Event, EventError, GroupId, Kind, decode_event
from node.group.membership import AuthorizationError, authorize
from node.group.state import GroupCore
from node.ids import PeerId, short_id
from node.logs import RateLimitedLog, clip, reason_key
from node.net.address import DialTarget
from node.wire.announce import GroupAnnouncement, GroupRecord, open_group_records
from node.wire.messages import EventsMessage, PeerMessage, VectorMessage, encode_message
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
class _Joining:
    """A join in progress: the events one member sent, before we are a member."""

    core: GroupCore
    peer: PeerId
    target: dict[PeerId, int] | None = None
    refused: str | None = None
    done: trio.Event = field(default_factory=trio.Event)

    def check(self) -> None:
        if self.target is not None and all(
            self.core.frontier.get(a, 0) >= n for a, n in self.target.items()
        ):
            self.done.set()


class OpenGroups:
    def __init__(self, service: GroupHost) -> None:
        self.service = service
        #: mDNS instance -> (announcement, when heard).
        self.heard: dict[str, tuple[GroupAnnouncement, float]] = {}
        self._joining: dict[GroupId, _Joining] = {}

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
            joining = self._joining.get(message.group)
            if joining is not None and joining.peer == sender:
                joining.refused = message.reason
                joining.done.set()
        return True

    def on_message(self, sender: PeerId, message: PeerMessage) -> bool:
        """Events and the closing vector for a join in progress (True: handled here)."""
        group_id = message.group
        joining = self._joining.get(group_id)
        if joining is None or sender != joining.peer:
            return False
        if isinstance(message, EventsMessage):
            for raw in message.events:
                try:
                    joining.core.receive(decode_event(raw))
                except EventError as exc:
                    peer_log.warning((sender, reason_key(str(exc))),
                                     "dropping an event from %s: %s", short_id(sender),
                                     clip(str(exc)))
        elif isinstance(message, VectorMessage):
            joining.target = dict(message.vector)
        else:
            return False
        joining.check()
        return True

    def _answer(self, conn: PeerLink, group_id: GroupId) -> None:
        """A peer asks for an open group's events: push them and our vector, or refuse."""
        peer = conn.info.peer_id
        group = self.service.groups.get(group_id)
        reason = None
        if group is None or group.core.mode != "open" or self.service.me not in (
                group.core.state.members):
            reason = "no open group with this id here"  # never confirms a private group
        else:
            state = group.core.state
            if peer in state.banned:
                reason = "you are banned from this group"
            elif (state.policy == "whitelist" and peer not in state.approved
                  and peer not in state.members):
                reason = "this group admits only peers an admin approved"
        if reason is not None:
            peer_log.info((peer, "refused"), "refused %s the events of %s: %s",
                          short_id(peer), group_id.hex()[:12], reason)
            conn.send_nowait(encode_open(OpenRefused(group_id, reason)))
            return
        assert group is not None
        self.service.offer_history(group, peer)  # (we owe it the history, as for an ADD)
        vector = group.vector()
        conn.send_nowait(encode_message(VectorMessage(group.id, vector, want=False)))
        log.info("open group %s: sent %d event(s) to %s, who wants to join",
                 self.service.label(group), group.core.delivered_count(), short_id(peer))

    # -- joining --

    async def join(self, text: str, patience: float = JOIN_TIMEOUT) -> Group:
        """Join the open group ``text`` (name or id) heard nearby, or known here."""
        local = self._local(text)  # we were a member once (left, or were banned)
        servers = self._servers(text if local is None else local.id.hex(), local)
        reasons: list[str] = []
        for group_id, peer, target in servers:
            try:
                joining = await self._fetch(group_id, peer, target, patience)
            except _Refused as exc:
                reasons.append(str(exc))
                continue
            if joining is not None:
                return self._adopt(joining, local)
        if reasons:
            raise GroupError(reasons[-1])
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
        self, group_id: GroupId, peer: PeerId, target: DialTarget | None, patience: float
    ) -> _Joining | None:
        """Ask ``peer`` for the group's events; what it sent, or None if it did not answer."""
        node = self.service.node
        with trio.move_on_after(patience):
            if peer not in node.connections and target is not None:
                try:
                    await node.connect(target)
                except (HandshakeError, RemoteProtocolError, trio.BrokenResourceError,
                        OSError) as exc:
                    log.info("cannot reach %s to join: %s", short_id(peer), exc)
                    return None
                await node.wait_until(lambda: peer in node.connections)
            conn = node.connections.get(peer)
            if conn is None:
                return None
            joining = self._joining[group_id] = _Joining(GroupCore(group_id), peer)
            try:
                conn.send_nowait(encode_open(OpenRequest(group_id)))
                await joining.done.wait()
            finally:
                if self._joining.get(group_id) is joining:
                    del self._joining[group_id]
            if joining.refused is not None:
                raise _Refused(f"{short_id(peer)} refused: {joining.refused}")
            return joining
        log.info("no answer from %s about group %s", short_id(peer), group_id.hex()[:12])
        return None

    def _adopt(self, joining: _Joining, local: Group | None) -> Group:
        """Store what the member sent and author our JOIN (if it is valid)."""
        core, service = joining.core, self.service
        body = Join(service.node.name)
        state = core.state
        if local is not None:  # bring what we had up to date first (it may hold an UNBAN)
            service.deliver(local, core.ordered(), joining.peer)
            state = local.core.state
        try:
            if not state.created:
                raise AuthorizationError("the member sent no CREATE")
            authorize(state, service.me, Kind.JOIN, body)
        except AuthorizationError as exc:
            raise GroupError(f"cannot join {state.name or 'this group'!r}: {exc}") from None
        group = local
        if group is None:
            group = service.adopt(core, joining.peer, core.ordered(), {})
        else:
            with service.store.transaction():
                service.store.set_group_left(group.id, False)
        service.author(group, body)
        log.info("joined open group %s (%d events from %s)", state.name,
                 len(core.ordered()), short_id(joining.peer))
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


class _Refused(Exception):
    pass
