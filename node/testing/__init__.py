"""Fakes that the simulator and the tests share (``groups.Replica``).

The lab the system tests run in (process runner, network namespaces, avahi) is test
code and lives in ``tests/lab``.
"""
