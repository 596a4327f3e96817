"""Completion from SageMaker's notifications: the emulator publishes to moto's SNS, which
delivers to moto's SQS; requests are counted by the server."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sys
import time
import uuid
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import aiobotocore.session
import aiohttp
import pytest
from aiohttp import web

from sagemaker_async import (
    AsyncInferenceClient,
    InferenceFailedError,
    InferenceTimeoutError,
    InvocationError,
    NotificationConfig,
    PollingConfig,
    RetryConfig,
    ValidationError,
)
from sagemaker_async._engine._notifications import parse_notification, release_delay
from sagemaker_async.emulator import (
    ERROR_NOTIFICATION_TOPIC,
    SUCCESS_NOTIFICATION_TOPIC,
    EndpointConfig,
    LocalAsyncEndpoint,
)
from support import other_tasks

BOTH = (SUCCESS_NOTIFICATION_TOPIC, ERROR_NOTIFICATION_TOPIC)
WAIT = 20.0  # only guards against hangs: the safety net would take 60 s


@dataclass
class Setup:
    emu: LocalAsyncEndpoint
    success: str
    error: str
    queue: str
    moto: str
    suffix: str

    def client(self, queue: str | None = None, **options: Any) -> AsyncInferenceClient:
        notifications = options.pop("notifications", None) or NotificationConfig(
            queue_url=queue or self.queue
        )
        return AsyncInferenceClient(
            region_name="us-east-1",
            endpoint_url=self.emu.url,
            s3_endpoint_url=self.moto,
            sqs_endpoint_url=self.moto,
            sns_endpoint_url=self.moto,
            notifications=notifications,
            polling=PollingConfig(initial_delay=0.05, max_delay=0.2),
            retry=RetryConfig(initial_delay=0.01, max_delay=0.05, jitter=0.0),
            **options,
        )

    @staticmethod
    def output_prefix(endpoint: str) -> str:
        return f"s3://sagemaker-async-emulator/{endpoint}/"


def reads(embedded_s3: Any, endpoint: str) -> int:
    """S3 reads (GET, HEAD, LIST) of the endpoint's outputs and failures, by the server."""
    counts = embedded_s3.counts(Setup.output_prefix(endpoint))
    return int(counts["GET"] + counts["HEAD"] + counts["LIST"])


async def subscribed_queue(aws: dict[str, Any], topics: list[str], *, raw: bool = False) -> str:
    url = (await aws["sqs"].create_queue(QueueName=f"q-{uuid.uuid4().hex[:12]}"))["QueueUrl"]
    arn = (await aws["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"]))[
        "Attributes"
    ]["QueueArn"]
    for topic in topics:
        await aws["sns"].subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=arn,
            Attributes={"RawMessageDelivery": "true" if raw else "false"},
        )
    return str(url)


async def depth(aws: dict[str, Any], url: str) -> int:
    """Messages in the queue, visible or not."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    answer = await aws["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=names)
    return sum(int(answer["Attributes"][n]) for n in names)


async def is_empty(aws: dict[str, Any], url: str) -> bool:
    return await depth(aws, url) == 0


async def eventually(check: Any, timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await check():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.fixture(params=[False, True], ids=["sns-wrapped", "raw"])
async def setup(
    request: pytest.FixtureRequest, local_async_endpoint_factory: Any, aws: dict[str, Any]
) -> Setup:
    """Endpoints that notify (with and without the response), fail, or stay silent."""
    suffix = uuid.uuid4().hex[:8]
    success = (await aws["sns"].create_topic(Name=f"ok-{suffix}"))["TopicArn"]
    error = (await aws["sns"].create_topic(Name=f"err-{suffix}"))["TopicArn"]
    topics: dict[str, Any] = {"success_topic": success, "error_topic": error}
    included = {**topics, "include_inference_response_in": BOTH}
    emu = await local_async_endpoint_factory(
        [
            EndpointConfig(f"body-{suffix}", model="echo", **included),
            EndpointConfig(f"nobody-{suffix}", model="echo", **topics),
            EndpointConfig(f"fail-{suffix}", model="fail", **included),
            EndpointConfig(f"silent-{suffix}", model="echo"),
        ]
    )
    queue = await subscribed_queue(aws, [success, error], raw=request.param)
    return Setup(emu, success, error, queue, emu.s3_endpoint_url, suffix)


async def submit_elsewhere(setup: Setup, aws: dict[str, Any], endpoint: str, body: bytes) -> Any:
    """Another process submits an inference (a plain aiobotocore client)."""
    session = aiobotocore.session.get_session()
    async with session.create_client(
        "sagemaker-runtime", endpoint_url=setup.emu.url, region_name="us-east-1"
    ) as runtime:
        return await runtime.invoke_endpoint_async(
            EndpointName=endpoint, InputLocation=await upload(setup, aws, body)
        )


async def test_results_come_from_the_messages_with_no_s3_request(
    setup: Setup, aws: dict[str, Any], embedded_s3: Any
) -> None:
    endpoint = f"body-{setup.suffix}"
    async with setup.client() as client:
        handles = [
            await client.invoke_endpoint_async(endpoint, body=f"in {i}", content_type="text/plain")
            for i in range(5)
        ]
        results = await asyncio.wait_for(asyncio.gather(*handles), WAIT)
    assert [r.body for r in results] == [f"in {i}".encode() for i in range(5)]
    assert {r.content_type for r in results} == {"text/plain"}
    assert reads(embedded_s3, endpoint) == 0
    assert await depth(aws, setup.queue) == 0  # every message was deleted


async def test_without_the_response_inside_one_get_reads_it(setup: Setup, embedded_s3: Any) -> None:
    endpoint = f"nobody-{setup.suffix}"
    async with setup.client() as client:
        handles = [await client.invoke_endpoint_async(endpoint, body=f"x{i}") for i in range(3)]
        results = await asyncio.wait_for(asyncio.gather(*handles), WAIT)
    assert [r.body for r in results] == [b"x0", b"x1", b"x2"]
    counts = embedded_s3.counts(setup.output_prefix(endpoint))
    assert (counts["GET"], reads(embedded_s3, endpoint)) == (3, 3)


async def test_an_error_notification_raises_its_failure_reason(
    setup: Setup, aws: dict[str, Any], embedded_s3: Any
) -> None:
    endpoint = f"fail-{setup.suffix}"
    async with setup.client() as client:
        handle = await client.invoke_endpoint_async(endpoint, body=b"x")
        with pytest.raises(InferenceFailedError) as caught:
            await asyncio.wait_for(handle, WAIT)
    assert caught.value.message.startswith("ClientError: Received server error (500) from model")
    assert caught.value.inference_id == handle.inference_id
    assert caught.value.failure_location == handle.failure_location
    assert reads(embedded_s3, endpoint) == 0
    assert await depth(aws, setup.queue) == 0


async def test_a_message_before_anyone_waits_is_held_for_the_handle(
    setup: Setup, aws: dict[str, Any], embedded_s3: Any
) -> None:
    endpoint = f"body-{setup.suffix}"
    released = embedded_s3.actions("sqs").get("ChangeMessageVisibilityBatch", 0)
    async with setup.client() as client:
        handle = await client.invoke_endpoint_async(endpoint, body=b"later")
        await setup.emu.join()

        async def held() -> bool:
            names = ["ApproximateNumberOfMessagesNotVisible"]
            answer = await aws["sqs"].get_queue_attributes(
                QueueUrl=setup.queue, AttributeNames=names
            )
            attributes: dict[str, str] = answer["Attributes"]
            return attributes[names[0]] == "1"

        await eventually(held)  # received, and kept invisible for this client
        assert (await asyncio.wait_for(handle, WAIT)).body == b"later"
    assert reads(embedded_s3, endpoint) == 0
    # Never given back to the queue as someone else's.
    assert embedded_s3.actions("sqs").get("ChangeMessageVisibilityBatch", 0) == released
    assert await depth(aws, setup.queue) == 0


@pytest.fixture
async def slow_answers(setup: Setup) -> AsyncIterator[str]:
    """A proxy to the emulator that answers an invoke only once its notification is out."""

    async def forward(request: web.Request) -> web.Response:
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                setup.emu.url + request.path_qs,
                headers=request.headers,
                data=await request.read(),
            ) as answer,
        ):
            body = await answer.read()
            headers = {k: v for k, v in answer.headers.items() if k.lower().startswith("x-amzn")}
        await setup.emu.join()  # the output is written and the notification published
        await asyncio.sleep(0.3)  # ... and received by the client's loop
        return web.Response(
            status=answer.status, body=body, headers=headers, content_type=answer.content_type
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_a_message_before_the_invoke_answers_is_not_given_away(
    setup: Setup, slow_answers: str, aws: dict[str, Any], embedded_s3: Any
) -> None:
    endpoint = f"body-{setup.suffix}"
    released = embedded_s3.actions("sqs").get("ChangeMessageVisibilityBatch", 0)
    client = setup.client()
    client.endpoint_url = slow_answers
    async with client:
        handle = await client.invoke_endpoint_async(endpoint, body=b"early")
        assert (await asyncio.wait_for(handle, WAIT)).body == b"early"
    assert reads(embedded_s3, endpoint) == 0
    assert embedded_s3.actions("sqs").get("ChangeMessageVisibilityBatch", 0) == released
    assert await depth(aws, setup.queue) == 0


async def test_two_clients_on_one_queue_lose_and_steal_nothing(
    setup: Setup, aws: dict[str, Any], embedded_s3: Any
) -> None:
    endpoint = f"body-{setup.suffix}"
    # Each receipt goes to either client: a result reaches its owner within a minute unless
    # it misses it 11 times in a row (1 in 2,048 of 30 results, so 1 run in 70 of this test).
    # With the safety net ten minutes off and a guard of 160 s, 18 misses in a row would fail.
    config = NotificationConfig(queue_url=setup.queue, safety_net=600)
    async with (
        setup.client(notifications=config) as first,
        setup.client(notifications=config) as second,
    ):

        async def run(client: AsyncInferenceClient, name: str) -> list[bytes]:
            handles = [
                await client.invoke_endpoint_async(endpoint, body=f"{name} {i}") for i in range(15)
            ]
            return [r.body for r in await asyncio.gather(*handles)]

        # gather's result is a list at run time (typeshed types it as a tuple). (Each client
        # hides the other's messages a second longer at each receipt: on a shared queue a
        # message may take several seconds to reach its owner. Only a hang fails here.)
        got = cast(
            "list[list[bytes]]",
            await asyncio.wait_for(
                asyncio.gather(run(first, "first"), run(second, "second")), 8 * WAIT
            ),
        )
    assert got == [[f"{n} {i}".encode() for i in range(15)] for n in ("first", "second")]
    assert reads(embedded_s3, endpoint) == 0
    assert await depth(aws, setup.queue) == 0


async def test_a_foreign_message_is_never_deleted_and_reaches_its_owner(
    setup: Setup, aws: dict[str, Any], embedded_s3: Any
) -> None:
    endpoint = f"body-{setup.suffix}"
    # (hold: a receive cut short by the bystander's close hides what it got for that long)
    config = NotificationConfig(queue_url=setup.queue, hold=1)
    async with setup.client(notifications=config):
        # Another process submits; the bystander reads its notification and leaves it.
        answer = await submit_elsewhere(setup, aws, endpoint, b"theirs")
        await setup.emu.join()
        before = embedded_s3.actions("sqs").get("ReceiveMessage", 0)
        await eventually(
            lambda: async_true(embedded_s3.actions("sqs").get("ReceiveMessage", 0) > before + 2)
        )
    assert await depth(aws, setup.queue) == 1
    state = {
        "version": 1,
        "inference_id": answer["InferenceId"],
        "endpoint_name": endpoint,
        "output_location": answer["OutputLocation"],
        "failure_location": answer["FailureLocation"],
        # (submitted long ago, a resumed handle would look at S3 at once)
        "submitted_at": datetime.now(timezone.utc).isoformat(),
        "deadline": "2099-01-01T00:00:00+00:00",
    }
    async with setup.client() as owner:
        result = await asyncio.wait_for(owner.resume(state), WAIT)
    assert result.body == b"theirs"
    assert reads(embedded_s3, endpoint) == 0
    assert await depth(aws, setup.queue) == 0


async def async_true(value: bool) -> bool:
    return value


async def async_equal(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def upload(setup: Setup, aws: dict[str, Any], body: bytes) -> str:
    session = aiobotocore.session.get_session()
    async with session.create_client("s3", endpoint_url=setup.moto, region_name="us-east-1") as s3:
        key = f"in/{uuid.uuid4()}"
        await s3.put_object(Bucket="sagemaker-async-emulator", Key=key, Body=body)
    return f"s3://sagemaker-async-emulator/{key}"


async def test_the_safety_net_finds_a_result_that_was_never_notified(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    config = NotificationConfig(queue_url=setup.queue, safety_net=0.2)
    caplog.set_level(logging.WARNING, logger="sagemaker_async")
    async with setup.client(notifications=config) as client:
        handle = await client.invoke_endpoint_async(f"silent-{setup.suffix}", body=b"quiet")
        assert (await asyncio.wait_for(handle, WAIT)).body == b"quiet"
    assert "found in S3 by the safety net" in caplog.text


async def test_a_cancelled_wait_leaves_no_task_behind(setup: Setup) -> None:
    config = NotificationConfig(queue_url=setup.queue, safety_net=0.3)
    async with setup.client(notifications=config) as client:
        handle = await client.invoke_endpoint_async(f"silent-{setup.suffix}", body=b"kept")
        await setup.emu.join()
        emulator = await other_tasks()  # its workers
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(handle.result(), 0.001)
        assert not await other_tasks() - emulator
        assert (await asyncio.wait_for(handle, WAIT)).body == b"kept"
    assert not await other_tasks() - emulator


# -- one filtered queue per client ------------------------------------------------------------


async def test_a_client_queue_is_filtered_to_its_own_inferences_and_removed_at_close(
    setup: Setup, aws: dict[str, Any], embedded_s3: Any
) -> None:
    endpoint = f"body-{setup.suffix}"
    config = NotificationConfig(
        topics=(setup.success, setup.error), queue_name_prefix=f"sma-{setup.suffix}-"
    )
    released = embedded_s3.actions("sqs").get("ChangeMessageVisibilityBatch", 0)
    async with setup.client(notifications=config) as client:
        url = client.notification_queue_url
        assert url is not None and f"sma-{setup.suffix}-" in url
        subscriptions = (await aws["sns"].list_subscriptions_by_topic(TopicArn=setup.success))[
            "Subscriptions"
        ]
        mine = [s for s in subscriptions if s["Endpoint"].endswith(url.rsplit("/", 1)[1])]
        assert len(mine) == 1
        attributes = (
            await aws["sns"].get_subscription_attributes(SubscriptionArn=mine[0]["SubscriptionArn"])
        )["Attributes"]
        prefix = json.loads(attributes["FilterPolicy"])["inferenceId"][0]["prefix"]
        assert attributes["FilterPolicyScope"] == "MessageBody"
        # Someone else's inference on the same endpoint never reaches this queue.
        await submit_elsewhere(setup, aws, endpoint, b"other")
        handle = await client.invoke_endpoint_async(endpoint, body=b"mine")
        assert handle.inference_id.startswith(prefix)
        assert (await asyncio.wait_for(handle, WAIT)).body == b"mine"
        await setup.emu.join()
        await eventually(lambda: is_empty(aws, url))
        assert reads(embedded_s3, endpoint) == 0
    # The other inference's notification never reached this client (it would have given it
    # back to the queue).
    assert embedded_s3.actions("sqs").get("ChangeMessageVisibilityBatch", 0) == released
    listed = await aws["sqs"].list_queues(QueueNamePrefix=f"sma-{setup.suffix}-")
    assert listed.get("QueueUrls", []) == []
    for topic in (setup.success, setup.error):
        left = (await aws["sns"].list_subscriptions_by_topic(TopicArn=topic))["Subscriptions"]
        assert not [s for s in left if f"sma-{setup.suffix}-" in s["Endpoint"]]


async def test_queues_of_dead_clients_are_removed_after_their_idle_time(
    setup: Setup, aws: dict[str, Any]
) -> None:
    prefix = f"sma-{setup.suffix}-"
    dead = await aws["sqs"].create_queue(
        QueueName=f"{prefix}dead", tags={"sagemaker-async:heartbeat": "0"}
    )
    arn = (
        await aws["sqs"].get_queue_attributes(
            QueueUrl=dead["QueueUrl"], AttributeNames=["QueueArn"]
        )
    )["Attributes"]["QueueArn"]
    subscription = await aws["sns"].subscribe(
        TopicArn=setup.success, Protocol="sqs", Endpoint=arn, ReturnSubscriptionArn=True
    )
    await aws["sqs"].tag_queue(
        QueueUrl=dead["QueueUrl"],
        Tags={"sagemaker-async:subscription:0": subscription["SubscriptionArn"]},
    )
    alive = await aws["sqs"].create_queue(
        QueueName=f"{prefix}alive", tags={"sagemaker-async:heartbeat": str(2**40)}
    )
    config = NotificationConfig(topics=(setup.success,), queue_name_prefix=prefix)
    async with setup.client(notifications=config):

        async def swept() -> bool:
            listed = await aws["sqs"].list_queues(QueueNamePrefix=prefix)
            return dead["QueueUrl"] not in listed.get("QueueUrls", [])

        await eventually(swept)
        listed = await aws["sqs"].list_queues(QueueNamePrefix=prefix)
        assert alive["QueueUrl"] in listed["QueueUrls"]
    left = (await aws["sns"].list_subscriptions_by_topic(TopicArn=setup.success))["Subscriptions"]
    assert subscription["SubscriptionArn"] not in {s["SubscriptionArn"] for s in left}


# -- messages and settings --------------------------------------------------------------------

NOTICE: dict[str, Any] = {
    "awsRegion": "us-east-1",
    "invocationStatus": "Completed",
    "requestParameters": {"endpointName": "ep"},
    "responseParameters": {"contentType": "text/csv", "outputLocation": "s3://b/out/1.out"},
    "inferenceId": "id-1",
    "eventSource": "aws:sagemaker",
    "responseBody": {"content": base64.b64encode(b"1,2").decode(), "encoding": "BASE64"},
}


TOPIC = "arn:aws:sns:us-east-1:123456789012:t"


def message(body: Any) -> dict[str, Any]:
    text = body if isinstance(body, str) else json.dumps(body)
    return {"MessageId": "m", "ReceiptHandle": "r", "Body": text}


def test_parse_reads_raw_and_sns_wrapped_messages() -> None:
    raw = parse_notification(message(NOTICE))
    wrapped = parse_notification(
        message({"Type": "Notification", "Message": json.dumps(NOTICE), "TopicArn": "arn"})
    )
    assert raw is not None and wrapped is not None
    assert {n: getattr(raw, n) for n in raw.__slots__} == {
        n: getattr(wrapped, n) for n in wrapped.__slots__
    }
    assert raw.succeeded and raw.body == b"1,2"
    assert (raw.output_location, raw.content_type) == ("s3://b/out/1.out", "text/csv")


def test_parse_leaves_a_body_it_cannot_decode_to_s3() -> None:
    bad = dict(NOTICE, responseBody={"content": "%%%", "encoding": "BASE64"})
    parsed = parse_notification(message(bad))
    assert parsed is not None and parsed.body is None


@pytest.mark.parametrize(
    "body",
    ["not json", {"Type": "Notification", "Message": "{"}, {"eventSource": "aws:s3"}, [1, 2]],
)
def test_parse_rejects_what_is_not_a_sagemaker_notification(body: Any) -> None:
    assert parse_notification(message(body)) is None


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({}, "NotificationConfig"),
        ({"queue_url": "https://q", "topics": [TOPIC]}, "NotificationConfig"),
        ({"queue_url": "sqs://q"}, "NotificationConfig.queue_url"),
        ({"topics": ["arn:aws:sqs:us-east-1:123456789012:t"]}, "NotificationConfig.topics"),
        ({"topics": TOPIC}, "NotificationConfig.topics"),
        ({"queue_url": "https://q", "hold": 50000}, "NotificationConfig.hold"),
        ({"queue_url": "https://q", "safety_net": 0}, "NotificationConfig.safety_net"),
        ({"queue_url": "https://q", "idle_timeout": 5}, "NotificationConfig.idle_timeout"),
        ({"topics": [TOPIC], "queue_name_prefix": "a b"}, "NotificationConfig.queue_name_prefix"),
    ],
)  # fmt: skip
def test_settings_are_checked(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        NotificationConfig(**options)
    assert caught.value.field == field


def test_the_safety_net_slows_polling_down() -> None:
    config = NotificationConfig(queue_url="https://q", safety_net=30)
    slow = config.safety_polling(PollingConfig(initial_delay=0.5, max_delay=20, timeout=99))
    assert (slow.initial_delay, slow.max_delay, slow.timeout) == (30, 30, 99)


async def test_an_error_for_a_shared_inference_id_fails_only_the_inference_that_failed(
    setup: Setup,
) -> None:
    """Error notifications name only the InferenceId: two inferences of one id must not be
    mixed up (the one that succeeded must never raise the other's failure)."""
    config = NotificationConfig(queue_url=setup.queue, safety_net=1.0)
    async with setup.client(notifications=config) as client:
        failing = await client.invoke_endpoint_async(
            f"fail-{setup.suffix}", body=b"x", inference_id="shared-id"
        )
        await setup.emu.join()
        fine = await client.invoke_endpoint_async(
            f"nobody-{setup.suffix}", body=b"fine", inference_id="shared-id"
        )
        # The error notification is already in the queue; the succeeded handle waits first.
        assert (await asyncio.wait_for(fine, WAIT)).body == b"fine"
        with pytest.raises(InferenceFailedError):
            await asyncio.wait_for(failing, WAIT)


async def test_the_docs_example_runs_as_written(
    local_async_endpoint_factory: Any, aws: dict[str, Any], embedded_s3: Any
) -> None:
    """docs/notifications.md's example, in a process of its own, on the emulator's env."""
    doc = (Path(__file__).parent.parent / "docs" / "notifications.md").read_text()
    block = doc.split("## Example", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    suffix = uuid.uuid4().hex[:8]
    success = (await aws["sns"].create_topic(Name=f"doc-ok-{suffix}"))["TopicArn"]
    error = (await aws["sns"].create_topic(Name=f"doc-err-{suffix}"))["TopicArn"]
    emu = await local_async_endpoint_factory(
        [
            EndpointConfig(
                "my-endpoint",
                model="echo",
                success_topic=success,
                error_topic=error,
                include_inference_response_in=BOTH,
            )
        ]
    )
    before = reads(embedded_s3, "my-endpoint")
    env = {**os.environ, **emu.env, "SUCCESS_TOPIC_ARN": success, "ERROR_TOPIC_ARN": error}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", block, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert out.decode().splitlines() == ['{"n": 0}', '{"n": 1}', '{"n": 2}']
    assert reads(embedded_s3, "my-endpoint") == before  # every result came in its message


async def test_a_client_queue_that_cannot_subscribe_fails_open_and_leaves_nothing(
    setup: Setup, aws: dict[str, Any]
) -> None:
    prefix = f"sma-{setup.suffix}-"
    missing = f"arn:aws:sns:us-east-1:123456789012:missing-{setup.suffix}"
    config = NotificationConfig(topics=(setup.success, missing), queue_name_prefix=prefix)
    client = setup.client(notifications=config)
    with pytest.raises(InvocationError) as caught:
        await client.open()
    assert caught.value.operation == "Subscribe"
    assert "notification queue" in str(caught.value)
    listed = await aws["sqs"].list_queues(QueueNamePrefix=prefix)
    assert listed.get("QueueUrls", []) == []
    left = (await aws["sns"].list_subscriptions_by_topic(TopicArn=setup.success))["Subscriptions"]
    assert not [s for s in left if prefix in s["Endpoint"]]
    await client.aclose()


def test_foreign_messages_come_back_later_at_each_receipt() -> None:
    assert [release_delay(n) for n in (0, 1, 2, 3, 10)] == [1, 1, 2, 3, 10]
    # Half its age once it is older than the safety net (its owner has then looked in S3).
    young = 60.0
    assert [release_delay(1, age, young) for age in (0, 5, 30, 59, 60, 3600)] == [
        1, 1, 1, 1, 30, 1800
    ]  # fmt: skip
    # SQS's limit (12 hours from the receipt), less a margin.
    assert release_delay(10**6) == release_delay(1, 10 * 86400, young) == 43200 - 600


def test_a_message_that_misses_its_owner_ten_times_still_beats_the_safety_net() -> None:
    """On a queue two clients share, each receipt goes to the owner half the time: a message
    missed 10 times in a row (1 in 1,024) is still back for its owner before the safety net
    (60 s) looks in S3. When half its age counted from the start, 8 misses (1 in 256, so 1 run
    in 9 of a test with 30 results) took it to 76 s."""
    young, visible = 60.0, 0.0
    for receipts in range(1, 11):
        visible += release_delay(receipts, visible, young)
    assert visible < young


async def test_an_endpoint_without_s3_failure_path(
    local_async_endpoint_factory: Any, aws: dict[str, Any]
) -> None:
    """S3FailurePath is optional: no FailureLocation, no failure object; a failure is then
    known from the error notification only (and a plain wait times out, saying why)."""
    suffix = uuid.uuid4().hex[:8]
    error = (await aws["sns"].create_topic(Name=f"nofail-{suffix}"))["TopicArn"]
    emu = await local_async_endpoint_factory(
        [
            EndpointConfig(
                f"bad-{suffix}", model="fail", error_topic=error, has_s3_failure_path=False
            ),
            EndpointConfig(f"ok-{suffix}", model="echo", has_s3_failure_path=False),
        ]
    )
    queue = await subscribed_queue(aws, [error])
    setup = Setup(emu, "", error, queue, emu.s3_endpoint_url, suffix)
    config = NotificationConfig(queue_url=queue, safety_net=0.3)  # "ok" does not notify
    async with setup.client(notifications=config) as client:
        ok = await client.invoke_endpoint_async(f"ok-{suffix}", body=b"fine")
        assert ok.failure_location is None
        assert (await asyncio.wait_for(ok, WAIT)).body == b"fine"
        state = ok.to_dict()
        assert state["failure_location"] is None
        assert client.resume(state).failure_location is None
        bad = await client.invoke_endpoint_async(f"bad-{suffix}", body=b"x")
        with pytest.raises(InferenceFailedError) as caught:
            await asyncio.wait_for(bad, WAIT)
        assert caught.value.failure_location is None
        assert "always fails" in caught.value.message
    plain = AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=emu.url,
        s3_endpoint_url=emu.s3_endpoint_url,
        polling=PollingConfig(initial_delay=0.05, max_delay=0.2, timeout=1.0),
    )
    async with plain:
        bad = await plain.invoke_endpoint_async(f"bad-{suffix}", body=b"x")
        with pytest.raises(InferenceTimeoutError) as timed_out:
            await asyncio.wait_for(bad, WAIT)
    assert "no S3FailurePath" in str(timed_out.value)


def scheduler_for(clock: Any) -> Any:
    """A scheduler to own a lone source's tasks (as the engine's does)."""
    from sagemaker_async._budget import RequestBudget
    from sagemaker_async._engine._scheduler import Scheduler

    return Scheduler(clock, RequestBudget(100.0, clock), 1)


def lone_source(sqs: Any, queue: str, clock: Any, **options: Any) -> Any:
    """A NotificationSource on ``queue`` with no engine behind it (reports go nowhere)."""
    from sagemaker_async._engine._notifications import NotificationSource

    callbacks: dict[str, Any] = {
        "find": lambda location: None,
        "report": lambda completion, source: None,
        "report_failure": lambda watch, reason, source: None,
    }
    settings: dict[str, Any] = {"config": NotificationConfig(queue_url=queue), **callbacks}
    return NotificationSource(
        sqs, queue, retry=RetryConfig(), clock=clock, **{**settings, **options}
    )


async def test_releases_go_at_once_and_deletes_wait_for_ten_or_a_second(
    aws: dict[str, Any], embedded_s3: Any
) -> None:
    # The owner of a foreign message waits for its release; nobody waits for a delete.
    from fakeclock import FakeClock
    from sagemaker_async._engine._records import Directory, Key, Kind, Watch
    from sagemaker_async._result import WatchTarget

    sqs = aws["sqs"]
    queue = (await sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:12]}"))["QueueUrl"]
    ours, theirs = [uuid.uuid4().hex for _ in range(4)], [uuid.uuid4().hex for _ in range(3)]
    for inference_id in ours + theirs:
        notice = dict(NOTICE, inferenceId=inference_id)
        notice["responseParameters"] = dict(
            NOTICE["responseParameters"], outputLocation=f"s3://b/out/{inference_id}.out"
        )
        await sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(notice))
    clock = FakeClock(wall=time.time())  # the messages' SentTimestamp is real
    watches: dict[str, Watch] = {}
    reported: list[str] = []

    def report(completion: Any, source: str) -> None:  # the engine resolves, then ends it
        watch = next(w for w in watches.values() if w.target.output_location == completion.location)
        reported.append(watch.target.inference_id)
        source_.ended(watch, settled=True)

    source_ = lone_source(sqs, queue, clock, report=report)
    wall = clock.wall()
    for inference_id in ours:
        target = WatchTarget(
            "ep", inference_id, f"s3://b/out/{inference_id}.out", None, wall, wall + 3600
        )
        source_.expect(inference_id, wall + 3600)
        watches[inference_id] = Watch(target, PollingConfig(), None, submitted=1.0, deadline=1e9)
        out = Directory("b", "out/", PollingConfig())
        source_.watch(Key(watches[inference_id], Kind.OUTPUT, out, f"out/{inference_id}.out"))
    before = embedded_s3.actions("sqs")
    source_.start(scheduler_for(clock))
    try:

        def sent(action: str) -> int:
            count: int = embedded_s3.actions("sqs").get(action, 0) - before.get(action, 0)
            return count

        async def settle() -> None:
            await asyncio.sleep(0.2)  # real time for moto to answer; the clock is fake

        # One receive gets all seven: the three foreign ones go back at once, in one batch.
        await eventually(lambda: async_true(sent("ChangeMessageVisibilityBatch") == 1))
        assert sorted(reported) == sorted(ours)
        assert sent("DeleteMessageBatch") == 0
        await clock.advance(0.5, settle)
        assert sent("DeleteMessageBatch") == 0  # four deletes wait for more...
        await clock.advance(0.6, settle)
        await eventually(lambda: async_true(sent("DeleteMessageBatch") == 1))  # ...a second
    finally:
        await source_.aclose()

    async def visible() -> bool:
        answer = await sqs.get_queue_attributes(
            QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
        )
        return bool(answer["Attributes"]["ApproximateNumberOfMessages"] == "3")

    await eventually(visible)  # theirs, visible again after their second
    assert await depth(aws, queue) == 3


async def test_an_old_foreign_message_is_hidden_within_sqs_limit(
    aws: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # SQS counts its 12 hours from the receipt: a change to exactly 43,200 s fails.
    from fakeclock import FakeClock

    sqs = aws["sqs"]
    queue = (await sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:12]}"))["QueueUrl"]
    await sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(NOTICE))
    clock = FakeClock(wall=time.time() + 10 * 86400)  # half its age would be 5 days
    source = lone_source(sqs, queue, clock)
    source.start(scheduler_for(clock))
    await eventually(lambda: async_true(source.stats["release"] == 1))
    await source.aclose()
    assert "ChangeMessageVisibilityBatch failed" not in caplog.text
    answer = await sqs.get_queue_attributes(
        QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )
    assert answer["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "1"


async def test_closing_during_a_receive_gives_back_what_it_brings(
    aws: dict[str, Any], embedded_s3: Any
) -> None:
    # A long poll cut short by close still takes messages at the server: they would stay
    # hidden from their owner for `hold`. On a busy queue, close lets it answer first.
    from fakeclock import FakeClock

    sqs = aws["sqs"]
    queue = (await sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:12]}"))["QueueUrl"]
    for _ in range(3):  # another client's
        notice = dict(NOTICE, inferenceId=uuid.uuid4().hex)
        await sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(notice))
    clock = FakeClock(wall=time.time())
    # (hold: what a receive cut short would hide, for longer than any wait below)
    config = NotificationConfig(queue_url=queue, hold=600)
    source = lone_source(sqs, queue, clock, close_grace=5.0, config=config)

    def receives() -> int:
        return int(embedded_s3.actions("sqs").get("ReceiveMessage", 0))

    source.start(scheduler_for(clock))
    await eventually(lambda: async_true(source.stats["release"] == 1))  # received, given back

    async def visible() -> bool:
        answer = await sqs.get_queue_attributes(
            QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages"]
        )
        return bool(answer["Attributes"]["ApproximateNumberOfMessages"] == "3")

    await eventually(visible)  # the release is done
    # Their owner takes them for a second: the next receive of ours waits at the server.
    owner = await sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=1)
    assert len(owner["Messages"]) == 3
    before = receives()
    await clock.advance(0.1, lambda: asyncio.sleep(0))  # the linger ends: the next receive...
    await eventually(lambda: async_true(receives() > before))  # ...is waiting at the server
    await source.aclose()
    # Given back (after 3 s: their third receipt), not hidden for `hold`.
    await eventually(visible)


# -- trust: a message resolves only the inference it names -----------------------------------
@dataclass
class Gated:
    """An endpoint whose model waits for ``gate`` (so a forged message comes first)."""

    emu: LocalAsyncEndpoint
    queue: str
    gate: asyncio.Event
    name: str
    failing: str


@pytest.fixture
async def gated(local_async_endpoint_factory: Any, aws: dict[str, Any]) -> Gated:
    gate = asyncio.Event()

    async def held(request: Any) -> tuple[bytes, str]:
        await gate.wait()
        return b"real " + request.payload, "text/plain"

    async def held_failure(request: Any) -> tuple[bytes, str]:
        from sagemaker_async.emulator import ModelError

        await gate.wait()
        raise ModelError("the real failure", 500)

    suffix = uuid.uuid4().hex[:8]
    success = (await aws["sns"].create_topic(Name=f"ok-{suffix}"))["TopicArn"]
    error = (await aws["sns"].create_topic(Name=f"err-{suffix}"))["TopicArn"]
    topics: dict[str, Any] = {
        "success_topic": success,
        "error_topic": error,
        "include_inference_response_in": BOTH,
    }
    emu = await local_async_endpoint_factory(
        [
            EndpointConfig(f"gated-{suffix}", model=held, **topics),
            EndpointConfig(f"gated-fail-{suffix}", model=held_failure, **topics),
        ]
    )
    queue = await subscribed_queue(aws, [success, error])
    return Gated(emu, queue, gate, f"gated-{suffix}", f"gated-fail-{suffix}")


def gated_client(gated: Gated, **config: Any) -> AsyncInferenceClient:
    return AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=gated.emu.url,
        s3_endpoint_url=gated.emu.s3_endpoint_url,
        sqs_endpoint_url=gated.emu.s3_endpoint_url,
        notifications=NotificationConfig(queue_url=gated.queue, **config),
        retry=RetryConfig(initial_delay=0.01, max_delay=0.05, jitter=0.0),
    )


def forged(inference_id: str, *, body: bytes | None = None, **fields: Any) -> str:
    """A notification as SageMaker writes it (raw), with what a forger chose."""
    notice: dict[str, Any] = {
        "awsRegion": "us-east-1",
        "invocationStatus": "Completed" if body is not None else "Failed",
        "inferenceId": inference_id,
        "eventSource": "aws:sagemaker",
        "eventName": "InferenceResult",
        **fields,
    }
    if body is not None:
        notice["responseBody"] = {"content": base64.b64encode(body).decode(), "encoding": "BASE64"}
    else:
        notice["failureReason"] = "ClientError: forged"
    return json.dumps(notice)


async def received(aws: dict[str, Any], queue: str) -> None:
    """Wait until a client has received every message in ``queue`` (none visible)."""

    async def none_visible() -> bool:
        names = ["ApproximateNumberOfMessages"]
        answer = await aws["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=names)
        return bool(answer["Attributes"][names[0]] == "0")

    await eventually(none_visible)


@pytest.mark.parametrize(
    "lie",
    [
        "another id, this output location",
        "this id, another output location",
        "this id, another endpoint",
    ],
)
async def test_a_message_that_contradicts_the_inference_resolves_nothing(
    gated: Gated, aws: dict[str, Any], caplog: pytest.LogCaptureFixture, lie: str
) -> None:
    caplog.set_level(logging.WARNING, "sagemaker_async")
    async with gated_client(gated) as client:
        handle = await client.invoke_endpoint_async(gated.name, body=b"x")
        waiting = asyncio.ensure_future(handle)  # watched from now on
        named = {
            "another id, this output location": ("forged-id", handle.output_location, gated.name),
            "this id, another output location": (
                handle.inference_id,
                handle.output_location + ".elsewhere",
                gated.name,
            ),
            "this id, another endpoint": (handle.inference_id, handle.output_location, "other"),
        }
        inference_id, location, endpoint = named[lie]
        for _ in range(2):  # (the same forgery twice: two messages, two log lines)
            await aws["sqs"].send_message(
                QueueUrl=gated.queue,
                MessageBody=forged(
                    inference_id,
                    body=b"forged",
                    requestParameters={"endpointName": endpoint},
                    responseParameters={"outputLocation": location, "contentType": "text/plain"},
                ),
            )
        await received(aws, gated.queue)
        assert not waiting.done()
        gated.gate.set()
        result = await asyncio.wait_for(waiting, WAIT)
        stats = client.stats()
    assert result.body == b"real x"
    assert stats.resolved_by == {"notification": 1}  # the real notification
    assert stats.notifications["mismatched"] >= 2
    lines = [r.getMessage() for r in caplog.records if "does not match" in r.getMessage()]
    assert len(lines) == 2  # once per message, however often it comes back
    assert inference_id in lines[0] and handle.inference_id in lines[0]


async def test_a_forged_failure_does_not_beat_a_success(gated: Gated, aws: dict[str, Any]) -> None:
    async with gated_client(gated) as client:
        handle = await client.invoke_endpoint_async(gated.name, body=b"x")
        await aws["sqs"].send_message(
            QueueUrl=gated.queue,
            MessageBody=forged(
                handle.inference_id,
                requestParameters={"endpointName": "someone-elses-endpoint"},
            ),
        )
        await received(aws, gated.queue)
        gated.gate.set()
        assert (await asyncio.wait_for(handle, WAIT)).body == b"real x"
        assert client.stats().notifications["mismatched"] >= 1


async def test_a_forged_success_does_not_beat_a_failure(gated: Gated, aws: dict[str, Any]) -> None:
    async with gated_client(gated) as client:
        handle = await client.invoke_endpoint_async(gated.failing, body=b"x")
        await aws["sqs"].send_message(
            QueueUrl=gated.queue,
            MessageBody=forged(
                "forged-id",
                body=b"forged",
                responseParameters={"outputLocation": handle.output_location},
            ),
        )
        await received(aws, gated.queue)
        gated.gate.set()
        with pytest.raises(InferenceFailedError) as failed:
            await asyncio.wait_for(handle, WAIT)
    assert "the real failure" in failed.value.message


# -- copies: every copy of a client's own message is deleted ---------------------------------
async def test_every_copy_of_a_notification_is_deleted_whenever_it_came(
    gated: Gated, aws: dict[str, Any]
) -> None:
    # Standard queues deliver at least once: copies come before anyone waits, while the
    # handle is resolved, and after it has its outcome.
    async with gated_client(gated) as client:
        handle = await client.invoke_endpoint_async(gated.name, body=b"x")
        copy = forged(
            handle.inference_id,
            body=b"real x",
            requestParameters={"endpointName": gated.name},
            responseParameters={"outputLocation": handle.output_location},
        )
        for _ in range(4):  # before anyone waits: held
            await aws["sqs"].send_message(QueueUrl=gated.queue, MessageBody=copy)
        await received(aws, gated.queue)
        gated.gate.set()  # the endpoint's own notification: a fifth copy
        await gated.emu.join()
        assert (await asyncio.wait_for(handle, WAIT)).body == b"real x"
        for _ in range(2):  # after the outcome
            await aws["sqs"].send_message(QueueUrl=gated.queue, MessageBody=copy)
        # Taken by the client, not only received by the queue: a long poll that the close cuts
        # short may have taken messages the client never saw (they come back after the
        # poll's visibility timeout, to whoever receives; on a machine with a load average
        # of 15, 2 were).
        await eventually(lambda: async_true(client.stats().notifications.get("duplicates", 0) == 6))
    assert await depth(aws, gated.queue) == 0  # none left after close
    counts = client.stats().notifications
    assert counts["own"] == 1 and counts["duplicates"] == 6


# -- fairness: others' messages cannot keep a client's own from it ----------------------------
@pytest.mark.parametrize("others", [30, 1000])
async def test_own_results_come_through_a_queue_full_of_others_messages(
    local_async_endpoint_factory: Any,
    aws: dict[str, Any],
    embedded_s3: Any,
    caplog: pytest.LogCaptureFixture,
    others: int,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    success = (await aws["sns"].create_topic(Name=f"ok-{suffix}"))["TopicArn"]
    emu = await local_async_endpoint_factory(
        [
            EndpointConfig(
                f"ep-{suffix}",
                model="echo",
                success_topic=success,
                include_inference_response_in=BOTH[:1],
                max_concurrent_invocations_per_instance=20,
            )
        ]
    )
    queue = await subscribed_queue(aws, [success], raw=True)
    # Others' notifications (another client's inferences) and junk, oldest in the queue.
    for start in range(0, others, 10):
        entries = []
        for i in range(start, min(start + 10, others)):
            text = "junk" if i % 2 else forged(f"theirs-{i}", body=b"theirs")
            entries.append({"Id": str(i - start), "MessageBody": text})
        await aws["sqs"].send_message_batch(QueueUrl=queue, Entries=entries)
    client = AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=emu.url,
        s3_endpoint_url=emu.s3_endpoint_url,
        sqs_endpoint_url=emu.s3_endpoint_url,
        # The safety net looks at S3 after 30 s: a result found there was starved.
        notifications=NotificationConfig(queue_url=queue, safety_net=30.0),
    )
    async with client:
        handles = [
            await client.invoke_endpoint_async(f"ep-{suffix}", body=f"{i}") for i in range(20)
        ]
        results = await asyncio.wait_for(asyncio.gather(*handles), 4 * WAIT)
        stats = client.stats()
    assert [r.body for r in results] == [f"{i}".encode() for i in range(20)]
    assert stats.resolved_by == {"notification": 20}
    assert reads(embedded_s3, f"ep-{suffix}") == 0
    # Each of the others' messages is received a few times (a second more hidden at each),
    # not again and again: about one receive per 10 of them, plus the client's own.
    assert stats.sqs_requests["ReceiveMessage"] <= 10 * (others // 10) + 20
    assert stats.notifications["unparseable"] >= others // 2
    # Theirs and the junk: none deleted. (moto counts visible and invisible messages at two
    # instants: a message that turns visible between them is missed; read until it settles.)
    await eventually(lambda: async_equal(depth(aws, queue), others))
    junk_lines = [r for r in caplog.records if "not a SageMaker notification" in r.getMessage()]
    assert len(junk_lines) == 1
