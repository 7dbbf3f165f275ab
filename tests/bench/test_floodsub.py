"""The py-libp2p floodsub comparison: a tiny real run, and the queues it has to raise."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from node.bench import floodsub
from node.bench.harness import BenchError, Params, queue_size

LIBP2P_DEFAULT_QUEUE = 32
BURST = 100
SIZE = 64
#: Yamux header (12) + Noise length prefix (2) + Poly1305 tag (16) around each pubsub frame.
LINK_OVERHEAD = 30


def params(tmp: Path, messages: int) -> Params:
    return Params(members=(2,), modes=("libp2p",), messages=messages, size=SIZE, repeat=1,
                  receiver_procs=1, out=tmp / "out", tmp=tmp)


def test_frame_size_is_the_varint_length_plus_the_payload() -> None:
    assert floodsub.frame_size(0) == 1
    assert floodsub.frame_size(127) == 1 + 127
    assert floodsub.frame_size(128) == 2 + 128
    assert floodsub.frame_size(16384) == 3 + 16384


def test_without_libp2p_every_entry_point_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [name for name in sys.modules if name.split(".")[0] == "libp2p"] + ["libp2p"]:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import libp2p...` fail
    reason = floodsub.available()
    assert reason is not None and floodsub.INSTALL_HINT in reason

    with pytest.raises(BenchError, match=r"pip install -e '\.\[compare\]'"):
        trio.run(floodsub.run_floodsub, 2, 0, params(tmp_path, 3), tmp_path)

    assert floodsub.main(["receiver", "0", "1", "/ip4/127.0.0.1/tcp/1", "3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and floodsub.INSTALL_HINT in err


def test_receiver_entry_point_wants_its_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert floodsub.main(["receiver", "0", "1"]) == 2
    assert "usage" in capsys.readouterr().err


# -- with py-libp2p (the optional `compare` extra) -------------------------------------------


async def test_tiny_run_delivers_every_message_with_sane_numbers(tmp_path: Path) -> None:
    pytest.importorskip("libp2p")
    run = await floodsub.run_floodsub(2, 0, params(tmp_path, 3), tmp_path)

    assert (run.members, run.mode, run.repeat) == (2, "libp2p", 0)
    assert run.seconds > 0 and run.messages_per_s > 0 and run.cpu_ms_per_message > 0
    assert run.deliveries_per_s == pytest.approx(2 * run.messages_per_s)
    assert 0 <= run.latency_p50_ms <= run.latency_p95_ms <= run.latency_p99_ms
    # Strict signing: the publisher signs each message once; no end-to-end encryption.
    assert run.signatures_per_message == 1
    assert run.encryptions_per_message == 0
    # Each subscriber gets a frame with the payload, the signature, the key and the
    # publisher's signed peer record; the link adds yamux and Noise framing around it.
    assert 2 * SIZE < run.bytes_per_message < 2 * (SIZE + 1024)
    assert run.wire_bytes_per_message >= run.bytes_per_message + 2 * LINK_OVERHEAD
    assert run.peak_rss_mb > 0 and run.receiver_rss_mb > 0
    assert not any(math.isnan(getattr(run, name)) for name in run.__slots__
                   if isinstance(getattr(run, name), float))


async def test_a_burst_beyond_the_default_queues_arrives_whole(tmp_path: Path) -> None:
    pytest.importorskip("libp2p")
    # run_floodsub fails (a timeout) unless every receiver has every one of the messages.
    run = await floodsub.run_floodsub(2, 0, params(tmp_path, BURST), tmp_path)
    assert run.messages_per_s > 0 and run.signatures_per_message == 1


@asynccontextmanager
async def publisher_and_subscriber() -> AsyncIterator[tuple[Any, Any, Any]]:
    """Two floodsub hosts in this process, the subscriber dialled in and known to the other."""
    from libp2p.peer.peerinfo import info_from_p2p_addr

    async with floodsub.floodsub_host() as publisher, floodsub.floodsub_host() as subscriber:
        subscription = await subscriber.subscribe(floodsub.TOPIC)
        await subscriber.host.connect(info_from_p2p_addr(publisher.host.get_addrs()[0]))
        peer = subscriber.host.get_id()
        with trio.fail_after(10):
            await publisher.wait_for_peer(peer)
            await publisher.wait_for_subscription(peer, floodsub.TOPIC)
        yield publisher, subscription, peer
        logging.getLogger("libp2p").setLevel(logging.CRITICAL)  # teardown redials


@pytest.fixture
def quiet_teardown() -> Iterator[None]:
    logger = logging.getLogger("libp2p")
    level = logger.level
    yield
    logger.setLevel(level)


async def burst(publisher: Any) -> None:
    """Publish BURST messages without yielding to trio (``publish`` itself never does)."""
    for i in range(BURST):
        await publisher.publish(floodsub.TOPIC, b"%d" % i)


async def test_libp2p_defaults_drop_a_burst_beyond_32(
    caplog: pytest.LogCaptureFixture, quiet_teardown: None
) -> None:
    pytest.importorskip("libp2p")
    caplog.set_level(logging.DEBUG, logger="libp2p.pubsub.floodsub")
    async with publisher_and_subscriber() as (publisher, subscription, peer):
        stats = subscription.receive_channel.statistics()
        assert stats.max_buffer_size == LIBP2P_DEFAULT_QUEUE
        await burst(publisher)
        assert len(publisher.peer_queues[peer]) == LIBP2P_DEFAULT_QUEUE
        assert "queue full" in caplog.text  # the rest was refused, and only logged at debug


async def test_raised_queues_hold_the_whole_burst(
    caplog: pytest.LogCaptureFixture, quiet_teardown: None
) -> None:
    pytest.importorskip("libp2p")
    caplog.set_level(logging.DEBUG, logger="libp2p.pubsub.floodsub")
    with floodsub.raised_queues(queue_size(BURST)):
        async with publisher_and_subscriber() as (publisher, subscription, peer):
            stats = subscription.receive_channel.statistics()
            assert stats.max_buffer_size == queue_size(BURST)
            await burst(publisher)
            assert len(publisher.peer_queues[peer]) == BURST
            got = set()
            with trio.fail_after(10):
                while len(got) < BURST:
                    got.add(int((await subscription.get()).data))
            assert got == set(range(BURST))
    assert "queue full" not in caplog.text

    import libp2p.pubsub.pubsub as pubsub_module
    from libp2p.pubsub.rpc_queue import RpcQueue

    assert pubsub_module.SUBSCRIPTION_CHANNEL_SIZE == LIBP2P_DEFAULT_QUEUE  # restored
    assert pubsub_module.RpcQueue is RpcQueue
