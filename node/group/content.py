"""What a MESSAGE decrypts to, and how a conversation folds edits and reactions (pure).

Theory of operation
-------------------
Conversation stays end-to-end encrypted: replies, edits, reactions and mentions
travel *inside* MESSAGE plaintexts, which only members can read. A plaintext is
a strict msgpack map, in one of two versions:

* version 1 (the original format, still written for a plain post): ``{"text": str}``;
* version 2: ``{"v": 2, "t": "post" | "edit" | "react", ...}`` with exactly the keys
  of its type (see ``decode_content`` and docs/protocol.md, section 15).

Rules that depend on the author (only the author edits a post) or on the past
(a reaction must name a post its author had seen) are applied by every member,
after decryption, by one deterministic fold over the messages in the total
order: ``fold_conversation``. An invalid edit or reaction is ignored (never
shown) and reported in ``Conversation.ignored`` with its reason. Deletes and
pins are plaintext events that the core validates (node.group.state); the fold
takes their outcome as input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from node.errors import RemoteProtocolError
from node.files.attachment import FileRef, decode_ref
from node.group.bodies import MAX_TEXT
from node.group.events import ID_LEN, EventError, EventId
from node.ids import PUBLIC_KEY_LEN, PeerId
from node.wire.strict import pack, unpack_strict

#: Longest reaction, in characters (an emoji with modifiers, or a short word).
MAX_EMOJI = 16
#: Most mentions one message carries.
MAX_MENTIONS = 64
VERSION = 2


@dataclass(frozen=True, slots=True)
class Post:
    text: str
    reply_to: EventId | None = None
    mentions: tuple[PeerId, ...] = ()  # sorted, unique
    file: FileRef | None = None  # an attachment (node.files.attachment)


@dataclass(frozen=True, slots=True)
class Edit:
    target: EventId
    text: str
    mentions: tuple[PeerId, ...] = ()


@dataclass(frozen=True, slots=True)
class React:
    target: EventId
    emoji: str
    remove: bool = False


Content = Post | Edit | React


def check_emoji(emoji: object) -> str:
    """A reaction is 1..16 printable characters, not only spaces; else ``EventError``."""
    if (not isinstance(emoji, str) or not 1 <= len(emoji) <= MAX_EMOJI
            or not emoji.isprintable() or not emoji.strip()):
        raise EventError(f"a reaction is 1..{MAX_EMOJI} printable characters")
    return emoji


def encode_content(content: Content) -> bytes:
    match content:
        case Post(text=text, reply_to=None, mentions=(), file=None):
            return pack({"text": text})  # version 1: readable by every version
        case Post():
            obj: dict[str, object] = {"v": VERSION, "t": "post", "text": content.text}
            if content.reply_to is not None:
                obj["reply"] = content.reply_to
            if content.mentions:
                obj["mentions"] = list(content.mentions)
            if content.file is not None:
                obj["file"] = content.file.encode()
            return pack(obj)
        case Edit():
            obj = {"v": VERSION, "t": "edit", "target": content.target, "text": content.text}
            if content.mentions:
                obj["mentions"] = list(content.mentions)
            return pack(obj)
        case React():
            return pack({"v": VERSION, "t": "react", "target": content.target,
                         "emoji": content.emoji, "remove": content.remove})
    raise AssertionError(content)


def decode_content(raw: bytes) -> Content:
    """Strictly decode a MESSAGE plaintext (either version); ``EventError`` if malformed."""
    try:
        obj = unpack_strict(raw, max_len=MAX_TEXT * 4 + 4096)
    except RemoteProtocolError as exc:
        raise EventError(f"malformed message plaintext: {exc}") from exc
    if not isinstance(obj, dict):
        raise EventError("message plaintext must be a map")
    if set(obj) == {"text"}:
        return Post(_text(obj["text"]))
    if obj.get("v") != VERSION:
        raise EventError(f"unknown message format {obj.get('v')!r}")
    kind = obj.get("t")
    keys = set(obj) - {"v", "t"}
    if kind == "post" and {"text"} <= keys <= {"text", "reply", "mentions", "file"}:
        reply = obj.get("reply")
        if reply is not None:
            reply = _id(reply, "reply")
        try:
            file = decode_ref(obj["file"]) if "file" in obj else None
        except RemoteProtocolError as exc:
            raise EventError(f"bad attachment: {exc}") from exc
        return Post(_text(obj["text"]), reply, _mentions(obj), file)
    if kind == "edit" and {"target", "text"} <= keys <= {"target", "text", "mentions"}:
        return Edit(_id(obj["target"], "target"), _text(obj["text"]),
                    _mentions(obj))
    if kind == "react" and keys == {"target", "emoji", "remove"}:
        if not isinstance(obj["remove"], bool):
            raise EventError("'remove' must be true or false")
        return React(_id(obj["target"], "target"), check_emoji(obj["emoji"]), obj["remove"])
    raise EventError(f"message content of type {kind!r} with keys {sorted(map(str, keys))}")


def _text(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise EventError(f"message text must be a string of at most {MAX_TEXT} characters")
    return value


def _id(value: object, what: str) -> EventId:
    if not isinstance(value, bytes) or len(value) != ID_LEN:
        raise EventError(f"{what!r} must be a {ID_LEN}-byte event id")
    return EventId(value)


def _mentions(obj: dict[object, object]) -> tuple[PeerId, ...]:
    if "mentions" not in obj:
        return ()
    value = obj["mentions"]
    if not isinstance(value, list) or len(value) > MAX_MENTIONS:
        raise EventError(f"'mentions' must be a list of at most {MAX_MENTIONS} peer ids")
    previous = b""
    for item in value:
        if not isinstance(item, bytes) or len(item) != PUBLIC_KEY_LEN or item <= previous:
            raise EventError("'mentions' must be sorted, distinct 32-byte peer ids")
        previous = item
    if not value:
        raise EventError("an empty 'mentions' is left out")
    return tuple(PeerId(m) for m in value)


# -- the conversation fold --


@dataclass(slots=True)
class Thread:
    """A post as the conversation shows it now."""

    id: EventId
    author: PeerId
    text: str | None  # the latest version; None once deleted
    reply_to: EventId | None
    mentions: tuple[PeerId, ...]
    edits: list[tuple[EventId, str]] = field(default_factory=list)  # older versions, oldest 1st
    edit_ids: list[EventId] = field(default_factory=list)  # the EDIT events that took effect
    deleted_by: PeerId | None = None
    file: FileRef | None = None  # its attachment (None once deleted)
    #: emoji -> reactors in the order they reacted (first reaction of each author kept).
    reactions: dict[str, list[PeerId]] = field(default_factory=dict)


@dataclass(slots=True)
class Conversation:
    threads: dict[EventId, Thread] = field(default_factory=dict)
    #: Edit and reaction events -> the post they act on (when they took effect).
    targets: dict[EventId, EventId] = field(default_factory=dict)
    #: Edit and reaction events that were ignored, with why.
    ignored: dict[EventId, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Item:
    """One delivered, visible MESSAGE in the total order; ``content`` None if unreadable."""

    id: EventId
    author: PeerId
    content: Content | None


def fold_conversation(
    items: Iterable[Item],
    saw: Callable[[EventId, EventId], bool],
    deleted: Mapping[EventId, PeerId],
) -> Conversation:
    """Fold posts, edits and reactions (in the total order) into what a member sees.

    ``saw(a, b)``: is b in the causal past of a. ``deleted``: deleted message -> who
    deleted it (validated by the core). Deterministic: the same items give the same
    conversation on every member.
    """
    fold = ConversationFold(saw, deleted)
    for item in items:
        fold.add(item)
    return fold.conversation()


class ConversationFold:
    """``fold_conversation`` one item at a time, for a conversation that grows at its end.

    ``add`` the items in the total order; ``conversation()`` whenever asked (the
    reactions are settled then, for the threads that have any). The same items give
    the same conversation as ``fold_conversation``; items ordered before ones already
    added, or a change to ``deleted``, need a new fold.
    """

    def __init__(self, saw: Callable[[EventId, EventId], bool],
                 deleted: Mapping[EventId, PeerId]) -> None:
        self._saw = saw
        self._deleted = deleted
        self._conv = Conversation()
        #: (target, author, emoji) -> on: the last reaction of each author wins.
        self._reacted: dict[tuple[EventId, PeerId, str], bool] = {}
        self._settled = True

    def add(self, item: Item) -> None:
        conv, deleted, content = self._conv, self._deleted, item.content
        if isinstance(content, Post) or content is None:
            if item.id in deleted:
                conv.threads[item.id] = Thread(item.id, item.author, None, None, (),
                                               deleted_by=deleted[item.id])
            elif content is not None:
                conv.threads[item.id] = Thread(item.id, item.author, content.text,
                                               content.reply_to, content.mentions,
                                               file=content.file)
            else:  # unreadable here (sent before we joined): others may still react to it
                conv.threads[item.id] = Thread(item.id, item.author, None, None, ())
            return
        reason = _why_not(conv, item, content, self._saw, deleted)
        if reason is not None:
            conv.ignored[item.id] = reason
            return
        thread = conv.threads[content.target]
        conv.targets[item.id] = content.target
        if isinstance(content, Edit):
            assert thread.text is not None
            thread.edits.append((thread.edit_ids[-1] if thread.edit_ids else thread.id,
                                 thread.text))
            thread.edit_ids.append(item.id)
            thread.text, thread.mentions = content.text, content.mentions
        else:
            self._reacted[(content.target, item.author, content.emoji)] = not content.remove
            self._settled = False

    def has(self, event_id: EventId) -> bool:
        """Has the item ``event_id`` been added?"""
        conv = self._conv
        return event_id in conv.threads or event_id in conv.targets or event_id in conv.ignored

    def conversation(self) -> Conversation:
        if not self._settled:
            for target, _, _ in self._reacted:
                self._conv.threads[target].reactions = {}
            for (target, author, emoji), on in self._reacted.items():
                thread = self._conv.threads[target]
                if on and thread.deleted_by is None:
                    thread.reactions.setdefault(emoji, []).append(author)
            self._settled = True
        return self._conv


def _why_not(conv: Conversation, item: Item, content: Edit | React,
             saw: Callable[[EventId, EventId], bool], deleted: Mapping[EventId, PeerId]
             ) -> str | None:
    if item.id in deleted:
        return "deleted"
    thread = conv.threads.get(content.target)
    if thread is None or not saw(item.id, content.target):
        return f"no message {content.target.hex()[:12]} in its past"
    if thread.deleted_by is not None:
        return "its message was deleted"
    if isinstance(content, Edit) and thread.author != item.author:
        return "only the author may edit a message"
    if isinstance(content, Edit) and thread.text is None:
        return "cannot edit a message that cannot be read"
    return None
