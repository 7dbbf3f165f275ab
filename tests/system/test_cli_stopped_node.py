"""``kith log`` and ``kith send`` while the node is stopped, and ``send GROUP -``
(issue 15, item 10), ``send --file`` and ``log --follow`` too, through real ``kith``
processes on loopback.

``log`` reads the stored history; ``send`` queues the message in the data directory
and the node sends it when it starts. A test learns that the node sent them from its
log line and that the other member has them from its ``log --follow --json`` output,
never by sleeping.
"""

from __future__ import annotations

import json
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from tests.lab.procs import WAIT_TIMEOUT, kith_cli, kith_command, kith_env, kith_process
from tests.system.test_cli import one_error_line
from tests.system.test_cli_usability import messages, ok
from tests.system.test_groups_cli import running, start_mesh

pytestmark = pytest.mark.system

QUEUED = "node not running: queued; it goes out when the node starts\n"


async def send_stdin(data: Path, text: str, *args: str) -> str:
    """``kith send ARGS -`` with ``text`` on stdin; its stdout (it must succeed)."""
    with trio.fail_after(WAIT_TIMEOUT):
        result = await trio.run_process(
            kith_command(data, "send", *args, "-"), stdin=text.encode(),
            capture_stdout=True, capture_stderr=True, check=False, env=kith_env())
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b"", result.stderr.decode()
    return result.stdout.decode()


async def test_send_reads_the_message_from_stdin(tmp: Path) -> None:
    long_text = "word " * 2_000 + "\nsecond line"  # 10 kB: beyond a comfortable argv
    async with running(tmp / "a", "alice") as alice:
        await ok(alice.data, "group", "create", "lab")
        await send_stdin(alice.data, long_text + "\n", "lab")
        [message] = await messages(alice.data)
    assert message["text"] == long_text


async def test_log_reads_the_stored_history_while_the_node_is_stopped(tmp: Path) -> None:
    await ok(tmp / "a", "init", "--name", "alice")  # the name without a node: from init
    async with running(tmp / "a", "alice") as alice:
        await ok(alice.data, "group", "create", "lab")
        await ok(alice.data, "send", "lab", "written", "while", "running")
        running_log = await ok(alice.data, "log", "lab")
        running_json = await messages(alice.data)
    stopped_log = await ok(alice.data, "log", "lab")
    assert stopped_log == running_log and "alice: written while running" in stopped_log
    for message in running_json:
        del message["cost"]  # what sending cost this run: counted in memory, not stored
    assert await messages(alice.data) == running_json
    assert (await ok(alice.data, "log", "lab", "--limit", "1")).count("\n") == 1
    line = one_error_line((await kith_cli(alice.data, "log", "nosuch")).stderr)
    assert line == "kith: no group 'nosuch' (see `kith group list`)"
    never_ran = await kith_cli(tmp / "new", "log", "lab")
    assert never_ran.returncode == 3
    assert "no node has run with" in one_error_line(never_ran.stderr)


async def test_send_queues_while_stopped_and_the_node_sends_at_start(tmp: Path) -> None:
    async with AsyncExitStack() as stack:
        alice, bob = await start_mesh(stack, tmp, ["alice", "bob"])
        await ok(alice.data, "group", "create", "lab")
        await ok(alice.data, "group", "add", "lab", "bob")
        await bob.proc.wait_for_line(rf"added to group lab by {alice.short}")
        # The follower's first lines are the history so far, so it misses nothing.
        follow = await stack.enter_async_context(
            kith_process(bob.data, "log", "lab", "--follow", "--json", watch="stdout"))
        assert await alice.proc.stop() == 0
        # alice's node is stopped: her messages wait in her data directory.
        assert await ok(alice.data, "send", "lab", "--count", "2", "later") == QUEUED
        assert await send_stdin(alice.data, "from\nstdin\n", "lab") == QUEUED
        queued = json.loads(await ok(alice.data, "send", "lab", "as", "json", "--json"))
        assert queued["queued"] is True and queued["text"] == "as json"
        assert "no group 'nosuch'" in one_error_line(
            (await kith_cli(alice.data, "send", "nosuch", "hi")).stderr)
        async with running(alice.data, "alice", [bob]) as again:
            await again.proc.wait_for_line(r"sent 4 message\(s\) queued while the node was")
            wanted = ["later #1", "later #2", "from\nstdin", "as json"]

            def arrived(lines: list[str]) -> bool:
                texts = [json.loads(line).get("text") for line in lines if line.strip()]
                return all(text in texts for text in wanted)

            await follow.wait_until(arrived, f"bob to receive {wanted}")
            assert [m["text"] for m in await messages(again.data)] == wanted
    assert not (alice.data / "queued-sends.jsonl").exists()



async def test_the_name_given_to_run_is_the_name_when_stopped(tmp: Path) -> None:
    """README runs ``kith run --name bob`` on a fresh directory: bob stays bob after it
    stops (``kith id`` and ``kith log`` read the saved profile)."""
    async with running(tmp / "b", "bob"):
        pass
    done = await kith_cli(tmp / "b", "id", "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["name"] == "bob"


async def test_send_file_queues_a_copy_while_stopped_and_the_node_sends_it_at_start(
    tmp: Path
) -> None:
    notes = tmp / "notes.txt"
    original = b"the notes as they were when sent\n" * 1000
    notes.write_bytes(original)
    async with AsyncExitStack() as stack:
        alice, bob = await start_mesh(stack, tmp, ["alice", "bob"])
        await ok(alice.data, "group", "create", "lab")
        await ok(alice.data, "group", "add", "lab", "bob")
        await bob.proc.wait_for_line(rf"added to group lab by {alice.short}")
        assert await alice.proc.stop() == 0
        said = await ok(alice.data, "send", "lab", "--file", str(notes), "the", "notes")
        assert said == ("node not running: queued notes.txt (32.2 KiB); it goes out when "
                        "the node starts\n")
        notes.write_bytes(b"changed after sending")  # what was sent is the copy
        for args, error in (
            (("--file", str(tmp / "missing.txt")), "kith: cannot read "),
            (("--file", str(tmp)), "is not a regular file"),
        ):
            assert error in one_error_line((await kith_cli(alice.data, "send", "lab",
                                                           *args)).stderr)
        assert "no group 'nosuch'" in one_error_line(
            (await kith_cli(alice.data, "send", "nosuch", "--file", str(notes))).stderr)
        async with running(alice.data, "alice", [bob]) as again:
            await again.proc.wait_for_line(
                r"sent the file notes\.txt queued for lab while the node was stopped")
            async with kith_process(bob.data, "log", "lab", "--follow", "--json",
                                    watch="stdout") as follow:
                await follow.wait_until(
                    lambda lines: any('"complete"' in line and "notes.txt" in line
                                      for line in lines), "bob to have the whole file")
            [message] = await messages(bob.data)
            assert message["text"] == "the notes"
            saved = json.loads(await ok(bob.data, "save", "lab", str(message["number"]),
                                        str(tmp), "--json"))
        assert await trio.Path(saved["path"]).read_bytes() == original
        assert list((alice.data / "queued-files").iterdir()) == []


async def test_log_follow_on_a_stopped_node_waits_for_it_and_ends_on_ctrl_c(
    tmp: Path
) -> None:
    async with running(tmp / "a", "alice") as alice:
        await ok(alice.data, "group", "create", "lab")
        await ok(alice.data, "send", "lab", "before")
    async with kith_process(alice.data, "log", "lab", "--follow", watch="both") as follow:
        await follow.wait_for_line(r"\[1\] [0-9a-f]{8} alice: before")
        await follow.wait_for_line(
            r"^kith: node not running; following as soon as it starts \(Ctrl-C to stop\)$")
        async with running(alice.data, "alice") as again:
            await ok(again.data, "send", "lab", "after")
            await follow.wait_for_line(r"\[2\] [0-9a-f]{8} alice: after")
        await follow.wait_for_line(r"^kith: node stopped; following as soon as it starts")
        async with running(alice.data, "alice") as again:
            await ok(again.data, "send", "lab", "once more")
            await follow.wait_for_line(r"\[3\] [0-9a-f]{8} alice: once more")
        follow.send_signal(signal.SIGINT)
        assert await follow.wait() == 0
    printed = [line for line in follow.lines if "alice: " in line]
    assert [line.split("alice: ")[1].split("  (")[0] for line in printed] == [
        "before", "after", "once more"]  # each once
    assert "Traceback" not in follow.log
