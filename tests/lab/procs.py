"""The one process runner of the system tests: start, wait on output lines, stop.

Theory of operation: ``running(argv)`` starts a process with stdin on /dev/null and
its output piped, for the duration of an ``async with`` block. Background tasks read
the output: the lines of the *watched* stream go to ``Proc.lines`` (stderr by default,
where a node logs one line per connection event; or stdout; or both merged), the
other stream's bytes to ``Proc.rest``. ``wait_for_line`` and ``wait_until`` wake on
each new chunk of output (never on a timer) and fail with everything the process
wrote if it exits first. ``ready=PATTERN`` makes the block start only once a line
matches, which is how a daemon says it is up.

Every wait is bounded by ``WAIT_TIMEOUT``, unless the process was started with
``bounded=False``: then its caller holds the deadline (a lab test measuring a bound
with ``trio.fail_after``), and only that counts. The same holds for ``kith_cli``.

On leaving the block the process gets SIGCONT (a paused process cannot act on
SIGTERM), SIGTERM, and SIGKILL if it has not exited within ``STOP_TIMEOUT`` seconds,
so no process outlives its test even when the test fails. ``prefix`` runs the command
through another one that execs it (``ip netns exec NETNS``: ``lab.exec_argv(i, [])``),
so the process held *is* the command and signals reach it directly.

``kith_process`` is ``running`` for ``python -m node --data DIR ARGS...``;
``kith_cli`` / ``kith_json`` run one short command to completion. All of them run
``kith`` with ``KITH_DATA`` removed from the environment, so only ``--data`` decides
where a node keeps its files.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import trio

#: Seconds a process gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0
#: Default bound for the waits of a process, and for ``kith_cli``.
WAIT_TIMEOUT = 10.0

#: Which output ``Proc.lines`` holds: stderr, stdout, or both (stderr merged into stdout).
Watch = Literal["stderr", "stdout", "both"]
T = TypeVar("T")


class ProcessError(AssertionError):
    """A process did not do what a test waited for; the message has its output."""


class Proc:
    """A running process and what it has written so far."""

    def __init__(
        self, process: trio.Process, command: list[str], name: str, bounded: bool
    ) -> None:
        self.process = process
        self.command = command
        #: What failure messages call it (the command itself when empty).
        self.name = name
        #: Whether each wait is bounded by ``WAIT_TIMEOUT`` (else the caller's deadline).
        self.bounded = bounded
        #: Every line of the watched output so far, without the line ending.
        self.lines: list[str] = []
        #: What the stream that is not watched wrote (empty when both are watched).
        self.rest = bytearray()
        self._changed = trio.Event()
        self._closed = False  # the watched stream is closed: no more lines

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def log(self) -> str:
        """All watched lines so far, for error messages."""
        return "\n".join(self.lines)

    def mark(self) -> int:
        """Where the output is now: pass as ``after`` to wait only for later lines."""
        return len(self.lines)

    def lines_matching(self, pattern: str, *, after: int = 0) -> list[str]:
        return [line for line in self.lines[after:] if re.search(pattern, line)]

    async def wait_for_line(
        self, pattern: str | re.Pattern[str], *, after: int = 0
    ) -> re.Match[str]:
        """Wait until a line (from index ``after`` on) matches ``pattern``; the match.

        Raises ``ProcessError`` with the output if the process closes the watched
        stream (exits) first, or (``bounded``) no line matches within ``WAIT_TIMEOUT`` s.
        """
        regex = re.compile(pattern)
        index = after

        def scan() -> re.Match[str] | None:
            nonlocal index
            while index < len(self.lines):
                match = regex.search(self.lines[index])
                index += 1
                if match:
                    return match
            return None

        return await self._wait(scan, f"a line matching {regex.pattern!r}")

    async def wait_until(self, done: Callable[[list[str]], bool], what: str) -> None:
        """Wait until ``done(lines)`` holds, re-checked after each chunk of output."""
        await self._wait(lambda: True if done(self.lines) else None, what)

    async def wait(self) -> int:
        """Wait until the process exits and its output is fully read; its status."""
        status = await self.process.wait()
        while not self._closed:
            await self._changed.wait()
        return status

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.process.kill()

    async def stop(self) -> int:
        """SIGCONT, SIGTERM, then SIGKILL after ``STOP_TIMEOUT`` s; the exit status."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process cannot stop
            self.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(STOP_TIMEOUT):
                return await self.wait()
            self.process.kill()
        return await self.wait()

    async def _wait(self, check: Callable[[], T | None], what: str) -> T:
        try:
            with trio.fail_after(WAIT_TIMEOUT if self.bounded else float("inf")):
                while (result := check()) is None:
                    if self._closed:
                        await self.process.wait()  # the output closes just before the exit
                        raise self.error(f"exited (status {self.returncode}) before {what}")
                    await self._changed.wait()
                return result
        except trio.TooSlowError:
            raise self.error(f"wrote no {what} within {WAIT_TIMEOUT:g} s") from None

    def error(self, what: str) -> ProcessError:
        """A ``ProcessError`` saying the process ``what``, with its output."""
        command = " ".join(self.command)
        label = f"{self.name} ({command})" if self.name else command
        message = f"{label} {what}; its output:\n{self.log}"
        if self.rest:
            message += f"\nand on its other stream:\n{self.rest.decode('utf-8', 'replace')}"
        return ProcessError(message)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _read_lines(self, stream: trio.abc.ReceiveStream) -> None:
        pending = bytearray()
        try:
            async with stream:
                while data := await stream.receive_some():
                    pending += data
                    *complete, tail = pending.split(b"\n")
                    pending = bytearray(tail)
                    self.lines.extend(line.decode("utf-8", "replace") for line in complete)
                    if complete:
                        self._notify()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if pending:
                self.lines.append(pending.decode("utf-8", "replace"))
            self._closed = True
            self._notify()

    async def _read_rest(self, stream: trio.abc.ReceiveStream) -> None:
        try:
            async with stream:
                while data := await stream.receive_some():
                    self.rest += data
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


@asynccontextmanager
async def running(
    argv: Sequence[str],
    *,
    prefix: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    name: str = "",
    watch: Watch = "stderr",
    bounded: bool = True,
    ready: str | None = None,
) -> AsyncIterator[Proc]:
    """Run ``PREFIX... ARGV...`` for the duration of the block (see the module docstring).

    ``env`` is the child's whole environment (None: ours). With ``ready``, the block
    starts once a line matches it.
    """
    command = [*prefix, *argv]
    process = await trio.lowlevel.open_process(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if watch == "both" else subprocess.PIPE,
        env=None if env is None else dict(env),
    )
    proc = Proc(process, command, name, bounded)
    watched, rest = (process.stdout, process.stderr)
    if watch == "stderr":
        watched, rest = rest, watched
    assert watched is not None
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(proc._read_lines, watched)
            if rest is not None:
                nursery.start_soon(proc._read_rest, rest)
            try:
                if ready is not None:
                    await proc.wait_for_line(ready)
                yield proc
            finally:
                with trio.CancelScope(shield=True):
                    await proc.stop()
    except BaseExceptionGroup as group:
        # The readers never raise, so a group holds what the block raised: pass that on.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    finally:
        if process.returncode is None:  # only if stop() itself was interrupted
            process.kill()


# -- kith -----------------------------------------------------------------------------


def kith_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a ``kith`` child: ours, without ``KITH_DATA``, unbuffered."""
    env = {k: v for k, v in os.environ.items() if k != "KITH_DATA"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def kith_command(data_dir: Path | str, *args: str) -> list[str]:
    return [sys.executable, "-m", "node", "--data", os.fspath(data_dir), *args]


def kith_process(
    data_dir: Path | str,
    *args: str,
    prefix: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    name: str = "",
    watch: Watch = "stderr",
    bounded: bool = True,
) -> AbstractAsyncContextManager[Proc]:
    """``running`` for ``kith --data DATA_DIR ARGS...``; ``env`` adds to ``kith_env()``."""
    return running(kith_command(data_dir, *args), prefix=prefix, env=kith_env(env),
                   name=name, watch=watch, bounded=bounded)


async def kith_cli(
    data_dir: Path | str,
    *args: str,
    env: Mapping[str, str] | None = None,
    bounded: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Run one ``kith`` command to completion (at most ``WAIT_TIMEOUT`` s if ``bounded``).

    A non-zero exit status is not an error here: tests check it.
    """
    with trio.fail_after(WAIT_TIMEOUT if bounded else float("inf")):
        return await trio.run_process(
            kith_command(data_dir, *args),
            stdin=b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=kith_env(env),
        )


async def kith_json(data_dir: Path | str, *args: str, bounded: bool = True) -> Any:
    """``kith ARGS... --json``, which must succeed; its parsed output."""
    result = await kith_cli(data_dir, *args, "--json", bounded=bounded)
    if result.returncode != 0:
        raise ProcessError(
            f"kith {' '.join(args)} --json exited {result.returncode}: "
            f"{result.stderr.decode(errors='replace').strip()}"
        )
    return json.loads(result.stdout)
