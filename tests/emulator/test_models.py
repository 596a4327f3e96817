"""Built-in models, the spec resolver, and a real model container over HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from emulator.emulator_helpers import read_object, runtime_client
from sagemaker_async import ValidationError
from sagemaker_async.emulator import (
    ContainerModel,
    EndpointConfig,
    InferenceRequest,
    LocalAsyncEndpoint,
    parse_endpoint_spec,
    resolve_model,
)
from sagemaker_async.emulator._models import call_model


def request(payload: bytes, content_type: str | None = None) -> InferenceRequest:
    return InferenceRequest(
        payload=payload,
        content_type=content_type,
        accept=None,
        custom_attributes="secret-attr",
        inference_id="i-1",
    )


async def test_resolve_model_specs() -> None:
    assert await call_model(resolve_model("echo"), request(b"a", "text/plain")) == (
        b"a",
        "text/plain",
    )
    with pytest.raises(Exception, match="always fails"):
        await call_model(resolve_model("fail"), request(b"a"))
    assert (await call_model(resolve_model("sleep:0.01"), request(b"zz")))[0] == b"zz"
    assert isinstance(resolve_model("http://127.0.0.1:9/"), ContainerModel)
    for bad in ("nope", "sleep:", "sleep:-1", "sleep:inf"):
        with pytest.raises(ValidationError, match=r"^model: .*rule: "):
            resolve_model(bad)
    assert "secret-attr" not in repr(request(b"payload"))
    assert "payload" not in repr(request(b"payload")).replace("payload=", "")


async def test_sentiment_model_is_a_real_classifier() -> None:
    model = resolve_model("sentiment")
    body, content_type = await call_model(
        model,
        request(
            json.dumps(
                {"inputs": ["I love it, great and fast", "terrible, broken, awful"]}
            ).encode(),
            "application/json",
        ),
    )
    assert content_type == "application/json"
    positive, negative = json.loads(body)
    assert positive["label"] == "POSITIVE" and positive["score"] > 0.9
    assert negative["label"] == "NEGATIVE" and negative["score"] > 0.9
    (negated,) = json.loads((await call_model(model, request(b"not good", "text/plain")))[0])
    assert negated["label"] == "NEGATIVE"
    with pytest.raises(Exception, match="not valid JSON"):
        await call_model(model, request(b"{oops", "application/json"))


def test_parse_endpoint_spec() -> None:
    config = parse_endpoint_spec("my-ep=sleep:0.5", instance_count=2)
    assert (config.name, config.model, config.instance_count) == ("my-ep", "sleep:0.5", 2)
    assert parse_endpoint_spec("plain").model == "echo"
    assert config.output_path() == "s3://sagemaker-async-emulator/my-ep/output"
    with pytest.raises(ValidationError, match=r"^EndpointConfig\.name: 'bad_name'"):
        parse_endpoint_spec("bad_name=echo")
    with pytest.raises(ValidationError, match=r"^model: 'unknown' is not a model spec"):
        parse_endpoint_spec("ep=unknown")
    with pytest.raises(ValueError, match=r"1\.\.1000"):
        EndpointConfig("ep", max_concurrent_invocations_per_instance=0)


@pytest.fixture
async def container() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A tiny model container (SageMaker contract) on 127.0.0.1."""
    calls: list[dict[str, Any]] = []

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="")

    async def invocations(request: web.Request) -> web.Response:
        body = await request.read()
        calls.append(
            {
                "content_type": request.headers.get("Content-Type"),
                "accept": request.headers.get("Accept"),
                "custom": request.headers.get("X-Amzn-SageMaker-Custom-Attributes"),
            }
        )
        if body == b"crash":
            return web.Response(status=500, text="container exploded")
        return web.json_response({"length": len(body)})

    app = web.Application()
    app.router.add_get("/ping", ping)
    app.router.add_post("/invocations", invocations)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", calls
    finally:
        await runner.cleanup()


async def test_container_model(
    container: tuple[str, list[dict[str, Any]]],
    local_async_endpoint_factory: Any,
    aws: dict[str, Any],
) -> None:
    url, calls = container
    emu: LocalAsyncEndpoint = await local_async_endpoint_factory([f"container={url}"])
    async with runtime_client(emu) as client:
        ok = await client.invoke_endpoint_async(
            EndpointName="container",
            Body=b"12345",
            ContentType="text/plain",
            Accept="application/json",
            CustomAttributes="trace=1",
        )
        crash = await client.invoke_endpoint_async(EndpointName="container", Body=b"crash")
    await emu.join()
    body, content_type = await read_object(aws["s3"], ok["OutputLocation"])
    assert json.loads(body) == {"length": 5}
    assert content_type.startswith("application/json")
    assert calls[0] == {
        "content_type": "text/plain",
        "accept": "application/json",
        "custom": "trace=1",
    }
    text, _ = await read_object(aws["s3"], crash["FailureLocation"])
    assert b"Received server error (500) from model" in text
    assert b"container exploded" in text


async def test_container_that_fails_ping_stops_startup(embedded_s3: Any) -> None:
    async def unhealthy(request: web.Request) -> web.Response:
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/ping", unhealthy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    model = ContainerModel(f"http://{host}:{port}", ping_timeout=0.3)
    emulator = LocalAsyncEndpoint(
        [EndpointConfig("sick", model=model)], s3_endpoint_url=embedded_s3.url
    )
    try:
        with pytest.raises(RuntimeError, match="/ping"):
            await emulator.start()
    finally:
        await emulator.aclose()
        await runner.cleanup()
    await asyncio.sleep(0)


async def test_an_unreachable_container_is_one_clear_error(
    local_async_endpoint_factory: Any, aws: dict[str, Any]
) -> None:
    from sagemaker_async import SageMakerAsyncError
    from sagemaker_async.emulator import ContainerUnavailableError

    # At start: a SageMakerAsyncError, which the CLI prints as one line (no traceback).
    with pytest.raises(ContainerUnavailableError, match="did not pass GET /ping") as info:
        await ContainerModel("http://127.0.0.1:9", ping_timeout=0.2).start()
    assert isinstance(info.value, SageMakerAsyncError)

    # During inference: a container that went away gives a failure that says so.
    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ping", ping)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    emu = await local_async_endpoint_factory(
        [EndpointConfig("gone", model=f"http://{host}:{port}")]
    )
    await runner.cleanup()  # the container stops after the endpoint started
    async with runtime_client(emu) as client:
        response = await client.invoke_endpoint_async(EndpointName="gone", Body=b"x")
    await emu.join()
    text, _ = await read_object(aws["s3"], response["FailureLocation"])
    assert f"the model container http://{host}:{port} could not be reached".encode() in text
