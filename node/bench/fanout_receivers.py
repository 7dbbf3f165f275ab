"""The receivers of ``kith bench fanout``: processes hosting several receiver nodes each.

    python -m node.bench.fanout_receivers KIND FIRST COUNT DATA AUTHOR MESSAGES

hosts receivers FIRST .. FIRST+COUNT-1 of KIND (``raw``: a plain TCP listener
reading length-prefixed frames; ``kith``: a node with its data directory in
DATA/rK that dials AUTHOR, the author's address, with the relay's after a
comma in the relay modes) until its stdin closes. Each receiver says ``up``
(``peer`` or ``port``), ``ready`` once it has the warm-up (a Kith receiver:
decrypted, so it has the group and the keys), and ``done`` with the
``time.monotonic()`` at which each of the MESSAGES messages arrived (one clock
for every process on Linux) and its peak RSS. ``node.bench.fanout`` runs the
author and documents the benchmark; ``receivers`` is its side of the pipes.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import trio

from node.api.python import open_node
from node.bench.harness import (
    BenchError,
    Receivers,
    emit,
    message_index,
    peak_rss_mb,
    queue_size,
    receiver_processes,
    until_stdin_closed,
)
from node.group.events import Event, Kind

#: The warm-up message's text (not timed).
WARMUP = "warmup"


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


async def _kith_receiver(k: int, data: Path, author: str, messages: int) -> None:
    # ``author``: the author's address, and the relay's after a comma in the relay modes
    relayed = "," in author
    async with open_node(data, name=f"r{k}", peers=author.split(","),
                         send_queue=queue_size(messages)) as kith:
        emit(up=k, peer=kith.peer_id)
        service = kith.service
        await service.wait_until(lambda: bool(service.groups))
        group = next(iter(service.groups.values()))
        arrivals = [math.nan] * messages
        left = messages
        got: set[bytes] = set()

        def seen(event: Event) -> None:
            nonlocal left
            if event.kind is not Kind.MESSAGE or event.id in got:
                return  # (the snapshot may hold an event its batch has yet to announce)
            text = group.texts.get(event.id)
            if text is None:
                # Not readable yet: through a relay, another member's sync may bring the
                # event before the relay brings this member's pairwise copy; the watch
                # announces it again when it becomes readable (a run that never reads it
                # times out, naming the receivers that did not finish).
                if relayed:
                    return
                raise BenchError(f"receiver {k} could not decrypt {event.id.hex()[:12]}")
            got.add(event.id)
            if text == WARMUP:
                emit(ready=k)
                return
            index = message_index(text)
            if math.isnan(arrivals[index]):
                left -= 1
            arrivals[index] = time.monotonic()

        with service.watch(group) as new:
            for event in group.core.ordered():  # what arrived before we watched
                seen(event)
            async for event in new:
                seen(event)
                if not left:
                    break
        if left:  # the service ends a watch that falls 1,024 events behind
            raise BenchError(f"receiver {k} fell behind: its watch ended with {left} to go")
        emit(done=k, arrivals=[round(t, 6) for t in arrivals], rss_mb=peak_rss_mb())
        await trio.sleep_forever()  # keep the node up (acks, goodbye) until told to stop


async def _raw_receiver(k: int, messages: int) -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    emit(up=k, port=listener.socket.getsockname()[1])
    stream = await listener.accept()
    await listener.aclose()
    arrivals = [math.nan] * messages
    left = messages
    buf = bytearray()
    async with stream:
        while left:
            data = await stream.receive_some(65536)
            if not data:
                raise BenchError(f"receiver {k}: the author hung up after {messages - left}")
            now = time.monotonic()
            buf += data
            at = 0
            while len(buf) - at >= 4:
                end = at + 4 + int.from_bytes(buf[at:at + 4], "big")
                if end > len(buf):
                    break
                payload = bytes(buf[at + 4:end]).decode("ascii")
                at = end
                if payload == WARMUP:
                    emit(ready=k)
                else:
                    left -= math.isnan(arrivals[message_index(payload)])
                    arrivals[message_index(payload)] = now
            del buf[:at]
        emit(done=k, arrivals=[round(t, 6) for t in arrivals], rss_mb=peak_rss_mb())
        await trio.sleep_forever()


async def receiver_main(
    kind: str, first: int, count: int, data: Path, author: str, messages: int
) -> None:
    """Host receiver nodes ``first .. first+count-1`` until stdin closes."""
    async with trio.open_nursery() as nursery:
        for k in range(first, first + count):
            if kind == "raw":
                nursery.start_soon(_raw_receiver, k, messages)
            else:
                nursery.start_soon(_kith_receiver, k, data / f"r{k}", author, messages)
        await until_stdin_closed()
        nursery.cancel_scope.cancel()


# -- the parent's side ---------------------------------------------------------------------


def receivers(
    kind: str, n: int, procs: int, tmp: Path, author: str, messages: int
) -> AbstractAsyncContextManager[Receivers]:
    """Receiver processes (``receiver_main``) for ``n`` nodes of ``kind`` (raw or kith)."""
    return receiver_processes(n, procs, tmp, "receivers", lambda first, count: [
        "node.bench.fanout_receivers", kind, str(first), str(count), str(tmp), author,
        str(messages)])


def main(argv: list[str]) -> int:
    if len(argv) != 6 or argv[0] not in ("raw", "kith"):
        sys.stderr.write("usage: python -m node.bench.fanout_receivers raw|kith FIRST COUNT "
                         "DATA AUTHOR MESSAGES\n")
        return 2
    kind, first, count, data, author, messages = argv
    trio.run(receiver_main, kind, int(first), int(count), Path(data), author, int(messages))
    return 0


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    sys.exit(main(sys.argv[1:]))
