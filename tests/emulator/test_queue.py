"""The endpoint's queue: concurrency limit, backlog, TTL expiry, invocation timeout, failures."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from emulator.emulator_helpers import object_exists, read_object, runtime_client, wait_until
from sagemaker_async.emulator import EndpointConfig, InferenceRequest, ModelError


class GatedModel:
    """An async model that holds every request until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.running = 0
        self.peak = 0
        self.seen: list[str] = []

    async def __call__(self, request: InferenceRequest) -> tuple[bytes, str]:
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.seen.append(request.inference_id)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        return request.payload.upper(), "text/plain"


async def test_concurrency_limit_and_backlog(
    local_async_endpoint_factory: Any, aws: dict[str, Any]
) -> None:
    model = GatedModel()
    emu = await local_async_endpoint_factory(
        [
            EndpointConfig(
                "gated",
                model=model,
                instance_count=1,
                max_concurrent_invocations_per_instance=2,
            )
        ]
    )
    endpoint = emu.endpoint("gated")
    async with runtime_client(emu) as client:
        responses = [
            await client.invoke_endpoint_async(
                EndpointName="gated", Body=f"r{i}".encode(), InferenceId=f"id-{i}"
            )
            for i in range(5)
        ]
    await wait_until(lambda: endpoint.in_flight == 2 and endpoint.backlog == 3)
    assert model.running == 2
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{emu.url}/_emulator/endpoints/gated") as answer,
    ):
        stats = await answer.json()
    assert stats["backlog"] == 3
    assert stats["in_flight"] == 2
    assert stats["concurrency"] == 2
    assert stats["oldest_request_age_seconds"] >= 0
    model.gate.set()
    await emu.join()
    assert model.peak == 2
    assert model.seen == [f"id-{i}" for i in range(5)]  # FIFO
    final = emu.stats("gated")
    assert (final.completed, final.failed, final.backlog, final.in_flight) == (5, 0, 0, 0)
    body, content_type = await read_object(aws["s3"], responses[4]["OutputLocation"])
    assert (body, content_type) == (b"R4", "text/plain")


async def test_request_ttl_expiry_writes_failure(
    local_async_endpoint_factory: Any, aws: dict[str, Any]
) -> None:
    model = GatedModel()
    # time_scale 0.005: RequestTTLSeconds=60 lasts 0.3 s here, yet 60 is what the wire carries.
    emu = await local_async_endpoint_factory(
        [EndpointConfig("ttl", model=model, max_concurrent_invocations_per_instance=1)],
        time_scale=0.005,
    )
    async with runtime_client(emu) as client:
        holder = await client.invoke_endpoint_async(EndpointName="ttl", Body=b"first")
        waiting = await client.invoke_endpoint_async(
            EndpointName="ttl", Body=b"second", RequestTTLSeconds=60
        )
    await wait_until(lambda: emu.stats("ttl").expired == 1)
    await wait_until(lambda: emu.stats("ttl").failed == 1)
    text, _ = await read_object(aws["s3"], waiting["FailureLocation"])
    assert b"RequestTTLSeconds (60 s)" in text
    assert emu.endpoint("ttl").backlog == 0
    model.gate.set()
    await emu.join()
    assert model.seen == [holder["InferenceId"]]  # the expired request never reached the model
    assert not await object_exists(aws["s3"], waiting["OutputLocation"])
    assert emu.stats("ttl").completed == 1


async def test_invocation_timeout_writes_failure(
    local_async_endpoint_factory: Any, aws: dict[str, Any]
) -> None:
    model = GatedModel()  # never released: only the timeout ends it
    emu = await local_async_endpoint_factory([EndpointConfig("slow", model=model)], time_scale=0.01)
    async with runtime_client(emu) as client:
        response = await client.invoke_endpoint_async(
            EndpointName="slow", Body=b"x", InvocationTimeoutSeconds=5
        )
    await emu.join()
    text, _ = await read_object(aws["s3"], response["FailureLocation"])
    assert b"InvocationTimeoutSeconds (5 s)" in text
    stats = emu.stats("slow")
    assert (stats.timed_out, stats.failed, stats.completed) == (1, 1, 0)
    assert model.running == 0  # the model call was cancelled


async def test_model_failures(local_async_endpoint_factory: Any, aws: dict[str, Any]) -> None:
    def sync_raises(request: InferenceRequest) -> bytes:
        raise ValueError("boom: bad input shape")

    async def async_raises_400(request: InferenceRequest) -> bytes:
        raise ModelError("payload must be JSON", 400)

    def sync_ok(request: InferenceRequest) -> bytes:
        time.sleep(0.01)  # sync models run in a thread; this must not block the loop
        return b"sync:" + request.payload

    emu = await local_async_endpoint_factory(
        [
            EndpointConfig("fails", model="fail"),
            EndpointConfig("raises", model=sync_raises),
            EndpointConfig("bad-input", model=async_raises_400),
            EndpointConfig("sync", model=sync_ok),
        ]
    )
    results = {}
    async with runtime_client(emu) as client:
        for name in ("fails", "raises", "bad-input", "sync"):
            results[name] = await client.invoke_endpoint_async(EndpointName=name, Body=b"in")
    await emu.join()
    s3 = aws["s3"]
    text, content_type = await read_object(s3, results["fails"]["FailureLocation"])
    assert b"Received server error (500) from model" in text
    assert b"always fails" in text
    assert content_type.startswith("text/plain")
    text, _ = await read_object(s3, results["raises"]["FailureLocation"])
    assert b"ValueError: boom: bad input shape" in text
    text, _ = await read_object(s3, results["bad-input"]["FailureLocation"])
    assert b"Received client error (400)" in text and b"payload must be JSON" in text
    body, content_type = await read_object(s3, results["sync"]["OutputLocation"])
    assert (body, content_type) == (b"sync:in", "application/octet-stream")
    for name in ("fails", "raises", "bad-input"):
        assert not await object_exists(s3, results[name]["OutputLocation"])
        assert emu.stats(name).failed == 1


async def test_scaled_to_zero_endpoint_only_queues(local_async_endpoint_factory: Any) -> None:
    emu = await local_async_endpoint_factory([EndpointConfig("zero", instance_count=0)])
    async with runtime_client(emu) as client:
        for _ in range(3):
            await client.invoke_endpoint_async(EndpointName="zero", Body=b"x")
    assert emu.endpoint("zero").backlog == 3
    assert emu.stats("zero").in_flight == 0
