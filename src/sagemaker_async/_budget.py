"""The request budget: a client-wide cap on S3 requests per second, halved on SlowDown."""

from __future__ import annotations

import logging

from ._clock import Clock

__all__ = ["RequestBudget"]

logger = logging.getLogger("sagemaker_async")

# After a SlowDown, the rate climbs back by this fraction of the cap per second without one.
_RECOVERY_PER_SECOND = 0.05
# The rate never drops below this, so waiting always makes progress.
_FLOOR = 1.0


class RequestBudget:
    """A token bucket shared by every S3 read the engine makes.

    :meth:`take` spends a token and may drive the bucket into debt (a job that needed a second
    request); :meth:`delay` says how long to wait before the next request may start. A
    ``SlowDown`` halves the rate (at most once a second, since one overload answers many
    requests at once); the rate then grows back linearly to the cap.
    """

    def __init__(self, rate: float, clock: Clock) -> None:
        self.cap = rate
        self.rate = rate
        self._clock = clock
        self._burst = max(1.0, rate / 10)  # a tenth of a second's worth
        self._tokens = self._burst
        self._last = clock.monotonic()
        self._slowed_at = float("-inf")
        self.slowdowns = 0

    def _refill(self) -> None:
        now = self._clock.monotonic()
        elapsed = max(0.0, now - self._last)
        recovering = now - max(self._last, self._slowed_at + 1.0)
        self._last = now
        if self.rate < self.cap and recovering > 0:
            self.rate = min(self.cap, self.rate + self.cap * _RECOVERY_PER_SECOND * recovering)
        self._tokens = min(self._burst, self._tokens + elapsed * self.rate)

    def delay(self) -> float:
        """Seconds until a request may start (0 when one may start now)."""
        self._refill()
        if self._tokens >= 1.0:
            return 0.0
        return max(0.001, (1.0 - self._tokens) / self.rate)  # not 1e-17: time must move

    def take(self) -> None:
        """Spend one request (the balance may go negative)."""
        self._refill()
        self._tokens -= 1.0

    def slow_down(self) -> None:
        """S3 answered SlowDown (or 503): halve the rate."""
        now = self._clock.monotonic()
        if now - self._slowed_at < 1.0:
            return
        self._refill()
        self._slowed_at = now
        self.slowdowns += 1
        self.rate = max(_FLOOR, self.rate / 2)
        logger.warning(
            "S3 answered SlowDown: the client now makes at most %.0f S3 requests/s "
            "(cap %.0f), and grows back once S3 recovers",
            self.rate,
            self.cap,
        )
