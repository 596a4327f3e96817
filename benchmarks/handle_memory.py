"""Where the bytes of a pending handle go: by type, and by the line that allocated them.

    python benchmarks/handle_memory.py                      # 100,000 handles, each waiter
    python benchmarks/handle_memory.py --n 20000 --waiters task
    python benchmarks/handle_memory.py --library-src /tmp/old/src --tag before

Resumes ``--n`` saved states (pending inferences of the fake S3 of ``fake_sagemaker.py``,
started here on 127.0.0.1), and waits on each: a done callback (one shared function), a task
per handle (``await handle``), or one ``as_completed`` loop. Then counts what came to life:

- by type: every object the garbage collector tracks, and what they hold (strings, floats...),
  counted once each, with ``sys.getsizeof``: objects and bytes per handle, and how many of
  them the collector tracks (a full collection walks those);
- by line: ``tracemalloc`` (3 frames), the bytes per handle each line of code allocated;
- the RSS growth per handle, measured in a second run without tracemalloc (which costs
  memory of its own).

Writes benchmarks/results/handle-memory-<date>[-tag].md and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import gc
import json
import resource
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
RESULTS = HERE / "results"
WAITERS = ("callback", "task", "as_completed")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def states(n: int) -> list[str]:
    """``n`` saved states as JSON lines (a resumed handle reads its state from such text)."""
    now = time.time()
    iso = dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat()
    deadline = dt.datetime.fromtimestamp(now + 3 * 3600, dt.timezone.utc).isoformat()
    lines = []
    for _ in range(n):
        name = str(uuid.uuid4())
        lines.append(
            json.dumps(
                {
                    "version": 1,
                    "inference_id": name,
                    "endpoint_name": "memory-sleep-3600",
                    "output_location": f"s3://bench-out/memory-sleep-3600/{name}.out",
                    "failure_location": f"s3://bench-out/failures/{name}-error.out",
                    "submitted_at": iso,
                    "deadline": deadline,
                    "submit_attempts": 1,
                }
            )
        )
    return lines


def census() -> tuple[collections.Counter[str], collections.Counter[str], set[int]]:
    """Objects by type (tracked ones and what they refer to), their bytes, the tracked ids."""
    counts: collections.Counter[str] = collections.Counter()
    sizes: collections.Counter[str] = collections.Counter()
    seen: set[int] = set()
    tracked = gc.get_objects()
    tracked_ids = {id(o) for o in tracked}
    for obj in tracked:
        for x in (obj, *gc.get_referents(obj)):
            if id(x) in seen:
                continue
            seen.add(id(x))
            name = type(x).__qualname__
            counts[name] += 1
            sizes[name] += sys.getsizeof(x)
    return counts, sizes, tracked_ids


async def measure(path: str, n: int, waiter: str, trace: bool) -> dict[str, Any]:
    from sagemaker_async import AsyncInferenceClient, as_completed

    client = AsyncInferenceClient(max_connections=200)
    await client.open()
    for handle in [client.resume(json.loads(line)) for line in states(10)]:  # warm
        handle.cancel()
    gc.collect()
    before = census() if trace else None
    if trace:
        tracemalloc.start(3)
    rss_before = rss()
    handles, tasks = [], []

    def done(handle: Any) -> None:
        pass

    async def wait(handle: Any) -> None:
        with contextlib.suppress(BaseException):
            await handle

    async def loop_over(all_handles: list[Any]) -> None:
        async for _ in as_completed(all_handles):
            pass

    with open(path) as lines:  # noqa: ASYNC230 - a local file, read as the phase measured
        for i, line in enumerate(lines, 1):
            handle = client.resume(json.loads(line))
            handles.append(handle)
            if waiter == "callback":
                handle.add_done_callback(done)
            elif waiter == "task":
                tasks.append(asyncio.get_running_loop().create_task(wait(handle)))
            if i % 500 == 0:
                await asyncio.sleep(0)
    if waiter == "as_completed":
        tasks.append(asyncio.get_running_loop().create_task(loop_over(handles)))
    await asyncio.sleep(2.0)
    gc.collect()
    out: dict[str, Any] = {"n": n, "waiter": waiter, "watching": client.stats().in_flight}
    out["rss_bytes_per_handle"] = round((rss() - rss_before) / n)
    if trace:
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        lines_ = []
        for stat in snapshot.statistics("lineno")[:20]:  # (by each block's latest frame)
            per = stat.size / n
            if per >= 1:
                frame = stat.traceback[0]
                short = frame.filename.split("site-packages/")[-1].split("src/")[-1]
                where = f"{short}:{frame.lineno}"
                lines_.append((round(per, 1), round(stat.count / n, 2), where))
        out["by_line"] = lines_
        del snapshot  # (Python objects too: gone before the census)
        gc.collect()
        assert before is not None
        counts0, sizes0, tracked0 = before
        counts1, sizes1, tracked1 = census()
        out["tracked_per_handle"] = round(len(tracked1 - tracked0) / n, 2)
        by_type = []
        for name in counts1:
            count = (counts1[name] - counts0.get(name, 0)) / n
            size = (sizes1[name] - sizes0.get(name, 0)) / n
            if count >= 0.05:
                by_type.append((round(size, 1), round(count, 2), name))
        out["by_type"] = sorted(by_type, reverse=True)
    for task in tasks:
        task.cancel()
    for handle in handles:
        handle.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await client.aclose()
    return out


def child(args: argparse.Namespace) -> None:
    if args.library_src:
        sys.path.insert(0, args.library_src)
    with tempfile.NamedTemporaryFile("w", suffix=".states", delete=False) as f:
        f.write("\n".join(states(args.n)) + "\n")  # read back line by line, as it is resumed
    try:
        out = asyncio.run(measure(f.name, args.n, args.waiters, args.trace))
    finally:
        Path(f.name).unlink()
    import sagemaker_async

    out["library"] = sagemaker_async.__file__
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--waiters", default=",".join(WAITERS))
    parser.add_argument("--library-src", help="measure the sagemaker_async of this src/ dir")
    parser.add_argument("--tag", help="suffix of the output file")
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sys.path.insert(0, str(HERE))
    from scale import Server, child_env

    async def run_all() -> list[dict[str, Any]]:
        server = Server()
        await server.start()
        rows = []
        try:
            for waiter in args.waiters.split(","):
                row: dict[str, Any] = {}
                for trace in (True, False):  # RSS without tracemalloc's own memory
                    await server.post("reset", params=[("bucket", "bench-out")])
                    command = [sys.executable, __file__, "--child", "--n", str(args.n)]
                    command += ["--waiters", waiter] + (["--trace"] if trace else [])
                    if args.library_src:
                        command += ["--library-src", args.library_src]
                    proc = await asyncio.create_subprocess_exec(
                        *command,
                        env=child_env(server.urls),
                        stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.PIPE,
                    )
                    stdout, stderr = await proc.communicate()
                    result = [x for x in stdout.decode().splitlines() if x.startswith("RESULT ")]
                    if not result:
                        raise RuntimeError(stderr.decode()[-3000:])
                    data = json.loads(result[0][len("RESULT ") :])
                    if not trace:
                        data = {"rss_bytes_per_handle": data["rss_bytes_per_handle"]}
                    row.update(data)
                rows.append(row)
                print(f"{waiter}: {row['rss_bytes_per_handle']} B RSS per handle", file=sys.stderr)
        finally:
            await server.stop()
        return rows

    rows = asyncio.run(run_all())
    text = [
        f"# Bytes per pending handle, {dt.date.today().isoformat()}: {rows[0]['n']:,} handles "
        f"resumed, library {rows[0]['library']}, Python {sys.version.split()[0]}",
        "",
        "Objects and bytes per handle by type (`sys.getsizeof`; tracked: what a full "
        "collection walks), then by the line that allocated them (`tracemalloc`).",
    ]
    for row in rows:
        text += [
            "",
            f"## {row['waiter']}: {row['rss_bytes_per_handle']:,} B RSS per handle, "
            f"{row['tracked_per_handle']} GC-tracked objects per handle",
            "",
            "| type | objects / handle | bytes / handle |",
            "|---|---|---|",
            *(f"| {name} | {count} | {size} |" for size, count, name in row["by_type"]),
            f"| **all** | {round(sum(c for _, c, _ in row['by_type']), 2)} | "
            f"**{round(sum(s for s, _, _ in row['by_type']))}** |",
            "",
            "| allocated at | bytes / handle | blocks / handle |",
            "|---|---|---|",
            *(f"| `{where}` | {size} | {count} |" for size, count, where in row["by_line"]),
        ]
    RESULTS.mkdir(exist_ok=True)
    stem = f"handle-memory-{dt.date.today().isoformat()}" + (f"-{args.tag}" if args.tag else "")
    (RESULTS / f"{stem}.md").write_text("\n".join(text) + "\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps(rows, indent=1) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
