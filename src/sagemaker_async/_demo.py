"""``sagemaker-async demo``: a whole batch on one machine, no AWS account.

Starts the embedded S3 and the emulator, runs a few hundred inferences through a model with
realistic latency (some fail), and prints what happened, S3 requests per inference included.
"""

from __future__ import annotations

import inspect
import json
import math
import random
import tempfile
from pathlib import Path
from typing import TextIO

from aiobotocore.session import get_session

from ._batch import BatchItem, BatchSummary, ProgressBar, run_batch
from ._client import AsyncInferenceClient
from ._config import PollingConfig

__all__ = ["demo_model", "run_demo"]

ENDPOINT = "demo-sentiment"
_TEXTS = [
    "great product, works as promised",
    "terrible support and a broken screen",
    "okay value, nothing special",
    "love it, excellent battery",
    "awful delivery, bad packaging",
    "good enough for the price",
]


async def demo_model(request: object) -> bytes | tuple[bytes, str]:
    """The demo's model: sentiment analysis with a lognormal latency; ~7% of requests fail.

    Latency and failure follow from the payload's ``id``, so a rerun behaves the same.
    """
    import asyncio

    from .emulator import ModelError, resolve_model

    payload = json.loads(getattr(request, "payload", b"{}") or b"{}")
    rng = random.Random(payload.get("id", 0))
    await asyncio.sleep(min(4.0, rng.lognormvariate(math.log(0.8), 0.5)))
    if rng.random() < 0.07:
        raise ModelError("simulated model error: input rejected by the model", 500)
    answer = resolve_model("sentiment")(request)  # type: ignore[arg-type]
    if inspect.isawaitable(answer):
        answer = await answer
    return answer


def _items(count: int) -> list[BatchItem]:
    return [
        BatchItem(
            f"review-{i:04d}.json",
            json.dumps({"id": i, "text": _TEXTS[i % len(_TEXTS)]}).encode(),
        )
        for i in range(count)
    ]


async def run_demo(
    *, count: int = 300, out_dir: Path | None = None, stdout: TextIO, progress: bool = True
) -> BatchSummary:
    """Run the demo; returns the batch summary after printing the report to ``stdout``."""
    from .emulator import EndpointConfig, LocalAsyncEndpoint

    endpoint = EndpointConfig(
        ENDPOINT, model=demo_model, instance_count=4, max_concurrent_invocations_per_instance=16
    )
    out = out_dir or Path(tempfile.mkdtemp(prefix="sagemaker-async-demo-"))
    stdout.write(
        f"sagemaker-async demo: {count} inferences through a local async endpoint "
        f"({endpoint.concurrency} at a time, 0.3-4 s each, ~7% fail)\n"
    )
    async with LocalAsyncEndpoint([endpoint]) as emulator:
        stdout.write(f"  emulator {emulator.url}, embedded S3 {emulator.s3_endpoint_url}\n")
        stdout.flush()
        s3 = emulator.embedded_s3
        assert s3 is not None
        s3.reset_counts()
        session = get_session()
        session.set_credentials(*emulator.credentials)
        async with AsyncInferenceClient(
            session=session,
            region_name=emulator.region,
            endpoint_url=emulator.url,
            s3_endpoint_url=emulator.s3_endpoint_url,
            polling=PollingConfig(),
        ) as client:
            summary = await run_batch(
                client,
                ENDPOINT,
                _items(count),
                out,
                content_type="application/json",
                progress=ProgressBar() if progress else None,
            )
        ep = emulator.endpoint(ENDPOINT)
        counts = s3.counts(ep.output_path, ep.failure_path)
        polled = {kind: counts[kind] for kind in ("GET", "HEAD", "LIST")}
    finished = summary.succeeded + summary.failed
    per = {k: v / finished if finished else 0.0 for k, v in polled.items()}
    p50, p90, p99 = (summary.percentile(q) for q in (50, 90, 99))
    lines = [
        f"  succeeded      {summary.succeeded}",
        f"  failed         {summary.failed}  (the model's errors, raised as InferenceFailedError)",
        f"  wall time      {summary.wall_seconds:.1f} s",
        f"  latency        p50 {p50 or 0:.2f} s   p90 {p90 or 0:.2f} s   p99 {p99 or 0:.2f} s"
        "   (submit to result in hand)",
        f"  S3 requests    {sum(per.values()):.2f} per inference to watch for results "
        f"(GET {per['GET']:.2f}, HEAD {per['HEAD']:.2f}, LIST {per['LIST']:.2f})",
        f"  results in     {out}",
    ]
    stdout.write("\n".join(lines) + "\n")
    return summary
