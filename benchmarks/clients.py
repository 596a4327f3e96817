"""One benchmark client run, in its own process so its CPU time can be measured alone.

Usage: python clients.py SCENARIO N INPUT_PREFIX ENDPOINT
Prints ``RESULT {json}`` once every inference has resolved, then exits (or lingers, as the
SageMaker SDK's waiter threads do). Endpoints and credentials come from the environment.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any


def report(started: float, ok: int, failed: int, **extra: Any) -> None:
    print(
        "RESULT "
        + json.dumps({"wall": time.monotonic() - started, "ok": ok, "failed": failed, **extra}),
        flush=True,
    )


async def ours(n: int, prefix: str, endpoint: str) -> None:
    from sagemaker_async import AsyncInferenceClient, InferenceFailedError

    started = time.monotonic()
    async with AsyncInferenceClient() as client:
        handles = await asyncio.gather(
            *(
                client.invoke_endpoint_async(endpoint, input_location=f"{prefix}{i}.json")
                for i in range(n)
            )
        )
        results = await asyncio.gather(*handles, return_exceptions=True)
    failed = sum(isinstance(r, InferenceFailedError) for r in results)
    errors = [
        r
        for r in results
        if isinstance(r, BaseException) and not isinstance(r, InferenceFailedError)
    ]
    report(started, n - failed - len(errors), failed, errors=len(errors))


async def naive(n: int, prefix: str, endpoint: str) -> None:
    """The loop people write first: HEAD both locations every second, then GET."""
    from aiobotocore.session import get_session
    from botocore.exceptions import ClientError

    started = time.monotonic()
    session = get_session()
    async with session.create_client("sagemaker-runtime") as rt, session.create_client("s3") as s3:

        async def exists(uri: str) -> bool:
            bucket, key = uri[5:].split("/", 1)
            try:
                await s3.head_object(Bucket=bucket, Key=key)
                return True
            except ClientError:
                return False

        async def one(i: int) -> bool:
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
                        return ok

        outcomes = await asyncio.gather(*(one(i) for i in range(n)))
    report(started, sum(outcomes), n - sum(outcomes))


def sdk(n: int, prefix: str, endpoint: str) -> None:
    """SageMaker Python SDK v2 AsyncPredictor, 32 threads, WaiterConfig(delay=1)."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    import sagemaker
    from sagemaker.async_inference import WaiterConfig
    from sagemaker.exceptions import AsyncInferenceModelError
    from sagemaker.predictor import Predictor
    from sagemaker.predictor_async import AsyncPredictor

    started = time.monotonic()
    boto_session = boto3.Session()
    session = sagemaker.Session(
        boto_session=boto_session,
        sagemaker_runtime_client=boto_session.client("sagemaker-runtime"),
        sagemaker_client=boto_session.client("sagemaker"),
    )
    predictor = AsyncPredictor(Predictor(endpoint, sagemaker_session=session))

    def one(i: int) -> bool:
        response = predictor.predict_async(input_path=f"{prefix}{i}.json")
        try:
            response.get_result(WaiterConfig(max_attempts=60, delay=1))
            return True
        except AsyncInferenceModelError:
            return False

    with ThreadPoolExecutor(32) as pool:
        outcomes = list(pool.map(one, range(n)))
    report(started, sum(outcomes), n - sum(outcomes))


if __name__ == "__main__":
    scenario, count, input_prefix, endpoint_name = sys.argv[1:5]
    if scenario == "sdk":
        sdk(int(count), input_prefix, endpoint_name)
    else:
        asyncio.run(
            {"ours": ours, "naive": naive}[scenario](int(count), input_prefix, endpoint_name)
        )
