"""The completion engine against a real moto server, on a fake clock.

Every request is counted by the S3 server; time is virtual (see fakeclock.py), so schedules,
sweep intervals, budgets and deadlines are checked in milliseconds of real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pytest
from aiobotocore.session import get_session

from fakeclock import FakeClock, settler
from sagemaker_async import (
    AsyncInferenceClient,
    AsyncInferenceHandle,
    CompletionConfig,
    InferenceFailedError,
    InferenceTimeoutError,
    PollingConfig,
)
from sagemaker_async._budget import RequestBudget
from sagemaker_async._engine._records import Mode
from sagemaker_async._engine._strategy import choose, crowded, sweep_cap
from support import ACCESS_DENIED, SLOW_DOWN, faults, other_tasks

if TYPE_CHECKING:
    from sagemaker_async.emulator import EmbeddedS3

POLLING = PollingConfig(initial_delay=0.5, max_delay=5.0, jitter=0.5)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


class World:
    """A bucket of its own on moto, a client on a fake clock, and a writer for results."""

    def __init__(
        self, client: AsyncInferenceClient, clock: FakeClock, s3: Any, embedded: EmbeddedS3
    ):
        self.client, self.clock, self.s3, self.embedded = client, clock, s3, embedded
        self.bucket = f"engine-{uuid.uuid4().hex[:12]}"
        self.settle = settler(client)
        self.done_at: dict[str, float] = {}

    @classmethod
    async def make(
        cls,
        url: str,
        s3: Any,
        embedded: EmbeddedS3,
        *,
        completion: CompletionConfig | None,
        polling: PollingConfig,
    ) -> World:
        """An open client on a fake clock whose AWS calls go to ``url``, and a new bucket."""
        clock = FakeClock()
        client = AsyncInferenceClient(
            region_name="us-east-1",
            endpoint_url=url,
            s3_endpoint_url=url,
            polling=polling,
            completion=completion,
            clock=clock,
        )
        await client.open()
        world = cls(client, clock, s3, embedded)
        await s3.create_bucket(Bucket=world.bucket)
        return world

    def handle(
        self, out: str, fail: str, *, endpoint: str = "ep", timeout: float = 3600, age: float = 0
    ) -> AsyncInferenceHandle:
        """A pending inference submitted ``age`` seconds ago (resumed now), with its locations
        under out/ and fail/."""
        name = uuid.uuid4().hex
        wall = self.clock.wall()
        handle = self.client.resume(
            {
                "version": 1,
                "inference_id": name,
                "endpoint_name": endpoint,
                "output_location": f"s3://{self.bucket}/{out}/{name}.out",
                "failure_location": f"s3://{self.bucket}/{fail}/{name}-error.out",
                "submitted_at": iso(wall - age),
                "deadline": iso(wall + timeout),
            }
        )
        return handle

    def crowd(self, n: int, out: str, fail: str) -> list[AsyncInferenceHandle]:
        """``n`` pending inferences under out/ and fail/, each waited on (see :meth:`watch`)."""
        handles = [self.handle(out, fail) for _ in range(n)]
        for handle in handles:
            self.watch(handle)
        return handles

    def watch(self, handle: AsyncInferenceHandle) -> None:
        """Wait on ``handle`` with a done callback; record the virtual time it ended."""
        handle.add_done_callback(lambda h: self.done_at.setdefault(h.inference_id, self.clock.now))

    async def write(self, uri: str, body: bytes = b"{}") -> None:
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        await self.s3.put_object(Bucket=bucket, Key=key, Body=body)

    def counts(self, prefix: str) -> dict[str, int]:
        return self.embedded.counts(f"{self.bucket}/{prefix}")

    async def advance(self, seconds: float) -> None:
        await self.clock.advance(seconds, self.settle)

    def modes(self) -> dict[str, str]:
        return {
            k.removeprefix(f"s3://{self.bucket}/"): v
            for k, v in self.client._engine.modes().items()
        }


@pytest.fixture
async def make_world(moto_url: str, embedded_s3: Any) -> AsyncIterator[Any]:
    session = get_session()
    made: list[AsyncInferenceClient] = []
    async with session.create_client("s3", endpoint_url=moto_url, region_name="us-east-1") as s3:

        async def make(
            completion: CompletionConfig | None = None, polling: PollingConfig = POLLING
        ) -> World:
            world = await World.make(
                moto_url, s3, embedded_s3, completion=completion, polling=polling
            )
            made.append(world.client)
            return world

        yield make
        for client in made:
            await client.aclose()


# -- the cost model --------------------------------------------------------------------------
def test_the_cost_model_lists_when_many_are_pending_and_keeps_its_choice_near_the_edge() -> None:
    assert choose(Mode.POLL, poll_weight=1, pages=1, list_cost=12.5) is Mode.POLL
    assert choose(Mode.POLL, poll_weight=16, pages=1, list_cost=12.5) is Mode.LIST
    # between 12.5 / 1.25 and 12.5 * 1.25 the current choice stays: no flapping
    assert choose(Mode.POLL, poll_weight=14, pages=1, list_cost=12.5) is Mode.POLL
    assert choose(Mode.LIST, poll_weight=14, pages=1, list_cost=12.5) is Mode.LIST
    assert choose(Mode.LIST, poll_weight=9, pages=1, list_cost=12.5) is Mode.POLL
    # a directory of 100 pages needs ~1,600 pending before listing pays
    assert choose(Mode.POLL, poll_weight=1500, pages=100, list_cost=12.5) is Mode.POLL
    assert choose(Mode.POLL, poll_weight=1600, pages=100, list_cost=12.5) is Mode.LIST
    assert crowded(pages_read=2, poll_weight=18, list_cost=12.5)
    assert not crowded(pages_read=1, poll_weight=18, list_cost=12.5)


def test_sweeps_are_frequent_for_a_busy_directory_and_never_slower_than_max_delay() -> None:
    assert sweep_cap(1, 10_000, 12.5, 0.5, 20.0) == 0.5
    # 2,000 pending: a LIST a second, and one of the failure directory every two: 1.5 req/s
    assert sweep_cap(1, 2_000, 12.5, 0.5, 20.0) == pytest.approx(1.0)
    assert sweep_cap(1, 200, 12.5, 0.5, 20.0) == pytest.approx(10.0)
    assert sweep_cap(1, 20, 12.5, 0.5, 20.0) == 20.0
    assert sweep_cap(100, 20_000, 12.5, 0.5, 20.0) == pytest.approx(10.0)


# -- choosing and switching, counted by the server --------------------------------------------
async def test_one_handle_is_polled_and_a_crowd_is_listed(make_world: Any) -> None:
    world = await make_world()
    lone = world.handle("out1", "fail1")
    world.watch(lone)
    crowd = world.crowd(40, "out2", "fail2")
    await world.advance(60)
    assert world.modes() == {"out1/": "poll", "fail1/": "poll", "out2/": "list", "fail2/": "list"}
    lone_counts, crowd_counts = world.counts("out1/"), world.counts("out2/")
    assert lone_counts["LIST"] == 0 and lone_counts["GET"] >= 10  # backoff up to max_delay
    assert crowd_counts["GET"] == 0  # nothing read one by one
    # 60 s of sweeps of 40 pending: the cost model's cap (5 s) after the first fast ones
    assert 10 <= crowd_counts["LIST"] <= 20, crowd_counts
    assert 5 <= world.counts("fail2/")["LIST"] <= 10  # failure objects only: half as often

    written = world.clock.now
    for handle in crowd[:37]:
        await world.write(handle.output_location, b'{"ok": true}')
    await world.advance(POLLING.max_delay)
    assert all(h.done() for h in crowd[:37])
    for handle in crowd[:37]:  # found within max_delay of being written
        assert world.done_at[handle.inference_id] - written <= POLLING.max_delay
        assert (await handle).json() == {"ok": True}
    for handle in crowd[:37]:  # one GET per result, none to detect it
        assert world.embedded.counts(handle.output_location)["GET"] == 1
    # three left: cheaper to read them one by one again
    assert world.modes()["out2/"] == "poll"
    await world.write(crowd[37].failure_location, b"model error")
    await world.advance(2 * POLLING.max_delay)
    with pytest.raises(InferenceFailedError, match="model error"):
        await crowd[37]
    assert not lone.done()


async def test_a_directory_crowded_with_old_objects_is_polled(
    make_world: Any, embedded_s3: Any
) -> None:
    from moto.s3.models import s3_backends

    world = await make_world()
    backend = s3_backends["123456789012"]["global"]
    for i in range(2_500):  # years of old outputs: 3 pages
        backend.put_object(world.bucket, f"old/{i:05}.out", b"old")
    crowd = world.crowd(18, "old", "oldfail")
    await world.advance(1.0)
    # the first sweep stops as soon as it costs more than reading 18 keys would (2 pages)
    assert world.counts("old/")["LIST"] == 2
    assert world.modes()["old/"] == "poll"
    await world.advance(30)
    assert world.counts("old/")["LIST"] == 2  # and the directory is not listed again
    await world.write(crowd[0].output_location)
    await world.advance(POLLING.max_delay)
    assert crowd[0].done() and not crowd[1].done()


async def test_strategy_list_sweeps_every_page_of_a_crowded_directory(
    make_world: Any,
) -> None:
    from moto.s3.models import s3_backends

    world = await make_world(CompletionConfig(strategy="list"))
    backend = s3_backends["123456789012"]["global"]
    for i in range(2_500):
        backend.put_object(world.bucket, f"old/{i:05}.out", b"old")
    handle = world.handle("old", "oldfail")
    world.watch(handle)
    await world.advance(0.6)
    assert world.counts("old/") == {
        "GET": 0,
        "HEAD": 0,
        "LIST": 3,
        "PUT": 0,
        "OTHER": 0,
        "total": 3,
    }
    await world.write(handle.output_location)
    await world.advance(POLLING.max_delay)
    assert handle.done()


async def test_a_sweep_reads_its_next_page_before_the_results_it_found(make_world: Any) -> None:
    # The next page of a sweep must not queue behind the reads of what the last page found:
    # at 10,000 in flight that stretched a 10-page sweep from 0.4 s to 12 s, and a result
    # written behind the sweep waited for all of it.
    from moto.s3.models import s3_backends

    world = await make_world(CompletionConfig(strategy="list", max_requests_per_second=20))
    backend = s3_backends["123456789012"]["global"]
    crowd = world.crowd(1_050, "out", "fail")
    for handle in crowd:
        backend.put_object(world.bucket, handle.output_location.split("/", 3)[3], b"{}")
    await world.advance(1.0)  # the sweep at 0.5 s: page 1 finds 1,000, page 2 the rest
    counts = world.counts("out/")
    assert counts["LIST"] == 2 and counts["GET"] <= 12, counts  # 20 req/s: GETs wait, not LISTs
    await world.advance(60)  # 1,050 reads at 20/s
    assert all(h.done() for h in crowd)
    assert world.counts("out/")["GET"] == 1_050


async def test_strategy_poll_never_lists(make_world: Any) -> None:
    world = await make_world(CompletionConfig(strategy="poll"))
    for _ in range(50):
        world.watch(world.handle("out", "fail"))
    await world.advance(30)
    assert world.counts("out/")["LIST"] == 0 and world.counts("out/")["GET"] > 50


async def test_listing_denied_falls_back_to_reads_and_says_so_once(
    make_world: Any, moto_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    world = await make_world()
    crowd = world.crowd(40, "out", "fail")
    listing = re.compile(re.escape(f"{moto_url}/{world.bucket}") + r"/?\?.*list-type=2.*")
    with faults() as mocked, caplog.at_level(logging.WARNING, "sagemaker_async"):
        mocked.get(listing, **ACCESS_DENIED)
        await world.advance(5)
    assert world.modes() == {"out/": "poll", "fail/": "poll"}
    for handle in crowd:
        await world.write(handle.output_location)
    await world.advance(POLLING.max_delay)
    assert all(h.done() for h in crowd)
    warnings = [r for r in caplog.records if "s3:ListBucket" in r.getMessage()]
    assert len(warnings) == 1, warnings


# -- the request budget -------------------------------------------------------------------------
def test_budget_halves_on_slowdown_once_a_second_and_grows_back() -> None:
    clock = FakeClock()
    budget = RequestBudget(100.0, clock)
    budget.slow_down()
    assert budget.rate == 50
    budget.slow_down()  # the same overload answers many requests at once
    assert budget.rate == 50
    clock.now += 1.5
    budget.slow_down()  # recovery starts 1 s after a SlowDown: 52.5 / 2
    assert budget.rate == pytest.approx(26.25)
    clock.now += 1.1
    budget.delay()
    clock.now += 10  # 5% of the cap per second without SlowDown
    budget.delay()
    assert 70 <= budget.rate <= 80
    clock.now += 100
    budget.delay()
    assert budget.rate == 100


async def test_the_budget_caps_requests_per_second(make_world: Any) -> None:
    world = await make_world(
        CompletionConfig(strategy="poll", max_requests_per_second=5),
        PollingConfig(initial_delay=0.1, max_delay=0.2, jitter=0.0),
    )
    for _ in range(40):  # they would like 200+ reads a second
        world.watch(world.handle("out", "fail"))
    await world.advance(20)
    total = world.counts("")["total"]
    assert 80 <= total <= 5 * 20 + 2, total


async def test_slowdown_halves_the_rate(
    make_world: Any, moto_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    world = await make_world(CompletionConfig(strategy="poll", max_requests_per_second=50))
    handles = world.crowd(5, "out", "fail")
    with faults() as mocked, caplog.at_level(logging.WARNING, "sagemaker_async"):
        mocked.get(re.compile(re.escape(f"{moto_url}/{world.bucket}/out/") + ".*"), **SLOW_DOWN)
        await world.advance(1)
    budget = world.client._engine.budget
    assert budget.slowdowns == 1 and budget.rate == 25
    assert any("SlowDown" in r.getMessage() for r in caplog.records)
    for handle in handles:  # a SlowDown is no failure: the handles still resolve
        await world.write(handle.output_location)
    await world.advance(POLLING.max_delay)
    assert all(h.done() and h.exception() is None for h in handles)


# -- learned latency: what a past request took never delays a ready result ----------------
async def test_a_cold_start_does_not_delay_later_results(make_world: Any) -> None:
    world = await make_world(polling=PollingConfig())  # the defaults
    cold = world.crowd(10, "out", "fail")
    await world.advance(8)  # the endpoint scaled from zero
    for handle in cold:
        await world.write(handle.output_location)
    await world.clock.run_until(lambda: all(h.done() for h in cold), world.settle)

    for _ in range(15):  # now each result is ready 0.1 s after submission
        handle = world.handle("out", "fail")
        waiter = asyncio.create_task(handle.result(timeout=5))
        await world.advance(0.1)
        await world.write(handle.output_location)
        took = await world.clock.run_until(waiter.done, world.settle, step=0.01)
        await waiter  # no InferenceTimeoutError
        assert took <= PollingConfig().initial_delay, took


async def test_slow_failures_do_not_push_back_the_first_read(make_world: Any) -> None:
    world = await make_world(polling=PollingConfig())
    slow = world.crowd(12, "out", "fail")
    await world.advance(60)
    for handle in slow:
        await world.write(handle.failure_location, b"timed out")
    await world.clock.run_until(lambda: all(h.done() for h in slow), world.settle, step=1)
    fast = world.handle("out", "fail")
    world.watch(fast)
    submitted = world.clock.now
    await world.advance(0.1)
    await world.write(fast.output_location)
    await world.clock.run_until(fast.done, world.settle, step=0.01)
    assert world.done_at[fast.inference_id] - submitted <= PollingConfig().initial_delay


# -- deadlines, cancel, close ------------------------------------------------------------
async def test_the_deadline_takes_a_last_look_then_times_out(make_world: Any) -> None:
    world = await make_world()
    late = world.handle("out", "fail", timeout=30)
    never = world.handle("out", "fail", timeout=30)
    world.watch(late)
    world.watch(never)
    await world.advance(29.9)
    await world.write(late.output_location)  # just before the deadline, after the last poll
    await world.advance(0.2)
    assert late.done() and late.exception() is None
    assert never.done() and isinstance(never.exception(), InferenceTimeoutError)
    assert world.done_at[never.inference_id] == pytest.approx(world.clock.now - 0.1, abs=0.01)


async def test_cancelling_a_thousand_waiters_leaves_nothing_behind(make_world: Any) -> None:
    world = await make_world()
    handles = [world.handle("out", f"fail{i % 3}") for i in range(1_000)]
    waiters = [asyncio.create_task(h.result()) for h in handles]
    await world.advance(3)
    engine = world.client._engine
    assert engine.watching == 1_000
    for waiter in waiters:
        waiter.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    assert engine.watching == 0 and engine.modes() == {}
    assert not await other_tasks()
    before = world.counts("")["total"]
    await world.advance(60)
    assert world.counts("")["total"] == before  # nothing is read for them any more
    assert all(not h.done() for h in handles)  # pending, resumable
    waiter = asyncio.create_task(handles[0].result())
    await world.write(handles[0].output_location)
    await world.clock.run_until(waiter.done, world.settle)
    assert (await waiter).body == b"{}"


async def test_a_wall_clock_step_does_not_time_a_handle_out(make_world: Any) -> None:
    """Issue 10, defect 8: a +700 s step of the wall clock timed handles out."""
    world = await make_world()
    handle = world.handle("out", "fail", timeout=30)
    world.watch(handle)
    await world.advance(1)
    world.clock._offset += 700  # NTP steps the wall clock; the monotonic one goes on
    await world.advance(1)
    assert not handle.done()
    await world.write(handle.output_location)
    await world.advance(POLLING.max_delay)
    assert handle.done() and handle.exception() is None
    assert handle.to_dict()["deadline"] == iso(world.clock.wall() - 700 - 2 - 5 + 30)


async def _turns_seen(probe: Any, until: Any) -> list[Any]:
    """What ``probe()`` reads at each turn of the event loop, until ``until()`` (100 turns)."""
    seen = []
    for _ in range(100):
        seen.append(probe())
        if until():
            break
        await asyncio.sleep(0)
    return seen


async def test_closing_tells_the_waiters_a_slice_at_a_time(
    make_world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20: aclose() with a million waiting woke them all in one turn of the loop."""
    from sagemaker_async import ClientClosedError
    from sagemaker_async._engine import _engine

    monkeypatch.setattr(_engine, "_CLOSE_SLICE", 10, raising=False)  # (1,000 by default)
    world = await make_world()
    handles = [world.handle("out", "fail") for _ in range(50)]
    waiters = [asyncio.create_task(h.result()) for h in handles]
    await world.advance(1)
    closing = asyncio.create_task(world.client.aclose())
    seen = await _turns_seen(lambda: sum(w.done() for w in waiters), closing.done)
    await closing
    assert any(0 < told < 50 for told in seen), seen  # the loop ran between slices
    for waiter in waiters:
        with pytest.raises(ClientClosedError):
            await waiter
    assert all(h.status.value == "pending" for h in handles)  # resumable


async def test_the_deadline_lane_drops_ended_watches_a_slice_at_a_time(
    make_world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20: cancelling a million waiters rebuilt the deadline heap in one stretch."""
    from sagemaker_async._engine import _engine, _scheduler

    monkeypatch.setattr(_engine, "_PRUNE_AFTER", 10, raising=False)
    monkeypatch.setattr(_scheduler, "_COMPACT_STEP", 20, raising=False)
    world = await make_world()
    scheduler = world.client._engine.scheduler
    late = world.handle("out", "fail", timeout=5)
    world.watch(late)
    crowd = world.crowd(300, "out", "fail")
    await world.advance(1)
    for handle in crowd:
        handle.cancel()
    seen = await _turns_seen(lambda: scheduler.deadlines, lambda: scheduler.deadlines == 1)
    assert len({n for n in seen if 1 < n < 250}) >= 3, seen  # several slices, loop between
    assert scheduler.deadlines == 1  # the ended ones left the lane (their deadline is hours away)
    await world.advance(5)  # a live deadline is kept: it still ends its watch on time
    assert late.done() and isinstance(late.exception(), InferenceTimeoutError)
    assert world.done_at[late.inference_id] == pytest.approx(world.clock.now - 1, abs=0.6)


async def test_a_waited_handle_costs_few_objects_for_the_garbage_collector(
    make_world: Any,
) -> None:
    """Issue 20: eleven GC-tracked objects per pending handle made full collections long."""
    import gc

    world = await make_world()
    handles = [world.handle("out", "fail") for _ in range(2_000)]

    def tracked() -> int:
        gc.collect()
        return len(gc.get_objects())

    def done(handle: AsyncInferenceHandle) -> None:
        pass

    before = tracked()
    for handle in handles:
        handle.add_done_callback(done)
    per_handle = (tracked() - before) / len(handles)
    assert per_handle <= 1.1, per_handle  # the watch alone
    for handle in handles:
        handle.remove_done_callback(done)
    assert world.client._engine.watching == 0

    # A task per handle: besides what any task awaiting a future costs, a watch, one small
    # generator and its future.
    async def wait(awaitable: Any) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await awaitable

    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    before = tracked()
    plain = [asyncio.create_task(wait(never)) for _ in handles]
    await asyncio.sleep(0)
    tasks_alone = tracked() - before
    waiting = [asyncio.create_task(wait(handle)) for handle in handles]
    await asyncio.sleep(0)
    extra = (tracked() - before - 2 * tasks_alone) / len(handles)
    assert extra <= 3.1, extra
    for task in (*plain, *waiting):
        task.cancel()
    await asyncio.gather(*plain, *waiting)
    assert world.client._engine.watching == 0


async def test_as_completed_runs_no_task_per_handle(make_world: Any) -> None:
    """Issue 20: as_completed made a task per handle (a million handles, a million tasks)."""
    from sagemaker_async import as_completed

    world = await make_world()
    handles = [world.handle("out", "fail") for _ in range(300)]
    before = len(asyncio.all_tasks())
    given: list[AsyncInferenceHandle] = []

    async def consume() -> None:
        async for handle in as_completed(handles):
            given.append(handle)

    consumer = asyncio.create_task(consume())
    await world.advance(1)
    assert len(asyncio.all_tasks()) <= before + 1  # the consumer
    for handle in handles[:3]:
        await world.write(handle.output_location)
    await world.advance(POLLING.max_delay)
    assert {h.inference_id for h in given} == {h.inference_id for h in handles[:3]}
    await world.client.aclose()  # the rest are given too, still pending
    await asyncio.wait_for(consumer, 10)
    assert len(given) == 300 and all(not h.done() for h in given[3:])


async def test_as_completed_reads_its_handles_a_slice_at_a_time(
    make_world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20: as_completed made a million handles into a dict in one call (200 ms)."""
    from sagemaker_async import _map, as_completed

    monkeypatch.setattr(_map, "_SLICE", 2, raising=False)  # (a turn every 20 handles read)
    world = await make_world()
    handles = [world.handle("out", "fail") for _ in range(100)]
    turns = 0

    async def tick() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    read_at: list[int] = []  # the turn of the loop each handle was read in

    def each() -> Any:
        for handle in [*handles, *handles[:10]]:  # (each handle once, the repeats too)
            read_at.append(turns)
            yield handle

    given: list[AsyncInferenceHandle] = []

    async def consume() -> None:
        async for handle in as_completed(each()):
            given.append(handle)

    ticker = asyncio.create_task(tick())
    consumer = asyncio.create_task(consume())
    await world.advance(1)
    assert len(read_at) == 110 and len(set(read_at)) >= 5, read_at  # the loop ran between
    await world.client.aclose()  # every one is given back, still pending, once
    await asyncio.wait_for(consumer, 10)
    ticker.cancel()
    assert sorted(map(id, given)) == sorted(map(id, handles))


async def test_handles_cancelled_before_they_were_watched_leave_nothing(make_world: Any) -> None:
    """Issue 10, defect 5: cancel() or remove_done_callback() before the watch leaked."""
    world = await make_world()
    engine = world.client._engine
    for _ in range(200):
        world.handle("out", "fail").cancel()
    for _ in range(200):
        handle = world.handle("out", "fail")
        handle.add_done_callback(print)
        handle.remove_done_callback(print)
    assert engine.watching == 0 and engine.modes() == {}
    await world.advance(30)
    assert world.counts("")["total"] == 0


async def test_keys_handed_from_listing_to_polling_keep_their_first_delay(
    make_world: Any,
) -> None:
    # The safety net of notifications is a long initial_delay: a key that a sweep hands to
    # per-key polling must still not be read before submitted + initial_delay.
    world = await make_world(polling=PollingConfig(initial_delay=30, max_delay=60, jitter=0.5))
    crowd = world.crowd(40, "out", "fail")
    await world.advance(60)
    assert world.modes()["out/"] == "list"
    fresh = world.crowd(3, "out", "fail")
    submitted = world.clock.now
    for handle in crowd:
        await world.write(handle.output_location)
    await world.clock.run_until(lambda: all(h.done() for h in crowd), world.settle, step=1)
    assert world.modes()["out/"] == "poll"  # three left: read one by one
    await world.advance(submitted + 29 - world.clock.now)
    for handle in fresh:  # not read before submitted + initial_delay
        assert world.embedded.counts(handle.output_location)["GET"] == 0
    await world.write(fresh[0].output_location)
    await world.advance(60)
    assert fresh[0].done()


async def test_a_handle_resumed_long_after_submission_reads_its_failure_at_once(
    make_world: Any,
) -> None:
    # A status URL resumes a handle and waits a short time: a failure must be seen as soon
    # as a result would be.
    world = await make_world(polling=PollingConfig(initial_delay=5, max_delay=20))
    handle = world.handle("out", "fail", age=600)
    assert handle.failure_location is not None
    await world.write(handle.failure_location, b"model error")
    world.watch(handle)
    await world.advance(0.1)
    assert handle.done()
    with pytest.raises(InferenceFailedError, match="model error"):
        await handle


async def test_ended_inferences_are_not_held_until_their_deadline(
    make_world: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each watch has a deadline job hours away; an ended one must not keep the watch and its
    # result alive until then (client.map over 100,000 inputs held every result).
    import gc
    import weakref

    from sagemaker_async._engine import _engine

    monkeypatch.setattr(_engine, "_PRUNE_AFTER", 10, raising=False)  # (1,024 by default)
    world = await make_world()
    handles = world.crowd(40, "out", "fail")
    await world.advance(1)
    for handle in handles:
        await world.write(handle.output_location, b'{"big": "result"}')
    await world.clock.run_until(lambda: all(h.done() for h in handles), world.settle, step=1)
    results = [weakref.ref(await handle) for handle in handles]
    handles.clear()
    gc.collect()
    assert world.client._engine.scheduler.scheduled < 40  # not one deadline job each
    alive = sum(ref() is not None for ref in results)
    assert alive <= 20, alive  # at most those ended since the last prune
