"""``kith bench KIND ...``: the research harness (docs/research.md).

Each benchmark is a module of ``node.bench`` with ``main(argv, prog) -> int``;
this only picks the module, so ``kith bench KIND --help`` is that module's help.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

BENCHES = {
    "fanout": ("node.bench.fanout",
               "real nodes on loopback: msg/s, sender CPU, bytes, latency against N and mode"),
    "rekey": ("node.bench.rekey",
              "real nodes: what removing a member costs until everyone can send again"),
    "catchup": ("node.bench.catchup",
                "two real nodes: events/s a member that was away catches up, store to store"),
    "scale": ("node.bench.scale",
              "N real nodes in several processes: convergence, idle CPU and RSS of a group"),
    "hostile": ("node.bench.hostile",
                "one real node attacked by one hostile peer: the RSS each attack adds"),
    "sim": ("node.bench.sim",
            "discrete-event simulation of the real cores, up to 1,000 members"),
}

USAGE = (
    f"usage: kith bench {{{','.join(BENCHES)}}} [options]   (kith bench KIND --help for each)\n\n"
    + "".join(f"  {name:8} {text}\n" for name, (_, text) in BENCHES.items())
)


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0 if argv else 2
    kind, rest = argv[0], argv[1:]
    if kind not in BENCHES:
        sys.stderr.write(f"kith bench: unknown benchmark {kind!r}\n{USAGE}")
        return 2
    module = importlib.import_module(BENCHES[kind][0])
    code: int = module.main(rest, prog=f"kith bench {kind}")
    return code
