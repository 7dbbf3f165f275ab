"""Where the shared test vectors live.

Vectors are owned by ``shared/vectors/`` next to the repository (the CI clone has
``shared/`` beside it). A copy is vendored under ``tests/vectors/`` for clones that are
not next to ``shared/``; ``tests/crypto/test_noise_vectors.py`` checks the two agree.
A missing vector file fails the test: a vector test that silently skips proves nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
VENDORED_DIR = TESTS_DIR / "vectors"


def shared_vector_path(relative: str) -> Path | None:
    """``shared/vectors/<relative>`` in the nearest parent of the repo root, if any."""
    # REPO_ROOT.parents starts at <root>/.., then walks up to the filesystem root.
    for parent in REPO_ROOT.parents:
        candidate = parent / "shared" / "vectors" / relative
        if candidate.is_file():
            return candidate
    return None


def vendored_vector_path(relative: str) -> Path:
    """``tests/vectors/<relative>``, whether or not it exists."""
    return VENDORED_DIR / relative


def vector_path(relative: str) -> Path:
    """The shared vector file if reachable, else the vendored copy; fail if neither."""
    shared = shared_vector_path(relative)
    if shared is not None:
        return shared
    vendored = vendored_vector_path(relative)
    if vendored.is_file():
        return vendored
    pytest.fail(
        f"test vector file {relative!r} not found: looked for shared/vectors/{relative} in "
        f"the parents of {REPO_ROOT} and for {vendored}",
        pytrace=False,
    )
