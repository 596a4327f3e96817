"""The emulator as a process: serve(), shell exports, and a clean shutdown."""

from __future__ import annotations

import asyncio
import io
import shlex
from typing import Any

from emulator_helpers import read_object, runtime_client

from sagemaker_async.emulator import LocalAsyncEndpoint, serve, shell_exports


def test_shell_exports_quotes_values() -> None:
    text = shell_exports({"A": "http://127.0.0.1:1", "B": "it's"})
    assert text == "export A=http://127.0.0.1:1\nexport B='it'\"'\"'s'\n"
    assert shlex.split(text.splitlines()[1]) == ["export", "B=it's"]


async def test_serve_prints_exports_and_stops_on_cancel(
    embedded_s3: Any, aws: dict[str, Any]
) -> None:
    out = io.StringIO()
    ready: asyncio.Future[LocalAsyncEndpoint] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(
            ["svc=echo"],
            stdout=out,
            on_ready=ready.set_result,
            s3_endpoint_url=embedded_s3.url,
            port=0,
        )
    )
    emu = await asyncio.wait_for(ready, 30)
    lines = out.getvalue().splitlines()
    assert f"export AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME={emu.url}" in lines
    assert f"export AWS_ENDPOINT_URL_S3={embedded_s3.url}" in lines
    for name in ("SQS", "SNS"):
        assert f"export AWS_ENDPOINT_URL_{name}={embedded_s3.url}" in lines
    assert "export AWS_DEFAULT_REGION=us-east-1" in lines
    assert "export AWS_ACCESS_KEY_ID=testing" in lines
    async with runtime_client(emu) as client:
        response = await client.invoke_endpoint_async(EndpointName="svc", Body=b"served")
    await emu.join()
    assert (await read_object(aws["s3"], response["OutputLocation"]))[0] == b"served"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def test_aclose_leaves_no_tasks(embedded_s3: Any) -> None:
    before = asyncio.all_tasks()
    emu = LocalAsyncEndpoint(
        ["a=sleep:10", "b=echo"], s3_endpoint_url=embedded_s3.url, time_scale=0.5
    )
    await emu.start()
    async with runtime_client(emu) as client:
        await client.invoke_endpoint_async(EndpointName="a", Body=b"x")
    await emu.aclose()
    await emu.aclose()  # idempotent
    assert asyncio.all_tasks() == before


async def test_env_fixture_points_sdks_here(local_async_endpoint_env: LocalAsyncEndpoint) -> None:
    import os

    import boto3

    assert os.environ["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] == local_async_endpoint_env.url

    def invoke() -> str:
        client = boto3.client("sagemaker-runtime")
        try:
            return str(client.invoke_endpoint_async(EndpointName="echo", Body=b"x")["InferenceId"])
        finally:
            client.close()

    assert await asyncio.to_thread(invoke)
    await local_async_endpoint_env.join()
    assert local_async_endpoint_env.stats("echo").completed == 1
