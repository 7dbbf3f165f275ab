"""``kith web`` as a real process: one URL line on stdout, the page over real HTTP, clean exits.

Also ``kith run --web``, attaching to a running node, the fallback to a free port, and
the warning for a non-loopback address. Processes come from tests/lab/procs.py (every
wait bounded, no sleeps); HTTP goes over real TCP on 127.0.0.1 with httpx.
"""

from __future__ import annotations

import re
import signal
import socket
from pathlib import Path

import httpx
import pytest
import trio

from node.cli.main import build_parser, main
from node.web import protocol
from tests.lab.procs import Proc, kith_process
from tests.web.helpers import tmp

__all__ = ["tmp"]

URL = r"^http://127\.0\.0\.1:(\d+)/\?token=([A-Za-z0-9_-]{43})$"
NODE = ("--no-mdns", "--listen", "127.0.0.1:0")


async def url_of(proc: Proc) -> str:
    match = await proc.wait_for_line(URL)
    return match.group(0)


async def fetch_page(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10.0) as client:
        first = await client.get(url)
        assert first.status_code == 303 and protocol.COOKIE in client.cookies
        page = await client.get(url.split("?")[0])
        assert page.headers["content-security-policy"] == protocol.CSP
    async with httpx.AsyncClient(timeout=10.0) as stranger:
        assert (await stranger.get(url.split("?")[0])).status_code == 403
    return page


async def test_kith_web_prints_one_url_serves_the_page_and_stops_on_sigint(tmp: Path) -> None:
    async with kith_process(tmp / "alice", "web", "--no-open", "--web-listen", "127.0.0.1:0",
                            *NODE, watch="stdout") as proc:
        url = await url_of(proc)
        page = await fetch_page(url)
        assert page.status_code == 200 and "<html" in page.text.lower()
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            assert await proc.wait() == 0
        assert proc.lines == [url]  # exactly one line on stdout
        log = proc.rest.decode()
        assert "serving the page" in log and "Traceback" not in log


async def test_attaches_to_a_running_node_and_takes_a_free_port(tmp: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        async with kith_process(tmp / "alice", "run", *NODE, name="node") as node:
            await node.wait_for_line("control socket")
            async with kith_process(tmp / "alice", "web", "--no-open", "--name", "bob",
                                    "--web-listen", f"127.0.0.1:{port}",
                                    watch="stdout") as web:
                url = await url_of(web)
                assert int(re.match(URL, url).group(1)) != port  # type: ignore[union-attr]
                assert (await fetch_page(url)).status_code == 200
                web.send_signal(signal.SIGTERM)
                with trio.fail_after(15):
                    assert await web.wait() == 0
                log = web.rest.decode()
                assert "attaching" in log and "--name bob ignored" in log
            assert node.returncode is None  # the node it attached to runs on
    finally:
        taken.close()


async def test_kith_run_web_serves_the_page_beside_the_node(tmp: Path) -> None:
    async with kith_process(tmp / "alice", "run", "--web", "--web-listen", "127.0.0.1:0",
                            *NODE, watch="stdout") as proc:
        url = await url_of(proc)
        assert (await fetch_page(url)).status_code == 200
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            assert await proc.wait() == 0
        assert proc.lines == [url]


async def test_a_lan_address_gets_a_warning(tmp: Path) -> None:
    async with kith_process(tmp / "alice", "web", "--no-open", "--web-listen", "0.0.0.0:0",
                            *NODE, watch="both") as proc:
        await proc.wait_for_line(r"warning: the page listens on 0\.0\.0\.0")
        url = (await proc.wait_for_line(URL)).group(0)
        assert url.startswith("http://127.0.0.1:")
        port = re.match(URL, url).group(1)  # type: ignore[union-attr]
        async with httpx.AsyncClient(timeout=10.0) as client:
            # An IP literal is how the LAN reaches it; a name could be DNS rebinding.
            ip_host = await client.get(url, headers={"Host": f"127.0.0.2:{port}"})
            assert ip_host.status_code == 303
            name_host = await client.get(url, headers={"Host": f"evil.example:{port}"})
            assert name_host.status_code == 403


def test_web_is_a_command_with_help(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["web", "--no-open", "--web-listen", "127.0.0.1:9000",
                                      "--peer", "127.0.0.1:7000", "--no-mdns"])
    assert args.no_open and args.web_listen == "127.0.0.1:9000" and args.no_mdns
    assert build_parser().parse_args(["run", "--web"]).web
    with pytest.raises(SystemExit):
        main(["web", "--help"])
    help_text = capsys.readouterr().out
    for words in ("--no-open", "--web-listen", "token", "attaches", "examples:", "kith run --web"):
        assert words in help_text


async def test_the_browser_gets_the_url_and_its_output_stays_off_stdout(tmp: Path) -> None:
    opened = tmp / "opened"
    browser = f"sh -c 'echo $0 > {opened}; echo browser noise' %s"
    async with kith_process(tmp / "alice", "web", "--web-listen", "127.0.0.1:0", *NODE,
                            env={"BROWSER": browser}) as proc:
        await proc.wait_for_line("browser noise")  # on stderr
        url = opened.read_text().strip()
        assert re.match(URL, url)
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            assert await proc.wait() == 0
        assert proc.rest.decode() == url + "\n"  # stdout: the URL line, nothing else
