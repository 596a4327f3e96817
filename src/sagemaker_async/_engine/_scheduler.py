"""The scheduler: the one owner of every task the client runs in the background.

It runs each S3 request as a short *job*, and keeps the client's few long-lived *services*
(the notification loops). Jobs come in three kinds:

- timed (a poll, a sweep: a heap ordered by due time);
- urgent (reading a result that a source has seen: a FIFO that goes before due timed jobs; the
  next page of a sweep under way goes to its head, so a long sweep is not stretched by the reads
  it causes);
- deadlines (a watch's last look): a lane of their own, with their own slots and outside
  the request budget, so that nothing else the client does (stalled reads holding every slot,
  a budget that SlowDown cut to 1 request/s) can hold a handle past its deadline. The lane is
  a heap of the entries themselves (the engine's watches, ordered by deadline), started with
  the ``expire`` callable: a million pending deadlines cost a million list slots, no more.

Timed and urgent jobs start only when one of ``concurrency`` slots is free and the request
budget allows, so 100,000 pending handles cost 100,000 heap entries, not 100,000 tasks or signed
requests. A job is a callable that returns a coroutine to run, or ``None`` when it has become
moot (its watch ended, its directory changed source): moot jobs cost no request. A job may name
its ``owner`` (a watch): :meth:`Scheduler.cancel_owned` then stops its requests when the watch
ends.

Since every task is the scheduler's, :attr:`Scheduler.idle` (no job running, none ready) means
that nothing of the engine runs: the fake-clock tests move time only then.

Work proportional to the number of entries is done in slices that let the event loop run in
between: moot jobs are dropped at most ``_MOOT_BURST`` in a row, and the lane is compacted
(:meth:`Scheduler.compact_deadlines`) ``_COMPACT_STEP`` entries per turn of the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Protocol

from .._budget import RequestBudget
from .._clock import Clock
from .._tasks import cancel_all

__all__ = ["Deadline", "Job", "Scheduler"]

logger = logging.getLogger("sagemaker_async")

Job = Callable[[], "Coroutine[Any, Any, None] | None"]

# Deadline jobs running at once (their reads are short and bounded).
_LANE_CONCURRENCY = 64
# Moot jobs dropped in a row (a heap pop each) before the loop gets a turn: 100,000 polls of
# cancelled handles falling due together must not hold the loop for their whole count.
_MOOT_BURST = 1000
# Deadline entries moved per turn of the loop while the lane is compacted (about 10 ms).
_COMPACT_STEP = 5000


class Deadline(Protocol):
    """An entry of the deadline lane: ordered by ``deadline``, moot once ``done``."""

    deadline: float
    done: bool

    def __lt__(self, other: Any) -> bool:
        """Deadline order."""


class Scheduler:
    """Runs jobs at their time, a few at once, within the request budget; owns every task."""

    def __init__(
        self,
        clock: Clock,
        budget: RequestBudget,
        concurrency: int,
        *,
        expire: Callable[[Any], Coroutine[Any, Any, None] | None] = lambda entry: None,
        lane_concurrency: int = _LANE_CONCURRENCY,
    ) -> None:
        self._clock = clock
        self._budget = budget
        self._concurrency = concurrency
        self._lane_concurrency = lane_concurrency
        self._heap: list[tuple[float, int, Job]] = []
        self._urgent: deque[Job] = deque()
        # The deadline lane: a heap of entries; while it is compacted, the old heap drains
        # into the new one from its end (what is left of a heap's array is still a heap).
        self._expire = expire
        self._deadlines: list[Deadline] = []
        self._draining: list[Deadline] = []
        self._seq = itertools.count()
        self._running: dict[asyncio.Task[None], object] = {}  # job task -> its owner
        self._lane: set[asyncio.Task[None]] = set()  # the deadline jobs among them
        self._services: set[asyncio.Task[None]] = set()
        self._foreground = 0  # requests made in the callers' tasks (invokes, uploads)
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

    def deadline(self, entry: Deadline) -> None:
        """At ``entry.deadline``, run ``expire(entry)`` on the deadline lane.

        The lane has its own slots and no request budget; an entry ``done`` by then is dropped.
        """
        heapq.heappush(self._deadlines, entry)
        if self._wake is not None and self._deadlines[0] is entry:
            self._wake.set()

    def compact_deadlines(self) -> None:
        """Drop the lane's moot entries (done ones), a slice per turn of the event loop.

        The entries of ended watches would otherwise stay until their deadline, hours away,
        with what they hold.
        """
        if not self._draining and self._deadlines:
            self._draining, self._deadlines = self._deadlines, []
            if self._wake is not None:
                self._wake.set()

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run a long-lived service (a receive loop) until it returns or :meth:`aclose`."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._services.add(task)
        task.add_done_callback(self._services.discard)
        return task

    def cancel_owned(self, owner: object) -> None:
        """Cancel the running jobs of ``owner`` (its watch ended); not the calling task."""
        if not self._running:
            return  # (called for every watch that ends: a million cancelled, a million calls)
        current = asyncio.current_task()
        for task, job_owner in self._running.items():  # cancel() changes nothing here at once
            if job_owner is owner and task is not current:
                task.cancel()

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        """Mark a request that a caller's task makes (an invoke): the client is not idle."""
        self._foreground += 1
        try:
            yield
        finally:
            self._foreground -= 1

    # -- state ------------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """True when no job runs, none is ready and no caller's request is under way.

        The client then waits for the clock only. Services (receive loops) are not jobs: they
        wait on their own servers.
        """
        woken = self._wake is not None and self._wake.is_set()
        return self._parked and not self._running and not woken and not self._foreground

    @property
    def running(self) -> int:
        """Jobs running now (deadline jobs included)."""
        return len(self._running)

    @property
    def deadlines(self) -> int:
        """Entries in the deadline lane (those of ended watches until it is compacted)."""
        return len(self._deadlines) + len(self._draining)

    @property
    def scheduled(self) -> int:
        """Jobs waiting (moot ones included until their time comes or the lane is compacted)."""
        return len(self._heap) + len(self._urgent) + len(self._deadlines) + len(self._draining)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the scheduler's task on the running loop."""
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name="sagemaker-async completion engine"
        )

    async def aclose(self) -> None:
        """Stop the scheduler, every job and every service; wait until they have unwound."""
        tasks = [t for t in (self._task, *self._running, *self._services) if t is not None]
        await cancel_all(tasks)
        self._task = None
        self._heap.clear()
        self._urgent.clear()
        self._deadlines.clear()
        self._draining.clear()

    # -- the loop ---------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            coro, owner, lane = await self._next()
            # The job's coroutine is the task (no wrapper): a task cancelled before its first
            # step then closes it cleanly, where a wrapper would leave it never awaited.
            task = loop.create_task(coro)
            self._running[task] = owner
            if lane:
                self._lane.add(task)
            task.add_done_callback(self._ended)
            # One start per turn of the loop: a request's first step (building and signing it)
            # costs about a millisecond, and a burst of them would stall everything else.
            await asyncio.sleep(0)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._lane.discard(task)
        if self._wake is not None:
            self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            # A bug: jobs handle their own errors. The engine goes on.
            logger.error(
                "sagemaker-async: a completion job failed unexpectedly",
                exc_info=task.exception(),
            )

    async def _next(self) -> tuple[Coroutine[Any, Any, None], object, bool]:
        moot = 0
        while True:
            if moot >= _MOOT_BURST or self._draining:
                # Let the loop run between slices of work that grows with the entries.
                moot = 0
                self._compact_step()
                await asyncio.sleep(0)
            now = self._clock.monotonic()
            timeout: float | None = None
            # The deadline lane first: its own slots, no budget.
            entry = self._lane_head()
            if entry is not None and len(self._lane) < self._lane_concurrency:
                if entry.deadline <= now:
                    draining = bool(self._draining) and entry is self._draining[0]
                    heapq.heappop(self._draining if draining else self._deadlines)
                    coro = None if entry.done else self._expire(entry)
                    if coro is not None:
                        return coro, entry, True
                    moot += 1
                    continue
                timeout = entry.deadline - now
            if len(self._running) - len(self._lane) < self._concurrency:
                wait: float | None = None
                if self._urgent or (self._heap and self._heap[0][0] <= now):
                    wait = self._budget.delay()
                    if wait <= 0:
                        job = (
                            self._urgent.popleft() if self._urgent else heapq.heappop(self._heap)[2]
                        )
                        coro = job()
                        if coro is None:
                            moot += 1
                            continue
                        self._budget.take()
                        return coro, getattr(job, "owner", None), False
                elif self._heap:
                    wait = self._heap[0][0] - now
                if wait is not None:
                    timeout = wait if timeout is None else min(timeout, wait)
            if self._draining:
                continue  # the compaction goes on first (a slice per turn of the loop)
            await self._park(timeout)

    def _lane_head(self) -> Deadline | None:
        """The lane's earliest entry (of the two heaps while it is compacted)."""
        if self._draining and (not self._deadlines or self._draining[0] < self._deadlines[0]):
            return self._draining[0]
        return self._deadlines[0] if self._deadlines else None

    def _compact_step(self) -> None:
        """Move up to ``_COMPACT_STEP`` entries of the old lane into the new, leaving the moot."""
        draining, kept = self._draining, self._deadlines
        for _ in range(min(_COMPACT_STEP, len(draining))):
            entry = draining.pop()
            if not entry.done:
                heapq.heappush(kept, entry)

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
