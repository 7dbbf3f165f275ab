"""One frozen ``Config``: ports, limits and timeouts, with documented defaults."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PORT = 7373
DEFAULT_HOST = "0.0.0.0"
MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Config:
    """Every tunable of a node. Defaults are what a LAN group wants."""

    listen_host: str = DEFAULT_HOST
    listen_port: int = DEFAULT_PORT
    #: Display name sent to peers inside the encrypted handshake.
    name: str = ""
    #: Largest application message accepted or sent (bytes, after reassembly).
    max_message_size: int = 1 * MiB
    #: A connection must finish the Noise handshake within this many seconds.
    handshake_timeout: float = 10.0
    #: Most connections allowed to be in the handshake at once (the rest are refused);
    #: one source address may hold a quarter of them (at least 2).
    max_handshaking: int = 64
    #: Most channels open at once; further inbound connections are refused. Both caps
    #: are lowered at start if the descriptor limit (``ulimit -n``) cannot hold them.
    max_channels: int = 256
    #: The dialler of a channel sends a keepalive PING once neither side has sent anything
    #: for this many seconds (the other side answers it; docs/protocol.md section 6), or
    #: sooner if the peer's idle timeout asks for it (a node before ``idle``: 60 s).
    keepalive_interval: float = 120.0
    #: A peer silent for this long is considered dead and its channel closed (more than
    #: ``keepalive_interval`` plus the 8 s in which a peer answers data it received). The
    #: Hello tells the peer, so that as dialler it probes in time.
    idle_timeout: float = 160.0
    #: The kernel fails a TCP channel whose peer machine has not answered for this long
    #: (TCP keepalive and TCP_USER_TIMEOUT): a dead link or host, noticed with no work
    #: of ours while idle.
    dead_link_timeout: float = 25.0
    #: A single send to a peer that takes longer than this drops the peer.
    send_timeout: float = 20.0
    #: Messages queued per peer by ``send_nowait``; a full queue drops the peer.
    send_queue: int = 128
    #: Redial backoff: first delay, cap, and +/- jitter fraction.
    redial_initial: float = 0.5
    redial_max: float = 30.0
    redial_jitter: float = 0.25
    #: 32-byte LAN network key; only peers holding the same key can connect.
    network_key: bytes | None = None
    #: Announce and browse ``_kith._tcp`` over mDNS (the CLI turns it on by default).
    mdns: bool = False
    #: Restrict mDNS to this interface (name or IPv4 address); None means all.
    mdns_interface: str | None = None
    #: Most nodes heard over mDNS that are tracked at once (a flood is refused beyond).
    max_candidates: int = 64
    #: The node whose mDNS instance sorts second waits this long before dialling.
    dial_grace: float = 2.0
    #: An announced node that fails this many dials in a row is forgotten until re-announced.
    forget_after: int = 10
    #: Exchange version vectors with every connected member this often (seconds).
    sync_interval: float = 30.0
    #: Tell the group what we have read (one small RECEIPT event per burst of reading).
    read_receipts: bool = True
    #: Read receipts go out at most this often (seconds): one event per group per burst.
    receipt_interval: float = 2.0
    #: Largest attachment sent or fetched (bytes; at most 256 MiB). Files up to this size
    #: are fetched automatically when their message arrives; larger ones are not fetched.
    max_file_size: int = 100 * MiB
    #: Run as a relay only (``kith run --relay``): take the groups whose admins designate
    #: this node a relay, store and forward their events; never author (docs/usage.md).
    relay: bool = False
    #: A relay keeps at most this many bytes per group (events and held copies) ...
    relay_budget: int = 64 * MiB
    #: ... and holds a copy for an offline member at most this long (seconds).
    relay_expiry: float = 7 * 24 * 3600.0
    #: ... and relays at most this many groups (further designations are ignored, with a
    #: log line: anyone who can connect can make a group and designate this node).
    relay_max_groups: int = 64
    #: "client": push our events to every member; "relay": one copy to a connected relay
    #: of the group, which pushes it on (client-side when none is connected).
    fanout: str = "client"
