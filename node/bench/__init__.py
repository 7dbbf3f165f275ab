"""Measurement harnesses (``scripts/bench-fanout``: ``node.bench.fanout``)."""
