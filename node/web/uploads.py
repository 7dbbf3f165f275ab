"""Files between the page and the node: ``POST /api/upload`` and ``GET /api/file``.

The node sends and saves files by local path (``file.send``, ``file.save``), so the web
server stages them in the data directory, under ``web-tmp/`` (0700), one fresh 0700
directory per transfer:

* upload: the raw body is streamed to a 0600 file named after the page's file name
  (made safe: one path component, ``node.files.names.safe_name``), never above
  ``Content-Length`` nor the node's file limit (413); then ``file.send``. A background
  task polls ``file.upload`` for ``transfer`` pushes and removes the staged copy once
  the node has encrypted it into its own store.
* download: ``file.status`` is polled while the node fetches chunks from peers
  (``transfer`` pushes), then ``file.save`` writes the file into a fresh directory,
  which is streamed back as an attachment and removed after.

Leftovers of a server that died mid-transfer are removed when the next one starts
(those older than ``STALE``: two servers may share a data directory).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response

from node.errors import KithError
from node.files.attachment import HARD_MAX_FILE
from node.files.names import safe_name
from node.web import protocol
from node.web.bridge import Hub
from node.web.state import WebState

log = logging.getLogger(__name__)

#: The staging directory's name in the data directory.
STAGING = "web-tmp"
#: Seconds between progress polls of a file being sent or fetched.
FILE_POLL = 0.2
#: Age in seconds after which a staged transfer is a leftover (they last seconds).
STALE = 3600.0
#: Longest wait for a file's chunks to arrive before ``GET /api/file`` gives up.
FETCH_WAIT = 600.0


class Attachment(FileResponse):
    """A saved file going back to the browser, in bigger pieces than the default 64 KiB
    (a worker thread hop per piece)."""

    chunk_size = 1024 * 1024


def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message}, status_code=status)


def staging_dir(data_dir: Path) -> Path:
    root = data_dir / STAGING
    root.mkdir(mode=0o700, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=root))


def clean_staging(data_dir: Path, now: float, max_age: float = STALE) -> None:
    """Remove what an earlier server left behind (it stopped mid-transfer); not what is
    newer than ``max_age`` s (another ``kith web`` on the same data directory may be
    using it)."""
    try:
        entries = list((data_dir / STAGING).iterdir())
    except OSError:
        return
    for entry in entries:
        try:
            if now - entry.stat().st_mtime > max_age:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def _remove(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def upload_name(name: str) -> str:
    """The page's file name as one harmless path component: directories dropped."""
    return safe_name(name.replace("\\", "/").rsplit("/", 1)[-1])


def mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


async def upload(request: Request, hub: Hub, state: WebState) -> Response:
    group = request.query_params.get("group")
    name = request.query_params.get("name")
    text = request.query_params.get("text", "")
    if not group or not name:
        return error('an upload needs "group" and "name" in the query', 400)
    declared = request.headers.get("content-length")
    if declared is None:
        return error("an upload needs a Content-Length", 411)
    if not declared.isdigit():
        return error("Content-Length is not a number", 400)
    length = int(declared)
    limit = min(hub.max_file_size or HARD_MAX_FILE, HARD_MAX_FILE)
    if length > limit:
        return error(f"the file is {mib(length)}, over this node's limit of {mib(limit)}", 413)
    directory = await trio.to_thread.run_sync(staging_dir, state.data_dir)
    path = directory / upload_name(name)
    try:
        problem = await _receive(request, path, length)
        if problem is not None:
            await trio.to_thread.run_sync(_remove, directory)
            return problem
        result = await hub.client.call("file.send", group=group, file=str(path), text=text)
    except KithError as exc:
        await trio.to_thread.run_sync(_remove, directory)
        return error(str(exc), 400)
    except BaseException:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_remove, directory)
        raise
    hub.poke()
    hub.spawn(partial(_track_upload, hub, group, result, directory))
    return JSONResponse({"ok": True, "result": result})


async def _receive(request: Request, path: Path, length: int) -> Response | None:
    """The body into ``path`` (0600); a response if it is not what was announced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    received = 0
    async with trio.wrap_file(os.fdopen(fd, "wb")) as out:
        try:
            async for chunk in request.stream():
                received += len(chunk)
                if received > length:
                    return error("the body is longer than its Content-Length", 413)
                await out.write(chunk)
        except ClientDisconnect:
            return error("the upload was cut off", 400)
    if received != length:
        return error(f"got {received} of {length} bytes", 400)
    return None


def _transfer(group: str, view: dict[str, Any], direction: str, **fields: Any) -> dict[str, Any]:
    return protocol.push("transfer", group=group, direction=direction,
                         name=view.get("name"), state=view.get("state"), **fields)


async def _track_upload(hub: Hub, group: str, view: Any, directory: Path) -> None:
    """``transfer`` pushes while the node encrypts the file; then remove the staged copy."""
    try:
        misses = 0
        while isinstance(view, dict):
            event = view.get("event")
            over = view.get("state") != "encrypting"
            if over:  # the node has it (or gave up): the staged copy goes before we say so
                await trio.to_thread.run_sync(_remove, directory)
            hub.broadcast(_transfer(group, view, "up", upload=view.get("upload"),
                                    event=event.get("id") if isinstance(event, dict) else None,
                                    done=view.get("done"), total=view.get("size")))
            if over:
                break
            await trio.sleep(FILE_POLL)
            try:
                view = await hub.client.call("file.upload", group=group, upload=view["upload"])
            except KithError as exc:
                misses += 1
                if misses > 10:
                    log.info("web: lost track of an upload: %s", exc)
                    break
        hub.poke()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_remove, directory)


async def download(request: Request, hub: Hub, state: WebState) -> Response:
    group = request.query_params.get("group")
    event = request.query_params.get("event")
    if not group or not event:
        return error('a download needs "group" and "event" in the query', 400)
    client = hub.client
    try:
        with trio.fail_after(FETCH_WAIT):
            status = await client.call("file.status", group=group, event=event)
            while isinstance(status, dict) and status.get("state") == "fetching":
                hub.broadcast(_transfer(group, status, "down", upload=None, event=event,
                                        done=status.get("bytes_have"),
                                        total=status.get("size")))
                await trio.sleep(FILE_POLL)
                status = await client.call("file.status", group=group, event=event)
    except KithError as exc:
        return error(str(exc), 404)
    except trio.TooSlowError:
        return error("the file's chunks did not arrive in time; try again later", 504)
    directory = await trio.to_thread.run_sync(staging_dir, state.data_dir)
    try:
        result = await client.call("file.save", group=group, event=event, dir=str(directory))
        path = Path(str(result["path"]))
        if path.parent != directory:
            raise KithError("the node saved the file elsewhere")
    except (KithError, KeyError, TypeError) as exc:
        await trio.to_thread.run_sync(_remove, directory)
        return error(str(exc), 409)
    except BaseException:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_remove, directory)
        raise
    if isinstance(status, dict):
        hub.broadcast(_transfer(group, status, "down", upload=None, event=event,
                                done=status.get("size"), total=status.get("size")))
    name = str(result.get("name") or path.name)
    disposition = f"attachment; filename*=UTF-8''{quote(name, safe='')}"
    return Attachment(path, media_type="application/octet-stream",
                        headers={"Content-Disposition": disposition},
                        background=BackgroundTask(_remove, directory))
