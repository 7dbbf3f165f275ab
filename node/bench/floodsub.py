"""py-libp2p floodsub in the fanout benchmark: the same measurement, someone else's stack.

    python -m node.bench.floodsub receiver FIRST COUNT PUBLISHER_MULTIADDR MESSAGES

Theory of operation
-------------------
``run_floodsub`` measures one (N, "libp2p") run the way ``node.bench.fanout``
measures Kith: the publisher is a py-libp2p host in this process; the N
subscribers are py-libp2p hosts in ``receiver_procs`` other processes (the
command above, several hosts per process). Every host is what
``libp2p.new_host`` builds by default (TCP on 127.0.0.1, Noise XX security,
yamux, an Ed25519 identity) with a ``Pubsub`` service on a ``FloodSub``
router (``/floodsub/1.0.0``) and the library's default strict signing: the
publisher signs every message once (Ed25519) and every subscriber verifies it.
The subscribers dial the publisher only, so the overlay is a star and the
publisher writes every message to each of the N subscribers itself, the same
client-side fanout Kith does.

Set-up, not timed: each subscriber subscribes to the topic, dials the
publisher and says ``up`` with its peer id; the publisher waits until every
subscriber has a pubsub stream and its subscription is known, then publishes
one warm-up message, and a subscriber says ``ready`` once it has it.

Timed: the publisher calls ``Pubsub.publish`` M times, yielding to trio after
each call as ``run_kith`` does. The wall clock runs from just before the first
publish until the last subscriber has taken message M off its subscription;
subscribers timestamp with ``time.monotonic()`` and report in a ``done`` line.
Floodsub has no acks, so sender CPU (``time.process_time()`` of this process)
runs from the first publish until the last ``done``.

py-libp2p silently drops messages beyond 32 in flight, at two places: the
publisher's per-peer outbound ``RpcQueue`` (``max_size`` defaults to
``libp2p.pubsub.rpc_queue.OutBoundQueueSize`` = 32; a full queue refuses the
RPC and floodsub logs it at debug level only) and each subscriber's
subscription channel (``libp2p.pubsub.pubsub.SUBSCRIPTION_CHANNEL_SIZE`` = 32;
full means a warning and the message is gone). A burst of M publishes fills
both, so ``raised_queues`` sets both to ``harness.queue_size(M)`` in the
publisher and in every receiver process: we measure the burst, not the drops.

libp2p is an optional extra (``compare``): nothing here imports it at module
import time, and ``available()`` says why it cannot be used.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import trio

from node.bench.harness import (
    PER_DELIVERY,
    SETUP_TIMEOUT,
    BenchError,
    Params,
    Receivers,
    RssSampler,
    Run,
    bench_error,
    emit,
    message_index,
    message_text,
    peak_rss_mb,
    percentile,
    queue_size,
    receiver_processes,
    until_stdin_closed,
)

MODE = "libp2p"
TOPIC = "kith-bench"
WARMUP = b"warmup"
LISTEN = "/ip4/127.0.0.1/tcp/0"
INSTALL_HINT = "install the compare extra: pip install -e '.[compare]'"


def available() -> str | None:
    """None if py-libp2p can be used here, else why not (one line)."""
    try:
        import libp2p.pubsub.floodsub  # noqa: F401
    except ImportError as exc:
        return f"py-libp2p is not available ({exc}); {INSTALL_HINT}"
    return None


@contextmanager
def raised_queues(size: int) -> Iterator[None]:
    """Raise py-libp2p's two 32-entry pubsub queues to ``size`` in this process.

    ``Pubsub._handle_new_peer`` builds each peer's outbound queue as
    ``RpcQueue()`` (looked up in ``libp2p.pubsub.pubsub`` at call time) and
    ``Pubsub.subscribe`` sizes its channel from ``SUBSCRIPTION_CHANNEL_SIZE``,
    so both are set for hosts and subscriptions made inside the block, and
    restored after it.
    """
    import libp2p.pubsub.pubsub as pubsub_module
    from libp2p.pubsub.rpc_queue import DefaultMaxMessageSize, RpcQueue

    # RpcQueue is Any when libp2p (an optional extra) is absent: CI type-checks without it.
    class LargeRpcQueue(RpcQueue):  # type: ignore[misc,unused-ignore]
        def __init__(
            self, max_size: int = size, max_message_size: int = DefaultMaxMessageSize
        ) -> None:
            super().__init__(max_size, max_message_size)

    saved = getattr(pubsub_module, "RpcQueue"), pubsub_module.SUBSCRIPTION_CHANNEL_SIZE  # noqa: B009
    setattr(pubsub_module, "RpcQueue", LargeRpcQueue)  # noqa: B010 (a class, for mypy)
    pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = size
    try:
        yield
    finally:
        setattr(pubsub_module, "RpcQueue", saved[0])  # noqa: B010
        pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = saved[1]


@asynccontextmanager
async def floodsub_host() -> AsyncIterator[Any]:
    """A running default py-libp2p host on 127.0.0.1 with a floodsub ``Pubsub``; yields it."""
    import multiaddr
    from libp2p import new_host
    from libp2p.pubsub.floodsub import PROTOCOL_ID, FloodSub
    from libp2p.pubsub.pubsub import Pubsub
    from libp2p.tools.anyio_service import background_trio_service

    listen = multiaddr.Multiaddr(LISTEN)
    host = new_host(listen_addrs=[listen])
    pubsub = Pubsub(host, FloodSub([PROTOCOL_ID]))  # strict_signing=True: the default
    async with host.run([listen]), background_trio_service(pubsub):
        await pubsub.wait_until_ready()
        yield pubsub


def frame_size(payload: int) -> int:
    """Bytes of one pubsub frame: an unsigned-varint length, then ``payload`` bytes."""
    return max(1, math.ceil(payload.bit_length() / 7)) + payload


class Meter:
    """Counts what the publisher's ``Pubsub`` signs and writes (wraps two of its attributes).

    Bytes are pubsub RPC frames (varint length + protobuf) written to the
    subscribers' streams: the counterpart of Kith's bytes queued for members.
    Yamux and Noise framing (12 + 18 bytes per frame) and TCP/IP are not counted.
    """

    def __init__(self, pubsub: Any) -> None:
        self.signatures = 0
        self.bytes = 0
        key = pubsub.sign_key
        write: Callable[[Any, Any], Awaitable[bool]] = pubsub.write_msg
        meter = self

        class CountingKey:
            def sign(self, data: bytes) -> bytes:
                meter.signatures += 1
                signature: bytes = key.sign(data)
                return signature

        async def counted_write(stream: Any, rpc: Any) -> bool:
            meter.bytes += frame_size(rpc.ByteSize())
            return await write(stream, rpc)

        if key is not None:  # None without strict signing: then nothing is signed
            pubsub.sign_key = CountingKey()
        pubsub.write_msg = counted_write  # the sending loop calls self.write_msg


@contextmanager
def counted_tcp_writes() -> Iterator[list[int]]:
    """Bytes every py-libp2p TCP connection of this process writes inside the block.

    Counts ``RawConnection.write`` (the bytes handed to TCP: Noise records holding
    yamux frames) for every host in the process, so use it where there is one.
    """
    from libp2p.network.connection.raw_connection import RawConnection

    total = [0]
    original = RawConnection.write

    async def write(self: Any, data: bytes) -> None:
        total[0] += len(data)
        await original(self, data)

    setattr(RawConnection, "write", write)  # noqa: B010
    try:
        yield total
    finally:
        setattr(RawConnection, "write", original)  # noqa: B010


# -- receiver processes ---------------------------------------------------------------------


async def _receiver(k: int, publisher: str, messages: int) -> None:
    import multiaddr
    from libp2p.peer.peerinfo import info_from_p2p_addr

    async with floodsub_host() as pubsub:
        subscription = await pubsub.subscribe(TOPIC)
        await pubsub.host.connect(info_from_p2p_addr(multiaddr.Multiaddr(publisher)))
        emit(up=k, peer=pubsub.host.get_id().to_base58())
        arrivals = [math.nan] * messages
        left = messages
        while left:
            message = await subscription.get()
            now = time.monotonic()
            if message.data == WARMUP:
                emit(ready=k)
                continue
            index = message_index(message.data.decode("ascii"))
            left -= math.isnan(arrivals[index])
            arrivals[index] = now
        emit(done=k, arrivals=[round(t, 6) for t in arrivals], rss_mb=peak_rss_mb())
        await trio.sleep_forever()  # keep the host up until told to stop


async def receiver_main(first: int, count: int, publisher: str, messages: int) -> None:
    """Host subscribers ``first .. first+count-1`` until stdin closes."""
    with raised_queues(queue_size(messages)):
        async with trio.open_nursery() as nursery:
            for k in range(first, first + count):
                nursery.start_soon(_receiver, k, publisher, messages)
            await until_stdin_closed()
            nursery.cancel_scope.cancel()


def receivers(
    n: int, procs: int, tmp: Path, publisher: str, messages: int
) -> AbstractAsyncContextManager[Receivers]:
    """Receiver processes (``receiver_main``) for ``n`` subscribers."""
    return receiver_processes(n, procs, tmp, "libp2p-receivers", lambda first, count: [
        "node.bench.floodsub", "receiver", str(first), str(count), publisher, str(messages)])


@contextmanager
def plain_bench_errors() -> Iterator[None]:
    """Re-raise a ``BenchError`` that crossed trio nurseries as itself, not in a group."""
    try:
        yield
    except BaseExceptionGroup as group:
        error = bench_error(group)
        if error is None or group.split(BenchError)[1] is not None:
            raise
        raise error from None


# -- one run --------------------------------------------------------------------------------


@contextmanager
def _restored_level(logger: logging.Logger) -> Iterator[logging.Logger]:
    level = logger.level
    try:
        yield logger
    finally:
        logger.setLevel(level)


def _run(n: int, repeat: int, messages: int, t0: float, cpu: float, sent: list[float],
         done: list[dict[str, Any]], meter: Meter, wire: int, peak_rss: float) -> Run:
    arrivals = [line["arrivals"] for line in done]
    seconds = max(max(times) for times in arrivals) - t0
    latencies = [t - sent[i] for times in arrivals for i, t in enumerate(times)]
    values: dict[str, Any] = {
        "members": n, "mode": MODE, "repeat": repeat, "seconds": seconds,
        "messages_per_s": messages / seconds, "cpu_ms_per_message": 1000 * cpu / messages,
        # No end-to-end encryption in floodsub; the per-link Noise encryption (one
        # per subscriber per message) is not counted, as Kith's channel is not.
        "encryptions_per_message": 0.0,
        "signatures_per_message": meter.signatures / messages,
        "bytes_per_message": meter.bytes / messages,
        "latency_p50_ms": 1000 * percentile(latencies, 0.5),
        "latency_p95_ms": 1000 * percentile(latencies, 0.95),
        "latency_p99_ms": 1000 * percentile(latencies, 0.99),
        "wire_bytes_per_message": wire / messages,
        "deliveries_per_s": n * messages / seconds,
        "peak_rss_mb": peak_rss,
        "receiver_rss_mb": max((line.get("rss_mb", math.nan) for line in done),
                               default=math.nan),
    }
    return Run(**{f.name: values.get(f.name, math.nan) for f in fields(Run)})


async def run_floodsub(n: int, repeat: int, params: Params, tmp: Path) -> Run:
    """One (N, "libp2p") run: a floodsub publisher here, ``n`` subscribers in other processes.

    Raises ``BenchError`` (never wrapped in an exception group) if it cannot finish.
    """
    reason = available()
    if reason is not None:
        raise BenchError(reason)
    with plain_bench_errors():
        return await _run_floodsub(n, repeat, params, tmp)


async def _run_floodsub(n: int, repeat: int, params: Params, tmp: Path) -> Run:
    from libp2p.peer.id import ID

    m = params.messages
    payloads = [message_text(i, params.size).encode() for i in range(m)]
    sent = [0.0] * m
    with raised_queues(queue_size(m)), _restored_level(logging.getLogger("libp2p")) as log:
        async with floodsub_host() as pubsub:
            address = str(pubsub.host.get_addrs()[0])
            async with receivers(n, params.receiver_procs, tmp, address, m) as rx:
                with rx.within(SETUP_TIMEOUT):
                    peers = [ID.from_base58(line["peer"]) for line in await rx.expect("up", n)]
                    for peer in peers:
                        await pubsub.wait_for_peer(peer, timeout=SETUP_TIMEOUT)
                        await pubsub.wait_for_subscription(peer, TOPIC, timeout=SETUP_TIMEOUT)
                    await pubsub.publish(TOPIC, WARMUP)
                    await rx.expect("ready", n)

                meter = Meter(pubsub)
                sampler = RssSampler()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(sampler.run)
                    with rx.within(SETUP_TIMEOUT + PER_DELIVERY * n * m), \
                            counted_tcp_writes() as wire:
                        cpu0, t0 = time.process_time(), time.monotonic()
                        for i in range(m):
                            sent[i] = time.monotonic()
                            await pubsub.publish(TOPIC, payloads[i])
                            await trio.lowlevel.checkpoint()
                        done = await rx.expect("done", n)
                        cpu = time.process_time() - cpu0
                    nursery.cancel_scope.cancel()
                # As the receivers leave, the swarm redials them and logs an error for each.
                log.setLevel(logging.CRITICAL)
    return _run(n, repeat, m, t0, cpu, sent, done, meter, wire[0], sampler.peak)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 5 or argv[0] != "receiver":
        print("usage: python -m node.bench.floodsub receiver FIRST COUNT PUBLISHER_MULTIADDR "
              "MESSAGES", file=sys.stderr)
        return 2
    reason = available()
    if reason is not None:
        print(f"bench floodsub: {reason}", file=sys.stderr)
        return 1
    first, count, publisher, messages = argv[1:]
    trio.run(receiver_main, int(first), int(count), publisher, int(messages))
    return 0


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    sys.exit(main())
