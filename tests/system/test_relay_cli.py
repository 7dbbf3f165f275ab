"""A relay over real processes: ``kith run --relay`` and members on loopback.

Alice sends while Bob is offline, Alice goes offline, Bob comes back connected only to
the relay and gets her messages, in order, decrypted (the Mailbox case). Also the
command line's round trip: ``kith group relay add/remove``, a clear error for a
non-admin, and the relay refusing to author. Every node is a ``kith run`` process on
127.0.0.1 with mDNS off and explicit ``--peer``s; the test waits on log lines and
``kith log --follow`` output, never by sleeping (see tests/system/test_groups_cli.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from tests.lab.procs import kith_cli, kith_json, kith_process
from tests.system.test_groups_cli import (
    LISTENING,
    LOOPBACK,
    Member,
    create_group,
    following,
    gone,
    send,
)

pytestmark = pytest.mark.system


@asynccontextmanager
async def running(data: Path, name: str, dial: Sequence[Member] = (),
                  extra: Sequence[str] = ()) -> AsyncIterator[Member]:
    """``kith run [EXTRA]`` dialling ``dial``, once it listens and is connected to each."""
    peers = [arg for m in dial for arg in ("--peer", m.address)]
    async with kith_process(data, "run", *LOOPBACK, "--name", name, *extra, *peers) as proc:
        listening = await proc.wait_for_line(LISTENING)
        member = Member(name, data, proc, listening["address"], listening["short"])
        for other in dial:
            await proc.wait_for_line(rf"connected to {other.short} \({other.name}\) at ")
        member.peer_id = (await kith_json(data, "id"))["peer_id"]
        yield member
        status = await proc.stop()
        assert status == 0, proc.log
        assert "Traceback" not in proc.log, proc.log


@pytest.mark.parametrize("mode", ["private", "pairwise"])
async def test_offline_member_gets_messages_through_the_relay_only(tmp: Path, mode: str) -> None:
    async with AsyncExitStack() as stack:
        relay = await stack.enter_async_context(
            running(tmp / "relay", "relay", extra=["--relay"]))
        async with running(tmp / "alice", "alice", [relay]) as alice:
            async with running(tmp / "bob", "bob", [relay, alice]) as bob:
                group = await create_group(alice, "lab", mode, [bob])

                # The command line's round trip: a non-admin is refused in one line...
                refused = await kith_cli(bob.data, "group", "relay", "add", group,
                                         relay.peer_id)
                assert refused.returncode != 0
                error = refused.stderr.decode().strip()
                assert "\n" not in error and "only owner and admins" in error, error
                # ...an admin designates, undesignates and designates again.
                added = await kith_json(alice.data, "group", "relay", "add", group,
                                        relay.peer_id)
                assert added["kind"] == "relay" and "a relay of the group" in added["info"]
                await relay.proc.wait_for_line(rf"relaying group lab by {alice.short}$")
                removed = await kith_json(alice.data, "group", "relay", "remove", group,
                                          relay.short)
                assert "relaying the group" in removed["info"], removed["info"]
                await kith_json(alice.data, "group", "relay", "add", group, relay.peer_id)
                [info] = [g for g in await kith_json(alice.data, "group", "list")
                          if g["id"] == group]
                assert info["relays"] == [relay.peer_id]
                # The relay cannot post.
                posted = await kith_cli(relay.data, "send", group, "hello")
                assert posted.returncode != 0
                assert "this node is a relay" in posted.stderr.decode()
                hello = await send(alice, group, "before bob goes")
                async with following(bob, group) as bob_log:
                    await bob_log.wait_for_ids([hello["id"]], "alice's first message")
            await gone(bob, [alice, relay])

            # Bob is offline: alice sends; the relay stores it.
            async with following(relay, group) as relay_log:
                sent = [await send(alice, group, f"while bob is away {k}") for k in range(3)]
                await relay_log.wait_for_ids([e["id"] for e in sent], "alice's messages")
            alice_log = await kith_json(alice.data, "log", group)
        await gone(alice, [relay])

        # Bob comes back connected only to the relay.
        async with running(tmp / "bob", "bob", [relay]) as bob:
            async with following(bob, group) as bob_log:
                await bob_log.wait_for_ids([e["id"] for e in sent], "what alice sent")
            bob_view = await kith_json(bob.data, "log", group)
        status_rows = await kith_json(relay.data, "relay", "status")
        assert [r["relaying"] for r in status_rows] == [True]
        assert status_rows[0]["relay"]["events"] >= len(alice_log)

    texts = {e["id"]: e for e in bob_view}
    for event in sent:
        got = texts[event["id"]]
        assert (got["text"], got["decrypted"], got["author"]) == (
            event["text"], True, alice.peer_id)
    assert [e["id"] for e in bob_view] == [e["id"] for e in alice_log]
