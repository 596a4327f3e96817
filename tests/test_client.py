"""The client and its handles against a real moto server (S3 + sagemaker-runtime stub)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import aiohttp
import pytest
from aiobotocore.session import get_session

from fakeclock import FakeClock, settler
from sagemaker_async import (
    AsyncInferenceClient,
    AsyncInferenceHandle,
    ClientClosedError,
    InferenceFailedError,
    InferenceResult,
    InferenceStatus,
    InferenceTimeoutError,
    PollingConfig,
    ValidationError,
)
from sagemaker_async.emulator import LocalAsyncEndpoint
from support import other_tasks, set_moto_results


def unique_input() -> str:
    # moto's stub caches its answer per input location: a new one gets a new answer.
    return f"s3://inputs/{uuid.uuid4()}"


async def test_success_resolves_to_the_output(
    client: AsyncInferenceClient, moto_admin: aiohttp.ClientSession
) -> None:
    await set_moto_results(moto_admin, ('{"answer": 42}', False))
    handle = await client.invoke_endpoint_async(
        "my-endpoint", input_location=unique_input(), inference_id="id-1"
    )
    assert isinstance(handle, AsyncInferenceHandle)
    assert handle.inference_id == "id-1"
    assert handle.endpoint_name == "my-endpoint"
    assert handle.output_location.startswith("s3://")
    assert handle.failure_location is not None and handle.failure_location.startswith("s3://")
    assert handle.submitted_at < handle.deadline
    assert handle.status is InferenceStatus.PENDING and not handle.done()
    result = await handle
    assert isinstance(result, InferenceResult)
    assert result.json() == {"answer": 42}
    assert result.text() == '{"answer": 42}'
    assert result.output_location == handle.output_location
    assert result.inference_id == "id-1"
    # mypy keeps the narrowing to PENDING from before the await
    assert handle.done() and handle.status is InferenceStatus.SUCCEEDED  # type: ignore[comparison-overlap]
    assert handle.exception() is None
    assert await handle.result() is result  # a done handle answers at once
    assert not await other_tasks()


async def test_failure_raises_with_the_failure_text(
    client: AsyncInferenceClient, moto_admin: aiohttp.ClientSession
) -> None:
    await set_moto_results(moto_admin, ("ModelError: CUDA out of memory", True))
    handle = await client.invoke_endpoint_async("my-endpoint", input_location=unique_input())
    with pytest.raises(InferenceFailedError) as info:
        await handle
    err = info.value
    assert err.message == "ModelError: CUDA out of memory"
    assert err.failure_location == handle.failure_location
    assert err.inference_id == handle.inference_id
    assert err.handle_state == handle.to_dict()
    assert handle.status is InferenceStatus.FAILED
    assert handle.exception() is err
    with pytest.raises(InferenceFailedError):
        await handle.result()


async def test_a_generated_inference_id_is_sent(client: AsyncInferenceClient) -> None:
    handle = await client.invoke_endpoint_async("my-endpoint", input_location=unique_input())
    uuid.UUID(handle.inference_id)  # client-side uuid4, echoed by the service
    await handle


async def test_500_handles_at_once_with_gather(
    client: AsyncInferenceClient, moto_admin: aiohttp.ClientSession
) -> None:
    n = 500
    await set_moto_results(moto_admin, *((json.dumps({"i": i}), i % 10 == 0) for i in range(n)))
    inputs = [unique_input() for _ in range(n)]
    # Submit one by one so moto's queue of answers lines up with i; then wait all at once.
    handles = [await client.invoke_endpoint_async("ep", input_location=loc) for loc in inputs]
    assert len({h.inference_id for h in handles}) == n
    outcomes = await asyncio.gather(*handles, return_exceptions=True)
    failed = [o for o in outcomes if isinstance(o, InferenceFailedError)]
    succeeded = [o for o in outcomes if isinstance(o, InferenceResult)]
    assert len(failed) == n // 10 and len(succeeded) == n - n // 10
    assert sorted(r.json()["i"] for r in succeeded) == [i for i in range(n) if i % 10]
    assert not await other_tasks()


async def _inputs_sent(
    moto_url: str, body_len: int, client: AsyncInferenceClient
) -> dict[str, Any]:
    handle = await client.invoke_endpoint_async(
        "my-endpoint", body=b"x" * body_len, content_type="application/octet-stream"
    )
    await handle
    session = get_session()
    async with session.create_client("s3", region_name="us-east-1", endpoint_url=moto_url) as s3:
        listed = await s3.list_objects_v2(
            Bucket="sagemaker-async-inputs", Prefix=f"in/{handle.inference_id}."
        )
        keys = [item["Key"] for item in listed.get("Contents", [])]
        if not keys:
            return {"uploaded": False}
        assert len(keys) == 1 and keys[0].endswith(".in"), keys
        obj = await s3.get_object(Bucket="sagemaker-async-inputs", Key=keys[0])
        body = await obj["Body"].read()
        return {"uploaded": True, "size": len(body), "type": obj["ContentType"]}


async def test_inline_upload_boundary_is_128000_bytes(
    client: AsyncInferenceClient, moto_url: str
) -> None:
    session = get_session()
    async with session.create_client("s3", region_name="us-east-1", endpoint_url=moto_url) as s3:
        await s3.create_bucket(Bucket="sagemaker-async-inputs")
    assert await _inputs_sent(moto_url, 128_000, client) == {"uploaded": False}
    assert await _inputs_sent(moto_url, 128_001, client) == {
        "uploaded": True,
        "size": 128_001,
        "type": "application/octet-stream",
    }


async def test_str_body_is_sent_as_utf8(local_async_endpoint: LocalAsyncEndpoint) -> None:
    # The emulator's echo model answers the bytes the endpoint received.
    async with AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=local_async_endpoint.url,
        s3_endpoint_url=local_async_endpoint.s3_endpoint_url,
        polling=PollingConfig(initial_delay=0.02, max_delay=0.1, jitter=0.01),
    ) as client:
        handle = await client.invoke_endpoint_async("echo", body="héllo")
        result = await asyncio.wait_for(handle, 30)
    assert result.body == b"h\xc3\xa9llo"


async def _resumed_on_missing(
    client: AsyncInferenceClient, moto_url: str, **polling: float
) -> AsyncInferenceHandle:
    bucket = f"b-{uuid.uuid4()}"
    session = get_session()
    async with session.create_client("s3", region_name="us-east-1", endpoint_url=moto_url) as s3:
        await s3.create_bucket(Bucket=bucket)
    handle = await client.invoke_endpoint_async("my-endpoint", input_location=unique_input())
    state = handle.to_dict() | {
        "output_location": f"s3://{bucket}/out/x.out",
        "failure_location": f"s3://{bucket}/fail/x-error.out",
    }
    return client.resume(
        state, polling=PollingConfig(initial_delay=0.02, max_delay=0.05, jitter=0.0, **polling)
    )


async def test_deadline_passes_and_the_handle_times_out(
    client: AsyncInferenceClient, moto_url: str
) -> None:
    handle = await _resumed_on_missing(client, moto_url)
    state = handle.to_dict()
    state["deadline"] = handle.submitted_at.isoformat()  # already due
    handle = client.resume(state)
    with pytest.raises(InferenceTimeoutError) as info:
        await handle
    assert isinstance(info.value, TimeoutError)
    assert info.value.deadline_exceeded
    assert "neither" in str(info.value)
    assert handle.status is InferenceStatus.TIMED_OUT
    assert not await other_tasks()


async def test_polling_timeout_sets_the_deadline(
    client: AsyncInferenceClient, moto_admin: aiohttp.ClientSession
) -> None:
    handle = await client.invoke_endpoint_async(
        "my-endpoint",
        input_location=unique_input(),
        polling=PollingConfig(timeout=5.0),
    )
    assert (handle.deadline - handle.submitted_at).total_seconds() == pytest.approx(5.0)
    default = await client.invoke_endpoint_async(
        "my-endpoint",
        input_location=unique_input(),
        request_ttl_seconds=60,
        invocation_timeout_seconds=30,
    )
    # TTL + invocation timeout + the default margin of 60 s
    assert (default.deadline - default.submitted_at).total_seconds() == pytest.approx(150.0)
    await asyncio.gather(handle, default)


async def test_result_timeout_leaves_the_handle_pending(
    client: AsyncInferenceClient, moto_url: str
) -> None:
    handle = await _resumed_on_missing(client, moto_url)
    with pytest.raises(InferenceTimeoutError) as info:
        await handle.result(timeout=0.1)
    assert not info.value.deadline_exceeded
    assert handle.status is InferenceStatus.PENDING
    assert not await other_tasks()  # nobody waits: no polling task


async def test_cancel_stops_waiting_and_leaves_no_task(
    client: AsyncInferenceClient, moto_url: str
) -> None:
    handle = await _resumed_on_missing(client, moto_url)
    waiter = asyncio.create_task(handle.result())
    await asyncio.sleep(0.1)
    assert handle.cancel()
    assert not handle.cancel()  # only once
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert handle.cancelled() and handle.status is InferenceStatus.CANCELLED
    with pytest.raises(asyncio.CancelledError):
        handle.exception()
    with pytest.raises(asyncio.CancelledError):
        await handle
    await asyncio.sleep(0)
    assert not await other_tasks()


async def test_cancelled_waiter_stops_polling_and_handle_can_be_awaited_again(
    client: AsyncInferenceClient, moto_url: str
) -> None:
    handle = await _resumed_on_missing(client, moto_url)
    waiter = asyncio.create_task(handle.result())
    await asyncio.sleep(0.1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not await other_tasks()
    assert handle.status is InferenceStatus.PENDING
    # The output arrives later; a new await finds it.
    session = get_session()
    bucket, key = handle.output_location[5:].split("/", 1)
    async with session.create_client("s3", region_name="us-east-1", endpoint_url=moto_url) as s3:
        await s3.put_object(Bucket=bucket, Key=key, Body=b"late", ContentType="text/plain")
    result = await asyncio.wait_for(handle, timeout=30)
    assert result.text() == "late" and result.content_type == "text/plain"


async def test_wait_for_timeout_cancels_cleanly(
    client: AsyncInferenceClient, moto_url: str
) -> None:
    handle = await _resumed_on_missing(client, moto_url)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(handle.result(), timeout=0.1)
    assert not await other_tasks()


async def test_done_callback_and_exception(
    client: AsyncInferenceClient, moto_admin: aiohttp.ClientSession
) -> None:
    await set_moto_results(moto_admin, ("bad input", True))
    handle = await client.invoke_endpoint_async("my-endpoint", input_location=unique_input())
    with pytest.raises(asyncio.InvalidStateError):
        handle.exception()
    done = asyncio.get_running_loop().create_future()
    handle.add_done_callback(done.set_result)  # starts watching with no waiter
    assert await asyncio.wait_for(done, 30) is handle
    assert isinstance(handle.exception(), InferenceFailedError)
    late = asyncio.get_running_loop().create_future()
    handle.add_done_callback(late.set_result)  # already done: called soon
    assert await asyncio.wait_for(late, 30) is handle


async def test_resume_from_to_dict_in_another_client(
    client: AsyncInferenceClient,
    moto_url: str,
    moto_admin: aiohttp.ClientSession,
    fast_polling: PollingConfig,
) -> None:
    await set_moto_results(moto_admin, ("resumed!", False))
    handle = await client.invoke_endpoint_async("my-endpoint", input_location=unique_input())
    state = json.loads(json.dumps(handle.to_dict()))  # survives a trip through JSON
    async with AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=moto_url,
        s3_endpoint_url=moto_url,
        polling=fast_polling,
    ) as other:
        resumed = other.resume(state)
        assert resumed.inference_id == handle.inference_id
        assert resumed.output_location == handle.output_location
        assert resumed.deadline == handle.deadline
        assert (await resumed).text() == "resumed!"


async def test_closing_the_client_ends_every_watcher(
    moto_url: str, fast_polling: PollingConfig
) -> None:
    client = AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=moto_url,
        s3_endpoint_url=moto_url,
        polling=fast_polling,
    )
    handle = await _resumed_on_missing(client, moto_url)
    waiters = [asyncio.create_task(handle.result()) for _ in range(3)]
    await asyncio.sleep(0.1)
    await client.aclose()
    for waiter in waiters:
        with pytest.raises(ClientClosedError):
            await waiter
    assert handle.status is InferenceStatus.PENDING  # resumable elsewhere
    assert not await other_tasks()
    with pytest.raises(ClientClosedError):
        await client.invoke_endpoint_async("ep", input_location="s3://b/k")
    await client.aclose()  # idempotent


async def test_many_handles_share_one_client_pool(client: AsyncInferenceClient) -> None:
    handles = [
        await client.invoke_endpoint_async("ep", input_location=unique_input()) for _ in range(20)
    ]
    await asyncio.gather(*handles)
    # Every handle is watched by the client's one completion engine (one aiobotocore S3 client).
    assert len({id(h._completions) for h in handles}) == 1


async def test_requests_per_inference_counted_by_the_server(
    moto_url: str, moto_admin: aiohttp.ClientSession, embedded_s3: Any
) -> None:
    """A finished inference costs one GET; a failed one two (output 404, then the failure
    location, read one round after the output).

    On the fake clock: on the real one, a loaded machine could let a round pass between the
    two submissions or within a read, and the counts moved (GET 4 was seen).
    """
    await set_moto_results(moto_admin, ("fine", False), ("broken", True))
    clock = FakeClock()
    async with AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=moto_url,
        s3_endpoint_url=moto_url,
        polling=PollingConfig(initial_delay=0.2, max_delay=1.0, jitter=0.0),
        input_prefix="s3://sagemaker-async-inputs/in/",
        clock=clock,
    ) as client:
        ok = await client.invoke_endpoint_async("ep", input_location=unique_input())
        ok.add_done_callback(lambda _: None)
        bad = await client.invoke_endpoint_async("ep", input_location=unique_input())
        bad.add_done_callback(lambda _: None)
        await clock.run_until(lambda: ok.done() and bad.done(), settler(client))
        assert (await ok).body == b"fine"
        with pytest.raises(InferenceFailedError):
            await bad
    for handle, gets in ((ok, 1), (bad, 2)):
        bucket = handle.output_location.removeprefix("s3://").split("/")[0]
        counts = {k: v for k, v in embedded_s3.counts(bucket).items() if v}
        assert counts == {"GET": gets, "total": gets}, (handle.inference_id, counts)


async def test_restarted_watcher_stays_registered_and_closes_cleanly(
    moto_url: str, fast_polling: PollingConfig
) -> None:
    client = AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=moto_url,
        s3_endpoint_url=moto_url,
        polling=fast_polling,
    )
    handle = await _resumed_on_missing(client, moto_url)
    called: list[AsyncInferenceHandle] = []
    handle.add_done_callback(called.append)
    await asyncio.sleep(0.05)  # the first watcher is polling
    handle.remove_done_callback(called.append)  # stops the first watcher...
    handle.add_done_callback(called.append)  # ...and a second one starts before it unwinds
    waiter = asyncio.create_task(handle.result())
    await asyncio.sleep(0.1)
    await client.aclose()
    with pytest.raises(ClientClosedError):
        await waiter
    assert handle.status is InferenceStatus.PENDING and not called
    assert not await other_tasks()
    registered = handle._waiting
    with pytest.raises(ClientClosedError):
        handle.add_done_callback(called.append)  # refused, and not left registered
    assert handle._waiting == registered


async def test_no_region_is_a_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    client = AsyncInferenceClient()
    with pytest.raises(ValidationError) as info:
        await client.invoke_endpoint_async("ep", input_location="s3://b/k")
    assert info.value.field == "region_name" and "AWS_DEFAULT_REGION" in str(info.value)
    await client.aclose()


def test_a_client_used_in_a_second_event_loop_says_so(moto_url: str) -> None:
    """Each asyncio.run() makes a new loop; the client's connections belong to the first."""
    client = AsyncInferenceClient(
        region_name="us-east-1", endpoint_url=moto_url, s3_endpoint_url=moto_url
    )

    async def first() -> None:
        await client.open()

    async def second() -> None:
        try:
            await client.invoke_endpoint_async("ep", input_location="s3://inputs/x")
        finally:
            with contextlib.suppress(ClientClosedError):
                await client.aclose()

    asyncio.run(first())
    with pytest.raises(ClientClosedError, match="another event loop"):
        asyncio.run(second())


async def test_a_handle_resumed_from_an_https_location_reads_its_s3_object(
    client: AsyncInferenceClient, moto_url: str
) -> None:
    bucket = f"https-{uuid.uuid4().hex[:12]}"
    session = get_session()
    async with session.create_client("s3", region_name="us-east-1", endpoint_url=moto_url) as s3:
        await s3.create_bucket(Bucket=bucket)
        await s3.put_object(Bucket=bucket, Key="out/x.out", Body=b"found")
    handle = await client.invoke_endpoint_async("my-endpoint", input_location=unique_input())
    state = handle.to_dict() | {
        "output_location": f"https://{bucket}.s3.us-east-1.amazonaws.com/out/x.out",
        "failure_location": f"https://{bucket}.s3.us-east-1.amazonaws.com/fail/x-error.out",
    }
    resumed = client.resume(state)
    assert resumed.output_location == f"s3://{bucket}/out/x.out"
    assert (await asyncio.wait_for(resumed, 10)).body == b"found"
