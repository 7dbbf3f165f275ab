"""The chat client's state, without I/O: what the node told us, and what the user sees.

The session (``session.py``) feeds it the node's answers (``group.list``,
``group.members``, ``log``, ``peers``) and the lines of the follow streams;
the view renders it (``render.py``). Time comes in as ``now`` arguments, so
everything here is plain data and deterministic to test.

Views from the node are plain dicts. Fields added by newer nodes (``unread``,
``muted``, ``reactions``, ``typing``, ...) are read with defaults, so the
client works, with less to show, against a node that does not have them yet.

Handles: messages carry short numbers (``[7]``) so that ``/reply 7 ...`` never
needs a hex id. The node numbers them (``number`` in its views: the order it stored
them, node.api.numbers), so ``[7]`` is the same message in every chat session, in
``kith log`` and in ``kith react GROUP 7 ...``. Against a node whose views have no
numbers, the client numbers messages itself, in the order it first sees them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Seconds a typing notice stays shown without a new one.
TYPING_SHOWN = 6.0
#: Local lines (help, peers, errors) kept under the conversation.
MAX_NOTICES = 40
#: Shortest gap between two bells (a burst of messages rings once).
BELL_INTERVAL = 1.0

View = dict[str, Any]


@dataclass
class GroupInfo:
    id: str
    name: str
    role: str | None = None
    member: bool = True
    members: int = 0
    unread: int = 0
    muted: bool = False
    pinned: list[str] = field(default_factory=list)
    missing: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_view(cls, v: View) -> GroupInfo:
        return cls(
            id=str(v["id"]),
            name=str(v.get("name") or str(v["id"])[:12]),
            role=v.get("role"),
            member=bool(v.get("member", True)),
            members=int(v.get("members", 0)),
            unread=int(v.get("unread") or 0),
            muted=bool(v.get("muted", False)),
            pinned=[str(p) for p in v.get("pinned") or []],
            missing={str(k): int(n) for k, n in (v.get("missing") or {}).items()},
        )


@dataclass
class MemberInfo:
    peer_id: str
    short_id: str
    name: str
    role: str = "member"
    me: bool = False
    presence: str = "offline"
    typing: bool = False
    last_seen: float | None = None
    muted: bool = False

    @classmethod
    def from_view(cls, v: View) -> MemberInfo:
        return cls(
            peer_id=str(v["peer_id"]),
            short_id=str(v.get("short_id") or str(v["peer_id"])[:8]),
            name=str(v.get("name") or v.get("short_id") or "?"),
            role=str(v.get("role") or "member"),
            me=bool(v.get("me", False)),
            presence=str(v.get("presence") or "offline"),
            typing=bool(v.get("typing", False)),
            last_seen=v.get("last_seen"),
            muted=bool(v.get("muted", False)),
        )


@dataclass
class PeerInfo:
    peer_id: str
    short_id: str
    name: str
    state: str

    @classmethod
    def from_view(cls, v: View) -> PeerInfo | None:
        if not v.get("peer_id"):
            return None  # an address we have not met yet: nothing to add or mention
        return cls(str(v["peer_id"]), str(v.get("short_id") or v["peer_id"][:8]),
                   str(v.get("name") or ""), str(v.get("state") or "offline"))


@dataclass(frozen=True)
class Notification:
    """Ring the bell (and maybe a desktop notification) for this message."""

    group: str
    author: str
    text: str
    mention: bool


@dataclass
class ChatModel:
    """Everything the screen shows; updated by the session, read by the view."""

    me: str = ""
    my_name: str = ""
    node_mode: str = ""
    groups: list[GroupInfo] = field(default_factory=list)
    current: str | None = None
    events: list[View] = field(default_factory=list)
    members: list[MemberInfo] = field(default_factory=list)
    peers: list[PeerInfo] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    status: str = ""
    #: group id -> event id -> handle number
    handles: dict[str, dict[str, int]] = field(default_factory=dict)
    #: group id -> author peer id -> (name, when the last typing notice came)
    typing: dict[str, dict[str, tuple[str, float]]] = field(default_factory=dict)
    #: group id -> author peer id -> when a message of theirs last arrived (it ends their
    #: typing, also the flag the node keeps in its member views for a few more seconds)
    spoke: dict[str, dict[str, float]] = field(default_factory=dict)
    last_bell: float = float("-inf")

    # -- groups -------------------------------------------------------------

    def set_groups(self, views: list[View]) -> None:
        self.groups = [GroupInfo.from_view(v) for v in views]
        if self.current is not None and self.group(self.current) is None:
            self.current = None
        if self.current is None and self.groups:
            self.current = self.groups[0].id

    def group(self, group_id: str | None) -> GroupInfo | None:
        return next((g for g in self.groups if g.id == group_id), None)

    @property
    def current_group(self) -> GroupInfo | None:
        return self.group(self.current)

    def find_group(self, ref: str) -> GroupInfo | None:
        """A group by exact name, then by id prefix (3+ hex digits), then by name prefix."""
        exact = [g for g in self.groups if g.name == ref]
        if len(exact) == 1:
            return exact[0]
        folded = [g for g in self.groups if g.name.lower() == ref.lower()]
        if len(folded) == 1:
            return folded[0]
        if len(ref) >= 3:
            by_id = [g for g in self.groups if g.id.startswith(ref.lower())]
            if len(by_id) == 1:
                return by_id[0]
        prefix = [g for g in self.groups if g.name.lower().startswith(ref.lower())]
        return prefix[0] if len(prefix) == 1 else None

    def switch(self, group_id: str) -> None:
        if group_id != self.current:
            self.current = group_id
            self.events = []
            self.members = []
            self.notices = []

    def step_group(self, delta: int) -> str | None:
        """The group ``delta`` places after the current one in the list (wrapping)."""
        if not self.groups:
            return None
        ids = [g.id for g in self.groups]
        index = ids.index(self.current) if self.current in ids else 0
        return ids[(index + delta) % len(ids)]

    # -- conversation ---------------------------------------------------------

    def set_log(self, group_id: str, views: list[View]) -> None:
        """The current group's conversation, as ``log`` returned it (folded, in order)."""
        if group_id != self.current:
            return  # an answer for a group the user has left meanwhile
        self.events = views
        handles = self.handles.setdefault(group_id, {})
        for view in views:
            if view.get("kind") == "message" and view.get("id"):
                number = view.get("number")
                if isinstance(number, int) and not isinstance(number, bool):
                    handles[view["id"]] = number  # the node's: the same everywhere
                elif view["id"] not in handles:
                    handles[view["id"]] = len(handles) + 1

    def handle_of(self, event_id: str) -> int | None:
        return self.handles.get(self.current or "", {}).get(event_id)

    def event_for(self, handle: int) -> View | None:
        """The message shown as ``[handle]`` in the current group."""
        for event_id, number in self.handles.get(self.current or "", {}).items():
            if number == handle:
                return next((v for v in self.events if v.get("id") == event_id), None)
        return None

    def last_message(self, *, mine: bool | None = None) -> View | None:
        for view in reversed(self.events):
            if view.get("kind") == "message" and (mine is None or bool(view.get("mine")) == mine):
                return view
        return None

    def notice(self, line: str) -> None:
        self.notices.append(line)
        del self.notices[:-MAX_NOTICES]

    # -- members, peers, typing -------------------------------------------------

    def set_members(self, group_id: str, views: list[View]) -> None:
        if group_id == self.current:
            self.members = [MemberInfo.from_view(v) for v in views]

    def set_peers(self, views: list[View]) -> None:
        self.peers = [p for v in views if (p := PeerInfo.from_view(v)) is not None]

    def name_of(self, peer_id: str) -> str:
        for m in self.members:
            if m.peer_id == peer_id:
                return m.name
        for p in self.peers:
            if p.peer_id == peer_id and p.name:
                return p.name
        return peer_id[:8]

    def saw_typing(self, group_id: str, author: str, name: str, now: float) -> None:
        if author != self.me:
            self.typing.setdefault(group_id, {})[author] = (name, now)

    def typing_now(self, group_id: str, now: float) -> list[str]:
        """Names of members typing in the group: notices from the stream, or the view's flag."""
        seen = self.typing.get(group_id, {})
        names = {author: name for author, (name, t) in seen.items() if now - t < TYPING_SHOWN}
        if group_id == self.current:
            for m in self.members:
                if m.typing and not m.me and not self._just_spoke(group_id, m.peer_id, now):
                    names[m.peer_id] = m.name
        return sorted(names.values())

    def is_typing(self, peer_id: str, now: float) -> bool:
        seen = self.typing.get(self.current or "", {}).get(peer_id)
        return seen is not None and now - seen[1] < TYPING_SHOWN

    def member_typing(self, member: MemberInfo, now: float) -> bool:
        """Whether the members pane shows ``member`` typing (current group)."""
        if self.is_typing(member.peer_id, now):
            return True
        return member.typing and not self._just_spoke(self.current or "", member.peer_id, now)

    def _just_spoke(self, group_id: str, author: str, now: float) -> bool:
        """A message of ``author`` arrived since the node's typing flag could have been set."""
        when = self.spoke.get(group_id, {}).get(author)
        return when is not None and now - when < TYPING_SHOWN

    def stop_typing(self, group_id: str, author: str, now: float) -> None:
        """Someone who was typing sent their message: they are not typing any more."""
        self.typing.get(group_id, {}).pop(author, None)
        self.spoke.setdefault(group_id, {})[author] = now

    # -- notifications ----------------------------------------------------------

    def on_stream_event(self, group_id: str, view: View, now: float) -> Notification | None:
        """A line of a follow stream: update what it changes; say whether to notify."""
        if view.get("kind") == "typing":
            self.saw_typing(group_id, str(view.get("author", "")),
                            str(view.get("author_name") or "?"), now)
            return None
        if view.get("kind") == "message" and view.get("author"):
            self.stop_typing(group_id, str(view["author"]), now)
        note = should_notify(view, self.group(group_id), self.me)
        if note is None:
            return None
        if now - self.last_bell < BELL_INTERVAL:
            return None
        self.last_bell = now
        return note


def should_notify(view: View, group: GroupInfo | None, me: str) -> Notification | None:
    """Notify for a new message from someone else: always if it mentions me, else unless muted."""
    if view.get("kind") != "message" or view.get("mine") or view.get("author") == me:
        return None
    if view.get("deleted") or view.get("text") is None:
        return None
    mention = bool(view.get("mentions_me"))
    if not mention and (group is None or group.muted):
        return None
    return Notification(
        group=group.name if group is not None else "?",
        author=str(view.get("author_name") or "?"),
        text=str(view.get("text")),
        mention=mention,
    )
