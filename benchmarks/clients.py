"""One benchmark client run, in its own process so its CPU time can be measured alone.

Usage: python clients.py SCENARIO N INPUT_PREFIX ENDPOINT [RATE]
With RATE (inferences per second) the submissions are spread over time, as in a service;
without, all are submitted at once, as in a batch. Prints ``RESULT {json}`` once every
inference has resolved, then exits (or lingers, as the SageMaker SDK's waiter threads do).
Endpoints and credentials come from the environment.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any


def report(started: float, ok: int, failed: int, latencies: list[float], **extra: Any) -> None:
    ordered = sorted(latencies) or [float("nan")]

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    result = {
        "wall": time.monotonic() - started,
        "ok": ok,
        "failed": failed,
        "p50": pct(0.5),
        "p95": pct(0.95),
        **extra,
    }
    print("RESULT " + json.dumps(result), flush=True)


async def at_rate(i: int, rate: float | None, started: float) -> None:
    if rate:
        await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))


async def ours(n: int, prefix: str, endpoint: str, rate: float | None) -> None:
    from sagemaker_async import AsyncInferenceClient, InferenceFailedError

    started = time.monotonic()
    latencies: list[float] = []
    async with AsyncInferenceClient() as client:

        async def one(i: int) -> bool:
            await at_rate(i, rate, started)
            t0 = time.monotonic()
            handle = await client.invoke_endpoint_async(
                endpoint, input_location=f"{prefix}{i}.json"
            )
            try:
                await handle
                return True
            except InferenceFailedError:
                return False
            finally:
                latencies.append(time.monotonic() - t0)

        outcomes = await asyncio.gather(*(one(i) for i in range(n)))
    report(started, sum(outcomes), n - sum(outcomes), latencies)


async def naive(n: int, prefix: str, endpoint: str, rate: float | None) -> None:
    """The loop people write first: HEAD both locations every second, then GET."""
    from aiobotocore.session import get_session
    from botocore.exceptions import ClientError

    started = time.monotonic()
    latencies: list[float] = []
    session = get_session()
    async with (
        session.create_client("sagemaker-runtime") as rt,
        session.create_client("s3") as s3,
    ):

        async def exists(uri: str) -> bool:
            bucket, key = uri[5:].split("/", 1)
            try:
                await s3.head_object(Bucket=bucket, Key=key)
                return True
            except ClientError:
                return False

        async def one(i: int) -> bool:
            await at_rate(i, rate, started)
            t0 = time.monotonic()
            r = await rt.invoke_endpoint_async(
                EndpointName=endpoint, InputLocation=f"{prefix}{i}.json"
            )
            while True:
                await asyncio.sleep(1)
                for uri, ok in ((r["OutputLocation"], True), (r["FailureLocation"], False)):
                    if await exists(uri):
                        bucket, key = uri[5:].split("/", 1)
                        obj = await s3.get_object(Bucket=bucket, Key=key)
                        await obj["Body"].read()
                        latencies.append(time.monotonic() - t0)
                        return ok

        outcomes = await asyncio.gather(*(one(i) for i in range(n)))
    report(started, sum(outcomes), n - sum(outcomes), latencies)


def sdk(n: int, prefix: str, endpoint: str, rate: float | None) -> None:
    """SageMaker Python SDK v2 AsyncPredictor, 32 threads, WaiterConfig(delay=1)."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    import sagemaker
    from sagemaker.async_inference import WaiterConfig
    from sagemaker.exceptions import AsyncInferenceModelError
    from sagemaker.predictor import Predictor
    from sagemaker.predictor_async import AsyncPredictor

    started = time.monotonic()
    latencies: list[float] = []
    boto_session = boto3.Session()
    session = sagemaker.Session(
        boto_session=boto_session,
        sagemaker_runtime_client=boto_session.client("sagemaker-runtime"),
        sagemaker_client=boto_session.client("sagemaker"),
    )
    predictor = AsyncPredictor(Predictor(endpoint, sagemaker_session=session))

    def one(i: int) -> bool:
        if rate:
            time.sleep(max(0.0, started + i / rate - time.monotonic()))
        t0 = time.monotonic()
        response = predictor.predict_async(input_path=f"{prefix}{i}.json")
        try:
            response.get_result(WaiterConfig(max_attempts=60, delay=1))
            return True
        except AsyncInferenceModelError:
            return False
        finally:
            latencies.append(time.monotonic() - t0)

    with ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(one, range(n)))
    report(started, sum(outcomes), n - sum(outcomes), latencies)


if __name__ == "__main__":
    scenario, count, input_prefix, endpoint_name = sys.argv[1:5]
    per_second = float(sys.argv[5]) if len(sys.argv) > 5 else None
    if scenario == "sdk":
        sdk(int(count), input_prefix, endpoint_name, per_second)
    else:
        runner = {"ours": ours, "naive": naive}[scenario]
        asyncio.run(runner(int(count), input_prefix, endpoint_name, per_second))
