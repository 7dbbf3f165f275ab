"""The cost of one removal in the simulator, to group sizes real nodes cannot reach.

    python -m node.bench.rekey_sim [--members 20,50,100,200,500] [--authors 10] [--seed 1]

Theory of operation
-------------------
``kith bench rekey`` measures a removal with real nodes up to N = 32. This runs
the same removal through the simulator (``node.sim``: the real member core,
Sender Keys and wire encoding, a simulated full mesh): a group of N + 1
members whose first K (``--authors``) send; every author sends one warm-up
message; then the founder removes a member who is not an author, and once the
removal has spread every author sends one message, each preceded by its
rotation (a new SENDER_KEY, lazily). Measured: the bytes of the SENDER_KEY
fanout (``rekey`` traffic: the events and the sealed copies beside them, as
queued on the links; acknowledgements are not counted), and the number of
rotations. A rotation is the same operation whoever makes it, so one removal
after which every one of the N remaining members speaks again costs N times
the bytes of one rotation: ``removal_bytes`` (extrapolated from the K
measured rotations, exact up to the acknowledgements and the clock deltas).
Prints one JSON object per N.
"""

from __future__ import annotations

import argparse
import json
import sys

from node.group.bodies import Remove
from node.sim.runner import Simulation
from node.sim.scenario import Scenario


def measure(n: int, authors: int, seed: int) -> dict[str, float]:
    sim = Simulation(Scenario(members=n, mode="sender-keys", messages=authors,
                              authors=authors, seed=seed))
    sim.run()  # set-up and one warm-up message per author
    owner = sim.members[sim.authors[0]]
    victim = max(p for p in owner.core.state.members if p not in sim.authors)
    owner.author(Remove(victim))
    sim._flush(owner)
    sim.scheduler.run()
    before_bytes = sim.net.bytes_of(["rekey"])
    before_events = sum(m.stats.rekey_events for m in sim.members.values())
    for i in range(authors):
        sim._send(authors + i)
    sim.scheduler.run()
    rotations = sum(m.stats.rekey_events for m in sim.members.values()) - before_events
    rekey = sim.net.bytes_of(["rekey"]) - before_bytes
    per = rekey / rotations if rotations else float("nan")
    return {"members": n, "authors": authors, "rotations": rotations, "rekey_bytes": rekey,
            "bytes_per_rotation": round(per), "removal_bytes": round(per * n)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m node.bench.rekey_sim", description=__doc__)
    p.add_argument("--members", default="20,50,100,200,500")
    p.add_argument("--authors", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    for n in (int(x) for x in args.members.split(",")):
        print(json.dumps(measure(n, args.authors, args.seed)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
