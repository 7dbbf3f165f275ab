"""``kith send GROUP --file PATH`` and ``kith save GROUP EVENT [DIR]``: attachments.

Both talk to the running node, which does the work (encrypts, stores, fetches,
decrypts); the command polls the node for progress. On a terminal the progress
bar is redrawn on stderr; otherwise only a final line is printed, so scripts and
logs stay clean.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from node.api import client
from node.cli.common import escape, out
from node.datadir import DataDir
from node.errors import KithError

#: Seconds between progress polls.
POLL = 0.2
BAR = 30


def size_text(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


class Progress:
    """A one-line progress bar on ``stream`` when it is a terminal; silent otherwise."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.label = label
        self.drawn = False

    def update(self, done: int, total: int, note: str = "") -> None:
        if not self.live:
            return
        fraction = done / total if total else 1.0
        filled = int(fraction * BAR)
        bar = "#" * filled + "-" * (BAR - filled)
        self.stream.write(f"\r{self.label} [{bar}] {fraction:4.0%} "
                          f"{size_text(done)}/{size_text(total)} {note}\x1b[K")
        self.stream.flush()
        self.drawn = True

    def end(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def cmd_send_file(args: argparse.Namespace, datadir: DataDir) -> int:
    path = Path(args.file).expanduser().absolute()
    text = " ".join(args.text)
    upload = client.call(datadir.control_socket, "file.send", group=args.group, file=str(path),
                         text=text)
    progress = Progress(f"sending {name_text(upload['name'])}")
    try:
        while upload["state"] == "encrypting":
            progress.update(upload["done"], upload["size"])
            time.sleep(POLL)
            upload = client.call(datadir.control_socket, "file.upload", group=args.group,
                                 upload=upload["upload"])
    finally:
        progress.end()
    if upload["state"] == "failed":
        raise KithError(upload["error"] or "sending the file failed")
    event = upload["event"]
    return out(args, event, f"{event['state']}: {event['id'][:12]} "
                f"{name_text(upload['name'])} ({size_text(upload['size'])})")


def cmd_save(args: argparse.Namespace, datadir: DataDir) -> int:
    directory = Path(args.dir).expanduser().absolute()
    status = client.call(datadir.control_socket, "file.status", group=args.group,
                         event=args.event)
    progress = Progress(f"receiving {name_text(status['name'])}")
    try:
        while status["state"] == "fetching" and not args.no_wait:
            note = "(waiting for a member who has it)" if status["stalled"] else ""
            progress.update(status["bytes_have"], status["size"], note)
            time.sleep(POLL)
            status = client.call(datadir.control_socket, "file.status", group=args.group,
                                 event=args.event)
    except KeyboardInterrupt:
        progress.end()
        print(f"stopped waiting; the node keeps fetching "
              f"({status['have']} of {status['chunks']} chunks)", file=sys.stderr)
        return 1
    progress.end()
    saved = client.call(datadir.control_socket, "file.save", group=args.group,
                        event=args.event, dir=str(directory))
    return out(args, saved, f"saved {name_text(saved['path'])} ({size_text(saved['size'])})")


def describe(file: dict[str, Any]) -> str:
    """The attachment line under a message in ``kith log``."""
    state = {"complete": "", "fetching": f"  receiving {file['have']}/{file['chunks']}",
             "too large": "  not fetched: over this node's size limit",
             "deleted": "  deleted"}.get(file["state"], f"  {file['state']}")
    return f"[file] {name_text(file['name'])} ({size_text(file['size'])}){state}"


def name_text(name: str) -> str:
    """A file name on one line, with control characters shown as escapes (never obeyed)."""
    return escape(name.replace("\n", "\\x0a"))


def add_parsers(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    """``--file`` on ``kith send``, and ``kith save``."""
    send = sub.choices["send"]
    send.add_argument("--file", metavar="PATH",
                      help="send this file (encrypted, in chunks); TEXT becomes its caption")
    p = sub.add_parser("save", parents=common, help="save the file of a message",
                       description="Save the file attached to message EVENT into DIR (default "
                       "the current directory). Waits while the node is still receiving it. "
                       "The name is made safe (no path separators or control characters) and "
                       "an existing file is never overwritten: 'name (1).ext' is used instead.")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("event", metavar="EVENT")
    p.add_argument("dir", metavar="DIR", nargs="?", default=".")
    p.add_argument("--no-wait", action="store_true",
                   help="fail at once if the file is not all here yet")
    p.set_defaults(func=cmd_save)
