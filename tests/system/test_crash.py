"""kill -9 at random points while a node sends and receives: nothing lost, nothing doubled.

The victim (bob) and a peer (alice) both write bursts of messages; bob is
killed with SIGKILL when alice has seen a random number of his messages of
that round (a random point, chosen by an event, not by a timer), restarted,
and the rounds repeat. Afterwards both nodes must show the same log; every
message alice ever saw from bob is in bob's own store (he stores before he
sends); no event appears twice; each author's seqs run 1..n without holes;
and no message key was used twice ((epoch, chain index) unique per author).
The seed is printed, and KITH_CRASH_SEED replays a run.
"""

from __future__ import annotations

import os
import random
import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from tests.lab.procs import kith_cli, kith_json, kith_process
from tests.system.test_cli import LOOPBACK
from tests.system.test_groups_cli import LISTENING, Member, create_group, following, start_mesh

pytestmark = pytest.mark.system
ROUNDS = 3
BURST = 40


@asynccontextmanager
async def victim(data: Path, alice: Member) -> AsyncIterator[Member]:
    async with kith_process(data, "run", *LOOPBACK, "--name", "bob",
                            "--peer", alice.address) as proc:
        listening = await proc.wait_for_line(LISTENING)
        await proc.wait_for_line(rf"connected to {alice.short} \(alice\) at ")
        yield Member("bob", data, proc, listening["address"], listening["short"])


async def test_kill_9_mid_traffic_loses_nothing_and_reuses_no_key(tmp: Path) -> None:
    seed = int(os.environ.get("KITH_CRASH_SEED", random.randrange(1 << 30)))
    print(f"KITH_CRASH_SEED={seed}")
    rng = random.Random(seed)
    bob_dir = tmp / "bob"
    async with AsyncExitStack() as stack:
        [alice] = await start_mesh(stack, tmp, ["alice"])
        async with victim(bob_dir, alice) as bob:
            bob.peer_id = (await kith_json(bob_dir, "id"))["peer_id"]
            group = await create_group(alice, "crash", "private", [bob])
        bob_id = bob.peer_id
        seen_from_bob: set[str] = set()
        follower = await stack.enter_async_context(following(alice, group))
        for round_ in range(ROUNDS):
            async with victim(bob_dir, alice) as bob:
                before = sum(1 for e in follower.events if e["author"] == bob_id)
                cut = rng.randrange(1, BURST // 2)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(kith_cli, alice.data, "send", group, f"a{round_}",
                                       "--count", str(BURST))
                    nursery.start_soon(kith_cli, bob_dir, "send", group, f"b{round_}",
                                       "--count", str(BURST))
                    target = before + cut
                    await follower.wait_until(
                        lambda events, target=target: sum(
                            e["author"] == bob_id for e in events) >= target,
                        f"{cut} of bob's round-{round_} messages",
                    )
                    bob.proc.send_signal(signal.SIGKILL)
                    assert await bob.proc.wait() == -signal.SIGKILL
                seen_from_bob |= {e["id"] for e in follower.events if e["author"] == bob_id}
        # Back for good: both must converge on one log (no traffic any more).
        async with victim(bob_dir, alice) as bob, following(bob, group) as bob_follower:
            while set(follower.ids()) != set(bob_follower.ids()):
                a_ids, b_ids = set(follower.ids()), set(bob_follower.ids())
                await bob_follower.wait_until(
                    lambda events, want=a_ids: want <= {e["id"] for e in events},
                    "everything alice has")
                await follower.wait_until(
                    lambda events, want=b_ids: want <= {e["id"] for e in events},
                    "everything bob has")
            alice_log = await kith_json(alice.data, "log", group, "--all")
            bob_log = await kith_json(bob_dir, "log", group, "--all")
            assert [e["id"] for e in alice_log] == [e["id"] for e in bob_log]
    ids = [e["id"] for e in bob_log]
    assert len(ids) == len(set(ids)), "an event appears twice"
    assert seen_from_bob <= set(ids), "bob lost messages alice had received"
    for author, seqs in _seqs(bob_log).items():
        assert seqs == list(range(1, len(seqs) + 1)), f"holes in {author}'s seqs"
    keys = Counter((e["epoch"], e["chain_index"]) for e in bob_log
                   if e["kind"] == "message" and e["author"] == bob_id)
    assert keys and max(keys.values()) == 1, "a message key was used twice"
    texts = [str(e["text"]) for e in bob_log if e["kind"] == "message"]
    assert len(texts) == len(set(texts)) and "None" not in texts
    assert sum(t.startswith("a") for t in texts) == ROUNDS * BURST  # alice's all arrived


def _seqs(log: list[dict[str, object]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for e in sorted(log, key=lambda e: (str(e["author"]), int(str(e["seq"])))):
        out.setdefault(str(e["author"]), []).append(int(str(e["seq"])))
    return out
