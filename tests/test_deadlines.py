"""Every handle ends by its deadline, whatever S3 does (issue 18).

S3 is moto's, behind a fault proxy on 127.0.0.1 that fails requests by a rule (503 SlowDown,
a stall, a trickle, a failing listing) or by seeded dice; the client's clock is fake, so
deadlines, attempt limits and retries are virtual seconds while every request is real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiobotocore.session import get_session
from aiohttp import web

from fakeclock import settler
from faultproxy import FaultMix, FaultProxy, Rule
from sagemaker_async import (
    AsyncInferenceClient,
    AsyncInferenceHandle,
    CompletionConfig,
    InferenceTimeoutError,
    PollingConfig,
    RetryConfig,
)
from test_engine import World

POLLING = PollingConfig(initial_delay=0.5, max_delay=5.0, jitter=0.5)
# A last look of at most a second, plus the steps of the fake clock's run.
LATE = 2.0

NO_FAULTS = FaultMix()
Make = Callable[..., Awaitable[World]]


def is_list(request: web.Request) -> bool:
    return request.method == "GET" and "list-type" in request.query


def is_read(request: web.Request) -> bool:
    """A GET or HEAD of one object (not a listing)."""
    return request.method in ("GET", "HEAD") and not is_list(request)


@pytest.fixture
async def faulty(moto_url: str, embedded_s3: Any) -> AsyncIterator[Make]:
    """``make(rule=, mix=, ...)``: a World whose client reaches moto's S3 through a fault proxy."""
    session = get_session()
    proxies: list[FaultProxy] = []
    clients: list[AsyncInferenceClient] = []
    async with session.create_client("s3", endpoint_url=moto_url, region_name="us-east-1") as s3:

        async def make(
            rule: Rule | None = None,
            mix: FaultMix = NO_FAULTS,
            *,
            completion: CompletionConfig | None = None,
            polling: PollingConfig = POLLING,
            seed: int = 7,
            stalls: bool = True,
        ) -> World:
            proxy = FaultProxy(moto_url, mix, kind="s3", seed=seed, stall_seconds=30, rule=rule)
            url = await proxy.start()
            proxies.append(proxy)
            world = await World.make(url, s3, embedded_s3, completion=completion, polling=polling)
            clients.append(world.client)
            if stalls:  # stalled requests never settle: time moves on after 50 ms of real time
                world.settle = settler(world.client, patience=0.05)
            return world

        yield make
        for client in clients:
            await client.aclose()
        for proxy in proxies:
            await proxy.close()


async def ended_by(world: World, handles: list[AsyncInferenceHandle], limit: float) -> float:
    """Run the clock until every handle ended (at most ``limit`` virtual s); the last end."""
    for handle in handles:
        world.watch(handle)
    start = world.clock.now
    await world.clock.run_until(
        lambda: len(world.done_at) == len(handles), world.settle, step=0.25, limit=limit
    )
    return max(world.done_at.values()) - start


# -- 1. a result that a listing saw, whose reads then fail ------------------------------------
@pytest.mark.parametrize("fault", ["unavailable", "stall"])
async def test_a_listed_result_whose_reads_keep_failing_ends_by_its_deadline(
    faulty: Make, fault: str
) -> None:
    """Issue 18, defect 1: the resolve retry had no deadline, and the deadline job skipped it."""
    world = await faulty(
        rule=lambda r: fault if is_read(r) else None,
        completion=CompletionConfig(strategy="list"),
    )
    handles = [world.handle("out", "fail", timeout=5) for _ in range(20)]
    for handle in handles:
        await world.write(handle.output_location)  # listed at once; every GET then fails
    took = await ended_by(world, handles, limit=60)
    assert took <= 5 + LATE
    assert all(isinstance(h.exception(), InferenceTimeoutError) for h in handles)


# -- 2. lateness does not grow with the crowd -------------------------------------------------
@pytest.mark.parametrize("n", [1, 100])
@pytest.mark.parametrize("fault", ["stall", "unavailable", "trickle"])
async def test_every_handle_ends_by_its_deadline_however_many_wait(
    faulty: Make, n: int, fault: str
) -> None:
    """Issue 18, defect 2: last looks queued behind stalled reads and a halved budget."""
    world = await faulty(rule=lambda r: fault)
    handles = [world.handle("out", "fail", timeout=5) for _ in range(n)]
    if fault == "trickle":
        for handle in handles:  # there, but it comes a byte a second
            await world.write(handle.output_location, b"x" * 64)
    took = await ended_by(world, handles, limit=60)
    assert took <= 5 + LATE
    errors = [h.exception() for h in handles]
    assert all(isinstance(e, InferenceTimeoutError) for e in errors)
    # Each says why, also when the lane had no time left to look (S3 kept failing).
    assert all(e is not None and e.__cause__ is not None for e in errors)


# -- 3. S3's slow tail ------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 40])
async def test_a_slow_tail_of_stalled_reads_costs_seconds(faulty: Make, n: int) -> None:
    """Issue 18, defect 3: with 10% of reads stalling, results were found a minute late."""
    world = await faulty(mix=FaultMix(stall=0.1), seed=18)
    handles = [world.handle("out", "fail", timeout=120) for _ in range(n)]
    for handle in handles:
        world.watch(handle)
    await world.advance(1.0)  # a 1 s model
    for handle in handles:
        await world.write(handle.output_location)
    start = world.clock.now - 1.0
    await world.clock.run_until(lambda: len(world.done_at) == n, world.settle, step=0.25, limit=60)
    assert all(h.exception() is None for h in handles)
    assert max(world.done_at.values()) - start <= 15


# -- 5. a listing that keeps failing -----------------------------------------------------------
@pytest.mark.parametrize("fault", ["unavailable", "internal_after"])
async def test_a_directory_whose_listing_keeps_failing_is_read_key_by_key(
    faulty: Make, fault: str
) -> None:
    """Issue 18, defect 5: 40 results written at 1.5 s were found at the 30 s deadline."""
    # Nothing stalls: time moves only when every request has its answer (on a loaded machine
    # too: a request in flight for a while must not let virtual time run ahead of it).
    world = await faulty(rule=lambda r: fault if is_list(r) else None, stalls=False)
    handles = [world.handle("out", "fail", timeout=30) for _ in range(40)]
    for handle in handles:
        world.watch(handle)
    await world.advance(1.5)
    assert world.modes() == {"out/": "list", "fail/": "list"}
    for handle in handles:
        await world.write(handle.output_location)
    start = world.clock.now
    await world.clock.run_until(
        lambda: all(h.done() for h in handles), world.settle, step=0.25, limit=60
    )
    assert all(h.exception() is None for h in handles)
    assert max(world.done_at[h.inference_id] for h in handles) - start <= POLLING.max_delay + 1


# -- 6. the wall clock steps between submission and the first await ----------------------------
async def test_a_wall_clock_step_forward_before_the_first_await_times_nothing_out(
    faulty: Make,
) -> None:
    """Issue 18, defect 6: a +3,600 s step timed 10 of 10 handles out at once."""
    world = await faulty(stalls=False)
    handles = [world.handle("out", "fail", timeout=5) for _ in range(10)]
    world.clock._offset += 3600  # NTP steps the wall clock before anyone awaits
    for handle in handles:
        world.watch(handle)
    await world.advance(1)
    assert not any(h.done() for h in handles)
    for handle in handles:
        await world.write(handle.output_location)
    await world.advance(3)
    assert all(h.done() and h.exception() is None for h in handles)


async def test_a_wall_clock_step_back_before_the_first_await_delays_no_deadline(
    faulty: Make,
) -> None:
    """Issue 18, defect 6: a -30 s step made a 5 s deadline end at 35 s."""
    world = await faulty(stalls=False)
    handles = [world.handle("out", "fail", timeout=5) for _ in range(10)]
    world.clock._offset -= 30
    took = await ended_by(world, handles, limit=60)
    assert took <= 5 + LATE
    assert all(isinstance(h.exception(), InferenceTimeoutError) for h in handles)


def test_first_byte_timeout_is_a_setting_near_s3s_guidance() -> None:
    assert RetryConfig().first_byte_timeout == 2.0
