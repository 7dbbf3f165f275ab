"""Control-socket operations on groups (``kith group ...``, ``kith send``, ``kith log``).

Each op takes the running node (``NodeApp``: the peer manager and its group
service) and the request map, and returns a JSON-able result or raises
``KithError`` with one clear line. ``log`` with ``"follow": true``
answers with the log so far and then streams one ``{"ok": true, "event": ...}``
line per new event until the client hangs up.

Backpressure: ``OPS`` (the control socket's table) waits before each op that authors
a message until every peer can take more of our messages
(``GroupService.wait_for_room``), so a script that sends as fast as it can goes at
the pace of the slowest peer and never makes one look stuck. ``DIRECT`` has the same
ops without the wait, for synchronous callers (the Python API): their messages wait
in the driver's outboxes instead (``node.service.outbox``).
"""

from __future__ import annotations

import inspect
import json
import re
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from node.api import protocol
from node.api.numbers import find_event as find_message
from node.api.views import (
    event_view,
    group_view,
    is_shown,
    log_view,
    members_view,
    name_of,
    typing_view,
)
from node.errors import ConfigError, KithError
from node.group.bodies import (
    DEFAULT_MAX_MEMBERS,
    HARD_MAX_MEMBERS,
    JOIN_POLICIES,
    MAX_GROUP_NAME,
    MAX_TEXT,
    MODES,
    Role,
)
from node.group.content import MAX_EMOJI
from node.group.events import Event, EventId, Kind
from node.ids import PEER_ID_TEXT_LEN, PeerId, format_peer_id, parse_peer_id, short_id
from node.service.file_fetch import Upload
from node.service.files import FileService
from node.service.groups import Group, GroupService, Notice, TypingNotice

if TYPE_CHECKING:
    from node.api.context import NodeApp


#: Most messages one ``send`` request may write (for tests, demos and load).
MAX_COUNT = 100_000
#: Longest admin mute with an end, in minutes (a year); without ``minutes``: until unmuted.
MAX_MUTE_MINUTES = 525_600
_MENTION = re.compile(r"@([^\s@,;:!?.()\[\]{}<>\"']+)")


def _service(app: NodeApp) -> GroupService:
    if app.groups is None:
        raise KithError("this node has no data directory, so no groups")
    return app.groups


def _str(req: dict[str, Any], key: str) -> str:
    value = req.get(key)
    if not isinstance(value, str) or not value:
        raise KithError(f"missing {key!r}")
    return value


def _group(app: NodeApp, req: dict[str, Any]) -> tuple[GroupService, Group]:
    service = _service(app)
    return service, service.find(_str(req, "group"))


def _peer(service: GroupService, group: Group, req: dict[str, Any]) -> PeerId:
    """A peer by full id, by name (as ``kith peers`` shows it) or by a prefix of its id.

    Names come from the peers this node knows and the group's members and labels; an
    id prefix needs 4 characters. Several matches or none are a one-line error.
    """
    text = _str(req, "peer").strip().removeprefix("@")
    compact = "".join(text.split()).replace("-", "").lower()
    if len(compact) >= PEER_ID_TEXT_LEN:
        try:
            return parse_peer_id(text)
        except ConfigError as exc:
            raise KithError(str(exc)) from None
    names: dict[PeerId, set[str]] = {}
    for peer, known in service.node.mesh.known.items():
        names.setdefault(peer, set()).add(known.name)
    for peer in group.core.state.members.keys() | group.core.state.relays:
        names.setdefault(peer, set()).add(name_of(service, group, peer))
    for peer, label in group.core.state.labels.items():
        names.setdefault(peer, set()).add(label)
    for matches in (
        [p for p, called in names.items() if text in called],
        [p for p, called in names.items() if text.lower() in {n.lower() for n in called}],
        [p for p in names if len(compact) >= 4 and format_peer_id(p).startswith(compact)],
    ):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            shorts = ", ".join(sorted(short_id(p) for p in matches))
            raise KithError(f"{text!r} could be several peers ({shorts}): give more of the ID")
    raise KithError(f"no peer {text!r} known to this node (see `kith peers`): "
                    "give its name, short ID or full ID")


def _role(req: dict[str, Any], default: str | None = None) -> Role:
    text = req.get("role", default)
    if not isinstance(text, str) or text.upper() not in Role.__members__ or text == "owner":
        raise KithError("role must be one of admin, member, guest")
    return Role[text.upper()]


def _event(group: Group, req: dict[str, Any], key: str = "event") -> EventId:
    """An event of ``group``: a message number (``3``, ``[3]``) or an id (``numbers``)."""
    return find_message(group, _str(req, key))


def is_emoji(text: str) -> bool:
    """Is ``text`` an emoji (with its modifiers, joiners, keycaps and flag tags)?

    What we author is checked here; what others send is only held to the core's
    looser rule (``check_emoji``), so a node that reacts with a word still syncs.
    """
    keycap = "\u20e3" in text
    symbols = 0
    for ch in text:
        category = unicodedata.category(ch)
        if category == "So":
            symbols += 1
        elif not (category in ("Sk", "Mn", "Me") or ch == "\u200d"
                  or "\U000e0020" <= ch <= "\U000e007f" or (keycap and ch in "0123456789#*")):
            return False
    return symbols > 0 or keycap


#: ``_event`` for callers outside this module (``kith send`` queueing a reply).
find_event = _event


def mentions_in(service: GroupService, group: Group, text: str) -> list[PeerId]:
    """Members named in ``text`` as ``@name`` or ``@shortid`` (case-insensitive)."""
    names: dict[str, PeerId] = {}
    for peer in group.core.state.members:
        names.setdefault(short_id(peer).lower(), peer)
        names.setdefault(name_of(service, group, peer).lower(), peer)
    found = {names[m.group(1).lower()] for m in _MENTION.finditer(text)
             if m.group(1).lower() in names}
    return sorted(found)


def _text(req: dict[str, Any]) -> str:
    text = req.get("text")
    if not isinstance(text, str) or not text.strip():
        raise KithError("nothing to send")
    if len(text) > MAX_TEXT:
        raise KithError(f"a message is at most {MAX_TEXT} characters")
    return text


def create(app: NodeApp, req: dict[str, Any]) -> Any:
    service = _service(app)
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
    policy = req.get("policy") or ""
    if mode == "open" and policy not in JOIN_POLICIES:
        raise KithError("an open group needs a policy: whitelist or blacklist")
    if mode != "open" and policy:
        raise KithError("only open groups have a join policy")
    return group_view(service, service.create(name, mode, max_members=cap,
                                              share_history=bool(req.get("share_history")),
                                              policy=policy))


def list_groups(app: NodeApp, req: dict[str, Any]) -> Any:
    service = _service(app)
    return [group_view(service, g) for g in service.groups.values()]


def members(app: NodeApp, req: dict[str, Any]) -> Any:
    service, group = _group(app, req)
    return members_view(service, group)


def _event_op(action: Callable[[GroupService, Group, dict[str, Any]], Any]) -> Callable[..., Any]:
    def op(app: NodeApp, req: dict[str, Any]) -> Any:
        service, group = _group(app, req)
        event = action(service, group, req)
        return event_view(service, group, event)

    return op


def send(app: NodeApp, req: dict[str, Any]) -> Any:
    service, group = _group(app, req)
    text = _text(req)
    count = req.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_COUNT:
        raise KithError(f"count must be 1..{MAX_COUNT}")
    reply_to = _event(group, req, "reply_to") if req.get("reply_to") else None
    if count == 1:
        event = service.send(group, text, reply_to=reply_to,
                             mentions=mentions_in(service, group, text))
        return event_view(service, group, event)
    return _send_many(service, group, text, count)


def edit(app: NodeApp, req: dict[str, Any]) -> Any:
    service, group = _group(app, req)
    target, text = _event(group, req), _text(req)
    event = service.edit(group, target, text, mentions_in(service, group, text))
    return event_view(service, group, event)


def delete(app: NodeApp, req: dict[str, Any]) -> Any:
    service, group = _group(app, req)
    target = _event(group, req)
    event = group.core.get(target)
    role = group.core.state.role(service.me)
    if (event is not None and event.author != service.me
            and (role is None or role < Role.ADMIN)):
        raise KithError("only the author or an admin may delete this message")
    return event_view(service, group, service.delete(group, target))


def react(app: NodeApp, req: dict[str, Any]) -> Any:
    service, group = _group(app, req)
    target = _event(group, req)
    emoji = req.get("emoji")
    if not isinstance(emoji, str) or not 1 <= len(emoji) <= MAX_EMOJI:
        raise KithError(f"a reaction is 1..{MAX_EMOJI} characters")
    if not is_emoji(emoji):
        raise KithError(f"a reaction is one emoji (like 👍), not {emoji!r}")
    event = service.react(group, target, emoji, remove=bool(req.get("remove")))
    return event_view(service, group, event)


def pin(app: NodeApp, req: dict[str, Any]) -> Any:
    service, group = _group(app, req)
    target = _event(group, req)
    return event_view(service, group, service.pin(group, target, not req.get("unpin")))


def typing(app: NodeApp, req: dict[str, Any]) -> Any:
    service, group = _group(app, req)
    service.typing(group)
    return None


def mute_member(app: NodeApp, req: dict[str, Any]) -> Any:
    service, group = _group(app, req)
    peer = _peer(service, group, req)
    minutes = req.get("minutes")
    if req.get("unmute"):
        return event_view(service, group, service.mute(group, peer, mute=False))
    if minutes is not None and (not isinstance(minutes, int) or isinstance(minutes, bool)
                                or not 1 <= minutes <= MAX_MUTE_MINUTES):
        raise KithError(f"minutes must be 1..{MAX_MUTE_MINUTES} (or left out: until unmuted)")
    until = int(time.time()) + 60 * minutes if minutes else 0
    return event_view(service, group, service.mute(group, peer, until))


def _minutes(req: dict[str, Any]) -> int:
    """``until`` (unix seconds) for an optional ``minutes``; 0 without one."""
    minutes = req.get("minutes")
    if minutes is None:
        return 0
    if (not isinstance(minutes, int) or isinstance(minutes, bool)
            or not 1 <= minutes <= MAX_MUTE_MINUTES):
        raise KithError(f"minutes must be 1..{MAX_MUTE_MINUTES} (or left out: no end)")
    return int(time.time()) + 60 * minutes


def ban(app: NodeApp, req: dict[str, Any]) -> Any:
    """Ban a peer (optionally for ``minutes``; with ``purge`` also delete its messages)."""
    service, group = _group(app, req)
    event = service.open.ban(group, _peer(service, group, req), _minutes(req),
                             purge=bool(req.get("purge")))
    return event_view(service, group, event)


def purge(app: NodeApp, req: dict[str, Any]) -> Any:
    service, group = _group(app, req)
    deletes = service.open.purge(group, _peer(service, group, req))
    return {"deleted": len(deletes)}


def approve(app: NodeApp, req: dict[str, Any]) -> Any:
    service, group = _group(app, req)
    event = service.open.approve(group, _peer(service, group, req), not req.get("unapprove"))
    return event_view(service, group, event)


async def discover(app: NodeApp, req: dict[str, Any]) -> Any:
    """Open groups heard on the LAN; waits up to ``timeout`` s for the first one."""
    service = _service(app)
    wait = req.get("timeout", 0)
    if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= 60:
        raise KithError("timeout must be 0..60 seconds")
    if not app.node.config.mdns:
        raise KithError("this node runs without mDNS (--no-mdns): it hears no open groups")
    with trio.move_on_after(wait):
        await service.wait_until(lambda: bool(service.open.heard))
    return service.open.discovered()


async def join(app: NodeApp, req: dict[str, Any]) -> Any:
    service = _service(app)
    group = await service.open.join(_str(req, "group"))
    return group_view(service, group)


def notify(app: NodeApp, req: dict[str, Any]) -> Any:
    service, group = _group(app, req)
    muted = req.get("muted")
    if not isinstance(muted, bool):
        raise KithError("'muted' must be true or false")
    service.set_notify_muted(group, muted)
    return group_view(service, group)


async def _send_many(service: GroupService, group: Group, text: str, count: int) -> Any:
    """Numbered messages, yielding between them so the node keeps serving its peers."""
    last = None
    for i in range(1, count + 1):
        last = service.send(group, f"{text} #{i}")
        # Pace ourselves by the members' queues: a burst must not look like a stuck peer.
        await service.wait_for_room()
        await trio.lowlevel.checkpoint()
    assert last is not None
    return event_view(service, group, last)


def _files(service: GroupService) -> FileService:
    if service.files is None:
        raise KithError("this node cannot handle files")
    return service.files


async def send_file(app: NodeApp, req: dict[str, Any]) -> Any:
    """Send a file (``file``: its absolute path) with an optional caption ``text``.

    Answers at once with the upload (poll ``file.upload``), or with ``"wait": true``
    when the message is out, with its event.
    """
    service, group = _group(app, req)
    path = Path(_str(req, "file"))
    if not path.is_absolute():
        raise KithError(f"the file path must be absolute, not {path}")
    text = req.get("text", "")
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise KithError(f"a caption is at most {MAX_TEXT} characters")
    files = _files(service)
    upload = files.start_upload(group, path, text, mentions_in(service, group, text))
    if not req.get("wait"):
        return upload_view(service, group, upload)
    await upload.finished.wait()
    if upload.error is not None:
        raise KithError(upload.error)
    assert upload.event is not None
    return event_view(service, group, upload.event)


def upload_view(service: GroupService, group: Group, upload: Upload) -> dict[str, Any]:
    return {"upload": upload.id, "name": upload.name, "size": upload.size, "done": upload.done,
            "state": upload.state, "error": upload.error,
            "event": event_view(service, group, upload.event) if upload.event else None}


def file_upload(app: NodeApp, req: dict[str, Any]) -> Any:
    service, group = _group(app, req)
    upload = _files(service).uploads.get(_str(req, "upload"))
    if upload is None:
        raise KithError("no such upload")
    return upload_view(service, group, upload)


def file_status(app: NodeApp, req: dict[str, Any]) -> Any:
    service, group = _group(app, req)
    files = _files(service)
    return files.view(files.transfer(_event(group, req)))


async def file_save(app: NodeApp, req: dict[str, Any]) -> Any:
    """Save the file of message ``event`` into directory ``dir`` (absolute); never overwrites."""
    service, group = _group(app, req)
    files = _files(service)
    event = _event(group, req)
    directory = Path(_str(req, "dir"))
    saved = await files.save(event, directory)
    return {**files.view(files.transfer(event)), "path": str(saved)}


def log(app: NodeApp, req: dict[str, Any]) -> Any:
    service, group = _group(app, req)
    limit = req.get("limit")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise KithError("limit must be a positive integer")
    if req.get("read"):
        service.mark_read(group)
    return log_view(service, group, include_keys=bool(req.get("all")), limit=limit)


def _paced(op: Callable[[NodeApp, dict[str, Any]], Any]
           ) -> Callable[[NodeApp, dict[str, Any]], Any]:
    """``op``, run once every peer can take more of our messages (module docstring)."""
    async def paced(app: NodeApp, req: dict[str, Any]) -> Any:
        await _service(app).wait_for_room()
        result = op(app, req)
        if inspect.isawaitable(result):
            result = await result
        return result

    return paced


#: The ops without waiting for room (synchronous callers: the Python API).
DIRECT: dict[str, Callable[[NodeApp, dict[str, Any]], Any]] = {
    "group.create": create,
    "group.list": list_groups,
    "group.members": members,
    "group.add": _event_op(lambda s, g, r: s.add(g, _peer(s, g, r), _role(r, "member"),
                                                 str(r.get("label", ""))[:MAX_GROUP_NAME])),
    "group.remove": _event_op(lambda s, g, r: s.remove(g, _peer(s, g, r))),
    "group.relay": _event_op(lambda s, g, r: s.relay(g, _peer(s, g, r), bool(r.get("on")))),
    "group.ban": ban,
    "group.unban": _event_op(lambda s, g, r: s.open.unban(g, _peer(s, g, r))),
    "group.approve": approve,
    "group.purge": purge,
    "group.discover": discover,
    "group.join": join,
    "group.role": _event_op(lambda s, g, r: s.set_role(g, _peer(s, g, r), _role(r))),
    "group.leave": _event_op(lambda s, g, r: s.leave(g)),
    "group.mute": mute_member,
    "group.notify": notify,
    "send": send,
    "edit": edit,
    "delete": delete,
    "react": react,
    "pin": pin,
    "typing": typing,
    "log": log,
    "file.send": send_file,
    "file.upload": file_upload,
    "file.status": file_status,
    "file.save": file_save,
}

#: Ops that author a message (or several) and so wait for room on the control socket.
PACED = ("send", "edit", "delete", "react", "pin")
#: The control socket's ops.
OPS: dict[str, Callable[[NodeApp, dict[str, Any]], Any]] = {
    name: _paced(op) if name in PACED else op for name, op in DIRECT.items()}


def follow_request(app: NodeApp, line: bytes) -> tuple[Group, bool] | None:
    """(group, mark read) to stream, if this request is ``log`` with follow."""
    try:
        request = json.loads(line)
        if request.get("op") != "log" or not request.get("follow"):
            return None
        return _group(app, request)[1], bool(request.get("read"))
    except (ValueError, AttributeError, RecursionError, KithError):
        return None  # the dispatch answers the malformed request with its error


def watch(app: NodeApp, group: Group) -> trio.MemoryReceiveChannel[Notice]:
    return _service(app).watch_notices(group)


def notice_view(service: GroupService, group: Group, notice: Notice) -> dict[str, Any] | None:
    """What a follower is sent for a new event or typing notice (None: nothing)."""
    if isinstance(notice, TypingNotice):
        return typing_view(service, group, notice)
    if not is_shown(group, notice, include_all=True) or notice.kind in (
        Kind.SENDER_KEY, Kind.RECEIPT, Kind.HISTORY
    ):
        return None
    return event_view(service, group, notice)


async def stream_events(
    app: NodeApp, group: Group, stream: trio.abc.Stream,
    events: trio.MemoryReceiveChannel[Notice], *, read: bool = False,
) -> None:
    service = _service(app)
    with events:
        async for notice in events:
            view = notice_view(service, group, notice)
            if view is None:
                continue
            if read and isinstance(notice, Event):
                service.mark_read(group)
            await stream.send_all(protocol.encode({"ok": True, "event": view}))
