"""Batches over S3: every object under a prefix is one item, run by any number of processes.

Items are sent by ``InputLocation`` (their bytes never pass through the client), claimed
through S3 conditional writes (:mod:`._claims`), and their results copied inside S3 to the
output prefix: ``<out><item>.out`` or ``<out><item>.error``. Each process writes the entries
it finished to ``<out>.manifest/<owner>.jsonl`` when it ends; the process that finds every
item finished writes them all to ``<out>manifest.jsonl`` (an item whose process died before
writing its part is read from its claim).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from ._batch import BatchSummary, _fatal, _NotSent
from ._claims import DONE, REJECTED, SENDING, SUBMITTED, Busy, Claim, ClaimBook
from ._client import AsyncInferenceClient
from ._errors import (
    ClientClosedError,
    InferenceFailedError,
    InferenceTimeoutError,
    InvocationError,
    ValidationError,
)
from ._handle import AsyncInferenceHandle
from ._map import map_inferences
from ._retry import call_with_retry, retrying
from ._s3 import Absent, Page, Unavailable
from ._validation import parse_s3_uri

__all__ = ["S3BatchPlan", "run_s3_batch"]

logger = logging.getLogger("sagemaker_async")

CLAIMS = ".claims/"
_CLAIMS_AHEAD = 16  # claims made ahead of map's reads
PARTS = ".manifest/"
MANIFEST = "manifest.jsonl"


def _prefix(uri: str, field: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of an ``s3://`` prefix; a prefix ends with ``/`` (one is added)."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ValidationError(field, f"{uri!r} is not an s3:// URI", "s3://bucket/prefix/")
    bucket, key = parse_s3_uri(uri, field=field, key=False)
    if key and not key.endswith("/"):
        key += "/"
    return bucket, key


@dataclass(frozen=True)
class S3BatchPlan:
    """The checked arguments of an S3 batch: where items come from and where results go."""

    source_bucket: str
    source_prefix: str
    out_bucket: str
    out_prefix: str
    lease: float

    @classmethod
    def of(
        cls, source: str, out: str, lease: float, *, names: tuple[str, str, str] | None = None
    ) -> S3BatchPlan:
        """Check the arguments (before any network call); ``names``: the fields' (as shown).

        Raises:
            ValidationError: naming the field, the problem and the rule.
        """
        source_name, out_name, lease_name = names or ("source", "out", "lease")
        source_bucket, source_prefix = _prefix(source, source_name)
        out_bucket, out_prefix = _prefix(out, out_name)
        if (
            isinstance(lease, bool)
            or not isinstance(lease, (int, float))
            or not math.isfinite(lease)
            or lease <= 0
        ):
            raise ValidationError(lease_name, f"{lease!r} is not a positive number", "seconds > 0")
        if (source_bucket, source_prefix) == (out_bucket, out_prefix):
            raise ValidationError(
                out_name,
                f"{out!r} is the source prefix itself",
                "another prefix, or one inside the source (such as s3://bucket/prefix/out/)",
            )
        return cls(source_bucket, source_prefix, out_bucket, out_prefix, float(lease))

    @property
    def out(self) -> str:
        """The output prefix, as an ``s3://`` URI."""
        return f"s3://{self.out_bucket}/{self.out_prefix}"

    def source_uri(self, item: str) -> str:
        """The input object of ``item``."""
        return f"s3://{self.source_bucket}/{self.source_prefix}{item}"

    def excluded(self, key: str) -> bool:
        """True for a source key that is not an item: a folder marker, or under ``out``."""
        return key.endswith("/") or (
            self.out_bucket == self.source_bucket and key.startswith(self.out_prefix)
        )


def _owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


async def run_s3_batch(
    client: AsyncInferenceClient,
    endpoint_name: str,
    source: str,
    out: str,
    *,
    lease: float = 300.0,
    content_type: str | None = None,
    accept: str | None = None,
    max_in_flight: int = 256,
    progress: Callable[[BatchSummary], None] | None = None,
    timeout: float | None = None,
    summary: BatchSummary | None = None,
) -> BatchSummary:
    """Run every object under the S3 prefix ``source`` through ``endpoint_name``.

    Any number of processes (on any machines) may run the same call at once: each item is
    claimed by one of them through a conditional write under ``<out>.claims/``, with a lease
    of ``lease`` seconds that its holder renews while it works. A lapsed lease (its process
    died) is taken over: the taker resumes the saved handle, or, when the claim says the item
    may have been sent without its handle being saved, sends it again with the same
    InferenceId (a WARNING; counted in ``summary.resubmitted``). The call returns when every
    item is finished, by this process or by others (counted in ``summary.skipped``), waiting
    for other processes' leases if it must; a rerun after everything finished sends nothing.

    Results are copied inside S3 to ``<out><item>.out``, failures to ``<out><item>.error``
    (the failure object, or the error message when there is none); ``<out>manifest.jsonl``
    has one entry per item once every item is finished. Submissions go through
    :meth:`AsyncInferenceClient.map` (``max_in_flight`` at most).

    Raises:
        ValidationError: a bad argument (before any network call).
    """
    plan = S3BatchPlan.of(source, out, lease)
    if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
        raise ValidationError(
            "max_in_flight", f"{max_in_flight!r} is not a positive int", "an int >= 1"
        )
    if timeout is not None and (not math.isfinite(timeout) or timeout <= 0):
        raise ValidationError("timeout", f"{timeout!r} is not a positive number", "seconds > 0")
    summary = summary if summary is not None else BatchSummary()
    await client.open()
    runner = _Run(client, endpoint_name, plan, content_type, accept, max_in_flight, summary)
    return await runner.run(progress, timeout)


class _Run:
    """One process's part of an S3 batch."""

    def __init__(
        self,
        client: AsyncInferenceClient,
        endpoint_name: str,
        plan: S3BatchPlan,
        content_type: str | None,
        accept: str | None,
        max_in_flight: int,
        summary: BatchSummary,
    ) -> None:
        self.client = client
        self.store = client._store
        self.clock = client._clock
        self.endpoint_name = endpoint_name
        self.plan = plan
        self.content_type = content_type
        self.accept = accept
        self.max_in_flight = max_in_flight
        self.summary = summary
        self.owner = _owner()
        self.book = ClaimBook(
            self.store,
            self.clock,
            f"s3://{plan.out_bucket}/{plan.out_prefix}{CLAIMS}",
            lease=plan.lease,
            owner=self.owner,
        )
        self.claims: dict[str, Claim] = {}  # by InferenceId: the items given to map
        self.entries: list[dict[str, Any]] = []  # finished by this process
        self.stopping = False
        self.pending = 0  # items listed and not yet counted
        self.report: Callable[[], None] = lambda: None

    async def run(
        self, progress: Callable[[BatchSummary], None] | None, timeout: float | None
    ) -> BatchSummary:
        summary = self.summary
        if progress is not None:
            self.report = lambda: progress(summary)
        started = self.clock.monotonic()
        renewer = asyncio.ensure_future(self.book.keep_renewed())
        work = asyncio.ensure_future(self._work())
        try:
            done, _ = await asyncio.wait({work}, timeout=timeout)
            if not done:
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                logger.error(
                    "%d item(s) still pending at the timeout, rerun to resume", self.pending
                )
            else:
                work.result()
        finally:
            work.cancel()
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            summary.unfinished += self.pending  # listed, neither finished nor refused
            self.pending = 0
            summary.listing = False
            await asyncio.shield(self._close())
            summary.wall_seconds = self.clock.monotonic() - started
        return summary

    async def _close(self) -> None:
        """Release what is still held, write this process's part, and the manifest if whole."""
        await self.book.release_all()
        if self.entries:
            part = f"{self.plan.out}{PARTS}{self.owner}.jsonl"
            try:
                await self.store.put(part, _jsonl(self.entries), content_type=None, deadline=None)
            except InvocationError as exc:
                logger.error("the manifest part %s could not be written: %s", part, exc)
        s = self.summary
        if s.total and s.succeeded + s.failed + s.skipped == s.total:
            try:
                await self._write_manifest()
            except InvocationError as exc:
                logger.error("%s%s could not be written: %s", self.plan.out, MANIFEST, exc)

    # -- listing -------------------------------------------------------------------------------
    async def _keys(self, bucket: str, prefix: str) -> AsyncIterator[str]:
        """Every key under ``prefix``, page by page (each read when the last one is used)."""
        token: str | None = None
        policy = retrying(
            self.client.retry,
            clock=self.clock,
            deadline=None,
            max_attempts=None,
            what=f"ListObjectsV2 s3://{bucket}/{prefix}",
            retry_if=lambda exc: isinstance(exc, Unavailable),
        )

        async def one_page() -> Page:
            return await self.store.list_page(bucket, prefix, token, recursive=True)

        while True:
            page = await call_with_retry(policy, one_page)
            for key in page.keys:
                yield key
            token = page.next_token
            if token is None:
                return

    async def _items(self) -> AsyncIterator[str]:
        plan = self.plan
        async for key in self._keys(plan.source_bucket, plan.source_prefix):
            if not plan.excluded(key):
                yield key[len(plan.source_prefix) :]

    # -- the work ------------------------------------------------------------------------------
    async def _inputs(self) -> AsyncIterator[dict[str, Any]]:
        """The items to send, claimed as map reads them; then those others held, as they lapse."""
        waiting: list[Busy] = []
        self.summary.listing = True
        ahead: collections.deque[asyncio.Future[dict[str, Any] | None]] = collections.deque()
        try:
            async for item in self._items():
                self.summary.total += 1
                self.pending += 1
                # Claims are made a few items ahead (each one is a round trip or two).
                ahead.append(asyncio.ensure_future(self._claimed(item, waiting)))
                while len(ahead) > _CLAIMS_AHEAD or (ahead and ahead[0].done()):
                    given = await ahead.popleft()
                    if given is not None:
                        yield given
                    if self.stopping:
                        return
            while ahead:
                given = await ahead.popleft()
                if given is not None:
                    yield given
                if self.stopping:
                    return
        finally:  # claims made and never given: held, and released at the close
            await asyncio.gather(*ahead, return_exceptions=True)
        self.summary.listing = False
        self.report()
        while waiting and not self.stopping:
            earliest = min(busy.expires for busy in waiting)
            await self.clock.sleep(max(0.0, earliest - self.clock.wall()) + 0.05)
            now = self.clock.wall()
            due = [busy for busy in waiting if busy.expires <= now]
            waiting = [busy for busy in waiting if busy.expires > now]
            # One claim found renewed says its owner lives (it renews all its claims at once):
            # its other items are read again at that claim's expiry, not now.
            alive: dict[str, float] = {}
            for busy in due:
                if busy.owner in alive:
                    waiting.append(Busy(busy.item, alive[busy.owner], busy.owner))
                    continue
                given = await self._claimed(busy.item, waiting, seen=True)
                if given is not None:
                    yield given
                elif waiting and waiting[-1].item == busy.item and waiting[-1].expires > now:
                    alive[waiting[-1].owner] = waiting[-1].expires
                if self.stopping:
                    return

    async def _claimed(
        self, item: str, waiting: list[Busy], *, seen: bool = False
    ) -> dict[str, Any] | None:
        """Claim ``item``: its input for map, or None (finished, or held by another: waiting)."""
        got = await self.book.acquire(item, str(uuid.uuid4()), seen=seen)
        if got is None:
            self._count("skipped")
            return None
        if isinstance(got, Busy):
            waiting.append(got)
            return None
        self.claims[got.inference_id] = got
        return {"input_location": self.plan.source_uri(item), "inference_id": got.inference_id}

    def _count(self, what: str) -> None:
        setattr(self.summary, what, getattr(self.summary, what) + 1)
        self.pending -= 1
        self.report()

    async def _submit(self, endpoint: str, **kwargs: Any) -> AsyncInferenceHandle:
        """One item's call: resume the handle its claim holds, else send it (saving its handle)."""
        claim = self.claims[kwargs["inference_id"]]
        if self.stopping:
            raise _NotSent()
        if claim.record.get("state") == SUBMITTED and claim.record.get("handle"):
            self.summary.resumed += 1
            return self.client.resume(claim.record["handle"])
        if claim.taken_over and claim.previous_state == SENDING:
            self.summary.resubmitted += 1
            logger.warning(
                "item %s: resubmitting with its InferenceId %s (the process that held it may "
                "have sent it: it may run twice)",
                claim.item,
                claim.inference_id,
            )
        if claim.record.get("state") != SENDING and not await self.book.update(
            claim, state=SENDING
        ):
            raise _NotSent()  # another process took it over: it is that one's now
        claim.sent = True
        handle = await self.client.invoke_endpoint_async(endpoint, **kwargs)
        try:
            await self.book.update(claim, state=SUBMITTED, handle=dict(handle.to_dict()))
        except InvocationError as exc:  # a taker would send it again, with a warning
            logger.warning(
                "item %s: its handle could not be saved in its claim: %s", claim.item, exc
            )
        return handle

    async def _work(self) -> None:
        outcomes = map_inferences(
            self._submit,
            self.endpoint_name,
            self._inputs(),
            max_in_flight=self.max_in_flight,
            clock=self.clock,
            content_type=self.content_type,
            accept=self.accept,
        )
        async with contextlib.aclosing(outcomes):
            async for outcome in outcomes:
                claim = self.claims.pop(outcome.input["inference_id"])
                if outcome.handle is not None:
                    await self._finish(claim, outcome.handle, outcome.error or outcome.result)
                else:
                    assert outcome.error is not None
                    await self._not_sent(claim, outcome.error)

    async def _not_sent(self, claim: Claim, error: BaseException) -> None:
        if claim.lost:
            self._count("skipped")  # the process that took it over runs it
            return
        maybe = isinstance(error, InvocationError) and error.possibly_submitted
        state = SENDING if maybe else REJECTED if claim.sent else claim.unsent_state
        with contextlib.suppress(InvocationError):
            await self.book.update(claim, release=True, state=state)
        self._count("not_submitted")
        if isinstance(error, _NotSent):
            return
        if maybe:
            logger.error("item %s may have been submitted: %s", claim.item, error)
        elif not self.stopping:
            logger.error("item %s was not submitted: %s", claim.item, error)
        if (
            not self.stopping
            and _fatal(error)
            and self.summary.succeeded + self.summary.failed == 0
        ):
            self.stopping = True
            self.summary.stopped = f"every item would fail: {error}"

    async def _finish(self, claim: Claim, handle: AsyncInferenceHandle, outcome: Any) -> None:
        """Copy what became of a sent item to ``out``, then mark its claim done."""
        self.summary.duplicates += max(0, handle.submit_attempts - 1)
        if isinstance(outcome, (InvocationError, ClientClosedError)) or (
            isinstance(outcome, InferenceTimeoutError) and not outcome.deadline_exceeded
        ):
            logger.error("item %s: waiting stopped, a rerun resumes it: %s", claim.item, outcome)
            with contextlib.suppress(InvocationError):
                await self.book.update(claim, release=True)
            self._count("unfinished")
            return
        if isinstance(outcome, BaseException) and not isinstance(
            outcome, (InferenceFailedError, InferenceTimeoutError)
        ):
            raise outcome
        if float(claim.record["expires"]) - self.clock.wall() < self.plan.lease / 4:
            # Late to renew (a slow process): make sure the item is still ours before writing.
            with contextlib.suppress(InvocationError):
                await self.book.update(claim)
        if claim.lost:
            self._count("skipped")  # the process that took it over finishes it
            return
        target = f"{self.plan.out}{claim.item}"
        entry: dict[str, Any] = {
            "input": self.plan.source_uri(claim.item),
            "inference_id": claim.inference_id,
            "output_location": handle.output_location,
            "failure_location": handle.failure_location,
            "submitted_at": handle.submitted_at.isoformat(),
        }
        try:
            if isinstance(outcome, BaseException):
                entry.update(status="failed", output=None, error=target + ".error")
                await self._save_failure(handle, outcome, target + ".error")
            else:
                entry.update(status="succeeded", output=target + ".out", error=None)
                await self.store.copy(handle.output_location, target + ".out")
        except InvocationError as exc:
            logger.error(
                "item %s: its outcome could not be saved, a rerun resumes it: %s", claim.item, exc
            )
            with contextlib.suppress(InvocationError):
                await self.book.update(claim, release=True)
            self._count("unfinished")
            return
        entry["finished_at"] = _iso(self.clock.wall())
        try:
            kept = await self.book.update(claim, state=DONE, entry=entry, release=True)
        except InvocationError as exc:
            logger.error("item %s: its claim could not be marked done: %s", claim.item, exc)
            self._count("unfinished")
            return
        if not kept:
            self._count("skipped")
            return
        self.entries.append(entry)
        self.summary.latencies.append(self.clock.wall() - handle.submitted_at.timestamp())
        self._count("failed" if entry["status"] == "failed" else "succeeded")

    async def _save_failure(
        self, handle: AsyncInferenceHandle, error: BaseException, target: str
    ) -> None:
        if isinstance(error, InferenceFailedError) and handle.failure_location:
            try:
                await self.store.copy(handle.failure_location, target)
                return
            except InvocationError as exc:
                if exc.code not in ("NoSuchKey", "404"):
                    raise
        await self.store.put(target, str(error).encode(), content_type="text/plain", deadline=None)

    # -- the manifest --------------------------------------------------------------------------
    async def _write_manifest(self) -> None:
        """``<out>manifest.jsonl``: the parts' entries, and those only a claim holds."""
        plan = self.plan
        entries: dict[str, dict[str, Any]] = {}
        source = f"s3://{plan.source_bucket}/{plan.source_prefix}"
        async for key in self._keys(plan.out_bucket, plan.out_prefix + PARTS):
            got = await self.store.read(f"s3://{plan.out_bucket}/{key}")
            if isinstance(got, Absent):
                continue
            for line in got.body.decode().splitlines():
                with contextlib.suppress(ValueError, KeyError):
                    entry = json.loads(line)
                    entries[entry["input"]] = entry
        claims = plan.out_prefix + CLAIMS
        async for key in self._keys(plan.out_bucket, claims):
            item = key[len(claims) :]
            if source + item in entries:
                continue
            found = await self.book.read(item)
            if found is not None and found[0].get("state") == DONE and found[0].get("entry"):
                entries[source + item] = found[0]["entry"]
        ordered = [entries[name] for name in sorted(entries)]
        await self.store.put(plan.out + MANIFEST, _jsonl(ordered), content_type=None, deadline=None)


def _jsonl(entries: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(entry) + "\n" for entry in entries).encode()


def _iso(ts: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()
