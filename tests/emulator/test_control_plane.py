"""The SageMaker control plane: endpoints made with plain boto3 calls, served by the runtime."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError, WaiterError

from emulator.emulator_helpers import read_object, runtime_client
from sagemaker_async import AsyncInferenceClient
from sagemaker_async.emulator import EndpointConfig, InferenceRequest, LocalAsyncEndpoint

ROLE = "arn:aws:iam::123456789012:role/sagemaker-execution"
FAST = {"Delay": 1, "MaxAttempts": 30}


def sagemaker(emu: LocalAsyncEndpoint) -> Any:
    """A plain boto3 ``sagemaker`` client aimed at the emulator."""
    return boto3.client(
        "sagemaker",
        endpoint_url=emu.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


async def call(function: Callable[..., Any], **kwargs: Any) -> Any:
    """boto3 blocks: run it in a thread so the emulator (on this loop) can answer."""
    return await asyncio.to_thread(function, **kwargs)


def async_config(bucket: str, concurrency: int = 2, **output: Any) -> dict[str, Any]:
    return {
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": concurrency},
        "OutputConfig": {
            "S3OutputPath": f"s3://{bucket}/out",
            "S3FailurePath": f"s3://{bucket}/failure",
            **output,
        },
    }


def variant(model: str, **extra: Any) -> list[dict[str, Any]]:
    return [
        {
            "VariantName": "AllTraffic",
            "ModelName": model,
            "InitialInstanceCount": 1,
            "InstanceType": "ml.m5.large",
            **extra,
        }
    ]


async def test_create_describe_invoke_update_list_delete(
    local_async_endpoint_factory: Any, aws: dict[str, Any]
) -> None:
    # Long enough that "Creating" and "too early" hold on a loaded machine (0.3 s failed once
    # with four test workers on two cores, 1.5 s with four agents' suites on them).
    emu = await local_async_endpoint_factory([], deployment_seconds=6.0)
    sm = sagemaker(emu)
    suffix = uuid.uuid4().hex[:8]
    bucket = f"cp-{suffix}"
    await aws["s3"].create_bucket(Bucket=bucket)
    topic = (await aws["sns"].create_topic(Name=f"cp-ok-{suffix}"))["TopicArn"]
    queue = (await aws["sqs"].create_queue(QueueName=f"cp-ok-{suffix}"))["QueueUrl"]
    queue_arn = (
        await aws["sqs"].get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    )["Attributes"]["QueueArn"]
    await aws["sns"].subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )

    model_arn = (
        await call(
            sm.create_model,
            ModelName="m-echo",
            PrimaryContainer={"Image": "echo"},
            ExecutionRoleArn=ROLE,
        )
    )["ModelArn"]
    assert model_arn == "arn:aws:sagemaker:us-east-1:123456789012:model/m-echo"
    await call(
        sm.create_endpoint_config,
        EndpointConfigName="c-echo",
        ProductionVariants=variant("m-echo"),
        AsyncInferenceConfig=async_config(
            bucket, concurrency=3, NotificationConfig={"SuccessTopic": topic}
        ),
    )
    arn = (await call(sm.create_endpoint, EndpointName="cp-ep", EndpointConfigName="c-echo"))[
        "EndpointArn"
    ]
    assert arn == "arn:aws:sagemaker:us-east-1:123456789012:endpoint/cp-ep"
    first = await call(sm.describe_endpoint, EndpointName="cp-ep")
    assert first["EndpointStatus"] == "Creating"
    async with runtime_client(emu) as runtime:
        with pytest.raises(ClientError, match="not found"):
            await runtime.invoke_endpoint_async(EndpointName="cp-ep", Body=b"too early")

    await call(sm.get_waiter("endpoint_in_service").wait, EndpointName="cp-ep", WaiterConfig=FAST)
    described = await call(sm.describe_endpoint, EndpointName="cp-ep")
    assert described["EndpointStatus"] == "InService"
    assert described["EndpointConfigName"] == "c-echo"
    assert described["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"] == f"s3://{bucket}/out"
    assert described["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    assert described["ProductionVariants"][0]["DeployedImages"][0]["SpecifiedImage"] == "echo"
    assert emu.stats("cp-ep").concurrency == 3

    # The runtime serves it with the config's paths and notification.
    async with runtime_client(emu) as runtime:
        answer = await runtime.invoke_endpoint_async(EndpointName="cp-ep", Body=b"via control")
    assert answer["OutputLocation"].startswith(f"s3://{bucket}/out/")
    assert answer["FailureLocation"].startswith(f"s3://{bucket}/failure/")
    await emu.join()
    assert (await read_object(aws["s3"], answer["OutputLocation"]))[0] == b"via control"
    messages = await aws["sqs"].receive_message(QueueUrl=queue, WaitTimeSeconds=5)
    notice = json.loads(messages["Messages"][0]["Body"])
    assert notice["inferenceId"] == answer["InferenceId"]
    assert notice["responseParameters"]["outputLocation"] == answer["OutputLocation"]

    # Our client gets a result through it.
    session = get_session()
    session.set_credentials(*emu.credentials)
    async with AsyncInferenceClient(
        session=session,
        region_name=emu.region,
        endpoint_url=emu.url,
        s3_endpoint_url=emu.s3_endpoint_url,
    ) as client:
        handle = await client.invoke_endpoint_async("cp-ep", body=b"our client")
        assert (await handle.result(timeout=30)).body == b"our client"

    # UpdateEndpoint: Updating, then the new config serves (a new model, no S3FailurePath).
    await call(sm.create_model, ModelName="m-sent", PrimaryContainer={"Image": "sentiment"})
    await call(
        sm.create_endpoint_config,
        EndpointConfigName="c-sent",
        ProductionVariants=variant("m-sent", InitialInstanceCount=2),
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": f"s3://{bucket}/v2"}},
    )
    await call(sm.update_endpoint, EndpointName="cp-ep", EndpointConfigName="c-sent")
    assert (await call(sm.describe_endpoint, EndpointName="cp-ep"))["EndpointStatus"] == "Updating"
    with pytest.raises(ClientError) as refused:
        await call(sm.update_endpoint, EndpointName="cp-ep", EndpointConfigName="c-echo")
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    await call(sm.get_waiter("endpoint_in_service").wait, EndpointName="cp-ep", WaiterConfig=FAST)
    updated = await call(sm.describe_endpoint, EndpointName="cp-ep")
    assert updated["EndpointConfigName"] == "c-sent"
    assert emu.stats("cp-ep").concurrency == 2 * 4  # the default per instance
    async with runtime_client(emu) as runtime:
        answer = await runtime.invoke_endpoint_async(
            EndpointName="cp-ep", Body=b'{"inputs": "I love it"}', ContentType="application/json"
        )
    assert "FailureLocation" not in answer
    assert answer["OutputLocation"].startswith(f"s3://{bucket}/v2/")
    await emu.join()
    body, _ = await read_object(aws["s3"], answer["OutputLocation"])
    assert json.loads(body)[0]["label"] == "POSITIVE"

    listed = await call(sm.list_endpoints, NameContains="cp-")
    assert [e["EndpointName"] for e in listed["Endpoints"]] == ["cp-ep"]
    assert listed["Endpoints"][0]["EndpointStatus"] == "InService"

    # DeleteEndpoint: Deleting, then gone (the waiter's success is a ValidationException).
    await call(sm.delete_endpoint, EndpointName="cp-ep")
    assert (await call(sm.describe_endpoint, EndpointName="cp-ep"))["EndpointStatus"] == "Deleting"
    async with runtime_client(emu) as runtime:
        with pytest.raises(ClientError, match="not found"):
            await runtime.invoke_endpoint_async(EndpointName="cp-ep", Body=b"too late")
    await call(sm.get_waiter("endpoint_deleted").wait, EndpointName="cp-ep", WaiterConfig=FAST)
    with pytest.raises(ClientError) as gone:
        await call(sm.describe_endpoint, EndpointName="cp-ep")
    assert gone.value.response["Error"]["Code"] == "ValidationException"
    assert (await call(sm.list_endpoints, NameContains="cp-"))["Endpoints"] == []
    await call(sm.delete_endpoint_config, EndpointConfigName="c-echo")
    await call(sm.delete_model, ModelName="m-echo")
    sm.close()


async def test_an_image_the_emulator_cannot_run_ends_failed(
    local_async_endpoint_factory: Any,
) -> None:
    emu = await local_async_endpoint_factory([], deployment_seconds=0.05, time_scale=0.01)
    sm = sagemaker(emu)
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-model:latest"
    await call(sm.create_model, ModelName="ecr", PrimaryContainer={"Image": image})
    await call(
        sm.create_endpoint_config,
        EndpointConfigName="ecr",
        ProductionVariants=variant("ecr"),
        AsyncInferenceConfig=async_config("any-bucket"),
    )
    await call(sm.create_endpoint, EndpointName="ecr", EndpointConfigName="ecr")
    with pytest.raises(WaiterError):
        await call(sm.get_waiter("endpoint_in_service").wait, EndpointName="ecr", WaiterConfig=FAST)
    described = await call(sm.describe_endpoint, EndpointName="ecr")
    assert described["EndpointStatus"] == "Failed"
    assert image in described["FailureReason"]
    assert "images=" in described["FailureReason"]

    # A container that never answers /ping: the service's health-check failure.
    await call(sm.create_model, ModelName="down", PrimaryContainer={"Image": "http://127.0.0.1:9"})
    await call(
        sm.create_endpoint_config,
        EndpointConfigName="down",
        ProductionVariants=variant("down", ContainerStartupHealthCheckTimeoutInSeconds=60),
        AsyncInferenceConfig=async_config("any-bucket"),
    )
    await call(sm.create_endpoint, EndpointName="down", EndpointConfigName="down")
    with pytest.raises(WaiterError):
        await call(
            sm.get_waiter("endpoint_in_service").wait, EndpointName="down", WaiterConfig=FAST
        )
    reason = (await call(sm.describe_endpoint, EndpointName="down"))["FailureReason"]
    assert "did not pass the ping health check" in reason
    assert "http://127.0.0.1:9" in reason
    sm.close()


async def test_images_map_a_real_image_uri_to_a_local_model(
    local_async_endpoint_factory: Any, aws: dict[str, Any]
) -> None:
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/upper:1"

    def upper(request: InferenceRequest) -> bytes:
        return request.payload.upper()

    emu = await local_async_endpoint_factory([], deployment_seconds=0.05, images={image: upper})
    sm = sagemaker(emu)
    await call(sm.create_model, ModelName="upper", PrimaryContainer={"Image": image})
    await call(
        sm.create_endpoint_config,
        EndpointConfigName="upper",
        ProductionVariants=variant("upper"),
        AsyncInferenceConfig={"OutputConfig": {}},  # default paths: the emulator's bucket
    )
    await call(sm.create_endpoint, EndpointName="upper", EndpointConfigName="upper")
    await call(sm.get_waiter("endpoint_in_service").wait, EndpointName="upper", WaiterConfig=FAST)
    async with runtime_client(emu) as runtime:
        answer = await runtime.invoke_endpoint_async(EndpointName="upper", Body=b"shout")
    await emu.join()
    assert (await read_object(aws["s3"], answer["OutputLocation"]))[0] == b"SHOUT"
    sm.close()


async def test_errors_and_the_emulators_own_endpoints(
    local_async_endpoint_factory: Any,
) -> None:
    emu = await local_async_endpoint_factory(
        [EndpointConfig("static", model="echo", max_concurrent_invocations_per_instance=7)],
        deployment_seconds=5,
    )
    sm = sagemaker(emu)
    static = await call(sm.describe_endpoint, EndpointName="static")
    assert static["EndpointStatus"] == "InService"
    concurrency = static["AsyncInferenceConfig"]["ClientConfig"]
    assert concurrency["MaxConcurrentInvocationsPerInstance"] == 7
    config = await call(sm.describe_endpoint_config, EndpointConfigName="static")
    assert config["ProductionVariants"][0]["ModelName"] == "static"
    assert (await call(sm.describe_model, ModelName="static"))["PrimaryContainer"][
        "Image"
    ] == "echo"

    def code(function: Callable[..., Any], **kwargs: Any) -> str:
        try:
            function(**kwargs)
        except ClientError as exc:
            return str(exc.response["Error"]["Code"])
        raise AssertionError("no error")

    assert await asyncio.to_thread(code, sm.describe_endpoint, EndpointName="nope") == (
        "ValidationException"
    )
    assert (
        await asyncio.to_thread(
            code, sm.create_endpoint, EndpointName="static", EndpointConfigName="static"
        )
        == "ValidationException"
    )
    assert (
        await asyncio.to_thread(
            code, sm.create_endpoint, EndpointName="x", EndpointConfigName="no-config"
        )
        == "ValidationException"
    )
    assert (
        await asyncio.to_thread(
            code,
            sm.create_endpoint_config,
            EndpointConfigName="orphan",
            ProductionVariants=variant("no-model"),
        )
        == "ValidationException"
    )
    assert (
        await asyncio.to_thread(
            code, sm.create_model, ModelName="static", PrimaryContainer={"Image": "echo"}
        )
        == "ValidationException"
    )
    # Creating: UpdateEndpoint is refused until InService.
    await call(sm.create_endpoint, EndpointName="slow", EndpointConfigName="static")
    assert (
        await asyncio.to_thread(
            code, sm.update_endpoint, EndpointName="slow", EndpointConfigName="static"
        )
        == "ValidationException"
    )
    names = {
        e["EndpointName"]: e["EndpointStatus"] for e in (await call(sm.list_endpoints))["Endpoints"]
    }
    assert names == {"static": "InService", "slow": "Creating"}
    # An action the emulator does not serve goes to the embedded moto, never to AWS.
    assert (await call(sm.list_training_jobs))["TrainingJobSummaries"] == []
    sm.close()


async def test_the_env_points_the_sagemaker_client_here(
    local_async_endpoint_env: LocalAsyncEndpoint,
) -> None:
    assert (
        local_async_endpoint_env.env["AWS_ENDPOINT_URL_SAGEMAKER"] == local_async_endpoint_env.url
    )

    def describe() -> str:
        client = boto3.client("sagemaker")
        try:
            return str(client.describe_endpoint(EndpointName="echo")["EndpointStatus"])
        finally:
            client.close()

    assert await asyncio.to_thread(describe) == "InService"


async def test_a_bad_signature_is_refused(local_async_endpoint: LocalAsyncEndpoint) -> None:
    client = boto3.client(
        "sagemaker",
        endpoint_url=local_async_endpoint.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="wrong",
    )
    with pytest.raises(ClientError) as info:
        await call(client.list_endpoints)
    assert info.value.response["Error"]["Code"] == "InvalidSignatureException"
    client.close()
