"""The chat client's link to the node: an async control-socket client (trio).

Each ``call`` opens the Unix socket, sends one JSON request line and reads one
answer line, under a deadline, so a slow or stuck node shows up as an error in
the status line and never as a frozen screen. ``follow`` keeps one connection
open for ``log`` with ``follow``: the node answers with the log so far, then
streams a line per new event (and typing notices) until we hang up.

The same client serves both ways the chat runs: attached to a node that is
already running, or to the node ``kith chat`` started in its own process (that
node serves the same control socket, so ``kith send`` and friends work
alongside the client too).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from node.api import protocol
from node.errors import KithError, NotRunningError

#: Seconds a request may take before the client says the node is not answering.
CALL_TIMEOUT = 10.0
#: The longest answer line accepted (a long group log is big).
MAX_ANSWER = 256 * 1024 * 1024


class LineReader:
    """Splits what a stream sends into JSON answer lines."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def next(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            data = await self.stream.receive_some(65536)
            if not data:
                raise KithError("the node closed the control connection")
            self.buf += data
            if len(self.buf) > MAX_ANSWER:
                raise KithError("the node's answer is too long")
        line, _, rest = bytes(self.buf).partition(b"\n")
        self.buf = bytearray(rest)
        try:
            answer = json.loads(line)
        except ValueError as exc:
            raise KithError("the node sent something that is not JSON") from exc
        if not isinstance(answer, dict):
            raise KithError("the node sent something that is not a JSON object")
        if not answer.get("ok"):
            raise KithError(str(answer.get("error", "unknown error")))
        return answer


class NodeClient:
    """Requests to the node behind the control socket at ``path``."""

    def __init__(self, path: Path, timeout: float = CALL_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout

    async def _connect(self) -> trio.SocketStream:
        try:
            return await trio.open_unix_socket(os.fspath(self.path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NotRunningError(f"no node is running for {self.path.parent}") from exc
        except OSError as exc:
            raise KithError(f"cannot reach the node at {self.path}: {exc.strerror}") from exc

    async def call(self, op: str, **params: Any) -> Any:
        """One request; its result, or ``KithError`` (also when it takes too long)."""
        try:
            with trio.fail_after(self.timeout):
                stream = await self._connect()
                async with stream:
                    await stream.send_all(protocol.encode({"op": op, **params}))
                    return (await LineReader(stream).next()).get("result")
        except trio.TooSlowError:
            raise KithError(f"the node did not answer {op} within {self.timeout:g} s") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise KithError(f"lost the connection to the node during {op}") from exc

    async def follow(
        self,
        on_item: Callable[[Any], None],
        op: str = "log",
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
        **params: Any,
    ) -> None:
        """``op`` with follow: ``task_status.started(result)``, then ``on_item(event)`` each.

        Returns when the node hangs up; raises ``KithError`` if the first answer is late or
        an error.
        """
        try:
            with trio.fail_after(self.timeout):
                stream = await self._connect()
        except trio.TooSlowError:
            raise KithError(f"the node did not accept a connection within "
                            f"{self.timeout:g} s") from None
        async with stream:
            reader = LineReader(stream)
            try:
                with trio.fail_after(self.timeout):
                    await stream.send_all(protocol.encode({"op": op, "follow": True, **params}))
                    first = await reader.next()
            except trio.TooSlowError:
                raise KithError(f"the node did not answer {op} within "
                                f"{self.timeout:g} s") from None
            task_status.started(first.get("result"))
            try:
                while True:
                    on_item((await reader.next()).get("event"))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return


async def serve_node(
    node: Any, targets: list[Any], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run ``node`` (a ``node.app.App``) until cancelled; started once it listens."""
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run, targets)
        task_status.started()
        await trio.sleep(math.inf)
