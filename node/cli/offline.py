"""``kith log`` and ``kith send`` (``--file`` too) while no node runs on the data directory.

A running node holds the data directory's lock; a command that finds no node takes
the lock itself (so no node starts meanwhile), opens the store and loads the groups
as a starting node would, without listening or dialling. ``log`` shows the same
views the node would (nothing is marked read); ``send`` checks the group and the
message, then queues it for the node (``node.api.pending_sends``), which authors it
when it starts; ``send --file`` queues a copy of the file the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from node.api.group_ops import find_event
from node.api.pending_sends import queue_file, queue_send
from node.api.views import group_view, log_view
from node.cli.common import lock_data_dir
from node.config import Config
from node.datadir import DataDir
from node.errors import KithError, NotRunningError
from node.files.attachment import HARD_MAX_FILE
from node.group.bodies import MAX_TEXT, Role
from node.service.groups import GroupService
from node.store.db import Store

#: What ``kith send`` says when it queues.
QUEUED = "node not running: queued; it goes out when the node starts"


@contextmanager
def stored(datadir: DataDir) -> Iterator[GroupService]:
    """The groups as stored, with the data directory locked against a node starting.

    ``NotRunningError`` if nothing is stored yet (no node ever ran here).
    """
    path = datadir.database_file
    if not datadir.has_identity() or not path.exists():
        raise NotRunningError(f"no node has run with {datadir.path} yet (start one with "
                              "`kith run`)")
    lock = lock_data_dir(datadir)
    logging.disable(logging.INFO)  # "loaded N groups" is the node's news, not this command's
    try:
        from node.node import Node  # built, never started: names and our identity

        node = Node(datadir.load_identity(), Config(name=datadir.load_name(), mdns=False))
        store = Store.open(path)
        try:
            yield GroupService(node, store)
        finally:
            store.close()
    finally:
        logging.disable(logging.NOTSET)
        os.close(lock)


def log(datadir: DataDir, group: str, *, include_keys: bool, limit: int | None
        ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The stored conversation of ``group`` and its gaps (author name -> events missing)."""
    with stored(datadir) as service:
        found = service.find(group)
        missing = group_view(service, found)["missing"]
        return log_view(service, found, include_keys=include_keys, limit=limit), missing


def send_file(datadir: DataDir, group: str, path: Path, caption: str) -> dict[str, Any]:
    """Queue a copy of the file at ``path`` for ``group`` (sent when the node starts)."""
    if len(caption) > MAX_TEXT:
        raise KithError(f"a caption is at most {MAX_TEXT} characters")
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise KithError(f"{path} is not a regular file")
        if not os.access(path, os.R_OK):
            raise KithError(f"cannot read {path}: permission denied")
    except OSError as exc:
        raise KithError(f"cannot read {path}: {exc.strerror or exc}") from None
    if size > HARD_MAX_FILE:
        raise KithError(f"{path.name} is over the {HARD_MAX_FILE >> 20} MiB a file may have")
    with stored(datadir) as service:
        found = service.find(group)
        role = found.core.state.role(service.me)
        if role is None:
            raise KithError(f"you are not a member of {found.core.state.name!r}")
        if role is Role.GUEST:
            raise KithError("guests can read but not post")
        copy = queue_file(datadir, found.id.hex(), path, caption)
        return {"queued": True, "group": found.id.hex(), "file": path.name, "size": size,
                "text": caption, "copy": str(copy)}


def send(datadir: DataDir, group: str, text: str, count: int, reply: str | None
         ) -> dict[str, Any]:
    """Queue a message for ``group`` (checked now, authored when the node starts)."""
    if not text.strip():
        raise KithError("nothing to send")
    if len(text) > MAX_TEXT:
        raise KithError(f"a message is at most {MAX_TEXT} characters")
    with stored(datadir) as service:
        found = service.find(group)
        if found.core.state.role(service.me) is None:
            raise KithError(f"you are not a member of {found.core.state.name!r}")
        reply_to = find_event(found, {"reply_to": reply}, "reply_to") if reply else None
        queue_send(datadir, found.id.hex(), text, count, reply_to)
        return {"queued": True, "group": found.id.hex(), "text": text, "count": count,
                "reply_to": reply_to.hex() if reply_to else None}
