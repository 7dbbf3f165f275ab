"""The lab the system tests run in; test code, never shipped with ``node``.

* ``procs``: the one process runner (``running``, ``kith_process``) and ``kith_cli``.
* ``netns``: simulated LANs of network namespaces (``scripts/netns-lab``).
* ``nodes``: kith nodes inside a lab host, scenario deadlines, partitions.
* ``avahi``: a private avahi-daemon in a lab host, to ask Linux's own mDNS stack.
* ``control``: a node's control socket spoken directly; a group log followed live.
* ``datadir``: a node's stored events, and inotify on its data directory.
"""
