"""SNS notifications (delivered to SQS by moto) in SageMaker's message format."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from emulator.emulator_helpers import runtime_client
from sagemaker_async.emulator import (
    ERROR_NOTIFICATION_TOPIC,
    SUCCESS_NOTIFICATION_TOPIC,
    EndpointConfig,
)


async def topic_to_queue(aws: dict[str, Any], name: str) -> tuple[str, str]:
    """Create an SNS topic and an SQS queue subscribed to it; return (topic ARN, queue URL)."""
    topic_arn = (await aws["sns"].create_topic(Name=name))["TopicArn"]
    queue_url = (await aws["sqs"].create_queue(QueueName=name))["QueueUrl"]
    attributes = await aws["sqs"].get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["QueueArn"]
    )
    await aws["sns"].subscribe(
        TopicArn=topic_arn, Protocol="sqs", Endpoint=attributes["Attributes"]["QueueArn"]
    )
    return topic_arn, queue_url


async def receive_notifications(aws: dict[str, Any], queue_url: str, count: int) -> list[Any]:
    messages: list[Any] = []
    for _ in range(50):
        answer = await aws["sqs"].receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        for message in answer.get("Messages", []):
            envelope = json.loads(message["Body"])
            assert envelope["Type"] == "Notification"
            messages.append(json.loads(envelope["Message"]))
        if len(messages) >= count:
            return messages
    raise AssertionError(f"got {len(messages)} of {count} notifications")


async def test_success_and_error_notifications(
    local_async_endpoint_factory: Any, aws: dict[str, Any]
) -> None:
    suffix = uuid.uuid4().hex[:8]
    success_arn, success_queue = await topic_to_queue(aws, f"success-{suffix}")
    error_arn, error_queue = await topic_to_queue(aws, f"error-{suffix}")
    emu = await local_async_endpoint_factory(
        [
            EndpointConfig(
                "notify-ok",
                model="sentiment",
                success_topic=success_arn,
                error_topic=error_arn,
                include_inference_response_in=(SUCCESS_NOTIFICATION_TOPIC,),
            ),
            EndpointConfig(
                "notify-fail", model="fail", success_topic=success_arn, error_topic=error_arn
            ),
        ]
    )
    await aws["s3"].create_bucket(Bucket="notify-inputs")
    await aws["s3"].put_object(Bucket="notify-inputs", Key="in.json", Body=b'"I love it"')
    async with runtime_client(emu) as client:
        ok = await client.invoke_endpoint_async(
            EndpointName="notify-ok",
            InputLocation="s3://notify-inputs/in.json",
            ContentType="application/json",
            InferenceId="notify-ok-1",
        )
        failed = await client.invoke_endpoint_async(
            EndpointName="notify-fail", Body=b"x", Accept="text/plain"
        )
    await emu.join()

    (success,) = await receive_notifications(aws, success_queue, 1)
    assert success["invocationStatus"] == "Completed"
    assert success["inferenceId"] == "notify-ok-1"
    assert success["awsRegion"] == "us-east-1"
    assert (success["eventSource"], success["eventName"], success["eventVersion"]) == (
        "aws:sagemaker",
        "InferenceResult",
        "1.0",
    )
    assert success["requestParameters"] == {
        "contentType": "application/json",
        "endpointName": "notify-ok",
        "inputLocation": "s3://notify-inputs/in.json",
    }
    assert success["responseParameters"] == {
        "contentType": "application/json",
        "outputLocation": ok["OutputLocation"],
    }
    assert success["eventTime"].endswith("Z") and success["receivedTime"].endswith("Z")
    assert success["responseBody"]["encoding"] == "BASE64"
    content = json.loads(base64.b64decode(success["responseBody"]["content"]))
    assert content[0]["label"] == "POSITIVE"
    assert success["responseBody"]["message"] == (
        "Check S3 path location(if configured) or Cloudwatch for additional details."
    )

    (error,) = await receive_notifications(aws, error_queue, 1)
    assert error["invocationStatus"] == "Failed"
    assert error["inferenceId"] == failed["InferenceId"]
    assert "always fails" in error["failureReason"]
    assert error["failureReason"].startswith("ClientError: Received server error (500) from model")
    # As captured from the service: no responseParameters in an error notification; no
    # contentType when the request had none; accept when it had one.
    assert "responseParameters" not in error
    assert error["requestParameters"] == {"accept": "text/plain", "endpointName": "notify-fail"}
    assert "responseBody" not in error  # ERROR_NOTIFICATION_TOPIC not included


async def test_error_notification_with_response_body_and_size_limit(
    local_async_endpoint_factory: Any, aws: dict[str, Any]
) -> None:
    suffix = uuid.uuid4().hex[:8]
    topic_arn, queue_url = await topic_to_queue(aws, f"both-{suffix}")
    emu = await local_async_endpoint_factory(
        [
            EndpointConfig(
                "big",
                model=lambda request: request.payload * 2,
                success_topic=topic_arn,
                error_topic=topic_arn,
                include_inference_response_in=(
                    SUCCESS_NOTIFICATION_TOPIC,
                    ERROR_NOTIFICATION_TOPIC,
                ),
            ),
            EndpointConfig(
                "bad",
                model="fail",
                error_topic=topic_arn,
                include_inference_response_in=(ERROR_NOTIFICATION_TOPIC,),
            ),
        ]
    )
    async with runtime_client(emu) as client:
        await client.invoke_endpoint_async(EndpointName="big", Body=b"a" * 100_000)
        await client.invoke_endpoint_async(EndpointName="big", Body=b"small")
        await client.invoke_endpoint_async(EndpointName="bad", Body=b"x")
    await emu.join()
    messages = await receive_notifications(aws, queue_url, 3)
    completed = [m for m in messages if m["invocationStatus"] == "Completed"]
    assert len(completed) == 2
    # 200,000 bytes of output > 128 KB: left out; b"smallsmall" included.
    bodies = sorted(("responseBody" in m) for m in completed)
    assert bodies == [False, True]
    (small,) = [m for m in completed if "responseBody" in m]
    assert base64.b64decode(small["responseBody"]["content"]) == b"smallsmall"
    (bad,) = [m for m in messages if m["requestParameters"]["endpointName"] == "bad"]
    assert "always fails" in base64.b64decode(bad["responseBody"]["content"]).decode()
    assert "always fails" in bad["responseBody"]["message"]
