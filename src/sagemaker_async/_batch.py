"""Batch runs: submit many payloads, save every result, resume after an interruption.

A batch keeps an append-only manifest (``manifest.jsonl``) in its output folder. Each item
passes through ``submitting`` (the InferenceId, written as its call starts, *before* anything
is sent), then ``submitted`` (with the handle's ``to_dict()``) or ``rejected`` (refused for
sure), then ``succeeded`` or ``failed``. Every record carries ``request``: a SHA-256 of the
endpoint, the options and the payload. A new run over the same folder skips finished items,
resumes the wait of submitted ones, and submits the rest; an item whose request changed
(another endpoint, other options, an edited payload, a line that moved) is a new request: its
old answer is never reused. Only an item left ``submitting`` (its call was cut short by a
kill, or its answer left unclear whether SageMaker took it) is sent again with the same
InferenceId (SageMaker has no lookup by id), and is reported. One run at a time holds the
output folder (a lock file, ``.lock``); a second one refuses to start.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from ._client import AsyncInferenceClient
from ._clock import SystemClock
from ._errors import (
    ClientClosedError,
    InferenceFailedError,
    InferenceTimeoutError,
    InvocationError,
)
from ._errors import ValidationError as _ValidationError
from ._handle import AsyncInferenceHandle
from ._map import as_completed, map_inferences

__all__ = ["BatchItem", "BatchSummary", "ProgressBar", "read_items", "run_batch"]

logger = logging.getLogger("sagemaker_async")

MANIFEST = "manifest.jsonl"


@dataclass(frozen=True)
class BatchItem:
    """One payload of a batch, named by ``key`` (a file name, or ``line-000001``)."""

    key: str
    body: bytes = field(repr=False)


@dataclass
class BatchSummary:
    """What a batch run did.

    Every item is counted in one of ``succeeded``, ``failed``, ``skipped``, ``not_submitted``
    and ``unfinished``, however the run ended (stopped, timed out or cancelled): an item with a
    handle and no outcome yet, or one the run never came to, is ``unfinished`` (a rerun
    resumes it); after a stop, an item that was never sent is ``not_submitted``.
    """

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    resumed: int = 0
    resubmitted: int = 0
    not_submitted: int = 0
    unfinished: int = 0
    duplicates: int = 0  # extra inferences sent by retried invokes (see submit_attempts)
    stopped: str | None = None  # why the run stopped early, if it did
    latencies: list[float] = field(default_factory=list, repr=False)
    wall_seconds: float = 0.0
    problem: str | None = None  # why waiting is stuck right now (S3 failing), if it is
    listing: bool = False  # an S3 batch still lists its source: ``total`` grows

    def percentile(self, q: float) -> float | None:
        """Latency percentile ``q`` (0..100) in seconds, over this run's finished items."""
        if not self.latencies:
            return None
        if len(self.latencies) == 1:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[
            max(0, min(98, round(q) - 1))
        ]


def read_items(
    source: Path, *, exclude: Path | None = None, skipped: list[str] | None = None
) -> list[BatchItem]:
    """Items of a folder (each file, sorted by name) or of a JSONL file (each non-empty line).

    A folder is read recursively: regular files, and symbolic links to regular files. Hidden
    entries (a name starting with ``.``), anything under ``exclude`` (the batch's own output
    folder), FIFOs, sockets, devices and unreadable files are skipped; each is appended to
    ``skipped`` with the reason.

    Raises:
        ValidationError: ``source`` is missing, empty, or neither a folder nor a file.
    """
    skipped = [] if skipped is None else skipped
    if source.is_dir():
        excluded = exclude.resolve() if exclude is not None else None
        items = []
        for path in sorted(source.rglob("*")):
            name = str(path.relative_to(source))
            if excluded is not None and (
                path.resolve() == excluded or excluded in path.resolve().parents
            ):
                continue
            if any(part.startswith(".") for part in path.relative_to(source).parts):
                skipped.append(f"{name} (hidden)")
            elif path.is_dir():
                continue
            elif not path.is_file():
                skipped.append(f"{name} (not a regular file)")
            else:
                try:
                    items.append(BatchItem(name, path.read_bytes()))
                except OSError as exc:
                    skipped.append(f"{name} (unreadable: {exc.strerror or exc})")
    elif source.is_file():
        lines = source.read_bytes().splitlines()
        items = [
            BatchItem(f"line-{n:06d}", line) for n, line in enumerate(lines, 1) if line.strip()
        ]
    else:
        raise _ValidationError("source", f"{str(source)!r} does not exist", "a folder or a file")
    if not items:
        raise _ValidationError("source", f"{str(source)!r} holds no items", "at least one item")
    return items


class _Manifest:
    """Append-only JSONL log; each line is flushed and fsynced before the next step.

    Opening it takes the folder's lock (``.lock``), held until :meth:`close`.
    """

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._lock = (folder / ".lock").open("a")
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise _ValidationError(
                "out",
                f"another batch is running into {folder}",
                "one run per output folder: wait for it to end, or use another --out",
            ) from None
        for stale in folder.glob("*/.*.tmp"):  # a write cut short by a kill: never recorded
            if _TEMPORARY.fullmatch(stale.name):
                stale.unlink(missing_ok=True)
        self.path = folder / MANIFEST
        self.state: dict[str, dict[str, Any]] = {}
        text = self.path.read_text() if self.path.exists() else ""
        if text:
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a kill: the step before it still holds
                self.state.setdefault(record["key"], {}).update(record)
        self._file = self.path.open("a", encoding="utf-8")
        if text and not text.endswith("\n"):
            self._file.write("\n")  # end a line torn by a crash, so the next one stays whole

    def write(self, **record: Any) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.state.setdefault(record["key"], {}).update(record)

    def close(self) -> None:
        self._file.close()
        self._lock.close()  # releases the lock


_TEMPORARY = re.compile(r"\.[0-9a-f]{32}\.tmp")  # _write_atomic's names


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all, durably, before the manifest says it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{uuid.uuid4().hex}.tmp")  # short: the name itself may be long
    with tmp.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


# Errors that every item would meet: stop the batch instead of repeating them per item.
_FATAL_CODES = frozenset(
    {
        "NoCredentialsError",
        "PartialCredentialsError",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "AccessDeniedException",
    }
)


class _NotSent(Exception):
    """The run stopped before this item's call: nothing was sent, nothing recorded."""


def _fatal(exc: BaseException) -> bool:
    """True for an error that every item of the batch would meet (no endpoint, no access)."""
    if isinstance(exc, ClientClosedError):
        return True
    if not isinstance(exc, InvocationError) or exc.possibly_submitted:
        return False
    if exc.code in _FATAL_CODES:
        return True
    return exc.code == "ValidationError" and "not found" in str(exc).lower()


async def run_batch(
    client: AsyncInferenceClient,
    endpoint_name: str,
    items: list[BatchItem],
    out_dir: Path,
    *,
    content_type: str | None = None,
    accept: str | None = None,
    max_in_flight: int = 256,
    progress: Callable[[BatchSummary], None] | None = None,
    timeout: float | None = None,
    summary: BatchSummary | None = None,
) -> BatchSummary:
    """Run ``items`` through ``endpoint_name``; results go to ``out_dir/results/<key>.out``.

    Failures go to ``out_dir/errors/<key>.txt``; the manifest is ``out_dir/manifest.jsonl``.
    New items go through :meth:`AsyncInferenceClient.map` (at most ``max_in_flight`` read
    and unfinished at once); waits that an earlier run left are resumed alongside. With
    ``timeout``, waiting stops that many seconds after the start: items still pending count
    as ``unfinished`` and a rerun resumes them. While S3 reads keep failing, the progress
    callback gets ``summary.problem`` (and a WARNING is logged once per new reason). When the
    first submissions fail in a way every item would (unknown endpoint, no credentials), the
    run stops: nothing more is sent, the calls under way end (each refused one is recorded
    ``rejected``), and ``summary.stopped`` says why. ``summary`` (filled in as the run goes)
    is returned, and stays readable if the run is cancelled; it counts every item, however
    the run ended.
    """
    manifest = _Manifest(out_dir)
    summary = summary if summary is not None else BatchSummary()
    summary.total = len(items)
    started = time.monotonic()
    options = json.dumps([endpoint_name, content_type, accept]).encode()
    settled: set[str] = set()  # items counted in the summary
    handled: set[str] = set()  # items with a handle: submitted in this run, or resumed
    stopping = False  # the run stopped early: nothing more is sent

    def report() -> None:
        if progress is not None:
            progress(summary)

    async def watch_s3() -> None:
        while True:
            await asyncio.sleep(1.0)
            error = client.last_s3_error
            problem = None if error is None else f"S3 reads fail ({error.code}); retrying"
            if problem != summary.problem:
                summary.problem = problem
                if error is not None:
                    logger.warning(
                        "still waiting: S3 reads fail (%s: %s); retrying", error.code, error
                    )
                report()

    def write(item: BatchItem, folder: str, suffix: str, data: bytes) -> str:
        path = out_dir / folder / f"{item.key}{suffix}"
        try:
            _write_atomic(path, data)
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise OSError(
                    exc.errno, f"the file name {path.name!r} is too long for the file system"
                ) from None
            raise
        return str(path.relative_to(out_dir))

    def record_failure(item: BatchItem, request: str, exc: BaseException) -> None:
        settled.add(item.key)
        record: dict[str, Any] = {"error": type(exc).__name__}
        try:
            record["file"] = write(item, "errors", ".txt", str(exc).encode())
        except OSError as write_error:
            record["message"] = f"{exc} (could not write the error file: {write_error})"
        manifest.write(key=item.key, event="failed", request=request, **record)
        summary.failed += 1

    def finish(item: BatchItem, request: str, handle: AsyncInferenceHandle, outcome: Any) -> None:
        """Record what became of a submitted item (``outcome``: a result or an exception)."""
        summary.duplicates += max(0, handle.submit_attempts - 1)
        if isinstance(outcome, (InvocationError, ClientClosedError)) or (
            isinstance(outcome, InferenceTimeoutError) and not outcome.deadline_exceeded
        ):
            # Submitted, not resolved (S3 refused, the run's timeout, shutting down): the next
            # run resumes the wait from the manifest.
            settled.add(item.key)
            summary.unfinished += 1
            logger.error("item %s: waiting stopped, rerun to resume: %s", item.key, outcome)
        elif isinstance(outcome, (InferenceFailedError, InferenceTimeoutError)):
            record_failure(item, request, outcome)
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            try:
                file = write(item, "results", ".out", outcome.body)
            except OSError as exc:
                logger.error("item %s: its result could not be written: %s", item.key, exc)
                record_failure(item, request, exc)
            else:
                manifest.write(
                    key=item.key,
                    event="succeeded",
                    file=file,
                    content_type=outcome.content_type,
                    request=request,
                )
                settled.add(item.key)
                summary.succeeded += 1
            summary.latencies.append(time.time() - handle.submitted_at.timestamp())
        report()

    # What each item needs: nothing (finished), a resumed wait, or a submission.
    requests: dict[str, str] = {}
    resumed: list[tuple[BatchItem, AsyncInferenceHandle]] = []
    fresh: list[BatchItem] = []
    for item in items:
        request = requests[item.key] = hashlib.sha256(options + b"\0" + item.body).hexdigest()
        record = manifest.state.get(item.key, {})
        if record.get("request") != request:
            record = {}  # another request under this name: its old answer is not this one's
        if record.get("event") in ("succeeded", "failed"):
            settled.add(item.key)
            summary.skipped += 1
        elif record.get("event") == "submitted":
            resumed.append((item, client.resume(record["handle"])))
            handled.add(item.key)
            summary.resumed += 1
        else:
            fresh.append(item)
    report()

    # Read lazily by map (up to max_in_flight ahead of the calls): the InferenceId each item
    # is sent with, written to the manifest by submit() as its call starts.
    reading: dict[str, BatchItem] = {}

    def to_submit() -> Iterator[dict[str, Any]]:
        for item in fresh:
            if stopping:
                return
            record = manifest.state.get(item.key, {})
            inference_id = record.get("inference_id")
            if not (
                record.get("request") == requests[item.key]
                and record.get("event") == "submitting"
                and inference_id
            ):
                inference_id = str(uuid.uuid4())  # reused only by a call that may have reached
            reading[inference_id] = item
            yield {"body": item.body, "inference_id": inference_id}

    async def submit(endpoint: str, **kwargs: Any) -> AsyncInferenceHandle:
        """The call of one item: ``submitting`` first (the InferenceId), then the invoke."""
        if stopping:
            raise _NotSent()
        inference_id = kwargs["inference_id"]
        item = reading[inference_id]
        request = requests[item.key]
        record = manifest.state.get(item.key, {})
        if record.get("request") == request and record.get("event") == "submitting":
            summary.resubmitted += 1
            logger.warning(
                "item %s: resubmitting with its InferenceId %s (an earlier run's call may "
                "have reached SageMaker: it may run twice)",
                item.key,
                inference_id,
            )
        else:
            manifest.write(
                key=item.key, event="submitting", inference_id=inference_id, request=request
            )
        return await client.invoke_endpoint_async(endpoint, **kwargs)

    def submitted(index: int, handle: AsyncInferenceHandle) -> None:
        item = fresh[index]
        handled.add(item.key)
        manifest.write(
            key=item.key, event="submitted", handle=handle.to_dict(), request=requests[item.key]
        )

    async def run_fresh() -> None:
        nonlocal stopping
        outcomes = map_inferences(
            submit,
            endpoint_name,
            to_submit(),
            max_in_flight=max_in_flight,
            on_submit=submitted,
            clock=SystemClock(),  # no submit_rate: map reads no time
            content_type=content_type,
            accept=accept,
        )
        async with contextlib.aclosing(outcomes):
            async for outcome in outcomes:
                item = fresh[outcome.index]
                if outcome.handle is not None:
                    finish(
                        item, requests[item.key], outcome.handle, outcome.error or outcome.result
                    )
                    continue
                error = outcome.error
                assert error is not None
                settled.add(item.key)
                summary.not_submitted += 1
                if isinstance(error, _NotSent):  # the run stopped before its call
                    report()
                    continue
                if isinstance(error, InvocationError) and error.possibly_submitted:
                    logger.error("item %s may have been submitted: %s", item.key, error)
                else:  # refused for sure: a rerun submits it afresh, without a warning
                    manifest.write(key=item.key, event="rejected", request=requests[item.key])
                    if not stopping:  # after the stop, its reason is said once
                        logger.error("item %s was not submitted: %s", item.key, error)
                report()
                if not stopping and _fatal(error) and summary.succeeded + summary.failed == 0:
                    # Nothing more is sent; the calls under way end, and are recorded.
                    stopping = True
                    summary.stopped = f"every item would fail: {error}"

    async def run_resumed() -> None:
        if not resumed:
            return
        handles = {handle: item for item, handle in resumed}
        async with contextlib.aclosing(as_completed(list(handles))) as finished:
            async for handle in finished:
                item = handles[handle]
                try:
                    outcome: Any = await handle.result()  # done: no wait
                except Exception as exc:
                    outcome = exc
                finish(item, requests[item.key], handle, outcome)

    async def run_all() -> None:
        await asyncio.gather(run_fresh(), run_resumed())

    watcher = asyncio.create_task(watch_s3())
    work = asyncio.ensure_future(run_all())
    try:
        done, _ = await asyncio.wait({work}, timeout=timeout)
        if not done:  # the run's own timeout: what is still pending resumes on a rerun
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            pending = len(items) - len(settled)
            logger.error("%d item(s) still pending at the timeout, rerun to resume", pending)
        else:
            work.result()
    finally:
        work.cancel()
        watcher.cancel()
        manifest.close()
        # However the run ended, each item is counted once: one not counted yet has a handle
        # and no outcome, or was never reached (after a stop: never sent).
        for item in items:
            if item.key not in settled:
                settled.add(item.key)
                if summary.stopped is not None and item.key not in handled:
                    summary.not_submitted += 1
                else:
                    summary.unfinished += 1
        summary.wall_seconds = time.monotonic() - started
    return summary


class ProgressBar:
    """The batch's progress on stderr, drawn by tqdm: redrawn on a terminal, else a line per 10%.

    After the counts it shows ok/failed/skipped, and why waiting is stuck (``problem``).
    ``shared``: several processes run the batch (over S3): it says what this process finished
    and what all of them did (``skipped`` counts the items others finished).
    """

    def __init__(self, stream: TextIO | None = None, *, shared: bool = False) -> None:
        self._shared = shared
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._bar: tqdm[Any] | None = None
        self._started = time.monotonic()
        self._last_decile: object = -1

    def __call__(self, s: BatchSummary) -> None:
        done = s.succeeded + s.failed + s.skipped + s.not_submitted + s.unfinished
        status = f"ok={s.succeeded} failed={s.failed}"
        if self._shared:
            status = (
                f"this process: ok={s.succeeded} failed={s.failed}; all processes: "
                f"{s.succeeded + s.failed + s.skipped} finished"
            )
        elif s.skipped:
            status += f" skipped={s.skipped}"
        if s.problem:
            status += f" - {s.problem}"
        if self._tty:
            if self._bar is None:
                self._bar = tqdm(total=s.total, file=self._stream, unit="item", leave=True)
            self._bar.total = s.total  # over S3, it grows as the listing goes on
            self._bar.n = done
            self._bar.set_postfix_str(status, refresh=False)
            self._bar.refresh()
            if done >= s.total and not s.listing:
                self._bar.close()
            return
        decile: object = int(10 * done / s.total) if s.total else 10
        if s.listing:  # the total is not known yet: a line per 10,000 items
            decile = ("listing", done // 10_000)
        if decile != self._last_decile:
            self._last_decile = decile
            line = tqdm.format_meter(
                done, s.total, time.monotonic() - self._started, unit="item", postfix=status
            )
            self._stream.write(line + "\n")
            self._stream.flush()
