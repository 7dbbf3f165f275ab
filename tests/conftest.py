"""Shared fixtures: an autojump clock and identities."""

from __future__ import annotations

import os

import pytest
import trio.testing
from hypothesis import settings

from node.crypto.keys import IdentityKey

settings.register_profile("ci", deadline=None, derandomize=False)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture
def alice() -> IdentityKey:
    return IdentityKey(bytes(range(32)))


@pytest.fixture
def bob() -> IdentityKey:
    return IdentityKey(bytes(range(32, 64)))
