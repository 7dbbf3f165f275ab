"""Kith nodes inside a ``NetnsLab``: run them, bound a scenario step, cut the lab in two.

Theory of operation: ``lab_node`` is ``procs.kith_process`` with the host's ``ip netns
exec`` as its prefix (which execs the command, so the process held *is* the node:
SIGKILL and SIGSTOP reach it directly), named after the node, and with no wait bound
of its own (``bounded=False``): every wait of a lab test sits under a ``deadline``
the test holds, which on expiry fails with every node's log. Everything else talks to
a node from the root namespace, through the control socket in its data directory
(``procs.kith_cli``, ``control``).

``partitioned`` cuts the lab in halves with blackhole routes inside the namespaces:
packets between the halves vanish silently, as on a real broken link, so open
channels end only by the nodes' own liveness checks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path

import trio

from tests.lab.netns import NetnsLab
from tests.lab.procs import Proc, kith_process

#: A lab node that dials fixed peers listens on this port of its own address (fixed,
#: so a restarted node is found again where its peers keep redialling it).
PORT = 7373


def run_args(
    lab: NetnsLab, index: int, name: str, dial: Sequence[int] = (), port: int = PORT
) -> list[str]:
    """``run`` arguments: listen on host ``index``'s lab address, dial hosts ``dial``.

    mDNS is off: peers come from ``--peer`` only, which keeps who dials whom (and
    so the connection log) deterministic.
    """
    args = ["run", "--listen", f"{lab.host(index).address}:{port}", "--no-mdns",
            "--name", name]
    for other in dial:
        args += ["--peer", f"{lab.host(other).address}:{port}"]
    return args


def lab_node(
    lab: NetnsLab, index: int, name: str, data_dir: Path, args: Sequence[str]
) -> AbstractAsyncContextManager[Proc]:
    """Run ``kith --data DATA_DIR ARGS...`` inside host ``index`` for the block."""
    return kith_process(data_dir, *args, prefix=lab.exec_argv(index, []), name=name,
                        bounded=False)


def mdns_node(lab: NetnsLab, index: int, data_dir: Path) -> AbstractAsyncContextManager[Proc]:
    """``kith run`` in host ``index``, named ``host<index>``, found over mDNS only: it
    listens on its lab address (any port), has no ``--peer`` and does mDNS on the lab
    interface alone."""
    host = lab.host(index)
    name = f"host{index}"
    args = ["run", "--listen", f"{host.address}:0", "--mdns-interface", host.iface,
            "--name", name]
    return lab_node(lab, index, name, data_dir, args)


@contextmanager
def deadline(
    seconds: float, what: str, nodes: Sequence[Proc], *, since: float | None = None
) -> Iterator[None]:
    """Fail unless the block ends within ``seconds`` (of trio time ``since``, else now).

    On expiry an ``AssertionError`` with every node's log.
    """
    start = trio.current_time() if since is None else since
    try:
        with trio.fail_at(start + seconds):
            yield
    except trio.TooSlowError:
        logs = "\n".join(f"--- {node.name}:\n{node.log}" for node in nodes)
        raise AssertionError(f"{what}: not within {seconds:g} s\n{logs}") from None


# -- partitions -----------------------------------------------------------------------


async def _ip(netns: str, *args: str) -> None:
    await trio.run_process(["ip", "-n", netns, *args], capture_stdout=True,
                           capture_stderr=True, check=True)


@asynccontextmanager
async def partitioned(lab: NetnsLab, *sides: Sequence[int]) -> AsyncIterator[None]:
    """Hosts in different ``sides`` cannot reach each other during the block.

    Each host gets a blackhole route for every address on another side: packets
    vanish without an error on the wire, as when a link breaks. New connections
    fail at once (the route refuses them locally); open ones just go quiet. The
    routes go when the block ends (the lab's removal would drop them too).
    """
    routes = [
        (lab.host(i).netns, f"{lab.host(j).address}/32")
        for side in sides for i in side
        for other in sides if other is not side for j in other
    ]
    added: list[tuple[str, str]] = []
    try:
        for netns, prefix in routes:
            await _ip(netns, "route", "add", "blackhole", prefix)
            added.append((netns, prefix))
        yield
    finally:
        with trio.CancelScope(shield=True):
            for netns, prefix in added:
                await _ip(netns, "route", "del", "blackhole", prefix)
