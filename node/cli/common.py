"""What the ``kith`` commands share: output, terminal escaping, the data directory lock,
names, network keys and one-line errors.

``main.py`` builds the parser and runs the node; ``chat.py``, ``groups.py``,
``files.py`` and ``open_groups.py`` implement commands. They all import from here
and never from each other's modules for these helpers, so no command module needs
another one just to print or to lock.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from node.crypto.netkey import parse_network_key_file
from node.datadir import DataDir
from node.errors import ConfigError
from node.wire.hello import MAX_NAME_CHARS

#: What EVENT means wherever a command takes one.
EVENT_HELP = ("a message: its number, as `kith log GROUP` and `kith chat` show it ([3] or "
              "3), or its id: the 8 hex digits after the number (more if 8 match several)")


class HelpFormatter(argparse.HelpFormatter):
    """Reflows each line of a description or epilog; lines indented by two spaces
    (examples) are kept as they are."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        fill = super()._fill_text
        return "\n".join(line if line.startswith("  ") else fill(line, width, indent)
                         for line in text.splitlines())


def examples(*lines: str) -> str:
    """An epilog of example command lines."""
    return "\n".join(["example:" if len(lines) == 1 else "examples:",
                      *(f"  {line}" for line in lines)])


class IntermixedParser(argparse.ArgumentParser):
    """A sub-command parser that takes options anywhere, before or after the positionals.

    Plain argparse stops filling ``TEXT...`` at the first option, so
    ``kith send lab --count 2 hello`` left ``hello`` unrecognised. A parser with
    sub-commands of its own (``kith group``) cannot be parsed intermixed; it parses
    as usual and its sub-commands are parsed intermixed.
    """

    _parsing = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None,
    ) -> tuple[argparse.Namespace, list[str]]:
        nested = any(a.nargs in (argparse.PARSER, argparse.REMAINDER) for a in self._actions)
        if self._parsing or nested:
            return super().parse_known_args(args, namespace)
        self._parsing = True  # parse_known_intermixed_args calls parse_known_args twice
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False


def out(args: argparse.Namespace, result: Any, text: str) -> int:
    """Print ``result`` as JSON with ``--json``, else ``text``; exit status 0."""
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(text)
    return 0


def width(text: str) -> int:
    """Columns ``text`` takes on a terminal: wide (East Asian, emoji) characters take
    two, combining marks, joiners and variation selectors none."""
    total, joined = 0, False
    for ch in text:
        if unicodedata.category(ch) in ("Mn", "Me", "Cf") or ch in "\ufe0e\ufe0f":
            joined = ch == "\u200d"  # a joined emoji sequence shows as one
            continue
        if not joined:
            total += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
        joined = False
    return total


def table(rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` as left-aligned columns (by display width, so emoji line up)."""
    widths = [max(width(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c + " " * (w - width(c))
                        for c, w in zip(r, widths, strict=True)).rstrip())


def escape(text: str) -> str:
    """``text`` safe for a terminal: control and format characters shown as escapes.

    A message can carry ESC sequences (colours, cursor moves, a fake prompt, a title
    change) or bidi overrides; printed raw, the terminal would obey them. Newlines and
    tabs stay (indented), and the zero-width joiner that emoji sequences need.
    """
    out = []
    for ch in text:
        if ch == "\n":
            out.append("\n         ")
        elif ch == "\t" or ch == "\u200d":
            out.append(ch)
        elif unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
                       if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def check_name(name: str) -> str:
    """A display name as given on the command line, trimmed; ``ConfigError`` if unusable."""
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise ConfigError(f"a name is 1..{MAX_NAME_CHARS} printable characters")
    return name


def load_network_key(path: str) -> bytes:
    """The network key in the file at ``path`` (``kith network-key`` writes one)."""
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read network key {path}: {exc.strerror}") from exc
    return parse_network_key_file(content)


def lock_data_dir(datadir: DataDir) -> int:
    """Take the data directory's node lock (one node per directory); the locked fd."""
    fd = os.open(datadir.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError(
            f"another node is already running with data directory {datadir.path}"
        ) from None
    return fd


def only_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The single error inside (nested) one-error groups, else the group itself.

    Nurseries wrap errors; a ``KithError`` (say, the port is taken) is still shown
    as its one line.
    """
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def mebibytes(text: str) -> int:
    """An option in MiB (fractions allowed) to bytes, within the attachment hard cap
    (``--max-file-size`` of ``kith run`` and ``kith chat``)."""
    from node.files.attachment import HARD_MAX_FILE

    try:
        size = int(float(text) * (1 << 20))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of MiB: {text!r}") from None
    if not 0 <= size <= HARD_MAX_FILE:
        raise argparse.ArgumentTypeError(f"must be 0..{HARD_MAX_FILE >> 20} MiB")
    return size
