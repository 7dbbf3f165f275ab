"""What one simulated run is: its parameters, checked, and its text messages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from node.group.bodies import HARD_MAX_MEMBERS, MAX_TEXT

#: Simulator modes and the group mode each runs (raw has no group). The relay modes are
#: server-side fanout: the author sends one copy to a relay node (not a member) that
#: pushes it to every member; ``relay`` in a private group, ``relay-pairwise`` in a
#: pairwise one (the author's copy carries every member's ciphertext).
MODES = ("raw", "pairwise", "sender-keys", "relay", "relay-pairwise")
#: What ``kith bench sim`` runs without ``--mode`` (the published tables' modes).
DEFAULT_MODES = ("raw", "pairwise", "sender-keys")
RELAY_MODES = ("relay", "relay-pairwise")
CORE_MODE = {"sender-keys": "private", "pairwise": "pairwise", "relay": "private",
             "relay-pairwise": "pairwise"}
#: Room left in the group (CREATE's max_members is the hard cap) for members who join.
MAX_MEMBERS = HARD_MAX_MEMBERS // 2


@dataclass(frozen=True, slots=True)
class Scenario:
    """One run. ``members`` is N, the members each message goes to (as in ``kith bench
    fanout``): the group has N + 1 members, the first ``authors`` of whom send."""

    members: int
    mode: str
    messages: int = 20
    size: int = 256
    authors: int = 1
    latency: float = 0.001  # seconds, one way, every link
    bandwidth: float | None = 100e6  # bits per second of every uplink; None: unlimited
    loss: float = 0.0  # per packet
    offline: float = 0.0  # fraction of the non-authors offline until the traffic is over
    churn: float = 0.0  # joins and leaves per simulated second, during ``duration``
    duration: float = 0.0  # the messages are spread evenly over this many seconds
    partition: bool = False  # split in two halves until the traffic is over
    seed: int = 1
    #: Seconds of a node's CPU per message it sends or receives (0: free; ``node.sim.network``).
    cpu: float = 0.0
    #: The relay's uplink in bits per second (None: unlimited), "members": as every member's.
    relay_bandwidth: float | Literal["members"] | None = "members"
    #: Seconds of the relay's CPU per message (None: ``cpu``, as every member's).
    relay_cpu: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode must be one of {', '.join(MODES)}")
        if not 1 <= self.members <= MAX_MEMBERS:
            problems.append(f"members must be 1..{MAX_MEMBERS}")
        if self.messages < 1:
            problems.append("messages must be at least 1")
        if not 8 <= self.size <= MAX_TEXT:
            problems.append(f"size must be 8..{MAX_TEXT}")
        if not 1 <= self.authors <= self.members + 1:
            problems.append("authors must be 1..members + 1")
        if self.latency < 0 or (self.bandwidth is not None and self.bandwidth <= 0):
            problems.append("latency must be >= 0 and bandwidth > 0")
        if self.latency == 0 and self.bandwidth is None:
            problems.append("with no latency and unlimited bandwidth nothing takes time")
        if not 0 <= self.loss < 1 or not 0 <= self.offline < 1:
            problems.append("loss and offline must be in [0, 1)")
        if self.churn < 0 or self.duration < 0:
            problems.append("churn and duration must be >= 0")
        if self.churn > 0 and self.duration == 0:
            problems.append("churn needs a duration (the window the messages are spread over)")
        if self.churn > 0 and self.members - self.authors < 1:
            problems.append("churn needs members who are not authors")
        if self.cpu < 0 or (self.relay_cpu or 0) < 0:
            problems.append("cpu must be >= 0")
        if isinstance(self.relay_bandwidth, float | int) and self.relay_bandwidth <= 0:
            problems.append("the relay's bandwidth must be > 0 (None: unlimited)")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def interval(self) -> float:
        """Seconds between one message and the next (0: a burst at time 0)."""
        return self.duration / self.messages

    @property
    def relayed(self) -> bool:
        """Server-side fanout through a relay node."""
        return self.mode in RELAY_MODES

    @property
    def relay_uplink(self) -> float | None:
        """The relay's uplink in bits per second (None: unlimited)."""
        return self.bandwidth if self.relay_bandwidth == "members" else self.relay_bandwidth


def message_text(index: int, size: int) -> str:
    """Message ``index`` as exactly ``size`` ASCII characters (as the fanout benchmark's)."""
    return f"{index:06d}:".ljust(size, "x")
