"""Admission (``node.net.admission``): handshake slots per address, the channel cap, and
an accept that survives running out of descriptors or memory."""

from __future__ import annotations

import errno
import logging

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from node.config import Config
from node.logs import RateLimitedLog
from node.net import admission
from node.net.admission import (
    ACCEPT_PAUSE,
    RESERVED_DESCRIPTORS,
    Admission,
    Limits,
    Refusal,
    fit_to_descriptors,
)

LOGGER = "tests.admission"


def test_the_defaults_fit_the_usual_descriptor_limit() -> None:
    cfg = Config()
    assert (cfg.max_channels, cfg.max_handshaking) == (256, 64)
    assert fit_to_descriptors(256, 64, 1024) == Limits(256, 64, 16)


def test_a_low_descriptor_limit_lowers_both_caps_to_fit() -> None:
    lim = fit_to_descriptors(256, 64, 192)
    budget = 192 - RESERVED_DESCRIPTORS
    assert lim.channels + lim.handshakes <= budget
    assert (lim.channels, lim.handshakes, lim.per_address) == (52, 12, 3)


def test_an_absurdly_low_limit_still_leaves_something() -> None:
    assert fit_to_descriptors(256, 64, 20) == Limits(1, 2, 2)


def test_one_address_holds_a_quarter_of_the_slots() -> None:
    adm = Admission(admission.limits(channels=100, handshakes=8))
    assert adm.limits.per_address == 2
    assert [adm.admit("10.0.0.9", 0) for _ in range(3)] == [None, None, Refusal.ADDRESS]
    # Others still get in, up to the total.
    assert [adm.admit(f"10.0.0.{i}", 0) for i in range(1, 7)] == [None] * 6
    assert adm.admit("10.0.0.7", 0) is Refusal.HANDSHAKES
    assert adm.handshaking == 8
    adm.done("10.0.0.9")
    assert adm.held_by("10.0.0.9") == 1
    assert adm.admit("10.0.0.7", 0) is None


def test_the_channel_cap_refuses_before_any_handshake() -> None:
    adm = Admission(admission.limits(channels=3, handshakes=8))
    assert adm.admit("10.0.0.1", 3) is Refusal.CHANNELS
    assert adm.handshaking == 0
    assert adm.admit("10.0.0.1", 2) is None


def test_a_small_total_is_not_exceeded_by_the_per_address_floor() -> None:
    assert admission.limits(channels=1, handshakes=1).per_address == 1


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), max_size=200))
def test_no_sequence_breaks_the_caps(steps: list[tuple[bool, int]]) -> None:
    adm = Admission(admission.limits(channels=100, handshakes=8))
    held: list[str] = []
    for start, who in steps:
        address = f"10.0.0.{who}"
        if start:
            if adm.admit(address, 0) is None:
                held.append(address)
        elif address in held:
            held.remove(address)
            adm.done(address)
        assert adm.handshaking == len(held) <= 8
        assert all(adm.held_by(a) == held.count(a) <= 2 for a in set(held))
    for address in held:
        adm.done(address)
    assert adm.handshaking == 0


class FlakyListener(trio.abc.Listener[trio.abc.Stream]):
    """Raises ``OSError(code)`` ``times`` times, then hands out one memory stream."""

    def __init__(self, code: int, times: int) -> None:
        self.code = code
        self.left = times
        self.calls = 0

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        self.calls += 1
        if self.left:
            self.left -= 1
            raise OSError(self.code, f"fake {errno.errorcode[self.code]}")
        return trio.testing.memory_stream_pair()[0]

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


@pytest.mark.parametrize("code", sorted(admission.RESOURCE_ERRNOS),
                         ids=[errno.errorcode[c] for c in sorted(admission.RESOURCE_ERRNOS)])
async def test_accept_pauses_and_goes_on_when_a_resource_runs_out(
    code: int, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, LOGGER)
    listener = FlakyListener(code, times=5)
    started = trio.current_time()
    stream = await admission.accept(listener, RateLimitedLog(logging.getLogger(LOGGER)), "peers")
    assert isinstance(stream, trio.abc.Stream)
    assert listener.calls == 6
    assert trio.current_time() - started == pytest.approx(5 * ACCEPT_PAUSE)
    # Five failures, one line (the rest are counted on the next line that passes).
    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert record.getMessage().startswith(f"cannot accept peers: fake {errno.errorcode[code]};")


async def test_accept_raises_other_errors(autojump_clock: trio.testing.MockClock) -> None:
    listener = FlakyListener(errno.EBADF, times=1)
    with pytest.raises(OSError) as info:
        await admission.accept(listener, RateLimitedLog(logging.getLogger(LOGGER)), "peers")
    assert info.value.errno == errno.EBADF
