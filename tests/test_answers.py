"""Whose answer is it? Only one that names its request (a request id header) is the service's.

A proxy, captive portal or firewall in between answers with a page of its own, whatever its
status: never a result, a failure, an absent object or a final error, but a transient failure
(issue 18, A). And every error names the operation that failed (issue 18, B). The servers are
real (aiohttp on 127.0.0.1, moto); the client's clock is fake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import pytest
from aiohttp import web

from fakeclock import FakeClock, settler
from sagemaker_async import (
    AsyncInferenceClient,
    AsyncInferenceHandle,
    CompletionConfig,
    InferenceTimeoutError,
    InvocationError,
    NotificationConfig,
    PollingConfig,
    RetryConfig,
)
from sagemaker_async._engine._notifications import NotificationSource
from support import client_at, local_server

PAGE = "<html><head><title>Error</title></head><body>Something went wrong</body></html>"
STATUSES = [400, 403, 404, 501, 520, 599]
S3_ID = {"x-amz-request-id": "s3-request"}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def submitted_now(
    client: AsyncInferenceClient, clock: FakeClock, deadline: float
) -> AsyncInferenceHandle:
    """A pending inference submitted now (s3://bucket/out/x.out), ``deadline`` s from now."""
    wall = clock.wall()
    return client.resume(
        {
            "version": 1,
            "inference_id": "proxied",
            "endpoint_name": "ep",
            "output_location": "s3://bucket/out/x.out",
            "failure_location": "s3://bucket/fail/x-error.out",
            "submitted_at": iso(wall),
            "deadline": iso(wall + deadline),
        }
    )


def html_page(status: int) -> web.Response:
    return web.Response(status=status, text=PAGE, content_type="text/html")


def no_such_key() -> web.Response:
    body = "<Error><Code>NoSuchKey</Code><Message>The key does not exist</Message></Error>"
    return web.Response(status=404, text=body, content_type="application/xml", headers=S3_ID)


Handler = Callable[[web.Request], Awaitable[web.Response]]


async def wait_out(
    handler: Handler, *, strategy: str = "poll", deadline: float = 20, **options: Any
) -> tuple[AsyncInferenceHandle, float]:
    """Wait on one handle in front of ``handler``; its outcome and the virtual time it took."""
    clock = FakeClock()
    async with (
        local_server(handler) as url,
        client_at(
            url,
            completion=CompletionConfig(strategy=strategy),  # type: ignore[arg-type]
            polling=PollingConfig(initial_delay=0.5, max_delay=2.0, jitter=0.0),
            clock=clock,
            **options,
        ) as client,
    ):
        handle = submitted_now(client, clock, deadline)
        handle.add_done_callback(lambda _: None)
        took = await clock.run_until(handle.done, settler(client, patience=0.05), limit=120)
    return handle, took


@pytest.mark.parametrize("strategy", ["poll", "list"])
@pytest.mark.parametrize("status", STATUSES)
async def test_an_error_page_without_a_request_id_never_ends_the_wait(
    status: int, strategy: str
) -> None:
    requests: list[str] = []

    async def proxy(request: web.Request) -> web.Response:
        requests.append(f"{request.method} {request.path}")
        return html_page(status)

    handle, took = await wait_out(proxy, strategy=strategy, deadline=20)
    error = handle.exception()
    assert isinstance(error, InferenceTimeoutError), error  # not failed, not a result
    assert 20 <= took <= 25
    assert len(requests) > 4  # read again and again until the deadline
    cause = error.__cause__
    assert isinstance(cause, InvocationError), cause
    assert cause.code == "NotTheService" and cause.status_code == status
    assert "not the service's" in str(error)


@pytest.mark.parametrize("status", STATUSES)
async def test_the_result_is_read_once_the_real_s3_answers_again(status: int) -> None:
    pages = 3

    async def proxy(request: web.Request) -> web.Response:
        nonlocal pages
        if pages:
            pages -= 1
            return html_page(status)
        if request.path == "/bucket/out/x.out" and request.method == "GET":
            return web.Response(text='{"ok": true}', headers=S3_ID)
        return no_such_key()

    handle, took = await wait_out(proxy, deadline=3600)
    assert (await handle).json() == {"ok": True}
    assert took < 60


async def test_a_missing_key_with_a_request_id_stays_absent() -> None:
    # S3's own 403 (no s3:ListBucket) and 404: "not yet", whatever the HEAD says.
    async def s3(request: web.Request) -> web.Response:
        if request.method == "HEAD":
            return web.Response(status=404, headers=S3_ID)
        if request.path.endswith("-error.out"):
            return no_such_key()
        body = "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
        return web.Response(status=403, text=body, headers=S3_ID)

    handle, _ = await wait_out(s3, deadline=10)
    error = handle.exception()
    assert isinstance(error, InferenceTimeoutError), error
    assert "403" in str(error) and error.__cause__ is None


# -- which operation failed (B) ----------------------------------------------------------------


async def test_a_refused_get_names_getobject() -> None:
    async def s3(request: web.Request) -> web.Response:
        body = "<Error><Code>InvalidRequest</Code><Message>no</Message></Error>"
        return web.Response(status=400, text=body, headers=S3_ID)

    handle, _ = await wait_out(s3)
    error = handle.exception()
    assert isinstance(error, InvocationError), error
    assert (error.operation, error.code) == ("GetObject", "InvalidRequest")
    assert str(error).startswith("GetObject failed")


async def test_a_refused_head_names_headobject() -> None:
    async def s3(request: web.Request) -> web.Response:
        if request.method == "HEAD":
            return web.Response(status=400, headers=S3_ID)
        body = "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
        return web.Response(status=403, text=body, headers=S3_ID)

    handle, _ = await wait_out(s3)
    error = handle.exception()
    assert isinstance(error, InvocationError), error
    assert error.operation == "HeadObject"


async def test_a_failing_listing_names_listobjectsv2() -> None:
    seen: list[InvocationError | None] = []
    client_box: list[AsyncInferenceClient] = []

    async def s3(request: web.Request) -> web.Response:
        if client_box:
            seen.append(client_box[0].last_s3_error)
        return web.Response(status=500, text="<Error><Code>InternalError</Code></Error>")

    clock = FakeClock()
    async with (
        local_server(s3) as url,
        client_at(
            url,
            completion=CompletionConfig(strategy="list"),
            clock=clock,
        ) as client,
    ):
        client_box.append(client)
        handle = submitted_now(client, clock, 3600)
        handle.add_done_callback(lambda _: None)
        settle = settler(client, patience=0.05)
        await clock.advance(30, settle)
        error = client.last_s3_error
        assert isinstance(error, InvocationError), error
        assert error.operation == "ListObjectsV2"
        handle.cancel()


async def test_a_failing_receive_names_receivemessage() -> None:
    async def sqs(request: web.Request) -> web.Response:
        return web.json_response(
            {"__type": "com.amazonaws.sqs#InvalidAddress", "message": "no"},
            status=400,
            headers={"x-amzn-RequestId": "sqs-request"},
        )

    async with (
        local_server(sqs) as url,
        client_at(
            url,
            notifications=NotificationConfig(queue_url=f"{url}/123456789012/q"),
        ) as client,
    ):
        (source,) = client._engine._heard  # the notification source
        assert isinstance(source, NotificationSource)
        for _ in range(200):
            if source.trouble is not None:
                break
            await asyncio.sleep(0.01)
        error = source.trouble
    assert isinstance(error, InvocationError), error
    assert error.operation == "ReceiveMessage"


# -- SQS and the runtime (A) -------------------------------------------------------------------


@pytest.mark.parametrize("status", [403, 404])
async def test_a_proxy_page_in_front_of_sqs_is_retried_soon(status: int) -> None:
    receives = 0

    async def proxy(request: web.Request) -> web.Response:
        nonlocal receives
        receives += 1
        return html_page(status)

    clock = FakeClock()
    async with (
        local_server(proxy) as url,
        client_at(
            url,
            notifications=NotificationConfig(queue_url=f"{url}/123456789012/q"),
            retry=RetryConfig(initial_delay=1.0, max_delay=2.0, jitter=0.0),
            clock=clock,
        ) as client,
    ):
        (source,) = client._engine._heard  # the notification source
        assert isinstance(source, NotificationSource)

        async def settle() -> None:  # until the receive loop sleeps on the clock again
            for _ in range(500):
                await asyncio.sleep(0.01)
                if receives == source.stats["receive"] and source.trouble is not None:
                    break
            await asyncio.sleep(0.02)

        await clock.advance(30, settle)
        assert source is not None and source.trouble is not None
        assert source.trouble.code == "NotTheService"
    assert receives > 5  # a transient failure: backing off by seconds, not a minute


async def test_a_proxy_page_in_front_of_the_runtime_is_retried() -> None:
    invokes = 0

    async def proxy(request: web.Request) -> web.Response:
        nonlocal invokes
        invokes += 1
        return html_page(403)

    async with (
        local_server(proxy) as url,
        client_at(
            url,
            retry=RetryConfig(max_attempts=3, initial_delay=0.01, max_delay=0.02, jitter=0.0),
        ) as client,
    ):
        with pytest.raises(InvocationError) as caught:
            await client.invoke_endpoint_async("ep", body=b"x", inference_id="via-proxy")
    assert invokes == 3
    error = caught.value
    assert (error.code, error.status_code, error.operation) == (
        "NotTheService",
        403,
        "InvokeEndpointAsync",
    )
    assert error.inference_id == "via-proxy"
