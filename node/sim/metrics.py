"""A run's metrics, from what the simulation recorded (names as in ``kith bench fanout``).

Deterministic (a function of the parameters and the seed): everything except
``cpu_ms_per_message`` and ``wall_s``, which are measured on this machine.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from node.sim.runner import Simulation, percentile

#: Metrics that are measured time on this machine, not a function of the seed.
MEASURED = ("cpu_ms_per_message", "wall_s", "relay_cpu_ms_per_message")

#: What counts as sync traffic: catch-up streams and version vectors (``lacked_bytes`` is
#: the least a stream could carry: what the members lacked at the heal).
SYNC_KINDS = ("sync", "vector")


def measure(sim: Simulation) -> dict[str, Any]:
    s = sim.s
    m = s.messages
    latencies: list[float] = []
    last_member: list[float] = []  # per message: until the last of its audience had it
    last = 0.0
    undelivered = 0
    copies = 0
    for sent in sim.sent:
        mine = math.nan if not sent.audience else 0.0
        for member in sent.audience:
            at = sim.received_at(member, sent)
            if at is None:
                undelivered += 1
                mine = math.nan
                continue
            latencies.append(at - sent.at)
            last = max(last, at)
            mine = max(mine, at - sent.at)
        if not math.isnan(mine):
            last_member.append(mine)
        copies += len(sent.audience)
    tally = sim.net.tally
    message_bytes = tally["message"].bytes if "message" in tally else 0
    counters = [sent.counters for sent in sim.sent]
    stats = [member.stats for member in sim.members.values()]
    events = [sent.event for sent in sim.sent if sent.event is not None]
    verifications = sum(st.verifications for st in stats)
    # a member's copy: through a relay, what the relay pushed (the author's one copy to
    # the relay is not a member's)
    member_bytes = (message_bytes if sim.relay is None
                    else sim.net.bytes_sent_by(sim.relay.me, ["message"]))
    envelope = (member_bytes / copies - s.size) if copies else math.nan
    event_overhead = (sum(len(e.raw) for e in events) / len(events) - s.size
                      if events else math.nan)
    convergence = math.nan
    if sim.heal_at is not None and sim.converged():
        progress = max((sim.members[p].stats.last_progress for p in sim.current_members()),
                       default=sim.heal_at)
        convergence = max(0.0, progress - sim.heal_at)
    raw = s.mode == "raw"
    relay = sim.relay_id
    author_bytes = sum(sim.net.bytes_sent_by(a, ["message"]) for a in sim.authors)
    return {
        "messages_per_s": m / last if last > 0 else math.nan,
        "bytes_per_message": message_bytes / m,
        "envelope_bytes_per_event": envelope,
        "event_overhead_bytes": event_overhead,
        "encryptions_per_message": sum(c.encryptions for c in counters) / m,
        "signatures_per_message": sum(c.signatures for c in counters) / m,
        "verifications_per_message": math.nan if raw else verifications / m,
        "latency_p50_ms": 1000 * percentile(latencies, 0.50),
        "latency_p95_ms": 1000 * percentile(latencies, 0.95),
        "latency_p99_ms": 1000 * percentile(latencies, 0.99),
        "undelivered": undelivered,
        "convergence_s": convergence,
        "sync_bytes": sim.net.bytes_of(SYNC_KINDS),
        "lacked_bytes": sim.lacked_bytes,
        "laggards": sim.laggards,
        "sync_per_lacked": (sim.net.bytes_of(SYNC_KINDS) / sim.lacked_bytes
                            if sim.lacked_bytes else math.nan),
        "ack_bytes_per_message": sim.net.bytes_of(["ack"]) / m,
        "membership_bytes": sim.net.bytes_of(["membership"]),
        "rekey_events": sum(st.rekey_events for st in stats),
        "rekey_seals": sum(st.rekey_seals for st in stats),
        "rekey_bytes": sim.net.bytes_of(["rekey"]),
        "joins": len(sim.joined),
        "departures": len(sim.removed),
        "rejected": sum(st.rejected for st in stats),
        "lost_in_flight": sim.net.lost,
        "sim_seconds": sim.scheduler.now,
        "cpu_ms_per_message": math.nan if raw else 1000 * sim.cpu / m,
        # Who pays for fanout: the authors' own live bytes, a relay's (server-side fanout).
        "author_bytes_per_message": author_bytes / m,
        "relay_bytes_per_message": (math.nan if relay is None
                                    else sim.net.bytes_sent_by(relay, ["message"]) / m),
        "relay_cpu_ms_per_message": math.nan if relay is None else 1000 * sim.relay_cpu / m,
        # The median over messages of the time until the last member of its audience had it.
        "last_member_ms": 1000 * statistics.median(last_member) if last_member else math.nan,
        # With a CPU cost per message (``Scenario.cpu``): the busiest author's CPU per message.
        "author_cpu_busy_ms_per_message": math.nan if not s.cpu else 1000 * max(
            (sim.net.cpu_busy.get(a, 0.0) for a in sim.authors), default=0.0) / m,
    }
