"""Groups through the ``kith`` command line: several real nodes on loopback.

Every node is a ``kith run`` process on 127.0.0.1 with mDNS off, dialling the
others with ``--peer`` so that all of them are connected to each other (the
group service only delivers over a direct channel). The tests drive the nodes
with one-shot commands (``group create/add/remove``, ``send``, ``log --json``)
and wait for events with one ``kith log GROUP --follow --json`` reader per node,
never by sleeping.

Waiting for acknowledgements: acks are not streamed by ``log --follow``, so a
test that needs "X has processed Y's acks" lets Y send a message after Y stored
what it acks, and waits for X to show that message. Both go over the one
channel from Y to X, in order, and X handles that channel's messages one at a
time, so X has handled the ack by then. The same holds for "Y sent X nothing
before this": a removed member's silence is checked after it received a message
of a second group from each remaining member.

"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from node.ids import parse_peer_id
from tests.lab.procs import Proc, kith_cli, kith_json, kith_process

pytestmark = pytest.mark.system

LISTENING = r"node (?P<short>[a-z2-7]{8}) \((?P<name>[^)]*)\) listening on (?P<address>\S+)$"
# Loopback only, and no mDNS: test traffic must not leave 127.0.0.0/8.
LOOPBACK = ("--listen", "127.0.0.1:0", "--no-mdns")
#: Seconds to wait for events to reach a node (several nodes share the CPU).
EVENT_TIMEOUT = 20.0
MODES = ["private", "pairwise"]
MESSAGES_EACH = 3

Event = dict[str, Any]


# -- nodes --------------------------------------------------------------------


@dataclass
class Member:
    """One running node: its data directory, process and identity."""

    name: str
    data: Path
    proc: Proc
    address: str
    short: str
    peer_id: str = ""


async def concurrently(*calls: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Run the calls at the same time; return their results in order."""
    results: list[Any] = [None] * len(calls)

    async def run(index: int, call: Callable[[], Awaitable[Any]]) -> None:
        results[index] = await call()

    async with trio.open_nursery() as nursery:
        for index, call in enumerate(calls):
            nursery.start_soon(run, index, call)
    return results


@asynccontextmanager
async def running(
    data: Path, name: str, dial: Sequence[Member] = (), peer_id: str = ""
) -> AsyncIterator[Member]:
    """``kith run`` dialling ``dial``, once it listens and is connected to each of them.

    ``peer_id``: the node's peer id if the caller knows it (else set it later).
    """
    peers = [arg for m in dial for arg in ("--peer", m.address)]
    marks = {m.name: len(m.proc.lines) for m in dial}
    async with kith_process(data, "run", *LOOPBACK, "--name", name, *peers) as proc:
        listening = await proc.wait_for_line(LISTENING)
        member = Member(name, data, proc, listening["address"], listening["short"], peer_id)
        for other in dial:
            await proc.wait_for_line(rf"connected to {other.short} \({other.name}\) at ")
            await other.proc.wait_for_line(
                rf"connected to {member.short} \({name}\) at .* \(inbound\)$",
                after=marks[other.name],
            )
        yield member
        status = await proc.stop()
        assert status == 0, proc.log
        assert "Traceback" not in proc.log, proc.log


async def start_mesh(stack: AsyncExitStack, tmp: Path, names: Sequence[str]) -> list[Member]:
    """Start one node per name, each dialling all earlier ones: every pair is connected."""
    members: list[Member] = []
    for name in names:
        members.append(await stack.enter_async_context(running(tmp / name, name, members)))
    ids = await concurrently(*(lambda m=m: kith_json(m.data, "id") for m in members))
    for member, identity in zip(members, ids, strict=True):
        assert identity["short_id"] == member.short
        member.peer_id = identity["peer_id"]
    return members


# -- following a group's log --------------------------------------------------


class Follower:
    """The events ``kith log GROUP --follow --json`` printed so far, one per line."""

    def __init__(self, member: Member, proc: Proc) -> None:
        self.member = member
        self.proc = proc
        self._events: list[Event] = []
        self._parsed = 0  # how many of the process's lines are in _events

    @property
    def events(self) -> list[Event]:
        lines = self.proc.lines
        while self._parsed < len(lines):
            line = lines[self._parsed]
            self._parsed += 1
            if line.strip():
                self._events.append(json.loads(line))
        return self._events

    def ids(self, kind: str | None = None) -> list[str]:
        return [e["id"] for e in self.events if kind is None or e["kind"] == kind]

    async def wait_until(self, predicate: Callable[[list[Event]], bool], what: str) -> None:
        """Wait (at most ``EVENT_TIMEOUT`` s) until ``predicate(events)`` holds."""
        try:
            with trio.fail_after(EVENT_TIMEOUT):
                await self.proc.wait_until(lambda _: predicate(self.events), what)
        except trio.TooSlowError:
            shown = [(e["kind"], e["author_name"], e["text"]) for e in self.events]
            raise AssertionError(
                f"{self.member.name}'s log --follow did not show {what} within "
                f"{EVENT_TIMEOUT:g} s; it showed {shown}; node log:\n{self.member.proc.log}"
            ) from None

    async def wait_for_ids(self, ids: Sequence[str], what: str) -> None:
        wanted = set(ids)
        await self.wait_until(lambda events: wanted <= {e["id"] for e in events}, what)

    async def wait_for_kind(self, kind: str, count: int) -> None:
        await self.wait_until(
            lambda events: sum(e["kind"] == kind for e in events) >= count, f"{count} {kind}"
        )


@asynccontextmanager
async def following(member: Member, group: str) -> AsyncIterator[Follower]:
    """Run ``kith log GROUP --follow --json`` on ``member`` for the block."""
    async with kith_process(member.data, "log", group, "--follow", "--json", watch="stdout",
                            name=f"{member.name}'s log --follow", bounded=False) as proc:
        yield Follower(member, proc)


async def follow_all(
    stack: AsyncExitStack, members: Sequence[Member], group: str
) -> list[Follower]:
    """A follower per member, for the rest of ``stack``; each has printed the log so far."""
    followers = [await stack.enter_async_context(following(m, group)) for m in members]
    for follower in followers:  # the log so far starts with the group's CREATE
        await follower.wait_for_kind("create", 1)
    return followers


# -- groups -------------------------------------------------------------------


async def create_group(owner: Member, name: str, mode: str, members: Sequence[Member]) -> str:
    """``owner`` creates a group and adds ``members`` one by one; each adopts the group."""
    group = await kith_json(owner.data, "group", "create", name, "--mode", mode)
    assert (group["name"], group["mode"], group["role"], group["members"]) == (
        name, mode, "owner", 1
    )
    for member in members:
        added = await kith_json(owner.data, "group", "add", group["id"], member.peer_id)
        assert (added["kind"], added["author"]) == ("add", owner.peer_id)
        await member.proc.wait_for_line(rf"added to group {name} by {owner.short}$")
    return str(group["id"])


async def send(member: Member, group: str, text: str) -> Event:
    """``kith send`` (the text as separate words); check the event it printed."""
    event: Event = await kith_json(member.data, "send", group, *text.split(" "))
    assert (event["kind"], event["text"], event["author"], event["mine"]) == (
        "message", text, member.peer_id, True
    )
    return event


async def send_each(
    members: Sequence[Member], group: str, texts: Callable[[Member], list[str]]
) -> dict[str, tuple[Member, str]]:
    """Every member sends its texts in order, all members at the same time.

    Returns ``{event id: (author, text)}``.
    """
    sent: dict[str, tuple[Member, str]] = {}

    async def talk(member: Member) -> None:
        for text in texts(member):
            sent[(await send(member, group, text))["id"]] = (member, text)

    await concurrently(*(lambda m=m: talk(m) for m in members))
    return sent


async def logs(members: Sequence[Member], group: str) -> list[list[Event]]:
    return await concurrently(*(lambda m=m: kith_json(m.data, "log", group) for m in members))


def order_key(event: Event) -> tuple[int, bytes, int]:
    """The documented total order: (lamport, author bytes, seq)."""
    return (event["lamport"], bytes(parse_peer_id(event["author"])), event["seq"])


def check_messages(
    member: Member, log: list[Event], sent: dict[str, tuple[Member, str]]
) -> None:
    """Each sent message is in ``member``'s log once, by its author, decrypted to its text."""
    ids = [e["id"] for e in log]
    assert len(ids) == len(set(ids)), f"{member.name}: duplicate events in its log"
    by_id = {e["id"]: e for e in log}
    for event_id, (author, text) in sent.items():
        assert event_id in by_id, f"{member.name} lacks {text!r}"
        event = by_id[event_id]
        assert (event["kind"], event["author"], event["text"], event["decrypted"]) == (
            "message", author.peer_id, text, True
        ), member.name
        assert event["mine"] is (author is member)
        if author is not member:
            assert event["state"] == "received"


# -- scenario 1: four nodes, one group, everyone talks at once ---------------


@pytest.mark.parametrize("mode", MODES)
async def test_four_nodes_converge_on_one_log(tmp: Path, mode: str) -> None:
    """Four members talking at once end up with the same log, in the documented order."""
    async with AsyncExitStack() as stack:
        members = await start_mesh(stack, tmp, ["alice", "bob", "carol", "dave"])
        a = members[0]
        group = await create_group(a, "lab", mode, members[1:])
        followers = await follow_all(stack, members, group)
        for follower in followers:  # everyone knows all four members before anyone talks
            await follower.wait_for_kind("add", 3)

        listed = await concurrently(*(lambda m=m: kith_json(m.data, "group", "list")
                                      for m in members))
        for member, groups in zip(members, listed, strict=True):
            assert [(g["id"], g["name"], g["mode"], g["members"], g["member"]) for g in groups] == [
                (group, "lab", mode, 4, True)
            ], member.name
            assert groups[0]["role"] == ("owner" if member is a else "member")

        sent = await send_each(
            members, group,
            lambda m: [f"{m.name} says {i}: héllo ✓ {secrets.token_hex(4)}"
                       for i in range(MESSAGES_EACH)],
        )
        assert len(sent) == len(members) * MESSAGES_EACH
        for follower in followers:
            await follower.wait_for_ids(list(sent), f"all {len(sent)} messages")
        final = await logs(members, group)

    reference = [e["id"] for e in final[0]]
    assert [e["kind"] for e in final[0]] == ["create"] + ["add"] * 3 + ["message"] * len(sent)
    assert final[0] == sorted(final[0], key=order_key)
    for member, log in zip(members, final, strict=True):
        assert [e["id"] for e in log] == reference, f"{member.name}'s order differs"
        check_messages(member, log, sent)
        # Each author's messages keep the order it sent them in.
        for author in members:
            seqs = [e["seq"] for e in log if e["author"] == author.peer_id]
            assert seqs == sorted(seqs)


# -- scenario 2: a removed member reads nothing new --------------------------


def database_bytes(data: Path) -> bytes:
    """The node's SQLite file and its WAL (if any), as raw bytes."""
    files = [data / "kith.db", data / "kith.db-wal"]
    assert files[0].exists()
    return b"".join(f.read_bytes() for f in files if f.exists())


@pytest.mark.parametrize("mode", MODES)
async def test_removed_member_gets_nothing_new(tmp: Path, mode: str) -> None:
    """After its removal a member receives and stores nothing the others say."""
    async with AsyncExitStack() as stack:
        members = await start_mesh(stack, tmp, ["alice", "bob", "carol", "dave"])
        a, b, c, d = members
        stayers = [a, b, c]
        group = await create_group(a, "lab", mode, [b, c, d])
        # A second group that keeps dave: its messages show when dave has handled everything
        # that alice, bob and carol sent him before them (one channel each, in order).
        side = await create_group(a, "side", "private", [b, c, d])
        followers = await follow_all(stack, members, group)
        [d_side] = await follow_all(stack, [d], side)
        for follower in followers:
            await follower.wait_for_kind("add", 3)

        # Before the removal dave reads the group, and his database holds what he read.
        before_marker = f"before-{secrets.token_hex(8)}"
        before = await send(b, group, f"still four of us {before_marker}")
        for follower in followers:
            await follower.wait_for_ids([before["id"]], "the message sent before the removal")

        removal = await kith_json(a.data, "group", "remove", group, d.peer_id)
        assert (removal["kind"], removal["info"]) == ("remove", "alice removed dave")
        for follower in followers[:3]:
            await follower.wait_for_ids([removal["id"]], "dave's removal")

        markers = {m.name: [f"secret-{secrets.token_hex(8)}" for _ in range(2)] for m in stayers}
        sent = await send_each(
            stayers, group, lambda m: [f"{m.name} whispers {x}" for x in markers[m.name]]
        )
        for follower in followers[:3]:
            await follower.wait_for_ids(list(sent), "the messages sent after the removal")
        barrier = await send_each(stayers, side, lambda m: [f"{m.name} in side"])
        await d_side.wait_for_ids(list(barrier), "the side group's messages")

        final = await logs(members, group)
        a_members = await kith_json(a.data, "group", "members", group)
        d_database = database_bytes(d.data)

    assert sorted(m["peer_id"] for m in a_members) == sorted(m.peer_id for m in stayers)
    reference = [e["id"] for e in final[0]]
    for member, log in zip(stayers, final[:3], strict=True):
        assert [e["id"] for e in log] == reference, f"{member.name}'s order differs"
        check_messages(member, log, sent | {before["id"]: (b, before["text"])})
    d_log = final[3]
    check_messages(d, d_log, {before["id"]: (b, before["text"])})
    assert not set(sent) & {e["id"] for e in d_log}
    assert not set(sent) & set(followers[3].ids())
    # Nothing sent after the removal reached dave's disk: not the text, not the event.
    assert before_marker.encode() in d_database  # the check below can find text
    for event_id, (_, text) in sent.items():
        assert text.split()[-1].encode() not in d_database, text
        assert bytes.fromhex(event_id) not in d_database, text


async def test_removed_member_learns_it_and_cannot_send(tmp: Path) -> None:
    """The removed member's log ends at its removal and `kith send` refuses in one line."""
    async with AsyncExitStack() as stack:
        a, d = await start_mesh(stack, tmp, ["alice", "dave"])
        group = await create_group(a, "lab", "private", [d])
        side = await create_group(a, "side", "private", [d])
        [d_side] = await follow_all(stack, [d], side)
        removal = await kith_json(a.data, "group", "remove", group, d.peer_id)
        # Alice's side message goes to dave after her removal event (one channel, in order).
        barrier = await send(a, side, "after the removal")
        await d_side.wait_for_ids([barrier["id"]], "alice's side message")
        d_log, d_groups = await concurrently(
            lambda: kith_json(d.data, "log", group), lambda: kith_json(d.data, "group", "list")
        )
        assert d_log[-1]["id"] == removal["id"], "dave's log does not end at his removal"
        assert {g["id"]: g["member"] for g in d_groups} == {group: False, side: True}
        result = await kith_cli(d.data, "send", group, "am", "I", "still", "here")
    assert result.returncode != 0, result.stdout.decode()
    assert result.stdout == b""
    errors = result.stderr.decode().splitlines()
    assert len(errors) == 1 and errors[0].startswith("kith: "), errors
    assert "not a member" in errors[0]


# -- scenario 3: the outbox across restarts -----------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_outbox_delivers_across_restarts(tmp: Path, mode: str) -> None:
    """What a member missed while stopped, or wrote while alone, arrives once it is back."""
    c_dir = tmp / "carol"
    async with AsyncExitStack() as stack:
        a, b = await start_mesh(stack, tmp, ["alice", "bob"])
        async with running(c_dir, "carol", [a, b]) as c:
            c.peer_id = (await kith_json(c_dir, "id"))["peer_id"]
            group = await create_group(a, "lab", mode, [b, c])
            async with following(c, group) as c_follower:
                await c_follower.wait_for_kind("add", 2)
        carol = c.peer_id
        await gone(c, [a, b])
        a_follower, b_follower = await follow_all(stack, [a, b], group)

        # Carol is down: alice and bob talk; their messages reach each other only.
        a_sent = await send_each([a], group, lambda m: ["while carol is away 1", "and 2"])
        await b_follower.wait_for_ids(list(a_sent), "alice's messages")
        b_sent = await send_each([b], group, lambda m: ["bob too, carol"])
        await a_follower.wait_for_ids(list(b_sent), "bob's message")  # after bob's acks
        a_log = await kith_json(a.data, "log", group)
        for event in a_log:
            if event["id"] in a_sent:
                assert (event["state"], event["delivered_to"]) == ("sent", [b.peer_id])
        sent = a_sent | b_sent

        # Carol comes back: each author's outbox sends her what she has not acked.
        async with running(c_dir, "carol", [a, b], carol) as c:
            async with following(c, group) as c_follower:
                await c_follower.wait_for_ids(list(sent), "what was sent while she was away")
                # Messages sent after the outboxes: when carol shows them she has handled
                # (and acked) what alice and bob pushed her; when alice shows carol's
                # answer, alice has handled those acks.
                welcome = await send_each([a, b], group, lambda m: [f"welcome back from {m.name}"])
                await c_follower.wait_for_ids(list(welcome), "the welcome messages")
                back = await send(c, group, "carol is back")
                await a_follower.wait_for_ids([back["id"]], "carol's message")
                await b_follower.wait_for_ids([back["id"]], "carol's message")
            final = await logs([a, b, c], group)
        await gone(c, [a, b])
        reference = [e["id"] for e in final[0]]
        for member, log in zip([a, b, c], final, strict=True):
            assert [e["id"] for e in log] == reference, f"{member.name}'s order differs"
            check_messages(member, log, sent | welcome | {back["id"]: (c, "carol is back")})
        for event in final[0]:
            if event["id"] in a_sent:
                assert event["state"] == "delivered"
                assert event["delivered_to"] == sorted([b.peer_id, carol])

        # Carol alone (nobody to dial, nobody dials her): her message waits in the outbox,
        # through a restart, and goes out once she is connected again.
        async with running(c_dir, "carol", peer_id=carol) as c:
            alone = await send(c, group, "written with nobody around")
            assert (alone["state"], alone["delivered_to"]) == ("pending", [])
            [still] = [e for e in await kith_json(c_dir, "log", group) if e["id"] == alone["id"]]
            assert (still["state"], still["delivered_to"]) == ("pending", [])
        async with running(c_dir, "carol", [a, b], carol) as c:
            # Sent after her outbox went out: when alice and bob show it, they have handled
            # (and acked) the outbox; when carol shows their replies, she has the acks.
            again = await send(c, group, "carol again")
            for follower in (a_follower, b_follower):
                await follower.wait_for_ids([alone["id"], again["id"]], "carol's messages")
            async with following(c, group) as c_follower:
                replies = await send_each([a, b], group, lambda m: [f"{m.name} got it"])
                await c_follower.wait_for_ids(list(replies), "the replies")
            final = await logs([a, b, c], group)

    reference = [e["id"] for e in final[0]]
    carols = {alone["id"]: (c, alone["text"]), again["id"]: (c, again["text"])}
    for member, log in zip([a, b, c], final, strict=True):
        assert [e["id"] for e in log] == reference, f"{member.name}'s order differs"
        check_messages(member, log, carols | replies)
        assert [e["id"] for e in log].count(alone["id"]) == 1
    [alone_now] = [e for e in final[2] if e["id"] == alone["id"]]
    assert (alone_now["state"], alone_now["delivered_to"]) == (
        "delivered", sorted([a.peer_id, b.peer_id])
    )


async def gone(member: Member, others: Sequence[Member]) -> None:
    """Wait until ``others`` noticed that ``member`` stopped."""
    for other in others:
        await other.proc.wait_for_line(rf"disconnected from {member.short} \({member.name}\)")


async def test_pairwise_copy_arriving_after_the_relayed_message_is_read(tmp: Path) -> None:
    """A pairwise message first relayed without the reader's copy is read once the copy comes.

    The restart test can meet this by chance (which push reaches carol first); here
    the order is forced.
    """
    c_dir = tmp / "carol"
    async with AsyncExitStack() as stack:
        a, b = await start_mesh(stack, tmp, ["alice", "bob"])
        async with running(c_dir, "carol", [a, b]) as c:
            carol = c.peer_id = (await kith_json(c_dir, "id"))["peer_id"]
            group = await create_group(a, "lab", "pairwise", [b, c])
            async with following(b, group) as b_follower:  # bob knows carol is a member
                await b_follower.wait_for_kind("add", 2)
        await gone(c, [a, b])
        [a_follower] = await follow_all(stack, [a], group)
        away = await send(b, group, "bob writes while carol is away")
        await a_follower.wait_for_ids([away["id"]], "bob's message")
        # Carol comes back to alice only: alice (who added her) pushes her the history, with
        # bob's message but not carol's copy of it (only bob has that).
        async with running(c_dir, "carol", [a], carol) as c, following(c, group) as c_follower:
            await c_follower.wait_for_ids([away["id"]], "bob's message from alice")
        await gone(c, [a])
        # Then to both: bob's outbox sends his message again, now with carol's copy.
        async with running(c_dir, "carol", [a, b], carol) as c:
            async with following(c, group) as c_follower:
                later = await send(b, group, "and later")
                await c_follower.wait_for_ids([later["id"]], "bob's next message")
            log = await kith_json(c_dir, "log", group)
    [event] = [e for e in log if e["id"] == away["id"]]
    assert (event["text"], event["decrypted"]) == (away["text"], True)


# -- regression: a batch with a newcomer's ADD and then our own removal ----------


@pytest.mark.parametrize("demote", [False, True], ids=["removed", "demoted"])
async def test_a_batch_adding_someone_then_removing_us_keeps_the_node_running(
    tmp: Path, demote: bool
) -> None:
    """Carol, away, is removed (or made a guest) right after alice adds dave; when she is
    back, alice's outbox pushes both events in one batch. Carol's node used to react to
    the ADD with a sender key its own core refused by then, and exit (rc 1)."""
    c_dir = tmp / "carol"
    async with AsyncExitStack() as stack:
        [a] = await start_mesh(stack, tmp, ["alice"])
        async with running(c_dir, "carol", [a]) as c:
            c.peer_id = (await kith_json(c_dir, "id"))["peer_id"]
            group = await create_group(a, "lab", "private", [c])
            async with following(a, group) as a_follower:
                said = await send(c, group, "carol has a sender key")
                await a_follower.wait_for_ids([said["id"]], "carol's message")
        carol = c.peer_id
        await gone(c, [a])
        dave = (await kith_json(tmp / "dave", "init"))["peer_id"]  # a member who never runs
        await kith_json(a.data, "group", "add", group, dave)
        if demote:
            await kith_json(a.data, "group", "role", group, carol, "guest")
        else:
            await kith_json(a.data, "group", "remove", group, carol)
        async with running(c_dir, "carol", [a], carol) as c:
            async with following(c, group) as c_follower:
                await c_follower.wait_until(
                    lambda events: any(e["kind"] == ("set_role" if demote else "remove")
                                       for e in events), "her removal or demotion")
            members = await kith_json(c_dir, "group", "members", group)
            roles = {m["peer_id"]: m["role"] for m in members}
            assert dave in roles
            if demote:
                assert roles[carol] == "guest"
            else:
                assert carol not in roles
            assert c.proc.returncode is None  # still serving (`running` checks it exits 0)
