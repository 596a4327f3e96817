"""The per-location polling source: a GET of each pending location, with backoff.

It serves directories where few results are pending (or where listing is not allowed, or
costs more). Each key has its own schedule in the scheduler's heap, kept by this source alone
(:class:`_Poll`): ``initial_delay`` after submission, then capped exponential backoff with
equal jitter; a failure location waits twice as long. A GET that finds the object brings its
body, so the result costs no other request. A read that stalled (no first byte within
``RetryConfig.first_byte_timeout``) or lost its connection is tried again at once, once: S3's
slow tail is a few requests in a hundred, and the next try almost always answers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Coroutine
from typing import Any

from .._backoff import backoff_delay
from .._clock import Clock
from .._errors import InvocationError
from .._s3 import Absent, ObjectStore, S3Object, Unavailable
from ._records import FAILURE, Completion, Directory, Key, Watch
from ._scheduler import Scheduler

__all__ = ["PollingSource"]

# Errors after which a read is tried again at once (the request, not S3, was unlucky).
_UNLUCKY = frozenset({"Timeout", "ConnectionError"})


class _Poll:
    """One key's polling schedule: the job in the scheduler's heap, and its backoff step."""

    __slots__ = ("at_once", "key", "live", "reading", "source", "step", "unlucky")

    def __init__(self, source: PollingSource, key: Key) -> None:
        self.source = source
        self.key = key
        self.step = 0  # polls since the schedule (re)started
        self.live = True  # False once the key left this source
        self.reading = False  # its GET is under way
        self.at_once = False  # a failure location first read with its output (resumed late)
        self.unlucky = False  # the last read stalled or lost its connection

    @property
    def owner(self) -> Watch:
        """The watch this job reads for (its requests stop when it ends)."""
        return self.key.watch

    def __call__(self) -> Coroutine[Any, Any, None] | None:
        return self.source._job(self)


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
        self._polls: dict[str, _Poll] = {}  # by location

    def watch(self, key: Key, *, spread: float = 0.0) -> None:
        """Start polling ``key``: after the first delay, or at a random point of ``spread``."""
        self.unwatch(key)
        poll = self._polls[key.location] = _Poll(self, key)
        watch = key.watch
        now = self._clock.monotonic()
        # The output initial_delay after submission; the failure location one round later,
        # as failures are rare and read half as often. A handle resumed long after its
        # submission reads both at once: its outcome may be either, and a caller may be
        # waiting for a short time only (a status URL).
        initial = watch.polling.initial_delay
        earliest = watch.submitted + initial
        if key.kind is FAILURE:
            earliest = watch.submitted + 2 * initial
            poll.at_once = earliest <= now
        # Taking over from a sweep: within what the sweep would have waited, but never before
        # the first delay (the safety net of notifications is a long one).
        self._scheduler.at(
            max(earliest, now + spread * self._rng.random() if spread > 0 else now), poll
        )

    def spread(self, directory: Directory) -> float:
        """How long a key may wait for its next poll, for a handover: nothing to spread."""
        return 0.0

    def unwatch(self, key: Key) -> None:
        """Stop polling ``key`` (its scheduled poll becomes moot)."""
        poll = self._polls.get(key.location)
        if poll is not None and poll.key.watch is key.watch:
            del self._polls[key.location]
            poll.live = False

    def delay(self, poll: _Poll) -> float:
        """The wait before ``poll``'s next read; advances its backoff."""
        polling = poll.key.watch.polling
        poll.step += 1
        delay = backoff_delay(
            poll.step,
            initial=polling.initial_delay,
            maximum=polling.max_delay,
            multiplier=polling.multiplier,
            jitter_ratio=polling.jitter,
            rng=self._rng,
        )
        return delay * (2 if poll.key.kind is FAILURE else 1)

    def _job(self, poll: _Poll) -> Coroutine[Any, Any, None] | None:
        key = poll.key
        if not poll.live or key.watch.done:
            return None
        if key.kind is FAILURE and (poll.step or not poll.at_once):
            output = self._polls.get(key.watch.target.output_location)
            if output is not None and output.key.watch is key.watch and output.reading:
                # The output is being read right now; it may well answer for both (not on
                # the first read of a handle resumed late: it reads both locations at once).
                self._scheduler.at(self._clock.monotonic() + self.delay(poll), poll)
                return None
        return self._poll(poll)

    async def _poll(self, poll: _Poll) -> None:
        key = poll.key
        watch = key.watch
        if not poll.live or watch.done:  # it ended between the job's start and now
            return
        poll.reading = True
        unlucky = False
        try:
            found = await self._store.read(key.location)
        except Unavailable as exc:
            watch.last_error = exc
            unlucky = exc.code in _UNLUCKY
            found = Absent.NOT_FOUND
        except InvocationError as exc:
            self._fail(watch, exc)
            return
        finally:
            poll.reading = False
        if not poll.live or watch.done:
            return
        if isinstance(found, S3Object):
            self._report(Completion(key.location, found.body, found.content_type), self.name)
            return
        if found is Absent.FORBIDDEN:
            watch.forbidden = True
        if unlucky and not poll.unlucky:
            poll.unlucky = True
            self._scheduler.soon(poll)  # again at once, not a backoff later
            return
        poll.unlucky = unlucky
        self._scheduler.at(self._clock.monotonic() + self.delay(poll), poll)
