"""sagemaker_async.fastapi, the example service and docs/fastapi.md, against the emulator.

Apps run with their lifespan (asgi-lifespan) and are called through httpx's ASGI transport;
one test runs the example under uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import re
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request
from starlette.applications import Starlette

from sagemaker_async import AsyncInferenceClient, PollingConfig
from sagemaker_async.emulator import EndpointConfig, InferenceRequest, LocalAsyncEndpoint
from sagemaker_async.emulator import ModelError as EmulatedModelError
from sagemaker_async.fastapi import (
    STATE_ATTRIBUTE,
    InferenceClient,
    client_lifespan,
    get_client,
    open_client,
)

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "fastapi_app.py"
DOC = ROOT / "docs" / "fastapi.md"
TOKEN_KEY = "a-key-every-worker-shares"
EXCERPT = "# from examples/fastapi_app.py\n"
FAST = PollingConfig(initial_delay=0.05, max_delay=0.5, jitter=0.1)


def fast_client() -> AsyncInferenceClient:
    return AsyncInferenceClient(polling=FAST)


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastapi_app", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = load_example()


async def slow_failure(request: InferenceRequest) -> bytes:
    await asyncio.sleep(1)
    raise EmulatedModelError("CUDA out of memory", 507)


@pytest.fixture
async def emulator(
    local_async_endpoint_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> LocalAsyncEndpoint:
    """The emulator's endpoints, and the AWS_* variables (and the example's key) pointing at it."""
    emu: LocalAsyncEndpoint = await local_async_endpoint_factory(
        [
            EndpointConfig("echo", model="echo", max_concurrent_invocations_per_instance=50),
            EndpointConfig("slow", model="sleep:1"),
            EndpointConfig("fail", model="fail"),
            EndpointConfig("slow-fail", model=slow_failure),
            EndpointConfig("my-endpoint", model="echo"),  # the docs' name
        ]
    )
    for name in emu.UNSET_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in emu.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STATUS_TOKEN_KEY", TOKEN_KEY)
    monkeypatch.delenv("SAGEMAKER_ENDPOINT_NAME", raising=False)
    return emu


@asynccontextmanager
async def served(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` with its lifespan running, behind an httpx client."""
    async with LifespanManager(app, startup_timeout=None, shutdown_timeout=None) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


def make_app(monkeypatch: pytest.MonkeyPatch, endpoint: str, **options: Any) -> FastAPI:
    """The example, configured as in production: by the environment."""
    monkeypatch.setenv("SAGEMAKER_ENDPOINT_NAME", endpoint)
    app: FastAPI = example.create_app(**options)
    return app


async def follow(http: httpx.AsyncClient, response: httpx.Response) -> httpx.Response:
    """GET the status URL while the answer is 202 (each GET waits up to wait_seconds)."""
    for _ in range(300):
        if response.status_code != 202:
            return response
        assert response.json()["status"] == "pending"
        response = await http.get(response.headers["Location"])
    raise AssertionError("still pending after 300 status requests")


# -- the example service ---------------------------------------------------------------------


async def test_predict_answers_200_with_the_result_when_the_model_is_fast(
    emulator: LocalAsyncEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(make_app(monkeypatch, "echo", wait_seconds=60)) as http:
        response = await http.post("/predict", json={"inputs": "hello"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "succeeded" and body["result"] == {"inputs": "hello"}
    assert body["inference_id"]


async def test_a_slow_model_gets_202_then_the_status_url_gives_the_result(
    emulator: LocalAsyncEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(make_app(monkeypatch, "slow", wait_seconds=0.2)) as http:
        accepted = await http.post("/predict", json={"x": 1})  # the model takes 1 s
        assert accepted.status_code == 202, accepted.text
        body = accepted.json()
        assert body["status"] == "pending" and body["inference_id"]
        assert body["status_url"] == accepted.headers["Location"]
        assert body["status_url"].startswith("http://test/inferences/")
        assert accepted.headers["Retry-After"] == "1"
        done = await follow(http, accepted)
        # Read again: S3 still has it (a GET may time out pending on a loaded machine).
        again = await follow(http, await http.get(body["status_url"]))
    assert done.status_code == 200, done.text
    assert done.json() == {"inference_id": body["inference_id"], "status": "succeeded",
                           "result": {"x": 1}}  # fmt: skip
    assert again.status_code == 200 and again.json() == done.json()


async def test_the_status_url_resumes_after_a_worker_restart(
    emulator: LocalAsyncEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_app(monkeypatch, "slow", wait_seconds=0.2)
    async with served(first) as http:
        accepted = await http.post("/predict", json={"x": 2})
        client = getattr(first.state, STATE_ATTRIBUTE)
    assert accepted.status_code == 202, accepted.text
    assert client.closed and not hasattr(first.state, STATE_ATTRIBUTE)  # the worker is gone

    restarted = make_app(monkeypatch, "slow", wait_seconds=0.2)  # same environment, new app
    async with served(restarted) as http:
        done = await follow(http, await http.get(accepted.json()["status_url"]))
        assert getattr(restarted.state, STATE_ATTRIBUTE) is not client
    assert done.status_code == 200, done.text
    assert done.json()["result"] == {"x": 2}
    assert done.json()["inference_id"] == accepted.json()["inference_id"]
    assert emulator.stats("slow").received == 1  # resumed, not submitted again


async def test_without_a_token_key_status_urls_end_with_their_app(
    emulator: LocalAsyncEndpoint, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("STATUS_TOKEN_KEY")
    async with served(make_app(monkeypatch, "slow", wait_seconds=0.2)) as http:
        accepted = await http.post("/predict", json={"x": 3})
    assert "STATUS_TOKEN_KEY is not set" in caplog.text
    async with served(make_app(monkeypatch, "slow", wait_seconds=0.2)) as http:
        refused = await http.get(accepted.headers["Location"])
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["type"] == "invalid_id"


async def test_a_model_failure_is_a_502_with_the_models_message(
    emulator: LocalAsyncEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(make_app(monkeypatch, "fail", wait_seconds=60)) as http:
        failed = await http.post("/predict", json={"x": 1})
    assert failed.status_code == 502, failed.text
    body = failed.json()
    assert body["status"] == "failed" and body["inference_id"]
    assert body["error"]["type"] == "model_error"
    assert "always fails" in body["error"]["message"]


async def test_a_slow_model_failure_is_a_502_at_the_status_url(
    emulator: LocalAsyncEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each GET waits 0.2 s with the default PollingConfig: a resumed handle reads both of its
    # locations at once.
    app = make_app(monkeypatch, "slow-fail", wait_seconds=0.2)
    async with served(app) as http:
        accepted = await http.post("/predict", json={"x": 1})
        assert accepted.status_code == 202, accepted.text
        failed = await follow(http, accepted)
    assert failed.status_code == 502, failed.text
    assert failed.json()["error"]["type"] == "model_error"
    assert "CUDA out of memory" in failed.json()["error"]["message"]


def handle_state(
    endpoint: str, bucket: str = "sagemaker-async-emulator", **changes: Any
) -> dict[str, Any]:
    """A handle's saved state, as to_dict() writes it, for an inference that never ran (its
    locations are in ``bucket``, which must exist for a wait to find nothing, not an error)."""
    now = datetime.now(timezone.utc)
    state = {
        "version": 1,
        "inference_id": "never-ran",
        "endpoint_name": endpoint,
        "output_location": f"s3://{bucket}/{endpoint}/output/never-ran.out",
        "failure_location": f"s3://{bucket}/{endpoint}/failure/never-ran-error.out",
        "submitted_at": now.isoformat(),
        "deadline": (now + timedelta(hours=1)).isoformat(),
        "submit_attempts": 1,
    }
    state.update(changes)
    return state


async def test_status_urls_the_service_did_not_issue_are_400(
    emulator: LocalAsyncEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = example.StatusTokens(TOKEN_KEY.encode())
    bucket = emulator.endpoint("echo").output_path.split("/")[2]  # the emulator's own
    valid = ours.issue(handle_state("echo", bucket))
    signature = valid.partition(".")[2]
    elsewhere = handle_state("echo", output_location="s3://payroll/salaries.csv")
    encoded = base64.urlsafe_b64encode(json.dumps(elsewhere).encode()).rstrip(b"=").decode()
    bad = {
        "garbage": "not-a-token",
        "no signature": encoded,
        "empty signature": encoded + ".",
        "tampered": f"{encoded}.{signature}",
        "another key": example.StatusTokens(b"another key").issue(handle_state("echo")),
        "another endpoint": ours.issue(handle_state("slow")),
        "not a handle's state": ours.issue(handle_state("echo", deadline="tomorrow")),
        "not a dict": ours.issue([1, 2]),
    }
    async with served(make_app(monkeypatch, "echo", wait_seconds=0.2)) as http:
        answers = {name: await http.get(f"/inferences/{token}") for name, token in bad.items()}
        signed = await http.get(f"/inferences/{valid}")
    for name, response in answers.items():
        assert response.status_code == 400, (name, response.text)
        assert response.json()["error"]["type"] == "invalid_id", name
    assert signed.status_code == 202  # what this service signed is resumed (and still pending)
    assert emulator.stats("echo").received == 0


async def test_request_bodies_that_cannot_be_sent_are_refused(
    emulator: LocalAsyncEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with served(make_app(monkeypatch, "echo", wait_seconds=0.2)) as http:
        not_json = await http.post(
            "/predict", content=b"{oops", headers={"Content-Type": "application/json"}
        )
        not_an_object = await http.post("/predict", json=[1, 2])
        too_large = await http.post("/predict", json={"x": "a" * 128_001})
    assert not_json.status_code == 422 and not_an_object.status_code == 422
    assert too_large.status_code == 400, too_large.text
    assert too_large.json()["error"]["type"] == "invalid_request"
    assert "128000 bytes" in too_large.json()["error"]["message"]
    assert emulator.stats("echo").received == 0


async def test_a_burst_of_200_requests_is_served_by_one_client(
    emulator: LocalAsyncEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[AsyncInferenceClient] = []

    def factory() -> AsyncInferenceClient:
        opened.append(AsyncInferenceClient(polling=FAST))
        return opened[-1]

    app = make_app(monkeypatch, "echo", wait_seconds=120, client_factory=factory)
    async with served(app) as http:
        assert len(opened) == 1 and getattr(app.state, STATE_ATTRIBUTE) is opened[0]
        responses = await asyncio.gather(
            *(http.post("/predict", json={"i": i}) for i in range(200))
        )
        assert getattr(app.state, STATE_ATTRIBUTE) is opened[0]
    assert [r.status_code for r in responses] == [200] * 200
    assert [r.json()["result"] for r in responses] == [{"i": i} for i in range(200)]
    assert len({r.json()["inference_id"] for r in responses}) == 200
    assert len(opened) == 1 and opened[0].closed
    stats = emulator.stats("echo")
    assert stats.received == 200 and stats.completed == 200


def test_the_example_needs_an_endpoint_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAGEMAKER_ENDPOINT_NAME", raising=False)
    with pytest.raises(RuntimeError, match="SAGEMAKER_ENDPOINT_NAME"):
        example.create_app()


async def test_the_example_runs_under_uvicorn(
    emulator: LocalAsyncEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAGEMAKER_ENDPOINT_NAME", "echo")
    config = uvicorn.Config(
        example.create_app, factory=True, host="127.0.0.1", port=0, log_level="warning"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "uvicorn stopped during start-up"
            await asyncio.sleep(0.01)
        host, port = server.servers[0].sockets[0].getsockname()[:2]
        assert host == "127.0.0.1"
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", trust_env=False) as http:
            response = await http.post("/predict", json={"over": "tcp"}, timeout=60)
    finally:
        server.should_exit = True
        await serving
    assert response.status_code == 200, response.text
    assert response.json()["result"] == {"over": "tcp"}


# -- the helper itself -----------------------------------------------------------------------


def echo_app(**lifespan_options: Any) -> FastAPI:
    app = FastAPI(lifespan=client_lifespan(**lifespan_options))

    @app.post("/echo")
    async def echo(payload: dict[str, Any], client: InferenceClient) -> Any:
        handle = await client.invoke_endpoint_async(
            "echo", body=json.dumps(payload), content_type="application/json"
        )
        return (await handle.result(timeout=60)).json()

    return app


async def test_the_dependency_without_the_lifespan_is_a_clear_error(
    emulator: LocalAsyncEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    for app in (FastAPI(), echo_app(), make_app(monkeypatch, "echo")):

        @app.get("/client")
        async def client_route(client: InferenceClient) -> str:
            return repr(client)

        transport = httpx.ASGITransport(app=app)  # no lifespan: nothing opened a client
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            with pytest.raises(RuntimeError, match="no AsyncInferenceClient is open") as info:
                await http.get("/client")
            assert "client_lifespan" in str(info.value) and "LifespanManager" in str(info.value)
        quiet = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=quiet, base_url="http://test") as http:
            assert (await http.get("/client")).status_code == 500
    assert emulator.stats("echo").received == 0


async def test_client_kwargs_make_the_client_and_it_is_closed_at_shutdown(
    emulator: LocalAsyncEndpoint,
) -> None:
    app = echo_app(polling=FAST, max_connections=7)
    async with served(app) as http:
        client = getattr(app.state, STATE_ATTRIBUTE)
        assert isinstance(client, AsyncInferenceClient) and client.polling is FAST
        assert (await http.post("/echo", json={"k": "v"})).json() == {"k": "v"}
    assert client.closed and not hasattr(app.state, STATE_ATTRIBUTE)
    async with served(app) as http:  # a second run of the lifespan gets a new client
        assert getattr(app.state, STATE_ATTRIBUTE) is not client
        assert (await http.post("/echo", json={"k": 2})).json() == {"k": 2}


async def test_a_lifespan_of_ones_own_runs_inside_with_the_client_open(
    emulator: LocalAsyncEndpoint,
) -> None:
    seen: list[str] = []

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        client = getattr(app.state, STATE_ATTRIBUTE)
        seen.append(f"start, client closed: {client.closed}")
        yield {"greeting": "hello"}
        seen.append(f"end, client closed: {client.closed}")

    app = echo_app(lifespan=own)

    @app.get("/state")
    async def state(request: Request, client: InferenceClient) -> dict[str, Any]:
        return {"greeting": request.state.greeting, "same": client is get_client(request)}

    async with served(app) as http:
        assert (await http.get("/state")).json() == {"greeting": "hello", "same": True}
        assert (await http.post("/echo", json={"a": 1})).json() == {"a": 1}
    assert seen == ["start, client closed: False", "end, client closed: False"]


async def test_open_client_inside_ones_own_lifespan(emulator: LocalAsyncEndpoint) -> None:
    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[None]:
        async with open_client(app, factory=lambda: AsyncInferenceClient(polling=FAST)):
            yield

    app = FastAPI(lifespan=own)

    @app.get("/polling")
    async def polling(client: InferenceClient) -> float:
        return client.polling.max_delay

    async with served(app) as http:
        assert (await http.get("/polling")).json() == FAST.max_delay

    twice = echo_app(lifespan=own)  # client_lifespan around open_client: two clients
    with pytest.raises(RuntimeError, match="already has an open AsyncInferenceClient"):
        async with served(twice):
            pass
    assert not hasattr(twice.state, STATE_ATTRIBUTE)


async def test_factory_and_kwargs_are_checked(emulator: LocalAsyncEndpoint) -> None:
    with pytest.raises(TypeError, match="not both"):
        client_lifespan(factory=AsyncInferenceClient, region_name="us-east-1")
    with pytest.raises(TypeError, match="callable"):
        client_lifespan(factory="AsyncInferenceClient")  # type: ignore[call-overload]
    not_a_client: Any = lambda: "a client"  # noqa: E731
    app = FastAPI(lifespan=client_lifespan(factory=not_a_client))
    with pytest.raises(TypeError, match="returned a str"):
        async with served(app):
            pass


# -- docs/fastapi.md: every Python block runs ------------------------------------------------


def doc_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def run_block(index: int) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"docs_fastapi_{index}"}
    exec(compile(doc_blocks()[index], f"docs/fastapi.md block {index}", "exec"), namespace)
    return namespace


def test_every_python_block_of_the_doc_is_tested() -> None:
    blocks = doc_blocks()
    excerpts = [i for i, block in enumerate(blocks) if block.startswith(EXCERPT)]
    assert excerpts == EXCERPT_BLOCKS
    assert sorted({*excerpts, *RUN_BLOCKS}) == list(range(len(blocks)))


EXCERPT_BLOCKS = [3, 5]  # parts of examples/fastapi_app.py, which the tests above run
RUN_BLOCKS = [0, 1, 2, 4, 5, 6]


@pytest.mark.parametrize("index", EXCERPT_BLOCKS)
def test_doc_excerpts_are_the_examples_code(index: int) -> None:
    """An excerpt is a part of the file as it is (maybe indented, as in create_app()), after
    the file's own imports that it needs to run on its own."""
    lines = doc_blocks()[index].removeprefix(EXCERPT).splitlines(keepends=True)
    source = EXAMPLE.read_text()
    while lines and (lines[0].startswith(("import ", "from ")) or not lines[0].strip()):
        assert lines[0] in source.splitlines(keepends=True), lines[0]
        lines.pop(0)
    code = "".join(lines)
    assert code.count("\n") > 10
    assert code in source or textwrap.indent(code, "    ") in source


def test_doc_block_5_status_tokens_round_trip() -> None:
    tokens = run_block(5)["StatusTokens"](b"key")
    state = handle_state("echo")
    assert tokens.read(tokens.issue(state)) == state
    assert example.StatusTokens(b"key").issue(state) == tokens.issue(state)


async def test_doc_block_0_the_lifespan_and_the_dependency(emulator: LocalAsyncEndpoint) -> None:
    app = run_block(0)["app"]
    async with served(app) as http:
        response = await http.post("/predict", json={"x": 1})
    assert response.status_code == 200, response.text
    assert response.json()["output"] == {"x": 1} and response.json()["inference_id"]
    assert emulator.stats("my-endpoint").completed == 1


async def test_doc_block_1_a_lifespan_passed_in(emulator: LocalAsyncEndpoint) -> None:
    app = run_block(1)["app"]
    async with served(app) as http:
        assert getattr(app.state, STATE_ATTRIBUTE).polling.max_delay == 5
        response = await http.get("/health")
    assert response.json() == {"model_version": "2024-06", "s3": "ok"}


async def test_doc_block_2_open_client_in_ones_own_lifespan(emulator: LocalAsyncEndpoint) -> None:
    namespace = run_block(2)
    app = namespace["app"]
    async with served(app):
        client = getattr(app.state, STATE_ATTRIBUTE)
        assert namespace["pending_at_start"] == ["client open: True"]
    assert client.closed


async def test_doc_block_4_a_caller_follows_the_status_url(
    emulator: LocalAsyncEndpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    predict = run_block(4)["predict"]
    app = make_app(monkeypatch, "slow", wait_seconds=0.2, client_factory=fast_client)
    async with served(app) as http:
        response = await predict(http, {"x": 5})
    assert response.status_code == 200 and response.json()["result"] == {"x": 5}


async def test_doc_block_6_testing_your_app(emulator: LocalAsyncEndpoint) -> None:
    await run_block(6)["test_echo"](emulator)  # the fixture's echo endpoint and env
