"""The cost model: list a directory or poll its locations, and how often to sweep it.

Costs are counted in GETs. Per round, polling costs one GET per pending output location and
half a GET per pending failure location (read half as often); listing costs ``pages`` LISTs,
each worth ``list_cost`` GETs (12.5 at S3 Standard prices). A directory switches only when
the other way is cheaper by ``HYSTERESIS``, so it does not flap as results come and go.
"""

from __future__ import annotations

from ._records import LIST, POLL, Mode

__all__ = ["HYSTERESIS", "SPEND", "choose", "crowded", "sweep_cap"]

HYSTERESIS = 1.25
# A listed directory may spend this fraction of what polling it at max_delay would cost: so a
# busy directory is swept often (every initial_delay) and a quiet one seldom (max_delay).
SPEND = 0.125


def choose(current: Mode, poll_weight: float, pages: int, list_cost: float) -> Mode:
    """The cheaper way for a directory (keeping ``current`` unless the other wins clearly)."""
    listing = pages * list_cost
    if listing * HYSTERESIS < poll_weight:
        return LIST
    if listing > poll_weight * HYSTERESIS:
        return POLL
    return current


def crowded(pages_read: int, poll_weight: float, list_cost: float) -> bool:
    """True when a sweep that is not over already cost more than polling would."""
    return pages_read * list_cost > poll_weight * HYSTERESIS


def sweep_cap(
    pages: int, poll_weight: float, list_cost: float, min_delay: float, max_delay: float
) -> float:
    """The longest wait between two sweeps of an idle directory, within [min, max]_delay."""
    cap = pages * list_cost * max_delay / (SPEND * max(poll_weight, 1e-9))
    return min(max_delay, max(min_delay, cap))
