"""Observability: client.stats() checked against the servers' own counts, structured log
records, hooks, OpenTelemetry spans and metrics (the SDK's in-memory exporters), and the saved
state of a handle (HandleState).

Every request goes to a real server on 127.0.0.1: moto (S3, SQS, SNS, the sagemaker-runtime
stub) or the emulator; the S3 and SQS requests are counted by the moto server itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime, timezone
from typing import Any

import aiobotocore.session
import aiohttp
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from sagemaker_async import (
    AsyncInferenceClient,
    ClientStats,
    CompletionConfig,
    HandleState,
    Hooks,
    InferenceFailedError,
    InferenceStatus,
    InferenceTimeoutError,
    InvocationError,
    NotificationConfig,
    OutcomeEvent,
    PollingConfig,
    RetryConfig,
    SubmitEvent,
    TelemetryConfig,
    ValidationError,
)
from sagemaker_async.emulator import (
    ERROR_NOTIFICATION_TOPIC,
    SUCCESS_NOTIFICATION_TOPIC,
    EndpointConfig,
)
from support import THROTTLE, faults, set_moto_results

FAST = PollingConfig(initial_delay=0.02, max_delay=0.1, jitter=0.0)
RETRY = RetryConfig(initial_delay=0.01, max_delay=0.05, jitter=0.0)
WAIT = 20.0  # guards against hangs only
SECRET = "s3cr3t-payload-marker"  # must never show in a record, an event or a span


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def unique_input() -> str:
    return f"s3://inputs/{uuid.uuid4()}"  # moto's stub answers each new input anew


@pytest.fixture
async def s3(moto_url: str) -> AsyncIterator[Any]:
    session = aiobotocore.session.get_session()
    async with session.create_client("s3", endpoint_url=moto_url, region_name="us-east-1") as c:
        yield c


async def new_bucket(s3: Any) -> str:
    bucket = f"obs-{uuid.uuid4().hex[:12]}"
    await s3.create_bucket(Bucket=bucket)
    return bucket


def state_in(bucket: str, *, timeout: float = 3600.0) -> HandleState:
    """A pending inference's saved state, its locations in ``bucket``."""
    name = uuid.uuid4().hex
    now = datetime.now(timezone.utc).timestamp()
    return {
        "version": 1,
        "inference_id": name,
        "endpoint_name": "ep",
        "output_location": f"s3://{bucket}/out/{name}.out",
        "failure_location": f"s3://{bucket}/fail/{name}-error.out",
        "submitted_at": iso(now),
        "deadline": iso(now + timeout),
        "submit_attempts": 1,
    }


async def put(s3: Any, uri: str, body: bytes) -> None:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    await s3.put_object(Bucket=bucket, Key=key, Body=body)


def moto_client(moto_url: str, **options: Any) -> AsyncInferenceClient:
    options.setdefault("polling", FAST)
    options.setdefault("retry", RETRY)
    return AsyncInferenceClient(
        region_name="us-east-1", endpoint_url=moto_url, s3_endpoint_url=moto_url, **options
    )


async def until(check: Any, timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        assert loop.time() < end, "condition not reached in time"
        await asyncio.sleep(0.01)


# -- client.stats() against the server's counts ---------------------------------------------
@pytest.mark.parametrize("strategy", ["poll", "list"])
async def test_stats_count_s3_requests_and_outcomes_as_the_server_does(
    s3: Any, moto_url: str, embedded_s3: Any, strategy: str
) -> None:
    """Exact counts need requests that are never cut short: when an inference ends, a read
    still under way for it alone is cancelled, and may or may not have reached S3. So the
    objects are there before the wait, each watch reads one location at a time, and the
    counts are compared once the engine is idle."""
    bucket = await new_bucket(s3)
    completion = CompletionConfig(strategy="poll" if strategy == "poll" else "list")
    async with moto_client(moto_url, completion=completion) as client:
        assert client.stats() == ClientStats(
            in_flight=0,
            submitted=0,
            submit_failed=0,
            duplicate_submissions=0,
            resumed=0,
            succeeded=0,
            failed=0,
            timed_out=0,
            cancelled=0,
            retries=0,
            resolved_by={},
            s3_requests={},
            sqs_requests={},
            sns_requests={},
            sagemaker_requests={},
        )
        states = [state_in(bucket) for _ in range(6)]
        for state in states[:4]:
            if strategy == "poll":
                state["failure_location"] = None  # one location: one read at a time
            await put(s3, state["output_location"], b'{"ok": true}')
        failing = states[4:] if strategy == "list" else []
        for state in failing:
            failure = state["failure_location"]
            assert failure is not None
            await put(s3, failure, b"ModelError")
        handles = [client.resume(state) for state in states[: 4 + len(failing)]]
        waits = asyncio.gather(*handles, return_exceptions=True)
        assert client.stats().in_flight == 0  # nobody waits yet
        await asyncio.sleep(0)
        assert client.stats().in_flight == len(handles)
        outcomes = await asyncio.wait_for(waits, WAIT)
        await until(lambda: client._engine.scheduler.idle)
        stats = client.stats()
        server = embedded_s3.counts(f"{bucket}/")
    assert [type(o).__name__ for o in outcomes] == ["InferenceResult"] * 4 + [
        "InferenceFailedError"
    ] * len(failing)
    assert (stats.in_flight, stats.resumed) == (0, len(handles))
    assert (stats.succeeded, stats.failed, stats.timed_out) == (4, len(failing), 0)
    source = {"poll": "polling", "list": "listing"}[strategy]
    assert stats.resolved_by == {source: len(handles)}
    for kind in ("GET", "HEAD", "LIST"):
        assert stats.s3_requests.get(kind, 0) == server[kind], (kind, stats, server)
    assert server["GET"] >= len(handles)
    assert (server["LIST"] > 0) == (strategy == "list")


async def test_stats_count_submissions_retries_and_duplicates(
    local_async_endpoint_factory: Any,
) -> None:
    emulator = await local_async_endpoint_factory([EndpointConfig("echo", model="echo")])
    session = aiobotocore.session.get_session()
    session.set_credentials(*emulator.credentials)
    client = AsyncInferenceClient(
        session=session,
        region_name=emulator.region,
        endpoint_url=emulator.url,
        s3_endpoint_url=emulator.s3_endpoint_url,
        retry=RetryConfig(initial_delay=0.01, jitter=0.0),
        polling=FAST,
    )
    invoke = re.compile(re.escape(emulator.url) + r"/endpoints/echo/async-invocations.*")
    async with client:
        with faults() as mocked:
            # a throttled attempt: a refusal, retried; not a duplicate
            mocked.post(invoke, **THROTTLE)
            first = await client.invoke_endpoint_async("echo", body=b"a")
            # a reset after the request was sent: retried, and maybe accepted twice
            mocked.post(invoke, exception=ConnectionResetError("reset after the request"))
            second = await client.invoke_endpoint_async("echo", body=b"b")
        with pytest.raises(InvocationError):
            await client.invoke_endpoint_async("no-such-endpoint", body=b"c")
        await asyncio.wait_for(asyncio.gather(first, second), WAIT)
        stats = client.stats()
    assert (first.submit_attempts, second.submit_attempts) == (1, 2)
    assert (stats.submitted, stats.submit_failed) == (2, 1)
    assert stats.duplicate_submissions == 1
    assert stats.retries == 2
    assert stats.succeeded == 2
    received = emulator.endpoint("echo").stats().received
    assert received == 2  # the server's count; the two faults never reached it
    # every InvokeEndpointAsync the client sent: the server's, the two injected faults, and
    # the refused one (an unknown endpoint is answered before it is counted as received)
    assert stats.sagemaker_requests == {"InvokeEndpointAsync": received + 2 + 1}


async def test_a_cancelled_handle_is_counted(s3: Any, moto_url: str) -> None:
    bucket = await new_bucket(s3)
    async with moto_client(moto_url) as client:
        handle = client.resume(state_in(bucket))
        handle.add_done_callback(lambda _: None)  # watched
        await until(lambda: client.stats().in_flight == 1)
        assert handle.cancel()
        stats = client.stats()
    assert (stats.cancelled, stats.in_flight, stats.succeeded) == (1, 0, 0)


@pytest.fixture
async def notified(
    local_async_endpoint_factory: Any, moto_url: str
) -> AsyncIterator[dict[str, Any]]:
    """An endpoint that notifies with the response inside, and a queue subscribed to it."""
    session = aiobotocore.session.get_session()
    options: dict[str, Any] = {"endpoint_url": moto_url, "region_name": "us-east-1"}
    async with (
        session.create_client("sns", **options) as sns,
        session.create_client("sqs", **options) as sqs,
    ):
        suffix = uuid.uuid4().hex[:8]
        success = (await sns.create_topic(Name=f"ok-{suffix}"))["TopicArn"]
        error = (await sns.create_topic(Name=f"err-{suffix}"))["TopicArn"]
        emulator = await local_async_endpoint_factory(
            [
                EndpointConfig(
                    f"body-{suffix}",
                    model="echo",
                    success_topic=success,
                    error_topic=error,
                    include_inference_response_in=(
                        SUCCESS_NOTIFICATION_TOPIC,
                        ERROR_NOTIFICATION_TOPIC,
                    ),
                )
            ]
        )
        queue = (await sqs.create_queue(QueueName=f"q-{suffix}"))["QueueUrl"]
        attributes = await sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
        arn = attributes["Attributes"]["QueueArn"]
        for topic in (success, error):
            await sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
        yield {"emulator": emulator, "endpoint": f"body-{suffix}", "queue": queue, "sqs": sqs}


async def test_stats_count_sqs_requests_as_the_server_does(
    notified: dict[str, Any], moto_url: str, embedded_s3: Any
) -> None:
    kinds = ("ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch")
    before = embedded_s3.actions("sqs")
    client = AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=notified["emulator"].url,
        s3_endpoint_url=moto_url,
        sqs_endpoint_url=moto_url,
        notifications=NotificationConfig(queue_url=notified["queue"]),
        polling=FAST,
        retry=RETRY,
    )
    async with client:
        handles = [
            await client.invoke_endpoint_async(notified["endpoint"], body=f"in {i}")
            for i in range(4)
        ]
        results = await asyncio.wait_for(asyncio.gather(*handles), WAIT)
    stats = client.stats()  # after close: the queue was tidied, every request is in
    after = embedded_s3.actions("sqs")
    server = {kind: after.get(kind, 0) - before.get(kind, 0) for kind in kinds}
    assert [r.body for r in results] == [f"in {i}".encode() for i in range(4)]
    assert stats.resolved_by == {"notification": 4}
    assert stats.sqs_requests.get("DeleteMessageBatch", 0) == server["DeleteMessageBatch"] > 0
    assert (
        stats.sqs_requests.get("ChangeMessageVisibilityBatch", 0)
        == (server["ChangeMessageVisibilityBatch"])
    )
    # A long poll that the close cut short was sent, and may not have reached the server.
    sent = stats.sqs_requests["ReceiveMessage"]
    assert server["ReceiveMessage"] <= sent <= server["ReceiveMessage"] + 1
    assert stats.s3_requests.get("GET", 0) == 0  # the responses came inside the messages


# -- log records ----------------------------------------------------------------------------
def fields(record: logging.LogRecord) -> dict[str, Any]:
    standard = logging.LogRecord("", 0, "", 0, "", None, None).__dict__
    return {k: v for k, v in record.__dict__.items() if k not in standard and k != "message"}


async def test_log_records_carry_ids_and_timings_and_never_a_payload(
    client: AsyncInferenceClient,
    moto_admin: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await set_moto_results(moto_admin, ('{"x": 1}', False), (f"failed on {SECRET}", True))
    with caplog.at_level(logging.DEBUG, "sagemaker_async"):
        ok = await client.invoke_endpoint_async(
            "ep-logs", body=SECRET, custom_attributes=SECRET, inference_id="log-ok"
        )
        bad = await client.invoke_endpoint_async(
            "ep-logs", input_location=unique_input(), inference_id="log-bad"
        )
        await ok
        with pytest.raises(InferenceFailedError):
            await bad
    ours = [r for r in caplog.records if r.name == "sagemaker_async"]
    events = {(fields(r).get("event"), fields(r).get("inference_id")): r for r in ours}
    submitted = events["submitted", "log-ok"]
    assert submitted.levelno == logging.DEBUG
    assert fields(submitted)["endpoint"] == "ep-logs"
    assert fields(submitted)["elapsed"] >= 0 and fields(submitted)["attempts"] == 1
    resolved = events["resolved", "log-ok"]
    assert resolved.levelno == logging.DEBUG
    assert fields(resolved)["source"] in ("polling", "listing")
    assert fields(resolved)["status"] == "succeeded" and fields(resolved)["elapsed"] >= 0
    failed = events["failed", "log-bad"]
    assert failed.levelno == logging.DEBUG and fields(failed)["error"] == "InferenceFailedError"
    assert not [r for r in ours if r.levelno >= logging.WARNING]
    for record in ours:  # neither the body, nor CustomAttributes, nor the failure's text
        assert SECRET not in record.getMessage()
        assert SECRET not in repr(fields(record))


async def test_a_timeout_and_a_retry_are_logged_at_info(
    s3: Any, moto_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = await new_bucket(s3)
    async with moto_client(moto_url) as client:
        state = state_in(bucket, timeout=0.2)
        with caplog.at_level(logging.INFO, "sagemaker_async"):
            with pytest.raises(InferenceTimeoutError):
                await asyncio.wait_for(client.resume(state), WAIT)
            with faults() as mocked:
                mocked.post(re.compile(re.escape(moto_url) + r"/endpoints/.*"), **THROTTLE)
                await client.invoke_endpoint_async(
                    "ep", input_location=unique_input(), inference_id="log-retry"
                )
    records = {fields(r).get("event"): r for r in caplog.records if r.name == "sagemaker_async"}
    timed_out = records["timed_out"]
    assert timed_out.levelno == logging.INFO
    assert fields(timed_out)["inference_id"] == state["inference_id"]
    assert fields(timed_out)["source"] is None
    retried = records["retried"]
    assert retried.levelno == logging.INFO
    assert fields(retried)["operation"] == "InvokeEndpointAsync"
    assert fields(retried)["inference_id"] == "log-retry"
    assert fields(retried)["error"] == "ThrottlingException" and fields(retried)["attempt"] == 1


# -- hooks -----------------------------------------------------------------------------------
async def test_hooks_see_each_submission_and_outcome(
    moto_url: str, moto_admin: aiohttp.ClientSession
) -> None:
    submits: list[SubmitEvent] = []
    outcomes: list[OutcomeEvent] = []
    hooks = Hooks(on_submit=submits.append, on_outcome=outcomes.append)
    await set_moto_results(moto_admin, ('{"x": 1}', False), ("boom", True))
    async with moto_client(moto_url, hooks=hooks) as client:
        ok = await client.invoke_endpoint_async("ep-hooks", input_location=unique_input())
        bad = await client.invoke_endpoint_async("ep-hooks", input_location=unique_input())
        with pytest.raises(ValidationError):
            await client.invoke_endpoint_async("ep_hooks", body=b"x")  # never submitted
        await ok
        with pytest.raises(InferenceFailedError) as caught:
            await bad
    assert [(e.inference_id, e.endpoint_name, e.attempts, e.submit_attempts) for e in submits] == [
        (ok.inference_id, "ep-hooks", 1, 1),
        (bad.inference_id, "ep-hooks", 1, 1),
    ]
    assert all(e.error is None and e.elapsed >= 0 for e in submits)
    by_id = {e.inference_id: e for e in outcomes}
    assert len(outcomes) == 2
    assert by_id[ok.inference_id].status is InferenceStatus.SUCCEEDED
    assert by_id[ok.inference_id].error is None
    assert by_id[ok.inference_id].source in ("polling", "listing")
    assert by_id[bad.inference_id].status is InferenceStatus.FAILED
    assert by_id[bad.inference_id].error is caught.value
    assert all(e.elapsed >= 0 for e in outcomes)


async def test_a_failed_submission_reaches_the_hook(moto_url: str) -> None:
    submits: list[SubmitEvent] = []
    retry = RetryConfig(max_attempts=2, initial_delay=0.01, jitter=0.0)
    async with moto_client(moto_url, hooks=Hooks(on_submit=submits.append), retry=retry) as client:
        with faults() as mocked:
            mocked.post(re.compile(re.escape(moto_url) + r"/endpoints/.*"), **THROTTLE)
            mocked.post(re.compile(re.escape(moto_url) + r"/endpoints/.*"), **THROTTLE)
            with pytest.raises(InvocationError) as caught:
                await client.invoke_endpoint_async("ep", body=b"x", inference_id="refused-1")
    [event] = submits
    assert (event.inference_id, event.attempts, event.submit_attempts) == ("refused-1", 2, 0)
    assert event.error is caught.value


async def test_a_hook_that_raises_does_not_break_the_inference(
    moto_url: str, moto_admin: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def broken(event: object) -> None:
        calls.append(type(event).__name__)
        raise RuntimeError("a bug in the user's metrics")

    hooks = Hooks(on_submit=broken, on_outcome=broken)
    await set_moto_results(moto_admin, ("1", False), ("2", False))
    with caplog.at_level(logging.DEBUG, "sagemaker_async"):
        async with moto_client(moto_url, hooks=hooks) as client:
            first = await client.invoke_endpoint_async("ep", input_location=unique_input())
            second = await client.invoke_endpoint_async("ep", input_location=unique_input())
            results = await asyncio.wait_for(asyncio.gather(first, second), WAIT)
    assert [r.body for r in results] == [b"1", b"2"]
    assert calls.count("SubmitEvent") == 2 and calls.count("OutcomeEvent") == 2
    failures = [r for r in caplog.records if fields(r).get("event") == "hook_failed"]
    warnings = [r for r in failures if r.levelno == logging.WARNING]
    # once at WARNING per hook, with the traceback; the repeats at DEBUG
    assert sorted(fields(r)["hook"] for r in warnings) == ["on_outcome", "on_submit"]
    assert all(r.exc_info is not None for r in warnings)
    assert len(failures) == 4


async def test_a_hook_that_returns_a_coroutine_is_reported_not_awaited(
    s3: Any, moto_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def later(event: OutcomeEvent) -> None:  # pragma: no cover - never awaited
        raise AssertionError("hooks are not awaited")

    def sneaky(event: OutcomeEvent) -> Awaitable[None]:
        return later(event)

    bucket = await new_bucket(s3)
    async with moto_client(moto_url, hooks=Hooks(on_outcome=sneaky)) as client:
        state = state_in(bucket)
        await put(s3, state["output_location"], b"done")
        with caplog.at_level(logging.WARNING, "sagemaker_async"):
            assert (await asyncio.wait_for(client.resume(state), WAIT)).body == b"done"
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "awaitable" in warning.getMessage()  # and no "never awaited" RuntimeWarning


def test_async_hooks_are_refused() -> None:
    async def on_outcome(event: OutcomeEvent) -> None:
        pass

    with pytest.raises(ValidationError, match="async"):
        Hooks(on_outcome=on_outcome)
    with pytest.raises(ValidationError, match="callable"):
        Hooks(on_submit="print")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        AsyncInferenceClient(hooks={"on_submit": print})  # type: ignore[arg-type]


# -- OpenTelemetry ---------------------------------------------------------------------------
class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.config = TelemetryConfig(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def metrics(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        found: dict[str, list[Any]] = {}
        if data is None:  # nothing was recorded
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found


async def test_a_span_per_inference_and_outcome_metrics(
    moto_url: str, moto_admin: aiohttp.ClientSession
) -> None:
    otel = Telemetry()
    await set_moto_results(moto_admin, ('{"x": 1}', False), (f"failed on {SECRET}", True))
    tracer = otel.tracer_provider.get_tracer("the user's app")
    async with moto_client(moto_url, telemetry=otel.config) as client:
        with tracer.start_as_current_span("POST /predict") as parent:
            ok = await client.invoke_endpoint_async(
                "ep-otel", body=SECRET, custom_attributes=SECRET, inference_id="otel-ok"
            )
        bad = await client.invoke_endpoint_async(
            "ep-otel", input_location=unique_input(), inference_id="otel-bad"
        )
        await ok
        with pytest.raises(InferenceFailedError):
            await bad
        stats = client.stats()
    spans = {
        s.attributes["sagemaker_async.inference_id"]: s
        for s in otel.spans.get_finished_spans()
        if s.name == "sagemaker_async.inference" and s.attributes is not None
    }
    assert set(spans) == {"otel-ok", "otel-bad"}
    good = spans["otel-ok"]
    assert good.kind is trace.SpanKind.CLIENT
    assert good.parent is not None
    assert good.parent.span_id == parent.get_span_context().span_id  # the caller's span
    assert good.attributes is not None
    assert good.attributes["sagemaker_async.endpoint"] == "ep-otel"
    assert good.attributes["sagemaker_async.status"] == "succeeded"
    assert good.attributes["sagemaker_async.source"] in ("polling", "listing")
    assert good.status.status_code is StatusCode.UNSET
    failed = spans["otel-bad"]
    assert failed.attributes is not None
    assert failed.attributes["sagemaker_async.status"] == "failed"
    assert failed.attributes["error.type"] == "InferenceFailedError"
    assert failed.status.status_code is StatusCode.ERROR
    for span in otel.spans.get_finished_spans():
        assert SECRET not in repr(dict(span.attributes or {})) + repr(span.events)
        assert SECRET not in (span.status.description or "")

    metrics = otel.metrics()
    outcomes = {
        (p.attributes["sagemaker_async.status"], p.attributes["sagemaker_async.endpoint"]): p.value
        for p in metrics["sagemaker_async.inferences"]
    }
    assert outcomes == {("succeeded", "ep-otel"): 1, ("failed", "ep-otel"): 1}
    assert sum(p.count for p in metrics["sagemaker_async.inference.duration"]) == 2
    submissions = {
        p.attributes["sagemaker_async.status"]: p.value
        for p in metrics["sagemaker_async.submissions"]
    }
    assert submissions == {"accepted": 2}
    requests: dict[tuple[str, str], int] = {
        (p.attributes["rpc.service"], p.attributes["rpc.method"]): p.value
        for p in metrics["sagemaker_async.aws.requests"]
    }
    assert requests[("sagemaker-runtime", "InvokeEndpointAsync")] == 2
    assert requests[("s3", "GetObject")] == stats.s3_requests["GET"]


async def test_a_failed_submission_ends_its_span_with_an_error(moto_url: str) -> None:
    otel = Telemetry()
    retry = RetryConfig(max_attempts=1)
    async with moto_client(moto_url, telemetry=otel.config, retry=retry) as client:
        with faults() as mocked, pytest.raises(InvocationError):
            mocked.post(re.compile(re.escape(moto_url) + r"/endpoints/.*"), **THROTTLE)
            await client.invoke_endpoint_async("ep", body=b"x", inference_id="otel-refused")
    [span] = [s for s in otel.spans.get_finished_spans() if s.name == "sagemaker_async.inference"]
    assert span.attributes is not None
    assert span.attributes["sagemaker_async.status"] == "submit_failed"
    assert span.status.status_code is StatusCode.ERROR


async def test_a_resumed_handle_gets_a_span_from_its_submission(s3: Any, moto_url: str) -> None:
    otel = Telemetry()
    bucket = await new_bucket(s3)
    async with moto_client(moto_url, telemetry=otel.config) as client:
        state = state_in(bucket)
        await put(s3, state["output_location"], b"done")
        await asyncio.wait_for(client.resume(state), WAIT)
    [span] = otel.spans.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["sagemaker_async.resumed"] is True
    assert span.attributes["sagemaker_async.inference_id"] == state["inference_id"]
    assert span.start_time == int(datetime.fromisoformat(state["submitted_at"]).timestamp() * 1e9)


async def test_telemetry_can_be_turned_off(s3: Any, moto_url: str) -> None:
    otel = Telemetry()
    config = TelemetryConfig(
        enabled=False, tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider
    )
    bucket = await new_bucket(s3)
    async with moto_client(moto_url, telemetry=config) as client:
        state = state_in(bucket)
        await put(s3, state["output_location"], b"done")
        await asyncio.wait_for(client.resume(state), WAIT)
        assert client.stats().succeeded == 1  # the counts do not depend on it
    assert otel.spans.get_finished_spans() == ()
    assert otel.metrics() == {}


SCRIPT = """
import asyncio, json, sys
sys.modules["opentelemetry"] = None  # as if opentelemetry-api were not installed
import sagemaker_async
from sagemaker_async import AsyncInferenceClient, PollingConfig
from sagemaker_async._observe import otel_available

async def main():
    url, state = sys.argv[1], json.loads(sys.argv[2])
    async with AsyncInferenceClient(region_name="us-east-1", endpoint_url=url,
                                    s3_endpoint_url=url,
                                    polling=PollingConfig(initial_delay=0.02)) as client:
        result = await asyncio.wait_for(client.resume(state), 20)
        stats = client.stats()
    print(json.dumps({"otel": otel_available(), "body": result.text(),
                      "succeeded": stats.succeeded,
                      "modules": sorted(m for m in sys.modules if m.startswith("opentelemetry"))}))

asyncio.run(main())
"""


async def test_without_opentelemetry_everything_works(s3: Any, moto_url: str) -> None:
    bucket = await new_bucket(s3)
    state = state_in(bucket)
    await put(s3, state["output_location"], b"done")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SCRIPT,
        moto_url,
        json.dumps(state),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert json.loads(out) == {
        "otel": False,
        "body": "done",
        "succeeded": 1,
        "modules": ["opentelemetry"],  # only the blocked name: nothing was imported
    }


# -- the saved state -------------------------------------------------------------------------
async def test_the_saved_state_is_a_handle_state_and_reads_back(
    client: AsyncInferenceClient,
) -> None:
    handle = await client.invoke_endpoint_async(
        "ep", input_location=unique_input(), inference_id="state-1"
    )
    state = handle.to_dict()
    assert set(state) == HandleState.__required_keys__ | HandleState.__optional_keys__
    assert set(HandleState.__optional_keys__) == {"submit_attempts"}
    again = client.resume(json.loads(json.dumps(state)))
    assert again.to_dict() == state
    older = {k: v for k, v in state.items() if k != "submit_attempts"}
    assert client.resume(older).submit_attempts == 0  # written by an older version
    for bad in ({**state, "submit_attempts": -1}, {**state, "version": 2}, [state]):
        with pytest.raises(ValidationError):
            client.resume(bad)  # type: ignore[arg-type]
    await handle
