"""The relay node of ``kith bench fanout --mode relay,relay-pairwise``, in its own process.

Theory of operation
-------------------
Server-side fanout puts a third party in the picture: the author sends one
copy of each message to a relay (a node that is not a member: it cannot read
and cannot post, docs/protocol.md) and the relay pushes it to every member.
What the author saves the relay pays, so the benchmark measures the relay on
its own: it runs in a process of its own (``python -m node.bench.relay_fanout
relay DATA MESSAGES``), so its CPU time is its own, on the same machine as
the author and the receivers.

The parent talks to it over pipes, as to the receivers (``node.bench.harness``):
the relay process writes JSON lines to stdout (``up`` with its peer id and
address first) and reads commands from stdin, one per line:

* ``mark [F]``: answer ``{"mark": K, "cpu": s, "sent": B, "received": B,
  "fanned": F'}``: the process's CPU time (``time.process_time()``), the
  bytes its channels have sent and received so far (closed channels as last
  seen) and the events it has pushed on to members. The parent marks just
  before the first timed send and once the run is over; the difference is
  what the relay paid for the M messages. With ``F`` the relay first waits
  (at most ``FAN_WAIT`` seconds) until it has pushed on ``F`` events and
  written what that queued: the members may have every message and the
  author every acknowledgement while a starved relay process still has the
  pushes to make (they came by sync meanwhile), and they are its cost all
  the same. The parent checks ``fanned``: fewer than M more means the author
  did not send through the relay.
* ``hold K``: answer ``{"holds": [[group id hex, events held], ...]}`` once
  the relay holds a group with at least K events (the parent waits for it to
  take the group before anything is timed).
* ``link K``: answer ``{"links": K'}`` once the relay has channels to at
  least K peers (the parent waits for every receiver and the author: a
  member without a channel to the relay gets nothing from it, and would
  catch up by sync from the others instead, seconds later).

Closing stdin stops it. ``RelayProcess`` is the parent's side.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing

from node.api.python import Kith, open_node
from node.bench import report
from node.bench.harness import STOP_TIMEOUT, BenchError, emit, queue_size

#: The fanout benchmark's relay modes and the group mode each runs.
RELAY_GROUP_MODE = {"relay": "private", "relay-pairwise": "pairwise"}
#: The relay's own costs: the table's columns and the plots when a relay mode ran.
RELAY_COLUMNS = (
    report.Column("relay_cpu_ms_per_message", "relay CPU ms/msg", ".3f", span=True),
    report.Column("relay_wire_bytes_per_message", "relay B/msg", ".0f"),
)
RELAY_PLOTS = {
    "relay_cpu_ms_per_message": "relay CPU ms per message",
    "relay_wire_bytes_per_message": "relay bytes on the wire per message",
}


#: How long ``mark F`` waits for the relay to push on F events; then it waits until its
#: tasks have all been blocked for FAN_SETTLE s (what the pushes set off is done).
FAN_WAIT = 10.0
FAN_SETTLE = 0.01


def relayed(modes: Sequence[str]) -> bool:
    """Whether a relay mode is among ``modes``."""
    return any(mode in RELAY_GROUP_MODE for mode in modes)


# -- in the relay's process ---------------------------------------------------------------


class _Counter:
    """Bytes sent and received by every channel a node has had (closed ones as last seen)."""

    def __init__(self, kith: Kith) -> None:
        self.kith = kith
        self._seen: dict[int, tuple[Any, int, int]] = {}

    def totals(self) -> tuple[int, int]:
        for conn in self.kith.node.connections.values():
            stream = conn.stream
            self._seen[id(conn)] = (conn, stream.bytes_sent, stream.bytes_received)
        return (sum(sent for _, sent, _ in self._seen.values()),
                sum(got for _, _, got in self._seen.values()))


def _held(kith: Kith) -> list[tuple[str, int]]:
    return [(gid.hex(), len(group.core.ordered()))
            for gid, group in sorted(kith.service.groups.items())]


async def _hold(kith: Kith, events: int) -> None:
    await kith.service.wait_until(lambda: any(held >= events for _, held in _held(kith)))


def _fanned(kith: Kith) -> int:
    """Events the relay pushed on to the members (server-side fanout), all groups."""
    return sum(getattr(group, "fanned", 0) for group in kith.service.groups.values())


async def _fan(kith: Kith, events: int) -> None:
    """Until the relay has pushed on ``events`` events (at most ``FAN_WAIT`` s) and its
    tasks have done what that set off (the pushes written, not only queued)."""
    with trio.move_on_after(FAN_WAIT):
        await kith.service.wait_until(lambda: _fanned(kith) >= events)
    await trio.testing.wait_all_tasks_blocked(FAN_SETTLE)


async def _link(kith: Kith, peers: int) -> None:
    await kith.node.wait_until(lambda: len(kith.node.connections) >= peers)


async def relay_main(data: Path, messages: int) -> None:
    """Run one relay node until stdin closes, answering ``mark`` and ``groups``."""
    async with open_node(data, name="relay", relay=True,
                         send_queue=queue_size(messages)) as kith:
        counter = _Counter(kith)
        emit(up="relay", peer=kith.peer_id, listen=kith.listen)
        marks = 0
        async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
            pending = b""
            while data_in := await stdin.receive_some():
                *lines, pending = (pending + data_in).split(b"\n")
                for line in lines:
                    command, _, arg = line.strip().decode(errors="replace").partition(" ")
                    if command == "mark":
                        if arg.isdigit():
                            await _fan(kith, int(arg))
                        sent, received = counter.totals()
                        emit(mark=marks, cpu=time.process_time(), sent=sent, received=received,
                             links=len(kith.node.connections), fanned=_fanned(kith))
                        marks += 1
                    elif command == "hold" and arg.isdigit():
                        await _hold(kith, int(arg))
                        emit(holds=_held(kith))
                    elif command == "link" and arg.isdigit():
                        await _link(kith, int(arg))
                        emit(links=len(kith.node.connections))
                    elif command:
                        emit(error=f"unknown command {command!r}")


# -- the parent's side --------------------------------------------------------------------


class RelayProcess:
    """A running relay process: its peer id and address, and ``ask`` for a command."""

    def __init__(self, proc: trio.Process, log: Path) -> None:
        self.proc = proc
        self.log = log
        self.peer = ""
        self.listen = ""
        self.fanned = 0  # events pushed on at the last mark
        self._pending = b""

    async def _line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while b"\n" not in self._pending:
            data = await self.proc.stdout.receive_some()
            if not data:
                raise BenchError(f"the relay process exited{self._tail()}")
            self._pending += data
        line, self._pending = self._pending.split(b"\n", 1)
        try:
            answer = json.loads(line)
        except ValueError:
            raise BenchError(f"the relay said {line!r}{self._tail()}") from None
        if not isinstance(answer, dict):
            raise BenchError(f"the relay said {answer!r}")
        return answer

    async def ask(self, command: str, key: str) -> dict[str, Any]:
        """Send ``command``; the answer, which must carry ``key``."""
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(command.encode() + b"\n")
        answer = await self._line()
        if key not in answer:
            raise BenchError(f"asked the relay {command!r}, it said {answer}{self._tail()}")
        return answer

    async def mark(self, messages: int = 0) -> dict[str, Any]:
        """A ``mark``; with ``messages``, once the relay has pushed that many more events on
        than at the previous mark."""
        answer = await self.ask(f"mark {self.fanned + messages}" if messages else "mark", "mark")
        self.fanned = int(answer.get("fanned", 0))
        return answer

    async def hold(self, events: int) -> None:
        """Until the relay holds a group with at least ``events`` events."""
        await self.ask(f"hold {events}", "holds")

    async def link(self, peers: int) -> None:
        """Until the relay has channels to at least ``peers`` peers."""
        await self.ask(f"link {peers}", "links")

    def _tail(self) -> str:
        text = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        return f"; relay stderr:\n{text}" if text.strip() else ""


@asynccontextmanager
async def relay_process(tmp: Path, messages: int) -> AsyncIterator[RelayProcess]:
    """Start a relay node in its own process (data in ``tmp/relay``, stderr in
    ``tmp/relay.log``); stop it on exit (stdin closed, then killed after STOP_TIMEOUT)."""
    log = tmp / "relay.log"
    with log.open("wb") as err:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "node.bench.relay_fanout", "relay", str(tmp / "relay"),
             str(messages)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
    relay = RelayProcess(proc, log)
    try:
        with trio.fail_after(60):
            up = await relay._line()
        if "up" not in up:
            raise BenchError(f"the relay said {up}{relay._tail()}")
        relay.peer, relay.listen = up["peer"], up["listen"]
        yield relay
    finally:
        with trio.CancelScope(shield=True):
            if proc.stdin is not None:
                await proc.stdin.aclose()
            with trio.move_on_after(STOP_TIMEOUT):
                await proc.wait()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def relay_costs(before: dict[str, Any], after: dict[str, Any], messages: int) -> dict[str, float]:
    """What the relay paid per message between two ``mark`` answers (a channel the relay
    lost meanwhile is said on stderr: its member caught up by sync, not from the relay).
    BenchError if the relay did not push every message on: then the run measured
    client-side fanout."""
    fanned = after.get("fanned", 0) - before.get("fanned", 0)
    if fanned < messages:
        raise BenchError(f"the relay pushed on {fanned} of the {messages} timed messages: "
                         f"the author did not send them all through it")
    if after.get("links") != before.get("links"):
        sys.stderr.write(f"relay: {before.get('links')} channels at the start of the run, "
                         f"{after.get('links')} at the end\n")
    if not messages:
        return {"relay_cpu_ms_per_message": math.nan, "relay_wire_bytes_per_message": math.nan}
    return {"relay_cpu_ms_per_message": 1000 * (after["cpu"] - before["cpu"]) / messages,
            "relay_wire_bytes_per_message": (after["sent"] - before["sent"]) / messages}


def main(argv: list[str]) -> int:
    if argv[:1] != ["relay"] or len(argv) != 3:
        sys.stderr.write("usage: python -m node.bench.relay_fanout relay DATA MESSAGES\n")
        return 2
    trio.run(relay_main, Path(argv[1]), int(argv[2]))
    return 0


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    sys.exit(main(sys.argv[1:]))
