"""Shared fixtures: a real moto server on 127.0.0.1, fake credentials, no AWS contact."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

if TYPE_CHECKING:
    from sagemaker_async import AsyncInferenceClient, PollingConfig

pytest_plugins = ["pytester"]  # to run README's plugin example as a user's test file

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


@pytest.fixture(scope="session")
def moto_url(_fake_aws_env: None, embedded_s3: Any) -> str:
    """URL of the session's moto server (S3, SQS, SNS, sagemaker-runtime stub) on 127.0.0.1.

    It is the emulator plugin's ``embedded_s3``, which counts requests server-side.
    """
    url: str = embedded_s3.url
    return url


@pytest.fixture
async def aws(moto_url: str) -> AsyncIterator[dict[str, Any]]:
    """Raw aiobotocore S3, SNS and SQS clients on the session's moto server."""
    import aiobotocore.session

    session = aiobotocore.session.get_session()
    options: dict[str, Any] = {"endpoint_url": moto_url, "region_name": "us-east-1"}
    async with (
        session.create_client("s3", **options) as s3,
        session.create_client("sns", **options) as sns,
        session.create_client("sqs", **options) as sqs,
    ):
        yield {"s3": s3, "sns": sns, "sqs": sqs}


@pytest.fixture
async def moto_admin(moto_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP session for moto's /moto-api/ admin calls."""
    async with aiohttp.ClientSession(base_url=moto_url) as session:
        yield session


@pytest.fixture
def fast_polling() -> PollingConfig:
    from sagemaker_async import PollingConfig

    return PollingConfig(initial_delay=0.02, max_delay=0.1, jitter=0.01)


@pytest.fixture
async def client(moto_url: str, fast_polling: PollingConfig) -> AsyncIterator[AsyncInferenceClient]:
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
