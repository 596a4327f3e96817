"""Notification benchmark: what it costs to learn results from SageMaker's SNS notifications.

Everything runs on 127.0.0.1 with fake credentials, in three kinds of processes:

- this one: the moto server for **SQS and SNS** (an ``EmbeddedS3``, which counts every request
  server-side), and the benchmark's own SNS/SQS calls (set-up, queue depth; never counted);
- the **emulator** process (``--emulator``): a second ``EmbeddedS3`` for **S3** (outputs are
  written there and every S3 read of a client is counted there) and the ``LocalAsyncEndpoint``,
  which writes each output to S3 and publishes its notification (the response inside:
  IncludeInferenceResponseIn both topics) to SNS, which delivers it to SQS. Two moto servers in
  two processes, because one moto process sustains only ~27 inferences/s (PUT + Publish +
  SQS) here, CPU-bound on one core;
- one process per **client** under test (``--child``), so its CPU is its own.

Scenarios (each with fresh topics, endpoint and queues):

- ``a``: one client reading one queue that the benchmark subscribed to both topics
  (``NotificationConfig(queue_url=)``);
- ``b``: two clients (processes) sharing that one queue, each submitting half;
- ``c``: two clients, each with its own filtered queue (``NotificationConfig(topics=)``);
- ``d``: as ``a``, with 1,000 messages that are not the client's in the queue from the start
  (half notifications of others' inferences, half junk): fairness (``--foreign``).

Loads: 1,000 and 10,000 inferences, all genuinely in flight together: the model holds every
request until all clients have submitted everything, then releases them at ``--release-rate``
per second (a steady stream of results, below what moto can carry: see docs/performance.md).
With ``--release N``, only the first N requests the model received are answered (at that
rate); the others stay in flight until the clients close, a few seconds (``--settle-s``) after
the last of the N was published: 100,000 in flight, of which 10,000 finish, costs what 10,000
results cost moto, and shows whether the number in flight changes what each result costs.

The SQS moto gets two speed fixes (``speed_up_moto_sqs``; ``--stock-moto`` leaves them out).
Other processes' CPU and any pytest run are watched; a scenario they disturbed is run again
once (``--reruns``); each scenario first waits for pytest runs and other busy processes to end
(``--quiet-wait-s``).

    python benchmarks/notifications.py            # 1,000 and 10,000 x a, b, c (~14 min)
    python benchmarks/notifications.py --quick    # 200 and 800 x a, b, c (under 2 min)
    python benchmarks/notifications.py --loads 1000 --scenarios a,c --release-rate 40
    python benchmarks/notifications.py --loads 10000,100000 --scenarios c --release 10000

Writes benchmarks/results/notifications-<date>[-quick|-custom].{json,md}; prints the table.
See docs/performance.md, "Notifications", for the method and a reading of the results.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import json
import logging
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

HERE = Path(__file__).parent
SCRIPT = str(Path(__file__).resolve())
RESULTS = HERE / "results"
REGION = "us-east-1"
BUCKET = "sagemaker-async-emulator"  # the emulator's default output bucket
# Who signed a request (its access key): clients sign with the emulator's credentials (they
# must, to invoke it); the emulator's own S3/SNS calls and this harness's calls are told apart.
CLIENT_KEY = "testing"
EMULATOR_KEY = "emulator"
HARNESS_KEY = "harness"
S3_KINDS = ("GET", "HEAD", "LIST", "PUT", "OTHER")
TARGETS = {"s3": 0.1, "sqs": 0.5, "p95_s": 0.5, "left": 0}
MAIN_ACTIONS = ("ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch")
SCENARIOS = {
    "a": "one client, one queue (queue_url)",
    "b": "two clients sharing one queue (queue_url)",
    "c": "two clients, a filtered queue each (topics)",
    "d": "one client, one queue that also holds others' messages (queue_url)",
}
FOREIGN = 1000  # scenario d: others' notifications and junk, in the queue before the clients
FULL_LOADS = (1000, 10_000)
QUICK_LOADS = (200, 800)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))]


def dist(values: list[float], scale: float = 1.0, digits: int = 3) -> dict[str, Any]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None, "count": 0}
    return {
        "p50": round((pct(values, 0.5) or 0) * scale, digits),
        "p95": round((pct(values, 0.95) or 0) * scale, digits),
        "p99": round((pct(values, 0.99) or 0) * scale, digits),
        "max": round(max(values) * scale, digits),
        "count": len(values),
    }


def child_env() -> dict[str, str]:
    """Fake credentials, no AWS config; any AWS endpoint not given explicitly: a closed port."""
    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k.lower() not in proxies
    }
    env.update(
        AWS_ACCESS_KEY_ID=CLIENT_KEY,
        AWS_SECRET_ACCESS_KEY=CLIENT_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
        PYTHONUNBUFFERED="1",
    )
    return env


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main_thread_cpu() -> float:
    """CPU seconds of this process's main thread (its event loop), from /proc."""
    try:
        with open(f"/proc/self/task/{threading.main_thread().native_id}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return math.nan


def write_json(path: str | Path, value: Any) -> None:
    Path(path).write_text(json.dumps(value))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


async def depth(sqs: Any, url: str) -> dict[str, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    answer = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)
    return {name: int(answer["Attributes"][name]) for name in names}


# =============================================================================================
# A client under test (its own process)
# =============================================================================================


async def child(spec: dict[str, Any]) -> None:
    """One AsyncInferenceClient: open, submit on "GO", wait for every result, close."""
    import aiobotocore.session

    from sagemaker_async import AsyncInferenceClient, InferenceFailedError, NotificationConfig

    out: dict[str, Any] = {"name": spec["name"], "harness_sqs": Counter()}
    lags: list[tuple[float, float]] = []

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            lags.append((time.time(), max(0.0, loop.time() - before - 0.01)))

    tick = asyncio.get_running_loop().create_task(ticker())
    # What held the loop, and the collector's pauses (scale_clients.py's probes, in this dir).
    from scale_clients import GcWatch, Probe, Stalls, stall_stacks

    probe = Probe()
    probing = asyncio.get_running_loop().create_task(probe.run())
    stalls = Stalls(probe)
    stalls.start()
    gcw = GcWatch()
    gcw.start()
    trace: list[tuple[float, str, str, str]] = []
    if spec.get("trace"):
        install_trace(trace)
        logging.basicConfig(level=logging.WARNING)
        logging.getLogger("sagemaker_async").setLevel(logging.DEBUG)
    if spec["queue_url"]:
        notifications = NotificationConfig(queue_url=spec["queue_url"])
    else:
        notifications = NotificationConfig(
            topics=tuple(spec["topics"]), queue_name_prefix=spec["queue_name_prefix"]
        )
    client = AsyncInferenceClient(
        region_name=REGION,
        endpoint_url=spec["runtime_url"],
        s3_endpoint_url=spec["s3_url"],
        sqs_endpoint_url=spec["sqs_url"],
        sns_endpoint_url=spec["sqs_url"],
        notifications=notifications,
        max_connections=spec["max_connections"],
    )
    n = spec["n"]
    resolved: dict[str, float] = {}
    submitted: dict[str, float] = {}
    errors: Counter[str] = Counter()
    all_done = asyncio.Event()

    def done(handle: Any) -> None:  # a done callback: the wall time the handle resolved
        now = time.time()
        if handle.cancelled():
            return
        exc = handle.exception()
        if exc is not None and not isinstance(exc, InferenceFailedError):
            errors[type(exc).__name__] += 1
        resolved[handle.inference_id] = now
        if len(resolved) >= n:
            all_done.set()

    t0 = time.time()
    await client.open()
    out["open_s"] = round(time.time() - t0, 3)
    out["queue_url"] = client.notification_queue_url
    print("OPEN", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # "GO"
    cpu0, t_submit = process_cpu(), time.time()
    indices = iter(range(n))
    submit_errors: Counter[str] = Counter()

    async def worker() -> None:
        for i in indices:
            try:
                handle = await client.invoke_endpoint_async(
                    spec["endpoint"], body=f"{spec['name']} {i}".encode(), content_type="text/plain"
                )
            except Exception as exc:
                submit_errors[type(exc).__name__] += 1
                continue
            submitted[handle.inference_id] = time.time()
            handle.add_done_callback(done)

    await asyncio.gather(*(worker() for _ in range(min(spec["submit_concurrency"], n))))
    out["t_submit_start"], out["t_submit_end"] = t_submit, time.time()
    out["cpu_submit_s"] = round(process_cpu() - cpu0, 3)
    out["submit_errors"] = dict(submit_errors)
    print("SUBMITTED", flush=True)
    n = len(submitted)
    if len(resolved) >= n:
        all_done.set()
    waits = [asyncio.ensure_future(all_done.wait())]
    if spec.get("stop_on_stdin"):  # only some are released: the harness says when to stop
        waits.append(asyncio.ensure_future(loop.run_in_executor(None, sys.stdin.readline)))
    finished, _ = await asyncio.wait(
        waits, timeout=spec["timeout_s"], return_when=asyncio.FIRST_COMPLETED
    )
    if not finished:
        out["timed_out"] = True
    for waiting in waits:
        waiting.cancel()
    out["pending_at_stop"] = len(submitted) - len(resolved)
    out["cpu_s"] = round(process_cpu() - cpu0, 3)
    # A queue this client reads alone (a, c): empty after the last result? (c: deleted at close.)
    if spec["check_queue"] and client.notification_queue_url:
        session = aiobotocore.session.get_session()
        session.set_credentials(HARNESS_KEY, HARNESS_KEY)
        async with session.create_client(
            "sqs", region_name=REGION, endpoint_url=spec["sqs_url"]
        ) as sqs:
            left = out["depth_at_last_result"] = await depth(sqs, client.notification_queue_url)
            out["harness_sqs"]["GetQueueAttributes"] += 1
            waited = time.time()
            while sum(left.values()) and time.time() - waited < spec["drain_s"]:
                await asyncio.sleep(0.1)
                left = await depth(sqs, client.notification_queue_url)
                out["harness_sqs"]["GetQueueAttributes"] += 1
            out["depth_before_close"] = left
            out["drain_s"] = round(time.time() - waited, 2)
    engine = getattr(client, "_engine", None)  # private: diagnostics only
    out["engine_stats"] = dict(getattr(engine, "stats", {}))
    out["source_stats"] = dict(client.stats().notifications)
    t_close = time.time()
    await client.aclose()
    out["close_s"] = round(time.time() - t_close, 3)
    tick.cancel()
    probing.cancel()
    stalls.stop()
    gcw.stop()
    out["loop_lag_waiting_ms"] = dist([g for t, g in lags if t >= out["t_submit_end"]], 1000, 1)
    phases = {
        "submitting": (out["t_submit_start"], out["t_submit_end"]),
        "waiting": (out["t_submit_end"], t_close),
        "closing": (t_close, time.time()),
    }
    out["gc"] = {name: gcw.stats(since=a, until=b) for name, (a, b) in phases.items()}
    out["stall_stacks"] = stall_stacks(stalls, gcw, phases)
    out["resolved"] = resolved
    out["submitted_at"] = submitted
    out["errors"] = dict(errors)
    out["trace"] = trace
    write_json(spec["result_file"], out)
    print("RESULT", flush=True)


def install_trace(trace: list[tuple[float, str, str, str]]) -> None:
    """``--trace``: record what the notification source does with each message (private API)."""
    from sagemaker_async._engine import _notifications as notifications

    source = notifications.NotificationSource

    def wrap(name: str) -> None:
        original = getattr(source, name)

        def traced(self: Any, notice: Any, *rest: Any) -> Any:
            trace.append((time.time(), name, notice.message_id, notice.inference_id))
            return original(self, notice, *rest)

        setattr(source, name, traced)

    for name in ("_hold", "_delete", "_release"):
        wrap(name)
    original_take, original_claim = source.take, source._claim

    def take(self: Any, message: dict[str, Any]) -> None:
        notice = notifications.parse_notification(message)
        trace.append(
            (
                time.time(),
                "take",
                str(message.get("MessageId")),
                getattr(notice, "inference_id", ""),
            )
        )
        original_take(self, message)

    def claim(self: Any, watch: Any, notice: Any) -> None:
        trace.append((time.time(), "_claim", notice.message_id, notice.inference_id))
        original_claim(self, watch, notice)

    original_batch = source._batch

    async def batch(self: Any, operation: str, entries: Any) -> None:
        trace.append((time.time(), operation, str(len(entries)), ""))
        await original_batch(self, operation, entries)

    source.take, source._claim, source._batch = take, claim, batch  # type: ignore[method-assign]
    original_init = source.__init__

    class TracedSQS:
        """The source's SQS client, recording each call: start, end, what went and came."""

        def __init__(self, sqs: Any) -> None:
            self._sqs = sqs

        def __getattr__(self, name: str) -> Any:
            method = getattr(self._sqs, name)

            async def call(**kwargs: Any) -> Any:
                began = time.time()
                try:
                    answer = await method(**kwargs)
                except BaseException as exc:
                    trace.append((began, f"{name}:error", type(exc).__name__, ""))
                    raise
                got = answer.get("Messages") or answer.get("Successful") or []
                failed = [f.get("Code", "") for f in answer.get("Failed", [])]
                entries = [e.get("Id", "") for e in kwargs.get("Entries", [])]
                detail = f"sent {len(entries)} got {len(got)} failed {failed}"
                trace.append((began, f"{name}:start", "", ""))
                trace.append((time.time(), f"{name}:end", detail, ""))
                for message in answer.get("Messages", []):
                    trace.append((time.time(), "received", str(message.get("MessageId")), ""))
                return answer

            return call

    def init(self: Any, sqs: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, TracedSQS(sqs), *args, **kwargs)

    source.__init__ = init  # type: ignore[method-assign]


# =============================================================================================
# Server side: moto with a timing middleware; the emulator with a gated model
# =============================================================================================


class Timing:
    """WSGI middleware in front of EmbeddedS3's counter: who sent what, and moto's time on it.

    Sorts each request by signer (access key) and ``(service, action)``: S3 kinds and SQS
    actions as EmbeddedS3 classifies them; SNS (a query-protocol service) by the ``Action`` in
    its body, which EmbeddedS3 does not read. Counting stays EmbeddedS3's.
    """

    def __init__(self, app: Any) -> None:
        from sagemaker_async.emulator._s3 import classify_request

        self._app = app
        self._classify = classify_request
        self._lock = threading.Lock()
        self.records: list[tuple[float, str, str, str, float]] = []  # end, who, svc, act, s
        self.in_flight = 0
        self.max_in_flight = 0
        #: ``--trace``: each ReceiveMessage: (start, end, client port, message ids returned)
        self.receives: list[tuple[float, float, int, list[str]]] | None = None

    @classmethod
    def install(cls, embedded: Any) -> Timing:
        timing = cls(embedded._server.app)  # werkzeug's server calls server.app
        embedded._server.app = timing
        return timing

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        started = time.perf_counter()
        service, action = self._classify(environ)
        if service in S3_KINDS:  # S3: (kind, path)
            service, action = "s3", service
        auth = environ.get("HTTP_AUTHORIZATION", "")
        who = auth.split("Credential=", 1)[1].split("/", 1)[0] if "Credential=" in auth else "?"
        if service == "sns":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
            action = dict(parse_qsl(body.decode("utf-8", "replace"))).get("Action", "")
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        began = time.time()
        try:
            answer = self._app(environ, start_response)
            if self.receives is not None and action == "ReceiveMessage":
                answer = [b"".join(answer)]
                with contextlib.suppress(ValueError):
                    ids = [m["MessageId"] for m in json.loads(answer[0]).get("Messages", [])]
                    port = int(environ.get("REMOTE_PORT") or 0)
                    with self._lock:
                        self.receives.append((began, time.time(), port, ids))
            return answer
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self.in_flight -= 1
                self.records.append((time.time(), who, service, action, elapsed))

    def reset(self) -> None:
        with self._lock:
            self.records = []
            self.max_in_flight = self.in_flight

    def summary(self, since: float, until: float) -> dict[str, Any]:
        """Per (signer, service, action): how many, and moto's time on them (ms)."""
        with self._lock:
            window = [r for r in self.records if since <= r[0] <= until]
        groups: dict[str, list[float]] = {}
        for _, who, service, action, elapsed in window:
            groups.setdefault(f"{who} {service}:{action}", []).append(elapsed)
        per_second = Counter(int(r[0]) for r in window)
        return {
            "requests": len(window),
            "per_s": round(len(window) / max(1e-9, until - since), 1),
            "peak_per_s": max(per_second.values(), default=0),
            "max_in_flight": self.max_in_flight,
            "ms": {key: dist(values, 1000, 1) for key, values in sorted(groups.items())},
        }


class Gate:
    """The model: hold every request until the gate opens, then release them at ``rate``/s.

    Request k (in the order the model received them) completes ``hold + k / rate`` seconds
    after the gate opens: every inference is in flight together, then results arrive as a
    steady stream.
    """

    def __init__(self, rate: float, hold: float = 1.0, release: int | None = None) -> None:
        self.rate = rate
        self.hold = hold
        self.release = release  # answer only the first this many (None: all)
        self.arrived = 0
        self.opened = asyncio.Event()
        self.t_open = 0.0

    def open(self) -> None:
        self.t_open = asyncio.get_running_loop().time()
        self.opened.set()

    async def __call__(self, request: Any) -> tuple[bytes, str]:
        k = self.arrived
        self.arrived += 1
        await self.opened.wait()
        if self.release is not None and k >= self.release:
            await asyncio.Event().wait()  # in flight until the endpoint closes
        delay = self.t_open + self.hold + k / self.rate - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)
        return request.payload, request.content_type or "application/octet-stream"


#: inference id -> (time.time() when the emulator called SNS Publish, when Publish returned)
PUBLISHED: dict[str, tuple[float, float]] = {}


def hook_publish() -> None:
    """Record when the emulator publishes each notification (around its SNS Publish call).

    The message's ``eventTime`` is taken just before, in whole milliseconds; this has the
    clock's full precision, and the return time too (moto has put it in SQS by then).
    """
    from sagemaker_async.emulator._endpoint import EmulatedEndpoint

    original = EmulatedEndpoint._publish

    async def _publish(self: Any, topic_arn: str, message: str) -> None:
        inference_id = json.loads(message).get("inferenceId", "")
        began = time.time()
        await original(self, topic_arn, message)
        PUBLISHED[inference_id] = (began, time.time())

    EmulatedEndpoint._publish = _publish  # type: ignore[method-assign]


async def emulator_process(sns_url: str) -> None:
    """``--emulator``: moto for S3 and the emulator; JSON commands on stdin, answers on stdout."""
    from sagemaker_async.emulator import (
        ERROR_NOTIFICATION_TOPIC,
        SUCCESS_NOTIFICATION_TOPIC,
        EmbeddedS3,
        EndpointConfig,
        LocalAsyncEndpoint,
    )

    hook_publish()
    s3 = EmbeddedS3().start()
    timing = Timing.install(s3)
    loop = asyncio.get_running_loop()
    emulator: LocalAsyncEndpoint | None = None
    gate: Gate | None = None
    marks: dict[str, float] = {}

    def answer(value: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()

    answer({"s3_url": s3.url})
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            command = json.loads(line)
            op = command["op"]
            if op == "endpoint":  # start an endpoint for one scenario
                gate = Gate(command["release_rate"], release=command.get("release"))
                n = command["n"]
                per_instance = min(n, 1000)
                config = EndpointConfig(
                    command["name"],
                    model=gate,
                    success_topic=command["success"],
                    error_topic=command["error"],
                    include_inference_response_in=(
                        SUCCESS_NOTIFICATION_TOPIC,
                        ERROR_NOTIFICATION_TOPIC,
                    ),
                    instance_count=math.ceil(n / per_instance),
                    max_concurrent_invocations_per_instance=per_instance,
                )
                emulator = LocalAsyncEndpoint(
                    [config],
                    s3_endpoint_url=s3.url,
                    sns_endpoint_url=sns_url,
                    s3_credentials=(EMULATOR_KEY, EMULATOR_KEY),
                    region=REGION,
                )
                await emulator.start()
                PUBLISHED.clear()
                s3.reset_counts()
                timing.reset()
                answer({"url": emulator.url})
            elif op == "open":  # every client submitted everything
                assert gate is not None
                gate.open()
                marks = {"t": time.time(), "cpu": process_cpu(), "main": main_thread_cpu()}
                answer({"arrived": gate.arrived})
            elif op == "published":  # how many notifications were published so far
                answer({"published": len(PUBLISHED)})
            elif op == "finish":  # the clients are done: counts, publish times; close
                t, cpu, main = time.time(), process_cpu(), main_thread_cpu()
                write_json(command["published_file"], PUBLISHED)
                assert emulator is not None
                stats = emulator.stats(command["name"]).to_dict()
                await emulator.aclose()
                emulator, gate = None, None
                answer(
                    {
                        "s3": s3.counts(command["prefix"]),
                        "stats": stats,
                        "timing": timing.summary(marks["t"], t),
                        "cpu_pct": round((cpu - marks["cpu"]) / (t - marks["t"]) * 100, 1),
                        "loop_cpu_pct": round((main - marks["main"]) / (t - marks["t"]) * 100, 1),
                    }
                )
            elif op == "quit":
                break
    finally:
        if emulator is not None:
            await emulator.aclose()
        s3.stop()


class LoadWatch:
    """What else ran on the machine meanwhile: CPU used by processes not of this benchmark.

    Samples /proc every second: the machine's busy time minus that of this process, the
    emulator process and the client processes, and whether any pytest process was alive.
    """

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.samples: list[tuple[float, float, bool]] = []  # time, other cores busy, pytest

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _cpu_of(pid: int) -> float:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return math.nan

    @staticmethod
    def pytest_alive() -> bool:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError), open(f"/proc/{entry}/cmdline", "rb") as f:
                    if b"pytest" in f.read():
                        return True
        return False

    async def run(self) -> None:
        before = (time.monotonic(), self._busy(), {p: self._cpu_of(p) for p in self.pids})
        while True:
            await asyncio.sleep(1.0)
            now = (time.monotonic(), self._busy(), {p: self._cpu_of(p) for p in self.pids})
            own = sum(
                now[2][p] - before[2][p]
                for p in self.pids
                if not math.isnan(now[2].get(p, math.nan) - before[2].get(p, math.nan))
            )
            other = max(0.0, (now[1] - before[1] - own) / (now[0] - before[0]))
            self.samples.append((time.time(), other, self.pytest_alive()))
            before = now

    def summary(self) -> dict[str, Any]:
        others = [s[1] for s in self.samples]
        return {
            "other_cores_mean": round(sum(others) / len(others), 2) if others else None,
            "other_cores_max": round(max(others), 2) if others else None,
            "pytest_seen_s": sum(1 for s in self.samples if s[2]),
            "samples": len(self.samples),
        }


class Emulator:
    """The ``--emulator`` process, seen from here."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.s3_url = ""

    async def start(self, sns_url: str) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            SCRIPT,
            "--emulator",
            sns_url,
            env=child_env(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self.s3_url = (await self._read(60))["s3_url"]

    async def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("the emulator process exited")
        return dict(json.loads(line))

    async def call(self, op: str, timeout: float = 120, **args: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        return await self._read(timeout)

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write(b'{"op": "quit"}\n')
            await self.proc.stdin.drain()
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except asyncio.TimeoutError:
            self.proc.kill()
            await self.proc.wait()


# =============================================================================================
# The orchestrator
# =============================================================================================


class Harness:
    """The SQS/SNS moto server and this benchmark's own (uncounted) SNS/SQS calls."""

    def __init__(self, embedded: Any, timing: Timing, sns: Any, sqs: Any, emulator: Emulator):
        self.moto = embedded
        self.timing = timing
        self.sns = sns
        self.sqs = sqs
        self.emulator = emulator

    @property
    def url(self) -> str:
        return str(self.moto.url)


async def run_scenario(
    harness: Harness, scenario: str, n: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:6]
    name = f"nb-{scenario}-{n}-{suffix}"
    success = (await harness.sns.create_topic(Name=f"ok-{suffix}"))["TopicArn"]
    error = (await harness.sns.create_topic(Name=f"err-{suffix}"))["TopicArn"]
    shared_queue: str | None = None
    subscriptions: list[str] = []
    if scenario in ("a", "b", "d"):
        shared_queue = (await harness.sqs.create_queue(QueueName=f"nb-{suffix}"))["QueueUrl"]
        arn = (
            await harness.sqs.get_queue_attributes(
                QueueUrl=shared_queue, AttributeNames=["QueueArn"]
            )
        )["Attributes"]["QueueArn"]
        for topic in (success, error):
            subscribed = await harness.sns.subscribe(
                TopicArn=topic,
                Protocol="sqs",
                Endpoint=arn,
                Attributes={"RawMessageDelivery": "false" if args.sns_wrapped else "true"},
                ReturnSubscriptionArn=True,
            )
            subscriptions.append(subscribed["SubscriptionArn"])
    if scenario == "d":
        assert shared_queue is not None
        await fill_with_others(harness.sqs, shared_queue, args.foreign)
    released = min(n, args.release) if args.release else n
    runtime_url = (
        await harness.emulator.call(
            "endpoint",
            name=name,
            n=n,
            release=released if released < n else None,
            release_rate=args.release_rate,
            success=success,
            error=error,
        )
    )["url"]
    clients = 1 if scenario in ("a", "d") else 2
    shares = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
    queue_prefix = f"nbq-{suffix}-"
    timeout_s = released / args.release_rate * 2 + 120
    procs: list[asyncio.subprocess.Process] = []
    files: list[Path] = []
    logs: list[Any] = []
    harness.moto.reset_counts()
    harness.timing.reset()
    t_start = time.time()

    async def expect(proc: asyncio.subprocess.Process, word: str, timeout: float) -> None:
        assert proc.stdout is not None
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
            if not line:
                raise RuntimeError(f"a client exited before {word}")
            if line.decode().strip() == word:
                return

    try:
        for i, share in enumerate(shares):
            files.append(workdir / f"{name}-{i}.json")
            spec = {
                "name": f"client{i}",
                "n": share,
                "endpoint": name,
                "runtime_url": runtime_url,
                "s3_url": harness.emulator.s3_url,
                "sqs_url": harness.url,
                "queue_url": shared_queue,
                "topics": [success, error],
                "queue_name_prefix": queue_prefix,
                "max_connections": args.max_connections,
                "submit_concurrency": args.submit_concurrency,
                "timeout_s": timeout_s,
                "drain_s": args.drain_s,
                "result_file": str(files[-1]),
                "trace": args.trace,
                "check_queue": scenario in ("a", "c"),
                "stop_on_stdin": released < n,
            }
            logs.append((workdir / f"{name}-{i}.log").open("wb"))
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    SCRIPT,
                    "--child",
                    json.dumps(spec),
                    env=child_env(),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=logs[-1],
                )
            )
        assert harness.emulator.proc is not None
        watch = LoadWatch([os.getpid(), harness.emulator.proc.pid, *(p.pid for p in procs)])
        watcher = asyncio.get_running_loop().create_task(watch.run())
        await asyncio.gather(*(expect(p, "OPEN", 60) for p in procs))
        for proc in procs:  # every client is open (its queue made): all submit at once
            assert proc.stdin is not None
            proc.stdin.write(b"GO\n")
            await proc.stdin.drain()
        await asyncio.gather(*(expect(p, "SUBMITTED", 600 + n / 50) for p in procs))
        arrived = (await harness.emulator.call("open"))["arrived"]
        t_gate, cpu0, main0 = time.time(), process_cpu(), main_thread_cpu()
        if released < n:  # the last released result published, then a few seconds to see it
            limit = time.monotonic() + timeout_s
            while time.monotonic() < limit:
                published_now = (await harness.emulator.call("published"))["published"]
                if published_now >= released:
                    break
                await asyncio.sleep(1.0)
            await asyncio.sleep(args.settle_s)
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(b"STOP\n")
                await proc.stdin.drain()
        await asyncio.gather(*(expect(p, "RESULT", timeout_s + 120) for p in procs))
        await asyncio.gather(*(asyncio.wait_for(p.wait(), 60) for p in procs))
        t_end, cpu1, main1 = time.time(), process_cpu(), main_thread_cpu()
        watcher.cancel()
    except BaseException:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        for i, log in enumerate(logs):
            log.close()
            print((workdir / f"{name}-{i}.log").read_text()[-3000:], file=sys.stderr)
        raise
    log_lines: list[str] = []
    for i, log in enumerate(logs):
        log.close()
        for line in (workdir / f"{name}-{i}.log").read_text(errors="replace").splitlines():
            if any(word in line for word in ("WARNING", "ERROR", "Traceback", "failed")):
                log_lines.append(f"client{i}: {line}"[:300])
    # Counts, once every client has closed: their set-up and close-time calls are in.
    sqs_counts = harness.moto.actions("sqs")
    moto_sqs = harness.timing.summary(t_gate, t_end)
    published_file = workdir / f"{name}-published.json"
    emu = await harness.emulator.call(
        "finish", name=name, prefix=f"s3://{BUCKET}/{name}/", published_file=str(published_file)
    )
    published = json.loads(published_file.read_text())
    datas = [json.loads(f.read_text()) for f in files]
    # Messages left.
    left: dict[str, Any] = {}
    if scenario == "a":
        left["at_last_result"] = datas[0].get("depth_at_last_result")
        left["before_close"] = datas[0].get("depth_before_close")
        left["drain_s"] = datas[0].get("drain_s")
    if shared_queue is not None:
        left["after_close"] = await depth(harness.sqs, shared_queue)
        if scenario == "d":  # (others' messages stay: they are not the client's to delete)
            left["others"] = args.foreign
        for arn in subscriptions:
            await harness.sns.unsubscribe(SubscriptionArn=arn)
        await harness.sqs.delete_queue(QueueUrl=shared_queue)
    else:
        left["at_last_result"] = [d.get("depth_at_last_result") for d in datas]
        left["before_close"] = [d.get("depth_before_close") for d in datas]
        left["drain_s"] = [d.get("drain_s") for d in datas]
        listed = await harness.sqs.list_queues(QueueNamePrefix=queue_prefix)
        left["queues_after_close"] = len(listed.get("QueueUrls", []))
        remaining = 0
        for topic in (success, error):
            subs = await harness.sns.list_subscriptions_by_topic(TopicArn=topic)
            remaining += len(subs.get("Subscriptions", []))
        left["subscriptions_after_close"] = remaining
    for topic in (success, error):
        await harness.sns.delete_topic(TopicArn=topic)
    seconds = max(1e-9, t_end - t_gate)
    server = {
        "sqs_sns_moto": {
            **moto_sqs,
            "cpu_pct": round((cpu1 - cpu0) / seconds * 100, 1),
            "harness_loop_cpu_pct": round((main1 - main0) / seconds * 100, 1),
        },
        "s3_moto_and_emulator": {
            **emu["timing"],
            "cpu_pct": emu["cpu_pct"],
            "emulator_loop_cpu_pct": emu["loop_cpu_pct"],
        },
        "endpoint_stats": emu["stats"],
        "arrived_at_gate": arrived,
        "machine": watch.summary(),
    }
    row = summarize(
        scenario=scenario,
        n=n,
        released=released,
        args=args,
        datas=datas,
        s3_counts=emu["s3"],
        sqs_counts=sqs_counts,
        published=published,
        left=left,
        server=server,
        times={"start": t_start, "gate": t_gate, "end": t_end},
        endpoint=name,
    )
    if args.trace and harness.timing.receives is not None:
        row["moto_receives"] = [r for r in harness.timing.receives if r[0] >= t_start]
        row["published"] = published
    row["client_log"] = {"lines": len(log_lines), "first": log_lines[:40]}
    if log_lines:
        row["notes"].append(f"{len(log_lines)} warning/error lines in the client logs")
    return row


def summarize(
    *,
    scenario: str,
    n: int,
    released: int,
    args: argparse.Namespace,
    datas: list[dict[str, Any]],
    s3_counts: dict[str, int],
    sqs_counts: dict[str, int],
    published: dict[str, list[float]],
    left: dict[str, Any],
    server: dict[str, Any],
    times: dict[str, float],
    endpoint: str,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "scenario": scenario,
        "scenario_desc": SCENARIOS[scenario],
        "n": n,
        "released": released,
        "endpoint": endpoint,
        "clients": len(datas),
        "release_rate": args.release_rate,
        "messages": "SNS-wrapped" if args.sns_wrapped and scenario != "c" else "raw",
        "notes": [],
    }
    resolved: dict[str, float] = {}
    submitted: dict[str, float] = {}
    errors: Counter[str] = Counter()
    harness_sqs: Counter[str] = Counter()
    for data in datas:
        resolved.update(data["resolved"])
        submitted.update(data["submitted_at"])
        errors.update(data["errors"])
        errors.update({f"submit:{k}": v for k, v in data["submit_errors"].items()})
        harness_sqs.update(data["harness_sqs"])
        if data.get("timed_out"):
            row["notes"].append(f"{data['name']} timed out before its last result")
    row["submitted"] = len(submitted)
    row["resolved"] = len(resolved)
    row["errors"] = dict(errors)
    # S3: reads of the endpoint's output and failure prefixes, by the S3 moto server.
    reads = s3_counts["GET"] + s3_counts["HEAD"] + s3_counts["LIST"]
    row["s3_counts"] = {k: s3_counts[k] for k in ("GET", "HEAD", "LIST", "PUT")}
    # Per inference: per result released (every one, unless --release).
    row["s3_reads_per_inference"] = round(reads / released, 4)
    # SQS: every request the SQS moto server saw, minus the depth checks of the client processes.
    sqs = {a: c for a, c in sqs_counts.items() if a != "total"}
    for action, count in harness_sqs.items():
        sqs[action] = sqs.get(action, 0) - count
    sqs = {a: c for a, c in sorted(sqs.items()) if c}
    row["sqs_counts"] = sqs
    row["sqs_per_inference"] = round(sum(sqs.values()) / released, 4)
    setup = sum(c for a, c in sqs.items() if a not in MAIN_ACTIONS)
    row["sqs_by_action_per_inference"] = {
        **{a: round(sqs.get(a, 0) / released, 4) for a in MAIN_ACTIONS},
        "set-up and other": round(setup / released, 4),
    }
    # Detection latency: resolved (done callback) minus the Publish call's start.
    latencies, queue_latencies, publish_s, lifetimes = [], [], [], []
    for inference_id, t_resolved in resolved.items():
        pub = published.get(inference_id)
        if pub is None:
            continue
        latencies.append(t_resolved - pub[0])
        queue_latencies.append(t_resolved - pub[1])
        publish_s.append(pub[1] - pub[0])
        if inference_id in submitted:
            lifetimes.append(t_resolved - submitted[inference_id])
    row["detection_s"] = dist(latencies)
    row["detection_from_publish_return_s"] = dist(queue_latencies)
    row["publish_call_s"] = dist(publish_s)
    row["submit_to_result_s"] = dist(lifetimes, digits=1)
    if len(resolved) - len(latencies):
        row["notes"].append(f"{len(resolved) - len(latencies)} results had no publish record")
    # In flight together? Timing of the phases.
    t_submit_start = min(d["t_submit_start"] for d in datas)
    t_submit_end = max(d["t_submit_end"] for d in datas)
    starts = [p[0] for p in published.values()]
    first_publish, last_publish = min(starts, default=math.nan), max(starts, default=math.nan)
    row["all_in_flight_together"] = bool(t_submit_end < first_publish)
    row["arrived_at_gate"] = server["arrived_at_gate"]
    row["submit_s"] = round(t_submit_end - t_submit_start, 2)
    row["submit_rate"] = round(len(submitted) / max(1e-9, t_submit_end - t_submit_start), 1)
    row["publish_span_s"] = round(last_publish - first_publish, 2)
    row["publish_rate"] = round(len(published) / max(1e-9, last_publish - first_publish), 1)
    row["last_result_after_last_publish_s"] = round(
        max(resolved.values(), default=math.nan) - last_publish, 3
    )
    row["wall_s"] = round(times["end"] - times["start"], 1)
    row["open_s"] = [d["open_s"] for d in datas]
    row["close_s"] = [d["close_s"] for d in datas]
    # Messages left.
    row["left"] = left
    if "after_close" in left:
        row["messages_left"] = sum(left["after_close"].values()) - left.get("others", 0)
        if left.get("at_last_result"):
            row["messages_at_last_result"] = sum(left["at_last_result"].values())
    else:
        row["messages_left"] = sum(sum(d.values()) for d in left["before_close"] if d)
        row["messages_at_last_result"] = sum(sum(d.values()) for d in left["at_last_result"] if d)
        if left["queues_after_close"] or left["subscriptions_after_close"]:
            row["notes"].append(
                f"after close: {left['queues_after_close']} queue(s), "
                f"{left['subscriptions_after_close']} subscription(s) left"
            )
    # The clients.
    row["client_cpu_ms_per_inference"] = round(
        sum(d["cpu_s"] for d in datas) / max(1, len(submitted)) * 1000, 2
    )
    row["client_cpu_waiting_ms_per_inference"] = round(
        sum(d["cpu_s"] - d["cpu_submit_s"] for d in datas) / max(1, len(submitted)) * 1000, 2
    )
    row["client_loop_lag_waiting_ms"] = [d["loop_lag_waiting_ms"] for d in datas]
    row["client_gc"] = [d.get("gc") for d in datas]
    row["client_stalls"] = [d.get("stall_stacks") for d in datas]
    full = [g["waiting"]["gen2"] for g in row["client_gc"] if g]
    if full:
        row["notes"].append(
            "clients' full collections while waiting: "
            + ", ".join(f"{f['count']} (longest {f['max_ms']:g} ms)" for f in full)
        )
    own = [
        s
        for stalls in row["client_stalls"]
        for s in stalls or []
        if s.get("phase") == "waiting" and (s.get("cpu_ms") or 0) >= s["held_ms"] / 2
    ]
    if own:
        longest = max(own, key=lambda s: s["held_ms"])
        top = longest["stacks"][0]["stack"][:200] if longest["stacks"] else "no sample"
        row["notes"].append(
            f"clients' stalls over 100 ms while waiting, their own CPU: {len(own)}, the "
            f"longest {longest['held_ms']} ms (gen-2 GC {longest['gc_ms']['gen2']:g} ms; "
            f"`{top}`)"
        )
    row["engine_stats"] = [d["engine_stats"] for d in datas]
    if any(d.get("trace") for d in datas):
        row["trace"] = {d["name"]: d["trace"] for d in datas}
    row["source_stats"] = [d["source_stats"] for d in datas]
    found_s3 = sum(
        c for d in datas for k, c in d["engine_stats"].items() if k.startswith("found_by_")
    ) - sum(d["engine_stats"].get("found_by_notify", 0) for d in datas)
    row["found_by_s3_safety_net"] = found_s3
    row["server"] = server
    # Targets.
    p95 = row["detection_s"]["p95"]
    verdicts = {
        "s3": row["s3_reads_per_inference"] <= TARGETS["s3"],
        "sqs": row["sqs_per_inference"] <= TARGETS["sqs"],
        "p95": p95 is not None and p95 < TARGETS["p95_s"],
        "left": row["messages_left"] == TARGETS["left"],
    }
    if len(resolved) < released:
        row["notes"].append(f"only {len(resolved):,} of {released:,} resolved")
    if released < n:
        row["notes"].append(
            f"{released:,} of the {n:,} in flight released; the rest pending at close"
        )
    if errors:
        row["notes"].append(f"errors: {dict(errors)}")
    if not row["all_in_flight_together"]:
        row["notes"].append("a result was published before the last submission")
    if found_s3 or reads:
        row["notes"].append(
            f"S3 safety net: {s3_counts['LIST']} LIST, {s3_counts['GET']} GET, "
            f"{s3_counts['HEAD']} HEAD; {found_s3} results found in S3 first; results came "
            f"up to {row['submit_to_result_s']['max']} s after submission (safety_net: 60 s)"
        )
    messages = sum(st.get("messages", 0) for st in row["source_stats"])
    receives = sum(st.get("receive", 0) for st in row["source_stats"])
    foreign = sum(st.get("foreign", 0) for st in row["source_stats"])
    row["messages_per_receive"] = round(messages / max(1, receives), 2)
    row["receipts_per_message"] = round(messages / max(1, len(published)), 2)
    if foreign:
        row["notes"].append(
            f"{foreign:,} receipts of the other client's messages (given back), "
            f"{row['receipts_per_message']} receipts per message"
        )
    machine = server["machine"]
    if machine["pytest_seen_s"] or (machine["other_cores_mean"] or 0) > 0.15:
        row["notes"].append(
            f"OTHER LOAD on the machine: {machine['other_cores_mean']} cores mean, "
            f"{machine['other_cores_max']} max, pytest alive {machine['pytest_seen_s']} s "
            f"of {machine['samples']}"
        )
    row["verdicts"] = verdicts
    missed = [k for k, v in verdicts.items() if not v]
    missed += ["resolved"] if len(resolved) < released else []
    row["verdict"] = "PASS" if not missed else "MISS: " + ", ".join(missed)
    return row


# =============================================================================================
# Report
# =============================================================================================


def fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.3f}".rstrip("0").rstrip(".") if abs(x) < 100 else f"{x:,.0f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def mark(ok: bool) -> str:
    return "PASS" if ok else "**MISS**"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| scenario | load | resolved | S3 reads / inf. | SQS req / inf. | "
        "Receive / DeleteBatch / VisibilityBatch / set-up+other per inf. | "
        "detection p50 / p95 / max (s) | messages left | results / s | "
        "moto CPU % (SQS+SNS; S3+emulator) | verdict |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        by = r["sqs_by_action_per_inference"]
        d = r["detection_s"]
        v = r["verdicts"]
        srv = r["server"]
        left = fmt(r["messages_left"])
        released = f", {r['released']:,} released" if r.get("released", r["n"]) < r["n"] else ""
        if "messages_at_last_result" in r:
            left += f" ({fmt(r['messages_at_last_result'])} at last result)"
        lines.append(
            f"| {r['scenario']}: {r['scenario_desc']} | {r['n']:,} in flight{released} "
            f"| {r['resolved']:,} "
            f"| {fmt(r['s3_reads_per_inference'])} {mark(v['s3'])} "
            f"| {fmt(r['sqs_per_inference'])} {mark(v['sqs'])} "
            f"| {fmt(by['ReceiveMessage'])} / {fmt(by['DeleteMessageBatch'])} / "
            f"{fmt(by['ChangeMessageVisibilityBatch'])} / {fmt(by['set-up and other'])} "
            f"| {fmt(d['p50'])} / {fmt(d['p95'])} / {fmt(d['max'])} {mark(v['p95'])} "
            f"| {left} {mark(v['left'])} "
            f"| {fmt(r['publish_rate'])} "
            f"| {fmt(srv['sqs_sns_moto']['cpu_pct'])}; "
            f"{fmt(srv['s3_moto_and_emulator']['cpu_pct'])} "
            f"| {r['verdict'].replace('MISS', '**MISS**')} |"
        )
    lines.append("")
    for r in rows:
        facts = [
            f"submitted in {r['submit_s']} s ({fmt(r['submit_rate'])}/s)",
            "all in flight together" if r["all_in_flight_together"] else "NOT all in flight",
            f"{r['messages_per_receive']} messages per receive",
            f"detection from Publish's return p50 / p95 "
            f"{fmt(r['detection_from_publish_return_s']['p50'])} / "
            f"{fmt(r['detection_from_publish_return_s']['p95'])} s",
            f"client CPU {fmt(r['client_cpu_ms_per_inference'])} ms / inf.",
        ]
        lines.append(f"- {r['scenario']}, {r['n']:,}: " + "; ".join(facts + r["notes"]) + ".")
    return "\n".join(lines)


def header_line(meta: dict[str, Any]) -> str:
    return (
        f"Notification benchmark {meta['date']}{' (quick)' if meta['quick'] else ''}: "
        f"{meta['cpus']} CPUs, Python {meta['python']}, moto {meta['moto']}, "
        f"sagemaker-async {meta['library']['version']} at {meta['library']['git']}; "
        f"results released at {meta['release_rate']:g}/s; {meta['messages']} messages in "
        f"a and b; {meta['total_s'] / 60:.1f} min. Requests counted by the moto servers "
        "(EmbeddedS3)."
    )


def library_info() -> dict[str, Any]:
    import sagemaker_async

    git = subprocess.run(
        ["git", "-C", str(HERE), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "version": getattr(sagemaker_async, "__version__", "?"),
        "path": sagemaker_async.__file__,
        "git": git.stdout.strip() or None,
    }


BRIEF = (
    "resolved",
    "s3_reads_per_inference",
    "sqs_per_inference",
    "sqs_counts",
    "detection_s",
    "messages_left",
    "submit_rate",
    "publish_rate",
    "found_by_s3_safety_net",
    "wall_s",
    "verdict",
    "notes",
)


def is_disturbed(row: dict[str, Any]) -> bool:
    """Did other processes take a noticeable share of the machine during the scenario?"""
    machine = row["server"]["machine"]
    samples = max(1, machine["samples"])
    return bool(
        (machine["other_cores_mean"] or 0) > 0.25 or machine["pytest_seen_s"] > samples / 10
    )


async def wait_quiet(limit_s: float, own: list[int]) -> None:
    """Wait (at most ``limit_s``) until no pytest runs and other processes use < 0.25 cores.

    The machine may be shared (test runs, other benchmarks): a scenario measured meanwhile
    would measure them too.
    """
    waited = time.monotonic()
    said = False
    while time.monotonic() - waited < limit_s:
        watch = LoadWatch(own)
        task = asyncio.get_running_loop().create_task(watch.run())
        await asyncio.sleep(2.2)
        task.cancel()
        busy = watch.summary()
        if not watch.pytest_alive() and (busy["other_cores_mean"] or 0) < 0.25:
            return
        if not said:
            print(f"    waiting for other processes to finish ({busy})", file=sys.stderr)
            said = True
        await asyncio.sleep(5)


async def fill_with_others(sqs: Any, queue_url: str, count: int) -> None:
    """Put ``count`` messages that are not the client's in the queue: half notifications of
    inferences of someone else, half junk (not SageMaker notifications at all)."""
    for start in range(0, count, 10):
        entries = []
        for i in range(start, min(start + 10, count)):
            notice = {
                "eventSource": "aws:sagemaker",
                "invocationStatus": "Completed",
                "inferenceId": f"someone-else-{uuid.uuid4()}",
                "responseParameters": {"outputLocation": f"s3://elsewhere/out/{i}.out"},
            }
            body = json.dumps(notice) if i % 2 == 0 else f"junk {i}"
            entries.append({"Id": str(i - start), "MessageBody": body})
        await sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)


def speed_up_moto_sqs() -> None:
    """Make moto's SQS cost O(1) per message handled again, instead of O(queue depth) x more.

    Two things in moto 5.2.5 make every SQS call slower the deeper the queue, so that any
    backlog grows itself (measured here, one send + receive + delete of 10 messages: 32 ms
    on an empty queue, 625 ms with 500 messages waiting, 2,150 ms with 2,000):

    - each message a ReceiveMessage returns is checked against the retention period by
      computing *every* queue attribute, three of which scan the whole queue. No message here
      lives near the retention period (4 days): the check is made a no-op;
    - every visibility check (each message, each call) reads the clock through datetime
      arithmetic (``unix_time``: ``utcnow() - utcfromtimestamp(0)``), ~5 us a time: replaced
      with ``time.time()``, the same value.

    With both, that cycle costs 30 ms empty, 44 ms at 500, 66 ms at 2,000. This changes
    moto's speed only, in this process only (``--stock-moto`` keeps moto as it is); what is
    counted, and how SQS behaves, are unchanged.
    """
    import moto.sqs.models as sqs_models

    def always_valid(self: Any, queue_name: str, message: Any) -> bool:
        return True

    slow_seconds, slow_millis = sqs_models.unix_time, sqs_models.unix_time_millis

    def unix_time(moment: Any = None) -> float:
        return slow_seconds(moment) if moment is not None else time.time()

    def unix_time_millis(moment: Any = None) -> float:
        return slow_millis(moment) if moment is not None else time.time() * 1000.0

    sqs_models.SQSBackend.is_message_valid_based_on_retention_period = always_valid  # type: ignore[method-assign]
    sqs_models.unix_time = unix_time
    sqs_models.unix_time_millis = unix_time_millis


async def main(args: argparse.Namespace) -> None:
    import aiobotocore.session
    import moto

    from sagemaker_async.emulator import EmbeddedS3

    if args.reruns is None:
        args.reruns = 0 if args.quick else 1
    loads = [int(x) for x in args.loads.split(",")] if args.loads else None
    loads = loads or list(QUICK_LOADS if args.quick else FULL_LOADS)
    scenarios = args.scenarios.split(",") if args.scenarios else list(SCENARIOS)
    if set(scenarios) - set(SCENARIOS):
        raise SystemExit(f"scenarios are {', '.join(SCENARIOS)}")
    tag = args.tag or ("quick" if args.quick else "custom" if args.loads or args.scenarios else "")
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    if not args.stock_moto:
        speed_up_moto_sqs()
    embedded = EmbeddedS3().start()
    timing = Timing.install(embedded)
    if args.trace:
        timing.receives = []
    emulator = Emulator()
    session = aiobotocore.session.get_session()
    session.set_credentials(HARNESS_KEY, HARNESS_KEY)
    try:
        await emulator.start(embedded.url)
        async with (
            session.create_client("sns", region_name=REGION, endpoint_url=embedded.url) as sns,
            session.create_client("sqs", region_name=REGION, endpoint_url=embedded.url) as sqs,
        ):
            harness = Harness(embedded, timing, sns, sqs, emulator)
            with tempfile.TemporaryDirectory(prefix="notify-bench-") as tmp:
                for n in loads:
                    for scenario in scenarios:
                        print(
                            f"[{time.monotonic() - started:6.1f}s] {scenario}: "
                            f"{SCENARIOS[scenario]}, {n:,} in flight",
                            file=sys.stderr,
                            flush=True,
                        )
                        disturbed: list[dict[str, Any]] = []
                        while True:
                            assert emulator.proc is not None
                            await wait_quiet(args.quiet_wait_s, [os.getpid(), emulator.proc.pid])
                            row = await run_scenario(harness, scenario, n, args, Path(tmp))
                            if not is_disturbed(row) or len(disturbed) >= args.reruns:
                                break
                            disturbed.append(row)
                            print(
                                "    disturbed by other processes "
                                f"({row['server']['machine']}): running it again",
                                file=sys.stderr,
                                flush=True,
                            )
                        if disturbed:
                            row["disturbed_attempts"] = [
                                {k: d.get(k) for k in (*BRIEF, "server")} for d in disturbed
                            ]
                            row["notes"].append(
                                f"run again after {len(disturbed)} attempt(s) disturbed by "
                                "other processes (kept in the JSON)"
                            )
                        rows.append(row)
                        brief = {k: row[k] for k in BRIEF}
                        print("    " + json.dumps(brief), file=sys.stderr, flush=True)
    finally:
        await emulator.stop()
        embedded.stop()
    stamp = dt.date.today().isoformat()
    meta = {
        "date": stamp,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "moto": moto.__version__,
        "library": library_info(),
        "quick": args.quick,
        "release_rate": args.release_rate,
        "messages": "SNS-wrapped" if args.sns_wrapped else "raw",
        "moto_sqs_sped_up": not args.stock_moto,
        "submit_concurrency": args.submit_concurrency,
        "max_connections": args.max_connections,
        "targets": TARGETS,
        "total_s": round(time.monotonic() - started, 1),
    }
    text = table(rows)
    header = header_line(meta)
    stem = f"notifications-{stamp}" + (f"-{tag}" if tag else "")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (RESULTS / f"{stem}.md").write_text(f"# {header}\n\n{text}\n")
    print(header)
    print()
    print(text)
    print()
    print(f"wrote {RESULTS / stem}.json, .md")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="200 and 800 instead (no reruns)")
    parser.add_argument("--loads", help="comma-separated inference counts (default 1000,10000)")
    parser.add_argument("--scenarios", help="comma-separated, of a, b, c, d (default: all)")
    parser.add_argument(
        "--foreign",
        type=int,
        default=FOREIGN,
        help=f"scenario d: messages of others in the queue from the start (default {FOREIGN})",
    )
    parser.add_argument(
        "--release-rate",
        type=float,
        default=50.0,
        help="results per second once everything is submitted (default 50)",
    )
    parser.add_argument(
        "--sns-wrapped",
        action="store_true",
        help="a and b: subscribe the shared queue without RawMessageDelivery",
    )
    parser.add_argument("--submit-concurrency", type=int, default=200)
    parser.add_argument("--max-connections", type=int, default=200)
    parser.add_argument(
        "--drain-s", type=float, default=5.0, help="topics mode: wait for the queue to empty"
    )
    parser.add_argument(
        "--release",
        type=int,
        help="answer only the first this many of each load (the others stay in flight)",
    )
    parser.add_argument(
        "--settle-s",
        type=float,
        default=10.0,
        help="with --release: how long the clients wait after the last result was published",
    )
    parser.add_argument(
        "--reruns",
        type=int,
        help="run a scenario again (at most this often) when other processes disturbed it "
        "(default 1; quick: 0)",
    )
    parser.add_argument(
        "--quiet-wait-s",
        type=float,
        default=900.0,
        help="before each scenario, wait at most this long for pytest runs and other busy "
        "processes to end (default 900)",
    )
    parser.add_argument("--tag", help="suffix of the output files (default: quick/custom)")
    parser.add_argument(
        "--stock-moto",
        action="store_true",
        help="leave moto's SQS as it is (see speed_up_moto_sqs: slow once messages queue up)",
    )
    parser.add_argument(
        "--trace", action="store_true", help="record each message's handling in the JSON"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--emulator", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.child:
        asyncio.run(child(json.loads(arguments.child)))
    elif arguments.emulator:
        asyncio.run(emulator_process(arguments.emulator))
    else:
        asyncio.run(main(arguments))
