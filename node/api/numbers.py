"""Message numbers: the ``[N]`` that ``kith chat``, ``kith log`` and every command share.

Theory of operation
-------------------
A group's messages are numbered 1, 2, 3, ... in the order this node stored them. The
store's insertion order (``events.pos``) never changes: an event is never removed (a
delete erases its content, the event stays), so a number, once given, keeps meaning the
same message on this node: in every ``kith chat`` session, in ``kith log``, before and
after a restart, with the node running or stopped. A message that arrives late (sync
after a partition) takes the next number even where the group's order shows it earlier.
Numbers are this node's own: another member may number the same message differently
(across machines, the event id is the name to use).

Every MESSAGE event takes a number, edits and reactions included: on the wire they are
messages like any other, and one that cannot be decrypted yet may turn out to be an edit
or a reaction later, so leaving them out would renumber what follows. The numbers shown
in a conversation therefore skip where someone edited or reacted.

Where the order comes from: the member core records ``joined_at`` (when each event was
stored) in the order it stores events, and fills it from the store in storage order when
the node (or a command on a stopped node) loads the group; a dict keeps that order. The
numbers are built from it once and extended as the group grows, so a lookup costs
nothing per call but a scan of the new events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import islice
from weakref import WeakKeyDictionary

from node.errors import KithError
from node.group.content import Edit, React
from node.group.events import EventId, Kind
from node.service.groups import Group

#: ``3``, ``[3]`` or ``#3``: a message number as typed (an id prefix is 8+ hex digits).
NUMBER = re.compile(r"\[?#?(\d{1,7})\]?")


@dataclass
class _Numbers:
    scanned: int = 0  # entries of the group's joined_at looked at so far
    ids: list[EventId] = field(default_factory=list)  # number N is ids[N - 1]
    of: dict[EventId, int] = field(default_factory=dict)


_numbers: WeakKeyDictionary[Group, _Numbers] = WeakKeyDictionary()


def _current(group: Group) -> _Numbers:
    numbers = _numbers.get(group)
    if numbers is None:
        numbers = _numbers[group] = _Numbers()
    stored = group.joined_at
    if len(stored) > numbers.scanned:
        for event_id in islice(stored, numbers.scanned, None):
            event = group.core.get(event_id)
            if event is not None and event.kind is Kind.MESSAGE:
                numbers.ids.append(event_id)
                numbers.of[event_id] = len(numbers.ids)
        numbers.scanned = len(stored)
    return numbers


def number_of(group: Group, event_id: EventId) -> int | None:
    """The number of message ``event_id`` on this node (None: not a stored message)."""
    return _current(group).of.get(event_id)


def count(group: Group) -> int:
    """The highest number given in ``group`` so far."""
    return len(_current(group).ids)


def numbered(group: Group, number: int) -> EventId | None:
    """The message this node numbered ``number`` in ``group``, if any."""
    ids = _current(group).ids
    return ids[number - 1] if 1 <= number <= len(ids) else None


def find_event(group: Group, text: str) -> EventId:
    """An event of ``group`` named as a user types it: a message number (``3``, ``[3]``)
    or its id (64 hex digits, or a unique prefix of 8 or more); ``KithError`` if none."""
    text = text.strip().lower()
    label = group.core.state.name or group.id.hex()[:12]
    number = NUMBER.fullmatch(text)
    if number is not None:
        return _by_number(group, int(number.group(1)), label)
    if not 8 <= len(text) <= 64 or any(c not in "0123456789abcdef" for c in text):
        raise KithError(f"a message is its number (as `kith log {label}` shows it, like 3) "
                        f"or 8 to 64 hex digits of its id, not {text!r}")
    if len(text) == 64:
        found = group.core.get(EventId(bytes.fromhex(text)))
        matches = [found.id] if found is not None else []
    else:
        matches = [e.id for e in group.core.delivered_order() if e.id.hex().startswith(text)]
    if not matches:
        raise KithError(f"no such event {text} in {label}")
    if len(matches) > 1:
        raise KithError(f"{text} matches several events in {label}; give more of the id")
    return matches[0]


def _by_number(group: Group, number: int, label: str) -> EventId:
    event_id = numbered(group, number)
    if event_id is None:
        highest = count(group)
        known = (f"its messages are [1] to [{highest}]" if highest
                 else "it has no messages yet")
        raise KithError(f"no message [{number}] in {label}: {known} (see `kith log {label}`)")
    content = group.contents.get(event_id)
    if isinstance(content, Edit | React):
        what = "an edit of" if isinstance(content, Edit) else "a reaction to"
        target = number_of(group, content.target)
        shown = f"[{target}]" if target is not None else "another message"
        raise KithError(f"[{number}] in {label} is {what} {shown}, not a message")
    return event_id
