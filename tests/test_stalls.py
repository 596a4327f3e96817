"""A stalled S3 (accepts, never answers) cannot hold a handle past its deadline (issue 10, 1).

The stalling server is real (aiohttp on 127.0.0.1); the client's clock is fake, so the
attempt timeouts and the deadline are virtual seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import pytest
from aiohttp import web

from fakeclock import FakeClock, settler
from sagemaker_async import (
    AsyncInferenceClient,
    AsyncInferenceHandle,
    CompletionConfig,
    InferenceTimeoutError,
    InvocationError,
    PollingConfig,
    RetryConfig,
    ValidationError,
)
from support import client_at, local_server


@pytest.fixture
async def stalling_server() -> AsyncIterator[str]:
    never = asyncio.Event()

    async def stall(request: web.Request) -> web.Response:
        await never.wait()  # accept, read the request, never answer
        return web.Response()

    async with local_server(stall) as url:
        yield url
    never.set()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def submitted_now(
    client: AsyncInferenceClient, clock: FakeClock, inference_id: str, deadline: float
) -> AsyncInferenceHandle:
    """A pending inference submitted now (s3://bucket/out/x.out), ``deadline`` s from now."""
    wall = clock.wall()
    return client.resume(
        {
            "version": 1,
            "inference_id": inference_id,
            "endpoint_name": "ep",
            "output_location": "s3://bucket/out/x.out",
            "failure_location": "s3://bucket/fail/x-error.out",
            "submitted_at": iso(wall),
            "deadline": iso(wall + deadline),
        }
    )


async def test_a_stalled_s3_ends_the_handle_at_its_deadline(stalling_server: str) -> None:
    clock = FakeClock()
    async with AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=stalling_server,
        s3_endpoint_url=stalling_server,
        retry=RetryConfig(attempt_timeout=2.0),
        clock=clock,
    ) as client:
        settle = settler(client, patience=0.05)
        handle = submitted_now(client, clock, "stalled", 4)
        ended: list[float] = []
        handle.add_done_callback(lambda _: ended.append(clock.now))
        started = clock.now
        await clock.run_until(lambda: bool(ended), settle, step=0.25, limit=30)
        assert ended[0] - started <= 4 + 2.25  # the deadline, plus a bounded last look
        error = handle.exception()
        assert isinstance(error, InferenceTimeoutError)
        assert isinstance(error.__cause__, InvocationError) and error.__cause__.code == "Timeout"
        assert "no complete answer" in str(error)


def test_timeouts_are_validated() -> None:
    with pytest.raises(ValidationError, match=r"RetryConfig\.read_timeout"):
        RetryConfig(read_timeout=0)
    with pytest.raises(ValidationError, match=r"RetryConfig\.attempt_timeout"):
        RetryConfig(attempt_timeout=float("nan"))


@pytest.fixture
async def captive_portal() -> AsyncIterator[str]:
    """A proxy's error page: 200, HTML, for every request (no S3 headers)."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text="<html><body>Please log in to the network</body></html>", content_type="text/html"
        )

    async with local_server(page) as url:
        yield url


@pytest.mark.parametrize("strategy", ["poll", "list"])
async def test_a_200_page_that_is_not_s3s_is_never_taken_for_a_result(
    captive_portal: str, strategy: str
) -> None:
    clock = FakeClock()
    async with AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=captive_portal,
        s3_endpoint_url=captive_portal,
        completion=CompletionConfig(strategy=strategy),  # type: ignore[arg-type]
        clock=clock,
    ) as client:
        handle = submitted_now(client, clock, "portal", 5)
        ended: list[float] = []
        handle.add_done_callback(lambda _: ended.append(clock.now))
        await clock.run_until(lambda: bool(ended), settler(client, patience=0.05), limit=30)
        error = handle.exception()
        assert isinstance(error, InferenceTimeoutError), error  # not a result, not a failure
        assert "not the service's" in str(error)


@pytest.fixture
async def trickling_runtime() -> AsyncIterator[str]:
    """Accepts the invoke and answers one byte at a time, a byte every few (real) seconds."""

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=202, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for byte in b'{"InferenceId": "trickled"}':
            await response.write(bytes([byte]))
            await asyncio.sleep(5)
        return response

    async with local_server(trickle) as url:
        yield url


async def test_a_trickling_invoke_answer_is_abandoned_and_retried(trickling_runtime: str) -> None:
    clock = FakeClock()
    async with AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=trickling_runtime,
        s3_endpoint_url=trickling_runtime,
        retry=RetryConfig(attempt_timeout=3.0, max_attempts=2, initial_delay=0.1, jitter=0.0),
        clock=clock,
    ) as client:
        invoke = asyncio.create_task(
            client.invoke_endpoint_async("ep", body=b"x", inference_id="slow-1")
        )
        took = await clock.run_until(
            invoke.done, settler(client, patience=0.05), step=0.5, limit=60
        )
        error = invoke.exception()
        assert isinstance(error, InvocationError), error
        assert error.possibly_submitted and error.inference_id == "slow-1"
        assert took <= 2 * 3.0 + 1  # two bounded attempts, not two trickles of ~135 s


async def test_a_slow_output_read_keeps_the_failure_read_waiting() -> None:
    # The failure location is read one round after the output; while the output read is
    # still under way (a loaded machine, a slow S3), it waits: the output may answer for both.
    # Only a handle resumed long after submission reads both at once.
    release = asyncio.Event()
    paths: list[str] = []

    async def s3(request: web.Request) -> web.Response:
        paths.append(request.path)
        headers = {"x-amz-request-id": "r"}
        if request.path.endswith("-error.out"):
            body = "<Error><Code>NoSuchKey</Code><Message>no</Message></Error>"
            return web.Response(status=404, text=body, headers=headers)
        await release.wait()  # the output read takes a while
        return web.Response(text='{"ok": true}', headers=headers)

    clock = FakeClock()
    async with (
        local_server(s3) as url,
        client_at(
            url,
            polling=PollingConfig(initial_delay=0.5, max_delay=5.0, jitter=0.0),
            retry=RetryConfig(first_byte_timeout=10.0),  # slow, not stalled
            clock=clock,
        ) as client,
    ):
        settle = settler(client, patience=0.05)
        handle = submitted_now(client, clock, "slow", 3600)
        handle.add_done_callback(lambda _: None)
        await clock.advance(3.0, settle)  # the failure read was due at 1.0 s
        assert paths == ["/bucket/out/x.out"]
        release.set()
        await clock.run_until(handle.done, settle)
        assert (await handle).json() == {"ok": True}
        assert paths == ["/bucket/out/x.out"]
