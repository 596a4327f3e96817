"""The watcher: polls a handle's output and failure locations with capped, jittered backoff.

One watcher per client; it owns no task of its own. Each waiting handle runs
:meth:`Watcher.watch` in the handle's own task, so cancelling the handle stops its polling and
nothing is left behind.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

import tenacity

from ._adaptive import CLOCK_RESOLUTION, LatencyTracker, Siblings
from ._config import PollingConfig
from ._errors import InferenceFailedError, InferenceTimeoutError, InvocationError
from ._result import InferenceResult
from ._retry import Sleep
from ._s3 import Absent, ObjectStore, S3Object

__all__ = ["WatchTarget", "Watcher"]

logger = logging.getLogger("sagemaker_async")


@dataclass(frozen=True)
class WatchTarget:
    """What the watcher needs to know about one inference (times are :func:`time.time`)."""

    endpoint_name: str
    inference_id: str
    output_location: str
    failure_location: str
    submitted_at: float
    deadline: float


class Watcher:
    """Resolves inferences by polling S3 (GET output each round, GET failure every second)."""

    def __init__(self, store: ObjectStore, sleep: Sleep) -> None:
        self._store = store
        self._sleep = sleep
        self.latencies = LatencyTracker()
        self.siblings = Siblings()

    def _learn(self, target: WatchTarget, found: S3Object, not_before: float) -> None:
        written_after = not_before
        if found.age is not None:
            written_after = max(written_after, time.time() - found.age - CLOCK_RESOLUTION)
        self.latencies.observe(target.endpoint_name, max(0.0, written_after - target.submitted_at))

    async def watch(self, target: WatchTarget, polling: PollingConfig) -> InferenceResult:
        """Wait for the output or the failure object of ``target``.

        Raises:
            InferenceFailedError: the failure object appeared.
            InferenceTimeoutError: the deadline passed first (chained to the last S3 error).
            InvocationError: S3 refused a read for a reason that retrying cannot fix.
        """
        forbidden = False
        rounds = 0
        may_be_woken = polling.adaptive  # by a sibling's result, once (see Siblings)
        last_miss = target.submitted_at  # when the output was last seen missing

        async def one_round(check_failure: bool | None = None) -> InferenceResult | None:
            nonlocal forbidden, rounds, last_miss
            rounds += 1
            started = time.time()
            found = await self._store.get(target.output_location, deadline=target.deadline)
            if isinstance(found, S3Object):
                self._learn(target, found, last_miss)
                if polling.adaptive:
                    self.siblings.found(target.endpoint_name, target.submitted_at)
                return InferenceResult(
                    body=found.body,
                    content_type=found.content_type,
                    output_location=target.output_location,
                    inference_id=target.inference_id,
                )
            # Failures are rare and their latency matters less than the bill: the failure
            # location is read every second round (and once more before giving up).
            last_miss = started
            if not (check_failure if check_failure is not None else rounds % 2 == 0):
                forbidden = forbidden or found is Absent.FORBIDDEN
                return None
            failed = await self._store.get(target.failure_location, deadline=target.deadline)
            if isinstance(failed, S3Object):
                self._learn(target, failed, target.submitted_at)  # not read every round
                raise InferenceFailedError(
                    failed.body.decode("utf-8", errors="replace"),
                    failure_location=target.failure_location,
                    inference_id=target.inference_id,
                )
            forbidden = forbidden or Absent.FORBIDDEN in (found, failed)
            return None

        steps = 0  # sleeps since the schedule last (re)started

        def learned_wait() -> float:
            # Time until this endpoint's usual first-read moment (<= 0 once past it).
            if not polling.adaptive:
                return 0.0
            elapsed = time.time() - target.submitted_at
            return self.latencies.first_read_after(target.endpoint_name) - elapsed

        def wait(_state: tenacity.RetryCallState) -> float:
            nonlocal steps
            # Capped exponential growth, counted by hand so that a sibling's wake-up can
            # restart it; equal jitter spreads handles submitted together, so the earliest
            # readers find the results for the others (see Siblings).
            growth = min(polling.max_delay, polling.initial_delay * polling.multiplier**steps)
            steps += 1
            delay = growth * (1.0 - polling.jitter * random.random())
            # Re-asked every round, so handles submitted before anything was learned catch up.
            delay = max(delay, learned_wait())
            return max(0.0, min(delay, target.deadline - time.time()))

        async def sleep(seconds: float) -> None:
            nonlocal may_be_woken, steps
            if may_be_woken and seconds > 0:
                if await self.siblings.nap(target.endpoint_name, target.submitted_at, seconds):
                    may_be_woken, steps = False, 0  # if that read misses, back off from small
            else:
                await self._sleep(seconds)

        # A fresh submission is never done at once: skip the rounds that would surely miss.
        elapsed = time.time() - target.submitted_at
        first = min(
            max(polling.initial_delay - elapsed, learned_wait()), target.deadline - time.time()
        )
        if first > 0:
            await self._sleep(first)

        policy = tenacity.AsyncRetrying(
            sleep=sleep,
            stop=lambda _state: time.time() >= target.deadline,
            wait=wait,
            retry=tenacity.retry_if_result(lambda result: result is None),
            retry_error_callback=lambda _state: None,
            reraise=True,
        )
        last_error: InvocationError | None = None
        try:
            result: InferenceResult | None = await policy(one_round)
            if result is None:
                result = await one_round(check_failure=True)  # a last look at both locations
        except InvocationError as exc:
            if time.time() < target.deadline:
                raise
            result, last_error = None, exc
        if result is not None:
            return result
        message = (
            f"inference {target.inference_id}: neither {target.output_location} nor "
            f"{target.failure_location} appeared before the deadline"
        )
        if forbidden:
            message += (
                "; S3 answered 403 Forbidden, which it also does for a missing key when the "
                "caller lacks s3:ListBucket: grant s3:ListBucket (and s3:GetObject) on both "
                "buckets to tell a missing object from a forbidden one"
            )
        if last_error is not None:
            message += f"; last S3 error: {last_error}"
        raise InferenceTimeoutError(
            message, inference_id=target.inference_id, deadline_exceeded=True
        ) from last_error
