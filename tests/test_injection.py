"""Ready-made aiobotocore clients passed in (runtime_client=, s3_client=, sqs_client=):
used as they are, counted while in use, never closed; and botocore's Stubber on them.

Real aiobotocore clients against moto and the emulator on 127.0.0.1; the Stubber test sends
nothing at all.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import aiobotocore.session
import aiohttp
import pytest
from aiobotocore.config import AioConfig
from botocore.stub import Stubber

from sagemaker_async import (
    AsyncInferenceClient,
    CompletionConfig,
    NotificationConfig,
    PollingConfig,
    RetryConfig,
    ValidationError,
)
from sagemaker_async.emulator import SUCCESS_NOTIFICATION_TOPIC, EndpointConfig
from support import set_moto_results

FAST = PollingConfig(initial_delay=0.02, max_delay=0.1, jitter=0.0)
WAIT = 20.0  # guards against hangs only
# What a user would set on clients of their own: botocore's retries off (the library retries),
# a pool of their size.
CONFIG = AioConfig(retries={"total_max_attempts": 1}, max_pool_connections=5)


@pytest.fixture
async def aws(moto_url: str) -> AsyncIterator[dict[str, Any]]:
    """The user's own clients, made and closed by the user."""
    session = aiobotocore.session.get_session()
    options: dict[str, Any] = {"endpoint_url": moto_url, "region_name": "us-east-1"}
    async with (
        session.create_client("sagemaker-runtime", config=CONFIG, **options) as runtime,
        session.create_client("s3", config=CONFIG, **options) as s3,
        session.create_client("sqs", config=CONFIG, **options) as sqs,
        session.create_client("sns", config=CONFIG, **options) as sns,
    ):
        yield {"runtime": runtime, "s3": s3, "sqs": sqs, "sns": sns}


def unique_input() -> str:
    return f"s3://inputs/{uuid.uuid4()}"  # moto's stub answers each new input anew


async def test_injected_clients_are_used_and_left_open(
    aws: dict[str, Any], moto_admin: aiohttp.ClientSession, embedded_s3: Any
) -> None:
    await set_moto_results(moto_admin, ('{"x": 1}', False))
    # No endpoint URL, no region: everything comes from the injected clients.
    client = AsyncInferenceClient(runtime_client=aws["runtime"], s3_client=aws["s3"], polling=FAST)
    async with client:
        handle = await client.invoke_endpoint_async("ep", input_location=unique_input())
        result = await asyncio.wait_for(handle, WAIT)
        stats = client.stats()
    assert result.json() == {"x": 1}
    assert stats.sagemaker_requests == {"InvokeEndpointAsync": 1}
    assert stats.s3_requests.get("GET", 0) >= 1
    # Still open, and no longer counted by the closed client.
    await aws["s3"].list_buckets()
    answer = await aws["runtime"].invoke_endpoint_async(
        EndpointName="ep", InputLocation=unique_input()
    )
    assert answer["OutputLocation"].startswith("s3://")
    assert client.stats() == stats


async def test_requests_on_an_injected_client_are_counted_as_the_server_counts(
    aws: dict[str, Any], embedded_s3: Any
) -> None:
    bucket = f"inj-{uuid.uuid4().hex[:12]}"
    await aws["s3"].create_bucket(Bucket=bucket)
    key = f"out/{uuid.uuid4().hex}.out"
    await aws["s3"].put_object(Bucket=bucket, Key=key, Body=b"done")
    client = AsyncInferenceClient(
        runtime_client=aws["runtime"],
        s3_client=aws["s3"],
        polling=FAST,
        completion=CompletionConfig(strategy="poll"),
    )
    async with client:
        handle = client.resume(
            {
                "version": 1,
                "inference_id": "inj-1",
                "endpoint_name": "ep",
                "output_location": f"s3://{bucket}/{key}",
                "failure_location": None,
                "submitted_at": "2026-01-01T00:00:00+00:00",
                "deadline": "2126-01-01T00:00:00+00:00",
            }
        )
        assert (await asyncio.wait_for(handle, WAIT)).body == b"done"
        stats = client.stats()
    server = embedded_s3.counts(f"{bucket}/")
    assert stats.s3_requests == {"GET": server["GET"]} == {"GET": 1}


async def test_two_clients_can_share_one_injected_client(aws: dict[str, Any]) -> None:
    bucket = f"inj-{uuid.uuid4().hex[:12]}"
    await aws["s3"].create_bucket(Bucket=bucket)
    states = []
    for name in ("a", "b"):
        await aws["s3"].put_object(Bucket=bucket, Key=f"out/{name}.out", Body=name.encode())
        states.append(
            {
                "version": 1,
                "inference_id": name,
                "endpoint_name": "ep",
                "output_location": f"s3://{bucket}/out/{name}.out",
                "failure_location": None,
                "submitted_at": "2026-01-01T00:00:00+00:00",
                "deadline": "2126-01-01T00:00:00+00:00",
            }
        )
    first = AsyncInferenceClient(runtime_client=aws["runtime"], s3_client=aws["s3"], polling=FAST)
    second = AsyncInferenceClient(runtime_client=aws["runtime"], s3_client=aws["s3"], polling=FAST)
    async with first, second:
        results = await asyncio.wait_for(
            asyncio.gather(first.resume(states[0]), second.resume(states[1])), WAIT
        )
    assert [r.body for r in results] == [b"a", b"b"]
    assert (first.stats().succeeded, second.stats().succeeded) == (1, 1)
    await aws["s3"].head_bucket(Bucket=bucket)  # still open after both closed


async def test_an_injected_sqs_client_reads_notifications(
    aws: dict[str, Any], local_async_endpoint_factory: Any, moto_url: str
) -> None:
    suffix = uuid.uuid4().hex[:8]
    topic = (await aws["sns"].create_topic(Name=f"ok-{suffix}"))["TopicArn"]
    emulator = await local_async_endpoint_factory(
        [
            EndpointConfig(
                f"notify-{suffix}",
                model="echo",
                success_topic=topic,
                include_inference_response_in=(SUCCESS_NOTIFICATION_TOPIC,),
            )
        ]
    )
    queue = (await aws["sqs"].create_queue(QueueName=f"q-{suffix}"))["QueueUrl"]
    attributes = await aws["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    await aws["sns"].subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=attributes["Attributes"]["QueueArn"]
    )
    # The user's SQS client must allow a 20 s long poll: its read timeout is longer.
    session = aiobotocore.session.get_session()
    async with session.create_client(
        "sqs",
        endpoint_url=moto_url,
        region_name="us-east-1",
        config=CONFIG.merge(AioConfig(read_timeout=30)),
    ) as sqs:
        client = AsyncInferenceClient(
            region_name="us-east-1",
            endpoint_url=emulator.url,
            s3_endpoint_url=moto_url,
            sqs_client=sqs,
            notifications=NotificationConfig(queue_url=queue),
            polling=FAST,
            retry=RetryConfig(initial_delay=0.01, max_delay=0.05, jitter=0.0),
        )
        async with client:
            handle = await client.invoke_endpoint_async(f"notify-{suffix}", body=b"hello")
            result = await asyncio.wait_for(handle, WAIT)
            stats = client.stats()
        assert result.body == b"hello"
        assert stats.resolved_by == {"notification": 1}
        assert stats.sqs_requests.get("ReceiveMessage", 0) >= 1
        await sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])  # still open


def test_an_injected_client_must_be_an_aiobotocore_client_of_its_service(
    aws: dict[str, Any],
) -> None:
    with pytest.raises(ValidationError, match="of s3") as caught:
        AsyncInferenceClient(runtime_client=aws["s3"])
    assert caught.value.field == "runtime_client"
    with pytest.raises(ValidationError, match="aiobotocore sqs client"):
        AsyncInferenceClient(sqs_client=object())  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="without notifications"):
        AsyncInferenceClient(sqs_client=aws["sqs"])
    with pytest.raises(ValidationError, match="topics"):
        AsyncInferenceClient(
            sns_client=aws["sns"],
            notifications=NotificationConfig(queue_url="http://127.0.0.1/123456789012/q"),
        )


class StubBody:
    """What aiobotocore's GetObject answers carry: an async context manager with read()."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aenter__(self) -> StubBody:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    async def read(self) -> bytes:
        return self.data


async def test_botocore_stubber_works_on_injected_clients() -> None:
    """botocore's Stubber answers aiobotocore's calls too: no server at all, nothing sent."""
    session = aiobotocore.session.get_session()
    options: dict[str, Any] = {"region_name": "us-east-1", "endpoint_url": "http://127.0.0.1:9"}
    async with (
        session.create_client("sagemaker-runtime", **options) as runtime,
        session.create_client("s3", **options) as s3,
    ):
        with Stubber(runtime) as runtime_stub, Stubber(s3) as s3_stub:
            runtime_stub.add_response(
                "invoke_endpoint_async",
                {
                    "InferenceId": "stub-1",
                    "OutputLocation": "s3://results/out/stub-1.out",
                    # every answer of the service names its request; a proxy's page does not
                    "ResponseMetadata": {"RequestId": "stub-invoke"},
                },
                {"EndpointName": "ep", "InputLocation": "s3://inputs/x", "InferenceId": "stub-1"},
            )
            s3_stub.add_response(
                "get_object",
                {
                    "Body": StubBody(b'{"stubbed": true}'),
                    "ContentType": "application/json",
                    # S3 names its answers; the client takes nothing else as S3's
                    "ResponseMetadata": {"HTTPHeaders": {"x-amz-request-id": "stub"}},
                },
                {"Bucket": "results", "Key": "out/stub-1.out"},
            )
            client = AsyncInferenceClient(
                runtime_client=runtime,
                s3_client=s3,
                polling=FAST,
                completion=CompletionConfig(strategy="poll"),
            )
            async with client:
                handle = await client.invoke_endpoint_async(
                    "ep", input_location="s3://inputs/x", inference_id="stub-1"
                )
                result = await asyncio.wait_for(handle, WAIT)
                stats = client.stats()
            runtime_stub.assert_no_pending_responses()
            s3_stub.assert_no_pending_responses()
    assert result.json() == {"stubbed": True} and result.content_type == "application/json"
    assert (stats.submitted, stats.succeeded, stats.resolved_by) == (1, 1, {"polling": 1})
    # a stubbed call never reaches the point where a request is sent
    assert (stats.s3_requests, stats.sagemaker_requests) == ({}, {})
