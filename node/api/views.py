"""JSON views of groups, members and events for the control socket and the Python API.

Shaping for the user interfaces lives here, in the API layer, not in the services:
the views read the group service and, through its peer links, the mesh (names and
presence); nothing in ``service/`` depends on how a UI wants to see it.
"""

from __future__ import annotations

from typing import Any

from node.api.numbers import number_of
from node.group.bodies import (
    Add,
    Approve,
    Ban,
    Create,
    Delete,
    Join,
    Mute,
    Pin,
    PrivateMessage,
    Relay,
    Remove,
    Rename,
    SetPolicy,
    SetRole,
    Unban,
    decode_body,
)
from node.group.content import Edit, React
from node.group.events import Event, Kind
from node.group.relaying import Relay as RelayCore
from node.ids import PeerId, format_peer_id, short_id
from node.service.groups import Group, GroupService, TypingNotice

#: Bookkeeping events that a conversation view does not show.
HIDDEN_KINDS = frozenset({Kind.SENDER_KEY, Kind.RECEIPT, Kind.HISTORY})
#: Events folded into the message they act on (shown by ``log`` only with ``all``).
FOLDED_KINDS = frozenset({Kind.DELETE, Kind.PIN, Kind.MUTE})


def is_folded(group: Group, event: Event) -> bool:
    """An edit, reaction, delete, pin or mute: shown as part of its target."""
    if event.kind in FOLDED_KINDS:
        return True
    return event.kind is Kind.MESSAGE and isinstance(group.contents.get(event.id), Edit | React)


def is_shown(group: Group, event: Event, *, include_all: bool = False) -> bool:
    """Does ``log`` show this event (withdrawn and muted messages never)?"""
    core = group.core
    if core.is_withdrawn(event.author, event.seq) or core.is_muted(event):
        return False
    if include_all:
        return True
    return event.kind not in HIDDEN_KINDS and not is_folded(group, event)


def typing_view(service: GroupService, group: Group, notice: TypingNotice) -> dict[str, Any]:
    return {"kind": "typing", "author": format_peer_id(notice.author),
            "author_name": name_of(service, group, notice.author), "group": group.id.hex()}


def group_view(service: GroupService, group: Group) -> dict[str, Any]:
    state = group.core.state
    role = state.role(service.me)
    return {
        "id": group.id.hex(),
        "name": state.name,
        "mode": state.mode,
        "share_history": state.share_history,
        "role": role.label if role is not None else None,
        "member": role is not None,
        "members": len(state.members),
        "max_members": state.max_members,
        "events": group.core.delivered_count(),
        "epoch": group.keys.own.epoch if group.keys.own is not None else None,
        "waiting": sum(len(v) for v in group.core.buffered().values()),
        "missing": {name_of(service, group, a): n for a, n in group.core.gaps().items()},
        "unread": service.unread(group),
        "muted": group.notify_muted,
        "pinned": [t.hex() for t in group.core.pinned()],
        "policy": state.policy or None,  # open groups: whitelist or blacklist
        "banned": sorted(format_peer_id(p) for p in state.banned),
        "approved": sorted(format_peer_id(p) for p in state.approved),
        "relays": sorted(format_peer_id(p) for p in state.relays),
        "relaying": service.me in state.relays,  # this node is one of them
        # a relay node: what it holds and did for the group (node.group.relaying)
        "relay": group.stats() if isinstance(group, RelayCore) else None,
    }


def name_of(service: GroupService, group: Group, peer: PeerId) -> str:
    if peer == service.me:
        return service.node.name
    known = service.node.mesh.known.get(peer)
    if known is not None and known.name:
        return known.name
    return service.names.get(peer) or group.core.state.labels.get(peer) or short_id(peer)


def members_view(service: GroupService, group: Group) -> list[dict[str, Any]]:
    state = group.core.state
    rows = []
    muted = state.muted()
    for peer, role in sorted(state.members.items(), key=lambda kv: (-kv[1], bytes(kv[0]))):
        known = service.node.mesh.known.get(peer)
        until = muted.get(peer)
        rows.append({
            "typing": peer != service.me and service.is_typing(group, peer),
            "last_seen": known.last_seen if known is not None else None,
            "muted": until is not None,
            "muted_until": float(until) if until else None,
            "peer_id": format_peer_id(peer),
            "short_id": short_id(peer),
            "name": name_of(service, group, peer),
            "role": role.label,
            "me": peer == service.me,
            "presence": "online" if peer == service.me or peer in service.node.connections
            else service.node.mesh.presence(peer).value,
        })
    return rows


def describe_event(service: GroupService, group: Group, event: Event) -> str | None:
    """A line of text for membership events (messages have their own text)."""
    if event.kind in (Kind.MESSAGE, Kind.SENDER_KEY, Kind.RECEIPT, Kind.HISTORY):
        return None
    body = decode_body(event.kind, event.body, mode=group.core.mode)
    who = name_of(service, group, event.author)
    match body:
        case Create():
            shared = ", history shared with new members" if body.share_history else ""
            return f"{who} created the group {body.name!r} ({body.mode}{shared})"
        case Add():
            return f"{who} added {name_of(service, group, body.member)} as {body.role.label}"
        case Remove():
            return f"{who} removed {name_of(service, group, body.member)}"
        case Ban():
            end = " for a time" if body.until else ""
            return f"{who} banned {name_of(service, group, body.member)}{end}"
        case Unban():
            return f"{who} lifted the ban of {name_of(service, group, body.member)}"
        case Join():
            return f"{who} joined"
        case Approve():
            verb = "approved" if body.approve else "took back the approval of"
            return f"{who} {verb} {name_of(service, group, body.member)}"
        case SetRole():
            return f"{who} made {name_of(service, group, body.member)} {body.role.label}"
        case Rename():
            return f"{who} renamed the group to {body.name!r}"
        case SetPolicy():
            return f"{who} set who may add members: {body.add_policy}"
        case Delete():
            return f"{who} deleted message {body.target.hex()[:8]}"
        case Pin():
            return f"{who} {'pinned' if body.pin else 'unpinned'} message {body.target.hex()[:8]}"
        case Mute() if body.mute:
            end = " until their mute ends" if body.until else ""
            return f"{who} muted {name_of(service, group, body.member)}{end}"
        case Mute():
            return f"{who} unmuted {name_of(service, group, body.member)}"
        case Relay() if body.on:
            return f"{who} made {name_of(service, group, body.peer)} a relay of the group"
        case Relay():
            return f"{who} stopped {name_of(service, group, body.peer)} relaying the group"
    if event.kind is Kind.LEAVE:
        return f"{who} left"
    return None


def event_view(service: GroupService, group: Group, event: Event) -> dict[str, Any]:
    mine = event.author == service.me
    view: dict[str, Any] = {
        "id": event.id.hex(),
        "author": format_peer_id(event.author),
        "author_name": name_of(service, group, event.author),
        "seq": event.seq,
        "lamport": event.lamport,
        "epoch": event.epoch,
        "kind": event.kind.name.lower(),
        "text": group.texts.get(event.id),
        "info": describe_event(service, group, event),
        "time": group.joined_at.get(event.id),
        "mine": mine,
    }
    if event.kind is Kind.MESSAGE:
        view["number"] = number_of(group, event.id)  # [N]: node.api.numbers
        view["decrypted"] = view["text"] is not None
        body = decode_body(Kind.MESSAGE, event.body, mode=group.core.mode)
        if isinstance(body, PrivateMessage):
            view["chain_index"] = body.index  # with epoch: which message key (never reused)
        _message_fields(service, group, event, view)
    elif event.kind in (Kind.DELETE, Kind.PIN):
        target = decode_body(event.kind, event.body)
        assert isinstance(target, Delete | Pin)
        view["target"] = target.target.hex()
        view["target_number"] = number_of(group, target.target)
    elif event.kind in (Kind.BAN, Kind.UNBAN, Kind.APPROVE):
        action = decode_body(event.kind, event.body)
        assert isinstance(action, Ban | Unban | Approve)
        view["target"] = format_peer_id(action.member)
        if isinstance(action, Ban):
            view["until"] = float(action.until) if action.until else None
    elif event.kind is Kind.MUTE:
        mute = decode_body(event.kind, event.body)
        assert isinstance(mute, Mute)
        view["target"] = format_peer_id(mute.member)
        view["muted"] = mute.mute
        view["until"] = float(mute.until) if mute.until else None
    if mine:
        others = [m for m in group.core.state.members if m != service.me]
        unreadable = group.unreadable_by.get(event.id, set())
        have = ({m for m in others if group.has(m, event)}
                | set(group.acked.get(event.id, {}))) - unreadable
        delivered_to = sorted(format_peer_id(p) for p in have)
        if not others or all(m in have for m in others):
            state = "delivered"
        elif have:
            state = "sent"
        else:
            state = "pending"
        view["state"] = state
        view["recipients"] = len(others)
        view["delivered_to"] = delivered_to
        if unreadable:  # stored there, but it cannot be read: not delivered
            view["unreadable_by"] = sorted(format_peer_id(p) for p in unreadable)
        readers = sorted(m for m in others
                         if group.read.get(m, {}).get(service.me, 0) >= event.seq)
        view["read_by"] = [format_peer_id(m) for m in readers]
        view["read_by_names"] = [name_of(service, group, m) for m in readers]
        counters = group.counters.get(event.id)
        if counters is not None:
            view["cost"] = {"encryptions": counters.encryptions,
                            "signatures": counters.signatures, "bytes_out": counters.bytes_out}
    else:
        view["state"] = "received"
    return view


def log_view(
    service: GroupService, group: Group, *, include_keys: bool = False, limit: int | None = None
) -> list[dict[str, Any]]:
    rows = [
        event_view(service, group, e)
        for e in group.core.ordered()
        if is_shown(group, e, include_all=include_keys)
    ]
    return rows[-limit:] if limit else rows


def _message_fields(service: GroupService, group: Group, event: Event, view: dict[str, Any]
                    ) -> None:
    """Replies, edits, deletes, reactions, pins and mentions of a MESSAGE view."""
    conv = group.conversation()
    content = group.contents.get(event.id)
    if isinstance(content, Edit | React):
        view["kind"] = "edit" if isinstance(content, Edit) else "reaction"
        view["target"] = content.target.hex()
        view["target_number"] = number_of(group, content.target)
        view["applied"] = event.id in conv.targets
        if isinstance(content, React):
            view["emoji"], view["remove"] = content.emoji, content.remove
        return
    thread = conv.threads.get(event.id)
    deleted = event.id in group.core.deleted
    view.update({"reply_to": None, "reply_preview": None, "edited": False, "edits": [],
                 "deleted": deleted, "reactions": {}, "pinned": event.id in group.core.pinned(),
                 "mentions": [], "mentions_me": False})
    if deleted:
        view["text"] = None
        view["deleted_by"] = name_of(service, group, group.core.deleted[event.id].author)
    if thread is None:
        return
    view["text"] = thread.text
    if thread.reply_to is not None:
        view["reply_to"] = thread.reply_to.hex()
        quoted = conv.threads.get(thread.reply_to)
        if quoted is not None:
            view["reply_preview"] = {"author_name": name_of(service, group, quoted.author),
                                     "text": quoted.text, "deleted": quoted.deleted_by is not None,
                                     "number": number_of(group, thread.reply_to)}
    view["edited"] = bool(thread.edits)
    view["edits"] = [{"text": text, "time": group.joined_at.get(version)}
                     for version, text in thread.edits]
    if thread.edit_ids:
        view["edited_at"] = group.joined_at.get(thread.edit_ids[-1])
    view["reactions"] = {emoji: [name_of(service, group, p) for p in who]
                         for emoji, who in thread.reactions.items()}
    view["mentions"] = [format_peer_id(p) for p in thread.mentions]
    view["mentions_me"] = service.me in thread.mentions
    if thread.file is not None and service.files is not None and not deleted:
        transfer = service.files.transfers.get(event.id)
        if transfer is not None:
            view["file"] = service.files.view(transfer)
