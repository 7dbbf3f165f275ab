"""The body of each event kind: a strict msgpack map (pure).

Every body is a msgpack map with exactly the keys listed here (unknown or
missing keys, wrong types and duplicate keys are errors). Roles travel as
strings: ``owner``, ``admin``, ``member``, ``guest``.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from dataclasses import dataclass
from typing import Any

from node.crypto.sender_keys import NONCE_LEN as MESSAGE_NONCE_LEN
from node.crypto.sender_keys import ZERO_NONCE
from node.errors import RemoteProtocolError
from node.group.events import ID_LEN, EventError, EventId, GroupId, Kind
from node.ids import PUBLIC_KEY_LEN, PeerId
from node.wire.strict import pack, unpack_strict

MAX_GROUP_NAME = 64
MAX_TEXT = 16 * 1024
NONCE_LEN = 16
#: Default and hard cap on the members of a group.
DEFAULT_MAX_MEMBERS = 500
HARD_MAX_MEMBERS = 5000
MODES = ("private", "pairwise", "open")
ADD_POLICIES = ("members", "admins")
#: Who may JOIN an open group: only approved peer ids, or anyone not banned.
JOIN_POLICIES = ("whitelist", "blacklist")
#: An open-group MESSAGE carries its content in clear (a message content, see content.py).
MAX_OPEN_CONTENT = MAX_TEXT * 4 + 4096


class Role(enum.IntEnum):
    GUEST = 0
    MEMBER = 1
    ADMIN = 2
    OWNER = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: object) -> Role:
        if not isinstance(text, str) or text.upper() not in cls.__members__:
            raise EventError(f"unknown role {text!r}")
        return cls[text.upper()]


def group_id_for(creator: PeerId, nonce: bytes) -> GroupId:
    """A group id commits to its creator, so nobody else can author its CREATE."""
    return GroupId(
        hashlib.blake2b(bytes(creator) + nonce, digest_size=32, person=b"kith-group-id").digest()
    )


@dataclass(frozen=True, slots=True)
class Create:
    name: str
    mode: str
    nonce: bytes
    max_members: int
    add_policy: str = "members"
    share_history: bool = False
    #: Open groups only (``mode == "open"``): "whitelist" or "blacklist"; "" otherwise.
    policy: str = ""


@dataclass(frozen=True, slots=True)
class Add:
    member: PeerId
    role: Role
    name: str  # the adder's label for the new member (a hint until it speaks for itself)


@dataclass(frozen=True, slots=True)
class Remove:
    member: PeerId


@dataclass(frozen=True, slots=True)
class Leave:
    pass


@dataclass(frozen=True, slots=True)
class SetRole:
    member: PeerId
    role: Role


@dataclass(frozen=True, slots=True)
class Rename:
    name: str


@dataclass(frozen=True, slots=True)
class Ban:
    """Ban ``member``; ``until`` (unix seconds, the admin's clock; 0 = no end) is
    informational like a mute's: the ban ends only with an UNBAN, which an admin's
    node authors once its own clock passes ``until``."""

    member: PeerId
    until: int = 0


@dataclass(frozen=True, slots=True)
class SetPolicy:
    add_policy: str


@dataclass(frozen=True, slots=True)
class SenderKey:
    """A chain handed out, in one of two forms (docs/protocol.md section 13).

    *Committed* (``salt`` and ``commitment`` set, ``keys`` empty): the body only commits
    to the chain state; each recipient's sealed copy travels beside the event (``cp``).
    *Inline* (the older form, still accepted): ``keys`` holds every recipient's sealed
    chain state inside the event.
    """

    epoch: int
    signing_public: bytes
    keys: tuple[tuple[PeerId, bytes], ...] = ()  # inline: (recipient, sealed), sorted
    salt: bytes | None = None  # committed: 16 random bytes
    commitment: bytes | None = None  # committed: BLAKE2b of the sealed payload, keyed by salt

    @property
    def committed(self) -> bool:
        return self.commitment is not None


@dataclass(frozen=True, slots=True)
class PrivateMessage:
    """A Sender Keys message: ``ciphertext`` is ``nonce || ciphertext || tag``; with the zero
    nonce (every message since the nonce-free form) the body is ``[index, ciphertext || tag]``,
    otherwise (earlier versions' random nonces) ``{"n": index, "ct": blob}``."""

    index: int
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class History:
    """Our earlier sender keys (each epoch's starting chain state), sealed to one newcomer."""

    member: PeerId
    keys: tuple[tuple[int, bytes, bytes], ...]  # (epoch, signing public key, sealed), by epoch


@dataclass(frozen=True, slots=True)
class Receipt:
    """Read receipts: the reader's new read position per author (only what moved)."""

    read: tuple[tuple[PeerId, int], ...]  # sorted by author


@dataclass(frozen=True, slots=True)
class PairwiseMessage:
    salt: bytes
    commitment: bytes


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete a message: its content is erased on every node, a tombstone stays."""

    target: EventId


@dataclass(frozen=True, slots=True)
class Pin:
    """Pin (``pin=True``) or unpin a message (owner and admins)."""

    target: EventId
    pin: bool


@dataclass(frozen=True, slots=True)
class Mute:
    """An admin mutes (``mute=True``) or unmutes a member.

    ``until`` is informational unix time (seconds, the admin's clock; 0 = no end): the
    mute ends only with an UNMUTE event, which an admin's node authors once its own clock
    passes ``until`` (see docs/protocol.md: validity never depends on a clock).
    """

    member: PeerId
    mute: bool
    until: int = 0


@dataclass(frozen=True, slots=True)
class OpenMessage:
    """A MESSAGE of an open group: the message content in clear (signed, not encrypted)."""

    content: bytes


@dataclass(frozen=True, slots=True)
class Join:
    """A peer adds itself to an open group (as a member); ``name`` is its own label."""

    name: str


@dataclass(frozen=True, slots=True)
class Approve:
    """An admin puts ``member`` on (``approve=True``) or takes it off an open group's whitelist."""

    member: PeerId
    approve: bool


@dataclass(frozen=True, slots=True)
class Unban:
    """An admin lifts the ban of ``member`` (it may join or be added again)."""

    member: PeerId


@dataclass(frozen=True, slots=True)
class Relay:
    """An admin designates (``on=True``) or undesignates ``peer`` as a relay of the
    group: a node that stores and forwards its events, never a member (it neither reads
    nor posts; docs/protocol.md, "Relays")."""

    peer: PeerId
    on: bool


Body = (
    Create | Add | Remove | Leave | SetRole | Rename | Ban | SetPolicy | SenderKey
    | PrivateMessage | PairwiseMessage | Receipt | History | Delete | Pin | Mute
    | OpenMessage | Join | Approve | Unban | Relay
)


def encode_body(body: Body) -> bytes:
    if isinstance(body, PrivateMessage) and body.ciphertext[:MESSAGE_NONCE_LEN] == ZERO_NONCE:
        # The nonce-free form (docs/protocol.md section 13): [index, ciphertext || tag].
        return pack([body.index, body.ciphertext[MESSAGE_NONCE_LEN:]])
    return pack(_fields(body))


def _fields(body: Body) -> dict[str, Any]:
    match body:
        case Create():
            create = {"name": body.name, "mode": body.mode, "nonce": body.nonce,
                      "max": body.max_members, "add": body.add_policy,
                      "history": body.share_history}
            if body.mode == "open":
                create["policy"] = body.policy
            return create
        case Add():
            return {"member": body.member, "role": body.role.label, "name": body.name}
        case Ban() if body.until:
            return {"member": body.member, "until": body.until}
        case Remove() | Ban() | Unban():
            return {"member": body.member}
        case Leave():
            return {}
        case SetRole():
            return {"member": body.member, "role": body.role.label}
        case Rename():
            return {"name": body.name}
        case SetPolicy():
            return {"add": body.add_policy}
        case SenderKey() if body.committed:
            return {"epoch": body.epoch, "sign": body.signing_public, "salt": body.salt,
                    "commit": body.commitment}
        case SenderKey():
            return {"epoch": body.epoch, "sign": body.signing_public,
                    "keys": [[m, k] for m, k in body.keys]}
        case PrivateMessage():
            return {"n": body.index, "ct": body.ciphertext}
        case PairwiseMessage():
            return {"salt": body.salt, "commit": body.commitment}
        case Receipt():
            return {"read": [[a, n] for a, n in body.read]}
        case History():
            return {"member": body.member, "keys": [[e, k, b] for e, k, b in body.keys]}
        case Delete():
            return {"target": body.target}
        case Pin():
            return {"target": body.target, "pin": body.pin}
        case Mute():
            return {"member": body.member, "mute": body.mute, "until": body.until}
        case OpenMessage():
            return {"content": body.content}
        case Join():
            return {"name": body.name}
        case Approve():
            return {"member": body.member, "approve": body.approve}
        case Relay():
            return {"peer": body.peer, "on": body.on}
    raise AssertionError(body)


def kind_of(body: Body) -> Kind:
    return _KINDS[type(body)]


_KINDS: dict[type, Kind] = {
    Create: Kind.CREATE, Add: Kind.ADD, Remove: Kind.REMOVE, Leave: Kind.LEAVE,
    SetRole: Kind.SET_ROLE, Rename: Kind.RENAME, Ban: Kind.BAN, SetPolicy: Kind.SET_POLICY,
    SenderKey: Kind.SENDER_KEY, PrivateMessage: Kind.MESSAGE, PairwiseMessage: Kind.MESSAGE,
    Receipt: Kind.RECEIPT, History: Kind.HISTORY, Delete: Kind.DELETE, Pin: Kind.PIN,
    Mute: Kind.MUTE, OpenMessage: Kind.MESSAGE, Join: Kind.JOIN, Approve: Kind.APPROVE,
    Unban: Kind.UNBAN, Relay: Kind.RELAY,
}


def decode_body(kind: Kind, raw: bytes, *, mode: str = "private") -> Body:
    """Decode a body strictly; ``mode`` picks the MESSAGE schema."""
    try:
        obj = unpack_strict(raw, max_len=len(raw) + 1)
    except RemoteProtocolError as exc:
        raise EventError(f"malformed {kind.name} body: {exc}") from exc
    if isinstance(obj, list) and kind is Kind.MESSAGE and mode not in ("open", "pairwise"):
        return _nonce_free_message(obj)
    if not isinstance(obj, dict):
        raise EventError(f"{kind.name} body must be a map")
    fields = _Fields(kind, obj)
    body: Body
    if kind is Kind.CREATE:
        create = Create(fields.text("name", MAX_GROUP_NAME), fields.choice("mode", MODES),
                        fields.raw("nonce", NONCE_LEN), fields.count("max", 2, HARD_MAX_MEMBERS),
                        fields.choice("add", ADD_POLICIES), fields.flag("history"))
        if create.mode == "open":  # only open groups carry (and must carry) a join policy
            create = dataclasses.replace(create, policy=fields.choice("policy", JOIN_POLICIES))
        body = create
    elif kind is Kind.ADD:
        body = Add(fields.peer("member"), Role.parse(fields.get("role")),
                   fields.text("name", MAX_GROUP_NAME, allow_empty=True))
    elif kind is Kind.REMOVE:
        body = Remove(fields.peer("member"))
    elif kind is Kind.BAN:
        body = Ban(fields.peer("member"),
                   fields.count("until", 1, 2**40) if "until" in obj else 0)
    elif kind is Kind.UNBAN:
        body = Unban(fields.peer("member"))
    elif kind is Kind.JOIN:
        body = Join(fields.text("name", MAX_GROUP_NAME, allow_empty=True))
    elif kind is Kind.APPROVE:
        body = Approve(fields.peer("member"), fields.flag("approve"))
    elif kind is Kind.RELAY:
        body = Relay(fields.peer("peer"), fields.flag("on"))
    elif kind is Kind.LEAVE:
        body = Leave()
    elif kind is Kind.SET_ROLE:
        body = SetRole(fields.peer("member"), Role.parse(fields.get("role")))
    elif kind is Kind.RENAME:
        body = Rename(fields.text("name", MAX_GROUP_NAME))
    elif kind is Kind.SET_POLICY:
        body = SetPolicy(fields.choice("add", ADD_POLICIES))
    elif kind is Kind.SENDER_KEY and "commit" in obj:
        body = SenderKey(fields.count("epoch", 0, 2**40), fields.raw("sign", 32),
                         salt=fields.raw("salt", NONCE_LEN), commitment=fields.raw("commit", 32))
    elif kind is Kind.SENDER_KEY:
        body = SenderKey(fields.count("epoch", 0, 2**40), fields.raw("sign", 32),
                         fields.sealed_keys("keys"))
    elif kind is Kind.RECEIPT:
        body = Receipt(fields.positions("read"))
    elif kind is Kind.HISTORY:
        body = History(fields.peer("member"), fields.epoch_keys("keys"))
    elif kind is Kind.DELETE:
        body = Delete(EventId(fields.raw("target", ID_LEN)))
    elif kind is Kind.PIN:
        body = Pin(EventId(fields.raw("target", ID_LEN)), fields.flag("pin"))
    elif kind is Kind.MUTE:
        body = Mute(fields.peer("member"), fields.flag("mute"), fields.count("until", 0, 2**40))
    elif mode == "open":
        body = OpenMessage(fields.blob("content", MAX_OPEN_CONTENT))
    elif mode == "pairwise":
        body = PairwiseMessage(fields.raw("salt", NONCE_LEN), fields.raw("commit", 32))
    else:
        body = PrivateMessage(fields.count("n", 0, 2**40), fields.blob("ct", MAX_TEXT * 4))
        if body.ciphertext[:MESSAGE_NONCE_LEN] == ZERO_NONCE:
            raise EventError("a MESSAGE with the zero nonce must use the nonce-free form")
    fields.done()
    return body


def _nonce_free_message(obj: list[Any]) -> PrivateMessage:
    """``[index, ciphertext || tag]``: a private MESSAGE under the zero nonce."""
    if len(obj) != 2:
        raise EventError("a nonce-free MESSAGE body is [index, ciphertext]")
    index, ciphertext = obj
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 2**40:
        raise EventError("MESSAGE index must be an integer in 0..2^40")
    if not isinstance(ciphertext, bytes) or len(ciphertext) > MAX_TEXT * 4 - MESSAGE_NONCE_LEN:
        raise EventError(f"MESSAGE ciphertext must be at most {MAX_TEXT * 4} bytes")
    return PrivateMessage(index, ZERO_NONCE + ciphertext)


class _Fields:
    """Takes fields out of a decoded map, checking each; ``done`` rejects leftovers."""

    def __init__(self, kind: Kind, obj: dict[Any, Any]) -> None:
        self.kind = kind
        self.obj = dict(obj)

    def get(self, key: str) -> object:
        if key not in self.obj:
            raise EventError(f"{self.kind.name} body lacks {key!r}")
        return self.obj.pop(key)

    def text(self, key: str, limit: int, *, allow_empty: bool = False) -> str:
        value = self.get(key)
        if not isinstance(value, str) or len(value) > limit or (not value and not allow_empty):
            raise EventError(f"{self.kind.name} {key!r} must be a string of 1..{limit} characters")
        return value

    def choice(self, key: str, options: tuple[str, ...]) -> str:
        value = self.get(key)
        if value not in options:
            raise EventError(f"{self.kind.name} {key!r} must be one of {', '.join(options)}")
        assert isinstance(value, str)
        return value

    def raw(self, key: str, length: int) -> bytes:
        value = self.get(key)
        if not isinstance(value, bytes) or len(value) != length:
            raise EventError(f"{self.kind.name} {key!r} must be {length} bytes")
        return value

    def blob(self, key: str, limit: int) -> bytes:
        value = self.get(key)
        if not isinstance(value, bytes) or len(value) > limit:
            raise EventError(f"{self.kind.name} {key!r} must be at most {limit} bytes")
        return value

    def peer(self, key: str) -> PeerId:
        return PeerId(self.raw(key, PUBLIC_KEY_LEN))

    def count(self, key: str, low: int, high: int) -> int:
        value = self.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise EventError(f"{self.kind.name} {key!r} must be an integer in {low}..{high}")
        return value

    def sealed_keys(self, key: str) -> tuple[tuple[PeerId, bytes], ...]:
        value = self.get(key)
        if not isinstance(value, list) or len(value) > HARD_MAX_MEMBERS:
            raise EventError(f"{self.kind.name} {key!r} must be a list")
        out: list[tuple[PeerId, bytes]] = []
        previous = b""
        for item in value:
            if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], bytes)
                    or len(item[0]) != PUBLIC_KEY_LEN or not isinstance(item[1], bytes)
                    or len(item[1]) > 256 or item[0] <= previous):
                raise EventError(f"{self.kind.name} {key!r}: sorted [member, sealed key] pairs")
            previous = item[0]
            out.append((PeerId(item[0]), item[1]))
        return tuple(out)

    def flag(self, key: str) -> bool:
        value = self.get(key)
        if not isinstance(value, bool):
            raise EventError(f"{self.kind.name} {key!r} must be true or false")
        return value

    def epoch_keys(self, key: str) -> tuple[tuple[int, bytes, bytes], ...]:
        value = self.get(key)
        if not isinstance(value, list) or not 0 < len(value) <= 4096:
            raise EventError(f"{self.kind.name} {key!r} must be a non-empty list")
        out: list[tuple[int, bytes, bytes]] = []
        previous = -1
        for item in value:
            if (not isinstance(item, list) or len(item) != 3 or not isinstance(item[0], int)
                    or isinstance(item[0], bool) or not previous < item[0] < 2**40
                    or not isinstance(item[1], bytes) or len(item[1]) != 32
                    or not isinstance(item[2], bytes) or len(item[2]) > 256):
                raise EventError(f"{self.kind.name} {key!r}: [epoch, key, sealed] by epoch")
            previous = item[0]
            out.append((item[0], item[1], item[2]))
        return tuple(out)

    def positions(self, key: str) -> tuple[tuple[PeerId, int], ...]:
        value = self.get(key)
        if not isinstance(value, list) or not 0 < len(value) <= HARD_MAX_MEMBERS:
            raise EventError(f"{self.kind.name} {key!r} must be a non-empty list")
        out: list[tuple[PeerId, int]] = []
        previous = b""
        for item in value:
            if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], bytes)
                    or len(item[0]) != PUBLIC_KEY_LEN or item[0] <= previous
                    or not isinstance(item[1], int) or isinstance(item[1], bool)
                    or not 0 < item[1] < 2**40):
                raise EventError(f"{self.kind.name} {key!r}: sorted [author, seq] pairs")
            previous = item[0]
            out.append((PeerId(item[0]), item[1]))
        return tuple(out)

    def done(self) -> None:
        if self.obj:
            raise EventError(f"{self.kind.name} body has unknown keys {sorted(map(str, self.obj))}")


# -- what a private or pairwise message decrypts to --


def encode_plaintext(text: str) -> bytes:
    return pack({"text": text})


def decode_plaintext(raw: bytes) -> str:
    try:
        obj = unpack_strict(raw, max_len=MAX_TEXT * 4 + 64)
    except RemoteProtocolError as exc:
        raise EventError(f"malformed message plaintext: {exc}") from exc
    if not isinstance(obj, dict) or set(obj) != {"text"} or not isinstance(obj["text"], str):
        raise EventError("message plaintext must be {'text': str}")
    if len(obj["text"]) > MAX_TEXT:
        raise EventError(f"message text over {MAX_TEXT} characters")
    return str(obj["text"])
