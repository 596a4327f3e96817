"""Fixtures for the emulator's tests: raw AWS SDK clients on the plugin's embedded S3."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiobotocore.session
import pytest

from emulator.emulator_helpers import client_kwargs

# The fixtures embedded_s3, local_async_endpoint(_factory, _env) come from the plugin
# sagemaker_async.emulator.pytest_plugin, registered as a pytest11 entry point. Do not re-import
# them here: a second session-scoped embedded_s3 would split the suite across two servers.


@pytest.fixture
async def aws(embedded_s3: Any) -> AsyncIterator[dict[str, Any]]:
    """Raw aiobotocore S3, SNS and SQS clients on the embedded moto server."""
    session = aiobotocore.session.get_session()
    async with (
        session.create_client("s3", **client_kwargs(embedded_s3.url)) as s3,
        session.create_client("sns", **client_kwargs(embedded_s3.url)) as sns,
        session.create_client("sqs", **client_kwargs(embedded_s3.url)) as sqs,
    ):
        yield {"s3": s3, "sns": sns, "sqs": sqs}
