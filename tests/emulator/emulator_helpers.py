"""Helpers shared by the emulator's tests, imported as emulator.emulator_helpers (tests/ is on
sys.path under pytest, as it is on mypy_path)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiobotocore.session

from sagemaker_async.emulator import LocalAsyncEndpoint


def client_kwargs(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "endpoint_url": url,
        "region_name": "us-east-1",
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        **extra,
    }


def runtime_client(emu: LocalAsyncEndpoint, **extra: Any) -> Any:
    """An unmodified aiobotocore sagemaker-runtime client aimed at the emulator."""
    session = aiobotocore.session.get_session()
    return session.create_client("sagemaker-runtime", **client_kwargs(emu.url, **extra))


def split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


async def read_object(s3: Any, uri: str) -> tuple[bytes, str]:
    bucket, key = split(uri)
    response = await s3.get_object(Bucket=bucket, Key=key)
    async with response["Body"] as stream:
        return await stream.read(), response["ContentType"]


async def object_exists(s3: Any, uri: str) -> bool:
    bucket, key = split(uri)
    try:
        await s3.head_object(Bucket=bucket, Key=key)
    except Exception:
        return False
    return True


async def wait_until(predicate: Any, timeout: float = 15.0) -> None:
    """Poll a sync predicate until true; the timeout only guards against hangs."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
