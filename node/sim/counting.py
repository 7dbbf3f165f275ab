"""What a simulated member counts, and what it hands the network (no protocol here)."""

from __future__ import annotations

from dataclasses import dataclass

from node.group.events import Event, Kind
from node.group.state import GroupCore
from node.ids import PeerId
from node.sim.wire import Payload

#: One message for the network: (to, payload, its exact size, kind of traffic: message,
#: membership, rekey, sync, ack, vector). A tuple: one is built per copy sent.
Outgoing = tuple[PeerId, Payload, int, str]


@dataclass(slots=True)
class Stats:
    """What a member counted (receiver side and rekeying)."""

    verifications: int = 0  # the core's signature checks of others' MESSAGE events
    decrypted: int = 0
    rejected: int = 0
    dropped: int = 0
    rekey_events: int = 0  # SENDER_KEY events authored after set-up
    rekey_seals: int = 0  # chain keys sealed in them
    last_progress: float = 0.0  # when this member last delivered or decrypted something


def count_verifications(core: GroupCore, stats: Stats, me: PeerId) -> None:
    """Count the core's signature checks of others' messages (done in ``_signature_ok``)."""
    check = core._signature_ok

    def counting(event: Event) -> bool | None:
        verdict = check(event)
        if verdict is not None and event.kind is Kind.MESSAGE and event.author != me:
            stats.verifications += 1
        return verdict

    setattr(core, "_signature_ok", counting)  # noqa: B010 (instance instrumentation)
