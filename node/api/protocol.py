"""The control socket protocol: one JSON object per line, over a Unix socket.

Request:  ``{"op": "<name>", ...params}``
Response: ``{"ok": true, "result": <value>}`` or ``{"ok": false, "error": "<one line>"}``

A client may send several requests on one connection; each gets one
response line, in order. Lines are capped at ``MAX_LINE`` bytes.
"""

from __future__ import annotations

import json
from typing import Any

MAX_LINE = 1024 * 1024


def encode(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n"


def ok(result: Any) -> dict[str, Any]:
    return {"ok": True, "result": result}


def error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}
