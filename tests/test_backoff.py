"""One backoff formula for the package (issue 18, G): ``_backoff.backoff_delay``."""

from __future__ import annotations

import random

import pytest

from sagemaker_async import RetryConfig
from sagemaker_async._backoff import backoff_delay
from sagemaker_async._retry import retry_delay


def test_capped_exponential_without_jitter() -> None:
    delays = [backoff_delay(n, initial=0.5, maximum=5.0, multiplier=2.0) for n in range(1, 7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_a_huge_attempt_number_waits_the_maximum() -> None:
    assert backoff_delay(100_000, initial=1.0, maximum=30.0, multiplier=2.0) == 30.0


@pytest.mark.parametrize("attempt", [1, 2, 5])
def test_jitter_adds_up_to_its_seconds_and_a_ratio_takes_up_to_its_share(attempt: int) -> None:
    base = min(8.0, 1.0 * 2.0 ** (attempt - 1))
    added = backoff_delay(
        attempt, initial=1.0, maximum=8.0, multiplier=2.0, jitter=0.3, rng=random.Random(7)
    )
    assert added == base + 0.3 * random.Random(7).random()
    taken = backoff_delay(
        attempt, initial=1.0, maximum=8.0, multiplier=2.0, jitter_ratio=0.5, rng=random.Random(7)
    )
    assert taken == base * (1 - 0.5 * random.Random(7).random())


def test_the_retry_policy_waits_by_the_same_formula() -> None:
    config = RetryConfig(initial_delay=0.1, max_delay=1.0, multiplier=3.0, jitter=0.0)
    assert [retry_delay(config, n) for n in range(1, 5)] == [
        backoff_delay(n, initial=0.1, maximum=1.0, multiplier=3.0) for n in range(1, 5)
    ]
    assert retry_delay(config, 4) == 1.0
