"""The backlog metrics of async endpoints, published to the embedded CloudWatch."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import aiobotocore.session

from emulator.emulator_helpers import client_kwargs, runtime_client
from sagemaker_async.emulator import EndpointConfig


async def test_backlog_metrics_reach_cloudwatch(
    local_async_endpoint_factory: Any, embedded_s3: Any
) -> None:
    emu = await local_async_endpoint_factory(
        [EndpointConfig("scaled-to-zero", instance_count=0)], metrics_interval=0.1
    )
    async with runtime_client(emu) as client:
        for _ in range(3):
            await client.invoke_endpoint_async(EndpointName="scaled-to-zero", Body=b"x")
    session = aiobotocore.session.get_session()
    async with session.create_client("cloudwatch", **client_kwargs(embedded_s3.url)) as cw:

        async def maximum(name: str) -> float | None:
            now = dt.datetime.now(dt.timezone.utc)
            answer = await cw.get_metric_statistics(
                Namespace="AWS/SageMaker",
                MetricName=name,
                Dimensions=[{"Name": "EndpointName", "Value": "scaled-to-zero"}],
                StartTime=now - dt.timedelta(minutes=5),
                EndTime=now + dt.timedelta(minutes=5),
                Period=60,
                Statistics=["Maximum"],
            )
            points = answer["Datapoints"]
            return max(p["Maximum"] for p in points) if points else None

        seen: dict[str, float | None] = {}

        async def published() -> bool:
            for name in (
                "ApproximateBacklogSize",
                "ApproximateBacklogSizePerInstance",
                "ApproximateAgeOfOldestRequest",
                "HasBacklogWithoutCapacity",
            ):
                seen[name] = await maximum(name)
            return seen["ApproximateBacklogSize"] == 3.0

        for _ in range(150):  # a few intervals are enough; this only guards against a hang
            if await published():
                break
            await asyncio.sleep(0.1)
    assert seen["ApproximateBacklogSize"] == 3.0
    assert seen["ApproximateBacklogSizePerInstance"] == 3.0  # zero instances count as one
    assert seen["HasBacklogWithoutCapacity"] == 1.0
    assert (seen["ApproximateAgeOfOldestRequest"] or 0.0) > 0.0
