"""The listing source: sweeps a directory with ListObjectsV2; one page answers for 1,000 keys.

A sweep reads every page of the directory (``Delimiter="/"``, so deeper "subdirectories" cost
one entry each); each page is one job, and the next page of a sweep under way goes ahead of
the reads of what the last one found (behind them, a 10-page sweep took 12 s). Keys that are
pending are reported (without a body: the resolver then GETs them). While results arrive, the
directory is swept every ``initial_delay``; while nothing changes, the wait grows by
``multiplier`` up to a cap from the cost model (never above ``max_delay``; twice that for a
directory of failure objects only). Each directory's sweep is this source's own state
(:class:`_Sweep`).

In ``auto`` mode a sweep that turns out to cost more than polling (a directory crowded with old
objects) is abandoned at once and the directory is polled instead; a denied listing (no
s3:ListBucket) makes the engine poll every directory of that bucket; a listing that keeps
failing (500, 503, stalls) for half of ``max_delay`` hands the directory to polling for a while,
so results are still found within ``max_delay``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from .._backoff import backoff_delay
from .._clock import Clock
from .._errors import InvocationError
from .._s3 import ObjectStore, Unavailable
from ._records import Completion, Directory, Key, Mode
from ._scheduler import Scheduler
from ._strategy import sweep_cap

__all__ = ["ListingSource"]


class _Sweep:
    """One directory's sweeps: the job in the scheduler, and where the sweep under way is."""

    __slots__ = (
        "directory",
        "empty",
        "failing_since",
        "found",
        "interval",
        "live",
        "pages_read",
        "source",
        "started",
        "token",
    )

    def __init__(self, source: ListingSource, directory: Directory) -> None:
        self.source = source
        self.directory = directory
        self.live = True  # False once the directory left this source
        self.interval = directory.min_delay
        self.empty = 0  # sweeps in a row that found nothing (or failed)
        self.token: str | None = None  # where the sweep in progress goes on
        self.pages_read = 0
        self.found = False
        self.started = 0.0
        self.failing_since: float | None = None  # listing has failed since then

    def __call__(self) -> Coroutine[Any, Any, None] | None:
        if not self.live or not self.directory.keys:
            return None
        return self.source._page(self)


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
        crowded: Callable[[Directory, int], bool],
        denied: Callable[[Directory, InvocationError], None],
        failing: Callable[[Directory], None],
        swept: Callable[[Directory, int], object],
    ) -> None:
        self._scheduler = scheduler
        self._store = store
        self._clock = clock
        self._list_cost = list_cost
        self._report = report
        self._crowded = crowded
        self._denied = denied
        self._failing = failing
        self._swept = swept
        self._sweeps: dict[Directory, _Sweep] = {}

    def watch(self, key: Key, *, spread: float = 0.0) -> None:
        """Cover ``key`` by its directory's sweeps (starting them if needed)."""
        directory = key.directory
        if directory not in self._sweeps:
            sweep = self._sweeps[directory] = _Sweep(self, directory)
            self._scheduler.at(self._clock.monotonic() + directory.min_delay, sweep)

    def spread(self, directory: Directory) -> float:
        """How long a key of ``directory`` may wait for the next sweep (for a handover)."""
        sweep = self._sweeps.get(directory)
        return sweep.interval if sweep is not None else 0.0

    def unwatch(self, key: Key) -> None:
        """``key`` left: stop sweeping when its directory is empty or polled now."""
        directory = key.directory
        if not directory.keys or directory.mode is not Mode.LIST:
            sweep = self._sweeps.pop(directory, None)
            if sweep is not None:
                sweep.live = False

    async def _page(self, sweep: _Sweep) -> None:
        directory = sweep.directory
        now = self._clock.monotonic()
        if sweep.pages_read == 0:
            sweep.started, sweep.found = now, False
        try:
            page = await self._store.list_page(directory.bucket, directory.prefix, sweep.token)
        except Unavailable:
            if sweep.live:
                self._failed(sweep, now)
            return
        except InvocationError as exc:
            if sweep.live:
                self._denied(directory, exc)
            return
        if not sweep.live:
            return
        sweep.failing_since = None
        sweep.pages_read += 1
        keys, root = directory.keys, directory.root
        for name in page.keys:
            location = root + name
            if location in keys:
                sweep.found = True
                self._report(Completion(location), self.name)
        if not sweep.live:
            return
        if page.next_token is not None:
            if self._crowded(directory, sweep.pages_read):
                return  # the engine polls this directory from now on
            sweep.token = page.next_token
            self._scheduler.soon(sweep, first=True)
            return
        pages, sweep.token, sweep.pages_read = sweep.pages_read, None, 0
        self._swept(directory, pages)
        if sweep.live:
            self._next_sweep(sweep, found=sweep.found)

    def _failed(self, sweep: _Sweep, now: float) -> None:
        """A page failed (transiently): sweep again soon, or hand the directory to polling."""
        directory = sweep.directory
        sweep.token, sweep.pages_read = None, 0
        if sweep.failing_since is None:
            sweep.failing_since = now
        if now - sweep.failing_since >= directory.max_delay / 2:
            self._failing(directory)  # the engine polls it for a while
            if not sweep.live:
                return
        self._scheduler.at(now + min(sweep.interval, directory.max_delay / 4), sweep)
        sweep.empty += 1
        sweep.interval = self._interval(sweep, directory.max_delay)

    @staticmethod
    def _interval(sweep: _Sweep, cap: float) -> float:
        """The wait between sweeps: ``min_delay``, growing with each empty sweep, up to ``cap``."""
        directory = sweep.directory
        return backoff_delay(
            sweep.empty + 1,
            initial=directory.min_delay,
            maximum=cap,
            multiplier=directory.multiplier,
        )

    def _next_sweep(self, sweep: _Sweep, *, found: bool) -> None:
        directory = sweep.directory
        cap = sweep_cap(
            directory.pages,
            directory.poll_weight,
            self._list_cost,
            directory.min_delay,
            directory.max_delay,
        )
        sweep.empty = 0 if found else sweep.empty + 1
        sweep.interval = self._interval(sweep, cap)
        factor = 1 if directory.outputs else 2  # failure objects only: half as often
        when = max(self._clock.monotonic(), sweep.started + sweep.interval * factor)
        self._scheduler.at(when, sweep)
