"""The scheduler: the engine's one long-lived task, which runs every S3 request as a short job.

Jobs are timed (a poll, a sweep, a deadline's last look: a heap ordered by due time) or urgent
(reading a result that a source has seen: a FIFO that goes first; the next page of a sweep
under way goes to its head, so a long sweep is not stretched by the reads it causes). The
scheduler starts a job only when a slot is free (at most ``concurrency`` at once) and the
request budget allows it, so 100,000 pending handles cost 100,000 heap entries, not 100,000
tasks or signed requests.

A job is a callable that returns a coroutine to run, or ``None`` when it has become moot (its
watch ended, its directory changed strategy): moot jobs cost no request.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from ._budget import RequestBudget
from ._clock import Clock
from ._tasks import cancel_all

__all__ = ["Job", "Scheduler"]

logger = logging.getLogger("sagemaker_async")

Job = Callable[[], "Coroutine[Any, Any, None] | None"]


class Scheduler:
    """Runs jobs at their time, a few at once, within the request budget."""

    def __init__(self, clock: Clock, budget: RequestBudget, concurrency: int) -> None:
        self._clock = clock
        self._budget = budget
        self._concurrency = concurrency
        self._heap: list[tuple[float, int, Job]] = []
        self._urgent: deque[Job] = deque()
        self._seq = itertools.count()
        self._running: set[asyncio.Task[None]] = set()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._parked = False

    # -- feeding ----------------------------------------------------------------------------
    def at(self, when: float, job: Job) -> None:
        """Run ``job`` at monotonic time ``when`` (or as soon as possible after)."""
        heapq.heappush(self._heap, (when, next(self._seq), job))
        if self._wake is not None and self._heap[0][2] is job:
            self._wake.set()

    def soon(self, job: Job, *, first: bool = False) -> None:
        """Run ``job`` before any timed job that is due.

        With ``first``, before every urgent job too: the next page of a sweep under way goes
        ahead of the reads that its last page caused.
        """
        if first:
            self._urgent.appendleft(job)
        else:
            self._urgent.append(job)
        if self._wake is not None:
            self._wake.set()

    def prune(self, moot: Callable[[Job], bool]) -> int:
        """Drop the timed jobs that ``moot`` says will do nothing; returns how many."""
        kept = [entry for entry in self._heap if not moot(entry[2])]
        dropped = len(self._heap) - len(kept)
        if dropped:
            heapq.heapify(kept)
            self._heap = kept
        return dropped

    # -- state ------------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """True when no job runs and the scheduler waits for the clock (tests use it).

        Urgent jobs may be waiting too, for the request budget's next token (a timer).
        """
        woken = self._wake is not None and self._wake.is_set()
        return self._parked and not self._running and not woken

    @property
    def running(self) -> int:
        """Jobs running now."""
        return len(self._running)

    @property
    def scheduled(self) -> int:
        """Jobs waiting (moot ones included until their time comes)."""
        return len(self._heap) + len(self._urgent)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the scheduler's task on the running loop."""
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="sagemaker-async completion engine"
        )

    async def aclose(self) -> None:
        """Stop the scheduler and every running job; wait until they have unwound."""
        await cancel_all([t for t in (self._task, *self._running) if t is not None])
        self._task = None
        self._heap.clear()
        self._urgent.clear()

    # -- the loop ---------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            coro = await self._next()
            task = loop.create_task(self._guard(coro))
            self._running.add(task)
            task.add_done_callback(self._ended)
            # One start per turn of the loop: a request's first step (building and signing it)
            # costs about a millisecond, and a burst of them would stall everything else.
            await asyncio.sleep(0)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._wake is not None:
            self._wake.set()

    async def _guard(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: jobs handle their own errors; keep the engine alive
            logger.exception("sagemaker-async: a completion job failed unexpectedly")

    async def _next(self) -> Coroutine[Any, Any, None]:
        while True:
            timeout: float | None = None
            if len(self._running) < self._concurrency:
                now = self._clock.monotonic()
                if self._urgent or (self._heap and self._heap[0][0] <= now):
                    wait = self._budget.delay()
                    if wait <= 0:
                        job = (
                            self._urgent.popleft() if self._urgent else heapq.heappop(self._heap)[2]
                        )
                        coro = job()
                        if coro is None:
                            continue
                        self._budget.take()
                        return coro
                    timeout = wait
                elif self._heap:
                    timeout = self._heap[0][0] - now
            await self._park(timeout)

    async def _park(self, timeout: float | None) -> None:
        assert self._wake is not None
        self._wake.clear()
        timer = self._clock.call_later(timeout, self._wake.set) if timeout is not None else None
        self._parked = True
        try:
            await self._wake.wait()
        finally:
            self._parked = False
            if timer is not None:
                timer.cancel()
