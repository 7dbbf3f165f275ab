"""The browser client's WebSocket: each op, the pushes, and what a bad page gets.

A real node (two for the pushes) behind its real control socket; the app in
Starlette's TestClient (see tests/web/helpers.py). Nothing sleeps: every wait is for
a message, under a timeout.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

from node.api.python import open_node
from node.web import protocol
from node.web.sockets import Outbox
from tests.web.helpers import (
    BASE,
    ORIGIN,
    WS,
    call,
    first_event,
    receive,
    request,
    tmp,
    two_nodes,
    until,
    web_for,
)

__all__ = ["tmp"]


def ok(answer: dict[str, Any]) -> Any:
    assert answer["ok"], answer
    return answer["result"]


async def test_hello_groups_peers_then_each_op(tmp: Path) -> None:
    async with open_node(tmp / "alice", name="alice") as alice, web_for(alice) as web:
        await web.login()
        ws = await web.connect()
        first = [await receive(ws), await receive(ws)]
        assert [m["push"] for m in first] == ["groups", "peers"]
        assert ok(await request(ws, 1, "id"))["peer_id"] == alice.peer_id
        group = ok(await request(ws, 2, "group.create", name="lab"))["id"]
        pushed = await until(ws, lambda m: m.get("push") == "groups" and m["groups"],
                             "groups push with the new group")
        assert [g["name"] for g in pushed["groups"]] == ["lab"]
        assert [g["name"] for g in ok(await request(ws, 3, "group.list"))] == ["lab"]
        watched = ok(await request(ws, 4, "watch", group="lab"))
        assert [e["kind"] for e in watched] == ["create"]
        sent = ok(await request(ws, 5, "send", group=group, text="hello <b>there</b>"))
        log = await until(ws, lambda m: m.get("push") == "log" and len(m["log"]) == 2,
                          "log push with the message")
        assert log["group"] == group and log["log"][1]["text"] == "hello <b>there</b>"
        assert [m["name"] for m in log["members"]] == ["alice"]
        event = sent["id"]
        ok(await request(ws, 6, "send", group=group, text="a reply", reply_to=event))
        ok(await request(ws, 7, "edit", group=group, event=event, text="hello again"))
        ok(await request(ws, 8, "react", group=group, event=event, emoji="👍"))
        ok(await request(ws, 9, "pin", group=group, event=event))
        folded = await until(ws, lambda m: m.get("push") == "log" and any(
            e.get("text") == "hello again" and e.get("pinned") for e in m["log"]),
            "log push with the edit and the pin")
        message = next(e for e in folded["log"] if e["id"] == event)
        assert message["reactions"], message
        assert any(e.get("reply_to") for e in folded["log"])
        ok(await request(ws, 10, "delete", group=group, event=event))
        assert [m["role"] for m in ok(await request(ws, 11, "group.members", group=group))] \
            == ["owner"]
        assert isinstance(ok(await request(ws, 12, "peers")), list)
        ok(await request(ws, 13, "typing", group=group))
        texts = [e.get("text") for e in ok(await request(ws, 14, "log", group=group))]
        assert "a reply" in texts and "hello again" not in texts  # deleted
        assert ok(await request(ws, 15, "watch", group=None)) is None
        await web.close(ws)


async def test_verified_marks_are_kept_in_the_data_directory(tmp: Path) -> None:
    async with open_node(tmp / "alice", name="alice") as alice, web_for(alice) as web:
        await web.login()
        ws = await web.connect()
        peer = "b" * 52 + "aaaa"
        assert ok(await request(ws, 1, "verified")) == []
        bad = await request(ws, 2, "verify", peer="not a peer", verified=True)
        assert not bad["ok"]
        assert ok(await request(ws, 3, "verify", peer=alice.peer_id, verified=True)) is None
        assert ok(await request(ws, 4, "verified")) == [alice.peer_id]
        path = alice.app.data_dir.path / "web-verified.json"
        assert path.stat().st_mode & 0o777 == 0o600
        ok(await request(ws, 5, "verify", peer=alice.peer_id, verified=False))
        assert ok(await request(ws, 6, "verified")) == []
        assert peer not in path.read_text()
        await web.close(ws)


async def test_bad_requests_get_an_error_and_the_socket_stays_open(tmp: Path) -> None:
    async with open_node(tmp / "alice", name="alice") as alice, web_for(alice) as web:
        await web.login()
        ws = await web.connect()
        group = alice.create_group("lab")
        for text in ("{not json", "[1, 2]", '"op"', '{"id": 5}'):
            await call(partial(ws.send_text, text))
            answer = await until(ws, lambda m: "push" not in m, f"answer to {text}")
            assert answer["ok"] is False and answer["error"], text
            assert answer["id"] == (5 if text == '{"id": 5}' else None)
        unknown = await request(ws, 1, "no.such.op")
        assert not unknown["ok"] and "unknown op" in unknown["error"]
        follow = await request(ws, 2, "log", group=group, follow=True)
        assert not follow["ok"] and "follow" in follow["error"]
        for op in ("file.send", "file.save"):
            refused = await request(ws, 3, op, group=group, file="/etc/passwd", dir="/tmp")
            assert not refused["ok"] and "not available" in refused["error"]
        nosuch = await request(ws, 4, "send", group="nosuch", text="x")
        assert not nosuch["ok"] and "nosuch" in nosuch["error"]
        assert ok(await request(ws, 5, "id"))["name"] == "alice"  # still open
        assert [e["kind"] for e in alice.log(group)] == ["create"]
        await web.close(ws)


async def test_a_message_over_1_mib_closes_the_socket(tmp: Path) -> None:
    async with open_node(tmp / "alice", name="alice") as alice, web_for(alice) as web:
        await web.login()
        ws = await web.connect()
        group = alice.create_group("lab")
        big = '{"id": 1, "op": "send", "group": "lab", "text": "' + "x" * protocol.MAX_MESSAGE
        await call(lambda: ws.send_text(big + '"}'))
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                await receive(ws)
        assert closed.value.code == 1009
        assert [e["kind"] for e in alice.log(group)] == ["create"]
        await web.close(ws)


async def test_socket_needs_cookie_and_origin(tmp: Path) -> None:
    async with open_node(tmp / "alice", name="alice") as alice, web_for(alice) as web:
        with pytest.raises(WebSocketDisconnect):  # no cookie yet
            await call(lambda: web.client.websocket_connect(WS, headers=ORIGIN).__enter__())
        await web.login()

        def open_ws(headers: dict[str, str]) -> Any:
            return web.client.websocket_connect(WS, headers=headers).__enter__()

        for headers in ({}, {"Origin": "http://evil.example"}, {"Origin": BASE + "1"},
                        {**ORIGIN, "Host": "evil.example:8707"}):
            with pytest.raises(WebSocketDisconnect) as refused:
                await call(partial(open_ws, headers))
            assert refused.value.code == 1008, headers


async def test_pushes_from_another_node(tmp: Path) -> None:
    async with two_nodes(tmp) as (alice, bob), web_for(alice) as web:
        group = alice.create_group("lab")
        alice.add(group, bob.peer_id)
        await first_event(bob, group, lambda e: e["kind"] == "create", "the group at bob")
        await web.login()
        ws = await web.connect()
        ok(await request(ws, 1, "watch", group=group))
        bob.typing(group)
        typing = await until(ws, lambda m: m.get("push") == "typing" and m["names"],
                             "typing push")
        assert typing == {"push": "typing", "group": group, "names": ["bob"]}
        bob.send(group, "hi from bob @alice")
        seen: dict[str, dict[str, Any]] = {}

        def record(m: dict[str, Any]) -> bool:
            if m.get("push") == "event" and m["event"].get("text") == "hi from bob @alice":
                seen["event"] = m
            if m.get("push") == "log" and any(e.get("text") == "hi from bob @alice"
                                              for e in m["log"]):
                seen["log"] = m
            if m.get("push") == "typing" and m["names"] == []:
                seen["typing"] = m  # bob's message is here: he is no longer typing
            return len(seen) == 3

        await until(ws, record, "event, log and typing pushes")
        assert seen["event"]["group"] == group
        assert seen["event"]["event"]["author_name"] == "bob"
        assert seen["log"]["group"] == group
        assert {m["name"] for m in seen["log"]["members"]} == {"alice", "bob"}
        await web.close(ws)


async def test_node_down_and_back_in_attach_mode(tmp: Path) -> None:
    node = open_node(tmp / "alice", name="alice")
    alice = await node.__aenter__()
    try:
        async with web_for(alice) as web:
            await web.login()
            ws = await web.connect()
            await node.__aexit__(None, None, None)
            await until(ws, lambda m: m == {"push": "node", "state": "down"}, "node down")
            node = open_node(tmp / "alice", name="alice")
            await node.__aenter__()
            await until(ws, lambda m: m == {"push": "node", "state": "up"}, "node up")
            hello = await until(ws, lambda m: m.get("push") == "hello", "hello again")
            assert hello["me"]["peer_id"] == alice.peer_id
            assert ok(await request(ws, 1, "id"))["name"] == "alice"
            await web.close(ws)
    finally:
        await node.__aexit__(None, None, None)


def test_outbox_keeps_the_newest_state_and_bounded_events() -> None:
    box = Outbox()
    for n in range(1000):
        box.put(protocol.push("groups", groups=[n]))
        box.put(protocol.push("log", group="g", log=[n], members=[]))
        box.put(protocol.push("event", group="g", event={"n": n}))
        box.put(protocol.push("transfer", group="g", upload="u", event=None, done=n))
    assert len(box) == 3 + protocol.MAX_EVENTS
    assert box.dropped == 1000 - protocol.MAX_EVENTS
    box.put(protocol.answer(7, None))
    items = [box._items.popitem(last=False)[1] for _ in range(len(box))]
    events = [m["event"]["n"] for m in items if m.get("push") == "event"]
    assert events == list(range(1000 - protocol.MAX_EVENTS, 1000))
    assert [m["groups"] for m in items if m.get("push") == "groups"] == [[999]]
    assert [m["done"] for m in items if m.get("push") == "transfer"] == [999]
    assert items[-1] == protocol.answer(7, None)


async def test_transfer_pushes_for_a_file_up_and_down(tmp: Path) -> None:
    async with open_node(tmp / "alice", name="alice") as alice, web_for(alice) as web:
        await web.login()
        ws = await web.connect()
        group = alice.create_group("lab")
        data = b"kith" * (300 * 1024)
        posted = await call(lambda: web.client.post(f"/api/upload?group={group}&name=big.bin",
                                                    content=data, headers=ORIGIN))
        upload = posted.json()["result"]["upload"]
        up = await until(ws, lambda m: m.get("push") == "transfer" and m["state"] == "sent",
                         "transfer push of the sent file")
        assert up["direction"] == "up" and up["upload"] == upload and up["group"] == group
        assert up["done"] == up["total"] == len(data) and up["name"] == "big.bin"
        staging = alice.app.data_dir.path / "web-tmp"
        assert list(staging.iterdir()) == []  # the staged copy is gone once the node has it
        event = up["event"]
        got = await call(lambda: web.client.get(f"/api/file?group={group}&event={event}"))
        assert got.content == data
        down = await until(ws, lambda m: m.get("push") == "transfer"
                           and m["direction"] == "down", "transfer push of the saved file")
        assert down["event"] == event and down["done"] == down["total"] == len(data)
        assert list(staging.iterdir()) == []  # and so is the saved copy, once downloaded
        await web.close(ws)


async def test_a_hidden_page_marks_nothing_read(tmp: Path) -> None:
    async with two_nodes(tmp) as (alice, bob), web_for(alice) as web:
        group = alice.create_group("lab")
        alice.add(group, bob.peer_id)
        await first_event(bob, group, lambda e: e["kind"] == "create", "the group at bob")
        await web.login()
        ws = await web.connect()
        ok(await request(ws, 1, "watch", group=group, read=False))
        bob.send(group, "are you there?")
        await until(ws, lambda m: m.get("push") == "log" and any(
            e.get("text") == "are you there?" for e in m["log"]), "log push")
        [lab] = alice.groups()
        assert lab["unread"] == 1  # shown in a hidden page: still unread
        bad = await request(ws, 2, "watch", group=group, read="yes")
        assert not bad["ok"]
        ok(await request(ws, 3, "watch", group=group))
        [lab] = alice.groups()
        assert lab["unread"] == 0
        await web.close(ws)


async def test_managing_a_group_from_the_page(tmp: Path) -> None:
    async with two_nodes(tmp) as (alice, bob), web_for(alice) as web:
        await web.login()
        ws = await web.connect()
        group = ok(await request(ws, 1, "group.create", name="lab"))["id"]
        ok(await request(ws, 2, "group.add", group=group, peer="bob"))  # by name, as found
        await first_event(bob, group, lambda e: e["kind"] == "create", "the group at bob")
        ok(await request(ws, 3, "group.role", group=group, peer="bob", role="admin"))
        roles = {m["name"]: m["role"] for m in ok(await request(ws, 4, "group.members",
                                                                group=group))}
        assert roles == {"alice": "owner", "bob": "admin"}
        ok(await request(ws, 5, "group.mute", group=group, peer="bob", minutes=5))
        ok(await request(ws, 6, "group.mute", group=group, peer="bob", unmute=True))
        muted = ok(await request(ws, 7, "group.notify", group=group, muted=True))
        assert muted["muted"] is True
        ok(await request(ws, 8, "group.remove", group=group, peer="bob"))
        assert [m["name"] for m in ok(await request(ws, 9, "group.members", group=group))] \
            == ["alice"]
        discover = await request(ws, 10, "group.discover", timeout=0.1)
        assert not discover["ok"] and "mDNS" in discover["error"]  # the node's own answer
        open_group = ok(await request(ws, 11, "group.create", name="hall", mode="open",
                                          policy="blacklist"))["id"]
        ok(await request(ws, 12, "group.ban", group=open_group, peer="bob"))
        ok(await request(ws, 13, "group.unban", group=open_group, peer="bob"))
        joined = await request(ws, 14, "group.join", group="nosuch")
        assert not joined["ok"]
        ok(await request(ws, 15, "group.leave", group=group))
        kinds = [e["kind"] for e in alice.log(group)]
        assert kinds[-1] == "leave", kinds
        await web.close(ws)
