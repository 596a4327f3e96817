"""Batch runs in process (``run_batch``) against the emulator: what the manifest and the
summary say after a stop or an interruption, and what a rerun then does."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from sagemaker_async import AsyncInferenceClient, PollingConfig, RetryConfig
from sagemaker_async._batch import MANIFEST, BatchItem, BatchSummary, ProgressBar, run_batch
from sagemaker_async.emulator import EndpointConfig, LocalAsyncEndpoint


def client_of(emulator: LocalAsyncEndpoint) -> AsyncInferenceClient:
    return AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=emulator.url,
        s3_endpoint_url=emulator.s3_endpoint_url,
        polling=PollingConfig(initial_delay=0.02, max_delay=0.1, jitter=0.0),
        retry=RetryConfig(initial_delay=0.01, max_delay=0.05, jitter=0.0),
    )


def items(count: int) -> list[BatchItem]:
    return [BatchItem(f"item-{i:03d}", json.dumps({"i": i}).encode()) for i in range(count)]


def last_events(out: Path) -> dict[str, str]:
    events: dict[str, str] = {}
    for line in (out / MANIFEST).read_text().splitlines():
        record = json.loads(line)
        events[record["key"]] = record["event"]
    return events


def counted(summary: BatchSummary) -> int:
    """Every item is in exactly one of these."""
    return (
        summary.succeeded
        + summary.failed
        + summary.skipped
        + summary.not_submitted
        + summary.unfinished
    )


async def test_items_refused_by_an_unknown_endpoint_rerun_afresh_without_a_warning(
    local_async_endpoint_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    batch = items(50)
    without = await local_async_endpoint_factory([])  # the endpoint does not exist yet
    async with client_of(without) as client:
        first = await run_batch(client, "late", batch, tmp_path)
    assert first.stopped is not None and "every item would fail" in first.stopped
    assert first.not_submitted == 50 and counted(first) == first.total == 50
    # An item refused for sure is `rejected`; one never sent has no record: neither is left
    # `submitting`, which says the call may have reached SageMaker.
    events = last_events(tmp_path)
    assert "submitting" not in events.values(), events
    assert set(events.values()) == {"rejected"}

    with_it = await local_async_endpoint_factory([EndpointConfig("late", model="echo")])
    caplog.clear()
    with caplog.at_level(logging.WARNING, "sagemaker_async"):
        async with client_of(with_it) as client:
            second = await run_batch(client, "late", batch, tmp_path)
    assert second.succeeded == 50 and second.resubmitted == 0
    assert not [r.getMessage() for r in caplog.records if "resubmitting" in r.getMessage()]
    assert with_it.stats("late").received == 50  # each sent once


async def test_an_interrupted_batch_counts_every_item_and_a_rerun_finishes_them(
    local_async_endpoint_factory: Any, tmp_path: Path
) -> None:
    emulator = await local_async_endpoint_factory(
        [
            EndpointConfig(
                "slow",
                model="sleep:0.3",
                instance_count=1,
                max_concurrent_invocations_per_instance=4,
            )
        ]
    )
    batch = items(60)
    summary = BatchSummary()
    some_done = asyncio.Event()

    def progress(s: BatchSummary) -> None:
        if s.succeeded >= 2:
            some_done.set()

    async with client_of(emulator) as client:
        run = asyncio.create_task(
            run_batch(
                client,
                "slow",
                batch,
                tmp_path,
                max_in_flight=12,
                progress=progress,
                summary=summary,
            )
        )
        await some_done.wait()
        run.cancel()  # as Ctrl-C does
        with pytest.raises(asyncio.CancelledError):
            await run
    assert 2 <= summary.succeeded < 60
    assert counted(summary) == summary.total == 60, summary
    assert summary.unfinished == 60 - summary.succeeded - summary.failed

    async with client_of(emulator) as client:
        rerun = await run_batch(client, "slow", batch, tmp_path, max_in_flight=12)
    assert rerun.skipped == summary.succeeded
    assert rerun.succeeded + rerun.skipped == 60 and counted(rerun) == 60


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_bar_redraws_one_line_on_a_terminal_and_writes_deciles_elsewhere() -> None:
    counts = [BatchSummary(total=4, succeeded=1), BatchSummary(total=4, succeeded=3, failed=1)]
    terminal, log = Terminal(), io.StringIO()
    for stream in (terminal, log):
        bar = ProgressBar(stream)
        for summary in counts:
            bar(summary)
    # Each drawn over the one before (older tqdm blanks the line in between).
    drawings = [d for d in terminal.getvalue().split("\r") if d.strip()]
    assert any("1/4" in d and "ok=1 failed=0" in d for d in drawings)
    assert "4/4" in drawings[-1] and "ok=3 failed=1" in drawings[-1]
    assert drawings[-1].endswith("\n")  # closed: the next output starts on a line of its own
    lines = log.getvalue().splitlines()
    assert (
        len(lines) == 2 and "1/4" in lines[0] and "4/4" in lines[1] and "ok=3 failed=1" in lines[1]
    )
