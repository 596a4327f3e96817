"""The scale benchmark's server process: a fake SageMaker runtime over the in-memory fake S3.

    python benchmarks/fake_sagemaker.py [--seed 1]

Starts two aiohttp servers on 127.0.0.1 (ephemeral ports): the fake S3 of ``fake_s3.py`` and
a fake sagemaker-runtime that serves InvokeEndpointAsync
(``POST /endpoints/{name}/async-invocations``). Prints one line
``READY {"s3": URL, "runtime": URL, "loop": "uvloop" | "asyncio"}`` and serves until
SIGTERM/SIGINT. Uses uvloop when it is installed.

An invocation answers 202 at once with ``{"InferenceId": ...}`` and the output and failure
locations (``s3://bench-out/<endpoint>[/<S3OutputPathExtension>]/<uuid4>.out`` and
``s3://bench-out/failures/<uuid4>-error.out``); the model's delay later, one
``loop.call_later`` timer (not a task) writes the output, or the failure object, into the fake
S3. The delay, failure fraction and capacity (requests run at once; more wait in a FIFO) of an
endpoint come from ``POST /__admin/endpoints`` (JSON
``{"name": ..., "delay": s, "failure_fraction": f, "capacity": n}``) or else from its name:
``...sleep-60`` is 60 s, ``...-fail-10`` fails 10% of requests.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import random
import re
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from aiohttp import web

from fake_s3 import Bucket, Store, create_app

BUCKET = "bench-out"
FAILURES = "failures"
_HEADER = "X-Amzn-SageMaker-"
_RUNTIME_KEY = web.AppKey("runtime", object)
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


@dataclass
class EndpointSpec:
    delay: float
    failure_fraction: float = 0.0
    capacity: int | None = None  # requests run at once (None: unbounded); the rest queue
    free_at: list[float] = field(default_factory=list)  # when each slot is free (a heap)

    def finish_time(self, now: float) -> float:
        """When a request accepted ``now`` is done: at once in an unbounded endpoint, else
        after the requests before it, FIFO, on ``capacity`` slots."""
        if self.capacity is None:
            return now + self.delay
        if len(self.free_at) < self.capacity:
            heapq.heappush(self.free_at, now + self.delay)
            return now + self.delay
        end = max(now, self.free_at[0]) + self.delay
        heapq.heapreplace(self.free_at, end)
        return end


class Runtime:
    """Accepts invocations and schedules their output (or failure) objects."""

    def __init__(self, store: Store, seed: int) -> None:
        self.store = store
        self.random = random.Random(seed)
        self.endpoints: dict[str, EndpointSpec] = {}
        self.timers: set[asyncio.TimerHandle] = set()
        self.invocations = 0
        self.per_id: Counter[str] = Counter()  # invocations by InferenceId
        self.last_done = 0.0  # time.time() of the last completion
        self.completed = 0  # results and failures written
        store.reset_hooks.append(self.reset)
        store.buckets[BUCKET] = Bucket()

    def reset(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        self.invocations = 0
        self.completed = 0
        self.per_id.clear()
        self.store.buckets.setdefault(BUCKET, Bucket())

    def spec(self, name: str) -> EndpointSpec | None:
        if name in self.endpoints:
            return self.endpoints[name]
        sleep = re.search(r"sleep-(\d+)", name)
        if sleep is None:
            return None
        fail = re.search(r"fail-(\d+)", name)
        return EndpointSpec(float(sleep.group(1)), int(fail.group(1)) / 100 if fail else 0.0)

    def complete(self, key: str, failed: bool, holder: list[asyncio.TimerHandle]) -> None:
        self.timers.discard(holder[0])
        self.last_done = time.time()
        self.completed += 1
        if failed:
            body = b'{"error": "ModelError: the model failed (fake)"}'
            self.store.put(BUCKET, key, body, "application/json")
        else:
            self.store.put(BUCKET, key, b'{"prediction": [0.5]}', "application/json")


def _aws_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"message": message},
        status=status,
        headers={"x-amzn-ErrorType": code, "x-amzn-RequestId": str(uuid.uuid4())},
    )


async def _invoke_async(request: web.Request) -> web.Response:
    runtime: Runtime = request.app[_RUNTIME_KEY]  # type: ignore[assignment]
    await request.read()
    name = request.match_info["name"]
    spec = runtime.spec(name) if _NAME.match(name) else None
    if spec is None:
        return _aws_error(400, "ValidationError", f"Endpoint {name} of account 0 not found.")
    runtime.invocations += 1
    inference_id = request.headers.get(_HEADER + "Inference-Id") or str(uuid.uuid4())
    runtime.per_id[inference_id] += 1
    object_id = str(uuid.uuid4())
    directory = name
    extension = request.headers.get(_HEADER + "S3OutputPathExtension", "").strip("/")
    if extension:
        directory += "/" + extension
    filename = request.headers.get(_HEADER + "Filename") or f"{object_id}.out"
    output_key = f"{directory}/{filename}"
    failure_key = f"{FAILURES}/{object_id}-error.out"
    failed = spec.failure_fraction > 0 and runtime.random.random() < spec.failure_fraction
    holder: list[asyncio.TimerHandle] = []
    loop = asyncio.get_running_loop()
    timer = loop.call_later(
        spec.finish_time(loop.time()) - loop.time(),
        runtime.complete,
        failure_key if failed else output_key,
        failed,
        holder,
    )
    holder.append(timer)
    runtime.timers.add(timer)
    return web.json_response(
        {"InferenceId": inference_id},
        status=202,
        headers={
            "x-amzn-RequestId": str(uuid.uuid4()),
            _HEADER + "OutputLocation": f"s3://{BUCKET}/{output_key}",
            _HEADER + "FailureLocation": f"s3://{BUCKET}/{failure_key}",
        },
    )


async def _admin_endpoints(request: web.Request) -> web.Response:
    runtime: Runtime = request.app[_RUNTIME_KEY]  # type: ignore[assignment]
    spec = await request.json()
    capacity = spec.get("capacity")
    runtime.endpoints[spec["name"]] = EndpointSpec(
        float(spec["delay"]),
        float(spec.get("failure_fraction", 0.0)),
        int(capacity) if capacity is not None else None,
    )
    return web.json_response({"ok": True})


async def _admin_runtime(request: web.Request) -> web.Response:
    runtime: Runtime = request.app[_RUNTIME_KEY]  # type: ignore[assignment]
    return web.json_response(
        {
            "invocations": runtime.invocations,
            "timers": len(runtime.timers),
            "distinct_ids": len(runtime.per_id),
            "ids_run_more_than_once": sum(1 for n in runtime.per_id.values() if n > 1),
            "last_done": runtime.last_done,
            "completed": runtime.completed,
        }
    )


def create_runtime_app(runtime: Runtime) -> web.Application:
    app = web.Application(client_max_size=8 * 1024**2)
    app[_RUNTIME_KEY] = runtime
    app.router.add_post("/endpoints/{name}/async-invocations", _invoke_async)
    app.router.add_post("/__admin/endpoints", _admin_endpoints)
    app.router.add_get("/__admin/runtime", _admin_runtime)
    return app


async def serve(seed: int) -> None:
    store = Store()
    runtime = Runtime(store, seed)
    s3_app = create_app(store)
    s3_app.router.add_post("/__admin/endpoints", _admin_endpoints)
    s3_app.router.add_get("/__admin/runtime", _admin_runtime)
    s3_app[_RUNTIME_KEY] = runtime
    runners = []
    urls = []
    for app in (s3_app, create_runtime_app(runtime)):
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        runners.append(runner)
        urls.append(f"http://127.0.0.1:{port}")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    kind = "uvloop" if "uvloop" in type(loop).__module__ else "asyncio"
    ready = {"s3": urls[0], "runtime": urls[1], "loop": kind, "started": time.time()}
    print("READY " + json.dumps(ready), flush=True)
    await stop.wait()
    for runner in runners:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.seed))
    else:
        uvloop.run(serve(args.seed))


if __name__ == "__main__":
    main()
