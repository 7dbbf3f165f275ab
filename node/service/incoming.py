"""Decoding the events of a peer's message, once for every service (driver helper).

An ``events`` peer message carries raw events; each is parsed and its signature
checked (``decode_event``) before any core sees it. One that does not parse is
dropped alone (the rest of the message still counts), with a log line limited
per peer and reason: a peer that keeps sending junk costs one line per
interval, not one per event. ``GroupService`` (members' traffic) and
``OpenGroups`` (a history being fetched to join) both decode through here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from node.group.events import Event, EventError, decode_event
from node.ids import PeerId, short_id
from node.logs import RateLimitedLog, clip, reason_key

log = logging.getLogger(__name__)
peer_log = RateLimitedLog(log)  # lines a peer can repeat: limited per peer and reason


def decode_events(sender: PeerId, raws: Iterable[bytes]) -> list[Event]:
    """The events in ``raws`` that decode, in order; each other one is logged and dropped."""
    events: list[Event] = []
    for raw in raws:
        try:
            events.append(decode_event(raw))
        except EventError as exc:
            peer_log.warning((sender, reason_key(str(exc))), "dropping an event from %s: %s",
                             short_id(sender), clip(str(exc)))
    return events
