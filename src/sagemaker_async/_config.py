"""Configuration value objects: how handles poll, and how calls are retried."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._errors import ValidationError

__all__ = ["PollingConfig", "RetryConfig"]


def _check_positive(
    owner: str, field: str, value: float | None, *, allow_zero: bool = False
) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValidationError(f"{owner}.{field}", f"{value!r} is not a number", "a finite number")
    if value < 0 or (value == 0 and not allow_zero) or math.isinf(value):
        rule = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValidationError(f"{owner}.{field}", f"{value!r} is out of range", rule, value)


@dataclass(frozen=True)
class PollingConfig:
    """How a handle watches the output and failure locations.

    Each round reads the output location (and, every second round, the failure location);
    between rounds it sleeps ``initial_delay * multiplier**n`` seconds, capped at
    ``max_delay``, shortened by a random fraction of up to ``jitter`` of itself ("equal
    jitter"), and clamped to the time left before the deadline.

    Attributes:
        initial_delay: the first sleep, in seconds.
        max_delay: the longest sleep between two rounds, in seconds.
        multiplier: growth factor of the sleep from one round to the next (>= 1).
        jitter: the largest random fraction (0 to < 1) cut from each sleep. Handles submitted
            together then do not poll in lock step, and the first to find its result wakes
            the older ones of its endpoint (with ``adaptive``).
        timeout: how long a handle waits, in seconds from submission. ``None`` (the default)
            derives it from the request: RequestTTLSeconds + InvocationTimeoutSeconds (their
            service defaults when not given) + ``deadline_margin``.
        deadline_margin: slack added to the derived deadline for queueing and S3 latency.
        adaptive: learn from the other handles of the same endpoint. A new handle's first read
            goes near the endpoint's usual latency (learned from S3's own timestamps) instead
            of backing off from zero; and a handle that finds its result wakes the handles
            submitted before it, once each. Turn it off when latencies vary wildly by payload.
    """

    initial_delay: float = 0.5
    max_delay: float = 20.0
    multiplier: float = 2.0
    jitter: float = 0.5
    timeout: float | None = None
    deadline_margin: float = 60.0
    adaptive: bool = True

    def __post_init__(self) -> None:
        _check_positive("PollingConfig", "initial_delay", self.initial_delay)
        _check_positive("PollingConfig", "max_delay", self.max_delay)
        _check_positive("PollingConfig", "jitter", self.jitter, allow_zero=True)
        if self.jitter >= 1:
            raise ValidationError(
                "PollingConfig.jitter",
                f"{self.jitter!r} is 1 or more",
                "a fraction 0 <= x < 1",
                self.jitter,
            )
        _check_positive("PollingConfig", "timeout", self.timeout)
        _check_positive("PollingConfig", "deadline_margin", self.deadline_margin, allow_zero=True)
        _check_positive("PollingConfig", "multiplier", self.multiplier)
        if self.multiplier < 1:
            raise ValidationError(
                "PollingConfig.multiplier",
                f"{self.multiplier!r} is below 1",
                ">= 1",
                self.multiplier,
            )
        if self.max_delay < self.initial_delay:
            raise ValidationError(
                "PollingConfig.max_delay",
                f"{self.max_delay!r} is below initial_delay={self.initial_delay!r}",
                "max_delay >= initial_delay",
                self.max_delay,
            )


@dataclass(frozen=True)
class RetryConfig:
    """How transient errors are retried (throttling, 5xx, SlowDown, dropped connections).

    The invoke call is retried at most ``max_attempts`` times in all, always with the same
    InferenceId, so SageMaker can tie the attempts together. S3 calls made while waiting are
    retried until the handle's deadline: an unavailable S3 never fails a handle early.
    Validation and access errors are never retried.

    Attributes:
        max_attempts: attempts of InvokeEndpointAsync (and of the body upload), first included.
        initial_delay: first backoff sleep, in seconds.
        max_delay: longest backoff sleep, in seconds.
        multiplier: growth factor of the sleep between attempts.
        jitter: up to this many random seconds added to each sleep.
    """

    max_attempts: int = 5
    initial_delay: float = 0.2
    max_delay: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ValidationError(
                "RetryConfig.max_attempts", f"{self.max_attempts!r} is not an int", "an int >= 1"
            )
        if self.max_attempts < 1:
            raise ValidationError(
                "RetryConfig.max_attempts",
                f"{self.max_attempts} is below 1",
                "an int >= 1",
                self.max_attempts,
            )
        _check_positive("RetryConfig", "initial_delay", self.initial_delay)
        _check_positive("RetryConfig", "max_delay", self.max_delay)
        _check_positive("RetryConfig", "jitter", self.jitter, allow_zero=True)
        _check_positive("RetryConfig", "multiplier", self.multiplier)
        if self.multiplier < 1:
            raise ValidationError(
                "RetryConfig.multiplier", f"{self.multiplier!r} is below 1", ">= 1", self.multiplier
            )
