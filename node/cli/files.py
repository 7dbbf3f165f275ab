"""``kith send GROUP --file PATH``, ``kith save GROUP EVENT [DIR]`` and ``kith files``.

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
from node.cli.common import EVENT_HELP, escape, out, table
from node.datadir import DataDir
from node.errors import KithError, NotRunningError

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
    try:
        upload = client.call(datadir.control_socket, "file.send", group=args.group,
                             file=str(path), text=text)
    except NotRunningError:
        from node.cli import offline

        queued = offline.send_file(datadir, args.group, path, text)
        return out(args, queued, f"node not running: queued {name_text(path.name)} "
                   f"({size_text(queued['size'])}); it goes out when the node starts")
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
             "deleted": "  deleted",
             "pruned": "  removed to free space (kith save fetches it again)",
             }.get(file["state"], f"  {file['state']}")
    return f"[file] {name_text(file['name'])} ({size_text(file['size'])}){state}"


def name_text(name: str) -> str:
    """A file name on one line, with control characters shown as escapes (never obeyed)."""
    return escape(name.replace("\n", "\\x0a"))


def age_text(seconds: float) -> str:
    """How long ago, roughly: 40s, 12m, 5h, 3d."""
    for unit, scale in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= scale:
            return f"{int(seconds // scale)}{unit}"
    return f"{max(int(seconds), 0)}s"


def cmd_files(args: argparse.Namespace, datadir: DataDir) -> int:
    params: dict[str, Any] = {} if args.group is None else {"group": args.group}
    usage = client.call(datadir.control_socket, "files.usage", **params)
    if args.json:
        return out(args, usage, "")
    if args.group is not None:
        now = time.time()
        rows: list[tuple[str, ...]] = [("N", "EVENT", "AGE", "SIZE", "ON DISK", "STATE",
                                        "NAME")]
        rows += [(f"[{f['number']}]" if f.get("number") else "", f["id"][:12],
                  age_text(now - f["time"]) if f["time"] else "?",
                  size_text(f["size"]), size_text(f["on_disk"]),
                  f["state"] + (" (yours)" if f["mine"] else ""), name_text(f["name"]))
                 for f in usage["files"]]
        if len(rows) == 1:
            print(f"no files in {escape(args.group)}")
        else:
            table(rows)
        return 0
    total = usage["total"]
    if not usage["groups"]:
        print(f"no attachments stored ({usage['directory']})")
        return 0
    summary: list[tuple[str, ...]] = [("GROUP", "FILES", "ON DISK")]
    summary += [(escape(g["name"]), str(g["files"]), size_text(g["bytes"]))
                for g in usage["groups"]]
    summary.append(("total", str(total["files"]), size_text(total["bytes"])))
    table(summary)
    print(f"in {usage['directory']}; free space with: kith files prune --older-than DAYS")
    return 0


def cmd_prune(args: argparse.Namespace, datadir: DataDir) -> int:
    params: dict[str, Any] = {"days": args.older_than, "dry_run": args.dry_run}
    if args.group is not None:
        params["group"] = args.group
    result = client.call(datadir.control_socket, "files.prune", **params)
    count = len(result["files"])
    verb = "would free" if args.dry_run else "freed"
    if count == 0:
        text = f"no files older than {args.older_than:g} day(s) to remove"
    else:
        text = (f"{verb} {size_text(result['bytes'])}: {count} file(s) older than "
                f"{args.older_than:g} day(s)" + ("" if args.dry_run else " removed") +
                ". The messages stay; kith save fetches a file again from a member "
                "who still has it.")
    return out(args, result, text)


def add_parsers(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    """``--file`` on ``kith send``, ``kith save`` and ``kith files``."""
    send = sub.choices["send"]
    send.add_argument("--file", metavar="PATH",
                      help="send this file (encrypted, in chunks); TEXT becomes its caption")
    p = sub.add_parser("save", parents=common, help="save the file of a message",
                       description="Save the file attached to message EVENT into DIR (default "
                       "the current directory). Waits while the node is still receiving it. "
                       "The name is made safe (no path separators or control characters) and "
                       "an existing file is never overwritten: 'name (1).ext' is used instead.")
    p.add_argument("group", metavar="GROUP")
    p.add_argument("event", metavar="EVENT", help=EVENT_HELP)
    p.add_argument("dir", metavar="DIR", nargs="?", default=".")
    p.add_argument("--no-wait", action="store_true",
                   help="fail at once if the file is not all here yet")
    p.set_defaults(func=cmd_save)

    p = sub.add_parser("files", parents=common, help="space taken by attachments; free it",
                       description="Show how much space the files of messages take on this "
                       "node, per group and in all; with --group, each file of that group. "
                       "Files stay until their message is deleted or you prune them. Chunks "
                       "no message needs are removed when the node starts.",
                       epilog="example: kith files --group lab")
    p.add_argument("--group", metavar="GROUP", help="list the files of this group one by one")
    p.set_defaults(func=cmd_files)
    fsub = p.add_subparsers(dest="files_command", metavar="COMMAND")
    q = fsub.add_parser("prune", parents=common, help="remove old files to free space",
                        description="Remove from this node the files of messages older than "
                        "DAYS (in GROUP, else in every group). The messages stay; saving such "
                        "a file later (kith save) fetches it again from a member who still "
                        "has it. Copies you saved elsewhere are not touched.",
                        epilog="example: kith files prune --older-than 30 --dry-run")
    q.add_argument("--older-than", metavar="DAYS", type=float, required=True,
                   help="remove files whose message arrived more than DAYS days ago "
                   "(0: every file)")
    q.add_argument("--group", metavar="GROUP", help="only the files of this group")
    q.add_argument("--dry-run", action="store_true",
                   help="only say what would be removed and how much it would free")
    q.set_defaults(func=cmd_prune)
