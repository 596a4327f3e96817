"""Submitting: each request's uploaded input is its own; duplicate submissions are visible.

Issue 10, defects 2 and 3. The emulator (echo model) runs the requests for real; faults that
a real server cannot produce on demand (a reset after the endpoint accepted the request) are
injected with aioresponses.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from typing import Any

import pytest
from aiobotocore.session import get_session
from aiohttp import web

from sagemaker_async import AsyncInferenceClient, ClientClosedError, InvocationError, RetryConfig
from sagemaker_async.emulator import EndpointConfig
from support import THROTTLE, client_at, faults, local_server

BIG = 128_001


async def echo_client(factory: Any, **kwargs: Any) -> tuple[Any, AsyncInferenceClient]:
    """A client of an echo endpoint, uploading large bodies to a bucket of its own (``.inputs``)."""
    emulator = await factory([EndpointConfig("echo", model="echo")])
    emulator.inputs = bucket = f"big-inputs-{uuid.uuid4().hex[:12]}"
    session = get_session()
    session.set_credentials(*emulator.credentials)
    async with session.create_client(
        "s3", endpoint_url=emulator.s3_endpoint_url, region_name=emulator.region
    ) as s3:
        await s3.create_bucket(Bucket=bucket)
    client = AsyncInferenceClient(
        session=session,
        region_name=emulator.region,
        endpoint_url=emulator.url,
        s3_endpoint_url=emulator.s3_endpoint_url,
        input_prefix=f"s3://{bucket}/in/",
        **kwargs,
    )
    return emulator, client


async def uploaded_inputs(emulator: Any) -> list[bytes]:
    """The bodies the client uploaded, read from the emulator's S3."""
    session = get_session()
    session.set_credentials(*emulator.credentials)
    async with session.create_client(
        "s3", endpoint_url=emulator.s3_endpoint_url, region_name=emulator.region
    ) as s3:
        listed = await s3.list_objects_v2(Bucket=emulator.inputs, Prefix="in/")
        bodies = []
        for item in listed.get("Contents", []):
            obj = await s3.get_object(Bucket=emulator.inputs, Key=item["Key"])
            bodies.append(await obj["Body"].read())
    return bodies


async def test_two_large_bodies_with_one_inference_id_keep_their_own_bytes(
    local_async_endpoint_factory: Any,
) -> None:
    emulator, client = await echo_client(local_async_endpoint_factory)
    async with client:
        first = await client.invoke_endpoint_async("echo", body=b"A" * BIG, inference_id="same")
        second = await client.invoke_endpoint_async("echo", body=b"B" * BIG, inference_id="same")
        # Both inputs exist until SageMaker reads them (on AWS, when each leaves the queue):
        # the second upload must not overwrite the first.
        assert set(await uploaded_inputs(emulator)) == {b"A" * BIG, b"B" * BIG}
        assert (await first).body == b"A" * BIG
        assert (await second).body == b"B" * BIG


async def test_a_single_submission_counts_one_attempt(local_async_endpoint_factory: Any) -> None:
    _, client = await echo_client(local_async_endpoint_factory)
    async with client:
        handle = await client.invoke_endpoint_async("echo", body=b"x")
        assert handle.submit_attempts == 1
        assert client.resume(handle.to_dict()).submit_attempts == 1


async def test_a_reset_after_acceptance_is_a_visible_duplicate(
    local_async_endpoint_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    emulator, client = await echo_client(
        local_async_endpoint_factory, retry=RetryConfig(initial_delay=0.01, jitter=0.0)
    )
    invoke = re.compile(re.escape(emulator.url) + r"/endpoints/echo/async-invocations.*")
    async with client:
        with faults() as mocked, caplog.at_level(logging.WARNING, "sagemaker_async"):
            # the endpoint got the request, then the connection dropped before the answer
            mocked.post(invoke, exception=ConnectionResetError("reset after the request"))
            handle = await client.invoke_endpoint_async("echo", body=b"x", inference_id="dup-1")
        assert handle.submit_attempts == 2
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("dup-1" in w and "2" in w for w in warnings), warnings
        assert (await handle).body == b"x"


async def test_a_failed_invoke_says_it_may_have_been_submitted(
    local_async_endpoint_factory: Any,
) -> None:
    emulator, client = await echo_client(
        local_async_endpoint_factory,
        retry=RetryConfig(max_attempts=3, initial_delay=0.01, jitter=0.0),
    )
    invoke = re.compile(re.escape(emulator.url) + r"/endpoints/echo/async-invocations.*")
    async with client:
        with faults() as mocked:
            for _ in range(3):
                mocked.post(invoke, exception=ConnectionResetError("reset"))
            with pytest.raises(InvocationError) as info:
                await client.invoke_endpoint_async("echo", body=b"x", inference_id="maybe-1")
        assert info.value.possibly_submitted is True
        assert info.value.inference_id == "maybe-1"
        assert "maybe-1" in str(info.value)


async def test_a_refused_invoke_was_not_submitted_and_its_upload_is_removed(
    local_async_endpoint_factory: Any,
) -> None:
    emulator, client = await echo_client(local_async_endpoint_factory)
    async with client:
        with pytest.raises(InvocationError) as info:
            await client.invoke_endpoint_async("no-such-endpoint", body=b"x" * BIG)
        assert info.value.possibly_submitted is False
    assert await uploaded_inputs(emulator) == []


async def test_closing_the_client_during_an_invoke_says_it_may_have_been_submitted() -> None:
    """The request reached the endpoint (it never answers); aclose() must not surface
    botocore's internals, but say that the client closed and the inference may run."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def accept_and_stall(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response()

    async with local_server(accept_and_stall) as url:
        client = AsyncInferenceClient(
            region_name="us-east-1", endpoint_url=url, s3_endpoint_url=url
        )
        await client.open()
        invoke = asyncio.create_task(
            client.invoke_endpoint_async("ep", body=b"x", inference_id="closing-1")
        )
        await asyncio.wait_for(arrived.wait(), 10)
        await client.aclose()
        with pytest.raises(ClientClosedError) as caught:
            await asyncio.wait_for(invoke, 10)
        release.set()
    assert caught.value.possibly_submitted and caught.value.inference_id == "closing-1"
    assert "may have" in str(caught.value) and "NoneType" not in str(caught.value)


async def test_a_throttled_attempt_is_not_counted_as_a_submission(
    local_async_endpoint_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A refusal (throttling) never reached the queue: no duplicate, no duplicate warning."""
    emulator, client = await echo_client(
        local_async_endpoint_factory, retry=RetryConfig(initial_delay=0.01, jitter=0.0)
    )
    invoke = re.compile(re.escape(emulator.url) + r"/endpoints/echo/async-invocations.*")
    async with client:
        with faults() as mocked, caplog.at_level(logging.WARNING, "sagemaker_async"):
            mocked.post(invoke, **THROTTLE)
            handle = await client.invoke_endpoint_async("echo", body=b"x", inference_id="thr-1")
        assert handle.submit_attempts == 1
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert emulator.endpoint("echo").stats().received == 1


# -- an answer without OutputLocation (issue 18, C) --------------------------------------------

HTML = "<html><body>Welcome to the network</body></html>"
ANSWERS = {
    # (status, body, content type, headers)
    "html page": (200, HTML, "text/html", {}),
    "json without OutputLocation": (202, '{"InferenceId": "x"}', "application/json", {}),
    "json with a request id": (
        202,
        '{"InferenceId": "x"}',
        "application/json",
        {"x-amzn-RequestId": "req-odd"},
    ),
    "a location that is not s3": (
        202,
        '{"InferenceId": "x"}',
        "application/json",
        {
            "x-amzn-RequestId": "req-odd",
            "X-Amzn-SageMaker-OutputLocation": "somewhere/else",
        },
    ),
}


def odd_answer(name: str) -> Any:
    status, body, content_type, headers = ANSWERS[name]

    async def answer(request: web.Request) -> web.Response:
        return web.Response(status=status, text=body, content_type=content_type, headers=headers)

    return answer


@pytest.mark.parametrize("answer", list(ANSWERS))
async def test_an_answer_without_an_output_location_may_have_been_submitted(answer: str) -> None:
    async with (
        local_server(odd_answer(answer)) as url,
        client_at(
            url,
            retry=RetryConfig(max_attempts=2, initial_delay=0.01, jitter=0.0),
        ) as client,
    ):
        with pytest.raises(InvocationError) as caught:
            await client.invoke_endpoint_async("ep", body=b"x", inference_id="odd-1")
    error = caught.value
    assert error.inference_id == "odd-1" and error.possibly_submitted
    assert error.operation == "InvokeEndpointAsync"
    if "request id" in answer or "not s3" in answer:
        assert error.code == "InvalidAnswer" and error.request_id == "req-odd"
        assert "OutputLocation" in str(error)
    else:
        assert error.code == "NotTheService"


async def test_a_batch_warns_when_it_resubmits_an_item_whose_answer_had_no_location(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from sagemaker_async._batch import BatchItem, run_batch

    items = [BatchItem(f"item-{i}", f"body {i}".encode()) for i in range(5)]
    summaries = []
    async with local_server(odd_answer("html page")) as url:
        for _ in range(2):
            async with client_at(
                url,
                retry=RetryConfig(max_attempts=1),
            ) as client:
                with caplog.at_level(logging.WARNING, "sagemaker_async"):
                    summaries.append(await run_batch(client, "ep", items, tmp_path))
    first, second = summaries
    assert first.not_submitted == second.not_submitted == 5
    assert first.resubmitted == 0 and second.resubmitted == 5  # each with a warning
    assert sum("resubmitting" in r.getMessage() for r in caplog.records) == 5
