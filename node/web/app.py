"""The browser client's ASGI app: routes, the guard (Host, Origin, token, cookie) and headers.

``create_app`` builds the Starlette app around a ``WebState`` (the secret token, the
sessions it was exchanged for, the addresses the page may be reached at, the
"verified" marks) and a ``Hub`` (the link to the node, run by the app's lifespan).
Every request and WebSocket passes ``Guard`` first: a wrong Host (DNS rebinding), a
missing or foreign Origin on a WebSocket or POST, or no valid session cookie gets a 403
before any route runs, and every HTTP answer carries the CSP and the other headers of
``protocol.HEADERS``. The contract itself is in ``node/web/protocol.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import trio
from starlette.applications import Starlette
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketClose

from node.web import protocol, sockets, uploads
from node.web.bridge import Hub
from node.web.state import WebState

STATIC = Path(__file__).parent / "static"


class Guard:
    """Host, Origin and session checks before anything else; the headers on every answer."""

    def __init__(self, app: ASGIApp, state: WebState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.decode("latin-1").lower() not in _HEADER_NAMES]
                headers += [(k.lower().encode(), v.encode()) for k, v in protocol.HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        problem, response = self.check(scope)
        if problem is None and response is None:
            await self.app(scope, receive, send_with_headers)
        elif scope["type"] == "websocket":
            await WebSocketClose(code=1008, reason=problem or "")(scope, receive, send)
        else:
            if response is None:
                response = PlainTextResponse(problem or protocol.FORBIDDEN_TEXT, 403)
            await response(scope, receive, send_with_headers)

    def check(self, scope: Scope) -> tuple[str | None, Response | None]:
        """(the 403 text, or None) and a response to give instead of the route's."""
        state = self.state
        headers = Headers(scope=scope)
        host = headers.get("host", "").lower()
        if not state.host_ok(host):
            return "403 forbidden: this page only answers to the address kith web printed\n", None
        unsafe = scope["type"] == "websocket" or scope.get("method") not in ("GET", "HEAD")
        if unsafe and headers.get("origin") != f"http://{host}":
            return "403 forbidden: request from another site\n", None
        query = QueryParams(scope.get("query_string", b"").decode("latin-1"))
        token = query.get("token")
        if scope["type"] == "http" and scope["path"] == "/" and token is not None:
            if not state.token_ok(token):
                return protocol.FORBIDDEN_TEXT, None
            redirect = RedirectResponse("/", status_code=303)
            redirect.set_cookie(protocol.COOKIE, state.new_session(), httponly=True,
                                samesite="strict", path="/")
            return None, redirect
        cookies = _cookies(headers)
        if not state.session_ok(cookies.get(protocol.COOKIE)):
            return protocol.FORBIDDEN_TEXT, None
        return None, None


_HEADER_NAMES = {name.lower() for name in protocol.HEADERS}


def _cookies(headers: Headers) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name and name not in cookies:
            cookies[name] = value
    return cookies


async def index(request: Request) -> Response:
    page = STATIC / "index.html"
    if not page.is_file():
        return PlainTextResponse("the page is not installed (node/web/static/index.html)\n", 500)
    return FileResponse(page, media_type="text/html; charset=utf-8")


def create_app(state: WebState, hub: Hub) -> ASGIApp:
    """The app: ``/``, ``/static/*``, ``/api/upload``, ``/api/file``, ``/ws``, all guarded."""
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run)
            yield
            nursery.cancel_scope.cancel()

    async def ws(websocket: WebSocket) -> None:
        await sockets.serve(websocket, hub, state)

    async def upload(request: Request) -> Response:
        return await uploads.upload(request, hub, state)

    async def download(request: Request) -> Response:
        return await uploads.download(request, hub, state)

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET", "HEAD"]),
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
            Route("/api/upload", upload, methods=["POST"]),
            Route("/api/file", download, methods=["GET"]),
            WebSocketRoute("/ws", ws),
        ],
        lifespan=lifespan,
    )
    return Guard(app, state)
