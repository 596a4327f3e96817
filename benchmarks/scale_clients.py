"""One client under test for the scale benchmark, in its own process (its own CPU and RSS).

    python scale_clients.py SPEC_JSON

SPEC_JSON (written by scale.py): client ("sdk", "naive", "ours-poll", "ours"), mode
("complete": wait for every result; "pending": wait ``window_s`` then cancel every waiter;
"resumed": resume n saved states instead of submitting, see :func:`drive_resumed`), n,
endpoint, rate (submissions per second; null: as fast as ``submit_concurrency`` invoke calls at
a time allow), window_s, quiet_s, submit_concurrency, max_connections, timeout_s, result_file;
for our clients also waiter ("callback": ``add_done_callback``, "task": a task per handle
awaiting it, "as_completed": one loop over ``as_completed``) and gc ("default", or "freeze":
the recipe of docs/performance.md, ``gc.collect(1); gc.freeze()`` after every 10,000 handles).
Endpoints and fake credentials come from the environment (AWS_ENDPOINT_URL_S3 and
AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME point at the fake servers).

What this process measures about itself: when each handle resolved (time.time(), keyed by the
S3 location it resolved to), its CPU (getrusage), its RSS (/proc/self/statm), the lag of its
event loop (a ticker sleeping 10 ms records how late it wakes; a thread for the SDK), split
into submitting and waiting, its CPython garbage collections (``gc.callbacks``: count and pause
per generation, and how much of each stall over 100 ms while waiting was a full collection),
how fast it submitted (and the time of every 1,000th accepted submission, for the rate as the
number pending grows), and how long cancelling and closing took, with the loop lag and the
collections of each phase. It counts no S3 requests: the server does.
Writes the JSON to result_file and prints ``RESULT <result_file>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import resource
import sys
import threading
import time
from typing import Any

INPUT = "s3://bench-in/payload.json"
_PAGE = resource.getpagesize()
# Handles resumed, watched or cancelled per turn of the event loop (what a careful caller of a
# million does: one loop over all of them would hold the event loop for seconds).
SLICE = 250
# The gc recipe (docs/performance.md): freeze what is alive after every this many handles.
FREEZE_EVERY = 10_000


async def gc_recipe(spec: dict[str, Any], grown: Any) -> None:
    """With gc "freeze", the recipe of docs/howto-batches.md, as a task of the caller's.

    Each time ``grown()`` (the handles made plus the handles being waited on) grew by
    FREEZE_EVERY (or the spec's freeze_every): collect the young generations, then freeze
    everything alive. One rule for every way of waiting (a task per handle, callbacks,
    as_completed, which starts watching in its own loop once every handle is made).
    """
    if spec.get("gc") != "freeze":
        return
    last = 0
    every = spec.get("freeze_every") or FREEZE_EVERY
    while True:
        await asyncio.sleep(0.05)
        now = grown()
        if now - last >= every:
            gc.collect(1)
            gc.freeze()
            last = now
        elif now < last:
            last = now  # (cancelled: count the next ones from here)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentiles(values: list[float], scale: float = 1.0) -> dict[str, float | int | None]:
    ordered = sorted(values)
    if not ordered:
        return {"p50": None, "p95": None, "p99": None, "max": None, "count": 0}

    def pct(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.floor(q * len(ordered)))] * scale, 3)

    return {
        "p50": pct(0.5),
        "p95": pct(0.95),
        "p99": pct(0.99),
        "max": round(ordered[-1] * scale, 3),
        "count": len(ordered),
    }


class Probe:
    """Event-loop (or, for threads, scheduler) lag: sleep 10 ms, record the overshoot.

    With each sample, the CPU this process used meanwhile: on a machine shared with other
    work, a stall far longer than the CPU spent in it is the operating system's scheduler
    (the process was not running), not work on the event loop.
    """

    PERIOD = 0.01

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (time.time(), lag in s)
        self.cpu: list[float] = []  # process CPU s during each sample (asyncio probe only)
        self.asleep_at = time.monotonic()  # when the probe last went to sleep (for Stalls)
        self.stalls: dict[float, tuple[float, float]] = {}  # asleep_at -> (lag, its CPU) s
        self._stop = threading.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before, cpu_before = loop.time(), time.process_time()
            asleep = self.asleep_at = time.monotonic()
            await asyncio.sleep(self.PERIOD)
            lag = max(0.0, loop.time() - before - self.PERIOD)
            self.samples.append((time.time(), lag))
            self.cpu.append(time.process_time() - cpu_before)
            if lag > 0.1:  # (a stall: what it was, for Stalls.report)
                self.stalls[asleep] = (lag, self.cpu[-1])

    def start_thread(self) -> None:
        def tick() -> None:
            while not self._stop.is_set():
                before = time.monotonic()
                time.sleep(self.PERIOD)
                lag = max(0.0, time.monotonic() - before - self.PERIOD)
                self.samples.append((time.time(), lag))

        threading.Thread(target=tick, daemon=True).start()

    def stop_thread(self) -> None:
        self._stop.set()

    def stats(self, since: float = 0.0, until: float = math.inf) -> dict[str, Any]:
        out = percentiles([lag for t, lag in self.samples if since <= t < until], 1000.0)
        if self.cpu:  # the longest stall counting only the CPU this process used in it
            own = [
                min(lag, cpu)
                for (t, lag), cpu in zip(self.samples, self.cpu, strict=False)
                if since <= t < until
            ]
            out["max_cpu"] = round(max(own, default=0.0) * 1000, 3)
        return out


class Stalls:
    """What held the event loop: the loop thread's stack, sampled while the probe is late.

    A thread looks every 5 ms; once the probe is more than ``late_s`` past its wake-up, it
    records the event loop thread's innermost frames (``sys._current_frames``), keyed by the
    probe's sleep (one stall). A full collection holds the GIL, so it shows as no samples
    (the collections themselves are counted by GcWatch); Python code holding the loop is
    sampled every 5 ms (the interpreter's switch interval).
    """

    EVERY = 0.005
    FRAMES = 6

    def __init__(self, probe: Probe, late_s: float = 0.05) -> None:
        self.probe, self.late_s = probe, late_s
        # the probe's time asleep (one stall) -> (time.monotonic(), stack) sampled in it
        self.stacks: dict[float, list[tuple[float, str]]] = {}
        self._stop = threading.Event()
        self._main = threading.get_ident()

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.EVERY):
            asleep = self.probe.asleep_at
            if time.monotonic() - asleep - Probe.PERIOD < self.late_s:
                continue
            frame = sys._current_frames().get(self._main)
            lines = []
            while frame is not None and len(lines) < self.FRAMES:
                code = frame.f_code
                path = code.co_filename.rsplit("/site-packages/", 1)[-1]
                path = path.rsplit("/src/", 1)[-1].rsplit("/benchmarks/", 1)[-1]
                lines.append(f"{path}:{frame.f_lineno} {code.co_name}")
                frame = frame.f_back
            self.stacks.setdefault(asleep, []).append((time.monotonic(), " < ".join(lines)))

    def report(self, over_s: float = 0.1, top: int = 3) -> list[dict[str, Any]]:
        """Each stall over ``over_s`` (by the probe): when, how long, its commonest stacks."""
        out = []
        mono_to_wall = time.time() - time.monotonic()
        for asleep in sorted(set(self.stacks) | set(self.probe.stalls)):
            stacks = self.stacks.get(asleep, [])  # (none: a collection held the GIL, say)
            held = stacks[-1][0] - asleep - Probe.PERIOD if stacks else 0.0
            lag, cpu = self.probe.stalls.get(asleep, (held, None))
            if lag < over_s:
                continue
            counts: dict[str, int] = {}
            for _, stack in stacks:
                counts[stack] = counts.get(stack, 0) + 1
            common = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
            out.append(
                {
                    "at": round(asleep + mono_to_wall, 3),
                    "held_ms": round(lag * 1000),
                    "cpu_ms": None if cpu is None else round(cpu * 1000),
                    "samples": len(stacks),
                    "stacks": [{"n": n, "stack": stack} for stack, n in common],
                }
            )
        return out


class GcWatch:
    """CPython collections, from ``gc.callbacks``: (time.time() at the end, generation, pause s)."""

    def __init__(self) -> None:
        self.events: list[tuple[float, int, float]] = []
        self.cpu: list[float] = []  # the CPU of each collection (its pause, less preemption)
        self._began = self._began_cpu = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began, self._began_cpu = time.perf_counter(), time.thread_time()
        else:
            pause = time.perf_counter() - self._began
            self.events.append((time.time(), info["generation"], pause))
            self.cpu.append(time.thread_time() - self._began_cpu)

    def start(self) -> None:
        gc.callbacks.append(self)

    def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self)

    def stats(self, since: float = 0.0, until: float = math.inf) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for gen in (0, 1, 2):
            pauses = [p for t, g, p in self.events if g == gen and since <= t < until]
            cpus = [
                c
                for (t, g, _), c in zip(self.events, self.cpu, strict=False)
                if g == gen and since <= t < until
            ]
            out[f"gen{gen}"] = {
                "count": len(pauses),
                "max_ms": round(max(pauses, default=0.0) * 1000, 1),
                "total_ms": round(sum(pauses) * 1000, 1),
                "max_cpu_ms": round(max(cpus, default=0.0) * 1000, 1),
            }
        return out

    def stalls(
        self, probe: Probe, since: float, until: float, over_s: float = 0.1
    ) -> dict[str, Any]:
        """Probe samples later than ``over_s``: how many, and how much of them was gen-2 GC."""
        stalls = [(t, lag) for t, lag in probe.samples if since <= t < until and lag > over_s]
        full = [(t, p) for t, g, p in self.events if g == 2]
        with_gc, lag_ms, gc_ms = 0, 0.0, 0.0
        for t, lag in stalls:
            began = t - lag - probe.PERIOD  # when the probe went to sleep
            inside = sum(p for end, p in full if began < end <= t)
            with_gc += inside > 0
            lag_ms += lag * 1000
            gc_ms += min(inside, lag) * 1000
        return {
            "over_ms": over_s * 1000,
            "count": len(stalls),
            "with_gen2_gc": with_gc,
            "lag_ms_total": round(lag_ms, 1),
            "gen2_gc_ms_inside": round(gc_ms, 1),
            "gen2_share": round(gc_ms / lag_ms, 3) if lag_ms else None,
        }


class Recorder:
    """When each handle resolved, and how; thread-safe enough for the SDK's threads (GIL)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.resolved: dict[str, float] = {}
        self.ok = 0
        self.failed = 0
        self.errors = 0
        self.first_error: str | None = None
        self.all_done: asyncio.Event | None = None

    def record(self, location: str | None, ok: bool, error: BaseException | None = None) -> None:
        now = time.time()
        if error is not None:
            self.errors += 1
            self.first_error = self.first_error or f"{type(error).__name__}: {error}"[:300]
        elif location is not None:
            self.resolved[location] = now
            if ok:
                self.ok += 1
            else:
                self.failed += 1
        if self.all_done is not None and self.ok + self.failed + self.errors >= self.n:
            self.all_done.set()

    def outcomes(self) -> dict[str, Any]:
        """What the result file reports about the outcomes."""
        return {
            "ok": self.ok,
            "failed": self.failed,
            "errors": self.errors,
            "first_error": self.first_error,
            "resolved": self.resolved,
        }


# -- asyncio clients ------------------------------------------------------------------------
class Ours:
    """sagemaker_async.AsyncInferenceClient; ``ours-poll`` asks for the per-handle poller."""

    def __init__(self, spec: dict[str, Any], rec: Recorder) -> None:
        import sagemaker_async
        from sagemaker_async import AsyncInferenceClient, InferenceFailedError

        self.spec, self.rec = spec, rec
        self.failed_error = InferenceFailedError
        self.closed_error = sagemaker_async.ClientClosedError
        self.notes: list[str] = []
        kwargs: dict[str, Any] = {"max_connections": spec["max_connections"]}
        completion = getattr(sagemaker_async, "CompletionConfig", None)
        if spec["client"] == "ours-poll":
            if completion is None:
                self.notes.append("fallback: no CompletionConfig yet, plain AsyncInferenceClient()")
            else:
                kwargs["completion"] = completion(strategy="poll")
        self.engine = "CompletionConfig" if completion is not None else "PollingConfig only"
        self.client = AsyncInferenceClient(**kwargs)
        self.handles: list[Any] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.waiter = spec.get("waiter", "callback")
        self.waiting_via = {
            "callback": "handle.add_done_callback",
            "task": "one task per handle (await handle)",
            "as_completed": "one loop over sagemaker_async.as_completed",
        }[self.waiter]
        self.closed_seen = 0  # waiters that saw ClientClosedError
        # One callable for every handle, as a caller of a million would write it (a bound
        # method made at each call is one more object per handle).
        self.done_callback = self._done
        self.consumer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self.client.open()

    async def submit(self, i: int) -> Any:
        return await self.client.invoke_endpoint_async(
            self.spec["endpoint"], input_location=INPUT, content_type="application/json"
        )

    def _done(self, handle: Any) -> None:
        if handle.cancelled():
            return
        exc = handle.exception()
        if exc is None:
            self.rec.record(handle.output_location, True)
        elif isinstance(exc, self.failed_error):
            self.rec.record(handle.failure_location, False)
        else:
            self.rec.record(None, False, exc)

    async def _await(self, handle: Any) -> None:
        try:
            await handle
        except asyncio.CancelledError:
            if not handle.cancelled():
                raise
            return
        except self.closed_error:
            self.closed_seen += 1
            return
        except Exception:
            pass
        self._done(handle)

    async def _consume(self) -> None:
        from sagemaker_async import as_completed

        # Leaving the loop (cancelled) closes the iterator, which stops watching (in slices).
        async with contextlib.aclosing(as_completed(self.handles)) as outcomes:
            async for handle in outcomes:
                if handle.done():
                    self._done(handle)
                else:  # given back pending: its client closed
                    self.closed_seen += 1

    def watch(self, handle: Any, *, keep: bool = True) -> None:
        if keep:
            self.handles.append(handle)
        if self.waiter == "callback":
            handle.add_done_callback(self.done_callback)
        elif self.waiter == "task":
            task = asyncio.get_running_loop().create_task(self._await(handle))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def start_waiting(self) -> None:
        """After the last watch(): as_completed starts its one loop over every handle."""
        if self.waiter == "as_completed":
            self.consumer = asyncio.get_running_loop().create_task(self._consume())

    async def rewatch_all(self) -> None:
        """Wait again for every handle (after stop_waiting), in slices."""
        for i, handle in enumerate(self.handles, 1):
            self.watch(handle, keep=False)
            if i % SLICE == 0:
                await asyncio.sleep(0)
        self.start_waiting()
        await self.all_watched(len(self.handles))

    async def cancel_all(self) -> None:
        """Cancel every handle (``handle.cancel()``), in slices of SLICE."""
        for i, handle in enumerate(self.handles, 1):
            handle.cancel()
            if i % SLICE == 0:
                await asyncio.sleep(0)
        await self._unwound()

    async def stop_waiting(self) -> None:
        """Cancel every waiter, not the handles (they stay pending), in slices of SLICE."""
        if self.waiter == "callback":
            for i, handle in enumerate(self.handles, 1):
                handle.remove_done_callback(self.done_callback)
                if i % SLICE == 0:
                    await asyncio.sleep(0)
        elif self.waiter == "task":
            # Taken from the set one by one (no copy of a million): a cancelled task, and the
            # CancelledError it keeps with its traceback and frames, is freed once unwound.
            left = len(self.tasks)
            unwound = asyncio.Event()

            def one_unwound(_: Any) -> None:
                nonlocal left
                left -= 1
                if not left:
                    unwound.set()

            i = 0
            while self.tasks:
                task = self.tasks.pop()
                task.add_done_callback(one_unwound)
                task.cancel()
                i += 1
                if i % SLICE == 0:
                    await asyncio.sleep(0)
            if i:
                await unwound.wait()
        elif self.consumer is not None:
            self.consumer.cancel()  # leaving the loop closes as_completed (in slices)
        await self._unwound()

    async def _unwound(self) -> None:
        waiting = [t for t in (*self.tasks, self.consumer) if t is not None and not t.done()]
        if waiting:
            await asyncio.wait(waiting)
        await asyncio.sleep(0)  # their done callbacks (the set's discard) run
        self.consumer = None

    async def close(self) -> None:
        await self.client.aclose()

    def watched(self) -> int:
        """Handles being waited on now (the engine's count)."""
        return int(self.client.stats().in_flight)

    def grown(self) -> int:
        """Handles made, plus handles being waited on (what the gc recipe counts)."""
        return len(self.handles) + self.watched()

    async def all_watched(self, count: int, limit_s: float = 300.0) -> None:
        """Until ``count`` handles are watched (or ``limit_s``)."""
        started = time.monotonic()
        while self.watched() < count and time.monotonic() - started < limit_s:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # (a count of the library's, polled)

    async def closed_seen_by_all(self, expected: int, limit_s: float = 60.0) -> float | None:
        """Seconds until ``expected`` waiters saw ClientClosedError (None: not within limit)."""
        started = time.monotonic()
        while self.closed_seen < expected:
            if time.monotonic() - started > limit_s:
                return None
            await asyncio.sleep(0.005)
        return time.monotonic() - started


class Naive:
    """What people write first: HEAD both locations every second, then GET the one found."""

    def __init__(self, spec: dict[str, Any], rec: Recorder) -> None:
        self.spec, self.rec = spec, rec
        self.notes: list[str] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.waiting_via = "one task per inference (sleep 1 s, HEAD, HEAD)"
        self.engine = ""

    async def open(self) -> None:
        from contextlib import AsyncExitStack

        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        config = AioConfig(max_pool_connections=self.spec["max_connections"])
        session = get_session()
        self.stack = AsyncExitStack()
        self.rt = await self.stack.enter_async_context(
            session.create_client("sagemaker-runtime", config=config)
        )
        self.s3 = await self.stack.enter_async_context(session.create_client("s3", config=config))

    async def submit(self, i: int) -> Any:
        return await self.rt.invoke_endpoint_async(
            EndpointName=self.spec["endpoint"], InputLocation=INPUT, ContentType="application/json"
        )

    async def _exists(self, uri: str) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = uri[5:].split("/", 1)
        try:
            await self.s3.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError:
            return False

    async def _poll(self, response: Any) -> None:
        try:
            while True:
                await asyncio.sleep(1)
                for uri, ok in (
                    (response["OutputLocation"], True),
                    (response["FailureLocation"], False),
                ):
                    if await self._exists(uri):
                        bucket, key = uri[5:].split("/", 1)
                        obj = await self.s3.get_object(Bucket=bucket, Key=key)
                        async with obj["Body"] as stream:
                            await stream.read()
                        self.rec.record(uri, ok)
                        return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.rec.record(None, False, exc)

    def watch(self, response: Any) -> None:
        task = asyncio.get_running_loop().create_task(self._poll(response))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def start_waiting(self) -> None:
        pass

    async def cancel_all(self) -> None:
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def close(self) -> None:
        await self.stack.aclose()


async def submit_all(spec: dict[str, Any], client: Any, rec: Recorder, out: dict[str, Any]) -> int:
    """Submit up to n inferences (none after ``submit_limit_s``); returns how many were sent."""
    n, conc, rate = spec["n"], spec["submit_concurrency"], spec.get("rate")
    loop = asyncio.get_running_loop()
    started = loop.time()
    limit = started + spec.get("submit_limit_s", math.inf)
    sent = 0

    marks: list[float] = out.setdefault("submit_marks", [])  # time of every 1,000th accepted
    accepted = 0

    async def one(i: int) -> None:
        nonlocal accepted
        try:
            token = await client.submit(i)
        except Exception as exc:
            rec.record(None, False, exc)
            return
        client.watch(token)
        accepted += 1
        if accepted % 1000 == 0:
            marks.append(time.time())

    if not rate:
        indices = iter(range(n))

        async def worker() -> None:
            nonlocal sent
            for i in indices:
                if loop.time() > limit:
                    return
                sent += 1
                await one(i)

        await asyncio.gather(*(worker() for _ in range(min(conc, n))))
        return sent
    # At a fixed rate: a task per submission at its due time, at most `conc` invoke calls open.
    sem = asyncio.Semaphore(conc)
    delays: list[float] = []
    running: set[asyncio.Task[None]] = set()

    async def scheduled(i: int, due: float) -> None:
        async with sem:
            await one(i)
        delays.append(loop.time() - due)

    for i in range(n):
        due = started + i / rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        if loop.time() > limit:
            break
        sent += 1
        task = loop.create_task(scheduled(i, due))
        running.add(task)
        task.add_done_callback(running.discard)
    if running:
        await asyncio.wait(list(running))
    out["submit_delay_s"] = percentiles(delays)
    return sent


async def drive_async(spec: dict[str, Any]) -> dict[str, Any]:
    rec = Recorder(spec["n"])
    rec.all_done = asyncio.Event()
    probe = Probe()
    loop = asyncio.get_running_loop()
    ticker = loop.create_task(probe.run())
    stalls = Stalls(probe)
    stalls.start()
    client: Any = Naive(spec, rec) if spec["client"] == "naive" else Ours(spec, rec)
    out: dict[str, Any] = {}
    await client.open()
    if isinstance(client, Ours):
        recipe = loop.create_task(gc_recipe(spec, client.grown))
    baseline = set(asyncio.all_tasks())
    gc.collect()
    gcw = GcWatch()
    gcw.start()
    rss_before, cpu_before = rss(), cpu()
    out["t_submit_start"] = time.time()
    n = await submit_all(spec, client, rec, out)
    client.start_waiting()
    out["t_submit_end"] = t_end = time.time()
    out["cpu_submit_s"] = cpu() - cpu_before
    out["submitted"] = rec.n = n
    if rec.ok + rec.failed + rec.errors >= n:
        rec.all_done.set()
    out["submit_rate"] = round(n / max(1e-9, t_end - out["t_submit_start"]), 1)
    # RSS once everything is submitted and pending (after the first round of waiting began).
    settle = min(1.0, spec.get("settle_s", 1.0))
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(rec.all_done.wait(), settle)
    out["rss_before"], out["rss_pending"] = rss_before, rss()
    out["rss_pending_at"] = time.time()
    out["pending_at_rss"] = n - rec.ok - rec.failed - rec.errors
    if spec["mode"] == "complete":
        try:
            await asyncio.wait_for(rec.all_done.wait(), spec["timeout_s"])
        except asyncio.TimeoutError:
            out["timed_out"] = True
        out["t_all_done"] = time.time()
        out["cpu_s"] = cpu() - cpu_before
    else:
        remaining = spec["window_s"] - (time.time() - t_end)
        out["window_start"], c0 = time.time(), cpu()
        await asyncio.sleep(max(0.0, remaining))
        out["window_end"], out["cpu_window_s"] = time.time(), cpu() - c0
        out["cpu_s"] = cpu() - cpu_before
        # What a full collection walks (counted after the window: it takes a while).
        out["tracked_objects_pending"] = len(gc.get_objects())
        await asyncio.sleep(0.1)  # (the probe records that stall before the next phase)
        # Cancel every waiter; done when no task but the baseline ones is left.
        started = time.monotonic()
        out["t_cancel_start"] = time.time()
        await client.cancel_all()
        left: set[asyncio.Task[Any]] = set()
        while time.monotonic() - started < 30:
            left = set(asyncio.all_tasks()) - baseline
            if not left:
                break
            await asyncio.sleep(0.005)
        out["cancel_s"] = round(time.monotonic() - started, 4)
        out["tasks_left_after_cancel"] = len(left)
        out["t_cancel_done"] = time.time()
        out["pending_at_cancel"] = n - rec.ok - rec.failed - rec.errors
        await asyncio.sleep(spec["quiet_s"])
        out["t_quiet_end"] = time.time()
    started = time.monotonic()
    out["t_close_start"] = time.time()
    await client.close()
    out["close_s"] = round(time.monotonic() - started, 4)
    out["t_close_end"] = time.time()
    await asyncio.sleep(0.1)  # the probe's last samples of closing
    ticker.cancel()
    if isinstance(client, Ours):
        recipe.cancel()
    gcw.stop()
    await asyncio.sleep(0)
    out["tasks_left_after_close"] = len(set(asyncio.all_tasks()) - {asyncio.current_task()})
    wait_end = out.get("window_end") or out["t_all_done"]
    phases(out, probe, gcw, wait_end)
    named = {"submitting": (out["t_submit_start"], out["t_submit_end"])}
    named["waiting"] = (out["t_submit_end"], wait_end)
    if "t_cancel_start" in out:
        named["cancelling"] = (out["t_cancel_start"], out["t_cancel_done"])
    named["closing"] = (out["t_close_start"], out["t_close_end"] + 0.1)
    phase_stats(out, probe, gcw, named)
    stalls.stop()
    out["stall_stacks"] = stall_stacks(stalls, gcw, named)
    out.update(
        notes=client.notes,
        waiting_via=client.waiting_via,
        library_api=client.engine,
        **rec.outcomes(),
    )
    return out


def phase_stats(
    out: dict[str, Any], probe: Probe, gcw: GcWatch, named: dict[str, tuple[float, float]]
) -> None:
    """Loop lag and collections of each named phase (start, end), in ``out["phases"]``."""
    out["phases"] = {
        name: {
            "s": round(end - start, 3),
            "lag_ms": probe.stats(since=start, until=end),
            "gc": gcw.stats(since=start, until=end),
            "stalls": gcw.stalls(probe, start, end),
        }
        for name, (start, end) in named.items()
    }


def stall_stacks(
    stalls: Stalls, gcw: GcWatch, named: dict[str, tuple[float, float]]
) -> list[dict[str, Any]]:
    """The sampled stacks of each stall over 100 ms, its phase, the collections in it."""
    out = stalls.report()
    for stall in out:
        start = stall["at"]
        end = start + Probe.PERIOD + stall["held_ms"] / 1000
        stall["phase"] = next(
            (name for name, (first, last) in named.items() if first <= start < last), None
        )
        inside = [(g, p) for t, g, p in gcw.events if start < t <= end + 0.05]
        stall["gc_ms"] = {
            f"gen{gen}": round(sum(p for g, p in inside if g == gen) * 1000, 1) for gen in (0, 1, 2)
        }
    return out


def write_states(path: str, n: int, endpoint: str, deadline_s: float) -> None:
    """n saved states (``handle.to_dict()``, one JSON per line) of inferences nobody will answer.

    Their output and failure locations are in the endpoint's directory of the fake S3, like
    the fake runtime's, and nothing is ever written there: every one stays pending.
    """
    import datetime as dt
    import uuid

    now = time.time()
    iso = dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat()
    deadline = dt.datetime.fromtimestamp(now + deadline_s, dt.timezone.utc).isoformat()
    with open(path, "w") as f:
        for _ in range(n):
            name = str(uuid.uuid4())
            state = {
                "version": 1,
                "inference_id": name,
                "endpoint_name": endpoint,
                "output_location": f"s3://bench-out/{endpoint}/{name}.out",
                "failure_location": f"s3://bench-out/failures/{name}-error.out",
                "submitted_at": iso,
                "deadline": deadline,
                "submit_attempts": 1,
            }
            f.write(json.dumps(state) + "\n")


async def drive_resumed(spec: dict[str, Any]) -> dict[str, Any]:
    """n saved states resumed in one process, then each phase measured on its own.

    Resuming (a file of saved states read line by line, each resumed and watched; the loop
    gets a turn every SLICE handles), waiting (window_s), cancelling every waiter (not the
    handles: tasks cancelled, callbacks removed, or the as_completed loop left; in slices),
    waiting again (every handle watched again), then ``aclose()`` with every waiter waiting,
    and how long until every waiter saw ClientClosedError (callbacks are not called on close).
    """
    rec = Recorder(spec["n"])
    probe = Probe()
    loop = asyncio.get_running_loop()
    ticker = loop.create_task(probe.run())
    stalls = Stalls(probe)
    stalls.start()
    client = Ours(spec, rec)
    out: dict[str, Any] = {}
    states = spec["states_file"]  # written by main(), before the loop starts
    await client.open()
    recipe = loop.create_task(gc_recipe(spec, client.grown))
    gc.collect()
    gcw = GcWatch()
    gcw.start()
    rss_before, cpu_before = rss(), cpu()
    named: dict[str, tuple[float, float]] = {}
    # Resuming.
    t0 = out["t_submit_start"] = time.time()
    count = 0
    with open(states) as f:  # noqa: ASYNC230 - a local file, read as the phase measured
        for line in f:
            handle = client.client.resume(json.loads(line))
            client.watch(handle)
            count += 1
            if count % SLICE == 0:
                await asyncio.sleep(0)
    client.start_waiting()
    await client.all_watched(count)  # (tasks and as_completed start watching in their turn)
    t1 = out["t_submit_end"] = time.time()
    named["resuming"] = (t0, t1)
    out["submitted"] = rec.n = count
    out["submit_rate"] = round(count / max(1e-9, t1 - t0), 1)
    out["cpu_submit_s"] = cpu() - cpu_before
    await asyncio.sleep(1.0)
    out["rss_before"], out["rss_pending"] = rss_before, rss()
    out["rss_pending_at"] = time.time()
    out["pending_at_rss"] = count - rec.ok - rec.failed - rec.errors
    out["in_flight_at_rss"] = client.client.stats().in_flight
    # Waiting.
    out["window_start"], c0 = time.time(), cpu()
    await asyncio.sleep(max(0.0, spec["window_s"] - 1.0))
    out["window_end"], out["cpu_window_s"] = time.time(), cpu() - c0
    named["waiting"] = (t1, out["window_end"])
    out["cpu_s"] = cpu() - cpu_before
    # Cancelling every waiter.
    t2 = out["t_cancel_start"] = time.time()
    await client.stop_waiting()
    t3 = out["t_cancel_done"] = time.time()
    named["cancelling"] = (t2, t3)
    out["cancel_s"] = round(t3 - t2, 3)
    out["in_flight_after_cancel"] = client.client.stats().in_flight
    out["tasks_left_after_cancel"] = len(client.tasks)
    out["pending_at_cancel"] = count - rec.ok - rec.failed - rec.errors
    await asyncio.sleep(spec["quiet_s"])
    out["t_quiet_end"] = time.time()
    # Waiting again, then closing with every waiter waiting.
    t4 = time.time()
    await client.rewatch_all()
    await asyncio.sleep(0)
    t5 = time.time()
    named["rewatching"] = (t4, t5)
    await asyncio.sleep(1.0)
    t6 = out["t_close_start"] = time.time()
    await client.close()
    out["close_s"] = round(time.time() - t6, 3)
    expected = 0 if client.waiter == "callback" else count
    seen = await client.closed_seen_by_all(expected)
    told = seen is not None and client.waiter != "callback"  # (callbacks are not called)
    out["closed_seen_s"] = round(time.time() - t6, 3) if told else None
    out["closed_seen"] = client.closed_seen
    t7 = out["t_close_end"] = time.time()
    named["closing"] = (t6, t7 + 0.1)
    await asyncio.sleep(0.2)
    ticker.cancel()
    recipe.cancel()
    gcw.stop()
    out["gc_frozen"] = gc.get_freeze_count()
    gc.unfreeze()
    out["tasks_left_after_close"] = len(client.tasks)
    phases(out, probe, gcw, out["window_end"])
    phase_stats(out, probe, gcw, named)
    stalls.stop()
    out["stall_stacks"] = stall_stacks(stalls, gcw, named)
    out.update(
        notes=client.notes,
        waiting_via=client.waiting_via,
        library_api=client.engine,
        **rec.outcomes(),
    )
    return out


def phases(out: dict[str, Any], probe: Probe, gcw: GcWatch, wait_end: float) -> None:
    """Loop lag and GC: the whole run, submitting (to the last invoke), waiting (to wait_end)."""
    start, end = out["t_submit_start"], out["t_submit_end"]
    out["lag_ms"] = probe.stats(since=start)  # client set-up excluded
    out["lag_submitting_ms"] = probe.stats(since=start, until=end)
    out["lag_waiting_ms"] = probe.stats(since=end, until=wait_end)
    out["t_waiting_end"] = wait_end
    out["gc"] = {
        "all": gcw.stats(since=start),
        "submitting": gcw.stats(since=start, until=end),
        "waiting": gcw.stats(since=end, until=wait_end),
        "stalls_waiting": gcw.stalls(probe, end, wait_end),
        "thresholds": gc.get_threshold(),
        "tracked_objects_pending": out.get("tracked_objects_pending"),
    }


# -- the SageMaker Python SDK v2 (threads) ---------------------------------------------------
def drive_sdk(spec: dict[str, Any]) -> dict[str, Any]:
    """AsyncPredictor: predict_async in 32 threads, then get_result(delay=1) in 32 threads."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    import sagemaker
    from sagemaker.async_inference import WaiterConfig
    from sagemaker.exceptions import AsyncInferenceModelError
    from sagemaker.predictor import Predictor
    from sagemaker.predictor_async import AsyncPredictor

    n, rate, threads = spec["n"], spec.get("rate"), 32
    rec = Recorder(n)
    probe = Probe()
    probe.start_thread()
    out: dict[str, Any] = {
        "notes": [f"sagemaker {sagemaker.__version__}, {threads} threads"],
        "waiting_via": f"get_result(WaiterConfig(delay=1)) in {threads} threads",
        "library_api": "",
    }
    boto_session = boto3.Session()
    session = sagemaker.Session(
        boto_session=boto_session,
        sagemaker_runtime_client=boto_session.client("sagemaker-runtime"),
        sagemaker_client=boto_session.client("sagemaker"),
    )
    predictor = AsyncPredictor(Predictor(spec["endpoint"], sagemaker_session=session))
    gc.collect()
    gcw = GcWatch()
    gcw.start()
    rss_before, cpu_before = rss(), cpu()
    out["t_submit_start"] = started = time.time()
    delays: list[float] = []

    def submit(i: int) -> Any:
        if rate:
            due = started + i / rate
            time.sleep(max(0.0, due - time.time()))
        try:
            response = predictor.predict_async(input_path=INPUT)
        except Exception as exc:
            rec.record(None, False, exc)
            return None
        if rate:
            delays.append(time.time() - due)
        return response

    with ThreadPoolExecutor(threads) as pool:
        responses = list(pool.map(submit, range(n)))
    out["t_submit_end"] = t_end = time.time()
    out["cpu_submit_s"] = cpu() - cpu_before
    out["submit_rate"] = round(n / max(1e-9, t_end - started), 1)
    if rate:
        out["submit_delay_s"] = percentiles(delays)
    time.sleep(1.0)
    out["rss_before"], out["rss_pending"] = rss_before, rss()
    out["rss_pending_at"] = time.time()
    out["pending_at_rss"] = n - rec.ok - rec.failed - rec.errors
    config = WaiterConfig(max_attempts=int(spec["model_s"]) + 60, delay=1)

    def wait(response: Any) -> None:
        if response is None:
            return
        try:
            response.get_result(config)
        except AsyncInferenceModelError:
            rec.record(response.failure_path, False)
        except Exception as exc:
            rec.record(None, False, exc)
        else:
            rec.record(response.output_path, True)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(wait, responses))
    out["t_all_done"] = time.time()
    out["cpu_s"] = cpu() - cpu_before
    probe.stop_thread()
    gcw.stop()
    phases(out, probe, gcw, out["t_all_done"])
    out["threads_alive_at_end"] = threading.active_count()
    out.update(rec.outcomes())
    return out


def main() -> None:
    spec = json.loads(sys.argv[1])
    # The asyncio clients run on the default event loop (what users get) unless asked.
    drive = drive_resumed if spec["mode"] == "resumed" else drive_async
    if spec["mode"] == "resumed" and not os.path.exists(spec["states_file"]):
        # One file per load, for every waiter and gc mode (their deadline: 3 hours away).
        write_states(spec["states_file"], spec["n"], spec["endpoint"], 3 * 3600)
    if spec["client"] == "sdk":
        out = drive_sdk(spec)
    elif spec.get("client_loop") == "uvloop":
        import uvloop

        out = uvloop.run(drive(spec))
    else:
        out = asyncio.run(drive(spec))
    out["process_cpu_s"] = cpu()  # imports and client set-up included
    out["python"] = sys.version.split()[0]
    with open(spec["result_file"], "w") as f:
        json.dump(out, f)
    print("RESULT " + spec["result_file"], flush=True)


if __name__ == "__main__":
    main()
