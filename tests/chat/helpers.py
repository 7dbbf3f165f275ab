"""Views as the node sends them, for the chat client's pure tests."""

from __future__ import annotations

from typing import Any

ME = "a" * 56
BOB = "b" * 56
CAROL = "c" * 56
GROUP = "0123456789abcdef" * 2


def group_view(**fields: Any) -> dict[str, Any]:
    view: dict[str, Any] = {"id": GROUP, "name": "team", "role": "owner", "member": True,
                            "members": 3, "missing": {}}
    view.update(fields)
    return view


def member(peer: str, name: str, **fields: Any) -> dict[str, Any]:
    view: dict[str, Any] = {"peer_id": peer, "short_id": peer[:8], "name": name,
                            "role": "member", "me": peer == ME, "presence": "online"}
    view.update(fields)
    return view


def message(n: int, author: str = BOB, text: str | None = "hi", **fields: Any) -> dict[str, Any]:
    names = {ME: "alice", BOB: "bob", CAROL: "carol"}
    view: dict[str, Any] = {"id": f"{n:064x}", "author": author, "author_name": names[author],
                            "kind": "message", "text": text, "time": 0.0, "mine": author == ME,
                            "info": None, "state": "received" if author != ME else "delivered"}
    if author == ME:
        view["read_by"] = []
    view.update(fields)
    return view
