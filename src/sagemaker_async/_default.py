"""The top-level ``invoke_endpoint_async``: a default client per event loop.

The default client is built from the standard AWS configuration (environment variables such as
``AWS_DEFAULT_REGION`` and ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` / ``AWS_ENDPOINT_URL_S3``, the
active profile, the credential chain). It is created on first use in each event loop and
closed when that loop shuts down its async generators, which ``asyncio.run()`` (and every
``asyncio.Runner``) does on exit; :func:`aclose_default_client` closes it earlier.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncGenerator
from typing import Any

from ._client import AsyncInferenceClient
from ._handle import AsyncInferenceHandle

__all__ = ["aclose_default_client", "default_client", "invoke_endpoint_async"]

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncInferenceClient] = (
    weakref.WeakKeyDictionary()
)
_closers: weakref.WeakKeyDictionary[AsyncInferenceClient, AsyncGenerator[None, None]] = (
    weakref.WeakKeyDictionary()
)


async def _close_at_loop_shutdown(
    loop: asyncio.AbstractEventLoop, client: AsyncInferenceClient
) -> AsyncGenerator[None, None]:
    # The loop runs this generator's finally in shutdown_asyncgens(): a loop-exit hook.
    try:
        yield
    finally:
        if _clients.get(loop) is client:
            del _clients[loop]  # the values would keep their keys alive: forget both
        _closers.pop(client, None)
        await client.aclose()


async def default_client() -> AsyncInferenceClient:
    """The current event loop's default client, created (and opened) on first use."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.closed:
        client = AsyncInferenceClient()
        _clients[loop] = client
        closer = _close_at_loop_shutdown(loop, client)
        await closer.__anext__()
        _closers[client] = closer  # a strong reference: a collected generator would close early
    await client.open()
    return client


async def aclose_default_client() -> None:
    """Close the current event loop's default client, if it has one."""
    client = _clients.get(asyncio.get_running_loop())
    if client is not None:
        closer = _closers.get(client)
        if closer is not None:
            await closer.aclose()  # runs its finally: forgets and closes the client
        await client.aclose()


async def invoke_endpoint_async(endpoint_name: str, **kwargs: Any) -> AsyncInferenceHandle:
    """Submit one inference on the current event loop's default client.

    Takes the arguments of :meth:`AsyncInferenceClient.invoke_endpoint_async`.

    The default client lives as long as the running event loop (see this module's notes).
    """
    client = await default_client()
    return await client.invoke_endpoint_async(endpoint_name, **kwargs)
