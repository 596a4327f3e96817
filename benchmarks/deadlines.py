"""Deadline benchmark: every handle ends by its deadline + 2 s, whatever S3 does (issue 18).

    python benchmarks/deadlines.py                    # 10,000 handles, deadline 10 s, every mix
    python benchmarks/deadlines.py --n 1000 --faults stall,html --tag n1000

Method. For each fault mix, a fault S3 server (aiohttp on 127.0.0.1, a free port) runs in a
process of its own (this script with ``--serve``), so the client's CPU is its own. It answers
every request badly, in one way per mix, and counts the requests: by kind (GET and HEAD of an
object, LIST, anything else as OTHER), how many came before the handles' deadline, and how many
the client hung up on before the answer ended:

- ``stall``: accepts every request and never answers;
- ``slowdown``: 503 ``SlowDown`` (S3's XML error, with an ``x-amz-request-id``) to everything;
- ``trickle``: a GET of an object answers 200 at once (request id, Content-Length 64), then its
  body a byte per second; a LIST (``list-type=2``) trickles a valid ListObjectsV2 page the same
  way;
- ``html``: a proxy's HTML error page, 502 and 404 in turn, without a request id;
- ``listed-then-503``: a LIST names every pending output key (``out/0.out`` ..
  ``out/<n-1>.out``, paged at 1,000 with continuation tokens, as S3 does), so the client sees
  every result as present, while every GET or HEAD of an object answers 503 ``SlowDown``.

This process makes an ``AsyncInferenceClient`` with the library's defaults (only its region and
endpoints given), resumes ``n`` handles at once from saved states (submitted now, deadline now
+ ``--deadline-s``; outputs ``s3://bucket/out/<i>.out``, failures
``s3://bucket/fail/<i>-error.out``), and waits on all of them with one done callback each,
which records ``time.monotonic()`` and the outcome. A handle's lateness is its end minus its
deadline (both on the monotonic clock, taken just before the states are made); the target is
at most +2 s for every handle. A ticker sleeping 50 ms records the event loop's lag (its
oversleep) while the handles wait (the time to resume them and add the callbacks is reported
apart). A handle that has not ended ``--grace-s`` after its deadline counts as never ended.
Each timeout's ``__cause__`` (the last S3 error of its watch) is tallied too: "no S3 error"
means that no read for that handle itself ever ended (its directory was listed, and the last
look at the deadline had no time left for it).

Writes benchmarks/results/deadlines-<date>[-tag].json and .md and prints the Markdown table;
exits 1 (after naming them) if any handle ended later than its deadline + 2 s, or never.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import datetime as dt
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from email.utils import formatdate
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote
from xml.sax.saxutils import escape

import aiohttp
from aiohttp import web

from scale import child_env, fmt, pct

SCRIPT = Path(__file__).resolve()
HERE = SCRIPT.parent
RESULTS = HERE / "results"
BUCKET = "bucket"
FAULTS = ("stall", "slowdown", "trickle", "html", "listed-then-503")
MARGIN_S = 2.0  # the target: every handle ends by its deadline + this
LAG_PERIOD = 0.05
BODY_LENGTH = 64  # trickle: the Content-Length of an object
PAGE = 1000  # ListObjectsV2's largest page
_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
_HTML = {
    502: "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    "</h1></center><hr><center>nginx</center></body></html>\n",
    404: "<html><head><title>404 Not Found</title></head><body><center><h1>404 Not Found</h1>"
    "</center><hr><center>nginx</center></body></html>\n",
}


def output_key(i: int) -> str:
    return f"out/{i}.out"


def failure_key(i: int) -> str:
    return f"fail/{i}-error.out"


# -- the fault server (--serve) ---------------------------------------------------------------
def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _request_id() -> str:
    return uuid.uuid4().hex[:16].upper()


class FaultS3:
    """Answers every S3 request with one fault; counts the requests."""

    def __init__(self, fault: str, n: int) -> None:
        self.fault = fault
        self.counts: Counter[str] = Counter()
        self.arrivals: list[float] = []  # when each request came (wall clock)
        self.statuses: Counter[str] = Counter()
        self.pages = 0  # html: error pages served (502 and 404 in turn)
        self.open = 0  # requests under way (stalled, trickling)
        self.most_open = 0
        self.lag: list[float] = []
        self.started = time.time()
        self.cpu0 = _cpu()
        self.never = asyncio.Event()  # stall: never set
        now = time.time()
        self.http_date = formatdate(now, usegmt=True)
        iso = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now))
        self.keys = sorted(output_key(i) for i in range(n))  # S3 lists in binary order
        self.entries = {
            key: f"<Contents><Key>{escape(key)}</Key><LastModified>{iso}</LastModified>"
            f'<ETag>"{uuid.uuid5(uuid.NAMESPACE_URL, key).hex}"</ETag><Size>{BODY_LENGTH}'
            "</Size><StorageClass>STANDARD</StorageClass></Contents>"
            for key in self.keys
        }
        self.answer: Callable[[web.Request, str], Any] = {
            "stall": self.stall,
            "slowdown": self.slowdown,
            "trickle": self.trickle,
            "html": self.html,
            "listed-then-503": self.listed_then_503,
        }[fault]

    @staticmethod
    def kind(request: web.Request) -> str:
        bucket, _, key = request.path.lstrip("/").partition("/")
        if not key:
            get = request.method == "GET" and "list-type" in request.query
            return "LIST" if get and bucket else "OTHER"
        return request.method if request.method in ("GET", "HEAD") else "OTHER"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        kind = self.kind(request)
        self.counts[kind] += 1
        self.arrivals.append(time.time())
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            response: web.StreamResponse = await self.answer(request, kind)
            self.statuses[str(response.status)] += 1
            return response
        except (asyncio.CancelledError, ConnectionError):
            self.counts["abandoned"] += 1  # the client hung up before the answer ended
            raise
        finally:
            self.open -= 1

    # -- the mixes ----------------------------------------------------------------------------
    async def stall(self, request: web.Request, kind: str) -> web.StreamResponse:
        await self.never.wait()
        raise AssertionError("never answers")

    async def slowdown(self, request: web.Request, kind: str) -> web.StreamResponse:
        return self.s3_error(503, "SlowDown", "Please reduce your request rate.", request.path)

    async def trickle(self, request: web.Request, kind: str) -> web.StreamResponse:
        if kind == "GET":
            body = b'{"result": "' + b"x" * (BODY_LENGTH - 15) + b'"}\n'
            return await self.trickled(request, body, "application/json")
        if kind == "LIST":
            return await self.trickled(request, self.listing(request), "application/xml")
        if kind == "HEAD":  # no body to trickle: the headers at once
            return web.Response(status=200, headers=self.object_headers())
        return self.s3_error(501, "NotImplemented", "Not implemented here.", request.path)

    async def html(self, request: web.Request, kind: str) -> web.StreamResponse:
        self.pages += 1
        status = 502 if self.pages % 2 else 404
        return web.Response(status=status, text=_HTML[status], content_type="text/html")

    async def listed_then_503(self, request: web.Request, kind: str) -> web.StreamResponse:
        if kind == "LIST":
            return web.Response(
                body=self.listing(request),
                content_type="application/xml",
                headers={"x-amz-request-id": _request_id()},
            )
        return self.s3_error(503, "SlowDown", "Please reduce your request rate.", request.path)

    # -- answers ------------------------------------------------------------------------------
    def object_headers(self) -> dict[str, str]:
        return {
            "x-amz-request-id": _request_id(),
            "x-amz-id-2": uuid.uuid4().hex,
            "Last-Modified": self.http_date,
            "ETag": '"' + uuid.uuid4().hex + '"',
            "Content-Type": "application/json",
            "Content-Length": str(BODY_LENGTH),
            "Accept-Ranges": "bytes",
        }

    @staticmethod
    def s3_error(status: int, code: str, message: str, resource_: str) -> web.Response:
        request_id = _request_id()
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>"
            f"<Resource>{escape(resource_)}</Resource><RequestId>{request_id}</RequestId>"
            "</Error>"
        )
        return web.Response(
            status=status,
            body=body.encode(),
            content_type="application/xml",
            headers={"x-amz-request-id": request_id, "x-amz-id-2": uuid.uuid4().hex},
        )

    async def trickled(
        self, request: web.Request, body: bytes, content_type: str
    ) -> web.StreamResponse:
        headers = self.object_headers()
        headers["Content-Type"] = content_type
        del headers["Content-Length"]
        response = web.StreamResponse(status=200, headers=headers)
        response.content_length = len(body)
        await response.prepare(request)
        for i in range(len(body)):
            await response.write(body[i : i + 1])
            await asyncio.sleep(1.0)
        await response.write_eof()
        return response

    def listing(self, request: web.Request) -> bytes:
        """One ListObjectsV2 page of the pending output keys under the request's prefix."""
        query = request.query
        prefix = query.get("prefix", "")
        token_in = query.get("continuation-token", "")
        after = bytes.fromhex(token_in).decode() if token_in else query.get("start-after", "")
        max_keys = min(PAGE, max(0, int(query.get("max-keys", str(PAGE)))))
        start = max(bisect.bisect_left(self.keys, prefix), bisect.bisect_right(self.keys, after))
        page: list[str] = []
        i = start
        while i < len(self.keys) and self.keys[i].startswith(prefix) and len(page) < max_keys:
            page.append(self.keys[i])
            i += 1
        truncated = i < len(self.keys) and self.keys[i].startswith(prefix)
        url = query.get("encoding-type") == "url"

        def enc(value: str) -> str:
            return escape(quote(value, safe="/~") if url else value)

        parts = [
            f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{_XMLNS}">',
            f"<Name>{BUCKET}</Name><Prefix>{enc(prefix)}</Prefix>",
            f"<KeyCount>{len(page)}</KeyCount><MaxKeys>{max_keys}</MaxKeys>",
        ]
        if query.get("delimiter"):
            parts.append(f"<Delimiter>{enc(query['delimiter'])}</Delimiter>")
        if url:
            parts.append("<EncodingType>url</EncodingType>")
        parts.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        if token_in:
            parts.append(f"<ContinuationToken>{escape(token_in)}</ContinuationToken>")
        if truncated:
            token_out = page[-1].encode().hex()
            parts.append(f"<NextContinuationToken>{token_out}</NextContinuationToken>")
        parts.extend(self.entries[key] for key in page)  # keys need no URL-encoding
        parts.append("</ListBucketResult>")
        return "".join(parts).encode()

    # -- admin --------------------------------------------------------------------------------
    async def stats(self, request: web.Request) -> web.Response:
        """Counts, CPU, loop lag; ``?split=T``: also the requests that came before wall time T."""
        lag = sorted(self.lag)
        split = float(request.query.get("split", "inf"))
        return web.json_response(
            {
                "fault": self.fault,
                "counts": dict(self.counts),
                "before_split": bisect.bisect_left(self.arrivals, split),
                "statuses": dict(self.statuses),
                "open": self.open,
                "most_open": self.most_open,
                "seconds": round(time.time() - self.started, 1),
                "cpu_s": round(_cpu() - self.cpu0, 2),
                "loop_lag_ms": {
                    "p99": round((pct(lag, 0.99) or 0) * 1000, 1),
                    "max": round(lag[-1] * 1000, 1) if lag else None,
                },
            }
        )

    async def lag_ticker(self, period: float = 0.01) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(period)
            self.lag.append(max(0.0, loop.time() - before - period))


async def serve(fault: str, n: int) -> None:
    """Run the fault server until stdin closes (the benchmark ended, or died)."""
    fake = FaultS3(fault, n)
    app = web.Application()
    app.router.add_get("/__admin/stats", fake.stats)
    app.router.add_route("*", "/{path:.*}", fake.handle)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    ticker = asyncio.get_running_loop().create_task(fake.lag_ticker())
    print("READY " + json.dumps({"url": f"http://127.0.0.1:{port}"}), flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
    finally:
        ticker.cancel()
        await runner.cleanup()


class ServerProcess:
    """The fault server's process: started per mix, always ended (stdin closed, then killed)."""

    def __init__(self, fault: str, n: int, log: IO[bytes]) -> None:
        self.fault, self.n, self.log = fault, n, log
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            "--serve",
            "--fault",
            self.fault,
            "--n",
            str(self.n),
            env=child_env({"s3": "", "runtime": ""}),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self.log,
        )
        assert self.proc.stdout is not None
        line = (await asyncio.wait_for(self.proc.stdout.readline(), 60)).decode()
        if not line.startswith("READY "):
            raise RuntimeError(f"the fault server did not start: {line!r}\n{self.log_tail()}")
        self.url = json.loads(line[len("READY ") :])["url"]

    async def stats(self, split: float) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(self.url + "/__admin/stats", params={"split": repr(split)}) as r,
        ):
            r.raise_for_status()
            stats: dict[str, Any] = await r.json()
            return stats

    def log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    async def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()


# -- the client (this process) ----------------------------------------------------------------
def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat()


@dataclass
class Recorder:
    """Each handle's end (monotonic) and outcome, from its done callback."""

    n: int
    ends: list[float] = field(init=False)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    last_s3_errors: Counter[str] = field(default_factory=Counter)  # of the timeouts
    count: int = 0
    all_done: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.ends = [math.nan] * self.n

    def done(self, handle: Any) -> None:
        self.ends[int(handle.inference_id.removeprefix("inf-"))] = time.monotonic()
        self.statuses[handle.status.value] += 1
        exc = None if handle.cancelled() else handle.exception()
        if exc is not None:
            code = getattr(exc, "code", None)
            self.errors[type(exc).__name__ + (f"({code})" if code else "")] += 1
            if handle.status.value == "timed_out":
                cause = exc.__cause__
                name = getattr(cause, "code", None) or type(cause).__name__
                self.last_s3_errors["no S3 error" if cause is None else str(name)] += 1
        self.count += 1
        if self.count == self.n:
            self.all_done.set()


class LagProbe:
    """The event loop's lag: sleep ``LAG_PERIOD``, record the oversleep."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LAG_PERIOD)
            self.samples.append(max(0.0, loop.time() - before - LAG_PERIOD))

    def stats(self) -> dict[str, Any]:
        ms = [x * 1000 for x in self.samples]
        return {
            "p99": round(pct(ms, 0.99) or 0, 1),
            "max": round(max(ms, default=0), 1),
            "count": len(ms),
        }


def plain(stats: Any) -> dict[str, Any]:
    """A ClientStats snapshot as JSON."""
    return {
        f.name: dict(value) if isinstance(value := getattr(stats, f.name), Mapping) else value
        for f in fields(stats)
    }


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Resume n handles against the fault server at ``url``; wait for every one to end."""
    from sagemaker_async import AsyncInferenceClient

    n, deadline_s = args.n, args.deadline_s
    rec = Recorder(n)
    probe = LagProbe()
    async with AsyncInferenceClient(
        region_name="us-east-1", endpoint_url=url, s3_endpoint_url=url
    ) as client:
        t0, wall = time.monotonic(), time.time()
        submitted_at, deadline_at = iso(wall), iso(wall + deadline_s)
        for i in range(n):
            handle = client.resume(
                {
                    "version": 1,
                    "inference_id": f"inf-{i}",
                    "endpoint_name": "ep",
                    "output_location": f"s3://{BUCKET}/{output_key(i)}",
                    "failure_location": f"s3://{BUCKET}/{failure_key(i)}",
                    "submitted_at": submitted_at,
                    "deadline": deadline_at,
                }
            )
            handle.add_done_callback(rec.done)
        setup_s = time.monotonic() - t0
        ticker = asyncio.get_running_loop().create_task(probe.run())
        with contextlib.suppress(asyncio.TimeoutError):
            limit = t0 + deadline_s + args.grace_s - time.monotonic()
            await asyncio.wait_for(rec.all_done.wait(), limit)
        wait_s = time.monotonic() - t0
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        stats = plain(client.stats())
    deadline = t0 + deadline_s
    lateness = {i: end - deadline for i, end in enumerate(rec.ends) if not math.isnan(end)}
    values = list(lateness.values())
    late = sorted(((i, x) for i, x in lateness.items() if x > MARGIN_S), key=lambda item: -item[1])
    never = [i for i, end in enumerate(rec.ends) if math.isnan(end)]
    return {
        "statuses": dict(rec.statuses),
        "errors": dict(rec.errors.most_common()),
        "timeout_last_s3_errors": dict(rec.last_s3_errors.most_common()),
        "ended": len(values),
        "never_ended": len(never),
        "never_ended_ids": [f"inf-{i}" for i in never[:50]],
        "lateness_s": {
            "min": round(min(values), 3) if values else None,
            "p50": round(pct(values, 0.5) or 0, 3) if values else None,
            "p95": round(pct(values, 0.95) or 0, 3) if values else None,
            "max": round(max(values), 3) if values else None,
        },
        "ended_before_deadline": sum(x < 0 for x in values),
        "late": len(late) + len(never),
        "late_ids": [{"id": f"inf-{i}", "lateness_s": round(x, 3)} for i, x in late[:50]],
        "setup_s": round(setup_s, 3),
        "wait_s": round(wait_s, 2),
        "loop_lag_ms": probe.stats(),
        "client_stats": stats,
        "deadline_wall": wall + deadline_s,
    }


async def run_mix(fault: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryFile() as log:
        server = ServerProcess(fault, args.n, log)
        try:
            await server.start()
            cpu0 = _cpu()
            row = await measure(server.url, args)
            row["client_cpu_s"] = round(_cpu() - cpu0, 2)
            await asyncio.sleep(0.3)  # hang-ups reach the server
            row["server"] = await server.stats(split=row.pop("deadline_wall"))
        except BaseException:
            print(server.log_tail(), file=sys.stderr)
            raise
        finally:
            await server.stop()
    return {"fault": fault, "n": args.n, "deadline_s": args.deadline_s, **row}


# -- output -----------------------------------------------------------------------------------
def requests_cell(server: dict[str, Any]) -> str:
    counts = server["counts"]
    kinds = " / ".join(fmt(counts.get(k, 0)) for k in ("GET", "HEAD", "LIST", "OTHER"))
    return f"{kinds} ({fmt(server['before_split'])}); {fmt(counts.get('abandoned', 0))}"


def table(rows: list[dict[str, Any]]) -> str:
    head = [
        "fault mix",
        "n",
        "deadline (s)",
        "timed out / failed / succeeded / never ended",
        "errors (timeouts' last S3 error)",
        "lateness p50 / p95 / max (s)",
        f"late > {MARGIN_S:g} s",
        "S3 requests at the server: GET / HEAD / LIST / other (all before the deadline); abandoned",
        "req/s",
        "client loop lag p99 / max (ms)",
        "resume + callbacks (ms)",
        "client / server CPU (s)",
        "verdict",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        st = r["statuses"]
        lat = r["lateness_s"]
        errors = ", ".join(f"{k} {v:,}" for k, v in r["errors"].items()) or "-"
        causes = ", ".join(f"{k} {v:,}" for k, v in r["timeout_last_s3_errors"].items())
        total = sum(v for k, v in r["server"]["counts"].items() if k != "abandoned")
        outcomes = (st.get(k, 0) for k in ("timed_out", "failed", "succeeded"))
        lateness = (f"{lat[k]:+.2f}" if lat[k] is not None else "-" for k in ("p50", "p95", "max"))
        cells = [
            r["fault"],
            fmt(r["n"]),
            fmt(float(r["deadline_s"])),
            " / ".join(fmt(x) for x in (*outcomes, r["never_ended"])),
            errors + (f" ({causes})" if causes else ""),
            " / ".join(lateness),
            fmt(r["late"]),
            requests_cell(r["server"]),
            fmt(total / max(1e-9, r["wait_s"]), 0),
            f"{fmt(r['loop_lag_ms']['p99'], 1)} / {fmt(r['loop_lag_ms']['max'], 0)}",
            fmt(r["setup_s"] * 1000, 0),
            f"{fmt(r['client_cpu_s'], 1)} / {fmt(r['server']['cpu_s'], 1)}",
            "PASS" if not r["late"] else "**FAIL**",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def library_info() -> dict[str, Any]:
    import sagemaker_async

    git = subprocess.run(
        ["git", "-C", str(HERE), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "version": getattr(sagemaker_async, "__version__", "?"),
        "path": sagemaker_async.__file__,
        "git": git.stdout.strip() or None,
    }


def header_line(meta: dict[str, Any]) -> str:
    library = meta["library"]
    return (
        f"Deadline benchmark {meta['date']}: {meta['cpus']} CPUs, Python {meta['python']}, "
        f"sagemaker-async {library['version']} at {library['git'] or 'unknown commit'}; "
        f"default client settings; {meta['n']:,} handles resumed at once per fault mix, "
        f"deadline {meta['deadline_s']:g} s, target: every handle ends by its deadline + "
        f"{MARGIN_S:g} s; {meta['total_s'] / 60:.1f} min. S3 requests counted by the fault "
        "server (its own process); lateness = end - deadline (monotonic)."
    )


async def main(args: argparse.Namespace) -> int:
    # This process is the client: fake credentials, no AWS config, every AWS endpoint local.
    fake = child_env({"s3": "http://127.0.0.1:9", "runtime": "http://127.0.0.1:9"})
    os.environ.clear()
    os.environ.update(fake)
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    for fault in args.faults:
        print(f"[{time.monotonic() - started:6.1f}s] {fault}: {args.n:,} handles", flush=True)
        row = await run_mix(fault, args)
        rows.append(row)
        brief = {k: row[k] for k in ("statuses", "errors", "lateness_s", "late", "loop_lag_ms")}
        print("    " + json.dumps({**brief, "server": row["server"]["counts"]}), flush=True)
    stamp = dt.date.today().isoformat()
    meta = {
        "date": stamp,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "library": library_info(),
        "n": args.n,
        "deadline_s": args.deadline_s,
        "faults": args.faults,
        "margin_s": MARGIN_S,
        "grace_s": args.grace_s,
        "total_s": round(time.monotonic() - started, 1),
    }
    header = header_line(meta)
    text = table(rows)
    stem = f"deadlines-{stamp}" + (f"-{args.tag}" if args.tag else "")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    (RESULTS / f"{stem}.md").write_text(f"# {header}\n\n{text}\n")
    print(f"\n{header}\n\n{text}\n\nwrote {RESULTS / stem}.json, .md")
    failed = [r for r in rows if r["late"]]
    for r in failed:
        worst = ", ".join(f"{x['id']} ({x['lateness_s']:+.2f} s)" for x in r["late_ids"][:10])
        never = ", ".join(r["never_ended_ids"][:10])
        print(
            f"LATE: {r['fault']}: {r['late']:,} of {r['n']:,} handles ended later than their "
            f"deadline + {MARGIN_S:g} s"
            + (f"; latest: {worst}" if worst else "")
            + (f"; never ended ({r['never_ended']:,}): {never}" if never else ""),
            file=sys.stderr,
        )
    return 1 if failed else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=10_000, help="handles pending at once")
    parser.add_argument("--deadline-s", type=float, default=10.0, help="each handle's deadline")
    parser.add_argument(
        "--faults", default=",".join(FAULTS), help=f"comma-separated, of {', '.join(FAULTS)}"
    )
    parser.add_argument("--tag", help="suffix of the output files")
    parser.add_argument(
        "--grace-s",
        type=float,
        default=60.0,
        help="a handle not ended this long after its deadline counts as never ended",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--fault", choices=FAULTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        if args.fault is None:
            parser.error("--serve needs --fault")
        return args
    args.faults = [x for x in args.faults.split(",") if x]
    if not args.faults or set(args.faults) - set(FAULTS):
        parser.error(f"--faults: comma-separated, of {', '.join(FAULTS)}")
    if args.n < 1 or args.deadline_s <= 0:
        parser.error("--n and --deadline-s must be positive")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.serve:
        asyncio.run(serve(arguments.fault, arguments.n))
    else:
        sys.exit(asyncio.run(main(arguments)))
