"""The clock: one source of time, sleep and timers for the engine, the S3 layer and retries.

Everything that schedules reads, sweeps, retries or deadlines asks the client's clock, so a test
can pass a fake clock and check schedules, jitter and deadline clamping in milliseconds. Times
that schedule are monotonic; wall-clock time is only for what must be shared with other
processes (a handle's ``to_dict()``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["Clock", "SystemClock", "Timer"]


class Timer(Protocol):
    """A scheduled callback that can be cancelled."""

    def cancel(self) -> None:
        """Do not call the callback (no-op once it ran)."""


class Clock(Protocol):
    """Time, sleep and timers, as the engine uses them."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps; used for every schedule and deadline."""

    def wall(self) -> float:
        """Seconds since the epoch (UTC); used only for state shared with other processes."""

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` (0 yields to the event loop)."""

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Timer:
        """Call ``callback()`` in ``seconds``, on the running event loop."""


class SystemClock:
    """The real clock: the event loop's monotonic time, :func:`time.time`, ``asyncio.sleep``."""

    def monotonic(self) -> float:
        """The running loop's clock (:func:`time.monotonic` outside a loop)."""
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    def wall(self) -> float:
        """:func:`time.time`."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """:func:`asyncio.sleep`."""
        await asyncio.sleep(seconds)

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Timer:
        """:meth:`asyncio.AbstractEventLoop.call_later`."""
        return asyncio.get_running_loop().call_later(max(0.0, seconds), callback)
