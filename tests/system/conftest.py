"""Fixtures of the system tests."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def tmp() -> Iterator[Path]:
    """A fresh directory with a short path: a control socket path must fit in 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="kith-") as path:
        yield Path(path)
