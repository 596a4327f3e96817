"""The wire protocol of InvokeEndpointAsync, spoken by unmodified aiobotocore and boto3 clients."""

from __future__ import annotations

import asyncio
import re
import urllib.parse
import uuid
from typing import Any

import aiohttp
import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from emulator.emulator_helpers import object_exists, read_object, runtime_client, split
from sagemaker_async import ValidationError
from sagemaker_async.emulator import EndpointConfig, LocalAsyncEndpoint

UUID_KEY = re.compile(r"/[0-9a-f-]{36}\.out$")


async def test_inline_body_with_aiobotocore(
    local_async_endpoint: LocalAsyncEndpoint, aws: dict[str, Any]
) -> None:
    emu = local_async_endpoint
    async with runtime_client(emu) as client:
        response = await client.invoke_endpoint_async(
            EndpointName="echo", Body=b'{"x": 1}', ContentType="application/json"
        )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202
    uuid.UUID(response["InferenceId"])  # generated when none is given
    output, failure = response["OutputLocation"], response["FailureLocation"]
    assert output.startswith("s3://sagemaker-async-emulator/echo/output/")
    assert UUID_KEY.search(output)
    object_id = output.rsplit("/", 1)[1].removesuffix(".out")
    assert failure == f"s3://sagemaker-async-emulator/echo/failure/{object_id}-error.out"
    assert object_id != response["InferenceId"]
    await emu.join()
    body, content_type = await read_object(aws["s3"], output)
    assert body == b'{"x": 1}'
    assert content_type == "application/json"
    assert not await object_exists(aws["s3"], failure)


async def test_input_location_inference_id_extension_and_filename(
    local_async_endpoint: LocalAsyncEndpoint, aws: dict[str, Any]
) -> None:
    emu = local_async_endpoint
    s3 = aws["s3"]
    await s3.create_bucket(Bucket="wire-inputs")
    await s3.put_object(Bucket="wire-inputs", Key="in/payload.csv", Body=b"1,2,3")
    async with runtime_client(emu) as client:
        response = await client.invoke_endpoint_async(
            EndpointName="echo",
            InputLocation="s3://wire-inputs/in/payload.csv",
            ContentType="text/csv",
            Accept="text/csv",
            CustomAttributes="trace=abc",
            InferenceId="my-inference-1",
            S3OutputPathExtension="batch/7",
            Filename="result.csv",
            RequestTTLSeconds=600,
            InvocationTimeoutSeconds=30,
        )
    assert response["InferenceId"] == "my-inference-1"
    assert response["OutputLocation"] == (
        "s3://sagemaker-async-emulator/echo/output/batch/7/result.csv"
    )
    assert re.fullmatch(
        r"s3://sagemaker-async-emulator/echo/failure/[0-9a-f-]{36}-error\.out",
        response["FailureLocation"],
    )
    await emu.join()
    body, content_type = await read_object(s3, response["OutputLocation"])
    assert (body, content_type) == (b"1,2,3", "text/csv")


async def test_boto3_with_endpoint_url_and_with_env(
    local_async_endpoint: LocalAsyncEndpoint,
    aws: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emu = local_async_endpoint

    def with_endpoint_url() -> dict[str, Any]:
        client = boto3.client(
            "sagemaker-runtime",
            endpoint_url=emu.url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        try:
            response: dict[str, Any] = client.invoke_endpoint_async(
                EndpointName="echo", Body=b"from boto3"
            )
            return response
        finally:
            client.close()

    def with_env() -> dict[str, Any]:
        client = boto3.Session().client("sagemaker-runtime")
        try:
            response: dict[str, Any] = client.invoke_endpoint_async(
                EndpointName="echo", Body=b"from env"
            )
            return response
        finally:
            client.close()

    # boto3 blocks: run it in a thread so the emulator (on this loop) can answer.
    first = await asyncio.to_thread(with_endpoint_url)
    for name, value in emu.env.items():
        monkeypatch.setenv(name, value)
    second = await asyncio.to_thread(with_env)
    await emu.join()
    assert (await read_object(aws["s3"], first["OutputLocation"]))[0] == b"from boto3"
    assert (await read_object(aws["s3"], second["OutputLocation"]))[0] == b"from env"


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"Body": b"x", "RequestTTLSeconds": 59}, "RequestTTLSeconds"),
        ({"Body": b"x", "InvocationTimeoutSeconds": 3601}, "InvocationTimeoutSeconds"),
        ({"Body": b"x", "InputLocation": "s3://b/k"}, "both are given"),
        ({}, "neither is given"),
        ({"Body": b"x", "Filename": "a.b.c"}, "Filename"),
        ({"Body": b"x", "S3OutputPathExtension": "s3://nope"}, "S3OutputPathExtension"),
        ({"Body": b"x" * 128_001}, "128000"),
    ],
)
async def test_validation_errors(
    local_async_endpoint: LocalAsyncEndpoint, kwargs: dict[str, Any], words: str
) -> None:
    # botocore checks some rules itself: switch that off to see the server's answer.
    unchecked = Config(parameter_validation=False)
    async with runtime_client(local_async_endpoint, config=unchecked) as client:
        with pytest.raises(ClientError) as caught:
            await client.invoke_endpoint_async(EndpointName="echo", **kwargs)
    error = caught.value.response
    assert error["Error"]["Code"] == "ValidationError"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert words in error["Error"]["Message"]
    assert local_async_endpoint.stats("echo").received == 0


async def test_unknown_endpoint(local_async_endpoint: LocalAsyncEndpoint) -> None:
    async with runtime_client(local_async_endpoint) as client:
        with pytest.raises(ClientError) as caught:
            await client.invoke_endpoint_async(EndpointName="no-such-endpoint", Body=b"x")
    assert caught.value.response["Error"] == {
        "Code": "ValidationError",
        "Message": "Endpoint no-such-endpoint of account 123456789012 not found.",
    }


async def test_unsigned_request_is_rejected(local_async_endpoint: LocalAsyncEndpoint) -> None:
    async with runtime_client(
        local_async_endpoint, config=Config(signature_version=UNSIGNED)
    ) as client:
        with pytest.raises(ClientError) as caught:
            await client.invoke_endpoint_async(EndpointName="echo", Body=b"x")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert caught.value.response["Error"]["Code"] == "MissingAuthenticationTokenException"


async def test_wrong_secret_is_rejected(local_async_endpoint: LocalAsyncEndpoint) -> None:
    async with runtime_client(local_async_endpoint, aws_secret_access_key="wrong") as client:
        with pytest.raises(ClientError) as caught:
            await client.invoke_endpoint_async(EndpointName="echo", Body=b"x")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert local_async_endpoint.stats("echo").received == 0


async def test_wrong_access_key_and_region_are_rejected(
    local_async_endpoint: LocalAsyncEndpoint,
) -> None:
    async with runtime_client(local_async_endpoint, aws_access_key_id="AKIAOTHER") as client:
        with pytest.raises(ClientError) as caught:
            await client.invoke_endpoint_async(EndpointName="echo", Body=b"x")
    assert caught.value.response["Error"]["Code"] == "UnrecognizedClientException"
    async with runtime_client(local_async_endpoint, region_name="eu-west-1") as client:
        with pytest.raises(ClientError) as caught:
            await client.invoke_endpoint_async(EndpointName="echo", Body=b"x")
    assert caught.value.response["Error"]["Code"] == "InvalidSignatureException"


async def test_tampered_body_is_rejected(local_async_endpoint: LocalAsyncEndpoint) -> None:
    # Sign one body, send another: the payload hash is part of the signature.
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"{local_async_endpoint.url}/endpoints/echo/async-invocations"
    request = AWSRequest(method="POST", url=url, data=b"signed body")
    SigV4Auth(Credentials("testing", "testing"), "sagemaker", "us-east-1").add_auth(request)
    headers = dict(request.headers.items())
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=b"signed body", headers=headers) as good:
            assert good.status == 202
        async with http.post(url, data=b"other body", headers=headers) as bad:
            assert bad.status == 403
            assert bad.headers["x-amzn-ErrorType"] == "InvalidSignatureException"
            assert "signature" in (await bad.json())["message"]
    await local_async_endpoint.join()


async def test_custom_credentials_and_stats_route(
    local_async_endpoint_factory: Any, aws: dict[str, Any]
) -> None:
    emu = await local_async_endpoint_factory(
        [EndpointConfig("custom", model="echo")], credentials=("AKIDCUSTOM", "s3cr3t")
    )
    async with runtime_client(
        emu, aws_access_key_id="AKIDCUSTOM", aws_secret_access_key="s3cr3t"
    ) as client:
        response = await client.invoke_endpoint_async(EndpointName="custom", Body=b"ok")
    await emu.join()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{emu.url}/_emulator/endpoints/custom") as stats:
            assert stats.status == 200
            document = await stats.json()
        async with http.get(f"{emu.url}/_emulator/endpoints/nope") as missing:
            assert missing.status == 404
    assert document["name"] == "custom"
    assert document["received"] == document["completed"] == 1
    assert document["backlog"] == document["in_flight"] == document["failed"] == 0
    assert split(response["OutputLocation"])[1].startswith("custom/output/")


@pytest.mark.parametrize("ttl", ["+600", "6_00", "١٢٠", "9" * 12])
async def test_integer_headers_are_plain_digits(
    local_async_endpoint: LocalAsyncEndpoint, ttl: str
) -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"{local_async_endpoint.url}/endpoints/echo/async-invocations"
    headers = {"X-Amzn-SageMaker-RequestTTLSeconds": ttl}
    request = AWSRequest(method="POST", url=url, data=b"x", headers=headers)
    SigV4Auth(Credentials("testing", "testing"), "sagemaker", "us-east-1").add_auth(request)
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=b"x", headers=dict(request.headers.items())) as answer,
    ):
        assert answer.status == 400, await answer.text()
        assert answer.headers["x-amzn-ErrorType"] == "ValidationError"
    await local_async_endpoint.join()


async def _raw_post(url: str, headers: dict[str, str], body: bytes = b"") -> str:
    """Send a POST's headers (and ``body``, maybe less than Content-Length says); return the
    status line, or fail if the server waits for more instead of answering."""
    parsed = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
    lines = [f"POST {parsed.path} HTTP/1.1", f"Host: {parsed.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    try:
        status = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
    return status.decode()


async def test_an_unauthenticated_body_is_never_read(
    local_async_endpoint: LocalAsyncEndpoint,
) -> None:
    url = f"{local_async_endpoint.url}/endpoints/echo/async-invocations"
    # 8 MB announced, none sent: the answer must come from the headers alone.
    status = await _raw_post(url, {"Content-Length": "8000000"})
    assert " 403 " in status


async def test_a_body_over_the_limit_is_refused_before_it_is_read(
    local_async_endpoint: LocalAsyncEndpoint,
) -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"{local_async_endpoint.url}/endpoints/echo/async-invocations"
    request = AWSRequest(method="POST", url=url, data=b"x")
    SigV4Auth(Credentials("testing", "testing"), "sagemaker", "us-east-1").add_auth(request)
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
    status = await _raw_post(url, {**headers, "Content-Length": "8000000"})
    assert " 400 " in status  # ValidationError, as for the model's other rules


async def test_an_unsigned_payload_is_refused(local_async_endpoint: LocalAsyncEndpoint) -> None:
    """With UNSIGNED-PAYLOAD, a captured request could be replayed with any body."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"{local_async_endpoint.url}/endpoints/echo/async-invocations"
    request = AWSRequest(method="POST", url=url, data=b"signed")
    request.headers["X-Amz-Content-SHA256"] = "UNSIGNED-PAYLOAD"
    SigV4Auth(Credentials("testing", "testing"), "sagemaker", "us-east-1").add_auth(request)
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=b"any other body", headers=dict(request.headers.items())) as answer,
    ):
        assert answer.status == 403
        assert "UNSIGNED-PAYLOAD" in (await answer.json())["message"]


async def test_synchronous_invocations_get_the_services_answer(
    local_async_endpoint: LocalAsyncEndpoint,
) -> None:
    """An async endpoint takes only InvokeEndpointAsync: the others get a ValidationError."""
    async with runtime_client(local_async_endpoint) as client:
        for call in (client.invoke_endpoint, client.invoke_endpoint_with_response_stream):
            with pytest.raises(ClientError) as caught:
                await call(EndpointName="echo", Body=b"x")
            error = caught.value.response
            assert error["Error"]["Code"] == "ValidationError"
            assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
            assert "can only receive asynchronous invocations" in error["Error"]["Message"]
    assert local_async_endpoint.stats("echo").received == 0


async def test_throttling_and_faults_can_be_injected(
    local_async_endpoint_factory: Any,
) -> None:
    """Users test their retry handling: a burst limit answers ThrottlingException, a fault
    rate answers 503 ServiceUnavailable; neither request is queued."""
    emu = await local_async_endpoint_factory(
        [
            EndpointConfig("limited", model="echo", throttle_rate=0.001, throttle_burst=2),
            EndpointConfig("flaky", model="echo", fault_rate=1.0),
        ]
    )
    async with runtime_client(emu, config=Config(retries={"total_max_attempts": 1})) as client:
        for _ in range(2):
            await client.invoke_endpoint_async(EndpointName="limited", Body=b"x")
        with pytest.raises(ClientError) as throttled:
            await client.invoke_endpoint_async(EndpointName="limited", Body=b"x")
        assert throttled.value.response["Error"]["Code"] == "ThrottlingException"
        assert throttled.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        with pytest.raises(ClientError) as failed:
            await client.invoke_endpoint_async(EndpointName="flaky", Body=b"x")
        assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert emu.stats("limited").received == 2
    assert emu.stats("flaky").received == 0
    with pytest.raises(ValidationError):
        EndpointConfig("bad", fault_rate=1.5)
