"""Batches over S3 (``run_s3_batch``, ``batch s3://... --out s3://...``) on moto and the emulator.

Claims and leases are checked in virtual time (the fake clock) against moto's conditional
writes; whole batches run in process and as several CLI processes on one prefix, one of
them killed, every item counted at the endpoint.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiobotocore.session import get_session

from fakeclock import FakeClock
from sagemaker_async import AsyncInferenceClient, PollingConfig, RetryConfig, ValidationError
from sagemaker_async._batch import BatchSummary
from sagemaker_async._claims import SENDING, SUBMITTED, Busy, Claim, ClaimBook
from sagemaker_async._s3batch import run_s3_batch
from sagemaker_async.emulator import EndpointConfig, LocalAsyncEndpoint

CLI = [sys.executable, "-m", "sagemaker_async._cli"]


def client_of(emulator: LocalAsyncEndpoint, **extra: Any) -> AsyncInferenceClient:
    return AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=emulator.url,
        s3_endpoint_url=emulator.s3_endpoint_url,
        polling=PollingConfig(initial_delay=0.02, max_delay=0.1, jitter=0.0),
        retry=RetryConfig(initial_delay=0.01, max_delay=0.05, jitter=0.0),
        **extra,
    )


@pytest.fixture
async def s3(moto_url: str) -> AsyncIterator[Any]:
    async with get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=moto_url
    ) as client:
        yield client


@pytest.fixture
async def emulator(local_async_endpoint_factory: Any) -> LocalAsyncEndpoint:
    endpoint: LocalAsyncEndpoint = await local_async_endpoint_factory(
        [
            EndpointConfig("echo", model="echo"),
            EndpointConfig("broken", model="fail"),
            EndpointConfig(
                "slow",
                model="sleep:0.3",
                instance_count=1,
                max_concurrent_invocations_per_instance=4,
            ),
        ]
    )
    return endpoint


async def put_inputs(s3: Any, bucket: str, prefix: str, names: list[str]) -> None:
    for name in names:
        await s3.put_object(Bucket=bucket, Key=prefix + name, Body=f"payload {name}".encode())


async def batch_inputs(s3: Any, bucket: str, name: str, items: list[str]) -> tuple[str, str, str]:
    """``items`` under a new ``<name>-<random>/in/``: that base, the source and the ``--out``."""
    base = f"{name}-{uuid.uuid4().hex[:8]}/"
    await put_inputs(s3, bucket, base + "in/", items)
    return base, f"s3://{bucket}/{base}in/", f"s3://{bucket}/{base}out/"


async def keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    found: list[str] = []
    paginator = s3.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        found += [item["Key"][len(prefix) :] for item in page.get("Contents", ())]
    return found


async def read(s3: Any, bucket: str, key: str) -> bytes:
    response = await s3.get_object(Bucket=bucket, Key=key)
    async with response["Body"] as stream:
        body: bytes = await stream.read()
    return body


def counted(summary: BatchSummary) -> int:
    return (
        summary.succeeded
        + summary.failed
        + summary.skipped
        + summary.not_submitted
        + summary.unfinished
    )


# -- claims and leases, in virtual time ------------------------------------------------------


@pytest.fixture
async def books(moto_url: str, s3: Any) -> AsyncIterator[tuple[FakeClock, ClaimBook, ClaimBook]]:
    """Two processes' claim books on one prefix of moto, on one fake clock (lease 60 s)."""
    clock = FakeClock()
    bucket = "claims-" + uuid.uuid4().hex[:8]
    await s3.create_bucket(Bucket=bucket)
    clients = [
        AsyncInferenceClient(
            region_name="us-east-1",
            endpoint_url=moto_url,
            s3_endpoint_url=moto_url,
            clock=clock,
            retry=RetryConfig(initial_delay=0.01, max_delay=0.05, jitter=0.0),
        )
        for _ in range(2)
    ]
    for client in clients:
        await client.open()
    prefix = f"s3://{bucket}/out/"
    one, two = (
        ClaimBook(c._store, clock, prefix, lease=60.0, owner=name)
        for c, name in zip(clients, ("one", "two"), strict=True)
    )
    await one.beat()
    await two.beat()
    try:
        yield clock, one, two
    finally:
        for client in clients:
            await client.aclose()


async def test_of_two_processes_racing_for_one_item_exactly_one_holds_it(
    books: tuple[FakeClock, ClaimBook, ClaimBook],
) -> None:
    _, one, two = books
    for n in range(10):
        got = await asyncio.gather(one.acquire(f"race-{n}", "a"), two.acquire(f"race-{n}", "b"))
        assert sorted(type(g).__name__ for g in got) == ["Busy", "Claim"], got
    # The holder's own retried write (answered 412) is recognised as its own, not a loss.
    again = await one.acquire("race-0", "c")
    assert isinstance(again, (Busy, Claim))


async def test_a_heartbeat_keeps_every_claim_and_a_lapsed_one_is_taken_over_with_its_state(
    books: tuple[FakeClock, ClaimBook, ClaimBook],
) -> None:
    clock, one, two = books
    claim = await one.acquire("item", "id-1")
    assert isinstance(claim, Claim) and claim.record["state"] == SENDING
    assert await one.update(claim, state=SUBMITTED, handle={"h": 1})
    clock.now += 50
    await one.beat()  # the process's heartbeat, not the claim, is renewed
    clock.now += 50  # past the first lease, within the renewed one
    busy = await two.acquire("item", "id-2")
    assert isinstance(busy, Busy) and busy.owner == "one"

    clock.now += 61  # the holder stopped beating (it died): lapsed
    taken = await two.acquire("item", "id-2")
    assert isinstance(taken, Claim) and taken.taken_over
    assert taken.previous_state == SUBMITTED and taken.record["handle"] == {"h": 1}
    assert taken.inference_id == "id-1"  # kept: a resubmission reuses it

    # The first holder was merely slow: its next write finds the claim gone, and it stops.
    assert not await one.update(claim, state=SUBMITTED)
    assert claim.lost and "item" not in one.held


async def test_a_slow_holder_that_lapsed_notices_at_its_next_beat_and_stops(
    books: tuple[FakeClock, ClaimBook, ClaimBook],
) -> None:
    clock, one, two = books
    lost = await one.acquire("lost", "id-lost")
    kept = await one.acquire("kept", "id-kept")
    assert isinstance(lost, Claim) and isinstance(kept, Claim)
    assert one.live()
    clock.now += 61  # one stalled past its lease
    assert not one.live()  # it must not write results now
    taken = await two.acquire("lost", "x")
    assert isinstance(taken, Claim) and taken.taken_over
    await one.beat()  # back: it re-asserts each claim before going on
    assert one.live()
    assert lost.lost and not kept.lost
    assert set(one.held) == {"kept"}
    # Re-asserted with a new ETag: a taker that read the claim before cannot take it now.
    assert isinstance(await two.acquire("kept", "y"), Busy)


async def test_keep_beating_renews_the_heartbeat_and_never_rewrites_a_claim(
    books: tuple[FakeClock, ClaimBook, ClaimBook], s3: Any
) -> None:
    clock, one, two = books
    claims = [await one.acquire(f"long-{n}", "id") for n in range(5)]
    assert all(isinstance(c, Claim) for c in claims)
    etags = [c.etag for c in claims if isinstance(c, Claim)]
    beats = one.beats
    beater = asyncio.ensure_future(one.keep_beating())

    async def settle() -> None:  # until the beater sleeps again (its next timer is set)
        for _ in range(2000):
            await asyncio.sleep(0.005)
            if any(not timer.cancelled for _, _, timer in clock._timers):
                return

    try:
        await clock.advance(300, settle)  # five leases
    finally:
        beater.cancel()
    assert 18 <= one.beats - beats <= 22  # every quarter of a lease
    assert [c.etag for c in claims if isinstance(c, Claim)] == etags  # no per-claim renewal
    assert isinstance(await two.acquire("long-0", "other"), Busy)


# -- whole batches, in process ---------------------------------------------------------------


async def test_an_s3_batch_copies_results_writes_the_manifest_and_a_rerun_sends_nothing(
    emulator: LocalAsyncEndpoint, s3: Any
) -> None:
    bucket = emulator.bucket
    base = f"batch-{uuid.uuid4().hex[:8]}/"
    names = ["a.json", "sub/b.json", "with space.json", "ünï/cödé.json", "x/y/z.txt"]
    await put_inputs(s3, bucket, base, names)
    out = f"s3://{bucket}/{base}out/"  # inside the source: its objects are not items
    async with client_of(emulator) as client:
        summary = await run_s3_batch(client, "echo", f"s3://{bucket}/{base}", out, lease=30)
    assert summary.total == len(names) == summary.succeeded, summary
    assert counted(summary) == summary.total
    for name in names:
        assert await read(s3, bucket, f"{base}out/{name}.out") == f"payload {name}".encode()
    lines = (await read(s3, bucket, f"{base}out/manifest.jsonl")).decode().splitlines()
    entries = [json.loads(line) for line in lines]
    assert sorted(e["input"] for e in entries) == sorted(f"s3://{bucket}/{base}{n}" for n in names)
    assert {e["status"] for e in entries} == {"succeeded"}
    assert all(e["output"] == e["input"].replace(base, base + "out/") + ".out" for e in entries)
    assert emulator.stats("echo").received == len(names)

    async with client_of(emulator) as client:
        rerun = await run_s3_batch(client, "echo", f"s3://{bucket}/{base}", out, lease=30)
    assert rerun.total == rerun.skipped == len(names) and rerun.succeeded == 0
    assert emulator.stats("echo").received == len(names)  # nothing sent again


async def test_failures_are_copied_as_error_objects(emulator: LocalAsyncEndpoint, s3: Any) -> None:
    bucket = emulator.bucket
    base = f"fail-{uuid.uuid4().hex[:8]}/"
    await put_inputs(s3, bucket, base + "in/", ["1", "2"])
    async with client_of(emulator) as client:
        summary = await run_s3_batch(
            client, "broken", f"s3://{bucket}/{base}in/", f"s3://{bucket}/{base}out/"
        )
    assert summary.failed == 2 and summary.total == 2
    found = await keys(s3, bucket, base + "out/")
    assert sorted(k for k in found if not k.startswith((".manifest/", ".owners/"))) == [
        ".claims/1",
        ".claims/2",
        "1.error",
        "2.error",
        "manifest.jsonl",
    ]


async def test_an_empty_prefix_finishes_with_nothing_to_do(
    emulator: LocalAsyncEndpoint,
) -> None:
    bucket = emulator.bucket
    async with client_of(emulator) as client:
        summary = await run_s3_batch(
            client, "echo", f"s3://{bucket}/nothing-{uuid.uuid4().hex}/", f"s3://{bucket}/o/"
        )
    assert summary.total == 0 and counted(summary) == 0


def kind_of(path: str, base: str) -> str:
    """What an S3 request of an S3 batch under ``base`` was for, by its path."""
    rest = path.split("/", 1)[1].removeprefix(base)
    if rest.startswith("out/.claims/"):
        return "claims"
    if rest.startswith("out/.owners/"):
        return "renewals"
    if rest.startswith("out/.manifest/") or rest == "out/manifest.jsonl":
        return "manifest"
    return "other"


async def test_several_processes_spend_few_s3_requests_per_item_by_kind(
    emulator: LocalAsyncEndpoint, s3: Any, embedded_s3: Any
) -> None:
    bucket = emulator.bucket
    n = 150
    base, source, out = await batch_inputs(s3, bucket, "cost", [f"{i:03d}" for i in range(n)])
    before = embedded_s3.counts_by_path()
    async with client_of(emulator) as a, client_of(emulator) as b, client_of(emulator) as c:
        summaries = await asyncio.gather(
            *(run_s3_batch(x, "echo", source, out, lease=30, max_in_flight=8) for x in (a, b, c))
        )
    after = embedded_s3.counts_by_path()
    assert sum(s.succeeded for s in summaries) == n == emulator.stats("echo").received
    assert all(s.succeeded + s.skipped == s.total == n for s in summaries), summaries
    by_kind: dict[str, int] = {}
    for path, kinds in after.items():
        if not path.startswith(f"{bucket}/{base}"):
            continue
        spent = sum(kinds.values()) - sum(before.get(path, {}).values())
        kind = kind_of(path, base)
        if path.startswith(f"{bucket}/{base}in/") and kinds.get("LIST") is None:
            continue  # the endpoint reading an input
        if kind == "other":
            kind = "copy" if kinds.get("PUT") else "listing"
        by_kind[kind] = by_kind.get(kind, 0) + spent
    per_item = {kind: count / n for kind, count in by_kind.items()}
    # A claim write, then the handle saved in it; a copy; the rest is shared by all items.
    # A claim and its handle per item; the rest is per process, heavy on 150 items: processes
    # starting at once do not know of each other yet (they meet on claims), and at the end
    # each reads the claims of the items the others still run. The old design (claims
    # renewed and read per item and process) spent 10 on claims alone.
    assert per_item["claims"] <= 3.5, per_item
    assert per_item["copy"] == 1.0, per_item
    assert per_item.get("renewals", 0) + per_item["manifest"] + per_item["listing"] <= 0.8
    assert sum(per_item.values()) <= 5.5, per_item


async def test_manifest_parts_are_written_as_the_run_goes(
    emulator: LocalAsyncEndpoint, s3: Any
) -> None:
    bucket = emulator.bucket
    names = [str(i) for i in range(24)]
    base, source, out = await batch_inputs(s3, bucket, "parts", names)
    async with client_of(emulator) as client:
        summary = await run_s3_batch(client, "slow", source, out, lease=1, max_in_flight=4)
    assert summary.succeeded == 24
    # About 2 s of work, a part at least every quarter of a lease: entries are not kept
    # in memory until the end.
    parts = [k for k in await keys(s3, bucket, base + "out/.manifest/") if k.endswith(".jsonl")]
    assert len(parts) >= 3, parts
    entries = []
    for part in parts:
        entries += (await read(s3, bucket, f"{base}out/.manifest/{part}")).decode().splitlines()
    assert sorted(json.loads(e)["input"] for e in entries) == sorted(source + n for n in names)


async def test_an_interrupted_s3_batch_counts_every_item_once(
    emulator: LocalAsyncEndpoint, s3: Any
) -> None:
    bucket = emulator.bucket
    _, source, out = await batch_inputs(s3, bucket, "cut", [f"{i:02d}" for i in range(30)])
    summary = BatchSummary()
    some_done = asyncio.Event()

    def progress(s: BatchSummary) -> None:
        if s.succeeded >= 2:
            some_done.set()

    async with client_of(emulator) as client:
        run = asyncio.ensure_future(
            run_s3_batch(
                client, "slow", source, out, max_in_flight=4, progress=progress, summary=summary
            )
        )
        await some_done.wait()
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
    assert 2 <= summary.succeeded < 30
    assert counted(summary) == summary.total, summary
    assert summary.unfinished == summary.total - summary.succeeded - summary.failed

    async with client_of(emulator) as client:
        rerun = await run_s3_batch(client, "slow", source, out, max_in_flight=8)
    assert rerun.total == 30 and rerun.succeeded + rerun.skipped == 30, rerun
    assert counted(rerun) == 30


@pytest.mark.parametrize(
    ("source", "out", "lease", "field", "problem"),
    [
        ("/local/folder", "s3://b/out/", 10, "source", "is not an s3:// URI"),
        ("s3://b/in/", "s3://b/in", 10, "out", "the source prefix itself"),
        ("s3://b/in/", "s3:///x/", 10, "out", "has no bucket"),
        ("s3://b/in/", "s3://b/out/", 0, "lease", "not a positive number"),
        ("s3://b/in/", "s3://b/out/", float("nan"), "lease", "not a positive number"),
    ],
)
async def test_bad_arguments_are_refused_before_any_call(
    source: str, out: str, lease: float, field: str, problem: str
) -> None:
    # Nothing listens at this address: any call would fail otherwise than ValidationError.
    client = AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        s3_endpoint_url="http://127.0.0.1:9",
    )
    with pytest.raises(ValidationError) as caught:
        await run_s3_batch(client, "echo", source, out, lease=lease)
    assert caught.value.field == field and problem in str(caught.value)
    assert caught.value.rule
    assert client._state == "new"  # never opened
    await client.aclose()


# -- several processes on one prefix ---------------------------------------------------------


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env={**os.environ, **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def claims_of(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    found = []
    for key in await keys(s3, bucket, prefix):
        try:
            found.append(json.loads(await read(s3, bucket, prefix + key)))
        except Exception:  # gone or being rewritten
            continue
    return found


async def test_three_processes_one_killed_finish_every_item_once_and_a_rerun_sends_nothing(
    emulator: LocalAsyncEndpoint, s3: Any
) -> None:
    bucket = emulator.bucket
    n = 40
    names = [f"item {i:02d}.json" for i in range(n)]
    base, source, out = await batch_inputs(s3, bucket, "procs", names)
    args = ["batch", "slow", source, "--out", out, "--lease", "2", "--max-in-flight", "4"]
    args += ["--no-progress"]
    env = {**os.environ, **emulator.env}
    victim = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    # Kill it while it holds submitted items (their handles are in its claims).
    for _ in range(1200):
        held = [
            c
            for c in await claims_of(s3, bucket, base + "out/.claims/")
            if f"-{victim.pid}-" in c["owner"] and c["state"] == SUBMITTED
        ]
        if len(held) >= 2:
            break
        await asyncio.sleep(0.05)
    assert held, "the process to kill never held a submitted item"
    victim.send_signal(signal.SIGKILL)
    await victim.wait()
    # What it held when it died (it may have finished some of the above meanwhile).
    held = [
        c
        for c in await claims_of(s3, bucket, base + "out/.claims/")
        if f"-{victim.pid}-" in c["owner"] and c["state"] == SUBMITTED
    ]

    results = await asyncio.gather(
        run_cli(*args, env=emulator.env), run_cli(*args, env=emulator.env)
    )
    reports = []
    for code, stdout, err in results:
        assert code == 0, err
        reports.append(json.loads(stdout))
    for report in reports:
        assert report["total"] == n
        assert report["succeeded"] + report["failed"] + report["skipped"] == n
    assert sum(r["failed"] for r in reports) == 0
    done_by_survivors = sum(r["succeeded"] for r in reports)
    assert done_by_survivors >= len(held)  # at least the victim's submitted ones
    # Each waited for, not sent again (more if a survivor stalled past its 2 s lease under load).
    assert sum(r["resumed"] for r in reports) >= len(held)

    outputs = sorted(k for k in await keys(s3, bucket, base + "out/") if k.endswith(".out"))
    assert outputs == sorted(f"{name}.out" for name in names)
    for name in names:
        assert await read(s3, bucket, f"{base}out/{name}.out") == f"payload {name}".encode()
    manifest = (await read(s3, bucket, base + "out/manifest.jsonl")).decode().splitlines()
    assert len(manifest) == n
    assert len({json.loads(line)["inference_id"] for line in manifest}) == n

    # Each item ran once at the endpoint, except those reported as resubmitted (items the
    # victim was about to send when it died: it may or may not have sent them).
    await emulator.endpoint("slow").join()
    resubmitted = sum(r["resubmitted"] for r in reports)
    assert n <= emulator.stats("slow").received <= n + resubmitted

    received = emulator.stats("slow").received
    code, stdout, err = await run_cli(*args, env=emulator.env)
    assert code == 0, err
    rerun = json.loads(stdout)
    assert rerun["skipped"] == n and rerun["succeeded"] == 0
    assert emulator.stats("slow").received == received


async def test_the_cli_refuses_a_mixed_local_and_s3_batch_in_one_line(
    emulator: LocalAsyncEndpoint, tmp_path: Any
) -> None:
    (tmp_path / "in").mkdir()
    code, out, err = await run_cli(
        "batch", "echo", str(tmp_path / "in"), "--out", "s3://b/out/", env=emulator.env
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--out" in err and "both" in err
    code, out, err = await run_cli(
        "batch", "echo", "s3://b/in/", "--out", "s3://b/in/", env=emulator.env
    )
    assert code == 2 and "--out" in err and "source prefix itself" in err


async def test_the_cli_progress_says_what_this_process_and_all_finished(
    emulator: LocalAsyncEndpoint, s3: Any
) -> None:
    bucket = emulator.bucket
    _, source, out = await batch_inputs(s3, bucket, "progress", ["1", "2", "3"])
    code, stdout, err = await run_cli("batch", "echo", source, "--out", out, env=emulator.env)
    assert code == 0, err
    assert json.loads(stdout)["manifest"] == out + "manifest.jsonl"
    assert "this process: ok=3 failed=0; all processes: 3 finished" in err
    code, stdout, err = await run_cli("batch", "echo", source, "--out", out, env=emulator.env)
    assert code == 0, err
    assert "this process: ok=0 failed=0; all processes: 3 finished" in err


async def test_a_lapsed_claim_that_may_have_been_sent_is_resubmitted_with_its_id_and_a_warning(
    emulator: LocalAsyncEndpoint, s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    bucket = emulator.bucket
    base = f"resend-{uuid.uuid4().hex[:8]}/"
    await put_inputs(s3, bucket, base + "in/", ["sent", "fresh", "refused"])
    # A process died: it claimed "sent" (and may have sent it), and "refused" was refused.
    for item, state in (("sent", SENDING), ("refused", "rejected")):
        claim = {"item": item, "owner": "dead", "token": item, "expires": 0.0}
        claim.update(state=state, inference_id=f"id-of-{item}")
        await s3.put_object(
            Bucket=bucket, Key=f"{base}out/.claims/{item}", Body=json.dumps(claim).encode()
        )
    with caplog.at_level("WARNING", "sagemaker_async"):
        async with client_of(emulator) as client:
            summary = await run_s3_batch(
                client, "echo", f"s3://{bucket}/{base}in/", f"s3://{bucket}/{base}out/"
            )
    assert summary.succeeded == 3 and summary.resubmitted == 1, summary
    warnings = [r.getMessage() for r in caplog.records if "resubmitting" in r.getMessage()]
    assert len(warnings) == 1 and "id-of-sent" in warnings[0]
    lines = (await read(s3, bucket, base + "out/manifest.jsonl")).decode().splitlines()
    ids = {
        json.loads(line)["input"].rsplit("/", 1)[1]: json.loads(line)["inference_id"]
        for line in lines
    }
    assert ids["sent"] == "id-of-sent" and ids["refused"] == "id-of-refused"


async def test_items_refused_by_an_unknown_endpoint_are_sent_afresh_by_a_rerun(
    local_async_endpoint_factory: Any, s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    without = await local_async_endpoint_factory([])  # the endpoint does not exist yet
    bucket = "late-" + uuid.uuid4().hex[:8]
    await s3.create_bucket(Bucket=bucket)
    base = "batch/"
    await put_inputs(s3, bucket, base + "in/", [str(i) for i in range(20)])
    source, out = f"s3://{bucket}/{base}in/", f"s3://{bucket}/{base}out/"
    async with client_of(without) as client:
        first = await run_s3_batch(client, "late", source, out, max_in_flight=4)
    assert first.stopped is not None and "every item would fail" in first.stopped
    # As a local batch: every item counted once, those never sent as not submitted.
    assert first.total == 20 and first.not_submitted == 20 and counted(first) == 20, first

    with_it = await local_async_endpoint_factory([EndpointConfig("late", model="echo")])
    caplog.clear()
    with caplog.at_level("WARNING", "sagemaker_async"):
        async with client_of(with_it) as client:
            second = await run_s3_batch(client, "late", source, out)
    assert second.succeeded == second.total == 20 and second.resubmitted == 0, second
    assert not [r for r in caplog.records if "resubmitting" in r.getMessage()]
    assert with_it.stats("late").received == 20


# -- the manifest at the end: streamed, written by one process -------------------------------


async def writer_of(moto_url: str, bucket: str, base: str, total: int) -> Any:
    """A process's S3 batch run (not started) on ``s3://bucket/base`` that found ``total`` items."""
    from sagemaker_async._s3batch import S3BatchPlan, _Run

    client = AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=moto_url,
        s3_endpoint_url=moto_url,
        retry=RetryConfig(initial_delay=0.01, max_delay=0.05, jitter=0.0),
    )
    await client.open()
    plan = S3BatchPlan.of(f"s3://{bucket}/{base}in/", f"s3://{bucket}/{base}out/", 30.0)
    summary = BatchSummary(total=total, skipped=total)
    return client, _Run(client, "echo", plan, None, None, 1, summary)


async def test_a_manifest_over_5_mib_is_uploaded_in_parts_every_line_once_no_upload_left(
    moto_url: str, s3: Any, embedded_s3: Any
) -> None:
    bucket = "manifest-" + uuid.uuid4().hex[:8]
    await s3.create_bucket(Bucket=bucket)
    base = "big/"
    pad = "x" * 600
    lines = [
        json.dumps({"input": f"s3://{bucket}/{base}in/{i:05d}", "pad": pad}) for i in range(10_000)
    ]
    for n in range(10):  # 10 parts of 1,000 entries: about 6.5 MB
        body = "".join(line + "\n" for line in lines[n * 1000 : (n + 1) * 1000])
        await s3.put_object(Bucket=bucket, Key=f"{base}out/.manifest/p-{n:06d}.jsonl", Body=body)
    key = f"{bucket}/{base}out/manifest.jsonl"
    before = embedded_s3.counts_by_path().get(key, {})
    client, run = await writer_of(moto_url, bucket, base, len(lines))
    try:
        await run._close(True)
    finally:
        await client.aclose()
    spent = embedded_s3.counts_by_path().get(key, {})
    got = (await read(s3, bucket, f"{base}out/manifest.jsonl")).decode().splitlines()
    assert sorted(got) == sorted(lines)  # every line once
    # CreateMultipartUpload and CompleteMultipartUpload (POST), two UploadPart (PUT).
    assert spent.get("OTHER", 0) - before.get("OTHER", 0) == 2, spent
    assert spent.get("PUT", 0) - before.get("PUT", 0) == 2, spent
    assert (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []) == []


async def test_a_streamed_upload_cancelled_midway_is_aborted(moto_url: str, s3: Any) -> None:
    bucket = "abort-" + uuid.uuid4().hex[:8]
    await s3.create_bucket(Bucket=bucket)
    reached, never = asyncio.Event(), asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"a" * (6 * 1024 * 1024)  # one part: uploaded before the next is asked for
        reached.set()
        await never.wait()
        yield b"b"

    async with AsyncInferenceClient(
        region_name="us-east-1", endpoint_url=moto_url, s3_endpoint_url=moto_url
    ) as client:
        task = asyncio.ensure_future(client._store.put_streamed(f"s3://{bucket}/m.jsonl", chunks()))
        await reached.wait()
        uploads = (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", [])
        assert [u["Key"] for u in uploads] == ["m.jsonl"]  # under way
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []) == []
    assert await keys(s3, bucket, "") == []


async def test_a_streamed_upload_that_fails_midway_is_aborted(moto_url: str, s3: Any) -> None:
    bucket = "fails-" + uuid.uuid4().hex[:8]
    await s3.create_bucket(Bucket=bucket)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"a" * (6 * 1024 * 1024)
        raise OSError("a manifest part could not be read")

    async with AsyncInferenceClient(
        region_name="us-east-1", endpoint_url=moto_url, s3_endpoint_url=moto_url
    ) as client:
        with pytest.raises(OSError):
            await client._store.put_streamed(f"s3://{bucket}/m.jsonl", chunks())
    assert (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads", []) == []


async def test_of_three_processes_one_writes_the_manifest_and_a_rerun_none(
    emulator: LocalAsyncEndpoint, s3: Any, embedded_s3: Any
) -> None:
    bucket = emulator.bucket
    n = 30
    base, source, out = await batch_inputs(s3, bucket, "one", [f"{i:02d}" for i in range(n)])
    key = f"{bucket}/{base}out/manifest.jsonl"

    def writes() -> int:
        spent = embedded_s3.counts_by_path().get(key, {})
        return int(spent.get("PUT", 0) + spent.get("OTHER", 0))

    async with client_of(emulator) as a, client_of(emulator) as b, client_of(emulator) as c:
        summaries = await asyncio.gather(
            *(run_s3_batch(x, "echo", source, out, lease=30, max_in_flight=4) for x in (a, b, c))
        )
    assert all(s.succeeded + s.skipped == s.total == n for s in summaries), summaries
    assert writes() == 1
    async with client_of(emulator) as client:
        rerun = await run_s3_batch(client, "echo", source, out, lease=30)
    assert rerun.skipped == n and emulator.stats("echo").received == n
    assert writes() == 1  # the manifest is whole already
    lines = (await read(s3, bucket, f"{base}out/manifest.jsonl")).decode().splitlines()
    assert sorted(json.loads(line)["input"] for line in lines) == [
        f"{source}{i:02d}" for i in range(n)
    ]


async def test_a_manifest_left_unwritten_by_a_dead_writer_is_written_by_a_rerun(
    emulator: LocalAsyncEndpoint, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagemaker_async import _s3batch

    bucket = emulator.bucket
    names = [f"{i:02d}" for i in range(12)]
    base, source, out = await batch_inputs(s3, bucket, "dead", names)
    async with client_of(emulator) as client:
        await run_s3_batch(client, "echo", source, out, lease=30)
    # As if the writer died midway, and a process died before writing its manifest part:
    # the marker names a process with no heartbeat, the manifest and the parts are gone.
    for part in await keys(s3, bucket, base + "out/.manifest/"):
        await s3.delete_object(Bucket=bucket, Key=f"{base}out/.manifest/{part}")
    await s3.delete_object(Bucket=bucket, Key=f"{base}out/manifest.jsonl")
    await s3.put_object(
        Bucket=bucket,
        Key=f"{base}out/.manifest/writer",
        Body=json.dumps({"owner": "gone-1", "state": "writing", "total": 12}).encode(),
    )
    monkeypatch.setattr(_s3batch, "_KNOWN", 5)  # the entries are found in three passes
    async with client_of(emulator) as client:
        rerun = await run_s3_batch(client, "echo", source, out, lease=30)
    assert rerun.skipped == len(names) and emulator.stats("echo").received == len(names)
    lines = (await read(s3, bucket, f"{base}out/manifest.jsonl")).decode().splitlines()
    assert sorted(json.loads(line)["input"] for line in lines) == [source + n for n in names]
