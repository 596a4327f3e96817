"""Shared fixtures: a real moto server on 127.0.0.1, fake credentials, no AWS contact."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from moto.server import ThreadedMotoServer

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request access log

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture(autouse=True, scope="session")
def _fake_aws_env() -> Iterator[None]:
    """Fake credentials; no config file, profile or endpoint from the machine leaks in."""
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith("AWS_"):
            del os.environ[key]
    os.environ.update(FAKE_ENV)
    os.environ["AWS_CONFIG_FILE"] = os.devnull
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    yield
    os.environ.clear()
    os.environ.update(saved)


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def moto_url(_fake_aws_env: None) -> Iterator[str]:
    """URL of a moto server (S3, SQS, SNS, sagemaker-runtime stub) on 127.0.0.1."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
async def moto_admin(moto_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP session for moto's /moto-api/ admin calls."""
    async with aiohttp.ClientSession(base_url=moto_url) as session:
        yield session


@pytest.fixture
def fast_polling():  # type: ignore[no-untyped-def]
    from sagemaker_async import PollingConfig

    return PollingConfig(initial_delay=0.02, max_delay=0.1, jitter=0.01)


@pytest.fixture
async def client(moto_url: str, fast_polling):  # type: ignore[no-untyped-def]
    """A client on the moto server, polling fast, retrying fast."""
    from sagemaker_async import AsyncInferenceClient, RetryConfig

    async with AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=moto_url,
        s3_endpoint_url=moto_url,
        polling=fast_polling,
        retry=RetryConfig(initial_delay=0.01, max_delay=0.05, jitter=0.0),
        input_prefix="s3://sagemaker-async-inputs/in/",
    ) as c:
        yield c


async def set_moto_results(admin: aiohttp.ClientSession, *results: tuple[str, bool]) -> None:
    """Queue what moto's InvokeEndpointAsync stub writes next: (data, is_failure) pairs."""
    resp = await admin.post(
        "/moto-api/static/sagemaker/async-endpoint-results",
        json={
            "results": [{"data": d, "is_failure": f} for d, f in results],
            "region": "us-east-1",
        },
    )
    assert resp.status in (200, 201), await resp.text()


def other_tasks() -> set[object]:
    import asyncio

    return asyncio.all_tasks() - {asyncio.current_task()}
