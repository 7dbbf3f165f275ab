"""Messages queued by ``kith send`` while the node was stopped.

Theory of operation
-------------------
A node owns its data directory while it runs (it holds the directory's lock), so a
command that finds no node takes the same lock and then has the directory to itself:
no node can start meanwhile and no other command writes at the same time.

(``kith log`` then reads the store: ``node.cli.offline``.)

``kith send`` cannot author the message there: authoring moves the sender's chain key
and counters, which belongs to the node. It appends the request, with the group's full
id, to ``QUEUE_FILE`` (one JSON object per line, mode 0600), and the node authors each
queued message when it starts (``send_queued``, before it listens), in the order they
were queued, then removes the file. Each message is then in the node's outbox like any
other and goes out as peers connect. A node killed in the instant between authoring the
queued messages and removing the file sends them again at its next start (at least once,
never lost).

Times: a queued message shows the time the user ran ``kith send`` (``queued_at``), not
the node's start: the node authors it, stores it, then sets its stored time
(``Store.set_received_at``) and the member's ``joined_at`` to that moment (never later
than now). Other members show when their node received it, as for any message.

Files (``kith send GROUP --file PATH``): the command copies the file into
``QUEUED_FILES/<when>-<random>/`` (0700; the copy 0600, with its name kept, and
``send.json`` beside it), so what goes out is the file as it was when the user sent
it, even if it is changed or removed meanwhile. The copy is made in a hidden directory
and renamed into place, so a command interrupted mid-copy queues nothing. The node
sends each queued file once the group service runs (``send_queued_files``: encrypted
and chunked like any file, one at a time, in the order queued, after the queued texts)
and removes its directory when the message is out or refused (a refusal is logged: the
file is over this node's ``--max-file-size``, or we are no longer a member). A node
stopped mid-upload sends the file at its next start.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from node.datadir import DataDir
from node.errors import KithError, StorageError
from node.group.events import Event, EventId
from node.ids import GroupId
from node.service.groups import Group, GroupService

log = logging.getLogger(__name__)

#: The queue, in the data directory.
QUEUE_FILE = "queued-sends.jsonl"
#: Queued files, one directory each, in the data directory.
QUEUED_FILES = "queued-files"


def queue_send(datadir: DataDir, group: str, text: str, count: int = 1,
               reply_to: EventId | None = None) -> None:
    """Append a message for group id ``group`` to the queue (under the directory's lock)."""
    entry: dict[str, Any] = {"group": group, "text": text, "count": count,
                             "queued_at": time.time()}
    if reply_to is not None:
        entry["reply_to"] = reply_to.hex()
    line = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
    path = datadir.path / QUEUE_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"cannot queue the message in {path}: {exc.strerror}") from exc


def queued(datadir: DataDir) -> list[dict[str, Any]]:
    """The queued requests, oldest first (unreadable lines are skipped and logged)."""
    path = datadir.path / QUEUE_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read the queued messages in %s: %s", path, exc)
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            log.warning("skipping a damaged line of %s", path)
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def send_queued(datadir: DataDir, service: GroupService) -> int:
    """Author every queued message (the node does this as it starts); how many."""
    from node.api.group_ops import mentions_in

    sent = 0
    timed: list[tuple[Group, Event, float]] = []
    for entry in queued(datadir):
        try:
            group = service.groups[GroupId(bytes.fromhex(entry["group"]))]
            text, count = str(entry["text"]), int(entry.get("count", 1))
            reply = entry.get("reply_to")
            reply_to = EventId(bytes.fromhex(reply)) if reply else None
            at = float(entry.get("queued_at", 0))
        except (KeyError, ValueError, TypeError):
            log.warning("dropping a queued message for a group this node is not in")
            continue
        try:
            for i in range(1, count + 1):
                body = text if count == 1 else f"{text} #{i}"
                event = service.send(group, body, reply_to=reply_to,
                                     mentions=mentions_in(service, group, body))
                timed.append((group, event, at))
                sent += 1
        except KithError as exc:
            log.warning("could not send a queued message to %s: %s",
                        group.core.state.name, exc)
    if timed and service.commit():  # stored now, so their time can be set
        backdate(service, timed)
    if sent:
        log.info("sent %d message(s) queued while the node was stopped", sent)
    (datadir.path / QUEUE_FILE).unlink(missing_ok=True)
    return sent


def backdate(service: GroupService, sent: list[tuple[Group, Event, float]]) -> None:
    """Give each of our stored events the time the user queued it (``at``), if earlier
    than the time it was authored; one transaction for all."""
    earlier = [(group, event, at) for group, event, at in sent
               if 0 < at < group.joined_at.get(event.id, time.time())]
    try:
        with service.store.transaction():
            for _, event, at in earlier:
                service.store.set_received_at(event.id, at)
    except KithError as exc:  # (storage paused: they keep the time they were authored at)
        log.warning("could not keep the time queued messages were sent: %s", exc)
        return
    for group, event, at in earlier:
        group.joined_at[event.id] = at  # (an existing key: the storage order stays)


def queue_file(datadir: DataDir, group: str, path: Path, caption: str) -> Path:
    """Copy ``path`` into the queue for group id ``group``; the queued copy."""
    root = datadir.path / QUEUED_FILES
    staging = root / f".new-{secrets.token_hex(8)}"
    name = path.name or "file"
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        staging.mkdir(mode=0o700)
        copy = staging / name
        with path.open("rb") as source:
            fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
                target.flush()
                os.fsync(target.fileno())
        entry = {"group": group, "name": name, "text": caption, "queued_at": time.time()}
        fd = os.open(staging / "send.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False))
        final = root / f"{time.time_ns()}-{secrets.token_hex(4)}"
        staging.rename(final)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise StorageError(f"cannot queue {path} in {root}: {exc.strerror or exc}") from exc
    return final / name


def queued_files(datadir: DataDir) -> list[Path]:
    """The directories of queued files, oldest first (a half-made one is removed)."""
    root = datadir.path / QUEUED_FILES
    try:
        entries = sorted(root.iterdir(), key=lambda p: p.name)
    except OSError:
        return []
    ready = []
    for entry in entries:
        if entry.name.startswith(".new-"):
            shutil.rmtree(entry, ignore_errors=True)  # a copy cut short: never queued
        elif entry.is_dir():
            ready.append(entry)
    return ready


async def send_queued_files(datadir: DataDir, service: GroupService) -> int:
    """Send every queued file, one at a time (the node runs this as it starts); how many."""
    from node.api.group_ops import mentions_in

    sent = 0
    for folder in queued_files(datadir):
        try:
            entry = json.loads((folder / "send.json").read_text(encoding="utf-8"))
            group = service.groups[GroupId(bytes.fromhex(entry["group"]))]
            name, caption = str(entry["name"]), str(entry.get("text", ""))
            at = float(entry.get("queued_at", 0))
        except (OSError, KeyError, ValueError, TypeError):
            log.warning("dropping a queued file for a group this node is not in")
            shutil.rmtree(folder, ignore_errors=True)
            continue
        if service.files is None:
            return sent
        label = group.core.state.name
        try:
            upload = service.files.start_upload(group, folder / name, caption,
                                                mentions_in(service, group, caption))
            await upload.finished.wait()
            if upload.error is not None:
                raise KithError(upload.error)
        except KithError as exc:
            log.warning("could not send the file %s queued for %s: %s", name, label, exc)
        else:
            assert upload.event is not None
            if service.commit():
                backdate(service, [(group, upload.event, at)])
            log.info("sent the file %s queued for %s while the node was stopped", name, label)
            sent += 1
        shutil.rmtree(folder, ignore_errors=True)
    return sent
