"""The control socket (``node.api.server``, ``node.api.client``) over a running node.

The socket's mode 0600 is its whole access control, so the tests check the mode
and, as root, that another user really cannot connect. Everything a client sends
is untrusted input to the node: a malformed or oversize request must get one clear
error line, and the node must go on serving (this and other connections).
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio

from node.api import client, protocol
from node.api.python import open_node
from node.api.server import serve_control
from node.datadir import DataDir
from node.errors import KithError, NotRunningError
from tests.api.test_views import lobby
from tests.integration.test_groups import SOON


class Line:
    """A raw client connection: send bytes, read one JSON line at a time."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    @classmethod
    async def open(cls, path: Path) -> Line:
        return cls(await trio.open_unix_socket(os.fspath(path)))

    async def send(self, request: dict[str, Any] | bytes) -> None:
        data = request if isinstance(request, bytes) else protocol.encode(request)
        await self.stream.send_all(data)

    async def read(self) -> dict[str, Any] | None:
        """The next line (None at end of stream); fail if none comes ``SOON``."""
        with trio.fail_after(SOON):
            while b"\n" not in self.buf:
                data = await self.stream.receive_some(65536)
                if not data:
                    assert not self.buf, f"a partial line before EOF: {bytes(self.buf)!r}"
                    return None
                self.buf += data
        line, _, rest = bytes(self.buf).partition(b"\n")
        self.buf = bytearray(rest)
        answer = json.loads(line)
        assert isinstance(answer, dict)
        return answer

    async def ask(self, request: dict[str, Any] | bytes) -> dict[str, Any]:
        await self.send(request)
        answer = await self.read()
        assert answer is not None, "the node closed the connection instead of answering"
        return answer

    async def aclose(self) -> None:
        await self.stream.aclose()


async def identity(path: Path) -> dict[str, Any]:
    """``id`` on a new connection: the node is (still) serving."""
    conn = await Line.open(path)
    try:
        answer = await conn.ask({"op": "id"})
    finally:
        await conn.aclose()
    assert answer["ok"] is True, answer
    return dict(answer["result"])


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- who may connect ------------------------------------------------------------------------


async def test_the_socket_and_its_directory_belong_to_the_owner_alone(tmp_path: Path) -> None:
    async with open_node(tmp_path / "alice", name="alice") as alice:
        path = alice.app.data_dir.control_socket
        st = path.lstat()
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert st.st_uid == os.geteuid()
        assert mode_of(alice.app.data_dir.path) & 0o077 == 0  # made 0700 on first use
        assert (await identity(path))["peer_id"] == alice.peer_id


async def test_a_stale_socket_file_is_replaced_and_the_socket_goes_when_the_node_stops(
    tmp_path: Path,
) -> None:
    data = DataDir(tmp_path / "alice")
    data.ensure()
    data.control_socket.write_text("left over by a crash")
    data.control_socket.chmod(0o666)
    async with open_node(data.path, name="alice"):
        assert stat.S_ISSOCK(data.control_socket.lstat().st_mode)
        assert mode_of(data.control_socket) == 0o600
    assert not data.control_socket.exists()
    with pytest.raises(NotRunningError, match="no node is running"):
        await trio.to_thread.run_sync(client.call, data.control_socket, "id")


def _connect_as(uid: int, path: Path) -> str:
    """In a child process running as ``uid``: can it connect to ``path``?"""
    pid = os.fork()
    if pid == 0:  # the child: no Python-level cleanup, only an exit code
        code = 3
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.stat(path)  # it can reach the socket: only the socket's mode may refuse it
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                try:
                    sock.connect(os.fspath(path))
                    code = 0
                except PermissionError:
                    code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return {0: "connected", 1: "refused"}.get(os.waitstatus_to_exitcode(status), "error")


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")
async def test_another_user_cannot_connect() -> None:
    try:
        nobody = pwd.getpwnam("nobody").pw_uid
    except KeyError:
        nobody = 65534
    # Not under tmp_path (mode 0700 above it): here the other user may walk down to the
    # socket, so that its mode, and nothing else, is what refuses it.
    base = Path(tempfile.mkdtemp(prefix="kith-"))
    os.chmod(base, 0o711)
    try:
        async with open_node(base / "a", name="alice") as alice:
            path = alice.app.data_dir.control_socket
            os.chmod(alice.app.data_dir.path, 0o711)
            assert await trio.to_thread.run_sync(_connect_as, nobody, path) == "refused"
            path.chmod(0o666)  # the control: with a loose mode the same user gets in
            assert await trio.to_thread.run_sync(_connect_as, nobody, path) == "connected"
    finally:
        shutil.rmtree(base)


async def test_a_world_writable_data_directory_is_not_used_as_it_is(tmp_path: Path) -> None:
    data = tmp_path / "alice"
    data.mkdir()
    data.chmod(0o777)
    try:
        async with open_node(data, name="alice"):
            assert mode_of(data) & 0o022 == 0
    except* KithError:
        pass  # refusing to start is as good as tightening the mode


# -- what a client may send ---------------------------------------------------------------

BAD_REQUESTS: list[tuple[bytes, str]] = [
    (b"hello\n", "request is not JSON"),
    (b"\xff\xfe{}\n", "request is not JSON"),
    (b'{"op": "id",}\n', "request is not JSON"),
    (b'{"op": "id", "n": ' + b"9" * 5000 + b"}\n", "request is not JSON"),
    (b'["id"]\n', 'request must be a JSON object with an "op" string'),
    (b'"id"\n', 'request must be a JSON object with an "op" string'),
    (b"{}\n", 'request must be a JSON object with an "op" string'),
    (b'{"op": 7}\n', 'request must be a JSON object with an "op" string'),
    (b'{"op": "shutdown"}\n', "unknown op 'shutdown'"),
    (b'{"op": "__class__"}\n', "unknown op '__class__'"),
    (b'{"op": "log"}\n', "missing 'group'"),
    (b'{"op": "log", "group": ["lab"]}\n', "missing 'group'"),
    (b'{"op": "log", "group": "no-such-group"}\n', "no group 'no-such-group'"),
    (b'{"op": "log", "group": "lab", "limit": "10"}\n', "limit must be a positive integer"),
    (b'{"op": "send", "group": "lab", "text": "x", "count": 1e9}\n', "count must be 1..100000"),
    (b'{"op": "group.add", "group": "lab", "peer": "bob"}\n', "no peer 'bob' known to this node"),
    (b'{"op": "group.create", "name": "x", "mode": ["open"]}\n', "mode must be one of"),
    (b'{"op": "group.notify", "group": "lab", "muted": "yes"}\n', "'muted' must be true or"),
    (b'{"op": "group.discover", "timeout": NaN}\n', "timeout must be 0..60 seconds"),
    (b'{"op": "react", "group": "lab", "event": "zzzzzzzz", "emoji": "x"}\n',
     "or 8 to 64 hex digits of its id"),
    (b'{"op": "file.send", "group": "lab", "file": "relative.txt"}\n',
     "the file path must be absolute"),
]


async def test_each_malformed_request_gets_one_error_line_and_the_connection_goes_on(
    tmp_path: Path,
) -> None:
    async with open_node(tmp_path / "alice", name="alice") as alice:
        alice.create_group("lab")
        events = len(alice.service.find("lab").core.ordered())
        conn = await Line.open(alice.app.data_dir.control_socket)
        for request, error in BAD_REQUESTS:
            answer = await conn.ask(request)
            assert answer.keys() == {"ok", "error"} and answer["ok"] is False, request
            assert error in answer["error"], (request, answer)
            assert "\n" not in answer["error"] and "Traceback" not in answer["error"]
        # the same connection, then a new one, still answer
        assert (await conn.ask({"op": "id"}))["result"]["peer_id"] == alice.peer_id
        await conn.aclose()
        assert (await identity(alice.app.data_dir.control_socket))["name"] == "alice"
        assert len(alice.service.find("lab").core.ordered()) == events  # nothing was written
        assert [g["name"] for g in alice.groups()] == ["lab"]


async def test_requests_on_one_connection_are_answered_in_order(tmp_path: Path) -> None:
    async with open_node(tmp_path / "alice", name="alice") as alice:
        group = alice.create_group("lab")
        conn = await Line.open(alice.app.data_dir.control_socket)
        # three requests in one write: three answers, in the order asked
        await conn.send(protocol.encode({"op": "send", "group": group, "text": "one"})
                        + b"nonsense\n"
                        + protocol.encode({"op": "log", "group": group}))
        sent, refused, log = await conn.read(), await conn.read(), await conn.read()
        assert sent is not None and sent["ok"] and sent["result"]["text"] == "one"
        assert refused == protocol.error("request is not JSON")
        assert log is not None and [r["text"] for r in log["result"]
                                    if r["kind"] == "message"] == ["one"]
        await conn.aclose()


async def test_an_oversize_request_is_refused_and_the_node_keeps_serving(tmp_path: Path) -> None:
    async with open_node(tmp_path / "alice", name="alice") as alice:
        path = alice.app.data_dir.control_socket
        conn = await Line.open(path)

        async def flood() -> None:
            # the node may hang up before it has read it all
            with contextlib.suppress(trio.BrokenResourceError):
                await conn.send(b"x" * (protocol.MAX_LINE + 1))  # no newline: never a line

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            answer = await conn.read()
            assert answer == protocol.error("request too long")
            assert await conn.read() is None  # and the node hung up
        await conn.aclose()
        assert (await identity(path))["peer_id"] == alice.peer_id


async def test_the_cli_client_gets_results_and_the_nodes_one_line_errors(tmp_path: Path) -> None:
    async with open_node(tmp_path / "alice", name="alice") as alice:
        path = alice.app.data_dir.control_socket
        me = await trio.to_thread.run_sync(client.call, path, "id")
        assert me["peer_id"] == alice.peer_id and me["running"] is True
        with pytest.raises(KithError, match=r"^unknown op 'nope'$"):
            await trio.to_thread.run_sync(client.call, path, "nope")
        with pytest.raises(KithError, match=r"^no group 'lab' \(see `kith group list`\)$"):
            await trio.to_thread.run_sync(lambda: client.call(path, "log", group="lab"))
        assert (await identity(path))["peer_id"] == alice.peer_id


async def test_log_follow_streams_new_events_but_never_a_hidden_one(tmp_path: Path) -> None:
    async with lobby(tmp_path) as s:
        conn = await Line.open(s.alice.app.data_dir.control_socket)
        first = await conn.ask({"op": "log", "group": s.group, "follow": True})
        assert first["ok"] and [r["kind"] for r in first["result"]] == ["create", "join"]
        hidden = s.says("written before bob saw his mute")
        mute = s.alice.mute(s.group, s.bob_id)
        s.hand(hidden)
        shown = s.alice.send(s.group, "written after it")
        streamed = [await conn.read(), await conn.read()]
        assert [(r or {}).get("event", {}).get("id") for r in streamed] == [
            mute["id"], shown["id"]]
        assert all(r is not None and r["ok"] is True for r in streamed)
        await conn.aclose()


# -- bugs found while writing these tests -------------------------------------------------


async def test_deeply_nested_json_gets_an_error_not_a_crash(tmp_path: Path) -> None:
    async with open_node(tmp_path / "alice", name="alice") as alice:
        path = alice.app.data_dir.control_socket
        conn = await Line.open(path)
        answer = await conn.ask(b"[" * 100_000 + b"\n")
        assert answer["ok"] is False
        await conn.aclose()
        assert (await identity(path))["peer_id"] == alice.peer_id


async def test_a_file_path_with_a_nul_gets_an_error_not_a_crash(tmp_path: Path) -> None:
    async with open_node(tmp_path / "alice", name="alice") as alice:
        group = alice.create_group("lab")
        path = alice.app.data_dir.control_socket
        conn = await Line.open(path)
        answer = await conn.ask({"op": "file.send", "group": group, "file": "/tmp/a\x00b"})
        assert answer["ok"] is False
        await conn.aclose()
        assert (await identity(path))["peer_id"] == alice.peer_id


async def test_binding_the_socket_does_not_change_what_other_tasks_create(
    tmp_path: Path,
) -> None:
    modes: set[int] = set()
    done = False

    async def make_directories() -> None:  # like another node making its chunk store
        n = 0
        while not done:
            n += 1
            made = tmp_path / f"dir{n}"
            made.mkdir(mode=0o700)
            modes.add(mode_of(made))
            made.rmdir()
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(make_directories)
        await trio.lowlevel.checkpoint()
        await nursery.start(serve_control, object(), tmp_path / "control.sock")
        done = True
        nursery.cancel_scope.cancel()
    assert modes == {0o700}
