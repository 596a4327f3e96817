"""``notifications="auto"``: each endpoint's topics come from its configuration, read from the
emulator's control plane; moto's SNS delivers to the client's own queue."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import aiobotocore.session
import pytest
from aiohttp import web

from sagemaker_async import AsyncInferenceClient, NotificationConfig, PollingConfig, RetryConfig
from sagemaker_async.emulator import EndpointConfig, LocalAsyncEndpoint
from support import local_server

WAIT = 30.0  # only guards against hangs
ROLE = "arn:aws:iam::123456789012:role/sagemaker-execution"


def auto_client(
    emu: LocalAsyncEndpoint, control: str | None = None, **config: Any
) -> AsyncInferenceClient:
    notifications: Any = NotificationConfig(discover=True, **config) if config else "auto"
    return AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=emu.url,
        sagemaker_endpoint_url=control or emu.url,
        s3_endpoint_url=emu.s3_endpoint_url,
        sqs_endpoint_url=emu.s3_endpoint_url,
        sns_endpoint_url=emu.s3_endpoint_url,
        notifications=notifications,
        polling=PollingConfig(initial_delay=0.05, max_delay=0.2),
        retry=RetryConfig(initial_delay=0.01, max_delay=0.05, jitter=0.0),
    )


async def eventually(check: Any, timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.05)


async def one(client: AsyncInferenceClient, endpoint: str, body: bytes) -> str | None:
    """Run one inference; which source found it."""
    before = dict(client.stats().resolved_by)
    handle = await client.invoke_endpoint_async(endpoint, body=body)
    assert (await asyncio.wait_for(handle, WAIT)).body == body
    after = client.stats().resolved_by
    found = [s for s in after if after[s] != before.get(s, 0)]
    return found[0] if found else None


async def test_topics_come_from_the_endpoint_and_follow_an_update(
    local_async_endpoint_factory: Any, aws: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "sagemaker_async")
    suffix = uuid.uuid4().hex[:8]
    first, second = [
        (await aws["sns"].create_topic(Name=f"{n}-{suffix}"))["TopicArn"] for n in ("a", "b")
    ]
    name = f"auto-{suffix}"
    emu = await local_async_endpoint_factory(
        [EndpointConfig(name, model="echo", success_topic=first)], deployment_seconds=0.1
    )
    # (safety_net: the update below is found when S3 finds a result no notification announced)
    async with auto_client(emu, safety_net=0.5) as client:
        assert client.notification_queue_url is None  # no queue before topics are found
        await one(client, name, b"first")  # its lookup runs meanwhile

        def said(text: str) -> int:
            return sum(text in r.getMessage() for r in caplog.records)

        await eventually(lambda: said(f"endpoint {name} notifies {first}") == 1)
        assert client.notification_queue_url is not None
        assert client.stats().sns_requests.get("Subscribe") == 1
        assert await one(client, name, b"notified") == "notification"

        # The endpoint moves to a configuration with another topic.
        session = aiobotocore.session.get_session()
        async with session.create_client(
            "sagemaker", endpoint_url=emu.url, region_name="us-east-1"
        ) as sm:
            await sm.create_model(
                ModelName=f"m-{suffix}", PrimaryContainer={"Image": "echo"}, ExecutionRoleArn=ROLE
            )
            await sm.create_endpoint_config(
                EndpointConfigName=f"c-{suffix}",
                ProductionVariants=[
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": f"m-{suffix}",
                        "InitialInstanceCount": 1,
                        "InstanceType": "ml.m5.large",
                    }
                ],
                AsyncInferenceConfig={
                    "OutputConfig": {
                        "S3OutputPath": f"s3://sagemaker-async-emulator/{name}/v2",
                        "NotificationConfig": {"SuccessTopic": second},
                    }
                },
            )
            await sm.update_endpoint(EndpointName=name, EndpointConfigName=f"c-{suffix}")
            waiter = sm.get_waiter("endpoint_in_service")
            await waiter.wait(EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        # Its notification goes to a topic the queue does not hear: S3 finds it, and the
        # endpoint is read again.
        assert await one(client, name, b"moved") != "notification"
        await eventually(lambda: said(f"subscribed to {second}") == 1)
        assert await one(client, name, b"followed") == "notification"
        assert client.stats().sns_requests.get("Subscribe") == 2


async def test_an_endpoint_without_topics_stays_on_s3_with_one_line(
    local_async_endpoint_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "sagemaker_async")
    name = f"quiet-{uuid.uuid4().hex[:8]}"
    emu = await local_async_endpoint_factory([EndpointConfig(name, model="echo")])
    async with auto_client(emu) as client:
        for i in range(3):
            assert await one(client, name, f"{i}".encode()) == "polling"
        stats = client.stats()
    assert stats.sqs_requests == {} and stats.sns_requests == {}  # no queue at all
    why = [r.getMessage() for r in caplog.records if "watched on S3 alone" in r.getMessage()]
    assert why == [f"notifications: endpoint {name} is watched on S3 alone: its configuration "
                   "names no notification topics"]  # fmt: skip


@pytest.mark.parametrize("answer", ["denied", "hangs"])
async def test_a_control_plane_that_refuses_or_hangs_never_delays_an_inference(
    local_async_endpoint_factory: Any, caplog: pytest.LogCaptureFixture, answer: str
) -> None:
    caplog.set_level(logging.INFO, "sagemaker_async")
    name = f"ep-{uuid.uuid4().hex[:8]}"
    emu = await local_async_endpoint_factory([EndpointConfig(name, model="echo")])
    asked = asyncio.Event()

    async def control(request: web.Request) -> web.Response:
        asked.set()
        if answer == "hangs":
            await asyncio.Event().wait()  # until the client gives up (closes)
        return web.json_response(
            {"__type": "AccessDeniedException", "message": "not authorized"},
            status=400,
            headers={"x-amzn-RequestId": str(uuid.uuid4())},
        )

    async with local_server(control) as url, auto_client(emu, control=url) as client:
        assert await one(client, name, b"x") == "polling"
        await asyncio.wait_for(asked.wait(), WAIT)
        if answer == "denied":
            await eventually(lambda: any("AccessDenied" in r.getMessage() for r in caplog.records))
    assert client.stats().sqs_requests == {}
    if answer == "denied":
        why = [r.getMessage() for r in caplog.records if "watched on S3 alone" in r.getMessage()]
        assert len(why) == 1 and "could not be read" in why[0]


async def test_auto_is_checked() -> None:
    from sagemaker_async import ValidationError

    with pytest.raises(ValidationError) as caught:
        AsyncInferenceClient(notifications="automatic")  # type: ignore[arg-type]
    assert caught.value.field == "notifications"
    with pytest.raises(ValidationError) as caught:
        NotificationConfig(discover=True, topics=("arn:aws:sns:us-east-1:123456789012:t",))
    assert "discover" in str(caught.value)
