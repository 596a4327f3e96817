"""S3 batch benchmark: N inputs under one prefix, P ``batch`` processes, one killed midway.

One server process (``fake_sagemaker.py``: the fake S3 with conditional writes and CopyObject,
and a fake endpoint of fixed capacity: ``capacity`` requests at once, ``delay`` s each, the
rest queued) and P processes running ``sagemaker-async batch ENDPOINT s3://bench-in/in/ --out
s3://bench-in/out/``. Once half the items were invoked, the first process is killed
(SIGKILL): the others take its items over once its leases lapse.

    python benchmarks/s3batch.py                       # 100,000 inputs, 4 processes
    python benchmarks/s3batch.py --items 20000 --capacity 100 --delay 0.5
    python benchmarks/s3batch.py --first-submit --items 2000000  # the lazy listing

Reports: throughput against the endpoint's capacity, each process's peak RSS (and at a
quarter of the run, to see it flat in the number of items), the S3 requests per item by
kind (claims, copies, manifest) counted by the server, and the invocations per InferenceId
(every item run once, but for those reported as resubmitted). Writes
benchmarks/results/s3batch-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from scale import RESULTS, Server, child_env

HERE = Path(__file__).parent
ENDPOINT = "bench-batch"


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def by_kind(labels: dict[str, int], items: int) -> dict[str, float]:
    """S3 requests per item by what they were for (the server's labels: verb and folder)."""
    kinds: dict[str, int] = {}
    for label, count in labels.items():
        verb, what = label.rsplit(" ", 1)
        if what == "claims":
            kind = "claim (write, read, list)"
        elif what == "renewals":
            kind = "renewals (heartbeats)"
        elif what == "manifest":
            kind = "manifest"
        elif verb == "COPY":
            kind = "copy"
        elif verb == "LIST":
            kind = "listing (source, out, results)"
        else:
            kind = "results read (the client's completion engine)"
        kinds[kind] = kinds.get(kind, 0) + count
    per_item = {kind: round(count / items, 3) for kind, count in sorted(kinds.items())}
    per_item["total"] = round(sum(kinds.values()) / items, 3)
    return per_item


def rate(series: list[tuple[float, int]], low: float, high: float) -> float | None:
    """Completions per second between the first sample at ``low`` and the last at ``high``."""
    inside = [(t, c) for t, c in series if low <= c <= high]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return None
    (t0, c0), (t1, c1) = inside[0], inside[-1]
    return round((c1 - c0) / (t1 - t0), 1)


def steady_rates(
    series: list[tuple[float, int]], n: int, killed_at: float | None, lease: float
) -> dict[str, float | None]:
    """The endpoint's completion rate: before the kill, after its items were taken over."""
    killed = next((c for t, c in series if killed_at and t >= killed_at), n // 2)
    resumed = next(
        (c for t, c in series if killed_at and t >= killed_at + 2 * lease + 10), n
    )  # the killed process's claims are read a grace after its heartbeat lapsed
    return {
        "from_5%_to_the_kill": rate(series, 0.05 * n, killed),
        "after_the_takeover_to_95%": rate(series, resumed, 0.95 * n),
        "whole_run_5%_to_95%": rate(series, 0.05 * n, 0.95 * n),
    }


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server = Server()
    await server.start()
    try:
        await server.post("reset", params={"bucket": "bench-in"})
        await server.post(
            "bulk", params={"bucket": "bench-in", "prefix": "in/", "count": args.items}
        )
        body = {"name": ENDPOINT, "delay": args.delay, "capacity": args.capacity}
        await server.post("endpoints", body=body)
        await server.post("reset-counts")
        env = child_env(server.urls, library_src=str(HERE.parent / "src"))
        command = [
            sys.executable,
            "-m",
            "sagemaker_async._cli",
            "batch",
            ENDPOINT,
            "s3://bench-in/in/",
            "--out",
            "s3://bench-in/out/",
            "--lease",
            str(args.lease),
            "--max-in-flight",
            str(args.max_in_flight),
            "--no-progress",
        ]
        started = time.time()
        procs = [
            await asyncio.create_subprocess_exec(
                *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            for _ in range(args.processes)
        ]
        outputs = [asyncio.ensure_future(p.communicate()) for p in procs]
        peak: dict[int, float] = {}
        quarter: dict[int, float] = {}
        rss_at: dict[str, dict[int, float]] = {}  # RSS at 10%, 25%, 50%, 75%, 90% of the items
        cpu: dict[int, float] = {}
        series: list[tuple[float, int]] = []  # (time, completions at the endpoint)
        load: list[float] = []
        killed_at: float | None = None
        measure_from: tuple[float, int] | None = None
        killed_span, before_kill = 0.0, 0
        first_done: float | None = None
        while not all(o.done() for o in outputs[1:]):
            runtime = await server.get("runtime")
            load.append(os.getloadavg()[0])
            series.append((time.time(), runtime.get("completed", 0)))
            share = runtime["invocations"] / args.items
            for i, p in enumerate(procs):
                mb = rss_mb(p.pid) if p.returncode is None else None
                used = cpu_s(p.pid) if p.returncode is None else None
                if used is not None:
                    cpu[i] = used
                if mb is not None:
                    peak[i] = max(peak.get(i, 0.0), mb)
                    if share < 0.25:
                        quarter[i] = mb
                    for mark in (0.1, 0.25, 0.5, 0.75, 0.9):
                        if share >= mark:
                            rss_at.setdefault(f"{mark:.0%}", {}).setdefault(i, round(mb, 1))
            if first_done is None and runtime["last_done"]:
                first_done = runtime["last_done"]
            if measure_from is None and runtime["invocations"] >= args.items / 20:
                measure_from = (time.time(), runtime["invocations"])
            if killed_at is None and runtime["invocations"] >= args.items / 2:
                procs[0].send_signal(signal.SIGKILL)
                killed_at = time.time()
                if measure_from is not None:  # the steady rate: from 5% of the items to the kill
                    killed_span = killed_at - measure_from[0]
                    before_kill = runtime["invocations"] - measure_from[1]
            await asyncio.sleep(0.5)
        results = [await o for o in outputs]
        runtime = await server.get("runtime")
        labels = await server.get("labels")
        counts = await server.get("counts")
    finally:
        await server.stop()
    reports = []
    for code, (out, err) in zip([p.returncode for p in procs], results, strict=True):
        text = out.decode().strip()
        reports.append(
            {
                "exit": code,
                "summary": json.loads(text) if text else None,
                "stderr": err.decode()[-400:],
            }
        )
    survivors = [r["summary"] for r in reports[1:] if r["summary"]]
    elapsed = runtime["last_done"] - started
    capacity = args.capacity / args.delay
    # the killed process's items wait for its leases: that time is not the endpoint's
    lease_pause = args.lease
    n = args.items
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "items": n,
        "processes": args.processes,
        "endpoint": {"capacity": args.capacity, "delay_s": args.delay, "items_per_s": capacity},
        "lease_s": args.lease,
        "max_in_flight": args.max_in_flight,
        "elapsed_s": round(elapsed, 1),
        "throughput_items_per_s": round(n / elapsed, 1),
        "throughput_without_the_lease_pause": round(n / max(1e-9, elapsed - lease_pause), 1),
        "killed_after_s": round(killed_at - started, 1) if killed_at else None,
        "rss_mb_peak": {str(i): round(v, 1) for i, v in peak.items()},
        "rss_mb_at_a_quarter": {str(i): round(v, 1) for i, v in quarter.items()},
        "rss_mb_by_progress": {k: {str(i): v for i, v in d.items()} for k, d in rss_at.items()},
        "cpu_s_by_process": {str(i): round(v, 1) for i, v in cpu.items()},
        "client_cpu_ms_per_item": round(1000 * sum(cpu.values()) / n, 2),
        "load_average_1min": {
            "min": round(min(load), 2) if load else None,
            "mean": round(sum(load) / len(load), 2) if load else None,
            "max": round(max(load), 2) if load else None,
        },
        "throughput_before_the_kill": round(before_kill / max(1e-9, killed_span), 1)
        if killed_span
        else None,
        "completions_per_s": steady_rates(series, n, killed_at, args.lease),
        "s3_requests_per_item_by_kind": by_kind(labels, n),
        "invocations": runtime["invocations"],
        "distinct_inference_ids": runtime["distinct_ids"],
        "ids_run_more_than_once": runtime["ids_run_more_than_once"],
        "resubmitted_reported": sum(s["resubmitted"] for s in survivors),
        "resumed_reported": sum(s["resumed"] for s in survivors),
        "finished_by_survivors": sum(s["succeeded"] + s["failed"] for s in survivors),
        "survivors_exit": [r["exit"] for r in reports[1:]],
        "survivors_total": [s["total"] for s in survivors],
        "s3_requests_by_label": labels,
        "s3_requests_per_item_by_label": {k: round(v / n, 3) for k, v in sorted(labels.items())},
        "s3_counts": counts["total"],
        "stderr_tail_of_survivors": [r["stderr"] for r in reports[1:]],
    }


async def first_submit(args: argparse.Namespace) -> dict[str, Any]:
    """One process on ``--items`` keys: how long until its first invoke, and after what."""
    server = Server()
    await server.start()
    try:
        await server.post("reset", params={"bucket": "bench-in"})
        await server.post(
            "bulk", params={"bucket": "bench-in", "prefix": "in/", "count": args.items}
        )
        body = {"name": ENDPOINT, "delay": args.delay, "capacity": args.capacity}
        await server.post("endpoints", body=body)
        await server.post("reset-counts")
        env = child_env(server.urls, library_src=str(HERE.parent / "src"))
        command = [sys.executable, "-m", "sagemaker_async._cli", "batch", ENDPOINT]
        command += ["s3://bench-in/in/", "--out", "s3://bench-in/out/", "--no-progress"]
        started = time.time()
        proc = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        first = None
        while time.time() - started < 120:
            runtime = await server.get("runtime")
            if runtime["invocations"] >= 1:
                first = time.time() - started
                break
            await asyncio.sleep(0.05)
        labels = await server.get("labels")
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    finally:
        await server.stop()
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "keys": args.items,
        "first_invoke_after_s": round(first, 2) if first is not None else None,
        "s3_requests_before_it": labels,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--capacity", type=int, default=200)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--lease", type=float, default=20.0)
    parser.add_argument("--max-in-flight", type=int, default=256)
    parser.add_argument("--tag", default="")
    parser.add_argument(
        "--first-submit",
        action="store_true",
        help="only time one process's first invoke over --items keys (the lazy listing)",
    )
    args = parser.parse_args()
    result = asyncio.run(first_submit(args) if args.first_submit else run(args))
    RESULTS.mkdir(exist_ok=True)
    kind = "s3batch-first-submit" if args.first_submit else "s3batch"
    name = f"{kind}-{result['date'][:10]}{'-' + args.tag if args.tag else ''}.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")
    print(
        json.dumps({k: v for k, v in result.items() if k != "stderr_tail_of_survivors"}, indent=2)
    )


if __name__ == "__main__":
    main()
