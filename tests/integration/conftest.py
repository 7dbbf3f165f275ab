"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration import LogWatch, watching_logs


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[LogWatch]:
    """Every log record at DEBUG and above, waitable (see ``LogWatch``)."""
    with watching_logs(caplog) as watch:
        yield watch
