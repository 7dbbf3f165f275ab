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
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from node.datadir import DataDir
from node.errors import KithError, StorageError
from node.group.events import EventId
from node.ids import GroupId
from node.service.groups import GroupService

log = logging.getLogger(__name__)

#: The queue, in the data directory.
QUEUE_FILE = "queued-sends.jsonl"


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
    for entry in queued(datadir):
        try:
            group = service.groups[GroupId(bytes.fromhex(entry["group"]))]
            text, count = str(entry["text"]), int(entry.get("count", 1))
            reply = entry.get("reply_to")
            reply_to = EventId(bytes.fromhex(reply)) if reply else None
        except (KeyError, ValueError, TypeError):
            log.warning("dropping a queued message for a group this node is not in")
            continue
        try:
            for i in range(1, count + 1):
                body = text if count == 1 else f"{text} #{i}"
                service.send(group, body, reply_to=reply_to,
                             mentions=mentions_in(service, group, body))
                sent += 1
        except KithError as exc:
            log.warning("could not send a queued message to %s: %s",
                        group.core.state.name, exc)
    if sent:
        log.info("sent %d message(s) queued while the node was stopped", sent)
    (datadir.path / QUEUE_FILE).unlink(missing_ok=True)
    return sent
