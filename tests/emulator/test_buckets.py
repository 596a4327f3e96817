"""No bucket appears by magic: a missing bucket or input object means no output, as on AWS."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from emulator.emulator_helpers import object_exists, read_object, runtime_client
from sagemaker_async.emulator import DEFAULT_BUCKET, EmbeddedS3, EndpointConfig


async def _empty_and_delete(s3: Any, bucket: str) -> None:
    listing = await s3.list_objects_v2(Bucket=bucket)
    for item in listing.get("Contents", []):
        await s3.delete_object(Bucket=bucket, Key=item["Key"])
    await s3.delete_bucket(Bucket=bucket)


async def _bucket_exists(s3: Any, bucket: str) -> bool:
    try:
        await s3.head_bucket(Bucket=bucket)
    except ClientError:
        return False
    return True


async def test_a_deleted_output_bucket_is_not_recreated(
    local_async_endpoint_factory: Any, aws: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    s3 = aws["s3"]
    bucket = f"gone-{uuid.uuid4().hex[:8]}"
    await s3.create_bucket(Bucket=bucket)
    emu = await local_async_endpoint_factory(
        [
            EndpointConfig(
                "gone",
                s3_output_path=f"s3://{bucket}/out",
                s3_failure_path=f"s3://{bucket}/failure",
            )
        ]
    )
    async with runtime_client(emu) as client:
        first = await client.invoke_endpoint_async(EndpointName="gone", Body=b"one")
        await emu.join()
        assert (await read_object(s3, first["OutputLocation"]))[0] == b"one"
        await _empty_and_delete(s3, bucket)
        with caplog.at_level(logging.WARNING, logger="sagemaker_async.emulator"):
            second = await client.invoke_endpoint_async(EndpointName="gone", Body=b"two")
            await emu.join()
    assert not await _bucket_exists(s3, bucket)
    assert not await object_exists(s3, second["OutputLocation"])
    stats = emu.stats("gone")
    assert (stats.completed, stats.failed, stats.output_unwritable) == (1, 0, 1)
    assert any(
        "NoSuchBucket" in record.getMessage() and second["InferenceId"] in record.getMessage()
        for record in caplog.records
    ), [r.getMessage() for r in caplog.records]


async def test_a_missing_input_object_gives_no_output_and_no_failure(
    local_async_endpoint: Any, aws: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    emu = local_async_endpoint
    location = f"s3://{DEFAULT_BUCKET}/missing/{uuid.uuid4().hex}"
    with caplog.at_level(logging.WARNING, logger="sagemaker_async.emulator"):
        async with runtime_client(emu) as client:
            response = await client.invoke_endpoint_async(
                EndpointName="echo", InputLocation=location
            )
        await emu.join()
    assert not await object_exists(aws["s3"], response["OutputLocation"])
    assert not await object_exists(aws["s3"], response["FailureLocation"])
    stats = emu.stats("echo")
    assert (stats.completed, stats.failed, stats.input_unreadable) == (0, 0, 1)
    assert any(location in record.getMessage() for record in caplog.records)


async def test_an_input_in_a_missing_bucket_gives_no_output(
    local_async_endpoint: Any, aws: dict[str, Any]
) -> None:
    emu = local_async_endpoint
    async with runtime_client(emu) as client:
        response = await client.invoke_endpoint_async(
            EndpointName="echo", InputLocation=f"s3://no-such-{uuid.uuid4().hex[:8]}/in.json"
        )
    await emu.join()
    assert not await object_exists(aws["s3"], response["FailureLocation"])
    assert emu.stats("echo").input_unreadable == 1


async def test_start_creates_only_the_default_bucket(
    local_async_endpoint_factory: Any, aws: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    bucket = f"absent-{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.WARNING, logger="sagemaker_async.emulator"):
        await local_async_endpoint_factory(
            [
                EndpointConfig("default-paths"),
                EndpointConfig("own", s3_output_path=f"s3://{bucket}/o"),
            ]
        )
    assert await _bucket_exists(aws["s3"], DEFAULT_BUCKET)
    assert not await _bucket_exists(aws["s3"], bucket)
    assert any(bucket in record.getMessage() for record in caplog.records)


async def test_missing_keys_answer_403_without_list_bucket(
    embedded_s3: EmbeddedS3, aws: dict[str, Any]
) -> None:
    s3 = aws["s3"]
    bucket = f"private-{uuid.uuid4().hex[:8]}"
    await s3.create_bucket(Bucket=bucket)
    await s3.put_object(Bucket=bucket, Key="there", Body=b"x")
    with embedded_s3.without_list_bucket():
        for call in (s3.head_object, s3.get_object):
            with pytest.raises(ClientError) as info:
                await call(Bucket=bucket, Key="not-there")
            assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        with pytest.raises(ClientError) as info:
            await s3.get_object(Bucket=bucket, Key="not-there")
        assert info.value.response["Error"]["Code"] == "AccessDenied"
        with pytest.raises(ClientError) as info:
            await s3.list_objects_v2(Bucket=bucket)
        assert info.value.response["Error"]["Code"] == "AccessDenied"
        assert (await read_object(s3, f"s3://{bucket}/there"))[0] == b"x"  # reads still work
    with pytest.raises(ClientError) as info:
        await s3.head_object(Bucket=bucket, Key="not-there")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert (await s3.list_objects_v2(Bucket=bucket))["KeyCount"] == 1
