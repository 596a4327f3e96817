"""A fake clock for the client: virtual time, advanced by the test (imported by name).

The S3 server stays real: between two timers the test lets the engine finish the requests it
started (``settle``), so schedules, jitter, deadlines and sweep intervals are checked in
virtual seconds while every request really goes to moto and is counted there.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable

Settle = Callable[[], Awaitable[None]]


class FakeTimer:
    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Implements the client's ``Clock``; time moves only in :meth:`advance`."""

    def __init__(self, start: float = 1_000.0, wall: float = 1.8e9) -> None:
        self.now = start
        self._offset = wall - start
        self._timers: list[tuple[float, int, FakeTimer]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self._offset

    def call_later(self, seconds: float, callback: Callable[[], object]) -> FakeTimer:
        timer = FakeTimer(callback)
        heapq.heappush(self._timers, (self.now + max(0.0, seconds), next(self._seq), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        done = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not done.done():
                done.set_result(None)

        self.call_later(seconds, wake)
        await done

    async def advance(self, seconds: float, settle: Settle) -> None:
        """Move time forward, firing each timer at its time and settling after each."""
        end = self.now + seconds
        await settle()
        while self._timers and self._timers[0][0] <= end:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.now = max(self.now, when)
            timer.callback()
            await settle()
        self.now = end
        await settle()

    async def run_until(
        self, done: Callable[[], bool], settle: Settle, *, step: float = 0.05, limit: float = 3600
    ) -> float:
        """Advance in ``step``s until ``done()``; returns the virtual time it took."""
        start = self.now
        while not done():
            if self.now - start > limit:
                raise AssertionError(f"not done after {limit} virtual seconds")
            await self.advance(step, settle)
        return self.now - start


def settler(client: object, *, patience: float | None = None) -> Settle:
    """``settle`` for one client: wait (in real time) until its engine waits for the clock.

    With ``patience``, requests still running after that many real seconds are taken to be
    stalled (a server that never answers): time moves on, so the client's clock can end them.
    """
    engine = client._engine  # type: ignore[attr-defined]

    async def settle() -> None:
        quiet = 0
        loop = asyncio.get_running_loop()
        if patience is not None:
            for _ in range(3):
                await asyncio.sleep(0)
            for _ in range(int(patience / 0.005)):
                if engine.idle:
                    break
                await asyncio.sleep(0.005)
            return
        give_up = loop.time() + 30
        while quiet < 3:
            await asyncio.sleep(0)
            if engine.idle:
                quiet += 1
            else:
                quiet = 0
                await asyncio.sleep(0.001)
                if loop.time() > give_up:
                    raise AssertionError(
                        f"the engine never settled: {engine.scheduler.running} job(s) running"
                    )

    return settle
