"""EmbeddedS3 counts S3 requests by kind and path; the emulator works over any S3 URL."""

from __future__ import annotations

import uuid
from typing import Any

import aiobotocore.session

from emulator.emulator_helpers import client_kwargs, read_object, runtime_client
from sagemaker_async.emulator import EmbeddedS3, EndpointConfig, LocalAsyncEndpoint


async def test_counts_by_kind_and_prefix(embedded_s3: EmbeddedS3, aws: dict[str, Any]) -> None:
    s3 = aws["s3"]
    bucket = f"counts-{uuid.uuid4().hex[:8]}"
    await s3.create_bucket(Bucket=bucket)
    embedded_s3.reset_counts()
    await s3.put_object(Bucket=bucket, Key="a/1.out", Body=b"1")
    await s3.put_object(Bucket=bucket, Key="b/2.out", Body=b"2")
    await s3.head_object(Bucket=bucket, Key="a/1.out")
    await s3.get_object(Bucket=bucket, Key="a/1.out")
    await s3.list_objects_v2(Bucket=bucket, Prefix="a/")
    await s3.list_objects_v2(Bucket=bucket, Prefix="b/")
    await s3.get_bucket_location(Bucket=bucket)
    await aws["sqs"].list_queues()
    counts = embedded_s3.counts()
    assert {k: counts[k] for k in ("GET", "HEAD", "LIST", "PUT", "OTHER")} == {
        "GET": 1,
        "HEAD": 1,
        "LIST": 2,
        "PUT": 2,
        "OTHER": 1,
    }
    assert counts["sqs"] == 1
    assert embedded_s3.counts(f"{bucket}/a/") == {
        "GET": 1,
        "HEAD": 1,
        "LIST": 1,
        "PUT": 1,
        "OTHER": 0,
        "total": 4,
    }
    # several prefixes (an endpoint's output and failure paths), as bucket/key or s3:// URIs
    assert embedded_s3.counts(f"s3://{bucket}/a/", f"{bucket}/b/") == {
        "GET": 1,
        "HEAD": 1,
        "LIST": 2,
        "PUT": 2,
        "OTHER": 0,
        "total": 6,
    }
    by_path = embedded_s3.counts_by_path()
    assert by_path[f"{bucket}/b/2.out"] == {"PUT": 1}
    assert by_path[f"{bucket}/b/"] == {"LIST": 1}
    embedded_s3.reset_counts()
    assert embedded_s3.counts()["total"] == 0


async def test_requests_per_inference_on_the_server_side(
    local_async_endpoint: LocalAsyncEndpoint, embedded_s3: EmbeddedS3
) -> None:
    emu = local_async_endpoint
    embedded_s3.reset_counts()
    async with runtime_client(emu) as client:
        for _ in range(3):
            await client.invoke_endpoint_async(EndpointName="echo", Body=b"x")
    await emu.join()
    # The emulator itself writes one output object per inference, and reads nothing inline.
    assert embedded_s3.counts("sagemaker-async-emulator/echo/")["PUT"] == 3


def test_sync_use_and_own_port() -> None:
    server = EmbeddedS3()
    assert not server.running
    server.start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.start() is server  # idempotent
    finally:
        server.stop()
    server.stop()
    assert not server.running


async def test_emulator_over_another_s3_endpoint(moto_url: str) -> None:
    """Any S3 endpoint works: here the moto server of the project's conftest."""
    bucket = f"external-{uuid.uuid4().hex[:8]}"
    session = aiobotocore.session.get_session()
    async with session.create_client("s3", **client_kwargs(moto_url)) as s3:
        await s3.create_bucket(Bucket=bucket)  # as on AWS: the emulator creates only its own
    async with LocalAsyncEndpoint(
        [EndpointConfig("ext", s3_output_path=f"s3://{bucket}/out/")],
        s3_endpoint_url=moto_url,
    ) as emu:
        assert emu.embedded_s3 is None
        assert emu.env["AWS_ENDPOINT_URL_S3"] == moto_url
        async with runtime_client(emu) as client:
            response = await client.invoke_endpoint_async(EndpointName="ext", Body=b"over moto")
        await emu.join()
        assert response["OutputLocation"].startswith(f"s3://{bucket}/out/")
        async with session.create_client("s3", **client_kwargs(moto_url)) as s3:
            assert (await read_object(s3, response["OutputLocation"]))[0] == b"over moto"
