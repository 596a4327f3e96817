"""Gaps of the control plane found by running unmodified clients (issue 23, part 3)."""

from __future__ import annotations

import asyncio
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, WaiterError

from emulator.test_control_plane import FAST, call, sagemaker, variant
from sagemaker_async.emulator import LocalAsyncEndpoint


def error_of(function: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        function(**kwargs)
    except ClientError as exc:
        return dict(exc.response["Error"]) | {
            "status": exc.response["ResponseMetadata"]["HTTPStatusCode"]
        }
    raise AssertionError("no error")


async def test_create_endpoint_config_is_checked_against_the_whole_model(
    local_async_endpoint: LocalAsyncEndpoint,
) -> None:
    sm = sagemaker(local_async_endpoint)
    await call(sm.create_model, ModelName="checked", PrimaryContainer={"Image": "echo"})
    error = await asyncio.to_thread(
        error_of,
        sm.create_endpoint_config,
        EndpointConfigName="checked",
        ProductionVariants=variant("checked", InstanceType="m5.large"),
        KmsKeyId="not a key",
        AsyncInferenceConfig={
            "OutputConfig": {
                "S3OutputPath": "http://bucket/out",
                "NotificationConfig": {
                    "SuccessTopic": "arn:aws:sqs:us-east-1:123456789012:a-queue",
                },
            }
        },
    )
    assert error["Code"] == "ValidationException"
    message = error["Message"]
    assert message.startswith("4 validation errors detected: ")
    assert (
        "Value 'm5.large' at 'productionVariants.1.member.instanceType' failed to satisfy "
        "constraint: Member must satisfy enum value set: [ml." in message
    )
    assert (
        "Value 'not a key' at 'kmsKeyId' failed to satisfy constraint: Member must satisfy "
        "regular expression pattern: " in message
    )
    assert "at 'asyncInferenceConfig.outputConfig.s3OutputPath' failed" in message
    assert "at 'asyncInferenceConfig.outputConfig.notificationConfig.successTopic' failed" in (
        message
    )
    # Nothing was stored.
    assert (
        await asyncio.to_thread(error_of, sm.describe_endpoint_config, EndpointConfigName="checked")
    )["Code"] == "ValidationException"

    # What botocore itself does not check (with its own validation off): lengths, ranges,
    # required members at depth, and types (SerializationException, as the service answers).
    raw = boto3.client(
        "sagemaker",
        endpoint_url=local_async_endpoint.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(parameter_validation=False),
    )
    one = await asyncio.to_thread(
        error_of,
        raw.create_endpoint_config,
        EndpointConfigName="checked",
        ProductionVariants=[{"ModelName": "checked", "InitialInstanceCount": 0}],
    )
    assert one["Code"] == "ValidationException"
    assert one["Message"] == (
        "2 validation errors detected: Value null at 'productionVariants.1.member.variantName' "
        "failed to satisfy constraint: Member must not be null; Value '0' at "
        "'productionVariants.1.member.initialInstanceCount' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1"
    )
    typed = await asyncio.to_thread(
        error_of,
        raw.create_endpoint_config,
        EndpointConfigName="checked",
        ProductionVariants=[{"VariantName": 5, "ModelName": "checked"}],
    )
    assert typed["Code"] == "SerializationException"
    long_name = await asyncio.to_thread(error_of, raw.describe_endpoint, EndpointName="e" * 64)
    assert "Member must have length less than or equal to 63" in long_name["Message"]
    raw.close()
    sm.close()


async def test_tags_on_the_emulators_resources(local_async_endpoint_factory: Any) -> None:
    emu = await local_async_endpoint_factory([], deployment_seconds=0.05)
    sm = sagemaker(emu)
    model_arn = (
        await call(
            sm.create_model,
            ModelName="tagged",
            PrimaryContainer={"Image": "echo"},
            Tags=[{"Key": "team", "Value": "ml"}],
        )
    )["ModelArn"]
    config_arn = (
        await call(
            sm.create_endpoint_config,
            EndpointConfigName="tagged",
            ProductionVariants=variant("tagged"),
            AsyncInferenceConfig={"OutputConfig": {}},
            Tags=[{"Key": "cost", "Value": "1"}],
        )
    )["EndpointConfigArn"]
    endpoint_arn = (
        await call(
            sm.create_endpoint,
            EndpointName="tagged",
            EndpointConfigName="tagged",
            Tags=[{"Key": "env", "Value": "test"}],
        )
    )["EndpointArn"]
    assert (await call(sm.list_tags, ResourceArn=model_arn))["Tags"] == [
        {"Key": "team", "Value": "ml"}
    ]
    assert (await call(sm.list_tags, ResourceArn=config_arn))["Tags"] == [
        {"Key": "cost", "Value": "1"}
    ]
    added = await call(
        sm.add_tags,
        ResourceArn=endpoint_arn,
        Tags=[{"Key": "owner", "Value": "me"}, {"Key": "env", "Value": "prod"}],
    )
    assert added["Tags"] == [{"Key": "env", "Value": "prod"}, {"Key": "owner", "Value": "me"}]
    await call(sm.delete_tags, ResourceArn=endpoint_arn, TagKeys=["env"])
    assert (await call(sm.list_tags, ResourceArn=endpoint_arn))["Tags"] == [
        {"Key": "owner", "Value": "me"}
    ]
    # Pages of MaxResults.
    many = [{"Key": f"k{i:02}", "Value": str(i)} for i in range(50)]
    await call(sm.add_tags, ResourceArn=model_arn, Tags=many)
    first = await call(sm.list_tags, ResourceArn=model_arn, MaxResults=50)
    assert len(first["Tags"]) == 50
    second = await call(sm.list_tags, ResourceArn=model_arn, NextToken=first["NextToken"])
    assert [t["Key"] for t in second["Tags"]] == ["k49"]
    # A resource the emulator does not have: one clear error, no retried HTML 500.
    missing = await asyncio.to_thread(
        error_of, sm.list_tags, ResourceArn=endpoint_arn.replace("tagged", "nope")
    )
    assert (missing["Code"], missing["status"]) == ("ValidationException", 400)
    # Deleting a resource deletes its tags.
    await call(sm.delete_model, ModelName="tagged")
    await call(sm.create_model, ModelName="tagged", PrimaryContainer={"Image": "echo"})
    assert (await call(sm.list_tags, ResourceArn=model_arn))["Tags"] == []
    sm.close()


async def test_actions_on_the_emulators_endpoints_are_served_or_refused(
    local_async_endpoint: LocalAsyncEndpoint,
) -> None:
    emu = local_async_endpoint
    sm = sagemaker(emu)
    arn = (
        await call(
            sm.update_endpoint_weights_and_capacities,
            EndpointName="echo",
            DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 2}],
        )
    )["EndpointArn"]
    assert arn.endswith(":endpoint/echo")
    scaling = await call(sm.describe_endpoint, EndpointName="echo")
    assert scaling["EndpointStatus"] == "Updating"
    variant_ = scaling["ProductionVariants"][0]
    assert (variant_["CurrentInstanceCount"], variant_["DesiredInstanceCount"]) == (1, 2)
    await call(sm.get_waiter("endpoint_in_service").wait, EndpointName="echo", WaiterConfig=FAST)
    scaled = (await call(sm.describe_endpoint, EndpointName="echo"))["ProductionVariants"][0]
    assert (scaled["CurrentInstanceCount"], scaled["DesiredInstanceCount"]) == (2, 2)
    assert emu.stats("echo").concurrency == 2 * 4

    unknown_variant = await asyncio.to_thread(
        error_of,
        sm.update_endpoint_weights_and_capacities,
        EndpointName="echo",
        DesiredWeightsAndCapacities=[{"VariantName": "Other", "DesiredInstanceCount": 1}],
    )
    assert unknown_variant["Code"] == "ValidationException"

    # An action on an endpoint that the emulator does not serve: one clear refusal, never
    # moto's "Could not find endpoint" about an endpoint that exists.
    refused = await asyncio.to_thread(
        error_of,
        sm.create_inference_component,
        InferenceComponentName="ic",
        EndpointName="echo",
        VariantName="AllTraffic",
        Specification={"Container": {"Image": "echo"}},
        RuntimeConfig={"CopyCount": 1},
    )
    assert (refused["Code"], refused["status"]) == ("UnknownOperationException", 400)
    assert "is not emulated" in refused["Message"]
    sm.close()


async def test_update_endpoint_on_a_failed_endpoint_says_it_failed(
    local_async_endpoint_factory: Any,
) -> None:
    emu = await local_async_endpoint_factory([], deployment_seconds=0.05)
    sm = sagemaker(emu)
    await call(sm.create_model, ModelName="cannot-run", PrimaryContainer={"Image": "no-such"})
    await call(
        sm.create_endpoint_config,
        EndpointConfigName="cannot-run",
        ProductionVariants=variant("cannot-run"),
        AsyncInferenceConfig={"OutputConfig": {}},
    )
    await call(sm.create_endpoint, EndpointName="failed", EndpointConfigName="cannot-run")
    with pytest.raises(WaiterError):  # the waiter stops at Failed
        await call(
            sm.get_waiter("endpoint_in_service").wait, EndpointName="failed", WaiterConfig=FAST
        )
    error = await asyncio.to_thread(
        error_of, sm.update_endpoint, EndpointName="failed", EndpointConfigName="cannot-run"
    )
    assert error["Code"] == "ValidationException"
    assert "in-progress" not in error["Message"]
    assert "failed endpoint" in error["Message"]
    sm.close()


def describe_output_errors(answer: dict[str, Any]) -> list[str]:
    """What in a DescribeEndpoint answer breaks the model's output shape (required members,
    enums, types), checked with the emulator's own request checker."""
    from sagemaker_async.emulator._shapes import constraint_errors

    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model("DescribeEndpoint").output_shape
    plain = {k: v for k, v in answer.items() if k != "ResponseMetadata"}
    for key in ("CreationTime", "LastModifiedTime"):
        plain[key] = 0  # botocore parsed them into datetimes
    return constraint_errors(shape, plain)


async def test_describe_endpoint_has_the_summary_fields(
    local_async_endpoint_factory: Any,
) -> None:
    emu = await local_async_endpoint_factory([], deployment_seconds=1.0)
    sm = sagemaker(emu)
    await call(sm.create_model, ModelName="summary", PrimaryContainer={"Image": "echo"})
    for name, count in (("summary", 1), ("summary-2", 3)):
        await call(
            sm.create_endpoint_config,
            EndpointConfigName=name,
            ProductionVariants=variant("summary", InitialInstanceCount=count),
            AsyncInferenceConfig={"OutputConfig": {}},
        )
    await call(sm.create_endpoint, EndpointName="summary", EndpointConfigName="summary")
    await call(sm.get_waiter("endpoint_in_service").wait, EndpointName="summary", WaiterConfig=FAST)
    described = await call(sm.describe_endpoint, EndpointName="summary")
    (summary,) = described["ProductionVariants"]
    assert summary["VariantStatus"] == []
    assert summary["CurrentInstanceCount"] == summary["DesiredInstanceCount"] == 1
    assert summary["CurrentWeight"] == summary["DesiredWeight"] == 1.0
    assert describe_output_errors(described) == []

    await call(sm.update_endpoint, EndpointName="summary", EndpointConfigName="summary-2")
    updating = await call(sm.describe_endpoint, EndpointName="summary")
    assert updating["EndpointStatus"] == "Updating"
    pending = updating["PendingDeploymentSummary"]
    assert pending["EndpointConfigName"] == "summary-2"
    assert pending["ProductionVariants"][0]["DesiredInstanceCount"] == 3
    assert pending["ProductionVariants"][0]["VariantStatus"][0]["Status"] == "Creating"
    assert describe_output_errors(updating) == []
    await call(sm.get_waiter("endpoint_in_service").wait, EndpointName="summary", WaiterConfig=FAST)
    updated = await call(sm.describe_endpoint, EndpointName="summary")
    assert "PendingDeploymentSummary" not in updated
    assert updated["ProductionVariants"][0]["CurrentInstanceCount"] == 3

    await call(
        sm.update_endpoint_weights_and_capacities,
        EndpointName="summary",
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 1}],
    )
    scaling = (await call(sm.describe_endpoint, EndpointName="summary"))["ProductionVariants"][0]
    assert scaling["VariantStatus"][0]["Status"] == "Updating"
    assert (scaling["CurrentInstanceCount"], scaling["DesiredInstanceCount"]) == (3, 1)
    sm.close()


async def test_idle_and_unfinished_connections_are_closed(
    local_async_endpoint_factory: Any,
) -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    # The timer is aiohttp's, on the real clock, and runs from the connection's start: the
    # partial body's headers must be parsed before it fires, or the connection is closed as
    # idle with no 408 (0.3 s was too short on a machine with a load average of 17).
    emu = await local_async_endpoint_factory(["slowloris=echo"], connection_timeout=2.0)
    host, port = emu.url.removeprefix("http://").split(":")
    body = b"x" * 1000
    signed = AWSRequest(
        method="POST",
        url=f"{emu.url}/endpoints/slowloris/async-invocations",
        data=body,
        headers={"Content-Type": "application/octet-stream"},
    )
    SigV4Auth(Credentials("testing", "testing"), "sagemaker", "us-east-1").add_auth(signed)
    head = "".join(f"{name}: {value}\r\n" for name, value in signed.headers.items())
    partial_body = (
        f"POST /endpoints/slowloris/async-invocations HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Length: {len(body)}\r\n{head}\r\n"
    ).encode() + body[:10]
    sends = {
        "nothing": b"",
        "half the headers": b"POST /endpoints/slowloris/async-invocations HTTP/1.1\r\nHost: a",
        "part of the body": partial_body,
    }
    answers: dict[str, bytes] = {}

    async def hold(name: str, data: bytes) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(data)
        await writer.drain()
        # Only a guard against a hang: the emulator must close the connection itself.
        answers[name] = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        await writer.wait_closed()

    await asyncio.gather(*(hold(name, data) for name, data in sends.items()))
    assert answers["nothing"] == b""
    assert answers["half the headers"] == b""
    assert answers["part of the body"].startswith(b"HTTP/1.1 408")
    assert b"RequestTimeout" in answers["part of the body"]
    assert emu.stats("slowloris").received == 0
