"""pytest fixtures for the SageMaker async emulator (registered as a ``pytest11`` entry point).

Fixtures:

- ``embedded_s3`` (session): an :class:`~sagemaker_async.emulator.EmbeddedS3` (moto) on
  127.0.0.1; its request counts are reset before each test that asks for ``embedded_s3_counts``.
- ``local_async_endpoint_factory``: ``await factory(endpoints=[...], **options)`` starts a
  :class:`~sagemaker_async.emulator.LocalAsyncEndpoint` over ``embedded_s3``; every one started
  is closed after the test.
- ``local_async_endpoint``: one emulator serving an ``echo`` endpoint named ``"echo"``.
- ``local_async_endpoint_env``: ``local_async_endpoint``, with its :attr:`env` set in
  ``os.environ`` for the test: fake credentials, and every AWS service on 127.0.0.1; the
  user's profile, config files and session token are kept out, and the proxy variables point
  at a local proxy that refuses whatever would leave the machine.

Loading the plugin is cheap: moto, aiobotocore and the emulator are imported inside the
fixtures only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

try:
    from pytest_asyncio import fixture as _async_fixture
except ImportError:  # pragma: no cover
    # Installed everywhere the package is: never break a pytest run that lacks pytest-asyncio.
    # (The async fixtures then need it, and say so when used.)
    _async_fixture = pytest.fixture  # type: ignore[assignment]

if TYPE_CHECKING:
    from ._config import EndpointConfig
    from ._local import LocalAsyncEndpoint
    from ._s3 import EmbeddedS3

__all__ = [
    "embedded_s3",
    "local_async_endpoint",
    "local_async_endpoint_env",
    "local_async_endpoint_factory",
]

#: ``await factory(endpoints, **LocalAsyncEndpoint options)``
EndpointFactory = Callable[..., Awaitable["LocalAsyncEndpoint"]]


@pytest.fixture(scope="session")
def embedded_s3() -> Iterator[EmbeddedS3]:
    """A moto server (S3, SQS, SNS) on 127.0.0.1 for the whole session, counting S3 requests."""
    from ._s3 import EmbeddedS3

    with EmbeddedS3() as server:
        yield server


@_async_fixture
async def local_async_endpoint_factory(
    embedded_s3: EmbeddedS3,
) -> AsyncIterator[EndpointFactory]:
    """Start emulators over ``embedded_s3`` (unless ``s3_endpoint_url=`` is given); closes them."""
    from ._local import LocalAsyncEndpoint

    started: list[LocalAsyncEndpoint] = []

    async def factory(
        endpoints: list[EndpointConfig | str] | None = None, **options: Any
    ) -> LocalAsyncEndpoint:
        options.setdefault("s3_endpoint_url", embedded_s3.url)
        emulator = LocalAsyncEndpoint(endpoints if endpoints is not None else [], **options)
        await emulator.start()
        started.append(emulator)
        return emulator

    try:
        yield factory
    finally:
        for emulator in reversed(started):
            await emulator.aclose()


@_async_fixture
async def local_async_endpoint(
    local_async_endpoint_factory: EndpointFactory,
) -> LocalAsyncEndpoint:
    """An emulator serving one ``echo`` endpoint named ``"echo"``, over ``embedded_s3``."""
    from ._config import EndpointConfig

    return await local_async_endpoint_factory([EndpointConfig("echo", model="echo")])


@pytest.fixture
def local_async_endpoint_env(
    local_async_endpoint: LocalAsyncEndpoint, monkeypatch: pytest.MonkeyPatch
) -> LocalAsyncEndpoint:
    """``local_async_endpoint`` with its ``env`` (endpoint URLs, fake keys) in ``os.environ``."""
    for name in local_async_endpoint.UNSET_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in local_async_endpoint.env.items():
        monkeypatch.setenv(name, value)
    return local_async_endpoint
