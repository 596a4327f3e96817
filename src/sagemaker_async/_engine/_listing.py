"""The listing source: sweeps a directory with ListObjectsV2; one page answers for 1,000 keys.

A sweep reads every page of the directory (``Delimiter="/"``, so deeper "subdirectories" cost
one entry each); each page is one job, and the next page of a sweep under way goes ahead of
the reads of what the last one found (behind them, a 10-page sweep took 12 s). Keys that are
pending are reported (without a body: the resolver then GETs them). While results arrive, the
directory is swept every ``initial_delay``; while nothing changes, the wait grows by
``multiplier`` up to a cap from the cost model (never above ``max_delay``; twice that for a
directory of failure objects only).

In ``auto`` mode a sweep that turns out to cost more than polling (a directory crowded with old
objects) is abandoned at once and the directory is polled instead; a denied listing (no
s3:ListBucket) makes the engine poll every directory of that bucket.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from .._errors import InvocationError
from .._s3 import ObjectStore, Unavailable
from ._clock import Clock
from ._records import Completion, Directory, Key, Mode
from ._scheduler import Job, Scheduler
from ._strategy import sweep_cap

__all__ = ["ListingSource"]


class ListingSource:
    """Sweeps the directories in LIST mode; reports pending keys it sees."""

    name = "list"

    def __init__(
        self,
        scheduler: Scheduler,
        store: ObjectStore,
        clock: Clock,
        *,
        list_cost: float,
        report: Callable[[Completion, str], None],
        crowded: Callable[[Directory], bool],
        denied: Callable[[Directory, InvocationError], None],
        swept: Callable[[Directory], object],
    ) -> None:
        self._scheduler = scheduler
        self._store = store
        self._clock = clock
        self._list_cost = list_cost
        self._report = report
        self._crowded = crowded
        self._denied = denied
        self._swept = swept

    def watch(self, key: Key, *, spread: float = 0.0) -> None:
        """Cover ``key`` by its directory's sweeps (starting them if needed)."""
        directory = key.directory
        if directory.gen % 2 == 0:  # no sweep scheduled: start one
            directory.gen += 1
            directory.interval = directory.min_delay
            directory.token, directory.pages_read = None, 0
            self._at(directory, self._clock.monotonic() + directory.min_delay)

    def unwatch(self, key: Key) -> None:
        """``key`` left: stop sweeping when its directory is empty or polled now."""
        directory = key.directory
        if (not directory.keys or directory.mode is not Mode.LIST) and directory.gen % 2:
            directory.gen += 1  # even: no sweep; the scheduled one is moot

    def _at(self, directory: Directory, when: float) -> None:
        self._scheduler.at(when, self._job(directory, directory.gen))

    def _job(self, directory: Directory, gen: int) -> Job:
        def job() -> Coroutine[Any, Any, None] | None:
            if directory.gen != gen or not directory.keys:
                return None
            return self._page(directory, gen)

        return job

    async def _page(self, directory: Directory, gen: int) -> None:
        now = self._clock.monotonic()
        if directory.pages_read == 0:
            directory.sweep_started, directory.sweep_found = now, False
        try:
            page = await self._store.list_page(directory.bucket, directory.prefix, directory.token)
        except Unavailable:
            if directory.gen == gen:  # count it as a sweep that saw nothing; back off
                directory.token, directory.pages_read = None, 0
                self._next_sweep(directory, found=False)
            return
        except InvocationError as exc:
            if directory.gen == gen:
                self._denied(directory, exc)
            return
        if directory.gen != gen:
            return
        directory.pages_read += 1
        for name in page.keys:
            key = directory.keys.get(name)
            if key is not None:
                directory.sweep_found = True
                self._report(Completion(key.location), self.name)
        if directory.gen != gen:
            return
        if page.next_token is not None:
            if self._crowded(directory):
                return  # the engine polls this directory from now on
            directory.token = page.next_token
            self._scheduler.soon(self._job(directory, directory.gen), first=True)
            return
        directory.pages = directory.pages_read
        directory.token, directory.pages_read = None, 0
        self._swept(directory)
        if directory.gen == gen:
            self._next_sweep(directory, found=directory.sweep_found)

    def _next_sweep(self, directory: Directory, *, found: bool) -> None:
        cap = sweep_cap(
            directory.pages,
            directory.poll_weight,
            self._list_cost,
            directory.min_delay,
            directory.max_delay,
        )
        if found:
            directory.interval = directory.min_delay
        else:
            directory.interval = min(cap, directory.interval * directory.multiplier)
        factor = 1 if directory.outputs else 2  # failure objects only: half as often
        when = max(self._clock.monotonic(), directory.sweep_started + directory.interval * factor)
        self._at(directory, when)
