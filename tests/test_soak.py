"""The soak: inferences through fault-injecting proxies in front of S3 and the runtime.

Each fault mix runs ``SOAK_INFERENCES`` inferences (default 100 here; ``nox -s soak`` runs
1,000) with distinct payloads through an echo endpoint. Every one must resolve once, to its
own payload, before its deadline; duplicates counted at the emulator are compared with those
the client reports (``handle.submit_attempts``). With ``SOAK_REPORT=path`` the figures are
written there as JSON (``nox -s soak`` prints them as a table).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from faultproxy import FaultMix, FaultProxy
from sagemaker_async import AsyncInferenceClient, PollingConfig, RetryConfig
from sagemaker_async.emulator import EndpointConfig

INFERENCES = int(os.environ.get("SOAK_INFERENCES", "100"))
STALL = 4.0  # seconds: longer than the client's read timeout below

MIXES: dict[str, tuple[FaultMix, FaultMix]] = {
    # (S3 faults, runtime faults)
    "s3": (
        FaultMix(
            unavailable=0.08, internal_after=0.04, reset_before=0.04, reset_after=0.04,
            stall=0.01, truncate=0.05,
        ),
        FaultMix(),
    ),
    "runtime-after-acceptance": (
        FaultMix(),
        FaultMix(internal_after=0.05, reset_after=0.08, stall_after=0.02),
    ),
    "everything": (
        FaultMix(
            unavailable=0.05, internal_after=0.03, reset_before=0.03, reset_after=0.03,
            stall=0.01, truncate=0.04,
        ),
        FaultMix(
            throttle=0.08, unavailable=0.04, reset_before=0.04, internal_after=0.03,
            reset_after=0.04, stall_after=0.01,
        ),
    ),
}  # fmt: skip


def _append(path: Path, report: dict[str, Any]) -> None:
    existing = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps([*existing, report], indent=2))


@pytest.mark.parametrize("mix", list(MIXES))
async def test_soak(mix: str, local_async_endpoint_factory: Any) -> None:
    s3_mix, runtime_mix = MIXES[mix]
    echo = EndpointConfig(
        "echo", model="echo", instance_count=4, max_concurrent_invocations_per_instance=50
    )
    emulator = await local_async_endpoint_factory([echo])
    seed = sum(map(ord, mix))
    s3 = FaultProxy(emulator.s3_endpoint_url, s3_mix, kind="s3", seed=seed, stall_seconds=STALL)
    runtime = FaultProxy(
        emulator.url, runtime_mix, kind="runtime", seed=seed + 1, stall_seconds=STALL
    )
    await s3.start()
    await runtime.start()
    payloads = [f'{{"i": {i}, "nonce": "{uuid.uuid4()}"}}'.encode() for i in range(INFERENCES)]
    timeout = 60.0
    late: list[float] = []
    wrong: list[int] = []
    errors: list[str] = []
    reported = 0
    started = time.monotonic()
    try:
        async with AsyncInferenceClient(
            region_name=emulator.region,
            endpoint_url=runtime.url,
            s3_endpoint_url=s3.url,
            polling=PollingConfig(initial_delay=0.05, max_delay=0.5, timeout=timeout),
            # More connections than invokes in flight: an attempt abandoned while it waited
            # for a connection was never sent, but counts as "may have reached" (the client
            # cannot tell), which made the exact count below fail on a loaded machine.
            max_connections=250,
            retry=RetryConfig(
                max_attempts=10, initial_delay=0.02, max_delay=0.5, jitter=0.05,
                connect_timeout=1.0, read_timeout=3.0, attempt_timeout=5.0,
            ),
        ) as client:  # fmt: skip
            outcomes = client.map(
                "echo", payloads, max_in_flight=200, content_type="application/json"
            )
            async with contextlib.aclosing(outcomes):
                async for outcome in outcomes:
                    if outcome.error is not None:
                        errors.append(f"{outcome.index}: {outcome.error!r}")
                        continue
                    assert outcome.handle is not None and outcome.result is not None
                    reported += outcome.handle.submit_attempts - 1
                    late.append(time.time() - outcome.handle.deadline.timestamp())
                    if outcome.result.body != payloads[outcome.index]:
                        wrong.append(outcome.index)
        await emulator.join()
    finally:
        await runtime.close()
        await s3.close()
    stats = emulator.endpoint("echo").stats()
    counted = stats.received - INFERENCES
    report = {
        "mix": mix,
        "inferences": INFERENCES,
        "seconds": round(time.monotonic() - started, 1),
        "s3_faults": {k: v for k, v in s3.counts.items() if k not in ("requests", "forwarded")},
        "s3_requests": s3.counts["requests"],
        "runtime_faults": {
            k: v for k, v in runtime.counts.items() if k not in ("requests", "forwarded")
        },
        "invoke_requests": runtime.counts["requests"],
        "duplicates_at_emulator": counted,
        "duplicates_reported": reported,
        "lost": len(errors) + len(wrong),
        "latest_past_deadline_s": round(max(late), 3) if late else None,
    }
    if os.environ.get("SOAK_REPORT"):
        _append(Path(os.environ["SOAK_REPORT"]), report)
    assert not errors, errors[:5]
    assert not wrong, wrong[:5]
    assert max(late) < 0  # every handle resolved before its deadline
    # Faults after acceptance only: the client reports exactly the duplicates that ran. With
    # refusals the client cannot tell from drops (a reset before forwarding), it reports
    # every duplicate that may have run: never fewer than the emulator counted.
    if mix == "runtime-after-acceptance":
        # (Less the attempts the client gave up on before the proxy could forward them: on a
        # loaded machine an attempt can time out before its request is even read.)
        assert counted <= reported <= counted + runtime.counts["hung_up"], report
    else:
        assert reported >= counted, report
    assert sum(report["s3_faults"].values()) + sum(report["runtime_faults"].values()) > 0
