"""FastAPI integration: one :class:`AsyncInferenceClient` per app, handed to routes.

Install with ``pip install "sagemaker-async[fastapi]"``. The lifespan opens one client when
the app starts and closes it when the app stops; every request shares it (and its connection
pool and completion engine) through the :data:`InferenceClient` dependency::

    from fastapi import FastAPI
    from sagemaker_async.fastapi import InferenceClient, client_lifespan

    app = FastAPI(lifespan=client_lifespan(region_name="us-east-1"))

    @app.post("/predict")
    async def predict(payload: dict, client: InferenceClient) -> dict:
        handle = await client.invoke_endpoint_async("my-endpoint", body=json.dumps(payload))
        return (await handle.result(timeout=60)).json()

With a lifespan of your own, either pass it (``client_lifespan(lifespan=yours)``: it runs
inside, with the client already open) or open the client in it with
``async with open_client(app): ...``. See docs/fastapi.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, TypeVar, overload

try:
    from fastapi import Depends
    from fastapi.requests import HTTPConnection
    from starlette.applications import Starlette
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "sagemaker_async.fastapi needs FastAPI: pip install 'sagemaker-async[fastapi]'"
    ) from exc

from ._client import AsyncInferenceClient

__all__ = [
    "STATE_ATTRIBUTE",
    "ClientFactory",
    "InferenceClient",
    "client_lifespan",
    "get_client",
    "open_client",
]

#: The attribute of ``app.state`` that holds the app's client while its lifespan runs.
STATE_ATTRIBUTE = "sagemaker_async_client"

#: Makes the app's client: called once per lifespan, inside the running event loop.
ClientFactory = Callable[[], AsyncInferenceClient]

_AppT = TypeVar("_AppT", bound=Starlette)
_StateT = TypeVar("_StateT")

_NO_CLIENT = (
    "no AsyncInferenceClient is open for this app: create the app with "
    "FastAPI(lifespan=client_lifespan(...)) (or open one with "
    "'async with open_client(app)' inside your own lifespan), and run it with its lifespan "
    "(uvicorn does; in tests use 'with TestClient(app)' or asgi-lifespan's LifespanManager)"
)


def _make_client(
    factory: ClientFactory | None, client_kwargs: dict[str, Any]
) -> AsyncInferenceClient:
    if factory is None:
        return AsyncInferenceClient(**client_kwargs)
    client = factory()
    if not isinstance(client, AsyncInferenceClient):
        raise TypeError(
            f"the client factory returned a {type(client).__name__}, "
            "expected an AsyncInferenceClient"
        )
    return client


def _check_arguments(factory: ClientFactory | None, client_kwargs: dict[str, Any]) -> None:
    if factory is not None and client_kwargs:
        raise TypeError(
            "pass either factory= or AsyncInferenceClient keyword arguments "
            f"({', '.join(sorted(client_kwargs))}), not both"
        )
    if factory is not None and not callable(factory):
        raise TypeError(f"factory must be callable, got a {type(factory).__name__}")


@asynccontextmanager
async def open_client(
    app: Starlette, *, factory: ClientFactory | None = None, **client_kwargs: Any
) -> AsyncIterator[AsyncInferenceClient]:
    """Open the app's client for the duration of the ``async with`` block.

    Use it inside a lifespan of your own; while the block runs, :func:`get_client` (and so
    :data:`InferenceClient`) hands the client to the app's routes. On exit the client leaves
    ``app.state`` first, then is closed (handles still pending stay resumable elsewhere with
    ``client.resume(handle.to_dict())``).

    Args:
        app: the FastAPI (or Starlette) application.
        factory: makes the client (called once, here); it is closed on exit like one made
            from ``client_kwargs``.
        client_kwargs: keyword arguments of :class:`AsyncInferenceClient` (not with
            ``factory``); none: the standard AWS configuration.

    Raises:
        TypeError: both ``factory`` and keyword arguments, or the factory made no client.
        RuntimeError: the app already has an open client.
    """
    _check_arguments(factory, client_kwargs)
    if getattr(app.state, STATE_ATTRIBUTE, None) is not None:
        raise RuntimeError(
            "this app already has an open AsyncInferenceClient (is client_lifespan or "
            "open_client used twice?): one client serves the whole app"
        )
    client = _make_client(factory, client_kwargs)
    async with client:
        setattr(app.state, STATE_ATTRIBUTE, client)
        try:
            yield client
        finally:
            # Requests arriving after shutdown get get_client's clear error, not a closed client.
            delattr(app.state, STATE_ATTRIBUTE)


@overload
def client_lifespan(
    *, factory: ClientFactory | None = None, lifespan: None = None, **client_kwargs: Any
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]: ...


@overload
def client_lifespan(
    *,
    factory: ClientFactory | None = None,
    lifespan: Callable[[_AppT], AbstractAsyncContextManager[_StateT]],
    **client_kwargs: Any,
) -> Callable[[_AppT], AbstractAsyncContextManager[_StateT]]: ...


def client_lifespan(
    *,
    factory: ClientFactory | None = None,
    lifespan: Callable[[Any], AbstractAsyncContextManager[Any]] | None = None,
    **client_kwargs: Any,
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """A lifespan for ``FastAPI(lifespan=...)`` that opens one client for the app.

    The client is opened when the app starts (an error there fails the start-up) and closed
    when it stops. ``lifespan``, a lifespan of your own, runs inside: the client is already
    open when it starts and still open when it ends, and the state it yields (if any) is
    passed on unchanged.

    Args:
        factory: makes the client, once per start-up (e.g. ``lambda:
            AsyncInferenceClient(polling=PollingConfig(max_delay=5))``).
        lifespan: your own lifespan, run inside this one.
        client_kwargs: keyword arguments of :class:`AsyncInferenceClient` (not with
            ``factory``); none: the standard AWS configuration.

    Raises:
        TypeError: both ``factory`` and keyword arguments were given.
    """
    _check_arguments(factory, client_kwargs)

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[Any]:
        async with open_client(app, factory=factory, **client_kwargs):
            if lifespan is None:
                yield None
            else:
                async with lifespan(app) as state:
                    yield state

    return run


def get_client(connection: HTTPConnection) -> AsyncInferenceClient:
    """The app's client: a FastAPI dependency (see :data:`InferenceClient`).

    It serves the routes of the app whose lifespan opened the client, routers included (a
    mounted sub-application is an app of its own).

    Raises:
        RuntimeError: no client is open for the app: the app was made without
            :func:`client_lifespan` or :func:`open_client`, or runs without its lifespan.
    """
    client = getattr(connection.app.state, STATE_ATTRIBUTE, None)
    if not isinstance(client, AsyncInferenceClient):
        raise RuntimeError(_NO_CLIENT)
    return client


#: A route parameter annotated ``client: InferenceClient`` receives the app's client.
InferenceClient = Annotated[AsyncInferenceClient, Depends(get_client)]
