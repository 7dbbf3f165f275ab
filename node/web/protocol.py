"""The browser client's contract: HTTP routes, the WebSocket messages, and their limits.

This docstring is the contract between the server (``node/web/*.py``) and the page
(``node/web/static/``). The constants and helpers below are the server's side of it.

Architecture
------------
``kith web`` (and ``kith run --web``) runs a Starlette app served by Hypercorn's trio
worker on 127.0.0.1 (default port 8707; a free port if that one is taken;
``--web-listen HOST:PORT``). The app talks to the node only through the control socket
(JSON lines, ``node/api/server.py`` OPS), so attach mode (a node already runs on the data
directory) and in-process mode (``kith web`` starts the node itself) work the same way.
It prints ONE line on stdout, the URL with a fresh secret token,
``http://127.0.0.1:PORT/?token=<43 url-safe chars>``, and opens it in the default browser
unless ``--no-open``. The page (index.html, app.js, style.css) is shipped in the package
and fetches nothing from anywhere else.

HTTP
----
* ``GET /?token=T``: if T is right, sets cookie ``kith_session=<random>`` (HttpOnly,
  SameSite=Strict, Path=/) and redirects (303) to ``/``. ``GET /`` with a valid cookie
  serves index.html. Without a valid cookie or token: 403, one line of plain text
  ("... open the URL kith web printed ..."). A wrong token is the same 403.
* ``GET /static/<file>``: the page's assets (cookie required; 404 for anything not in
  the static directory, including ``..``).
* Every response carries ``Content-Security-Policy`` (``CSP`` below: no inline scripts,
  no inline style attributes in HTML, no eval; set styles from JS via element.style or
  classes), ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``,
  ``Cache-Control: no-store``.
* Host must be ``127.0.0.1:PORT``, ``localhost:PORT``, ``[::1]:PORT`` or the
  ``--web-listen`` host:port (listening on 0.0.0.0 or ``::``: also any IP literal with
  PORT, how the LAN reaches it); otherwise 403 (a name could be DNS rebinding). For the
  WebSocket and every POST, ``Origin`` must be ``http://`` + that Host; otherwise 403.
* ``POST /api/upload?group=<group>&name=<file name, URL-encoded>[&text=<caption>]``, the raw
  file bytes as body (not multipart); ``Content-Length`` required (411 without) and at
  most the node's file limit (413 beyond; also 413 if more bytes arrive than announced).
  The server streams the body to a 0600 temp file in the data directory, asks the node
  to send it (``file.send``), and answers ``{"ok": true, "result": <file.send's result:
  {"upload", "name", "size", "done", "state", "error", "event"}>}`` or
  ``{"ok": false, "error": "<one line>"}`` (4xx/5xx). The file name is only a name:
  directories in it are dropped (``a/../b.txt`` is sent as ``b.txt``). Progress: first
  XMLHttpRequest's ``upload.onprogress``, then ``transfer`` pushes (direction "up") while
  the node encrypts and sends it. The temp file is removed once the node has it.
* ``GET /api/file?group=<group>&event=<event id>``: the server asks the node to save the
  attachment (``file.save`` into a temp dir; the node may first fetch chunks from peers,
  shown as ``transfer`` pushes with direction "down"), then returns it with
  ``Content-Disposition: attachment; filename*=UTF-8''<percent-quoted name>`` and
  ``Content-Type: application/octet-stream``. Errors: JSON as above with 4xx/5xx.
  No Origin check (a navigation or ``<a download>`` sends none); the SameSite=Strict
  cookie is required.

WebSocket ``/ws`` (cookie and Origin checked before accepting; else 403)
-------------------------------------------------------------------------
Client -> server, one JSON object per text message: ``{"id": <int>, "op": "<name>", ...}``.
``op`` is any control-socket op (``group.create``, ``group.list``, ``group.members``,
``group.add``, ``group.remove``, ``group.ban``, ``group.unban``, ``group.approve``,
``group.discover``, ``group.join``, ``group.role``, ``group.leave``, ``group.mute``,
``group.notify``, ``send``, ``edit``, ``delete``, ``react``, ``pin``, ``typing``, ``log``,
``file.status``, ``file.upload``, ``peers``, ``id`` ...; same params as the control socket,
see node/api/group_ops.py) EXCEPT ``log`` with ``follow`` and the ops that take a local
path (``file.send``, ``file.save``: use the HTTP endpoints), plus these web ops:

* ``{"op": "watch", "group": G}``: G becomes the conversation this socket watches
  (replacing any other; ``"group": null`` stops). Result: the ``log`` result for G
  (limit 500, read: true, so opening a conversation marks it read, like ``kith chat``).
  With ``"read": false`` (say, while the page is hidden) neither this nor the ``log``
  pushes that follow mark anything read, until a ``watch`` with ``"read": true``.
* ``{"op": "verify", "peer": <full peer id>, "verified": true|false}``: the user's
  out-of-band fingerprint check, kept in ``web-verified.json`` in the data directory;
  result null.
* ``{"op": "verified"}``: the list of verified peer ids (full ids, sorted).

Requests run concurrently (a slow ``group.discover`` does not hold up a ``send``); at most
``MAX_INFLIGHT`` at once per socket, beyond which the server stops reading until one ends.
Answers may so come in another order than the requests: match them by ``id``.

Server -> client:

* answers: ``{"id": n, "ok": true, "result": ...}`` or ``{"id": n, "ok": false,
  "error": "..."}`` (an unknown or refused op, bad params, the node's own error).
* pushes (no id), ``{"push": <kind>, ...}``:

  - ``{"push": "hello", "me": <the id op's result, or null while the node is down>,
    "mode": "attached"|"in this process"}``: first, on connect.
  - ``{"push": "groups", "groups": <group.list result>}``: on connect and whenever it
    changes (unread counts, new groups, names).
  - ``{"push": "peers", "peers": <peers result>}``: on connect and whenever it changes
    (presence).
  - ``{"push": "log", "group": G, "log": <log result for G>, "members": <group.members
    result for G>}``: for the watched group, whenever anything in it changed (new
    message, edit, reaction, delete, pin, delivery and read marks, members, presence):
    the page re-renders the conversation from it. Debounced (at most ``1/DEBOUNCE`` a
    second). The log is fetched with read: true (the conversation is on screen) unless
    the last ``watch`` said ``"read": false``.
  - ``{"push": "event", "group": G, "event": <event view>}``: each new event of ANY group
    (as ``kith log --follow --json`` prints it), for notifications (mentions, unmuted
    groups); the page need not render from these. A slow page may miss some (see below).
  - ``{"push": "typing", "group": G, "names": [..]}``: who is typing in the watched group
    (names; empty list when they stopped, ``TYPING_SHOWN`` s after their last notice).
  - ``{"push": "transfer", "group": G, "event": <event id or null while encrypting>,
    "upload": <upload id or null>, "name": <file name>, "done": bytes, "total": bytes,
    "direction": "up"|"down", "state": <the node's state word>}``: progress of a file
    being sent or fetched (sent to every socket).
  - ``{"push": "node", "state": "down"|"up"}``: the node stopped / came back (attach
    mode: the server reconnects to the control socket by itself; the page shows a banner
    and reloads its state on "up"; a ``hello`` follows "up").

Bounded memory: the server keeps at most one pending ``groups``, ``peers``, ``log``,
``typing`` and ``node`` push per socket (a newer one replaces an older one not yet sent),
one ``transfer`` per file, and the newest ``MAX_EVENTS`` ``event`` pushes.
Text messages over ``MAX_MESSAGE`` bytes (1 MiB) from the client close the socket (1009);
malformed JSON or a non-object gets ``{"id": null, "ok": false, "error": "..."}`` and the
socket stays open; an object without an integer ``id`` gets its answer with ``"id": null``.

Rendering rules for the page: every text that came from the network (names, messages,
file names, group names, errors) is inserted with textContent / createTextNode, never
innerHTML; mentions are highlighted by splitting text into nodes.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

#: The session cookie's name.
COOKIE = "kith_session"
#: The largest WebSocket message accepted from the page.
MAX_MESSAGE = 1024 * 1024
#: Requests of one socket running at once.
MAX_INFLIGHT = 16
#: ``event`` pushes kept for a slow page (the oldest are dropped beyond).
MAX_EVENTS = 200
#: Seconds between two ``log`` pushes of the watched group (at most).
DEBOUNCE = 0.2
#: Messages of the watched group in ``watch`` and ``log`` pushes.
LOG_LIMIT = 500
#: Seconds a typing notice is shown.
TYPING_SHOWN = 6.0
#: Sessions remembered (cookies); the oldest is forgotten beyond.
MAX_SESSIONS = 64
#: The default address of the page.
DEFAULT_WEB_HOST = "127.0.0.1"
DEFAULT_WEB_PORT = 8707

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
#: Headers on every response.
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
FORBIDDEN_TEXT = ("403 forbidden: open the URL that `kith web` printed "
                  "(it carries the secret token)\n")

#: Control-socket ops the page may not use through the WebSocket (and why).
REFUSED = {
    "file.send": "send files with POST /api/upload",
    "file.save": "fetch files with GET /api/file",
    "files.prune": "prune files with `kith files prune`",
}
#: The ops the web server answers itself.
WEB_OPS = ("watch", "verify", "verified")


class BadRequest(Exception):
    """A WebSocket message that cannot be run; its text is the one-line error."""

    def __init__(self, message: str, request_id: int | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


def new_secret() -> str:
    """A token or session id: 32 random bytes, 43 url-safe characters."""
    return secrets.token_urlsafe(32)


def parse(text: str | bytes) -> tuple[int | None, str, dict[str, Any]]:
    """(id, op, params) of a WebSocket message, or ``BadRequest``."""
    try:
        request = json.loads(text)
    except (ValueError, RecursionError):
        raise BadRequest("a request is one JSON object") from None
    if not isinstance(request, dict):
        raise BadRequest("a request is one JSON object")
    raw_id = request.pop("id", None)
    request_id = raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else None
    op = request.pop("op", None)
    if not isinstance(op, str) or not op:
        raise BadRequest('a request needs an "op" string', request_id)
    if op in REFUSED:
        raise BadRequest(f"{op} is not available here: {REFUSED[op]}", request_id)
    if op == "log" and request.get("follow"):
        raise BadRequest('log with "follow" is not available here: use watch', request_id)
    return request_id, op, request


def answer(request_id: int | None, result: Any) -> dict[str, Any]:
    return {"id": request_id, "ok": True, "result": result}


def failure(request_id: int | None, error: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": error}


def push(kind: str, **fields: Any) -> dict[str, Any]:
    return {"push": kind, **fields}


def allowed_hosts(listen_host: str, port: int) -> frozenset[str]:
    """The Host headers the server answers (anything else may be DNS rebinding)."""
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}
    hosts.add(f"[{listen_host}]:{port}" if ":" in listen_host else f"{listen_host}:{port}")
    return frozenset(h.lower() for h in hosts)


def page_url(listen_host: str, port: int, token: str) -> str:
    """The URL ``kith web`` prints (loopback when it listens on every address)."""
    host = listen_host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/?token={token}"
