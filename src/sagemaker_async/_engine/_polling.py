"""The per-location polling source: a GET of each pending location, with backoff.

It serves directories where few results are pending (or where listing is not allowed, or
costs more). Each key has its own schedule in the scheduler's heap: ``initial_delay`` after
submission, then capped exponential backoff with equal jitter; a failure location waits twice
as long. A GET that finds the object brings its body, so the result costs no other request.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine
from typing import Any

from .._errors import InvocationError
from .._s3 import Absent, ObjectStore, S3Object, Unavailable
from ._clock import Clock
from ._records import Completion, Key, Kind, Watch
from ._scheduler import Scheduler

__all__ = ["PollingSource"]


class PollingSource:
    """Polls keys one by one; reports what it finds to ``report`` and fatal errors to ``fail``."""

    name = "poll"

    def __init__(
        self,
        scheduler: Scheduler,
        store: ObjectStore,
        clock: Clock,
        *,
        report: Callable[[Completion, str], None],
        fail: Callable[[Watch, BaseException], None],
        rng: random.Random,
    ) -> None:
        self._scheduler = scheduler
        self._store = store
        self._clock = clock
        self._report = report
        self._fail = fail
        self._rng = rng

    def watch(self, key: Key, *, spread: float = 0.0) -> None:
        """Start polling ``key``: after the first delay, or at a random point of ``spread``."""
        key.gen += 1
        key.step = 0
        now = self._clock.monotonic()
        # The output initial_delay after submission; the failure location one round later,
        # as failures are rare and read half as often. A handle resumed long after its
        # submission reads both at once: its outcome may be either, and a caller may be
        # waiting for a short time only (a status URL).
        initial = key.watch.polling.initial_delay
        earliest = key.watch.submitted + initial
        if key.kind is Kind.FAILURE:
            earliest = key.watch.submitted + 2 * initial
            key.at_once = earliest <= now
        # Taking over from a sweep: within what the sweep would have waited, but never before
        # the first delay (the safety net of notifications is a long one).
        self._at(key, max(earliest, now + spread * self._rng.random() if spread > 0 else now))

    def unwatch(self, key: Key) -> None:
        """Stop polling ``key`` (its scheduled poll becomes moot)."""
        key.gen += 1

    def delay(self, key: Key) -> float:
        """The wait before ``key``'s next poll; advances its backoff."""
        polling = key.watch.polling
        growth = min(polling.max_delay, polling.initial_delay * polling.multiplier**key.step)
        key.step += 1
        delay = growth * (1.0 - polling.jitter * self._rng.random())
        return delay * (2 if key.kind is Kind.FAILURE else 1)

    def _at(self, key: Key, when: float) -> None:
        gen = key.gen

        def job() -> Coroutine[Any, Any, None] | None:
            if key.gen != gen or key.watch.done:
                return None
            if key.kind is Kind.FAILURE and key.watch.tasks and (key.step or not key.at_once):
                # The output is being read right now; it may well answer for both (not on
                # the first read of a handle resumed late: it reads both locations at once).
                self._at(key, self._clock.monotonic() + self.delay(key))
                return None
            return self._poll(key, gen)

        self._scheduler.at(when, job)

    async def _poll(self, key: Key, gen: int) -> None:
        watch = key.watch
        if key.gen != gen or watch.done:  # it ended between the job's start and now
            return
        watch.enter()
        try:
            found = await self._store.read(key.location)
        except Unavailable as exc:
            watch.last_error = exc
            found = Absent.NOT_FOUND
        except InvocationError as exc:
            self._fail(watch, exc)
            return
        finally:
            watch.leave()
        if key.gen != gen or watch.done:
            return
        if isinstance(found, S3Object):
            self._report(Completion(key.location, found.body, found.content_type), self.name)
            return
        if found is Absent.FORBIDDEN:
            watch.forbidden = True
        self._at(key, self._clock.monotonic() + self.delay(key))
