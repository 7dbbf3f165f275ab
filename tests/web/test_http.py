"""The HTTP side of the browser client: the guard, the headers, uploads and downloads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from node.api.python import open_node
from node.web import protocol
from node.web.uploads import STALE, clean_staging
from tests.web.helpers import ORIGIN, call, first_event, tmp, web_for

__all__ = ["tmp"]


async def test_token_gives_a_strict_http_only_cookie_then_the_page(tmp: Path) -> None:
    async with open_node(tmp / "alice", name="alice") as alice, web_for(alice) as web:
        first = await call(lambda: web.client.get(f"/?token={web.state.token}",
                                                  follow_redirects=False))
        assert first.status_code == 303 and first.headers["location"] == "/"
        cookie = first.headers["set-cookie"]
        assert cookie.startswith(f"{protocol.COOKIE}=")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        page = await call(lambda: web.client.get("/"))
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == protocol.CSP
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        script = await call(lambda: web.client.get("/static/app.js"))
        assert script.status_code == 200
        assert script.headers["content-security-policy"] == protocol.CSP


async def test_no_token_or_a_wrong_one_is_403_and_sets_nothing(tmp: Path) -> None:
    async with open_node(tmp / "alice", name="alice") as alice, web_for(alice) as web:
        wrong = await call(lambda: web.client.get("/?token=" + "x" * 43, follow_redirects=False))
        assert wrong.status_code == 403 and "set-cookie" not in wrong.headers
        assert "kith web" in wrong.text and wrong.headers["content-security-policy"]
        for path in ("/", "/static/app.js", "/api/file?group=x&event=y"):
            response = await call(partial(web.client.get, path))
            assert response.status_code == 403, path
        group = alice.create_group("lab")
        response = await call(lambda: web.client.post(
            f"/api/upload?group={group}&name=a.txt", content=b"hi", headers=ORIGIN))
        assert response.status_code == 403
        forged = await call(lambda: web.client.get(
            "/", headers={"Cookie": f"{protocol.COOKIE}=forged"}))
        assert forged.status_code == 403
        assert not (alice.app.data_dir.path / "web-tmp").exists()
        assert [e["kind"] for e in alice.log(group)] == ["create"]


async def test_wrong_host_or_origin_is_403(tmp: Path) -> None:
    async with open_node(tmp / "alice", name="alice") as alice, web_for(alice) as web:
        await web.login()
        assert (await call(lambda: web.client.get("/"))).status_code == 200
        for host in ("evil.example:8707", "127.0.0.1:8708", "kith.attacker.test"):
            rebound = await call(partial(web.client.get, "/", headers={"Host": host}))
            assert rebound.status_code == 403, host
            assert "only answers" in rebound.text
        localhost = await call(lambda: web.client.get("/", headers={"Host": "localhost:8707"}))
        assert localhost.status_code == 200
        group = alice.create_group("lab")
        for origin in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {}):
            response = await call(partial(
                web.client.post, f"/api/upload?group={group}&name=a.txt", content=b"hi",
                headers=origin))
            assert response.status_code == 403, origin
            assert "another site" in response.text
        assert [e["kind"] for e in alice.log(group)] == ["create"]


async def test_static_files_stay_in_their_directory(tmp: Path) -> None:
    async with open_node(tmp / "alice", name="alice") as alice, web_for(alice) as web:
        await web.login()
        for path in ("/static/%2e%2e/app.py", "/static/..%2fprotocol.py", "/static/nothing.js"):
            response = await call(partial(web.client.get, path))
            assert response.status_code == 404, path
            assert "Starlette" not in response.text and "def " not in response.text


async def test_upload_then_download(tmp: Path) -> None:
    async with open_node(tmp / "alice", name="alice") as alice, web_for(alice) as web:
        await web.login()
        group = alice.create_group("lab")
        data = bytes(range(256)) * 300
        staged: list[tuple[str, int, int]] = []
        real_call = web.hub.client.call

        async def spy(op: str, **params: Any) -> Any:
            if op == "file.send":
                info = os.stat(params["file"])
                staged.append((params["file"], info.st_mode & 0o777, info.st_size))
            return await real_call(op, **params)

        web.hub.client.call = spy  # type: ignore[method-assign]
        response = await call(lambda: web.client.post(
            f"/api/upload?group={group}&name=..%2F..%2Fnotes%20%C3%A9t%C3%A9.bin&text=hello",
            content=data, headers=ORIGIN))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["ok"] and body["result"]["name"] == "notes été.bin"
        assert body["result"]["size"] == len(data)
        [(path, mode, size)] = staged  # a 0600 file in the data directory, named safely
        assert mode == 0o600 and size == len(data)
        assert Path(path).parent.parent == alice.app.data_dir.path / "web-tmp"
        assert Path(path).name == "notes été.bin"
        sent = await first_event(alice, group, lambda e: bool(e.get("file")), "file message")
        assert sent["text"] == "hello" and sent["file"]["name"] == "notes été.bin"
        got = await call(lambda: web.client.get(f"/api/file?group={group}&event={sent['id']}"))
        assert got.status_code == 200 and got.content == data
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.headers["content-disposition"] == (
            "attachment; filename*=UTF-8''notes%20%C3%A9t%C3%A9.bin")
        assert got.headers["x-content-type-options"] == "nosniff"
        missing = await call(lambda: web.client.get(f"/api/file?group={group}&event={'0' * 64}"))
        assert missing.status_code == 404 and missing.json()["ok"] is False


async def test_upload_over_the_limit_is_413_and_leaves_nothing(tmp: Path) -> None:
    async with open_node(tmp / "alice", name="alice", max_file_size=4096) as alice, \
            web_for(alice) as web:
        await web.login()
        group = alice.create_group("lab")
        big = await call(lambda: web.client.post(f"/api/upload?group={group}&name=big.bin",
                                                 content=b"x" * 4097, headers=ORIGIN))
        assert big.status_code == 413 and big.json()["ok"] is False
        assert "limit" in big.json()["error"]

        def chunks() -> Iterator[bytes]:
            yield b"x" * 10

        unsized = await call(lambda: web.client.post(f"/api/upload?group={group}&name=a.bin",
                                                     content=chunks(), headers=ORIGIN))
        assert unsized.status_code == 411
        nameless = await call(lambda: web.client.post(f"/api/upload?group={group}",
                                                      content=b"x", headers=ORIGIN))
        assert nameless.status_code == 400
        stranger = await call(lambda: web.client.post("/api/upload?group=nosuch&name=a.bin",
                                                      content=b"x", headers=ORIGIN))
        assert stranger.status_code == 400 and "nosuch" in stranger.json()["error"]
        assert [e["kind"] for e in alice.log(group)] == ["create"]
        assert list((alice.app.data_dir.path / "web-tmp").iterdir()) == []


def test_only_stale_staging_leftovers_are_removed(tmp: Path) -> None:
    old, new = tmp / "web-tmp" / "old", tmp / "web-tmp" / "new"
    for d in (old, new):
        d.mkdir(parents=True)
        (d / "file.bin").write_bytes(b"x")
    os.utime(old, (1000.0, 1000.0))
    os.utime(new, (1000.0 + STALE, 1000.0 + STALE))
    clean_staging(tmp, now=1001.0 + STALE)
    assert not old.exists() and (new / "file.bin").exists()
    clean_staging(tmp / "nothing-here", now=0.0)  # no staging directory: nothing to do
