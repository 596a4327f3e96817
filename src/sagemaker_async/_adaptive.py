"""What a watcher learns from the other handles of the same endpoint.

- :class:`LatencyTracker`: how long the endpoint usually takes, to place first reads.
- :class:`Siblings`: when one handle finds its result, the other handles of the endpoint
  are probably done about as long after their own submission; their sleeps are shortened.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

__all__ = ["CLOCK_RESOLUTION", "LatencyTracker", "Siblings"]

# S3's Last-Modified and Date have whole seconds, so an object's age is known to +-1 s.
CLOCK_RESOLUTION = 1.0


class LatencyTracker:
    """Recent latencies per endpoint: lower bounds of "submission to object written".

    They place a new handle's first read near the time its endpoint usually needs, instead
    of backing off from zero: fewer reads, and no long last sleep that overshoots the result.
    Each sample is a lower bound, never a guess that could make a read late: the object was
    not there at the handle's last miss, and S3's own clock (Date minus Last-Modified, to the
    second, free of skew between this host and S3) says it was written at most age + 1 s
    before the read. As first reads move closer to the truth, so do the bounds.
    """

    def __init__(self, keep: int = 256, min_samples: int = 8) -> None:
        self._keep = keep
        self._min_samples = min_samples
        self._samples: dict[str, deque[float]] = {}
        self._estimates: dict[str, float] = {}  # cached per endpoint, dropped on observe

    def observe(self, endpoint_name: str, seconds: float) -> None:
        """Record that an inference on ``endpoint_name`` took ``seconds``."""
        samples = self._samples.get(endpoint_name)
        if samples is None:
            samples = self._samples[endpoint_name] = deque(maxlen=self._keep)
        samples.append(seconds)
        self._estimates.pop(endpoint_name, None)

    def first_read_after(self, endpoint_name: str) -> float:
        """Seconds after submission when a first read may succeed (0 until enough samples).

        The 25th percentile of the recent lower bounds.
        """
        estimate = self._estimates.get(endpoint_name)
        if estimate is None:
            samples = self._samples.get(endpoint_name)
            if samples is None or len(samples) < self._min_samples:
                return 0.0
            ordered = sorted(samples)
            estimate = ordered[len(ordered) // 4]
            self._estimates[endpoint_name] = estimate
        return estimate


class Siblings:
    """Sleeps that a sibling's result may cut short.

    Handles of one endpoint submitted close together usually finish close together, but
    exponential backoff puts a handle's next read up to one whole sleep after its result.
    When a handle finds its output ``latency`` seconds after its submission, every handle of
    that endpoint asleep at that moment is rescheduled to read at ``its submission +
    latency`` (at once for older ones), when that is sooner than its own schedule. The
    watcher lets each handle be rescheduled at most once, so a wrong guess (a sibling with
    a much faster payload) costs at most one read per inference. A result looks at each
    sleep once: the sleepers are handed over and forgotten, so the work stays linear.
    """

    def __init__(self) -> None:
        self._sleeping: dict[str, dict[asyncio.Future[bool], _Nap]] = {}

    async def nap(self, endpoint_name: str, submitted_at: float, seconds: float) -> bool:
        """Sleep ``seconds``, or less if a sibling's result says so; True when cut short."""
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[bool] = loop.create_future()
        nap = _Nap(submitted_at, time.time() + seconds, loop.call_later(seconds, _settle, woken))
        sleeping = self._sleeping.setdefault(endpoint_name, {})
        sleeping[woken] = nap
        try:
            await woken
            return nap.rescheduled
        finally:
            nap.timer.cancel()
            if not woken.done():
                woken.cancel()
            sleeping.pop(woken, None)

    def found(self, endpoint_name: str, submitted_at: float) -> None:
        """Tell the sleepers of ``endpoint_name`` that a result submitted then is in S3 now."""
        sleeping = self._sleeping.pop(endpoint_name, None)
        if not sleeping:
            return
        now = time.time()
        latency = now - submitted_at
        loop = asyncio.get_running_loop()
        for woken, nap in sleeping.items():
            wake_at = max(now, nap.submitted_at + latency)
            if wake_at < nap.wakes_at and not woken.done():
                nap.timer.cancel()
                nap.rescheduled, nap.wakes_at = True, wake_at
                nap.timer = loop.call_later(wake_at - now, _settle, woken)


class _Nap:
    __slots__ = ("rescheduled", "submitted_at", "timer", "wakes_at")

    def __init__(self, submitted_at: float, wakes_at: float, timer: asyncio.TimerHandle) -> None:
        self.submitted_at = submitted_at
        self.wakes_at = wakes_at
        self.timer = timer
        self.rescheduled = False


def _settle(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_result(True)
