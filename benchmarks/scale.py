"""Scale benchmark: how clients wait for thousands of SageMaker async inferences at once.

One server process (``fake_sagemaker.py``: a fake sagemaker-runtime over an in-memory fake S3,
both on 127.0.0.1) and, for every (client, load), one client process (``scale_clients.py``), so
that each has its own CPU and memory. Every S3 request is counted by the server. See
docs/performance.md for the method, the clients and the loads.

    python benchmarks/scale.py                       # every load, every client it can run
    python benchmarks/scale.py --quick               # every scenario at small sizes (~2 min)
    python benchmarks/scale.py --loads inflight-2000 --clients ours,naive
    python benchmarks/scale.py --sdk-python .nox/sdk-baseline/bin/python
    python benchmarks/scale.py --loads resumed-1000000 --clients ours   # a million, alone

Writes benchmarks/results/scale-<date>[-tag].json and .md, and
benchmarks/results/scale-requests-per-second[-tag].png (when matplotlib is installed); prints
the Markdown table. The pending and resumed loads also get the table of the client at scale
(memory per handle, loop lag and collections per phase, submit rate as the number pending
grows) and its plot, benchmarks/results/scale-at-scale[-tag].png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).parent
RESULTS = HERE / "results"
BUCKET = "bench-out"
PRICE = {"GET": 0.0004 / 1000, "HEAD": 0.0004 / 1000, "LIST": 0.005 / 1000}  # $ per request
READS = ("GET", "HEAD", "LIST")
CLIENTS = ("sdk", "naive", "ours-poll", "ours")
CLIENT_NAMES = {
    "sdk": "SageMaker SDK v2 AsyncPredictor",
    "naive": "naive asyncio HEAD loop (1 s)",
    "ours-poll": 'sagemaker-async, CompletionConfig(strategy="poll")',
    "ours": "sagemaker-async, default",
}


@dataclass(frozen=True)
class Load:
    name: str
    kind: str  # "inflight" | "stream" | "pending" | "old-objects" | "resumed"
    n: int
    model_s: int
    rate: float | None = None  # stream: submissions per second
    window_s: float = 0.0  # pending: measured for this long after all are submitted
    old_objects: int = 0  # old-objects: bulk-created in the output directory first
    only: tuple[str, ...] = ()

    @property
    def mode(self) -> str:
        return self.kind if self.kind in ("pending", "resumed") else "complete"

    def describe(self) -> str:
        if self.kind == "resumed":
            return f"{self.n:,} resumed from saved states, {self.window_s:g} s window"
        if self.kind == "stream":
            return f"{self.n:,} at {self.rate:g}/s, {self.model_s} s model"
        if self.kind == "pending":
            return f"{self.n:,} pending, {self.window_s:g} s window"
        if self.kind == "old-objects":
            return f"{self.n:,} in flight, {self.model_s} s model, {self.old_objects:,} old objects"
        return f"{self.n:,} in flight, {self.model_s} s model"


FULL = (
    Load("inflight-200", "inflight", 200, 60),
    Load("inflight-2000", "inflight", 2000, 60),
    Load("inflight-10000", "inflight", 10_000, 60),
    Load("stream-10000", "stream", 10_000, 6, rate=250.0),
    Load("pending-10000", "pending", 10_000, 3600, window_s=120.0),
    Load("pending-100000", "pending", 100_000, 3600, window_s=120.0),
    Load("old-objects-200", "old-objects", 200, 60, old_objects=100_000, only=("ours",)),
    Load("resumed-10000", "resumed", 10_000, 3600, window_s=30.0, only=("ours",)),
    Load("resumed-100000", "resumed", 100_000, 3600, window_s=30.0, only=("ours",)),
    Load("resumed-1000000", "resumed", 1_000_000, 3600, window_s=30.0, only=("ours",)),
)
QUICK = (
    Load("inflight-100", "inflight", 100, 4),
    Load("stream-200", "stream", 200, 2, rate=100.0),
    Load("pending-500", "pending", 500, 3600, window_s=8.0),
    Load("old-objects-50", "old-objects", 50, 4, old_objects=5000, only=("ours",)),
    Load("resumed-2000", "resumed", 2000, 3600, window_s=5.0, only=("ours",)),
)
WAITERS = ("task", "callback", "as_completed")


def skip_reason(load: Load, client: str, sdk_python: str | None) -> str | None:
    if load.only and client not in load.only:
        return f"not run: this load is for {', '.join(load.only)} only"
    if client == "sdk":
        if not sdk_python:
            return "not run: no --sdk-python given"
        if load.kind == "pending":
            return "not run: a get_result() blocked in a thread cannot be cancelled"
        if load.n > 2000:
            return "not run: one blocked thread per wait (32 threads) would take forever"
    if client == "naive" and load.n >= 100_000:
        return "not run: it would ask for 200,000 HEADs per second, forever behind"
    return None


def scenarios(
    loads: list[Load], clients: list[str], args: argparse.Namespace
) -> list[tuple[Load, str, str, str]]:
    """(load, client, waiter, gc) to run: our clients in each waiter and gc mode asked."""
    gc_modes = args.gc.split(",")
    out = []
    for load in loads:
        waiters = args.waiters.split(",") if args.waiters else None
        if waiters is None:
            waiters = list(WAITERS) if load.kind == "resumed" else ["callback"]
        for client in clients:
            if not client.startswith("ours"):
                out.append((load, client, "", "default"))
                continue
            for waiter in waiters:
                for gc_mode in gc_modes:
                    out.append((load, client, waiter, gc_mode))
    return out


def child_env(
    urls: dict[str, str], *, block_proxies: bool = False, library_src: str | None = None
) -> dict[str, str]:
    """Fake credentials, no AWS config, every AWS endpoint on loopback."""
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
        AWS_ENDPOINT_URL_S3=urls["s3"],
        AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=urls["runtime"],
        PYTHONUNBUFFERED="1",
    )
    if library_src:  # ahead of the editable install's .pth entry
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [library_src, env.get("PYTHONPATH")]))
    if block_proxies:  # the SDK (requests): anything not on loopback goes to a closed port
        env.update(
            HTTP_PROXY="http://127.0.0.1:9",
            HTTPS_PROXY="http://127.0.0.1:9",
            NO_PROXY="127.0.0.1,localhost",
        )
    return env


class Server:
    """The fake_sagemaker.py process and its admin API."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self.urls: dict[str, str] = {}
        self.http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "fake_sagemaker.py"),
            env=child_env({"s3": "", "runtime": ""}),
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 60)).decode()
        if not line.startswith("READY "):
            raise RuntimeError(f"the fake server did not start: {line!r}")
        self.urls = json.loads(line[len("READY ") :])
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300))

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    async def get(self, path: str, **params: Any) -> Any:
        assert self.http is not None
        async with self.http.get(self.urls["s3"] + "/__admin/" + path, params=params) as r:
            r.raise_for_status()
            return await r.json()

    async def post(self, path: str, params: Any = None, body: Any = None) -> Any:
        assert self.http is not None
        url = self.urls["s3"] + "/__admin/" + path
        async with self.http.post(url, params=params, json=body) as r:
            r.raise_for_status()
            return await r.json()


def reads(counts: dict[str, int]) -> int:
    return sum(counts[k] for k in READS)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))]


def window_rates(series: dict[str, Any], start: float, end: float) -> dict[str, Any] | None:
    """S3 reads per second over the whole ticks inside [start, end)."""
    tick = series["tick"]
    first, last = math.ceil(start / tick - 1e-6), math.floor(end / tick + 1e-6)
    if last - first < max(1, round(1.0 / tick)):  # less than a second: no estimate
        return None
    kinds = series["kinds"]
    sums = dict.fromkeys(kinds, 0)
    for row in series["rows"]:
        t = round(row[0] / tick)
        if first <= t < last:
            for kind, value in zip(kinds, row[1:], strict=True):
                sums[kind] += value
    seconds = (last - first) * tick
    rates = {k: sums[k] / seconds for k in READS}
    return {
        "seconds": round(seconds, 1),
        "reads_per_s": round(sum(rates.values()), 1),
        "by_kind_per_s": {k: round(v, 1) for k, v in rates.items()},
        "usd_per_hour": round(sum(rates[k] * PRICE[k] for k in READS) * 3600, 4),
        "requests": sum(sums[k] for k in READS),
    }


def peak_rate(series: dict[str, Any], start: float, end: float) -> float:
    """Highest S3 request count in any 1 s bucket of [start, end)."""
    per_second: dict[int, int] = {}
    for row in series["rows"]:
        if start <= row[0] < end:
            second = int(row[0])
            per_second[second] = per_second.get(second, 0) + sum(row[1:])
    return float(max(per_second.values(), default=0))


async def sample_server(server: Server, samples: list[dict[str, Any]]) -> None:
    while True:
        with contextlib.suppress(aiohttp.ClientError):
            samples.append(await server.get("stats"))
        await asyncio.sleep(2.0)


async def run_one(
    server: Server,
    load: Load,
    client: str,
    args: argparse.Namespace,
    workdir: Path,
    waiter: str = "callback",
    gc_mode: str = "default",
) -> dict[str, Any]:
    endpoint = f"{load.name}-{client}-sleep-{load.model_s}"
    if load.kind == "resumed":  # one states file for every waiter and gc mode
        endpoint = f"{load.name}-sleep-{load.model_s}"
    await server.post("reset", params=[("bucket", BUCKET), ("bucket", "bench-in")])
    await server.post(
        "endpoints",
        body={"name": endpoint, "delay": load.model_s, "failure_fraction": args.failure_fraction},
    )
    bulk = None
    if load.old_objects:
        bulk = await server.post(
            "bulk", params={"bucket": BUCKET, "prefix": f"{endpoint}/", "count": load.old_objects}
        )
    await server.post("reset-counts")
    stats0 = await server.get("stats")
    samples: list[dict[str, Any]] = [stats0]
    sampler = asyncio.get_running_loop().create_task(sample_server(server, samples))
    result_file = workdir / f"{endpoint}.json"
    timeout_s = load.model_s * 3 + load.n / 50 + 120
    spec = {
        "client": client,
        "mode": load.mode,
        "n": load.n,
        "endpoint": endpoint,
        "model_s": load.model_s,
        "rate": load.rate,
        "window_s": load.window_s,
        "quiet_s": args.quiet_s,
        "submit_concurrency": args.submit_concurrency,
        "max_connections": args.max_connections,
        "client_loop": args.client_loop,
        "timeout_s": timeout_s,
        "submit_limit_s": args.submit_limit_s,
        "result_file": str(result_file),
        "waiter": waiter,
        "gc": gc_mode,
        "freeze_every": args.freeze_every,
        "states_file": str(workdir / f"{endpoint}.states"),
    }
    python = args.sdk_python if client == "sdk" else sys.executable
    log = (workdir / f"{endpoint}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        python,
        str(HERE / "scale_clients.py"),
        json.dumps(spec),
        env=child_env(
            server.urls,
            block_proxies=client == "sdk",
            library_src=None if client == "sdk" else args.library_src,
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    assert proc.stdout is not None
    got_result = False
    deadline = time.monotonic() + timeout_s + load.window_s + load.n / 20 + 300
    with contextlib.suppress(asyncio.TimeoutError):
        while True:
            line = await asyncio.wait_for(proc.stdout.readline(), deadline - time.monotonic())
            if not line:
                break
            if line.startswith(b"RESULT "):
                got_result = True
                break
    t_result = time.time()
    counts_at_result = (await server.get("counts", bucket=BUCKET))["total"]
    try:
        await asyncio.wait_for(proc.wait(), args.linger_s if got_result else 1)
        lingered = time.time() - t_result
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        lingered = math.inf
    counts_after = (await server.get("counts", bucket=BUCKET))["total"]
    sampler.cancel()
    stats1 = await server.get("stats")
    samples.append(stats1)
    log.close()
    row: dict[str, Any] = {
        "client": client,
        "client_name": CLIENT_NAMES[client],
        "load": load.name,
        "load_desc": load.describe(),
        "n": load.n,
        "kind": load.kind,
        "waiter": waiter,
        "gc_mode": gc_mode,
        "freeze_every": args.freeze_every if gc_mode == "freeze" else None,
        "notes": [],
    }
    if not got_result or not result_file.exists():
        tail = (workdir / f"{endpoint}.log").read_text(errors="replace")[-2000:]
        row["error"] = f"client gave no result (exit {proc.returncode}): {tail}"
        row["notes"].append(f"failed: no result (exit {proc.returncode})")
        print(tail, file=sys.stderr)
        return row
    data = json.loads(result_file.read_text())
    writes: dict[str, float] = await server.get("writes", bucket=BUCKET)
    series = await server.get("series", since=data["t_submit_start"] - 1)
    results = data["ok"] + data["failed"]
    n = data.get("submitted", load.n)  # fewer if submitting hit --submit-limit-s
    if n < load.n:
        row["notes"].append(f"submitting stopped after {args.submit_limit_s:g} s: {n:,} sent")
    row.update(
        ok=data["ok"],
        failed=data["failed"],
        errors=data["errors"],
        first_error=data["first_error"],
        waiting_via=data.get("waiting_via"),
        library_api=data.get("library_api"),
        counts=counts_at_result,
        submitted=n,
        notes=row["notes"] + list(data.get("notes", [])),
        bulk=bulk,
    )
    # Detection: every read of the output and failure locations, except one GET per result.
    detection = {k: counts_at_result[k] for k in READS}
    detection["GET"] = max(0, detection["GET"] - results)
    if load.mode == "complete":
        row["s3_detection_per_inference"] = round(sum(detection.values()) / n, 2)
        row["detection_by_kind_per_inference"] = {k: round(v / n, 2) for k, v in detection.items()}
        usd = sum(detection[k] * PRICE[k] for k in READS) / n * 1e6
        row["usd_per_million_inferences"] = round(usd, 2)
        row["cpu_ms_per_inference"] = round(data["cpu_s"] / n * 1000, 2)
        row["wall_s"] = round(data["t_all_done"] - data["t_submit_start"], 1)
        if data.get("timed_out"):
            row["notes"].append("timed out before every result")
    # Detection latency: the client's resolution time minus the server's write time.
    latencies = []
    for location, resolved_at in data["resolved"].items():
        key = location.split("/", 3)[3]
        if key in writes:
            latencies.append(resolved_at - writes[key])
    if latencies:
        row["detection_latency_s"] = {
            "p50": round(pct(latencies, 0.5) or 0, 3),
            "p95": round(pct(latencies, 0.95) or 0, 3),
            "max": round(max(latencies), 3),
            "count": len(latencies),
        }
    first_write = min(writes.values()) if writes else None
    # S3 requests per second while pending: a window in which no result arrives.
    if load.mode in ("pending", "resumed"):
        window = (data["window_start"], data["window_end"])
        pending_count = data.get("pending_at_cancel", n)
        row["cpu_pct_pending"] = round(
            data["cpu_window_s"] / max(1e-9, window[1] - window[0]) * 100, 1
        )
    elif load.kind in ("inflight", "old-objects") and first_write is not None:
        window = (data["t_submit_end"], first_write)
        pending_count = n
        before = data["t_submit_end"] < first_write
        row["all_submitted_before_first_result"] = before
        if not before:
            row["notes"].append("submission outlasted the model: first result came before")
    else:
        window = None
        pending_count = None
    if window is not None:
        rates = window_rates(series, *window)
        if rates is not None:
            row["pending_window"] = {**rates, "pending": pending_count}
            row["requests_per_s_pending"] = rates["reads_per_s"]
            row["usd_per_hour_pending"] = rates["usd_per_hour"]
    end = data.get("t_quiet_end") or data.get("t_all_done") or t_result
    row["peak_requests_per_s"] = peak_rate(series, data["t_submit_start"], end)
    # Loop lag, memory, submission.
    row["loop_lag_ms"] = data["lag_ms"]
    row["loop_lag_submitting_ms"] = data.get("lag_submitting_ms")
    row["loop_lag_waiting_ms"] = data["lag_waiting_ms"]
    row["gc"] = data.get("gc")
    stalls = (data.get("gc") or {}).get("stalls_waiting") or {}
    if stalls.get("count"):
        share = stalls["gen2_share"] or 0
        row["notes"].append(
            f"waiting: {stalls['count']} stalls > {stalls['over_ms']:g} ms, "
            f"{stalls['with_gen2_gc']} during a gen-2 GC ({share:.0%} of their lag)"
        )
    grew = data["rss_pending"] - data["rss_before"]
    row["rss_growth_mib"] = round(grew / 2**20, 1)
    row["rss_total_mib"] = round(data["rss_pending"] / 2**20, 1)  # the whole process
    if data.get("pending_at_rss"):
        row["rss_kib_per_pending"] = round(grew / data["pending_at_rss"] / 1024, 2)
    row["submit_rate"] = data["submit_rate"]
    row["submit_s"] = round(data["t_submit_end"] - data["t_submit_start"], 1)
    if load.rate:
        delay = data.get("submit_delay_s") or {}
        row["submit_target_rate"] = load.rate
        row["submit_delay_s"] = delay
        kept = (delay.get("p95") or 0) <= 1.0 and data["submit_rate"] >= 0.9 * load.rate
        row["submissions_kept_up"] = kept
        row["notes"].append(
            "submissions kept up" if kept else "submissions fell behind (starved by waiting)"
        )
    row["phases"] = data.get("phases")
    row["stall_stacks"] = data.get("stall_stacks")
    row["submit_rate_at"] = rate_at(data.get("submit_marks") or [], (2000, 10_000, 100_000))
    for key in ("close_s", "closed_seen_s", "closed_seen", "gc_frozen", "states_written_s"):
        if key in data:
            row[key] = data[key]
    for key in ("in_flight_at_rss", "in_flight_after_cancel"):
        if key in data:
            row[key] = data[key]
    # Cancelling (pending and resumed loads).
    if load.mode in ("pending", "resumed"):
        row["cancel_s"] = data["cancel_s"]
        row["tasks_left_after_cancel"] = data["tasks_left_after_cancel"]
        row["tasks_left_after_close"] = data["tasks_left_after_close"]
        quiet = window_rates(series, data["t_cancel_done"], data["t_quiet_end"])
        row["requests_after_cancel"] = quiet["requests"] if quiet else None
        clean = not data["tasks_left_after_cancel"] and not row["requests_after_cancel"]
        row["clean_after_cancel"] = clean
        row["notes"].append(
            f"after cancel: {'clean, ' if clean else ''}"
            f"{data['tasks_left_after_cancel']} tasks left, "
            f"{row['requests_after_cancel']} S3 requests in {args.quiet_s:g} s"
        )
        if data["tasks_left_after_close"]:
            row["notes"].append(f"{data['tasks_left_after_close']} tasks left after aclose()")
    # After the last result: does the process end, does it keep polling?
    row["linger_s"] = round(lingered, 1) if math.isfinite(lingered) else None
    row["requests_after_last_result"] = reads(counts_after) - reads(counts_at_result)
    if not math.isfinite(lingered):
        row["notes"].append(
            f"still alive {args.linger_s:g} s after its last result (killed), "
            f"{row['requests_after_last_result']} S3 reads meanwhile"
        )
    if data["errors"]:
        row["notes"].append(f"{data['errors']} errors: {data['first_error']}")
    # The server: is it the bottleneck?
    busy = [
        (b["cpu_s"] - a["cpu_s"]) / max(1e-9, b["time"] - a["time"]) * 100
        for a, b in itertools.pairwise(samples)
    ]
    row["server"] = {
        "cpu_pct_mean": round(
            (stats1["cpu_s"] - stats0["cpu_s"]) / max(1e-9, stats1["time"] - stats0["time"]) * 100,
            1,
        ),
        "cpu_pct_peak_2s": round(max(busy, default=0.0), 1),
        "loop_lag_ms": stats1["loop_lag_ms"],
        "rss_mib": round(stats1["rss_bytes"] / 2**20, 1),
    }
    row["client_process_cpu_s"] = round(data["process_cpu_s"], 2)
    return row


def rate_at(marks: list[float], counts: tuple[int, ...]) -> dict[str, float]:
    """Submissions per second around each of ``counts`` pending, from the 1,000 marks.

    Over the 4,000 submissions around ``count`` (±2,000), or the last 4,000 when ``count`` is
    the load's size (the rate at 100,000 pending of a load of 100,000).
    """
    rates = {}
    for count in counts:
        hi = min(count // 1000 + 2, len(marks))  # marks[k - 1]: k,000 accepted
        lo = max(1, hi - 4)
        if hi < count // 1000:
            continue  # (never got there)
        if hi <= len(marks) and marks[hi - 1] > marks[lo - 1]:
            rates[str(count)] = round((hi - lo) * 1000 / (marks[hi - 1] - marks[lo - 1]), 1)
    return rates


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        text = f"{value:.{digits}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def lag_cell(lag: dict[str, Any] | None) -> str:
    if not lag or not lag.get("count"):
        return "-"
    return f"{fmt(lag['p99'], 1)} / {fmt(lag['max'], 0)}"


def gc_cell(stats: dict[str, Any] | None) -> str:
    if not stats:
        return "-"
    full = stats["gen2"]
    return f"{full['count']} / {fmt(full['max_ms'], 0)}" if full["count"] else "0"


def table(rows: list[dict[str, Any]]) -> str:
    head = [
        "client",
        "load",
        "ok / failed",
        "S3 req / inf. (detection)",
        "$ / 1M inf.",
        "S3 req/s while pending",
        "$ / h while pending",
        "detection p50 / p95 (s)",
        "client CPU ms / inf. (% pending)",
        "loop lag p99 / max (ms): submitting; waiting",
        "gen-2 GCs n / longest ms: all; waiting",
        "RSS KiB / pending",
        "submits / s",
        "cancel (s)",
        "server CPU % mean / peak",
        "notes",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r.get("kind") == "resumed":
            continue  # in the table at scale only
        if "skipped" in r:
            cells = [CLIENT_NAMES[r["client"]], r["load_desc"]] + ["-"] * 13 + [r["skipped"]]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        if "error" in r:
            cells = [CLIENT_NAMES[r["client"]], r["load_desc"]] + ["-"] * 13
            lines.append("| " + " | ".join([*cells, "; ".join(r["notes"])]) + " |")
            continue
        notes = list(r["notes"])
        if "clean_after_cancel" in r and not any(x.startswith("after cancel") for x in notes):
            clean = "clean, " if r["clean_after_cancel"] else ""
            notes.append(
                f"after cancel: {clean}{r['tasks_left_after_cancel']} tasks left, "
                f"{r['requests_after_cancel']} S3 requests after"
            )
        lat = r.get("detection_latency_s") or {}
        lag = f"{lag_cell(r.get('loop_lag_submitting_ms'))}; {lag_cell(r['loop_lag_waiting_ms'])}"
        gcs = r.get("gc") or {}
        full = f"{gc_cell(gcs.get('all'))}; {gc_cell(gcs.get('waiting'))}" if gcs else "-"
        cpu = fmt(r.get("cpu_ms_per_inference"))
        if "cpu_pct_pending" in r:
            cpu = f"({fmt(r['cpu_pct_pending'], 1)}%)"
        server = r["server"]
        waiter = r.get("waiter")
        name = CLIENT_NAMES[r["client"]] + (
            f" ({waiter})" if waiter not in (None, "", "callback") else ""
        )
        cells = [
            name,
            r["load_desc"],
            f"{r['ok']:,} / {r['failed']:,}",
            fmt(r.get("s3_detection_per_inference")),
            fmt(r.get("usd_per_million_inferences")),
            fmt(r.get("requests_per_s_pending"), 1),
            fmt(r.get("usd_per_hour_pending"), 3),
            f"{fmt(lat.get('p50'))} / {fmt(lat.get('p95'))}" if lat else "-",
            cpu,
            lag,
            full,
            fmt(r.get("rss_kib_per_pending")),
            fmt(r["submit_rate"], 0),
            fmt(r.get("cancel_s"), 3),
            f"{fmt(server['cpu_pct_mean'], 0)} / {fmt(server['cpu_pct_peak_2s'], 0)}",
            "; ".join(notes),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SCALE_PHASES = ("load", "waiting", "cancelling", "rewatching", "closing")


def _at_scale(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        r
        for r in rows
        if r.get("kind") in ("pending", "resumed")
        and r["client"] in ("ours", "ours-poll")
        and "error" not in r
        and "skipped" not in r
        and r.get("phases")
    ]


def _phase(r: dict[str, Any], name: str) -> dict[str, Any] | None:
    phases = r.get("phases") or {}
    if name == "load":
        return phases.get("resuming") or phases.get("submitting")
    return phases.get(name)


def scale_table(rows: list[dict[str, Any]]) -> str:
    """The client at scale: memory per handle, loop lag and full collections per phase."""
    head = [
        "load",
        "client",
        "waiter",
        "gc",
        "RSS B / handle (growth; process, MiB)",
        "submits or resumes / s",
        "submits / s at 2,000 / 100,000 pending",
        "loop lag max (ms; over 100: its CPU): loading; waiting; cancelling; watching again; "
        "aclose()",
        "gen-2 GCs n / longest ms: loading; waiting; cancelling; watching again; aclose()",
        "S3 req/s waiting",
        "cancel (s)",
        "aclose() s / every waiter told s",
        "notes",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in _at_scale(rows):
        lags, gcs = [], []
        for name in SCALE_PHASES:
            phase = _phase(r, name)
            lag = (phase or {}).get("lag_ms") or {}
            cell = fmt(lag.get("max"), 0) if lag.get("count") else "-"
            if lag.get("count") and "max_cpu" in lag and lag["max"] >= 100:
                cell += f" ({fmt(lag['max_cpu'], 0)} CPU)"
            lags.append(cell)
            gcs.append(gc_cell(phase["gc"]) if phase else "-")
        at = r.get("submit_rate_at") or {}
        per_handle = r.get("rss_kib_per_pending")
        memory = "-"
        if per_handle is not None:
            memory = (
                f"{per_handle * 1024:,.0f} ({fmt(r.get('rss_growth_mib'), 0)}; "
                f"{fmt(r.get('rss_total_mib'), 0)})"
            )
        told = r.get("closed_seen_s")
        close = f"{fmt(r.get('close_s'), 2)} / {fmt(told, 2) if told is not None else '-'}"
        notes = [n for n in r["notes"] if not n.startswith("after cancel")]
        if r.get("requests_after_cancel"):
            notes.append(f"{r['requests_after_cancel']} S3 requests after cancelling")
        if r.get("in_flight_after_cancel"):
            notes.append(f"{r['in_flight_after_cancel']} still watched after cancelling")
        cells = [
            r["load_desc"],
            r["client"],
            r.get("waiter", "callback"),
            r.get("gc_mode", "default"),
            memory,
            fmt(r["submit_rate"], 0),
            f"{fmt(at.get('2000'), 0)} / {fmt(at.get('100000'), 0)}" if at else "-",
            "; ".join(lags),
            "; ".join(gcs),
            fmt(r.get("requests_per_s_pending"), 1),
            fmt(r.get("cancel_s"), 2),
            close,
            "; ".join(notes),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _worst(r: dict[str, Any], key: str) -> float:
    """The longest loop stall of any phase (``max``, or ``max_cpu``: its CPU only), ms."""
    return max(((_phase(r, p) or {}).get("lag_ms") or {}).get(key) or 0 for p in SCALE_PHASES)


def plot_scale(rows: list[dict[str, Any]], path: Path) -> str | None:
    """RSS per handle and the longest loop stall against the number pending, per waiter."""
    chosen = [r for r in _at_scale(rows) if r.get("kind") == "resumed"]
    if not chosen:
        return "nothing to plot at scale"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install matplotlib)"
    fig, (mem, lag) = plt.subplots(1, 2, figsize=(10, 4.2))
    series: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in chosen:
        series.setdefault((r.get("waiter", "callback"), r.get("gc_mode", "default")), []).append(r)
    for (waiter, gc_mode), points in sorted(series.items()):
        points.sort(key=lambda r: r["n"])
        style = "-" if gc_mode == "default" else "--"
        label = waiter + ("" if gc_mode == "default" else f", gc {gc_mode}")
        xs = [r["n"] for r in points]
        per_handle = [r["rss_kib_per_pending"] * 1024 for r in points]
        mem.plot(xs, per_handle, style, marker="o", label=label)
        worst = [_worst(r, "max") for r in points]
        (line,) = lag.plot(xs, worst, style, marker="o", label=label)
        own = [_worst(r, "max_cpu") for r in points]  # counting only the client's own CPU
        lag.plot(xs, own, style, marker="x", color=line.get_color(), alpha=0.5, lw=0.8)
    mem.set_xscale("log")
    mem.set_xlabel("handles pending (resumed)")
    mem.set_ylabel("RSS bytes per pending handle")
    mem.axhline(1000, color="grey", lw=0.8, ls=":")
    mem.axhline(2000, color="grey", lw=0.8, ls=":")
    mem.set_ylim(bottom=0)
    mem.grid(True, which="both", alpha=0.3)
    mem.legend(fontsize=8)
    lag.set_xscale("log")
    lag.set_yscale("log")
    lag.set_xlabel("handles pending (resumed)")
    lag.set_ylabel("longest loop stall, any phase (ms); x: its CPU")
    lag.axhline(100, color="grey", lw=0.8, ls=":")
    lag.grid(True, which="both", alpha=0.3)
    lag.legend(fontsize=8)
    fig.suptitle("One client, many pending handles (loading, waiting, cancelling, aclose)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def plot(rows: list[dict[str, Any]], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install matplotlib)"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for client in CLIENTS:
        points = sorted(
            (r["pending_window"]["pending"], r["requests_per_s_pending"], r["kind"])
            for r in rows
            if r["client"] == client
            and r.get("kind") in ("inflight", "pending")
            and r.get("requests_per_s_pending")
        )
        if points:
            xs, ys, _ = zip(*points, strict=True)
            (line,) = ax.plot(xs, ys, label=CLIENT_NAMES[client])
            for x, y, kind in points:  # circles: in flight (60 s model); squares: pending
                ax.plot(x, y, marker="o" if kind == "inflight" else "s", color=line.get_color())
            drawn = True
    if not drawn:
        plt.close(fig)
        return "nothing to plot"
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("inferences pending")
    ax.set_ylabel("S3 requests per second while pending")
    ax.set_title("S3 requests/s while waiting (o: in flight, 60 s model; s: pending)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None


def library_info(library_src: str | None, commit: str | None = None) -> dict[str, Any]:
    """The sagemaker_async the clients import (asked of a child python, like theirs)."""
    import subprocess

    code = (
        "import json, sagemaker_async as m; print(json.dumps({'version': m.__version__, "
        "'path': m.__file__, 'has_CompletionConfig': hasattr(m, 'CompletionConfig')}))"
    )
    env = child_env({"s3": "", "runtime": ""}, library_src=library_src)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    info: dict[str, Any] = json.loads(done.stdout) if done.returncode == 0 else {}
    if library_src is None:  # the work tree's library: which commit, edited or not
        git = subprocess.run(
            ["git", "-C", str(HERE), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        )
        info["git"] = git.stdout.strip() or None
    if library_src is not None:
        info["src"] = library_src
        info["git"] = commit  # a copy of src/ knows no commit: --library-commit names it
    return info


def full_text(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The Markdown of a run: the main table, then the table at scale (when it has rows)."""
    parts = []
    if any(r.get("kind") != "resumed" for r in rows):
        parts.append(table(rows))
    if _at_scale(rows):
        load = meta.get("load_average")
        parts.append(
            "## At scale\n\n"
            + (f"Load average before the run: {load}.\n\n" if load else "")
            + scale_table(rows)
        )
        stalls = stall_text(rows)
        if stalls:
            parts.append(stalls)
    return "\n\n".join(parts)


def stall_text(rows: list[dict[str, Any]]) -> str:
    """Each stall over 100 ms in a measured phase: what the loop's thread was doing.

    Listed when this process's own CPU made up at least half of it and a full collection
    did not; the others are counted: full collections, and stalls in which the machine's
    other processes had the CPU.
    """
    lines = []
    for r in _at_scale(rows):
        scheduled: dict[str, int] = {}
        collections: dict[str, list[float]] = {}
        for stall in r.get("stall_stacks") or []:
            phase = stall.get("phase")
            if phase is None:
                continue  # (the client's imports and set-up, before the measured phases)
            cpu = stall.get("cpu_ms")
            if cpu is not None and cpu < stall["held_ms"] / 2:
                scheduled[phase] = scheduled.get(phase, 0) + 1
                continue
            full = (stall.get("gc_ms") or {}).get("gen2") or 0
            if full >= stall["held_ms"] / 2:
                collections.setdefault(phase, []).append(stall["held_ms"])
                continue
            top = stall["stacks"][0] if stall["stacks"] else None
            where = (
                f"`{top['stack'][:240]}` ({top['n']} of {stall['samples']} samples)" if top else ""
            )
            gcs = "".join(
                f", {gen} GC {ms:g} ms" for gen, ms in (stall.get("gc_ms") or {}).items() if ms
            )
            lines.append(
                f"- {r['n']:,}, {r.get('waiter')}, gc {r.get('gc_mode')}, {phase}: "
                f"{stall['held_ms']:,} ms"
                + (f" ({cpu:,} ms CPU)" if cpu is not None else "")
                + gcs
                + "; "
                + (where or "no sample")
            )
        variant = f"- {r['n']:,}, {r.get('waiter')}, gc {r.get('gc_mode')}"
        if collections:
            counts = ", ".join(
                f"{len(held)} {phase} (longest {max(held):,} ms)"
                for phase, held in collections.items()
            )
            lines.append(f"{variant}: stalls over 100 ms, most of each a full collection: {counts}")
        if scheduled:
            counts = ", ".join(f"{n} {phase}" for phase, n in scheduled.items())
            lines.append(
                f"{variant}: stalls over 100 ms with less than half of them this process's "
                f"CPU: {counts}"
            )
    if not lines:
        return ""
    return (
        "Stalls over 100 ms (when this process's CPU was at least half of one), and the "
        "innermost frames of the loop's thread sampled most often in each (every 5 ms; a "
        "collection holds the GIL, so it shows as few samples):\n\n" + "\n".join(lines)
    )


def header_line(meta: dict[str, Any]) -> str:
    library = meta.get("library", {})
    completion = "present" if library.get("has_CompletionConfig") else "absent"
    return (
        f"Scale benchmark {meta['date']}{' (quick)' if meta.get('quick') else ''}: "
        f"{meta['cpus']} CPUs, Python {meta['python']}, server loop {meta['server_loop']}, "
        f"client loop {meta.get('client_loop', 'asyncio')}, "
        f"sagemaker-async {library.get('version')} at {library.get('git') or 'unknown commit'}"
        f" (CompletionConfig {completion})"
        f"; {meta['total_s'] / 60:.1f} min. All S3 requests counted by the fake S3 server."
    )


def render(path: Path) -> None:
    """Rewrite the .md (and the plot) of a results JSON with the current table code."""
    data = json.loads(path.read_text())
    text = full_text(data["rows"], data["meta"])
    header = header_line(data["meta"])
    path.with_suffix(".md").write_text(f"# {header}\n\n{text}\n")
    tag = path.stem.removeprefix(f"scale-{data['meta']['date']}")
    png = path.parent / f"scale-requests-per-second{tag}.png"
    note = plot(data["rows"], png)
    if _at_scale(data["rows"]):
        scale_png = path.parent / f"scale-at-scale{tag}.png"
        scale_note = plot_scale(data["rows"], scale_png)
        note = f"{note}; {scale_note or scale_png}" if note else scale_note
    print(
        f"{header}\n\n{text}\n\nwrote {path.with_suffix('.md')}"
        + (f"; {note}" if note else f", {png}")
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="every scenario at small sizes")
    parser.add_argument("--loads", help="comma-separated load names (default: all)")
    parser.add_argument("--clients", help=f"comma-separated, of {', '.join(CLIENTS)}")
    parser.add_argument("--sdk-python", help="a python with sagemaker<3 installed (baseline)")
    parser.add_argument("--window-s", type=float, help="override the pending loads' window")
    parser.add_argument("--stream-rate", type=float, help="override the stream loads' rate")
    parser.add_argument("--render", help="only re-render the table and plot of a results JSON")
    parser.add_argument("--submit-concurrency", type=int, default=200)
    parser.add_argument("--max-connections", type=int, default=200)
    parser.add_argument(
        "--client-loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the asyncio clients' event loop (default: asyncio's own, what users get unless "
        "their server picks uvloop, as uvicorn does when it is installed)",
    )
    parser.add_argument(
        "--submit-limit-s",
        type=float,
        help="stop submitting after this long (default 600 s; quick: 60 s)",
    )
    parser.add_argument("--failure-fraction", type=float, default=0.0)
    parser.add_argument("--quiet-s", type=float, help="watched after cancelling (3 s; quick: 2)")
    parser.add_argument("--linger-s", type=float, help="wait this long for a client to exit")
    parser.add_argument(
        "--library-src", help="run the clients against sagemaker_async from this src/ dir"
    )
    parser.add_argument(
        "--library-commit", help="the commit --library-src was taken from (for the header)"
    )
    parser.add_argument("--tag", help="suffix of the output files (default: quick/custom)")
    parser.add_argument(
        "--waiters",
        help=f"how our clients wait, comma-separated, of {', '.join(WAITERS)} (default: "
        "callback; every one for the resumed loads)",
    )
    parser.add_argument(
        "--gc",
        default="default",
        help="comma-separated: default (CPython's settings), freeze (the recipe of "
        "docs/performance.md: gc.collect(1); gc.freeze() after every 10,000 handles)",
    )
    parser.add_argument(
        "--freeze-every",
        type=int,
        default=10_000,
        help="gc freeze: freeze after each this many more handles (default 10,000)",
    )
    parser.add_argument("--list", action="store_true", help="print the loads and exit")
    args = parser.parse_args()
    if args.render:
        render(Path(args.render))
        return
    catalog = QUICK if args.quick else FULL
    if args.list:
        for load in FULL + QUICK:
            print(f"{load.name:18} {load.describe()}")
        return
    by_name = {load.name: load for load in FULL + QUICK}
    loads = list(catalog)
    if args.loads:
        unknown = [x for x in args.loads.split(",") if x not in by_name]
        if unknown:
            parser.error(f"unknown loads {unknown}; --list shows them")
        loads = [by_name[x] for x in args.loads.split(",")]
    if args.stream_rate:
        loads = [
            Load(**{**asdict(x), "rate": args.stream_rate}) if x.kind == "stream" else x
            for x in loads
        ]
    if args.window_s:
        loads = [
            Load(**{**asdict(x), "window_s": args.window_s}) if x.kind == "pending" else x
            for x in loads
        ]
    if args.waiters and set(args.waiters.split(",")) - set(WAITERS):
        parser.error(f"waiters are {', '.join(WAITERS)}")
    if set(args.gc.split(",")) - {"default", "freeze"}:
        parser.error("gc modes are default, freeze")
    clients = list(CLIENTS)
    if args.clients:
        clients = args.clients.split(",")
        if set(clients) - set(CLIENTS):
            parser.error(f"clients are {', '.join(CLIENTS)}")
    if args.linger_s is None:
        args.linger_s = 3.0 if args.quick else 30.0
    if args.submit_limit_s is None:
        args.submit_limit_s = 60.0 if args.quick else 600.0
    if args.quiet_s is None:
        args.quiet_s = 2.0 if args.quick else 3.0
    tag = args.tag or ("quick" if args.quick else "custom" if args.loads or args.clients else "")
    started = time.monotonic()
    load_before = ", ".join(f"{x:.2f}" for x in os.getloadavg())  # other processes' share
    server = Server()
    await server.start()
    print(f"fake servers: {server.urls}", file=sys.stderr, flush=True)
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
            for load, client, waiter, gc_mode in scenarios(loads, clients, args):
                reason = skip_reason(load, client, args.sdk_python)
                base = {"client": client, "load": load.name, "load_desc": load.describe()}
                if reason:
                    rows.append({**base, "n": load.n, "kind": load.kind, "skipped": reason})
                    continue
                variant = f" ({waiter}, gc {gc_mode})" if client.startswith("ours") else ""
                print(f"[{time.monotonic() - started:7.1f}s] {client}{variant} / {load.describe()}")
                t0 = time.monotonic()
                row = await run_one(server, load, client, args, Path(tmp), waiter, gc_mode)
                row["scenario_s"] = round(time.monotonic() - t0, 1)
                rows.append(row)
                brief = {
                    k: row.get(k)
                    for k in (
                        "ok",
                        "s3_detection_per_inference",
                        "requests_per_s_pending",
                        "detection_latency_s",
                        "cpu_ms_per_inference",
                        "cpu_pct_pending",
                        "cancel_s",
                        "scenario_s",
                        "server",
                        "notes",
                    )
                }
                print("    " + json.dumps(brief), file=sys.stderr, flush=True)
    finally:
        await server.stop()
    total_s = time.monotonic() - started
    stamp = dt.date.today().isoformat()
    stem = f"scale-{stamp}" + (f"-{tag}" if tag else "")
    RESULTS.mkdir(exist_ok=True)
    png = RESULTS / ("scale-requests-per-second" + (f"-{tag}" if tag else "") + ".png")
    plot_note = plot(rows, png)
    if _at_scale(rows):
        scale_png = RESULTS / ("scale-at-scale" + (f"-{tag}" if tag else "") + ".png")
        scale_note = plot_scale(rows, scale_png)
        plot_note = f"{plot_note}; {scale_note or scale_png}" if plot_note else scale_note
    meta = {
        "date": stamp,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "server_loop": server.urls.get("loop"),
        "library": library_info(args.library_src, args.library_commit),
        "quick": args.quick,
        "submit_concurrency": args.submit_concurrency,
        "max_connections": args.max_connections,
        "client_loop": args.client_loop,
        "failure_fraction": args.failure_fraction,
        "prices_usd_per_request": PRICE,
        "total_s": round(total_s, 1),
        "load_average": load_before,
        "load_average_after": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    header = header_line(meta)
    text = full_text(rows, meta)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (RESULTS / f"{stem}.md").write_text(f"# {header}\n\n{text}\n")
    print(header)
    print()
    print(text)
    print()
    print(f"wrote {RESULTS / stem}.json, .md" + (f"; {plot_note}" if plot_note else f", {png}"))


if __name__ == "__main__":
    asyncio.run(main())
