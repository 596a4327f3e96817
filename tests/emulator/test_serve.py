"""The emulator as a process: serve(), shell exports, and a clean shutdown."""

from __future__ import annotations

import asyncio
import io
import shlex
from pathlib import Path
from typing import Any

import pytest

from emulator.emulator_helpers import read_object, runtime_client
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
    assert f"export HTTPS_PROXY={emu.refusing_proxy.url}" in lines
    exported = dict(shlex.split(line)[1].split("=", 1) for line in lines if "=" in line)
    assert exported["NO_PROXY"].split(",")[:2] == ["127.0.0.1", "localhost"]
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


def test_the_env_fixture_isolates_from_the_users_aws_config_and_stays_local(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """A user's profile, config file and ignore-endpoints setting must not reach the fixture's
    clients; any AWS service called through the environment is served on 127.0.0.1 (the proxy
    settings point at a closed port: a request to a real AWS address would fail)."""
    config = tmp_path / "config"
    config.write_text("[profile dev]\nregion = eu-west-1\nendpoint_url = https://example.invalid\n")
    pytester.makepyfile(
        test_user="""
import asyncio

import boto3


def calls() -> None:
    runtime = boto3.client("sagemaker-runtime")
    answer = runtime.invoke_endpoint_async(EndpointName="echo", Body=b"hi")
    assert answer["OutputLocation"].startswith("s3://")
    # Services the emulator does not serve itself go to the embedded moto, not to AWS.
    assert boto3.client("sts").get_caller_identity()["Account"]
    boto3.client("cloudwatch").put_metric_data(
        Namespace="app", MetricData=[{"MetricName": "m", "Value": 1.0}]
    )


async def test_calls_stay_local(local_async_endpoint_env):
    await asyncio.to_thread(calls)  # the emulator serves on this loop
"""
    )
    pytester.makeini("[pytest]\nasyncio_mode = auto\n")
    env = {
        "AWS_PROFILE": "dev",
        "AWS_CONFIG_FILE": str(config),
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true",
        "AWS_SESSION_TOKEN": "a-real-looking-token",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("bound", "url_host"),
    [("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("127.0.0.1", "127.0.0.1"), ("::1", "[::1]")],
)
def test_urls_name_an_address_clients_can_connect_to(bound: str, url_host: str) -> None:
    from sagemaker_async.emulator._s3 import connectable_host

    assert connectable_host(bound) == url_host


async def test_a_client_that_hard_codes_an_aws_host_is_refused_at_once(
    local_async_endpoint_env: LocalAsyncEndpoint,
) -> None:
    import os

    import boto3
    from botocore.config import Config
    from botocore.exceptions import ProxyConnectionError

    emu = local_async_endpoint_env
    proxy = emu.refusing_proxy
    # Checked first: without the proxy the call below would try to leave the machine.
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        assert os.environ[name] == proxy.url
    assert "127.0.0.1" in os.environ["NO_PROXY"].split(",")

    def sdk_like_sts() -> ProxyConnectionError:
        # What the SageMaker Python SDK does: an STS client with an explicit AWS host.
        sts = boto3.client(
            "sts",
            endpoint_url="https://sts.us-east-1.amazonaws.com",
            config=Config(retries={"max_attempts": 1}),
        )
        try:
            sts.get_caller_identity()
        except ProxyConnectionError as exc:
            return exc
        finally:
            sts.close()
        raise AssertionError("the call went through")

    refused = await asyncio.to_thread(sdk_like_sts)
    assert "Refused by the sagemaker-async emulator" in str(refused.kwargs["error"])
    assert "sts.us-east-1.amazonaws.com:443" in proxy.refused

    def local_calls() -> str:
        runtime = boto3.client("sagemaker-runtime")  # 127.0.0.1: not through the proxy
        try:
            return str(runtime.invoke_endpoint_async(EndpointName="echo", Body=b"x")["InferenceId"])
        finally:
            runtime.close()

    assert await asyncio.to_thread(local_calls)
    await emu.join()
    assert emu.stats("echo").completed == 1
    assert set(proxy.refused) == {"sts.us-east-1.amazonaws.com:443"}  # nothing else went there
