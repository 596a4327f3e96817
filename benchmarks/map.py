"""Fan-out benchmark: ``AsyncInferenceClient.map`` over 10,000 and 100,000 inputs.

    python benchmarks/map.py            # 10,000 then 100,000 inputs (about 15 minutes)
    python benchmarks/map.py --quick    # 1,000 then 5,000 inputs (under 2 minutes)
    python benchmarks/map.py --sizes 2000 --concurrency 100 --model-s 1

Three processes per run, all on 127.0.0.1 with fake credentials:

- a **server** (this file, ``--serve``): the library's emulator (``LocalAsyncEndpoint`` with one
  ``EndpointConfig``: ``instance_count`` x ``max_concurrent_invocations_per_instance`` workers,
  model: an echo after a real sleep of ``model_s`` +- ``jitter`` (uniform, so that the workers
  never finish in step) writing to the in-memory fake S3 of
  ``fake_s3.py`` (moto cannot keep up: see docs/performance.md), both in one event loop. It
  counts, exactly, the most inferences ever unfinished at the endpoint (received - completed -
  failed, by the emulator's own counters, checked at every submission, where the count can
  only have grown), every S3 request by kind, and samples the endpoint's queue every 0.25 s;
- a **client** (this file, ``--client``): one ``AsyncInferenceClient()`` with the library's
  defaults, iterating ``client.map(endpoint, <generator of json.dumps({"i": i})>,
  max_in_flight=500, content_type="application/json")`` to the end; it checks that every
  outcome is the echo of its input and measures its own RSS (peak: VmHWM), CPU, event-loop
  lag and outcome times. It runs alone in its process, so its memory is its own;
- this **driver**, which starts a fresh server and client per size, and writes
  benchmarks/results/map-<date>[-quick].json and .md (the table is printed too).

The endpoint's nominal capacity is concurrency / model_s inferences per second (default
125 / 1 s): about what the 2-core benchmark machine sustains with the client, the emulator and
the fake S3 on it (see docs/performance.md, "Fan-out with client.map"). Its effective capacity
(concurrency / the workers' measured service time: model + writing the output) is reported too.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import datetime as dt
import gc
import json
import math
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "map.py"
RESULTS = HERE / "results"
ENDPOINT = "map-bench"
MAX_IN_FLIGHT = 500
FULL_SIZES = (10_000, 100_000)
QUICK_SIZES = (1_000, 5_000)
THROUGHPUT_TOLERANCE = 0.03  # steady rate within 3% of the capacity counts as equal
RSS_TOLERANCE = 0.10  # peak RSS at the largest size within 10% of the smallest: flat
COMPETITORS = ("pytest", "notifications.py")
_PAGE = resource.getpagesize()


# -- shared helpers ---------------------------------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def peak_rss_bytes() -> int:
    """VmHWM: the process's peak resident set size."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))]


def child_env(urls: dict[str, str] | None = None) -> dict[str, str]:
    """Fake credentials, no AWS config files, every AWS endpoint on loopback."""
    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k.lower() not in proxies
    }
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        AWS_CONFIG_FILE="/dev/null",
        AWS_SHARED_CREDENTIALS_FILE="/dev/null",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ENDPOINT_URL="http://127.0.0.1:9",  # any other AWS service: a closed local port
        PYTHONUNBUFFERED="1",
    )
    if urls:
        env["AWS_ENDPOINT_URL_S3"] = urls["s3"]
        env["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] = urls["runtime"]
    return env


def competitors() -> list[str]:
    """Other heavy processes on the machine (they would share the 2 CPUs)."""
    found = []
    for name in COMPETITORS:
        done = subprocess.run(["pgrep", "-f", name], capture_output=True, text=True, check=False)
        pids = [p for p in done.stdout.split() if int(p) != os.getpid()]
        if pids:
            found.append(f"{name} ({len(pids)} processes)")
    return found


# -- the server process ----------------------------------------------------------------------
class Tracker:
    """Exact peaks of what is unfinished at the endpoint, and a sampled time series."""

    def __init__(self, endpoint: Any, store: Any, bucket: str) -> None:
        self.endpoint = endpoint
        self.store = store
        self.bucket = bucket
        self.prefix = f"{endpoint.name}/"
        self.written = 0  # output and failure objects written by the endpoint
        self.peak_unfinished = 0  # received - completed - failed (the emulator's counters)
        self.peak_unwritten = 0  # received - objects written (what a client could see)
        self.peak_backlog = 0
        self.samples: list[list[float]] = []
        original_submit = endpoint.submit
        original_put = store.put

        def submit(job: Any) -> None:
            original_submit(job)
            # Only a submission raises the count: checking here catches every peak exactly.
            stats = endpoint.stats()
            unfinished = stats.received - stats.completed - stats.failed
            self.peak_unfinished = max(self.peak_unfinished, unfinished)
            self.peak_unwritten = max(self.peak_unwritten, stats.received - self.written)
            self.peak_backlog = max(self.peak_backlog, stats.backlog)

        def put(bucket: str, key: str, *args: Any, **kwargs: Any) -> Any:
            if bucket == self.bucket and key.startswith(self.prefix):
                self.written += 1
            return original_put(bucket, key, *args, **kwargs)

        # The service time of each job: from a worker taking it to its object written.
        self.service: dict[int, list[float]] = {}  # second -> [jobs ended, their seconds]
        original_process = endpoint._process

        async def process(job: Any) -> None:
            began = time.monotonic()
            try:
                await original_process(job)
            finally:
                row = self.service.setdefault(int(time.time()), [0, 0.0])
                row[0] += 1
                row[1] += time.monotonic() - began

        endpoint.submit = submit  # the app calls endpoint.submit(job): the instance's wins
        endpoint._process = process  # so do the workers (self._process(job))
        store.put = put

    async def sample(self, period: float = 0.25) -> None:
        while True:
            s = self.endpoint.stats()
            self.samples.append(
                [round(time.time(), 3), s.received, s.completed, s.failed, s.backlog, s.in_flight]
            )
            await asyncio.sleep(period)


def jittered_sleep(mean: float, jitter: float, seed: int = 1) -> Any:
    """An echo after ``mean`` seconds +- ``jitter`` of it (uniform): workers never in step."""
    import random

    rng = random.Random(seed)

    async def model(request: Any) -> tuple[bytes, str]:
        await asyncio.sleep(mean * (1 + jitter * (2 * rng.random() - 1)))
        return request.payload, request.content_type or "application/octet-stream"

    return model


async def serve(spec: dict[str, Any]) -> None:
    from aiohttp import web

    from fake_s3 import Store, create_app
    from sagemaker_async.emulator import DEFAULT_BUCKET, EndpointConfig, LocalAsyncEndpoint

    loop = asyncio.get_running_loop()
    store = Store()
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        runners.append(runner)
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    s3_url = await start(create_app(store))
    config = EndpointConfig(
        spec["endpoint"],
        model=jittered_sleep(spec["model_s"], spec["jitter"]),
        instance_count=spec["instances"],
        max_concurrent_invocations_per_instance=spec["per_instance"],
    )
    # (the fake S3 has no CloudWatch: no backlog metrics)
    emulator = LocalAsyncEndpoint([config], s3_endpoint_url=s3_url, metrics_interval=None)
    await emulator.start()
    tracker = Tracker(emulator.endpoint(spec["endpoint"]), store, DEFAULT_BUCKET)
    sampler = loop.create_task(tracker.sample())
    started_cpu, started = cpu_s(), time.time()

    async def stats(request: web.Request) -> web.Response:
        counts = {b: dict(zip(("GET", "HEAD", "LIST", "PUT", "OTHER"), c, strict=True))
                  for b, c in store.counts.items()}  # fmt: skip
        lag = sorted(store.lag)
        body = {
            "time": time.time(),
            "started": started,
            "cpu_s": cpu_s() - started_cpu,
            "rss_bytes": rss_bytes(),
            "peak_rss_bytes": peak_rss_bytes(),
            "endpoint": emulator.stats(spec["endpoint"]).to_dict(),
            "written": tracker.written,
            "peak_unfinished": tracker.peak_unfinished,
            "peak_unwritten": tracker.peak_unwritten,
            "peak_backlog": tracker.peak_backlog,
            "s3_counts": counts,
            "loop_lag_ms": {
                "p99": round((pct(lag, 0.99) or 0) * 1000, 1),
                "max": round((lag[-1] if lag else 0) * 1000, 1),
            },
        }
        if request.query.get("full"):
            tick = 0.1
            per_second: dict[int, list[int]] = {}
            for t, row in store.series.items():
                second = int(t * tick)
                acc = per_second.setdefault(second, [0] * len(row))
                for i, v in enumerate(row):
                    acc[i] += v
            body["s3_per_second"] = sorted([s, *v] for s, v in per_second.items())
            body["samples"] = tracker.samples
            body["service"] = sorted([t, *v] for t, v in tracker.service.items())
        return web.json_response(body)

    admin = web.Application()
    admin.router.add_get("/stats", stats)
    admin_url = await start(admin)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    kind = "uvloop" if "uvloop" in type(loop).__module__ else "asyncio"
    ready = {"s3": s3_url, "runtime": emulator.url, "admin": admin_url, "loop": kind}
    print("READY " + json.dumps(ready), flush=True)
    await stop.wait()
    sampler.cancel()
    await emulator.aclose()
    for runner in runners:
        await runner.cleanup()


def serve_main(spec: dict[str, Any]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(spec))
    else:
        uvloop.run(serve(spec))


# -- the client process ----------------------------------------------------------------------
async def drive(spec: dict[str, Any]) -> dict[str, Any]:
    import sagemaker_async
    from sagemaker_async import AsyncInferenceClient

    # The harness's own records stay small and flat in n (the RSS measured is the client's):
    # lags and full-collection pauses in float arrays, 1,000 traced inputs whatever n is.
    n, lags = spec["n"], array.array("d")
    gc_pauses = array.array("d")  # generation-2 collections only
    gc_began = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_began[0] = time.perf_counter()
        else:
            if info["generation"] == 2:
                gc_pauses.append(time.perf_counter() - gc_began[0])

    async def probe() -> None:
        lp = asyncio.get_running_loop()
        while True:
            before = lp.time()
            await asyncio.sleep(0.01)
            lags.append(max(0.0, lp.time() - before - 0.01))

    rss_before_open = rss_bytes()
    loop = asyncio.get_running_loop()
    out: dict[str, Any] = {"library_version": sagemaker_async.__version__}
    async with AsyncInferenceClient(region_name="us-east-1") as client:
        engine = getattr(client, "_engine", None)  # diagnostics only (heap size, watches)
        scheduler = getattr(engine, "scheduler", None)
        outcomes_seen = 0
        max_in_flight_seen = 0
        submitted = 0
        per_second: list[int] = []
        marks: list[float] = []  # time.time() when each 1% of the outcomes was reached
        step = max(1, n // 100)
        samples: list[list[float]] = []

        async def sample() -> None:
            while True:
                samples.append(
                    [
                        round(time.time(), 3),
                        rss_bytes(),
                        outcomes_seen,
                        scheduler.scheduled if scheduler is not None else -1,
                        engine.watching if engine is not None else -1,
                    ]
                )
                await asyncio.sleep(1.0)

        def progress(p: Any) -> None:
            nonlocal max_in_flight_seen
            max_in_flight_seen = max(max_in_flight_seen, p.in_flight)

        every = max(1, n // 1000)
        traced: dict[int, list[Any]] = {}  # 1,000 inputs: [output key, submitted, yielded]

        def on_submit(index: int, handle: Any) -> None:
            nonlocal submitted
            submitted += 1
            if index % every == 0:
                key = handle.output_location.removeprefix("s3://").partition("/")[2]
                traced[index] = [key, time.time(), None]

        def inputs() -> Any:
            for i in range(n):
                yield json.dumps({"i": i})

        gc.callbacks.append(on_gc)
        tasks = [loop.create_task(probe()), loop.create_task(sample())]
        rss_open, cpu0 = rss_bytes(), cpu_s()
        ok = failed = wrong = 0
        first_error: str | None = None
        t0 = time.time()
        async with contextlib.aclosing(
            client.map(
                ENDPOINT,
                inputs(),
                max_in_flight=spec["max_in_flight"],
                content_type="application/json",
                progress=progress,
                on_submit=on_submit,
            )
        ) as outcomes:
            async for outcome in outcomes:
                outcomes_seen += 1
                second = int(time.time() - t0)
                while len(per_second) <= second:
                    per_second.append(0)
                per_second[second] += 1
                if outcomes_seen % step == 0:
                    marks.append(time.time())
                if outcome.index in traced:
                    traced[outcome.index][2] = time.time()
                if outcome.error is not None:
                    failed += 1
                    first_error = first_error or f"{type(outcome.error).__name__}: {outcome.error}"
                elif outcome.result.body != outcome.input.encode():
                    wrong += 1
                else:
                    ok += 1
        t_end = time.time()
        cpu1 = cpu_s()
        for task in tasks:
            task.cancel()
        gc.callbacks.remove(on_gc)
        rss_end = rss_bytes()
        scheduled_end = scheduler.scheduled if scheduler is not None else None
        watching_end = engine.watching if engine is not None else None
        # What is still alive once map is over (it holds nothing by design): count by type.
        gc.collect()
        alive: dict[str, int] = {}
        for obj in gc.get_objects():
            name = type(obj).__name__
            if name in ("Watch", "InferenceResult", "AsyncInferenceHandle", "_LastLook", "Key"):
                alive[name] = alive.get(name, 0) + 1
        rss_after_gc = rss_bytes()
    full = list(gc_pauses)
    out.update(
        n=n,
        ok=ok,
        failed=failed,
        wrong=wrong,
        first_error=first_error,
        submitted=submitted,
        t_start=t0,
        t_end=t_end,
        wall_s=t_end - t0,
        cpu_s=cpu1 - cpu0,
        process_cpu_s=cpu_s(),
        rss_before_open=rss_before_open,
        rss_open=rss_open,
        rss_end=rss_end,
        rss_after_gc=rss_after_gc,
        peak_rss=peak_rss_bytes(),
        max_in_flight_seen=max_in_flight_seen,
        marks=marks,
        traced=list(traced.values()),
        per_second=per_second,
        samples=samples,
        scheduled_end=scheduled_end,
        watching_end=watching_end,
        alive_after_map=alive,
        loop_lag_ms={
            "p50": round((pct(lags, 0.5) or 0) * 1000, 1),
            "p99": round((pct(lags, 0.99) or 0) * 1000, 1),
            "max": round(max(lags, default=0) * 1000, 1),
        },
        gc_full={
            "count": len(full),
            "max_ms": round(max(full, default=0) * 1000, 1),
            "total_ms": round(sum(full) * 1000, 1),
        },
    )
    return out


def client_main(spec: dict[str, Any]) -> None:
    if spec.get("profile"):
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        data = profiler.runcall(asyncio.run, drive(spec))
        for order in ("tottime", "cumulative"):
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats(order).print_stats(40)
            data[f"profile_{order}"] = text.getvalue()
    else:
        data = asyncio.run(drive(spec))
    Path(spec["result_file"]).write_text(json.dumps(data))
    print(f"RESULT {spec['result_file']}", flush=True)


# -- the driver -------------------------------------------------------------------------------
async def http_json(url: str) -> Any:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url) as response:
        response.raise_for_status()
        return await response.json()


async def run_size(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    capacity = args.concurrency / args.model_s
    server_spec = {
        "endpoint": ENDPOINT,
        "model_s": args.model_s,
        "jitter": args.jitter,
        "instances": args.instances,
        "per_instance": args.concurrency // args.instances,
    }
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "--serve",
        json.dumps(server_spec),
        env=child_env(),
        stdout=asyncio.subprocess.PIPE,
    )
    assert server.stdout is not None
    try:
        line = (await asyncio.wait_for(server.stdout.readline(), 60)).decode()
        if not line.startswith("READY "):
            raise RuntimeError(f"the server did not start: {line!r}")
        urls = json.loads(line[len("READY ") :])
        result_file = workdir / f"client-{n}.json"
        client_spec = {
            "n": n,
            "max_in_flight": args.max_in_flight,
            "result_file": str(result_file),
            "profile": args.profile,
        }
        log_path = workdir / f"client-{n}.log"
        busy_at_start = competitors()
        with log_path.open("wb") as log:
            client = await asyncio.create_subprocess_exec(
                sys.executable,
                str(SCRIPT),
                "--client",
                json.dumps(client_spec),
                env=child_env(urls),
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
            timeout = n / capacity * 3 + 120
            deadline = time.monotonic() + timeout
            assert client.stdout is not None
            reader = asyncio.get_running_loop().create_task(client.stdout.readline())
            busy_seen: set[str] = set(busy_at_start)
            while True:
                done, _ = await asyncio.wait({reader}, timeout=10)
                if done:
                    break
                stats = await http_json(urls["admin"] + "/stats")
                e = stats["endpoint"]
                busy_seen.update(competitors())
                print(
                    f"    {n:,}: {e['completed'] + e['failed']:,} done, received "
                    f"{e['received']:,}, backlog {e['backlog']}, running {e['in_flight']}; "
                    f"server CPU {stats['cpu_s']:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
                if time.monotonic() > deadline:
                    client.kill()
                    break
            await client.wait()
        server_stats = await http_json(urls["admin"] + "/stats?full=1")
        server_stats["writes"] = await http_json(
            f"{urls['s3']}/__admin/writes?bucket=sagemaker-async-emulator&prefix={ENDPOINT}/"
        )
    finally:
        if server.returncode is None:
            server.terminate()
            try:
                await asyncio.wait_for(server.wait(), 20)
            except asyncio.TimeoutError:
                server.kill()
                await server.wait()
    if not result_file.exists():
        tail = log_path.read_text(errors="replace")[-3000:]
        print(tail, file=sys.stderr)
        return {"n": n, "error": f"the client gave no result (exit {client.returncode})"}
    data = json.loads(result_file.read_text())
    return summarize(n, data, server_stats, capacity, args, sorted(busy_seen), urls["loop"])


def summarize(
    n: int,
    c: dict[str, Any],
    s: dict[str, Any],
    capacity: float,
    args: argparse.Namespace,
    busy: list[str],
    server_loop: str,
) -> dict[str, Any]:
    marks = c["marks"]
    lo, hi = marks[9], marks[89]  # 10% and 90% of the outcomes
    steady = (0.8 * n) / (hi - lo) if hi > lo else None
    # The endpoint's workers: share of the concurrency in use over the same window.
    window = [row for row in s["samples"] if lo <= row[0] <= hi]
    busy_share = (
        sum(row[5] for row in window) / (len(window) * args.concurrency) if window else None
    )
    # The endpoint's own pace: its workers' mean service time (model + writing the object).
    served = [row for row in s["service"] if lo <= row[0] < hi]
    jobs, seconds = sum(r[1] for r in served), sum(r[2] for r in served)
    service_s = seconds / jobs if jobs else None
    effective = args.concurrency / service_s if service_s else None
    counts = s["s3_counts"].get("sagemaker-async-emulator", {})
    reads = counts.get("GET", 0) + counts.get("HEAD", 0) + counts.get("LIST", 0)
    total_s3 = sum(counts.values())
    per_s = s["s3_per_second"]
    t0, t1 = c["t_start"], c["t_end"]
    lists = [row[3] for row in per_s if t0 <= row[0] < t1]
    # The client's RSS as the run went on: at 10%, 50%, 100% of the outcomes.
    rss_at = {}
    for share in (0.1, 0.5, 1.0):
        target = share * n
        row = next((r for r in c["samples"] if r[2] >= target), c["samples"][-1])
        rss_at[f"{int(share * 100)}%"] = round(row[1] / 2**20, 1)
    heap_at = {}
    for share in (0.1, 0.5, 1.0):
        row = next((r for r in c["samples"] if r[2] >= share * n), c["samples"][-1])
        heap_at[f"{int(share * 100)}%"] = row[3]
    ideal = n / capacity
    # Where an input's time went: submitted -> its output written (the endpoint's queue and
    # model), then written -> given back by map (detection, the GET, the hand-off).
    writes = s["writes"]
    at_endpoint = [writes[k] - t for k, t, y in c["traced"] if k in writes and y]
    after_write = [y - writes[k] for k, t, y in c["traced"] if k in writes and y]

    def dist(values: list[float]) -> dict[str, float | None]:
        return {
            "mean": round(sum(values) / len(values), 3) if values else None,
            "p50": round(pct(values, 0.5) or 0, 3),
            "p95": round(pct(values, 0.95) or 0, 3),
            "max": round(max(values, default=0), 3),
            "count": len(values),
        }

    return {
        "n": n,
        "ok": c["ok"],
        "failed": c["failed"],
        "wrong": c["wrong"],
        "first_error": c["first_error"],
        "submitted": c["submitted"],
        "wall_s": round(c["wall_s"], 1),
        "ideal_wall_s": round(ideal, 1),
        "capacity_per_s": round(capacity, 1),
        "service_s_mean": round(service_s, 4) if service_s else None,
        "effective_capacity_per_s": round(effective, 1) if effective else None,
        "throughput_overall_per_s": round(n / c["wall_s"], 1),
        "throughput_steady_per_s": round(steady, 1) if steady else None,
        "steady_window_s": [round(lo - t0, 1), round(hi - t0, 1)],
        "endpoint_busy_share_steady": round(busy_share, 4) if busy_share is not None else None,
        "peak_rss_mib": round(c["peak_rss"] / 2**20, 1),
        "rss_open_mib": round(c["rss_open"] / 2**20, 1),
        "rss_end_mib": round(c["rss_end"] / 2**20, 1),
        "rss_after_gc_mib": round(c["rss_after_gc"] / 2**20, 1),
        "rss_at_outcomes_mib": rss_at,
        "engine_heap_at_outcomes": heap_at,
        "engine_heap_end": c["scheduled_end"],
        "engine_watching_end": c["watching_end"],
        "alive_after_map": c["alive_after_map"],
        "submitted_to_written_s": dist(at_endpoint),
        "written_to_yielded_s": dist(after_write),
        "residence_s_littles_law": round(c["max_in_flight_seen"] / steady, 3) if steady else None,
        "peak_unfinished_at_endpoint": s["peak_unfinished"],
        "peak_unwritten_at_endpoint": s["peak_unwritten"],
        "peak_backlog": s["peak_backlog"],
        "max_in_flight_seen_by_map": c["max_in_flight_seen"],
        "s3_counts": counts,
        "s3_client_reads_per_inference": round(reads / n, 3),
        "s3_by_kind_per_inference": {k: round(v / n, 3) for k, v in counts.items()},
        "s3_requests_per_inference": round(total_s3 / n, 3),
        "list_per_s_peak": max(lists, default=0),
        "client_cpu_ms_per_inference": round(c["cpu_s"] / n * 1000, 2),
        "client_cpu_share": round(c["cpu_s"] / c["wall_s"], 3),
        "server_cpu_share": round(s["cpu_s"] / max(1e-9, s["time"] - s["started"]), 3),
        "server_cpu_ms_per_inference": round(s["cpu_s"] / n * 1000, 2),
        "server_peak_rss_mib": round(s["peak_rss_bytes"] / 2**20, 1),
        "server_loop": server_loop,
        "server_loop_lag_ms": s["loop_lag_ms"],
        "client_loop_lag_ms": c["loop_lag_ms"],
        "client_gc_full": c["gc_full"],
        "per_second": c["per_second"],
        "client_samples": c["samples"],
        "server_samples": s["samples"],
        "s3_per_second": per_s,
        "other_load": busy,
        **{k: v for k, v in c.items() if k.startswith("profile_")},
    }


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def verdicts(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    good = [r for r in rows if "error" not in r]
    out: list[dict[str, Any]] = []
    if len(good) >= 2:
        small, big = good[0], good[-1]
        grow = big["peak_rss_mib"] / small["peak_rss_mib"] - 1
        out.append(
            {
                "target": f"client peak RSS flat in the number of inputs ({small['n']:,} -> "
                f"{big['n']:,}: at most +{RSS_TOLERANCE:.0%})",
                "measured": f"{small['peak_rss_mib']:.1f} -> {big['peak_rss_mib']:.1f} MiB "
                f"({grow:+.0%}); during the {big['n']:,} run, at 10/50/100% of the outcomes: "
                + " / ".join(f"{v:.0f}" for v in big["rss_at_outcomes_mib"].values())
                + " MiB",
                "ok": grow <= RSS_TOLERANCE,
            }
        )
    for r in good:
        ratio = (r["throughput_steady_per_s"] or 0) / r["capacity_per_s"]
        out.append(
            {
                "target": f"{r['n']:,} inputs: throughput equal to the endpoint's capacity "
                f"({r['capacity_per_s']:g}/s, within {THROUGHPUT_TOLERANCE:.0%})",
                "measured": f"{fmt(r['throughput_steady_per_s'])}/s steady ({ratio:.1%}), "
                f"{fmt(r['throughput_overall_per_s'])}/s overall; endpoint workers busy "
                f"{(r['endpoint_busy_share_steady'] or 0):.1%}",
                "ok": ratio >= 1 - THROUGHPUT_TOLERANCE,
            }
        )
    for r in good:
        out.append(
            {
                "target": f"{r['n']:,} inputs: never more than max_in_flight="
                f"{args.max_in_flight} unfinished at the endpoint",
                "measured": f"at most {r['peak_unfinished_at_endpoint']:,} (received - "
                f"completed - failed); backlog at most {r['peak_backlog']:,}",
                "ok": r["peak_unfinished_at_endpoint"] <= args.max_in_flight,
            }
        )
    for r in good:
        out.append(
            {
                "target": f"{r['n']:,} inputs: every outcome the echo of its input",
                "measured": f"{r['ok']:,} ok, {r['failed']:,} failed, {r['wrong']:,} wrong",
                "ok": r["ok"] == r["n"],
            }
        )
    for r in rows:
        if "error" in r:
            out.append(
                {"target": f"{r['n']:,} inputs: a result", "measured": r["error"], "ok": False}
            )
    return out


def table(rows: list[dict[str, Any]], checks: list[dict[str, Any]]) -> str:
    head = [
        "inputs",
        "wall s (ideal)",
        "inferences/s steady / overall (capacity)",
        "endpoint busy",
        "client peak RSS MiB (after open)",
        "most unfinished at endpoint",
        "S3 req / inference: all (client GET / LIST)",
        "client CPU ms / inference",
        "server CPU",
        "client loop lag p99 / max ms",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['n']:,} | " + " | ".join(["-"] * 8) + f" | {r['error']} |")
            continue
        by = r["s3_by_kind_per_inference"]
        cells = [
            f"{r['n']:,}",
            f"{fmt(r['wall_s'])} ({fmt(r['ideal_wall_s'])})",
            f"{fmt(r['throughput_steady_per_s'])} / {fmt(r['throughput_overall_per_s'])} "
            f"({r['capacity_per_s']:g})",
            f"{(r['endpoint_busy_share_steady'] or 0):.1%}",
            f"{fmt(r['peak_rss_mib'])} ({fmt(r['rss_open_mib'])})",
            f"{r['peak_unfinished_at_endpoint']:,}",
            f"{r['s3_requests_per_inference']:.2f} ({by.get('GET', 0):.2f} / "
            f"{by.get('LIST', 0):.3f})",
            fmt(r["client_cpu_ms_per_inference"], 2),
            f"{r['server_cpu_share']:.0%}",
            f"{fmt(r['client_loop_lag_ms']['p99'])} / {fmt(r['client_loop_lag_ms']['max'], 0)}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| target | measured | verdict |", "|---|---|---|"]
    for check in checks:
        verdict = "**PASS**" if check["ok"] else "**MISS**"
        lines.append(f"| {check['target']} | {check['measured']} | {verdict} |")
    return "\n".join(lines)


def library_git() -> str | None:
    done = subprocess.run(
        ["git", "-C", str(HERE), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or None


async def main_async(args: argparse.Namespace) -> None:
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else None
    sizes = sizes or list(QUICK_SIZES if args.quick else FULL_SIZES)
    busy = competitors()
    if busy:
        print(f"warning: also running: {', '.join(busy)}; numbers will be skewed", file=sys.stderr)
    capacity = args.concurrency / args.model_s
    started = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="map-bench-") as tmp:
        for n in sizes:
            print(
                f"[{time.monotonic() - started:6.1f}s] map over {n:,} inputs, max_in_flight "
                f"{args.max_in_flight}, endpoint {args.concurrency} x {args.model_s:g} s "
                f"({capacity:g}/s)",
                file=sys.stderr,
                flush=True,
            )
            while args.wait_idle and (busy_now := competitors()):
                busy_text = ", ".join(busy_now)
                print(f"    waiting 30 s: {busy_text} running", file=sys.stderr, flush=True)
                await asyncio.sleep(30)
            row = await run_size(n, args, Path(tmp))
            rows.append(row)
            brief = {
                k: row.get(k)
                for k in (
                    "wall_s",
                    "throughput_steady_per_s",
                    "peak_rss_mib",
                    "peak_unfinished_at_endpoint",
                    "s3_requests_per_inference",
                    "client_cpu_share",
                    "server_cpu_share",
                    "error",
                )
            }
            print("    " + json.dumps(brief), file=sys.stderr, flush=True)
    checks = verdicts(rows, args)
    text = table(rows, checks)
    stamp = dt.date.today().isoformat()
    tag = args.tag or ("quick" if args.quick else "custom" if args.sizes else "")
    stem = f"map-{stamp}" + (f"-{tag}" if tag else "")
    meta = {
        "date": stamp,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "library_git": library_git(),
        "max_in_flight": args.max_in_flight,
        "endpoint": {
            "instance_count": args.instances,
            "max_concurrent_invocations_per_instance": args.concurrency // args.instances,
            "model": f"echo after {args.model_s:g} s +- {args.jitter:.0%} (uniform)",
            "capacity_per_s": capacity,
        },
        "server_loop": next((r["server_loop"] for r in rows if "server_loop" in r), None),
        "quick": args.quick,
        "total_s": round(time.monotonic() - started, 1),
        "other_load_at_start": busy,
    }
    header = (
        f"client.map benchmark {stamp}{' (quick)' if args.quick else ''}: {meta['cpus']} CPUs, "
        f"Python {meta['python']}, sagemaker-async at {meta['library_git']}; endpoint "
        f"{args.instances} x {args.concurrency // args.instances} workers, model "
        f"{args.model_s:g} s +- {args.jitter:.0%} ({capacity:g}/s); "
        f"max_in_flight={args.max_in_flight}; "
        f"{meta['total_s'] / 60:.1f} min"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(
        json.dumps({"meta": meta, "rows": rows, "checks": checks}, indent=1) + "\n"
    )
    (RESULTS / f"{stem}.md").write_text(f"# {header}\n\n{text}\n")
    print(f"{header}\n\n{text}\n\nwrote {RESULTS / stem}.json, .md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="1,000 and 5,000 inputs")
    parser.add_argument("--sizes", help="comma-separated input counts (default 10000,100000)")
    parser.add_argument("--concurrency", type=int, default=125, help="endpoint workers in all")
    parser.add_argument("--instances", type=int, default=1, help="instance_count")
    parser.add_argument("--model-s", type=float, default=1.0, help="the model's mean sleep")
    parser.add_argument(
        "--jitter", type=float, default=0.5, help="the sleep varies by +- this fraction of it"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the client (slower)")
    parser.add_argument("--max-in-flight", type=int, default=MAX_IN_FLIGHT)
    parser.add_argument(
        "--wait-idle",
        action="store_true",
        help="before each size, wait until no pytest or notifications.py runs (checked every 30 s)",
    )
    parser.add_argument("--tag", help="suffix of the result files (default: quick/custom)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_main(json.loads(args.serve))
    elif args.client:
        client_main(json.loads(args.client))
    else:
        if args.concurrency % args.instances:
            parser.error("--concurrency must be a multiple of --instances")
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
