"""Capped exponential backoff with jitter: the one formula of the package.

A pure function (it imports nothing of the package), for every schedule that backs off:
tenacity's waits and :func:`~sagemaker_async._retry.retry_delay` (invokes, uploads, SQS),
and the engine's polls and sweeps.
"""

from __future__ import annotations

import random

__all__ = ["backoff_delay"]


def backoff_delay(
    attempt: int,
    *,
    initial: float,
    maximum: float,
    multiplier: float,
    jitter: float = 0.0,
    jitter_ratio: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """The wait before retry ``attempt`` (1-based).

    ``min(maximum, initial * multiplier ** (attempt - 1))``, less up to ``jitter_ratio`` of
    it (a fraction, 0..1: "equal jitter"), plus up to ``jitter`` seconds; each jitter takes one
    draw of ``rng`` (the ``random`` module when None), and only when it is not zero.
    """
    try:
        delay = min(maximum, initial * multiplier ** max(0, attempt - 1))
    except OverflowError:
        delay = maximum
    draw = (rng or random).random
    if jitter_ratio:
        delay *= 1.0 - jitter_ratio * draw()
    if jitter:
        delay += jitter * draw()
    return delay
