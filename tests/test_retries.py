"""Faults a real server cannot produce on demand (503, throttling, resets), via aioresponses.

Unmatched requests pass through to the real moto server (aioresponses records them too).
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

from sagemaker_async import AsyncInferenceClient, InferenceTimeoutError, InvocationError
from support import (
    ACCESS_DENIED,
    INTERNAL,
    SLOW_DOWN,
    THROTTLE,
    UNAVAILABLE,
    faults,
    other_tasks,
    set_moto_results,
)


def invoke_url(moto_url: str) -> re.Pattern[str]:
    return re.compile(re.escape(moto_url) + r"/endpoints/[^/]+/async-invocations.*")


def sent_inference_ids(mocked: aioresponses) -> list[str]:
    ids = []
    for (method, url), calls in mocked.requests.items():
        if method == "POST" and "async-invocations" in str(url):
            for call in calls:
                headers: Any = call.kwargs.get("headers", {})
                ids.append(headers["X-Amzn-SageMaker-Inference-Id"])
    return ids


async def test_invoke_is_retried_after_503_and_throttling_with_the_same_id(
    client: AsyncInferenceClient,
    moto_url: str,
    moto_admin: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sagemaker_async")
    await set_moto_results(moto_admin, ("ok after retries", False))
    with faults() as mocked:
        url = invoke_url(moto_url)
        mocked.post(url, **UNAVAILABLE)
        mocked.post(url, **THROTTLE)
        mocked.post(url, **INTERNAL)
        handle = await client.invoke_endpoint_async(
            "my-endpoint", input_location=f"s3://in/{uuid.uuid4()}"
        )
        ids = sent_inference_ids(mocked)
        result = await handle
    # three refused attempts and the real fourth one, all with the same id
    assert ids == [handle.inference_id] * 4
    assert result.text() == "ok after retries"
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 3  # never silent: each retry is logged with the InferenceId
    assert all(handle.inference_id in m for m in retries)
    assert "ServiceUnavailable" in retries[0] and "ThrottlingException" in retries[1]


async def test_a_connection_reset_is_retried(client: AsyncInferenceClient, moto_url: str) -> None:
    with faults() as mocked:
        mocked.post(
            invoke_url(moto_url),
            exception=aiohttp.ServerDisconnectedError("Server disconnected"),
        )
        handle = await client.invoke_endpoint_async("ep", input_location=f"s3://in/{uuid.uuid4()}")
        await handle


async def test_retries_stop_after_max_attempts_with_code_and_request_id(
    client: AsyncInferenceClient, moto_url: str
) -> None:
    with faults() as mocked:
        for _ in range(client.retry.max_attempts):
            mocked.post(invoke_url(moto_url), **THROTTLE)
        with pytest.raises(InvocationError) as info:
            await client.invoke_endpoint_async("ep", input_location="s3://in/x")
        assert len(sent_inference_ids(mocked)) == client.retry.max_attempts
    err = info.value
    assert err.code == "ThrottlingException"
    assert err.request_id == "req-throttle"
    assert err.status_code == 400
    assert "Rate exceeded" in str(err)


async def test_validation_and_access_errors_are_never_retried(
    client: AsyncInferenceClient, moto_url: str
) -> None:
    for code, status in (("ValidationError", 400), ("AccessDeniedException", 403)):
        with faults() as mocked:
            mocked.post(
                invoke_url(moto_url),
                status=status,
                headers={"x-amzn-ErrorType": code, "x-amzn-RequestId": "rid"},
                body='{"message": "Endpoint ep of account 123 not found."}',
            )
            with pytest.raises(InvocationError) as info:
                await client.invoke_endpoint_async("ep", input_location="s3://in/x")
            assert len(sent_inference_ids(mocked)) == 1
        assert info.value.code == code and info.value.request_id == "rid"


async def test_s3_errors_during_the_wait_are_survived(
    client: AsyncInferenceClient, moto_url: str, moto_admin: aiohttp.ClientSession
) -> None:
    await set_moto_results(moto_admin, ("survived", False))
    handle = await client.invoke_endpoint_async("ep", input_location=f"s3://in/{uuid.uuid4()}")
    bucket_url = re.compile(re.escape(moto_url) + r"/sagemaker-output-.*")
    with faults() as mocked:
        mocked.get(bucket_url, **SLOW_DOWN)
        mocked.get(
            bucket_url,
            status=500,
            headers={"x-amz-request-id": "req-500"},
            body="<Error><Code>InternalError</Code></Error>",
        )
        mocked.get(bucket_url, exception=aiohttp.ClientConnectionError("connection reset"))
        mocked.get(bucket_url, **SLOW_DOWN)
        result = await handle
        gets = sum(len(c) for (m, u), c in mocked.requests.items() if m == "GET")
    assert result.text() == "survived"
    assert gets >= 5  # four faults, then the real answer
    assert not await other_tasks()


async def test_403_on_a_missing_key_means_not_yet_and_the_timeout_says_so(
    client: AsyncInferenceClient, moto_url: str
) -> None:
    handle = await client.invoke_endpoint_async("ep", input_location=f"s3://in/{uuid.uuid4()}")
    state = handle.to_dict() | {
        "output_location": "s3://locked-bucket/out/x.out",
        "failure_location": "s3://locked-bucket/fail/x-error.out",
    }
    with faults() as mocked:
        mocked.get(re.compile(re.escape(moto_url) + r"/locked-bucket/.*"), **ACCESS_DENIED)
        state["deadline"] = (datetime.now(timezone.utc) + timedelta(seconds=0.5)).isoformat()
        resumed = client.resume(state)
        with pytest.raises(InferenceTimeoutError) as info:
            await resumed
    assert "403" in str(info.value) and "s3:ListBucket" in str(info.value)


def test_tls_and_proxy_failures_are_not_transient() -> None:
    import ssl

    from botocore.exceptions import (
        EndpointConnectionError,
        HTTPClientError,
        ProxyConnectionError,
        SSLError,
    )

    from sagemaker_async._retry import is_transient

    assert is_transient(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"))
    assert is_transient(HTTPClientError(error=aiohttp.ServerDisconnectedError()))
    assert not is_transient(SSLError(endpoint_url="https://127.0.0.1", error="bad cert"))  # type: ignore[arg-type]
    assert not is_transient(ProxyConnectionError(proxy_url="http://127.0.0.1:9", error="x"))
    assert not is_transient(HTTPClientError(error=ssl.SSLCertVerificationError("bad")))
    assert not is_transient(HTTPClientError(error=TypeError("a bug, not the network")))


async def test_403_on_an_object_that_exists_fails_fast(
    client: AsyncInferenceClient, moto_url: str
) -> None:
    """GET denied but HEAD finds the object (e.g. no kms:Decrypt): no hours-long wait."""
    from aiobotocore.session import get_session

    bucket = f"kms-{uuid.uuid4()}"
    session = get_session()
    async with session.create_client("s3", region_name="us-east-1", endpoint_url=moto_url) as s3:
        await s3.create_bucket(Bucket=bucket)
        await s3.put_object(Bucket=bucket, Key="out/x.out", Body=b"secret result")
    handle = await client.invoke_endpoint_async("ep", input_location=f"s3://in/{uuid.uuid4()}")
    state = handle.to_dict() | {
        "output_location": f"s3://{bucket}/out/x.out",
        "failure_location": f"s3://{bucket}/fail/x-error.out",
    }
    with faults() as mocked:
        mocked.get(re.compile(re.escape(moto_url) + f"/{bucket}/.*"), **ACCESS_DENIED)
        with pytest.raises(InvocationError) as info:
            await client.resume(state)
    assert info.value.code == "AccessDenied" and "kms:Decrypt" in str(info.value)
