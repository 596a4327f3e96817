"""Notification benchmark: what it costs to learn results from SageMaker's SNS notifications.

Everything runs on 127.0.0.1 with fake credentials. This process runs the embedded moto server
(``EmbeddedS3``: S3, SQS, SNS, counting every request) and the emulator
(``LocalAsyncEndpoint``), which writes each output to S3 and publishes its notification (the
response inside: IncludeInferenceResponseIn both topics) to SNS; moto delivers it to SQS. Each
client under test runs in a process of its own (``--child``), so its CPU is its own.

Scenarios (each with fresh topics, endpoint and queues):

- ``a``: one client reading one queue that the benchmark subscribed to both topics
  (``NotificationConfig(queue_url=)``, SNS-wrapped messages);
- ``b``: two clients (processes) sharing that one queue, each submitting half;
- ``c``: two clients, each with its own filtered queue (``NotificationConfig(topics=)``).

Loads: 1,000 and 10,000 inferences, all genuinely in flight together: the model holds every
request until all clients have submitted everything, then releases them at ``--release-rate``
per second (so results arrive as a steady stream that SQS must carry, not all at one instant).

    python benchmarks/notifications.py            # 1,000 and 10,000 x a, b, c (~10 min)
    python benchmarks/notifications.py --quick    # 200 and 2,000 x a, b, c (~1.5 min)
    python benchmarks/notifications.py --loads 1000 --scenarios a,c

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

HERE = Path(__file__).parent
RESULTS = HERE / "results"
REGION = "us-east-1"
BUCKET = "sagemaker-async-emulator"  # the emulator's default output bucket
# Who signed a request (the access key): clients sign with the emulator's credentials (they
# must, to invoke it); the emulator's own S3/SNS calls and this harness's calls are told apart.
CLIENT_KEY = "testing"
EMULATOR_KEY = "emulator"
HARNESS_KEY = "harness"
S3_KINDS = ("GET", "HEAD", "LIST", "PUT", "OTHER")
TARGETS = {"s3": 0.1, "sqs": 0.5, "p95_s": 0.5, "left": 0}
SETUP_ACTIONS = (
    "CreateQueue",
    "GetQueueAttributes",
    "SetQueueAttributes",
    "TagQueue",
    "ListQueues",
    "ListQueueTags",
    "DeleteQueue",
)
SCENARIOS = {
    "a": "one client, one queue (queue_url)",
    "b": "two clients sharing one queue (queue_url)",
    "c": "two clients, a filtered queue each (topics)",
}
FULL_LOADS = (1000, 10_000)
QUICK_LOADS = (200, 2000)


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


# =============================================================================================
# The client process
# =============================================================================================


async def child(spec: dict[str, Any]) -> None:
    """One AsyncInferenceClient under test: open, submit, wait for every result, close."""
    import aiobotocore.session

    from sagemaker_async import AsyncInferenceClient, InferenceFailedError, NotificationConfig

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    out: dict[str, Any] = {"name": spec["name"], "harness_sqs": Counter()}
    lags: list[tuple[float, float]] = []

    async def ticker() -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            lags.append((time.time(), max(0.0, loop.time() - before - 0.01)))

    tick = asyncio.get_running_loop().create_task(ticker())
    if spec["queue_url"]:
        notifications = NotificationConfig(queue_url=spec["queue_url"])
    else:
        notifications = NotificationConfig(
            topics=tuple(spec["topics"]), queue_name_prefix=spec["queue_name_prefix"]
        )
    client = AsyncInferenceClient(
        region_name=REGION,
        endpoint_url=spec["runtime_url"],
        s3_endpoint_url=spec["moto_url"],
        sqs_endpoint_url=spec["moto_url"],
        sns_endpoint_url=spec["moto_url"],
        notifications=notifications,
        max_connections=spec["max_connections"],
    )
    n = spec["n"]
    resolved: dict[str, float] = {}
    submitted: dict[str, float] = {}
    errors: Counter[str] = Counter()
    all_done = asyncio.Event()

    def done(handle: Any) -> None:
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
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "GO"
    cpu0, t_submit = cpu(), time.time()
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
    out["submitted"] = len(submitted)
    out["submit_errors"] = dict(submit_errors)
    print("SUBMITTED", flush=True)
    if len(submitted) < n:
        n = len(submitted)
        if len(resolved) >= n:
            all_done.set()
    try:
        await asyncio.wait_for(all_done.wait(), spec["timeout_s"])
    except asyncio.TimeoutError:
        out["timed_out"] = True
    out["t_last_result"] = max(resolved.values(), default=None)
    out["cpu_s"] = round(cpu() - cpu0, 3)
    # Own queue (topics mode): is it empty after the last result? (It is deleted at close.)
    if not spec["queue_url"] and client.notification_queue_url:
        session = aiobotocore.session.get_session()
        session.set_credentials(HARNESS_KEY, HARNESS_KEY)
        async with session.create_client(
            "sqs", region_name=REGION, endpoint_url=spec["moto_url"]
        ) as sqs:
            out["depth_at_last_result"] = await depth(sqs, client.notification_queue_url)
            out["harness_sqs"]["GetQueueAttributes"] += 1
            waited = time.time()
            left = out["depth_at_last_result"]
            while sum(left.values()) and time.time() - waited < spec["drain_s"]:
                await asyncio.sleep(0.1)
                left = await depth(sqs, client.notification_queue_url)
                out["harness_sqs"]["GetQueueAttributes"] += 1
            out["depth_before_close"] = left
            out["drain_s"] = round(time.time() - waited, 2)
    engine = getattr(client, "_engine", None)
    out["engine_stats"] = dict(getattr(engine, "stats", {}))
    out["source_stats"] = dict(getattr(getattr(engine, "_notices", None), "stats", {}))
    t_close = time.time()
    await client.aclose()
    out["close_s"] = round(time.time() - t_close, 3)
    tick.cancel()
    waiting = [lag for t, lag in lags if t >= out["t_submit_end"]]
    out["loop_lag_waiting_ms"] = dist(waiting, 1000, 1)
    out["resolved"] = resolved
    out["submitted_at"] = submitted
    out["errors"] = dict(errors)
    Path(spec["result_file"]).write_text(json.dumps(out))
    print("RESULT", flush=True)


async def depth(sqs: Any, url: str) -> dict[str, int]:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    answer = await sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)
    return {name: int(answer["Attributes"][name]) for name in names}


# =============================================================================================
# The server side: moto with a timing middleware, the emulator with a gated model
# =============================================================================================


class Timing:
    """WSGI middleware in front of EmbeddedS3's counter: who sent what, and moto's time on it.

    Sorts each request by signer (access key) and ``(service, action)``: S3 kinds and SQS
    actions as EmbeddedS3 counts them; SNS (a query-protocol service) by the ``Action`` in
    its body, which EmbeddedS3 does not read.
    """

    def __init__(self, app: Any) -> None:
        from sagemaker_async.emulator._s3 import classify_request

        self._app = app
        self._classify = classify_request
        self._lock = threading.Lock()
        self.records: list[tuple[float, str, str, str, float]] = []  # end, who, svc, act, s
        self.in_flight = 0
        self.max_in_flight = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        started = time.perf_counter()
        service, action = self._classify(environ)
        if service in S3_KINDS:  # an S3 request: (kind, path)
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
        try:
            return self._app(environ, start_response)
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self.in_flight -= 1
                self.records.append((time.time(), who, service, action, elapsed))

    def reset(self) -> None:
        with self._lock:
            self.records = []
            self.max_in_flight = self.in_flight

    def snapshot(self) -> list[tuple[float, str, str, str, float]]:
        with self._lock:
            return list(self.records)


def thread_cpu(native_id: int) -> float:
    """CPU seconds of one thread of this process (Linux /proc)."""
    try:
        with open(f"/proc/self/task/{native_id}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return math.nan


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Gate:
    """The model: hold every request until the gate opens, then release them at ``rate``/s.

    Request k (in the order the model received them) completes ``hold + k / rate`` seconds
    after the gate opens, so every inference is in flight together, and results then arrive as
    a steady stream.
    """

    def __init__(self, rate: float, hold: float = 1.0) -> None:
        self.rate = rate
        self.hold = hold
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
        due = self.t_open + self.hold + k / self.rate
        delay = due - asyncio.get_running_loop().time()
        if delay > 0:
            await asyncio.sleep(delay)
        return request.payload, request.content_type or "application/octet-stream"


#: inference id -> (time.time() when the emulator called SNS Publish, when Publish returned)
PUBLISHED: dict[str, tuple[float, float]] = {}


def hook_publish() -> None:
    """Record when the emulator publishes each notification (around its SNS Publish call).

    The message's ``eventTime`` is taken just before, in milliseconds; this has the clock's
    full precision, and the return time too (moto has delivered to SQS by then).
    """
    from sagemaker_async.emulator._endpoint import EmulatedEndpoint

    original = EmulatedEndpoint._publish

    async def _publish(self: Any, topic_arn: str, message: str) -> None:
        inference_id = json.loads(message).get("inferenceId", "")
        began = time.time()
        await original(self, topic_arn, message)
        PUBLISHED[inference_id] = (began, time.time())

    EmulatedEndpoint._publish = _publish  # type: ignore[method-assign]


@dataclass
class Harness:
    """moto, and this benchmark's own SNS/SQS clients (their requests are not counted)."""

    s3: Any  # EmbeddedS3
    timing: Timing
    sns: Any
    sqs: Any
    calls: Counter[str]

    @property
    def url(self) -> str:
        return str(self.s3.url)

    async def call(self, service: str, action: str, **kwargs: Any) -> Any:
        client = self.sns if service == "sns" else self.sqs
        self.calls[f"{service}:{action}"] += 1
        method = "".join("_" + c.lower() if c.isupper() else c for c in action).lstrip("_")
        return await getattr(client, method)(**kwargs)


async def run_scenario(
    harness: Harness, scenario: str, n: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    from sagemaker_async.emulator import (
        ERROR_NOTIFICATION_TOPIC,
        SUCCESS_NOTIFICATION_TOPIC,
        EndpointConfig,
        LocalAsyncEndpoint,
    )

    suffix = uuid.uuid4().hex[:6]
    endpoint_name = f"nb-{scenario}-{n}-{suffix}"
    success = (await harness.call("sns", "CreateTopic", Name=f"ok-{suffix}"))["TopicArn"]
    error = (await harness.call("sns", "CreateTopic", Name=f"err-{suffix}"))["TopicArn"]
    gate = Gate(args.release_rate)
    per_instance = min(n, 1000)
    endpoint = EndpointConfig(
        endpoint_name,
        model=gate,
        success_topic=success,
        error_topic=error,
        include_inference_response_in=(SUCCESS_NOTIFICATION_TOPIC, ERROR_NOTIFICATION_TOPIC),
        instance_count=math.ceil(n / per_instance),
        max_concurrent_invocations_per_instance=per_instance,
    )
    emulator = LocalAsyncEndpoint(
        [endpoint],
        s3_endpoint_url=harness.url,
        s3_credentials=(EMULATOR_KEY, EMULATOR_KEY),
        region=REGION,
    )
    await emulator.start()
    shared_queue: str | None = None
    subscriptions: list[str] = []
    if scenario in ("a", "b"):
        shared_queue = (await harness.call("sqs", "CreateQueue", QueueName=f"nb-{suffix}"))[
            "QueueUrl"
        ]
        arn = (
            await harness.call(
                "sqs", "GetQueueAttributes", QueueUrl=shared_queue, AttributeNames=["QueueArn"]
            )
        )["Attributes"]["QueueArn"]
        for topic in (success, error):
            subscribed = await harness.call(
                "sns",
                "Subscribe",
                TopicArn=topic,
                Protocol="sqs",
                Endpoint=arn,
                ReturnSubscriptionArn=True,
            )
            subscriptions.append(subscribed["SubscriptionArn"])
    clients = 1 if scenario == "a" else 2
    shares = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
    queue_prefix = f"nbq-{suffix}-"
    procs: list[asyncio.subprocess.Process] = []
    files: list[Path] = []
    logs = []
    PUBLISHED.clear()
    harness.s3.reset_counts()
    harness.timing.reset()
    harness.calls.clear()
    t_start = time.time()
    try:
        for i, share in enumerate(shares):
            files.append(workdir / f"{endpoint_name}-{i}.json")
            spec = {
                "name": f"client{i}",
                "n": share,
                "endpoint": endpoint_name,
                "runtime_url": emulator.url,
                "moto_url": harness.url,
                "queue_url": shared_queue,
                "topics": [success, error],
                "queue_name_prefix": queue_prefix,
                "max_connections": args.max_connections,
                "submit_concurrency": args.submit_concurrency,
                "timeout_s": args.timeout_s,
                "drain_s": args.drain_s,
                "result_file": str(files[-1]),
            }
            logs.append((workdir / f"{endpoint_name}-{i}.log").open("wb"))
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--child",
                    json.dumps(spec),
                    env=child_env(),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=logs[-1],
                )
            )

        async def expect(proc: asyncio.subprocess.Process, word: str, timeout: float) -> None:
            assert proc.stdout is not None
            while True:
                line = await asyncio.wait_for(proc.stdout.readline(), timeout)
                if not line:
                    raise RuntimeError(f"a client exited before {word}")
                if line.decode().strip() == word:
                    return

        await asyncio.gather(*(expect(p, "OPEN", 60) for p in procs))
        t_open = time.time()
        for proc in procs:  # every client opened (its queue made): all start submitting at once
            assert proc.stdin is not None
            proc.stdin.write(b"GO\n")
            await proc.stdin.drain()
        await asyncio.gather(*(expect(p, "SUBMITTED", args.timeout_s) for p in procs))
        gate.open()
        t_gate = time.time()
        cpu0, main0 = process_cpu(), thread_cpu(threading.main_thread().native_id or 0)
        await asyncio.gather(*(expect(p, "RESULT", args.timeout_s + 120) for p in procs))
        await asyncio.gather(*(asyncio.wait_for(p.wait(), 60) for p in procs))
        t_end = time.time()
        cpu1, main1 = process_cpu(), thread_cpu(threading.main_thread().native_id or 0)
    except BaseException:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        for i, log in enumerate(logs):
            log.close()
            print((workdir / f"{endpoint_name}-{i}.log").read_text()[-3000:], file=sys.stderr)
        await emulator.aclose()
        raise
    for log in logs:
        log.close()
    # -- counts: taken once every client has closed (set-up and close-time calls included) ----
    prefix = f"s3://{BUCKET}/{endpoint_name}/"
    s3_counts = harness.s3.counts(prefix)
    sqs_all = harness.s3.actions("sqs")
    records = harness.timing.snapshot()
    datas = [json.loads(f.read_text()) for f in files]
    harness_sqs: Counter[str] = Counter()
    for data in datas:
        harness_sqs.update(data["harness_sqs"])
    by_who: Counter[tuple[str, str, str]] = Counter((w, s, a) for _, w, s, a, _ in records)
    sqs = {a: c for a, c in sqs_all.items() if a != "total"}
    for action, count in harness_sqs.items():  # the depth checks of the client processes
        sqs[action] = sqs.get(action, 0) - count
    sqs = {a: c for a, c in sqs.items() if c}
    client_sqs = {a: c for (w, s, a), c in by_who.items() if w == CLIENT_KEY and s == "sqs"}
    sns_by_who = {f"{w}:{a}": c for (w, s, a), c in by_who.items() if s == "sns"}
    # -- messages left ---------------------------------------------------------------------------
    left: dict[str, Any] = {}
    if shared_queue is not None:
        left["after_close"] = await depth_via(harness, shared_queue)
        with contextlib.suppress(Exception):
            for arn in subscriptions:
                await harness.call("sns", "Unsubscribe", SubscriptionArn=arn)
            await harness.call("sqs", "DeleteQueue", QueueUrl=shared_queue)
    else:
        left["at_last_result"] = [d.get("depth_at_last_result") for d in datas]
        left["before_close"] = [d.get("depth_before_close") for d in datas]
        left["drain_s"] = [d.get("drain_s") for d in datas]
        listed = await harness.call("sqs", "ListQueues", QueueNamePrefix=queue_prefix)
        left["queues_after_close"] = len(listed.get("QueueUrls", []))
        remaining = 0
        for topic in (success, error):
            subs = await harness.call("sns", "ListSubscriptionsByTopic", TopicArn=topic)
            remaining += len(subs.get("Subscriptions", []))
        left["subscriptions_after_close"] = remaining
    await emulator.aclose()
    for topic in (success, error):
        with contextlib.suppress(Exception):
            await harness.call("sns", "DeleteTopic", TopicArn=topic)
    return summarize(
        scenario=scenario,
        n=n,
        args=args,
        datas=datas,
        s3_counts=s3_counts,
        sqs=sqs,
        client_sqs=client_sqs,
        sns_by_who=sns_by_who,
        records=records,
        left=left,
        times={"start": t_start, "open": t_open, "gate": t_gate, "end": t_end},
        cpu={"process": cpu1 - cpu0, "main": main1 - main0, "seconds": t_end - t_gate},
        max_in_flight=harness.timing.max_in_flight,
        endpoint=endpoint_name,
    )


async def depth_via(harness: Harness, url: str) -> dict[str, int]:
    harness.calls["sqs:GetQueueAttributes"] += 1
    return await depth(harness.sqs, url)


def summarize(
    *,
    scenario: str,
    n: int,
    args: argparse.Namespace,
    datas: list[dict[str, Any]],
    s3_counts: dict[str, int],
    sqs: dict[str, int],
    client_sqs: dict[str, int],
    sns_by_who: dict[str, int],
    records: list[tuple[float, str, str, str, float]],
    left: dict[str, Any],
    times: dict[str, float],
    cpu: dict[str, float],
    max_in_flight: int,
    endpoint: str,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "scenario": scenario,
        "scenario_desc": SCENARIOS[scenario],
        "n": n,
        "endpoint": endpoint,
        "clients": len(datas),
        "notes": [],
    }
    resolved: dict[str, float] = {}
    submitted: dict[str, float] = {}
    errors: Counter[str] = Counter()
    for data in datas:
        resolved.update(data["resolved"])
        submitted.update(data["submitted_at"])
        errors.update(data["errors"])
        errors.update({f"submit:{k}": v for k, v in data["submit_errors"].items()})
        if data.get("timed_out"):
            row["notes"].append(f"{data['name']} timed out before its last result")
    row["submitted"] = len(submitted)
    row["resolved"] = len(resolved)
    row["errors"] = dict(errors)
    # -- S3 ------------------------------------------------------------------------------------
    reads = s3_counts["GET"] + s3_counts["HEAD"] + s3_counts["LIST"]
    row["s3_counts"] = {k: s3_counts[k] for k in ("GET", "HEAD", "LIST", "PUT")}
    row["s3_reads_per_inference"] = round(reads / n, 4)
    # -- SQS ------------------------------------------------------------------------------------
    total = sum(sqs.values())
    row["sqs_counts"] = dict(sorted(sqs.items()))
    row["sqs_counts_client_signed"] = dict(sorted(client_sqs.items()))
    row["sqs_per_inference"] = round(total / n, 4)
    main = ("ReceiveMessage", "DeleteMessageBatch", "ChangeMessageVisibilityBatch")
    setup = sum(c for a, c in sqs.items() if a not in main)
    row["sqs_by_action_per_inference"] = {
        **{a: round(sqs.get(a, 0) / n, 4) for a in main},
        "set-up and other": round(setup / n, 4),
    }
    row["sns_counts"] = dict(sorted(sns_by_who.items()))
    # -- detection latency ---------------------------------------------------------------------
    latencies, queue_latencies, publish_s, lifetimes = [], [], [], []
    for inference_id, t_resolved in resolved.items():
        published = PUBLISHED.get(inference_id)
        if published is None:
            continue
        latencies.append(t_resolved - published[0])
        queue_latencies.append(t_resolved - published[1])
        publish_s.append(published[1] - published[0])
        if inference_id in submitted:
            lifetimes.append(t_resolved - submitted[inference_id])
    row["detection_s"] = dist(latencies)
    row["detection_from_publish_return_s"] = dist(queue_latencies)
    row["publish_call_s"] = dist(publish_s)
    row["submit_to_result_s"] = dist(lifetimes, digits=2)
    unmatched = len(resolved) - len(latencies)
    if unmatched:
        row["notes"].append(f"{unmatched} results had no publish record")
    # -- in flight together? ----------------------------------------------------------------------
    t_submit_start = min(d["t_submit_start"] for d in datas)
    t_submit_end = max(d["t_submit_end"] for d in datas)
    first_publish = min((p[0] for p in PUBLISHED.values()), default=math.nan)
    last_publish = max((p[0] for p in PUBLISHED.values()), default=math.nan)
    last_result = max(resolved.values(), default=math.nan)
    row["all_in_flight_together"] = bool(t_submit_end < first_publish)
    row["submit_s"] = round(t_submit_end - t_submit_start, 2)
    row["submit_rate"] = round(len(submitted) / max(1e-9, t_submit_end - t_submit_start), 1)
    row["publish_span_s"] = round(last_publish - first_publish, 2)
    row["publish_rate"] = round(len(PUBLISHED) / max(1e-9, last_publish - first_publish), 1)
    row["release_rate"] = args.release_rate
    row["last_publish_to_last_result_s"] = round(last_result - last_publish, 3)
    row["wall_s"] = round(times["end"] - times["start"], 1)
    row["open_s"] = [d["open_s"] for d in datas]
    row["close_s"] = [d["close_s"] for d in datas]
    # -- messages left ----------------------------------------------------------------------------
    row["left"] = left
    if "after_close" in left:
        row["messages_left"] = sum(left["after_close"].values())
    else:
        row["messages_left"] = sum(sum(d.values()) for d in left["before_close"] if d)
        row["messages_at_last_result"] = sum(sum(d.values()) for d in left["at_last_result"] if d)
        if left["queues_after_close"] or left["subscriptions_after_close"]:
            row["notes"].append(
                f"after close: {left['queues_after_close']} queue(s), "
                f"{left['subscriptions_after_close']} subscription(s) left"
            )
    # -- the clients ------------------------------------------------------------------------------
    row["client_cpu_ms_per_inference"] = round(
        sum(d["cpu_s"] for d in datas) / max(1, len(submitted)) * 1000, 2
    )
    row["client_loop_lag_waiting_ms"] = [d["loop_lag_waiting_ms"] for d in datas]
    row["engine_stats"] = [d["engine_stats"] for d in datas]
    row["source_stats"] = [d["source_stats"] for d in datas]
    # -- the server (moto + emulator, this process) ------------------------------------------------
    window = [r for r in records if times["gate"] <= r[0] <= times["end"]]

    def server_s(service: str, action: str) -> dict[str, Any]:
        return dist([r[4] for r in window if r[2] == service and r[3] == action], 1000, 1)

    per_second: Counter[int] = Counter(int(r[0]) for r in window)
    row["server"] = {
        "cpu_pct_of_a_core": round(cpu["process"] / max(1e-9, cpu["seconds"]) * 100, 1),
        "moto_threads_cpu_pct": round(
            (cpu["process"] - cpu["main"]) / max(1e-9, cpu["seconds"]) * 100, 1
        ),
        "emulator_loop_cpu_pct": round(cpu["main"] / max(1e-9, cpu["seconds"]) * 100, 1),
        "moto_requests_peak_per_s": max(per_second.values(), default=0),
        "moto_requests_in_flight_max": max_in_flight,
        "moto_ms": {
            "Publish": server_s("sns", "Publish"),
            "PutObject": server_s("s3", "PUT"),
            "DeleteMessageBatch": server_s("sqs", "DeleteMessageBatch"),
            "ChangeMessageVisibilityBatch": server_s("sqs", "ChangeMessageVisibilityBatch"),
            "ReceiveMessage (incl. long-poll wait)": server_s("sqs", "ReceiveMessage"),
        },
    }
    # -- targets ----------------------------------------------------------------------------------
    p95 = row["detection_s"]["p95"]
    verdicts = {
        "s3": row["s3_reads_per_inference"] <= TARGETS["s3"],
        "sqs": row["sqs_per_inference"] <= TARGETS["sqs"],
        "p95": p95 is not None and p95 < TARGETS["p95_s"],
        "left": row["messages_left"] == TARGETS["left"],
    }
    if len(resolved) < n:
        row["notes"].append(f"only {len(resolved):,} of {n:,} resolved")
    if errors:
        row["notes"].append(f"errors: {dict(errors)}")
    if not row["all_in_flight_together"]:
        row["notes"].append("the first result was published before the last submission")
    row["verdicts"] = verdicts
    row["verdict"] = (
        "PASS"
        if all(verdicts.values()) and len(resolved) == n
        else "MISS: " + ", ".join([k for k, v in verdicts.items() if not v] or ["resolved"])
    )
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
        "Receive / DeleteBatch / VisibilityBatch / set-up+other (per inf.) | "
        "detection p50 / p95 / max (s) | left in queue | publish rate (/s) | "
        "moto ms p95: Publish; DeleteBatch | server CPU (% of a core) | verdict |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        by = r["sqs_by_action_per_inference"]
        d = r["detection_s"]
        moto = r["server"]["moto_ms"]
        v = r["verdicts"]
        left = fmt(r["messages_left"])
        if "messages_at_last_result" in r:
            left += f" ({fmt(r['messages_at_last_result'])} at last result)"
        lines.append(
            f"| {r['scenario']}: {r['scenario_desc']} | {r['n']:,} in flight "
            f"| {r['resolved']:,} / {r['n']:,} "
            f"| {fmt(r['s3_reads_per_inference'])} {mark(v['s3'])} "
            f"| {fmt(r['sqs_per_inference'])} {mark(v['sqs'])} "
            f"| {fmt(by['ReceiveMessage'])} / {fmt(by['DeleteMessageBatch'])} / "
            f"{fmt(by['ChangeMessageVisibilityBatch'])} / {fmt(by['set-up and other'])} "
            f"| {fmt(d['p50'])} / {fmt(d['p95'])} / {fmt(d['max'])} {mark(v['p95'])} "
            f"| {left} {mark(v['left'])} "
            f"| {fmt(r['publish_rate'])} "
            f"| {fmt(moto['Publish']['p95'])}; {fmt(moto['DeleteMessageBatch']['p95'])} "
            f"| {fmt(r['server']['cpu_pct_of_a_core'])} "
            f"| {r['verdict'].replace('MISS', '**MISS**')} |"
        )
    return "\n".join(lines)


def header_line(meta: dict[str, Any]) -> str:
    return (
        f"Notification benchmark {meta['date']}{' (quick)' if meta['quick'] else ''}: "
        f"{meta['cpus']} CPUs, Python {meta['python']}, moto {meta['moto']}, "
        f"sagemaker-async {meta['library']['version']} at {meta['library']['git']}; "
        f"release rate {meta['release_rate']:g}/s; {meta['total_s'] / 60:.1f} min. "
        "Requests counted by the embedded moto server (EmbeddedS3)."
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


async def main(args: argparse.Namespace) -> None:
    import aiobotocore.session
    import moto

    from sagemaker_async.emulator import EmbeddedS3

    hook_publish()
    loads = [int(x) for x in args.loads.split(",")] if args.loads else None
    loads = loads or list(QUICK_LOADS if args.quick else FULL_LOADS)
    scenarios = args.scenarios.split(",") if args.scenarios else list(SCENARIOS)
    if set(scenarios) - set(SCENARIOS):
        raise SystemExit(f"scenarios are {', '.join(SCENARIOS)}")
    tag = args.tag or ("quick" if args.quick else "custom" if args.loads or args.scenarios else "")
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    embedded = EmbeddedS3().start()
    timing = Timing(embedded._server.app)  # in front of EmbeddedS3's counter
    embedded._server.app = timing
    session = aiobotocore.session.get_session()
    session.set_credentials(HARNESS_KEY, HARNESS_KEY)
    try:
        async with (
            session.create_client("sns", region_name=REGION, endpoint_url=embedded.url) as sns,
            session.create_client("sqs", region_name=REGION, endpoint_url=embedded.url) as sqs,
        ):
            harness = Harness(embedded, timing, sns, sqs, Counter())
            with tempfile.TemporaryDirectory(prefix="notify-bench-") as tmp:
                for n in loads:
                    for scenario in scenarios:
                        print(
                            f"[{time.monotonic() - started:6.1f}s] {scenario}: "
                            f"{SCENARIOS[scenario]}, {n:,} in flight",
                            file=sys.stderr,
                            flush=True,
                        )
                        row = await run_scenario(harness, scenario, n, args, Path(tmp))
                        rows.append(row)
                        brief = {
                            k: row[k]
                            for k in (
                                "resolved",
                                "s3_reads_per_inference",
                                "sqs_per_inference",
                                "sqs_counts",
                                "detection_s",
                                "messages_left",
                                "submit_rate",
                                "publish_rate",
                                "wall_s",
                                "server",
                                "verdict",
                                "notes",
                            )
                        }
                        print("    " + json.dumps(brief), file=sys.stderr, flush=True)
    finally:
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
    parser.add_argument("--quick", action="store_true", help="200 and 2,000 instead")
    parser.add_argument("--loads", help="comma-separated inference counts (default 1000,10000)")
    parser.add_argument("--scenarios", help="comma-separated, of a, b, c (default: all)")
    parser.add_argument(
        "--release-rate",
        type=float,
        default=500.0,
        help="results per second once everything is submitted (default 500)",
    )
    parser.add_argument("--submit-concurrency", type=int, default=200)
    parser.add_argument("--max-connections", type=int, default=200)
    parser.add_argument("--timeout-s", type=float, default=300.0, help="per client, per phase")
    parser.add_argument(
        "--drain-s", type=float, default=5.0, help="topics mode: wait for the queue to empty"
    )
    parser.add_argument("--tag", help="suffix of the output files (default: quick/custom)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    if arguments.child:
        asyncio.run(child(json.loads(arguments.child)))
    else:
        asyncio.run(main(arguments))
