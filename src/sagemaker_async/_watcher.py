"""The watcher: polls a handle's output and failure locations with capped, jittered backoff.

One watcher per client; it owns no task of its own. Each waiting handle runs
:meth:`Watcher.watch` in the handle's own task, so cancelling the handle stops its polling and
nothing is left behind.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import tenacity

from ._config import PollingConfig
from ._errors import InferenceFailedError, InferenceTimeoutError, InvocationError
from ._result import InferenceResult
from ._retry import Sleep, backoff
from ._s3 import Absent, ObjectStore, S3Object

__all__ = ["WatchTarget", "Watcher"]

logger = logging.getLogger("sagemaker_async")


@dataclass(frozen=True)
class WatchTarget:
    """What the watcher needs to know about one inference (times are :func:`time.time`)."""

    inference_id: str
    output_location: str
    failure_location: str
    submitted_at: float
    deadline: float


class Watcher:
    """Resolves inferences by polling S3 (GET output, then GET failure, each round)."""

    def __init__(self, store: ObjectStore, sleep: Sleep) -> None:
        self._store = store
        self._sleep = sleep

    async def watch(self, target: WatchTarget, polling: PollingConfig) -> InferenceResult:
        """Wait for the output or the failure object of ``target``.

        Raises:
            InferenceFailedError: the failure object appeared.
            InferenceTimeoutError: the deadline passed first (chained to the last S3 error).
            InvocationError: S3 refused a read for a reason that retrying cannot fix.
        """
        forbidden = False
        rounds = 0

        async def one_round(check_failure: bool | None = None) -> InferenceResult | None:
            nonlocal forbidden, rounds
            rounds += 1
            found = await self._store.get(target.output_location, deadline=target.deadline)
            if isinstance(found, S3Object):
                return InferenceResult(
                    body=found.body,
                    content_type=found.content_type,
                    output_location=target.output_location,
                    inference_id=target.inference_id,
                )
            # Failures are rare and their latency matters less than the bill: the failure
            # location is read every other round (and once more before giving up).
            if not (check_failure if check_failure is not None else rounds % 2 == 1):
                forbidden = forbidden or found is Absent.FORBIDDEN
                return None
            failed = await self._store.get(target.failure_location, deadline=target.deadline)
            if isinstance(failed, S3Object):
                raise InferenceFailedError(
                    failed.body.decode("utf-8", errors="replace"),
                    failure_location=target.failure_location,
                    inference_id=target.inference_id,
                )
            forbidden = forbidden or Absent.FORBIDDEN in (found, failed)
            return None

        base = backoff(polling.initial_delay, polling.max_delay, polling.multiplier, polling.jitter)

        def wait(state: tenacity.RetryCallState) -> float:
            return max(0.0, min(float(base(state)), target.deadline - time.time()))

        # A fresh submission is never done at once: skip the round that would surely miss.
        first = min(
            polling.initial_delay - (time.time() - target.submitted_at),
            target.deadline - time.time(),
        )
        if first > 0:
            await self._sleep(first)

        policy = tenacity.AsyncRetrying(
            sleep=self._sleep,
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
