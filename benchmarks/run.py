"""Benchmark: sagemaker-async against the baselines, in the same run, on one machine.

An emulated async endpoint (a model that takes 6 s) over the embedded S3 (moto), both in this
process; each client runs in a child process. Measured per scenario: wall time to the last
result, S3 requests per inference spent watching (counted by the S3 server), their price,
client CPU per inference, and how long the client process lingers (and polls) after its last
result. Writes benchmarks/results/<date>.{json,md} and prints the table.

    python benchmarks/run.py [--n 200] [--big 600] [--sdk-python PATH] [--model-seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

from aiobotocore.session import get_session

from sagemaker_async.emulator import EndpointConfig, LocalAsyncEndpoint

HERE = Path(__file__).parent
PRICE = {"GET": 0.0004 / 1000, "HEAD": 0.0004 / 1000, "LIST": 0.005 / 1000}  # $ per request
LINGER_LIMIT = 150.0


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def run_scenario(
    emulator: LocalAsyncEndpoint,
    python: str,
    scenario: str,
    n: int,
    prefix: str,
    rate: float | None = None,
) -> dict[str, Any]:
    s3 = emulator.embedded_s3
    assert s3 is not None
    ep = emulator.endpoint("bench")

    def watch_counts() -> dict[str, int]:
        counts = s3.counts(ep.output_path, ep.failure_path)
        return {kind: counts[kind] for kind in PRICE}

    s3.reset_counts()
    cpu_before = child_cpu()
    env = {**os.environ, **emulator.env}
    proc = await asyncio.create_subprocess_exec(
        python,
        str(HERE / "clients.py"),
        scenario,
        str(n),
        prefix,
        "bench",
        *([str(rate)] if rate else []),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    result: dict[str, Any] = {}
    while True:
        line = (await proc.stdout.readline()).decode()
        if not line:
            break
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
            break
    done_at = time.monotonic()
    at_done = watch_counts()
    try:
        await asyncio.wait_for(proc.wait(), LINGER_LIMIT)
        lingered = time.monotonic() - done_at
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        lingered = float("inf")
    after = watch_counts()
    cpu = child_cpu() - cpu_before
    await ep.join()
    per = {k: v / n for k, v in at_done.items()}
    return {
        "client": scenario,
        "load": f"{n} at {rate:g}/s" if rate else f"{n} at once",
        "wall_s": round(result.get("wall", float("nan")), 2),
        "latency_p50_s": result.get("p50"),
        "latency_p95_s": result.get("p95"),
        "ok": result.get("ok"),
        "failed": result.get("failed"),
        "s3_requests_per_inference": round(sum(per.values()), 2),
        "by_kind_per_inference": {k: round(v, 2) for k, v in per.items()},
        "usd_per_million_inferences": round(sum(at_done[k] * PRICE[k] for k in PRICE) / n * 1e6, 2),
        "cpu_ms_per_inference": round(cpu / n * 1000, 1),
        "linger_s": round(lingered, 1),
        "requests_after_last_result": sum(after.values()) - sum(at_done.values()),
    }


async def prepare_inputs(emulator: LocalAsyncEndpoint, n: int) -> str:
    session = get_session()
    session.set_credentials(*emulator.credentials)
    async with session.create_client(
        "s3", endpoint_url=emulator.s3_endpoint_url, region_name=emulator.region
    ) as s3:
        await s3.create_bucket(Bucket="bench-inputs")
        await asyncio.gather(
            *(
                s3.put_object(Bucket="bench-inputs", Key=f"in/{i}.json", Body=json.dumps({"i": i}))
                for i in range(n)
            )
        )
    return "s3://bench-inputs/in/"


def table(rows: list[dict[str, Any]], model_seconds: float) -> str:
    head = (
        "| client | load | wall (s) | latency p50 / p95 (s) | ok / failed "
        "| S3 req / inference | $ / 1M inf. | CPU ms / inf. | lingers after (s) "
        "| requests after |"
    )
    lines = [
        f"Model latency {model_seconds:g} s; all S3 traffic counted by the embedded S3 server.",
        "",
        head,
        "|" + "---|" * 10,
    ]
    for r in rows:
        lines.append(
            f"| {r['client']} | {r['load']} | {r['wall_s']} "
            f"| {r['latency_p50_s']} / {r['latency_p95_s']} | {r['ok']} / {r['failed']} "
            f"| {r['s3_requests_per_inference']} | {r['usd_per_million_inferences']} "
            f"| {r['cpu_ms_per_inference']} | {r['linger_s']} | {r['requests_after_last_result']} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--big", type=int, default=600, help="second, larger run (0: skip)")
    parser.add_argument("--model-seconds", type=float, default=6.0)
    parser.add_argument("--sdk-python", help="a python with sagemaker<3 installed (baseline)")
    parser.add_argument("--stream", type=int, default=600, help="inferences in the stream run")
    parser.add_argument("--rate", type=float, default=40.0, help="stream: submissions per s")
    args = parser.parse_args()
    total = max(args.n, args.big, args.stream)
    endpoint = EndpointConfig(
        "bench",
        model=f"sleep:{args.model_seconds}",
        instance_count=1,
        max_concurrent_invocations_per_instance=1000,
    )
    rows: list[dict[str, Any]] = []
    async with LocalAsyncEndpoint([endpoint]) as emulator:
        prefix = await prepare_inputs(emulator, total)
        plan: list[tuple[str, int, float | None]] = [
            ("ours", args.n, None),
            ("naive", args.n, None),
        ]
        if args.sdk_python:
            plan.append(("sdk", args.n, None))
        if args.big:
            plan += [("ours", args.big, None), ("naive", args.big, None)]
        if args.stream:
            plan += [("ours", args.stream, args.rate), ("naive", args.stream, args.rate)]
        for scenario, n, rate in plan:
            python = args.sdk_python if scenario == "sdk" else sys.executable
            print(f"running {scenario} x{n} rate={rate} ...", file=sys.stderr, flush=True)
            rows.append(await run_scenario(emulator, python, scenario, n, prefix, rate))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    names = {
        "ours": "sagemaker-async",
        "naive": "naive asyncio HEAD loop (1 s)",
        "sdk": "SageMaker SDK v2 AsyncPredictor (32 threads, delay=1)",
    }
    for r in rows:
        r["client"] = names[r["client"]]
    text = table(rows, args.model_seconds)
    print(text)
    stamp = dt.date.today().isoformat()
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    meta = {
        "date": stamp,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "model_seconds": args.model_seconds,
    }
    (out / f"{stamp}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (out / f"{stamp}.md").write_text(f"# Benchmark {stamp}\n\n{text}\n")


if __name__ == "__main__":
    asyncio.run(main())
