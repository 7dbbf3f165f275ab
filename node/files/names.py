"""Safe file names for saving an attachment (pure).

A file name arrives from another member inside its message: it may hold path
separators, ``..``, control or terminal escape characters, or be empty. Before
saving, ``safe_name`` turns it into one harmless path component: never a path,
never hidden, never empty, printable, at most ``MAX_NAME_BYTES`` bytes of UTF-8.
``candidates`` gives the names to try in order, so that an existing file is
never overwritten: ``report.pdf``, ``report (1).pdf``, ``report (2).pdf``, ...
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator

#: Most bytes of a saved file name (ext4, APFS and NTFS allow 255).
MAX_NAME_BYTES = 200
FALLBACK = "attachment"
#: Names Windows reserves (harmless on POSIX, but a file copied there would break).
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
             *(f"lpt{i}" for i in range(1, 10))}


def safe_name(name: str) -> str:
    """One path component that says what ``name`` said, with nothing dangerous left."""
    out = []
    for ch in unicodedata.normalize("NFC", name):
        category = unicodedata.category(ch)
        if ch in "/\\:" or category[0] == "C" or category in ("Zl", "Zp"):
            out.append("_")  # separators, controls, format chars (bidi overrides), unassigned
        elif category == "Zs":
            out.append(" ")  # odd spaces (no-break, ideographic) look like a plain one
        else:
            out.append(ch)
    text = "".join(out).strip()
    text = text.lstrip(".")  # no hidden files, no "." or ".."
    text = text.rstrip(". ")  # Windows drops trailing dots and spaces
    if not text:
        text = FALLBACK
    if text.split(".")[0].lower() in _RESERVED:
        text = "_" + text
    return _truncate(text)


def _split(text: str) -> tuple[str, str]:
    """(stem, ".ext") with a short extension kept apart; ("name", "") without one."""
    stem, dot, ext = text.rpartition(".")
    if not dot or not stem or not ext.isalnum() or len(ext.encode()) > 16:
        return text, ""
    return stem, dot + ext


def _cut(text: str, limit: int) -> str:
    return text.encode()[:limit].decode(errors="ignore")


def _truncate(text: str, limit: int = MAX_NAME_BYTES) -> str:
    """Cut to ``limit`` bytes of UTF-8, keeping the extension when it is short."""
    if len(text.encode()) <= limit:
        return text
    stem, ext = _split(text)
    return _cut(stem, limit - len(ext.encode())) + ext


def candidates(name: str) -> Iterator[str]:
    """``name``, then ``stem (1).ext``, ``stem (2).ext``, ... (each a safe name)."""
    base = safe_name(name)
    yield base
    stem, ext = _split(base)
    n = 1
    while True:
        suffix = f" ({n}){ext}"
        yield _cut(stem, MAX_NAME_BYTES - len(suffix.encode())) + suffix
        n += 1
