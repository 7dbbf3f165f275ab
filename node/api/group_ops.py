"""Control-socket operations on groups (``kith group ...``, ``kith send``, ``kith log``).

Each op takes the node and the request map and returns a JSON-able result or
raises ``KithError`` with one clear line. ``log`` with ``"follow": true``
answers with the log so far and then streams one ``{"ok": true, "event": ...}``
line per new event until the client hangs up.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from node.api import protocol
from node.errors import ConfigError, KithError
from node.group.bodies import (
    DEFAULT_MAX_MEMBERS,
    HARD_MAX_MEMBERS,
    MAX_GROUP_NAME,
    MAX_TEXT,
    MODES,
    Role,
)
from node.group.events import Event
from node.ids import PeerId, parse_peer_id
from node.service.groups import Group, GroupService
from node.service.views import HIDDEN_KINDS, event_view, group_view, log_view, members_view

if TYPE_CHECKING:
    from node.node import Node


#: Most messages one ``send`` request may write (for tests, demos and load).
MAX_COUNT = 100_000


def _service(node: Node) -> GroupService:
    if node.groups is None:
        raise KithError("this node has no data directory, so no groups")
    return node.groups


def _str(req: dict[str, Any], key: str) -> str:
    value = req.get(key)
    if not isinstance(value, str) or not value:
        raise KithError(f"missing {key!r}")
    return value


def _group(node: Node, req: dict[str, Any]) -> tuple[GroupService, Group]:
    service = _service(node)
    return service, service.find(_str(req, "group"))


def _peer(req: dict[str, Any]) -> PeerId:
    try:
        return parse_peer_id(_str(req, "peer"))
    except ConfigError as exc:
        raise KithError(str(exc)) from None


def _role(req: dict[str, Any], default: str | None = None) -> Role:
    text = req.get("role", default)
    if not isinstance(text, str) or text.upper() not in Role.__members__ or text == "owner":
        raise KithError("role must be one of admin, member, guest")
    return Role[text.upper()]


def create(node: Node, req: dict[str, Any]) -> Any:
    service = _service(node)
    name = _str(req, "name").strip()
    if len(name) > MAX_GROUP_NAME or not name.isprintable():
        raise KithError(f"a group name is 1..{MAX_GROUP_NAME} printable characters")
    mode = req.get("mode", "private")
    if mode not in MODES:
        raise KithError(f"mode must be one of {', '.join(MODES)}")
    if any(g.core.state.name == name for g in service.groups.values()):
        raise KithError(f"you already have a group called {name!r}")
    cap = req.get("max_members", DEFAULT_MAX_MEMBERS)
    if not isinstance(cap, int) or isinstance(cap, bool) or not 2 <= cap <= HARD_MAX_MEMBERS:
        raise KithError(f"max_members must be 2..{HARD_MAX_MEMBERS}")
    return group_view(service, service.create(name, mode, max_members=cap,
                                              share_history=bool(req.get("share_history"))))


def list_groups(node: Node, req: dict[str, Any]) -> Any:
    service = _service(node)
    return [group_view(service, g) for g in service.groups.values()]


def members(node: Node, req: dict[str, Any]) -> Any:
    service, group = _group(node, req)
    return members_view(service, group)


def _event_op(action: Callable[[GroupService, Group, dict[str, Any]], Any]) -> Callable[..., Any]:
    def op(node: Node, req: dict[str, Any]) -> Any:
        service, group = _group(node, req)
        event = action(service, group, req)
        return event_view(service, group, event)

    return op


def send(node: Node, req: dict[str, Any]) -> Any:
    service, group = _group(node, req)
    text = req.get("text")
    if not isinstance(text, str) or not text.strip():
        raise KithError("nothing to send")
    if len(text) > MAX_TEXT:
        raise KithError(f"a message is at most {MAX_TEXT} characters")
    count = req.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
        raise KithError(f"count must be 1..{MAX_COUNT}")
    if count == 1:
        return event_view(service, group, service.send(group, text))
    return _send_many(service, group, text, count)


async def _send_many(service: GroupService, group: Group, text: str, count: int) -> Any:
    """Numbered messages, yielding between them so the node keeps serving its peers."""
    last = None
    half = service.node.config.send_queue // 2
    for i in range(1, count + 1):
        last = service.send(group, f"{text} #{i}")
        # Pace ourselves by the members' queues: a burst must not look like a stuck peer.
        for conn in list(service.node.connections.values()):
            await conn.wait_queue_below(half)
        await trio.lowlevel.checkpoint()
    assert last is not None
    return event_view(service, group, last)


def log(node: Node, req: dict[str, Any]) -> Any:
    service, group = _group(node, req)
    limit = req.get("limit")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise KithError("limit must be a positive integer")
    if req.get("read"):
        service.mark_read(group)
    return log_view(service, group, include_keys=bool(req.get("all")), limit=limit)


OPS: dict[str, Callable[[Node, dict[str, Any]], Any]] = {
    "group.create": create,
    "group.list": list_groups,
    "group.members": members,
    "group.add": _event_op(lambda s, g, r: s.add(g, _peer(r), _role(r, "member"),
                                                 str(r.get("label", ""))[:MAX_GROUP_NAME])),
    "group.remove": _event_op(lambda s, g, r: s.remove(g, _peer(r))),
    "group.ban": _event_op(lambda s, g, r: s.ban(g, _peer(r))),
    "group.role": _event_op(lambda s, g, r: s.set_role(g, _peer(r), _role(r))),
    "group.leave": _event_op(lambda s, g, r: s.leave(g)),
    "send": send,
    "log": log,
}


def follow_request(node: Node, line: bytes) -> tuple[Group, bool] | None:
    """(group, mark read) to stream, if this request is ``log`` with follow."""
    try:
        request = json.loads(line)
        if request.get("op") != "log" or not request.get("follow"):
            return None
        return _group(node, request)[1], bool(request.get("read"))
    except (ValueError, AttributeError, KithError):
        return None  # the dispatch answers the malformed request with its error


def watch(node: Node, group: Group) -> trio.MemoryReceiveChannel[Event]:
    return _service(node).watch(group)


async def stream_events(
    node: Node, group: Group, stream: trio.abc.Stream,
    events: trio.MemoryReceiveChannel[Event], *, read: bool = False,
) -> None:
    service = _service(node)
    with events:
        async for event in events:
            if event.kind in HIDDEN_KINDS or group.core.is_withdrawn(event.author, event.seq):
                continue
            if read:
                service.mark_read(group)
            view = event_view(service, group, event)
            await stream.send_all(protocol.encode({"ok": True, "event": view}))
