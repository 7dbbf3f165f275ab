"""Warnings a peer can repeat are one line per kind per interval (issue 12, item 4)."""

from __future__ import annotations

from node.logs import line_key as _warn_key


def test_ids_and_numbers_do_not_make_a_line_new_but_peers_do() -> None:
    a = "group lab: rejected event 0123456789ab (and 4 more) from jnh3ovo7: bad signature"
    b = "group lab: rejected event fedcba987654 (and 99 more) from jnh3ovo7: bad signature"
    c = "group lab: rejected event fedcba987654 from zq4kq2pa: bad signature"
    assert _warn_key(a) == _warn_key(b)
    assert _warn_key(a) != _warn_key(c)
    assert _warn_key("group lab: dropped 3 event(s) from jnh3ovo7: too many") == _warn_key(
        "group lab: dropped 250 event(s) from jnh3ovo7: too many")
