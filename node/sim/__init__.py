"""Discrete-event simulation of Kith groups: the real cores over a simulated network.

``clock`` (simulated time), ``network`` (uplinks, latency, loss, partitions),
``wire`` (payloads and their real sizes), ``member`` (one member: the real
group core and crypto, glued as a node glues them), ``scenario`` (a run's
parameters), ``runner`` (one run) and ``metrics`` (what it measured).
``kith bench sim`` (``node.bench.sim``) is the command line.
"""
