"""Batches over S3: every object under a prefix is one item, run by any number of processes.

Items are sent by ``InputLocation`` (their bytes never pass through the client), claimed
through S3 conditional writes (:mod:`._claims`), and their results copied inside S3 to the
output prefix: ``<out><item>.out`` or ``<out><item>.error``. An item is finished when one of
these exists: processes learn it by listing ``out``, never by reading per item.

Each process walks the source listing page by page. It claims first its share of a page (the
items whose hash falls to it among the live processes' heartbeats), skipping those a listing
of the claims shows taken; two pages later, what is still unclaimed of the page (a share of a
process that is gone or behind). Then it sweeps: the source and ``out`` listings merged show
the items without a result, which it takes over when their holder's heartbeat lapsed, or
waits for.

Each process writes the entries it finished to ``<out>.manifest/<owner>-<n>.jsonl`` in parts
(every 1,000 entries, and at each heartbeat), keeping none in memory after that. The first
process to find every item finished wins ``<out>.manifest/writer`` (a conditional write naming
it) and streams the parts, one at a time, into ``<out>manifest.jsonl`` (a multipart upload);
the others wait for it, and take the marker over if its writer's heartbeat lapses. An item
finished by a process that died before writing its part is read from its claim.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import os
import random
import socket
import uuid
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._batch import BatchSummary, _fatal, _NotSent
from ._claims import CLAIMS, OWNERS, REJECTED, SENDING, SUBMITTED, Busy, Claim, ClaimBook
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

if TYPE_CHECKING:
    import tenacity

__all__ = ["S3BatchPlan", "run_s3_batch"]

logger = logging.getLogger("sagemaker_async")

PARTS = ".manifest/"
MANIFEST = "manifest.jsonl"
WRITER = PARTS + "writer"  # who writes the manifest (not a part: parts end with .jsonl)
_KNOWN = 20_000  # inputs held at once while looking for the entries only claims hold
_PART_ENTRIES = 1000  # entries of a manifest part, at most
_LAG = 2  # pages walked before the unclaimed rest of a page is claimed
_MET = 4  # claims found taken in a share before the live processes are read again
_UNFINISHED = 10_000  # items a sweep gives back at most (the rest: at the next sweep)
_LATENCIES = 10_000  # latencies kept for the percentiles, at most (a uniform sample)
_OWN = (CLAIMS, PARTS, OWNERS)  # the batch's own folders under out


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
    claimed by one of them through a conditional write under ``<out>.claims/``, held while
    its process's heartbeat (``<out>.owners/<owner>``, renewed every quarter of ``lease``
    seconds) is fresh. A lapsed claim (its process died) is taken over: the taker resumes the
    saved handle, or, when the claim says the item may have been sent without its handle
    being saved, sends it again with the same InferenceId (a WARNING; counted in
    ``summary.resubmitted``). The call returns when every item is finished, by this process
    or by others (counted in ``summary.skipped``), waiting for other processes' leases if it
    must; a rerun after everything finished sends nothing.

    Results are copied inside S3 to ``<out><item>.out``, failures to ``<out><item>.error``
    (the failure object, or the error message when there is none); ``<out>manifest.jsonl``
    has one entry per item once every item is finished. When the run stops early (every item
    would fail), the rest of the listing is counted in ``summary.not_submitted``; when it is
    cancelled or times out, in ``summary.unfinished``. Submissions go through
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


class _Taken(Exception):
    """Another process claimed the item first: it is that one's (learnt again by the sweep)."""


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
        self.book = ClaimBook(self.store, self.clock, plan.out, lease=plan.lease, owner=self.owner)
        self.items: dict[str, str] = {}  # by InferenceId: the items given to map
        self.claims: dict[str, Claim] = {}  # by InferenceId: those claimed
        self.in_flight: set[str] = set()  # the items given to map, not yet out of it
        self.given_up: set[str] = set()  # counted not submitted or unfinished here
        self.waiting: dict[str, str] = {}  # item: the live owner that held it at the last sweep
        self.seen: dict[str, float] = {}  # item: when a sweep first found it claimed, unfinished
        self.entries: list[str] = []  # finished here, not yet in a manifest part (JSON lines)
        self.parts = 0
        self.owners = [self.owner]  # the live processes (as their heartbeats say), sorted
        self.stopping = False
        self.taken = 0  # items found claimed by another process at the first write
        self.pending = 0  # items listed and not yet counted
        self.report: Callable[[], None] = lambda: None

    async def run(
        self, progress: Callable[[BatchSummary], None] | None, timeout: float | None
    ) -> BatchSummary:
        summary = self.summary
        if progress is not None:
            self.report = lambda: progress(summary)
        started = self.clock.monotonic()
        complete = False
        await self.book.beat()
        self.owners = await self.book.owners()
        beater = asyncio.ensure_future(self._keep_beating())
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
                complete = not self.stopping
        finally:
            work.cancel()
            beater.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beater
            # Listed and not counted: finished by others after a whole run; else never sent
            # (a stop) or not known to be finished (a timeout, a cancel).
            if complete:
                summary.skipped += self.pending
            elif self.stopping:
                summary.not_submitted += self.pending
            else:
                summary.unfinished += self.pending
            self.pending = 0
            summary.listing = False
            await asyncio.shield(self._close(complete))
            summary.wall_seconds = self.clock.monotonic() - started
            self.report()
        return summary

    async def _keep_beating(self) -> None:
        """Every quarter of a lease: the heartbeat, the live processes, a manifest part."""
        while True:
            await self.clock.sleep(self.plan.lease / 4)
            try:
                await self.book.beat()
                self.owners = await self.book.owners()
            except InvocationError as exc:
                logger.warning("the heartbeat could not be written: %s", exc)
            await self._flush()

    async def _close(self, complete: bool) -> None:
        """Write this process's last part, the manifest if whole, and give up what is held.

        The heartbeat goes on while the manifest is written: it holds the writer's marker.
        """
        await self._flush()
        s = self.summary
        if complete and s.total and s.succeeded + s.failed + s.skipped == s.total:
            beating = asyncio.ensure_future(self.book.keep_beating())
            try:
                await self._manifest()
            except InvocationError as exc:
                logger.error("%s%s could not be written: %s", self.plan.out, MANIFEST, exc)
            finally:
                beating.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beating
        await self.book.close()

    async def _flush(self) -> None:
        """Write the entries finished since the last part as a new part (none kept after)."""
        if not self.entries:
            return
        lines, self.entries = self.entries, []
        self.parts += 1
        part = f"{self.plan.out}{PARTS}{self.owner}-{self.parts:06d}.jsonl"
        try:
            await self.store.put(part, "".join(lines).encode(), content_type=None, deadline=None)
        except InvocationError as exc:
            logger.error("the manifest part %s could not be written: %s", part, exc)
            self.entries[:0] = lines  # tried again with the next part

    # -- listing -------------------------------------------------------------------------------
    async def _keys(
        self, bucket: str, prefix: str, start_after: str | None = None
    ) -> AsyncGenerator[str, None]:
        """Every key under ``prefix`` (after ``start_after``), page by page, read as used."""
        async for page in self._pages(bucket, prefix, start_after):
            for key in page:
                yield key

    def _until_available(self, what: str) -> tenacity.AsyncRetrying:
        """The policy of the batch's own reads: retried, with no end, while S3 is unavailable."""
        return retrying(
            self.client.retry,
            clock=self.clock,
            deadline=None,
            max_attempts=None,
            what=what,
            retry_if=lambda exc: isinstance(exc, Unavailable),
        )

    async def _pages(
        self, bucket: str, prefix: str, start_after: str | None = None
    ) -> AsyncIterator[list[str]]:
        token: str | None = None
        policy = self._until_available(f"ListObjectsV2 s3://{bucket}/{prefix}")

        async def one_page() -> Page:
            return await self.store.list_page(
                bucket, prefix, token, recursive=True, start_after=start_after
            )

        while True:
            page = await call_with_retry(policy, one_page)
            yield page.keys
            token = page.next_token
            if token is None:
                return

    async def _item_pages(self, after: str | None = None) -> AsyncIterator[list[str]]:
        """The items of the source, a listing page at a time (after item ``after``)."""
        plan = self.plan
        start = plan.source_prefix + after if after is not None else None
        cut = len(plan.source_prefix)
        async for keys in self._pages(plan.source_bucket, plan.source_prefix, start):
            yield [key[cut:] for key in keys if not plan.excluded(key)]

    async def _claimed_in(self, after: str | None, last: str) -> set[str]:
        """The items after ``after`` up to ``last`` that have a claim (one listing or so)."""
        prefix = self.plan.out_prefix + CLAIMS
        start = prefix + after if after is not None else None
        found: set[str] = set()
        async for key in self._keys(self.plan.out_bucket, prefix, start):
            item = key[len(prefix) :]
            if item > last:
                break
            found.add(item)
        return found

    async def _sweep(self, after: str | None) -> tuple[list[str], str | None]:
        """The items after ``after`` that have no result yet (up to 10,000), and where to go on.

        The source and ``out`` listings are merged: the result of an item sorts after it, and
        an item is known to have none once the ``out`` listing passed ``<item>.out``.
        """
        plan = self.plan
        out = self._keys(
            plan.out_bucket, plan.out_prefix, plan.out_prefix + after if after else None
        )
        cut = len(plan.out_prefix)
        seen: set[str] = set()  # items with a result, listed ahead of the source
        position = ""  # the last key of ``out`` read, without the prefix
        exhausted = False
        unfinished: list[str] = []
        before = after  # the last item before the first unfinished one
        async with contextlib.aclosing(out):
            async for page in self._item_pages(after):
                for item in page:
                    last = item + ".out"
                    while not exhausted and position <= last:
                        try:
                            position = (await anext(out))[cut:]
                        except StopAsyncIteration:
                            exhausted = True
                            break
                        if position.startswith(_OWN):
                            continue
                        if position.endswith(".out"):
                            seen.add(position[:-4])
                        elif position.endswith(".error"):
                            seen.add(position[:-6])
                    if item in seen:
                        seen.discard(item)
                        if not unfinished:
                            before = item
                        continue
                    unfinished.append(item)
                    if len(unfinished) >= _UNFINISHED:
                        return unfinished, before
                if len(seen) > _PART_ENTRIES:  # results of no item (or out of order): forget
                    seen = {name for name in seen if name > page[-1]} if page else seen
        return unfinished, before

    # -- the work ------------------------------------------------------------------------------
    def _offer(self, item: str, claim: Claim | None = None) -> dict[str, Any]:
        inference_id = claim.inference_id if claim is not None else str(uuid.uuid4())
        self.items[inference_id] = item
        if claim is not None:
            self.claims[inference_id] = claim
        self.in_flight.add(item)
        return {"input_location": self.plan.source_uri(item), "inference_id": inference_id}

    def _mine(self, page: list[str]) -> tuple[list[str], list[str]]:
        """``page`` split in this process's share and the others' (by hash, live processes)."""
        owners = self.owners
        if len(owners) < 2 or self.owner not in owners:
            return page, []
        rank, count = owners.index(self.owner), len(owners)
        mine: list[str] = []
        others: list[str] = []
        for item in page:
            (mine if zlib.crc32(item.encode()) % count == rank else others).append(item)
        return mine, others

    async def _inputs(self) -> AsyncIterator[dict[str, Any]]:
        """The items to send: this process's share, the unclaimed rest, then the sweeps'."""
        summary = self.summary
        summary.listing = True
        later: collections.deque[tuple[str | None, str, list[str]]] = collections.deque()
        after: str | None = None
        async for page in self._item_pages():
            summary.total += len(page)
            self.pending += len(page)
            if not page or self.stopping:  # after a stop, items are only counted
                continue
            claimed = await self._claimed_in(after, page[-1])
            mine, others = self._mine([item for item in page if item not in claimed])
            random.shuffle(mine)  # processes that do not know of each other yet meet less
            met, i = self.taken, 0
            while i < len(mine) and not self.stopping:
                if self.taken - met >= _MET:  # others claim this share: who is live now?
                    self.owners = await self.book.owners()
                    claimed = await self._claimed_in(after, page[-1])
                    mine, more = self._mine([item for item in mine[i:] if item not in claimed])
                    others += more
                    met, i = self.taken, 0
                    continue
                yield self._offer(mine[i])
                i += 1
            later.append((after, page[-1], others))
            after = page[-1]
            while len(later) > _LAG and not self.stopping:
                async for given in self._unclaimed(*later.popleft()):
                    yield given
        while later and not self.stopping:
            async for given in self._unclaimed(*later.popleft()):
                yield given
        summary.listing = False
        self.report()
        if not self.stopping:
            async for given in self._rest():
                yield given

    async def _unclaimed(
        self, after: str | None, last: str, items: list[str]
    ) -> AsyncIterator[dict[str, Any]]:
        """Those of ``items`` (a page's others' share) now in this one's share and unclaimed.

        The shares are those of the processes live now: the share of a process that is gone
        is split among the others. What is left (a live process behind) is the sweeps'.
        """
        if not items:
            return
        rest, _ = self._mine(items)
        if not rest:
            return
        claimed = await self._claimed_in(after, last)
        rest = [item for item in rest if item not in claimed]
        random.shuffle(rest)
        for item in rest:
            yield self._offer(item)
            if self.stopping:
                return

    async def _rest(self) -> AsyncIterator[dict[str, Any]]:
        """Sweep until every item is finished: take over lapsed claims, wait for live ones.

        The sweeps back off (a second, doubling up to half a lease) while nothing is taken:
        each lists the source and ``out`` from the first unfinished item on.
        """
        after: str | None = None
        first = pause = min(1.0, self.plan.lease / 4)
        grace = min(2.0, self.plan.lease / 4)
        while not self.stopping:
            before = after
            unfinished, after = await self._sweep(after)
            waiting = {item: self.waiting[item] for item in unfinished if item in self.waiting}
            self.waiting = waiting
            todo = []
            for item in unfinished:
                if item in self.in_flight or item in self.given_up:
                    continue  # this process's own, under way; or one it gave up
                holder = waiting.get(item)
                if holder is None or not await self.book.alive(holder):
                    todo.append(item)  # else held by a live process: not read again
            if not todo and not waiting:
                return  # what is left is this process's own, under way
            claimed = await self._claimed_in(before, todo[-1]) if todo else set()
            now = self.clock.wall()
            self.seen = {item: self.seen.get(item, now) for item in todo if item in claimed}
            took = False
            for item in todo:
                if now - self.seen.get(item, -math.inf) < grace:
                    continue  # claimed: likely under way, finished before long: not read yet
                known = await self.book.read(item) if item in claimed else None
                got = await self.book.acquire(item, str(uuid.uuid4()), known=known)
                if isinstance(got, Busy):
                    waiting[item] = got.owner
                    continue
                waiting.pop(item, None)
                if got.taken_over and await self._has_result(item):
                    self.book.drop(got)  # finished since the sweep listed it
                    continue
                took = True
                yield self._offer(item, got)
                if self.stopping:
                    return
            pause = first if took or self.seen else min(pause * 2, max(first, self.plan.lease / 2))
            await self.clock.sleep(pause)

    async def _has_result(self, item: str) -> bool:
        """True when ``item`` has its ``.out`` or ``.error`` (one listing, no body read)."""
        prefix = f"{self.plan.out_prefix}{item}."
        page = await self.store.list_page(self.plan.out_bucket, prefix, None, recursive=True)
        return bool({prefix + "out", prefix + "error"} & set(page.keys))

    def _count(self, what: str, item: str | None = None) -> None:
        setattr(self.summary, what, getattr(self.summary, what) + 1)
        self.pending -= 1
        if item is not None:
            self.given_up.add(item)
        self.report()

    async def _submit(self, endpoint: str, **kwargs: Any) -> AsyncInferenceHandle:
        """One item's call: claim it, resume the handle its claim holds, else send it."""
        inference_id = kwargs["inference_id"]
        if self.stopping:
            raise _NotSent()
        claim = self.claims.get(inference_id)
        if claim is None:
            got = await self.book.acquire(self.items[inference_id], inference_id, takeover=False)
            if isinstance(got, Busy):
                raise _Taken()
            claim = self.claims[inference_id] = got
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
                inference_id = outcome.input["inference_id"]
                item = self.items.pop(inference_id)
                self.in_flight.discard(item)
                claim = self.claims.pop(inference_id, None)
                if claim is None:  # taken by another first, or not claimed before a stop
                    if isinstance(outcome.error, _Taken):
                        self.taken += 1
                    else:
                        self._count("not_submitted", item)
                elif outcome.handle is not None:
                    await self._finish(claim, outcome.handle, outcome.error or outcome.result)
                else:
                    assert outcome.error is not None
                    await self._not_sent(claim, outcome.error)

    async def _not_sent(self, claim: Claim, error: BaseException) -> None:
        if claim.lost:
            return  # the process that took it over runs it: counted by the sweeps (pending)
        maybe = isinstance(error, InvocationError) and error.possibly_submitted
        state = SENDING if maybe else REJECTED if claim.sent else claim.unsent_state
        with contextlib.suppress(InvocationError):
            await self.book.update(claim, release=True, state=state)
        self._count("not_submitted", claim.item)
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
        """Copy what became of a sent item to ``out`` (which marks it finished)."""
        self.summary.duplicates += max(0, handle.submit_attempts - 1)
        if isinstance(outcome, (InvocationError, ClientClosedError)) or (
            isinstance(outcome, InferenceTimeoutError) and not outcome.deadline_exceeded
        ):
            logger.error("item %s: waiting stopped, a rerun resumes it: %s", claim.item, outcome)
            with contextlib.suppress(InvocationError):
                await self.book.update(claim, release=True)
            self._count("unfinished", claim.item)
            return
        if isinstance(outcome, BaseException) and not isinstance(
            outcome, (InferenceFailedError, InferenceTimeoutError)
        ):
            raise outcome
        if not self.book.live():
            # Late to beat (a stalled process): make sure the item is still ours first.
            with contextlib.suppress(InvocationError):
                await self.book.beat()
        if claim.lost or not self.book.live(0.0):
            # Another process took it over, or may: it stays pending, for the sweeps to
            # count as finished by another, or to take back (it is never counted twice).
            self.book.drop(claim)
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
            self._count("unfinished", claim.item)
            return
        self.book.drop(claim)
        entry["finished_at"] = _iso(self.clock.wall())
        self.entries.append(json.dumps(entry) + "\n")
        if len(self.entries) >= _PART_ENTRIES:
            await self._flush()
        self._latency(self.clock.wall() - handle.submitted_at.timestamp())
        self._count("failed" if entry["status"] == "failed" else "succeeded")

    def _latency(self, seconds: float) -> None:
        """Keep a uniform sample of at most 10,000 latencies (reservoir): memory stays flat."""
        kept = self.summary.latencies
        seen = self.summary.succeeded + self.summary.failed + 1
        if len(kept) < _LATENCIES:
            kept.append(seconds)
        elif (at := random.randrange(seen)) < _LATENCIES:
            kept[at] = seconds

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
    async def _manifest(self) -> None:
        """Write ``<out>manifest.jsonl`` unless another process does (or did) it.

        The writer holds ``<out>.manifest/writer`` (``state`` writing, then written, with the
        number of items): won with ``If-None-Match: *``, taken over with ``If-Match`` when its
        owner's heartbeat lapsed (it died writing), as claims are. A process that finds it
        written for as many items does nothing (a rerun after everything finished); one that
        finds a live writer waits for it.
        """
        uri = self.plan.out + WRITER
        total = self.summary.total
        pause = min(1.0, self.plan.lease / 4)
        token, told = "", False
        while True:
            found = await self.book.read_json(uri)
            etag: str | None = None
            if found is not None and token and found[0].get("token") == token:
                etag = found[1]  # our own write, answered 412 on a retry
            elif found is not None:
                existing = found[0]
                holder = str(existing.get("owner", ""))
                if existing.get("state") == "written" and existing.get("total") == total:
                    logger.debug("%s%s is written already", self.plan.out, MANIFEST)
                    return
                if existing.get("state") == "writing" and await self.book.alive(holder):
                    if not told:
                        logger.debug("%s writes %s%s: waiting", holder, self.plan.out, MANIFEST)
                        told = True
                    await self.clock.sleep(pause)
                    continue
            if etag is None:
                token = uuid.uuid4().hex
                body = {"owner": self.owner, "state": "writing", "total": total, "token": token}
                etag = await self.store.put_if(
                    uri, json.dumps(body).encode(), if_match=found[1] if found else None
                )
                if etag is None:
                    continue  # another won (or ours answered 412): read again
            await self._write_manifest()
            body = {"owner": self.owner, "state": "written", "total": total, "token": token}
            await self.store.put_if(uri, json.dumps(body).encode(), if_match=etag)
            return

    async def _part_bodies(self) -> AsyncIterator[bytes]:
        """The manifest parts, read one at a time (each ends with a newline)."""
        plan = self.plan
        policy = self._until_available(f"GetObject {plan.out}{PARTS}")
        async for key in self._keys(plan.out_bucket, plan.out_prefix + PARTS):
            if not key.endswith(".jsonl"):
                continue
            uri = f"s3://{plan.out_bucket}/{key}"
            got = await call_with_retry(policy, lambda uri=uri: self.store.read(uri))  # type: ignore[misc]
            if not isinstance(got, Absent):
                yield got.body if got.body.endswith(b"\n") else got.body + b"\n"

    async def _write_manifest(self) -> None:
        """``<out>manifest.jsonl``: the parts, then the entries only a claim holds.

        Streamed: one part in memory at a time, a multipart upload once over 5 MiB.
        """
        written = 0

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal written
            async for body in self._part_bodies():
                written += body.count(b"\n")
                yield body
            if written < self.summary.total:
                async for lines in self._entries_of_claims():
                    yield lines

        await self.store.put_streamed(self.plan.out + MANIFEST, chunks())

    async def _entries_of_claims(self) -> AsyncIterator[bytes]:
        """Entries of the items finished by a process that died before writing them in a part.

        Which items no part holds is learnt without holding every input: the inputs are split
        by hash into ``ceil(total / 20,000)`` shares; for each share, the parts are read again
        keeping only that share's inputs (about 20,000 at most), then the source is listed and
        the share's items not found are read from their claims. Memory stays bounded whatever
        the number of items, for one more reading of the parts and one listing per share: this
        runs only when a process died with entries not yet in a part, so seldom. (Merging
        sorted listings, as the sweeps do, does not apply: parts are in finishing order.)
        """
        plan = self.plan
        shares = max(1, math.ceil(self.summary.total / _KNOWN))

        def share_of(uri: str) -> int:
            return zlib.crc32(uri.encode()) % shares

        for share in range(shares):
            known: set[str] = set()
            async for body in self._part_bodies():
                for line in body.splitlines():
                    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                        uri = json.loads(line)["input"]
                        if share_of(uri) == share:
                            known.add(uri)
            async for page in self._item_pages():
                lines: list[str] = []
                for item in page:
                    uri = plan.source_uri(item)
                    if share_of(uri) != share or uri in known:
                        continue
                    entry = await self._entry_of_claim(item)
                    if entry is not None:
                        lines.append(json.dumps(entry) + "\n")
                if lines:
                    yield "".join(lines).encode()

    async def _entry_of_claim(self, item: str) -> dict[str, Any] | None:
        plan = self.plan
        found = await self.book.read(item)
        handle = found[0].get("handle") if found is not None else None
        if found is None or not isinstance(handle, dict):
            return None
        target = f"{plan.out}{item}"
        failed = not isinstance(await self.store.read(target + ".error"), Absent)
        return {
            "input": plan.source_uri(item),
            "inference_id": found[0].get("inference_id"),
            "output_location": handle.get("output_location"),
            "failure_location": handle.get("failure_location"),
            "submitted_at": handle.get("submitted_at"),
            "status": "failed" if failed else "succeeded",
            "output": None if failed else target + ".out",
            "error": target + ".error" if failed else None,
            "finished_at": None,
        }


def _iso(ts: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()
