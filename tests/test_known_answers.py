"""The known-answer files under tests/vectors/kith/ are what their generator writes.

make_vectors.py implements docs/protocol.md on its own; the tests beside node's
modules (test_ids, group/test_event_vectors, files/test_chunk_vectors) check node/
against its files. Here: the files are up to date, and the generator stays
independent of node/ (it imports nothing from it).
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.vectorfiles import VENDORED_DIR

GENERATOR = VENDORED_DIR / "kith" / "make_vectors.py"
FILES = ("peer_id.json", "group_id.json", "event.json", "chunk.json", "sender_key.json")


def test_the_generator_imports_nothing_from_node() -> None:
    tree = ast.parse(GENERATOR.read_text(encoding="utf-8"))
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
               for alias in node.names}
    modules |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "nacl.signing" in modules and "hashlib" in modules
    assert not [m for m in modules if m == "node" or m.startswith(("node.", "tests"))]


def test_the_files_are_what_the_generator_writes(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(GENERATOR), str(tmp_path)], check=True, timeout=60,
                   cwd=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(FILES)
    for name in FILES:
        committed = (VENDORED_DIR / "kith" / name).read_text(encoding="utf-8")
        assert (tmp_path / name).read_text(encoding="utf-8") == committed, name


# -- the worked examples of docs/protocol.md are the first vector of each file --

PROTOCOL = VENDORED_DIR.parents[1] / "docs" / "protocol.md"


def _vectors(name: str) -> Any:
    return json.loads((VENDORED_DIR / "kith" / name).read_text(encoding="utf-8"))["vectors"]


def _block_after(text: str, marker: str) -> list[str]:
    """The lines of the first fenced code block after ``marker``."""
    after = text[text.index(marker):]
    start = after.index("```\n") + 4
    return after[start:after.index("```", start)].splitlines()


def _hex_of(lines: list[str]) -> str:
    """The hex at the start of each line (a comment follows after two spaces)."""
    out = []
    for line in lines:
        data = re.split(r"\s{2,}", line.strip())[0].replace(" ", "") if line.strip() else ""
        if re.fullmatch(r"[0-9a-f]+", data):
            out.append(data)
    return "".join(out)


def _table(lines: list[str]) -> dict[str, str]:
    """``name  value  (comment)`` lines as {name: value}."""
    return {cells[0]: cells[1] for cells in (re.split(r"\s{2,}", line.strip()) for line in lines)}


def test_the_worked_peer_id_is_the_first_vector() -> None:
    text = PROTOCOL.read_text(encoding="utf-8")
    rows = _table(_block_after(text, "Worked example (the public key of RFC 8032"))
    v = _vectors("peer_id.json")[0]
    assert rows == {"public key": v["public_key"], "checksum": v["checksum"],
                    "text": v["text"], "short id": v["short_id"],
                    "fingerprint": v["fingerprint"]}


def test_the_worked_event_is_the_first_vector() -> None:
    text = PROTOCOL.read_text(encoding="utf-8")
    v = _vectors("event.json")[0]
    assert _hex_of(_block_after(text, "bytes (140 bytes):")) == v["signing_bytes"]
    assert len(bytes.fromhex(v["signing_bytes"])) == 140
    assert len(bytes.fromhex(v["encoded"])) == 195
    flat = re.sub(r"`\s*`", "", text)  # the signature is split over two code spans
    assert v["signature"] in flat and v["event_id"] in flat and v["body"][:4] == "81a4"


def test_the_worked_group_id_and_chunk_are_the_first_vectors() -> None:
    text = PROTOCOL.read_text(encoding="utf-8")
    g = _vectors("group_id.json")[0]
    assert all(g[k] in text for k in ("creator", "nonce", "group_id"))
    c = _vectors("chunk.json")[0]
    [chunk] = c["chunks"]
    assert bytes.fromhex(c["plaintext"]) == b"hello, kith"
    assert _table(_block_after(text, "the 11-byte file `hello, kith`")) == {
        "n, size": f"{c['n']}, {c['size']}",
        "aad": " ".join((c["aad"][:22], c["aad"][22:38], c["aad"][38:])),
        "nonce_0": chunk["nonce"], "chunk_0": chunk["chunk"], "address": chunk["address"],
    }
