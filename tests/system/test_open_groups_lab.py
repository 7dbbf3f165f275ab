"""An open group found over real mDNS in the namespace lab, and joined with the CLI.

Two hosts of a ``NetnsLab`` each run ``kith run`` with mDNS on the lab interface (no
``--peer``). Host 1 creates an open group; host 2 finds it with ``kith group
discover`` (the ``_kith-group._tcp`` record host 1 announces), joins it with ``kith
group join`` and both see each other's messages. A private group of host 1 is never
heard on host 2. Nothing sleeps: waits are for log lines, for ``discover``'s own wait
for a first record, and for ``log --follow`` streams, each under a deadline.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.lab.control import following
from tests.lab.netns import NetnsLab, require_netns
from tests.lab.nodes import deadline, mdns_node
from tests.lab.procs import kith_cli, kith_json

pytestmark = pytest.mark.system

#: Seconds for each step (discovery on an idle LAN takes well under 5).
STEP = 20.0


async def test_a_peer_discovers_and_joins_an_open_group_over_mdns(tmp: Path) -> None:
    require_netns()
    dirs = {i: tmp / f"n{i}" for i in (1, 2)}
    with NetnsLab(2) as lab:
        async with AsyncExitStack() as stack:
            nodes = [await stack.enter_async_context(mdns_node(lab, i, dirs[i])) for i in (1, 2)]
            one, two = nodes
            with deadline(STEP, "the two hosts connected", nodes):
                await one.wait_for_line(r"connected to \S+ \(host2\) at ")
                await two.wait_for_line(r"connected to \S+ \(host1\) at ")
            secret = await kith_json(dirs[1], "group", "create", "secret")
            lobby = await kith_json(dirs[1], "group", "create", "lobby", "--mode", "open",
                                    "--policy", "blacklist")
            assert (lobby["mode"], lobby["policy"]) == ("open", "blacklist")

            with deadline(STEP, "host2 hears the open group", nodes):
                await two.wait_for_line(r"mDNS: open group 'lobby' \(blacklist\) served by ")
            found = await kith_json(dirs[2], "group", "discover", "--timeout", "5")
            assert [(g["id"], g["name"], g["policy"]) for g in found] == [
                (lobby["id"], "lobby", "blacklist")]
            assert secret["id"] not in str(found)  # private groups are never announced
            ids = {i: await kith_json(dirs[i], "id") for i in (1, 2)}
            assert found[0]["servers"][0]["short_id"] == ids[1]["short_id"]

            table = await kith_cli(dirs[2], "group", "discover")
            assert table.returncode == 0 and "lobby" in table.stdout.decode()
            joined = await kith_cli(dirs[2], "group", "join", "lobby")
            assert joined.returncode == 0, joined.stderr.decode()
            assert "joined open group 'lobby'" in joined.stdout.decode()

            async with (
                following(dirs[1], "lobby", "host1") as follower1,
                following(dirs[2], "lobby", "host2") as follower2,
            ):
                for i, text in ((1, "welcome, host2"), (2, "thanks, host1")):
                    sent = await kith_cli(dirs[i], "send", "lobby", text)
                    assert sent.returncode == 0, sent.stderr.decode()
                wanted = {(ids[1]["peer_id"], "welcome, host2"),
                          (ids[2]["peer_id"], "thanks, host1")}
                with deadline(STEP, "both see both messages", nodes):
                    for follower in (follower1, follower2):
                        await follower.wait_for_messages(wanted, "both messages")
            logs = [await kith_json(dirs[i], "log", "lobby") for i in (1, 2)]
            assert [e["id"] for e in logs[0]] == [e["id"] for e in logs[1]]
            assert any(e["info"] == "host2 joined" for e in logs[0])
            secret_on_two = await kith_json(dirs[2], "group", "list")
            assert [g["name"] for g in secret_on_two] == ["lobby"]
