"""The mesh's pure state: candidates, dial decisions, presence."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.ids import peer_id
from node.mesh.state import MeshState, Presence
from node.wire.announce import Announcement

P1 = peer_id(bytes([1]) * 32)
P2 = peer_id(bytes([2]) * 32)


def ann(instance: str, host: str = "10.250.1.2", port: int = 7373) -> Announcement:
    return Announcement(instance, (host,), port, 1, None)


def test_own_announcement_is_ignored() -> None:
    mesh = MeshState("kith-b")
    assert mesh.announced(ann("kith-b"), 0.0) is False
    assert mesh.candidates == {}


def test_new_announcement_starts_a_dial_and_repeats_do_not() -> None:
    mesh = MeshState("kith-b")
    assert mesh.announced(ann("kith-c"), 0.0) is True
    assert mesh.announced(ann("kith-c", port=9999), 1.0) is False
    assert mesh.candidates["kith-c"].announcement.port == 9999


def test_smaller_instance_dials_first_the_other_waits() -> None:
    a, b = MeshState("kith-a", grace=2.0), MeshState("kith-b", grace=2.0)
    assert a.first_dial_delay("kith-b") == 0.0
    assert b.first_dial_delay("kith-a") == 2.0


@given(st.text(min_size=1, max_size=10), st.text(min_size=1, max_size=10))
def test_exactly_one_side_dials_first(x: str, y: str) -> None:
    if x == y:
        return
    first = [MeshState(x).first_dial_delay(y) == 0.0, MeshState(y).first_dial_delay(x) == 0.0]
    assert first.count(True) == 1


def test_candidate_not_dialled_while_its_peer_is_online() -> None:
    mesh = MeshState("kith-a")
    mesh.announced(ann("kith-b"), 0.0)
    assert mesh.should_dial("kith-b")
    mesh.connected(P1, "bob", "10.250.1.3:5000", 1.0, found="inbound", instance="kith-b")
    assert not mesh.should_dial("kith-b")
    assert mesh.known[P1].found == {"inbound", "mdns"}
    mesh.disconnected(P1, 2.0)
    assert mesh.should_dial("kith-b")


def test_channel_before_announcement_is_matched_when_it_arrives() -> None:
    mesh = MeshState("kith-b")
    mesh.connected(P1, "alice", "10.250.1.2:5000", 1.0, found="inbound", instance="kith-a")
    assert mesh.announced(ann("kith-a"), 2.0) is True
    assert not mesh.should_dial("kith-a")  # no duplicate handshake after the grace period
    assert [r.peer_id for r in mesh.views()] == [P1]  # one row, not an extra "reachable" one
    assert mesh.known[P1].found == {"inbound", "mdns"}  # and it was found by mDNS too


def test_failing_candidate_is_forgotten_and_comes_back_when_announced() -> None:
    mesh = MeshState("kith-a", forget_after=3)
    mesh.announced(ann("kith-x"), 0.0)
    assert [mesh.dial_failed("kith-x") for _ in range(3)] == [False, False, True]
    assert "kith-x" not in mesh.candidates and not mesh.should_dial("kith-x")
    assert mesh.announced(ann("kith-x"), 10.0) is True


def test_reannouncement_resets_failures() -> None:
    mesh = MeshState("kith-a", forget_after=3)
    mesh.announced(ann("kith-x"), 0.0)
    mesh.dial_failed("kith-x")
    mesh.dial_failed("kith-x")
    mesh.announced(ann("kith-x"), 5.0)
    assert mesh.dial_failed("kith-x") is False


def test_announcement_pointing_at_this_node() -> None:
    mesh = MeshState("kith-a")
    mesh.announced(ann("kith-stale"), 0.0)
    mesh.dialled_self("kith-stale")
    assert not mesh.should_dial("kith-stale")
    assert mesh.views() == []


def test_flood_of_announcements_is_capped() -> None:
    mesh = MeshState("kith-a", max_candidates=5)
    for i in range(5):
        mesh.announced(ann(f"kith-{i}"), 0.0)
    with pytest.raises(OverflowError, match="5 announced"):
        mesh.announced(ann("kith-extra"), 0.0)
    assert len(mesh.candidates) == 5
    assert mesh.announced(ann("kith-0"), 1.0) is False  # known ones still refresh


def test_presence_online_reachable_offline() -> None:
    mesh = MeshState("kith-a")
    mesh.announced(ann("kith-b", "10.250.1.3", 7001), 0.0)
    [row] = mesh.views()
    assert (row.peer_id, row.state, row.address) == (None, Presence.REACHABLE, "10.250.1.3:7001")

    mesh.connected(P1, "bob", "10.250.1.3:7001", 1.0, found="mdns", instance="kith-b")
    [row] = mesh.views()
    assert (row.peer_id, row.state, row.name, row.since) == (P1, Presence.ONLINE, "bob", 1.0)

    mesh.disconnected(P1, 30.0)  # e.g. its link went down: offline at once
    [row] = mesh.views()
    assert (row.state, row.last_seen, row.since) == (Presence.OFFLINE, 30.0, None)

    mesh.announced(ann("kith-b", "10.250.1.3", 7001), 40.0)  # heard again
    assert mesh.presence(P1) is Presence.REACHABLE
    mesh.dial_failed("kith-b")
    assert mesh.presence(P1) is Presence.OFFLINE


def test_manual_targets_show_until_they_are_known() -> None:
    mesh = MeshState(None)
    mesh.manual["10.0.0.9:7373"] = None
    [row] = mesh.views()
    assert (row.state, row.found, row.address) == (Presence.OFFLINE, ("manual",), "10.0.0.9:7373")
    mesh.connected(P2, "carol", "10.0.0.9:7373", 1.0, found="manual")
    mesh.manual["10.0.0.9:7373"] = P2
    [row] = mesh.views()
    assert (row.peer_id, row.state, row.found) == (P2, Presence.ONLINE, ("manual",))


def test_rows_are_sorted_online_first() -> None:
    mesh = MeshState("kith-a")
    mesh.connected(P1, "zed", "x:1", 0.0, found="inbound")
    mesh.connected(P2, "amy", "y:1", 0.0, found="inbound")
    mesh.disconnected(P2, 1.0)
    assert [r.peer_id for r in mesh.views()] == [P1, P2]


