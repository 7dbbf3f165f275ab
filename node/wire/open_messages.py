"""Peer messages for joining open groups (pure).

A peer that wants to join an open group it is not in yet has none of its events,
so the ordinary sync (``vv``), which only runs between members, cannot start.
It asks a member instead:

``open``          ``{"t": "open", "g": group}``
    Send me this open group's events. A member answers only for an *open* group,
    and only a peer that may join it (not banned; under a whitelist, approved) or is
    a member: it pushes every event it has (``events`` messages, ``sync: true``,
    oldest first) and then its version vector (``vv`` with ``want: false``), which
    tells the asker when it has everything the member had.
``open-refused``  ``{"t": "open-refused", "g": group, "why": str}``
    The member will not: the group is unknown or not open, or the asker may not
    join (``why`` says which, at most ``MAX_REASON`` characters).

A private group's events are never sent to a non-member: an ``open`` request for
a private group gets the same ``open-refused`` as an unknown group ("no open
group"), so it does not even confirm that the group exists.

Strict like ``node.wire.messages`` (exactly these keys, right types); kept in
their own module so that the two message sets can evolve separately.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.errors import RemoteProtocolError
from node.ids import GroupId
from node.wire.strict import pack, unpack_strict

MAX_REASON = 200
_MAX_LEN = 512


@dataclass(frozen=True, slots=True)
class OpenRequest:
    """Send me the events of open group ``group`` (I want to join it)."""

    group: GroupId


@dataclass(frozen=True, slots=True)
class OpenRefused:
    """The member will not give ``group``'s events to the asker, and why."""

    group: GroupId
    reason: str


OpenTraffic = OpenRequest | OpenRefused
TYPES = frozenset({"open", "open-refused"})


def encode_open(message: OpenTraffic) -> bytes:
    if isinstance(message, OpenRequest):
        return pack({"t": "open", "g": message.group})
    return pack({"t": "open-refused", "g": message.group, "why": message.reason[:MAX_REASON]})


def decode_open(data: bytes) -> OpenTraffic | None:
    """The open-group message in ``data``; None if it is another type of peer message.

    Raises ``RemoteProtocolError`` for a malformed open-group message.
    """
    if len(data) > _MAX_LEN:
        return None
    try:
        obj = unpack_strict(data, max_len=_MAX_LEN)
    except RemoteProtocolError:
        return None
    if not isinstance(obj, dict) or obj.get("t") not in TYPES:
        return None
    group = obj.get("g")
    if not isinstance(group, bytes) or len(group) != 32:
        raise RemoteProtocolError("open-group message: 'g' must be a 32-byte group id")
    if obj["t"] == "open":
        if set(obj) != {"t", "g"}:
            raise RemoteProtocolError("'open' message keys must be ['g', 't']")
        return OpenRequest(GroupId(group))
    if set(obj) != {"t", "g", "why"}:
        raise RemoteProtocolError("'open-refused' message keys must be ['g', 't', 'why']")
    reason = obj["why"]
    if not isinstance(reason, str) or len(reason) > MAX_REASON:
        raise RemoteProtocolError(f"'why' must be a string of at most {MAX_REASON} characters")
    return OpenRefused(GroupId(group), reason)
