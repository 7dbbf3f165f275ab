"""Control-socket ops for the space attachments take: ``files.usage`` and ``files.prune``.

``kith files`` and ``kith files prune`` (node.cli.files) call them; the work is
``node.service.file_storage``. Times are the node's clock (message arrival), so a
``days`` argument means the same thing on every machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from node.api.numbers import number_of
from node.errors import KithError
from node.service.files import FileService

if TYPE_CHECKING:
    from node.api.context import NodeApp

DAY = 86400.0


def _files(app: NodeApp) -> FileService:
    if app.groups is None or app.groups.files is None:
        raise KithError("this node has no data directory, so no files")
    return app.groups.files


def usage(app: NodeApp, req: dict[str, Any]) -> Any:
    """Space per group and in all; with ``group``, also that group's files one by one."""
    files = _files(app)
    assert app.groups is not None
    per_group = files.usage()
    total = files.total(per_group)
    groups = []
    for gid, used in sorted(per_group.items(), key=lambda kv: -kv[1].size):
        member = app.groups.groups.get(gid)
        groups.append({"id": gid.hex(), "name": member.core.state.name if member else "?",
                       **used.view()})
    result: dict[str, Any] = {"groups": groups, "total": total.view(),
                              "directory": str(files.chunks.root)}
    if req.get("group") is not None:
        group = app.groups.find(str(req["group"]))
        result["files"] = [
            {"id": t.event.hex(), "number": number_of(group, t.event), "name": t.ref.name,
             "size": t.ref.size, "on_disk": on_disk, "state": t.state, "time": when,
             "mine": t.author == app.groups.me}
            for t, on_disk, when in files.file_rows(group.id)]
    return result


def prune(app: NodeApp, req: dict[str, Any]) -> Any:
    """Remove the chunks of files older than ``days`` (in ``group``, else every group)."""
    files = _files(app)
    assert app.groups is not None
    days = req.get("days")
    if isinstance(days, bool) or not isinstance(days, int | float) or days < 0:
        raise KithError("days must be a number, 0 or more")
    group = app.groups.find(str(req["group"])).id if req.get("group") is not None else None
    now = time.time()
    pruned, freed = files.prune(now - days * DAY, now, group, dry_run=bool(req.get("dry_run")))
    return {"files": [{"id": t.event.hex(), "name": t.ref.name, "group": t.group.hex()}
                      for t in pruned],
            "bytes": freed, "dry_run": bool(req.get("dry_run"))}


OPS: dict[str, Callable[[NodeApp, dict[str, Any]], Any]] = {
    "files.usage": usage,
    "files.prune": prune,
}
