"""Run real ``kith`` processes from trio tests, without sleeping and without leaking them.

``kith_process`` starts ``python -m node --data DIR ARGS...`` with stdout and
stderr piped. Background tasks read both; each stderr line (the node logs one
line per connection event) is kept, and ``wait_for_line`` waits until a line
matches a pattern. On leaving the ``async with`` block the process gets
SIGTERM, then SIGKILL if it has not exited within ``STOP_TIMEOUT`` seconds, so
no process outlives its test even when the test fails.

``kith_cli`` runs one short command (``id``, ``peers``, ...) to completion.

Both run with ``KITH_DATA`` removed from the environment, so only ``--data``
decides where a node keeps its files.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import trio

#: Seconds a process gets to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0
#: Default bound for ``wait_for_line`` and ``kith_cli``.
WAIT_TIMEOUT = 10.0


class KithProcessError(AssertionError):
    """A ``kith`` process did not do what a test waited for; the message has its log."""


def kith_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a ``kith`` child: ours, without ``KITH_DATA``, unbuffered."""
    env = {k: v for k, v in os.environ.items() if k != "KITH_DATA"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def kith_command(data_dir: Path | str, *args: str) -> list[str]:
    return [sys.executable, "-m", "node", "--data", os.fspath(data_dir), *args]


class KithProcess:
    """A running ``kith`` process and what it has written so far."""

    def __init__(self, process: trio.Process, command: list[str]) -> None:
        self.process = process
        self.command = command
        #: Every stderr line so far, without the line ending.
        self.lines: list[str] = []
        self._stdout = bytearray()
        self._changed = trio.Event()
        self._stderr_closed = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def stdout(self) -> str:
        return self._stdout.decode("utf-8", errors="replace")

    @property
    def log(self) -> str:
        """All stderr lines so far, for error messages."""
        return "\n".join(self.lines)

    async def wait_for_line(
        self, pattern: str | re.Pattern[str], *, after: int = 0
    ) -> re.Match[str]:
        """Wait until a stderr line (from index ``after`` on) matches ``pattern``.

        Raises ``KithProcessError`` with the captured log if the process closes
        stderr (exits) first or no line matches within ``WAIT_TIMEOUT`` seconds.
        """
        regex = re.compile(pattern)
        index = after
        try:
            with trio.fail_after(WAIT_TIMEOUT):
                while True:
                    while index < len(self.lines):
                        match = regex.search(self.lines[index])
                        index += 1
                        if match:
                            return match
                    if self._stderr_closed:
                        await self.process.wait()  # stderr closes just before the exit
                        raise self._error(
                            f"exited (status {self.returncode}) before a line matched "
                            f"{regex.pattern!r}"
                        )
                    await self._changed.wait()
        except trio.TooSlowError:
            raise self._error(
                f"wrote no line matching {regex.pattern!r} within {WAIT_TIMEOUT:g} s"
            ) from None

    async def wait(self) -> int:
        """Wait until the process exits and its stderr is fully read; return its status."""
        status = await self.process.wait()
        while not self._stderr_closed:
            await self._changed.wait()
        return status

    def send_signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def stop(self) -> int:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT`` s; return the exit status."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(STOP_TIMEOUT):
                return await self.wait()
            self.process.kill()
        return await self.wait()

    def _error(self, what: str) -> KithProcessError:
        return KithProcessError(f"{' '.join(self.command)} {what}; its log:\n{self.log}")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _read_stderr(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        pending = bytearray()
        try:
            async with stream:
                while data := await stream.receive_some():
                    pending += data
                    *complete, rest = pending.split(b"\n")
                    pending = bytearray(rest)
                    self.lines.extend(line.decode("utf-8", errors="replace") for line in complete)
                    if complete:
                        self._notify()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if pending:
                self.lines.append(pending.decode("utf-8", errors="replace"))
            self._stderr_closed = True
            self._notify()

    async def _read_stdout(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        try:
            async with stream:
                while data := await stream.receive_some():
                    self._stdout += data
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


@asynccontextmanager
async def kith_process(
    data_dir: Path | str, *args: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[KithProcess]:
    """Run ``kith --data DATA_DIR ARGS...`` for the duration of the block."""
    command = kith_command(data_dir, *args)
    process = await trio.lowlevel.open_process(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=kith_env(env),
    )
    proc = KithProcess(process, command)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(proc._read_stderr)
            nursery.start_soon(proc._read_stdout)
            try:
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


async def kith_cli(
    data_dir: Path | str,
    *args: str,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run one short ``kith`` command to completion (at most ``WAIT_TIMEOUT`` s).

    A non-zero exit status is not an error here: tests check it.
    """
    with trio.fail_after(WAIT_TIMEOUT):
        return await trio.run_process(
            kith_command(data_dir, *args),
            stdin=b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=kith_env(env),
        )
