"""Helpers for the client's tests (imported by name: tests/ is on sys.path)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from aioresponses import aioresponses

if TYPE_CHECKING:
    from sagemaker_async import AsyncInferenceClient

CLIENT_TASKS = "sagemaker-async "  # the engine; with notifications, the receive loop and its kin

# Faults a real server cannot produce on demand, injected with aioresponses. Each carries a
# request id header, as every answer of the service does: without one it is a proxy's.
THROTTLE = {
    "status": 400,
    "headers": {"x-amzn-ErrorType": "ThrottlingException", "x-amzn-RequestId": "req-throttle"},
    "body": '{"message": "Rate exceeded"}',
}
UNAVAILABLE = {
    "status": 503,
    "headers": {"x-amzn-ErrorType": "ServiceUnavailable", "x-amzn-RequestId": "req-503"},
    "body": '{"message": "Service Unavailable"}',
}
INTERNAL = {
    "status": 500,
    "headers": {"x-amzn-ErrorType": "InternalFailure", "x-amzn-RequestId": "req-500"},
    "body": '{"message": "internal"}',
}
ACCESS_DENIED = {
    "status": 403,
    "headers": {"Content-Type": "application/xml", "x-amz-request-id": "req-403"},
    "body": "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
    "repeat": True,
}
SLOW_DOWN = {
    "status": 503,
    "headers": {"Content-Type": "application/xml", "x-amz-request-id": "req-slow-down"},
    "body": "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
    "</Error>",
}


_NEEDS_STREAM_WRITER = "stream_writer" in inspect.signature(aiohttp.ClientResponse).parameters


class _Response(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without the ``stream_writer`` of newer aiohttp."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        if _NEEDS_STREAM_WRITER:
            kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


def faults() -> aioresponses:
    """An aioresponses that lets unmatched requests through to the real servers."""
    mocked = aioresponses(passthrough_unmatched=True)
    add = mocked.add

    def add_compatible(*args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", _Response)
        add(*args, **kwargs)

    mocked.add = add_compatible  # type: ignore[method-assign]
    return mocked


async def set_moto_results(admin: aiohttp.ClientSession, *results: tuple[str, bool]) -> None:
    """Queue what moto's InvokeEndpointAsync stub writes next: (data, is_failure) pairs."""
    resp = await admin.post(
        "/moto-api/static/sagemaker/async-endpoint-results",
        json={
            "results": [{"data": d, "is_failure": f} for d, f in results],
            "region": "us-east-1",
        },
    )
    assert resp.status in (200, 201), await resp.text()


async def other_tasks() -> set[object]:
    """Tasks alive besides the current one and a client's engine, once the loop has turned.

    A clean wait leaves none: no task per handle, and a request made for a handle alone is
    cancelled when its last waiter leaves (it unwinds within a few turns of the loop).
    """
    for _ in range(5):
        await asyncio.sleep(0)
    current = asyncio.current_task()
    return {
        t
        for t in asyncio.all_tasks()
        if t is not current and not t.get_name().startswith(CLIENT_TASKS)
    }


@contextlib.asynccontextmanager
async def local_server(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A real HTTP server on 127.0.0.1 (a free port) answering every request with ``handler``;
    yields its URL. Handlers still running at the end are cut short."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def client_at(url: str, **options: Any) -> AsyncInferenceClient:
    """A client whose every AWS call (runtime, S3, SQS, SNS) goes to the server at ``url``."""
    from sagemaker_async import AsyncInferenceClient

    return AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=url,
        s3_endpoint_url=url,
        sqs_endpoint_url=url,
        sns_endpoint_url=url,
        **options,
    )
