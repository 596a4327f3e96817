"""The watcher learns an endpoint's latency from S3's timestamps and reads less often."""

from __future__ import annotations

import asyncio
from typing import Any

from aiobotocore.session import get_session

from sagemaker_async import AsyncInferenceClient, PollingConfig
from sagemaker_async._adaptive import LatencyTracker
from sagemaker_async.emulator import EndpointConfig


def test_tracker_needs_samples_and_takes_a_low_percentile() -> None:
    tracker = LatencyTracker(keep=100, min_samples=8)
    for _ in range(7):
        tracker.observe("ep", 5.0)
    assert tracker.first_read_after("ep") == 0.0  # not enough samples yet
    tracker.observe("ep", 5.0)
    assert tracker.first_read_after("ep") == 5.0  # the 25th percentile of the lower bounds
    for seconds in range(1, 100):
        tracker.observe("ep", float(seconds))  # only the last 100 are kept
    assert tracker.first_read_after("ep") == 25.0  # [1, 2, 3, 4, 5, 5, 6, ...][25]
    assert tracker.first_read_after("other") == 0.0


async def test_learned_latency_cuts_s3_reads(
    local_async_endpoint_factory: Any, embedded_s3: Any
) -> None:
    emulator = await local_async_endpoint_factory(
        [EndpointConfig("steady", model="sleep:2.5", max_concurrent_invocations_per_instance=20)]
    )
    session = get_session()
    session.set_credentials(*emulator.credentials)
    polling = PollingConfig(initial_delay=0.05, max_delay=0.4, multiplier=2.0, jitter=0.0)
    ep = emulator.endpoint("steady")

    def reads() -> int:  # counted by the S3 server
        return embedded_s3.counts(ep.output_path, ep.failure_path)["GET"]

    async with AsyncInferenceClient(
        session=session,
        region_name=emulator.region,
        endpoint_url=emulator.url,
        s3_endpoint_url=emulator.s3_endpoint_url,
        polling=polling,
    ) as client:

        async def batch() -> float:
            before = reads()
            handles = [await client.invoke_endpoint_async("steady", body=b"x") for _ in range(10)]
            await asyncio.gather(*handles)
            return (reads() - before) / len(handles)

        cold = await batch()
        assert client._watcher.latencies.first_read_after("steady") > 0
        warm = await batch()
    print(f"GETs per inference: cold {cold:.1f}, warm {warm:.1f}")
    assert warm < cold, (warm, cold)


async def test_a_sibling_result_cuts_sleeps_short_once() -> None:
    import time

    from sagemaker_async._adaptive import Siblings

    siblings = Siblings()
    now = time.time()
    older = asyncio.create_task(siblings.nap("ep", now - 5.0, 60.0))
    younger = asyncio.create_task(siblings.nap("ep", now + 0.2, 60.0))
    other_endpoint = asyncio.create_task(siblings.nap("other", now - 5.0, 60.0))
    await asyncio.sleep(0)
    siblings.found("ep", now - 0.1)  # a result 0.1 s after its submission
    # the older sleeper reads at once, the younger 0.1 s after its own submission
    assert await asyncio.wait_for(older, 5) is True
    assert await asyncio.wait_for(younger, 5) is True
    assert not other_endpoint.done()
    other_endpoint.cancel()
    await asyncio.gather(other_endpoint, return_exceptions=True)
    assert await siblings.nap("ep", now, 0.01) is False  # nobody cut it short
    assert not siblings._sleeping.get("ep") and not siblings._sleeping.get("other")


async def test_a_later_schedule_is_never_pushed_back() -> None:
    import time

    from sagemaker_async._adaptive import Siblings

    siblings = Siblings()
    nap = asyncio.create_task(siblings.nap("ep", time.time(), 0.05))
    await asyncio.sleep(0)
    siblings.found("ep", time.time() - 600)  # a slow sibling: would mean "wait 10 minutes"
    assert await asyncio.wait_for(nap, 5) is False  # woke on its own schedule
