"""CompletionEngine: one per client; watches every pending inference with shared sources.

A handle asks :meth:`CompletionEngine.watch` for a :class:`~._records.Watch` (it is the
watch's listener: told of the outcome, or of the client's close), and gives it back with
:meth:`CompletionEngine.release` when nobody waits any more. In between, the engine:

- files the watch's output and failure locations under their S3 directories;
- lets one source serve each directory (per-location polling or listing), chosen by the cost
  model and re-chosen as the directory changes; sources that see whole inferences
  (notifications, :meth:`listen`) see every watch too, and S3 is then watched at the slow pace
  of the safety net;
- resolves what a source reports (:meth:`report`): the one GET when the source has no body,
  then ``InferenceResult`` or ``InferenceFailedError``, the same for every source;
- enforces the deadline alone, whatever any source is doing: at the watch's deadline a job on
  the scheduler's deadline lane (own slots, no request budget) looks at both locations once
  more, for at most ``_LAST_LOOK_LIMIT``, then times the watch out;
- tells the client's observer each outcome, and which source found it.

The engine keeps no source's state: each source keeps its own (see ``_polling.py``,
``_listing.py``, ``_notifications.py``). Everything runs as jobs of the one scheduler.

A million watches may be pending at once. Per watch the engine keeps the watch itself (which
is also its entry in the deadline lane) and one dict entry per location in its directory,
keyed by the target's own location string; nothing else. Work that grows with the number
pending (closing, compacting the deadline lane) is done in slices that let the loop run.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from .._budget import RequestBudget
from .._clock import Clock, Timer
from .._config import CompletionConfig, PollingConfig, RetryConfig
from .._errors import (
    ClientClosedError,
    InferenceFailedError,
    InferenceTimeoutError,
    InvocationError,
)
from .._observe import Observer
from .._result import InferenceResult, WatchTarget
from .._retry import retry_delay
from .._s3 import Absent, ObjectStore, S3Object, Unavailable
from .._validation import parse_s3_uri
from ._listing import ListingSource
from ._polling import PollingSource
from ._records import (
    FAILURE,
    LIST,
    OUTPUT,
    POLL,
    Completion,
    Directory,
    Key,
    Kind,
    Listener,
    Mode,
    Watch,
)
from ._scheduler import Scheduler
from ._strategy import choose, crowded

__all__ = ["NO_CONTEXT", "CompletionEngine", "CompletionSource", "InferenceSource"]

logger = logging.getLogger("sagemaker_async")

#: The last look at the deadline gets this long for both locations (read at once): a handle
#: ends within this of its deadline whatever S3 does (stalls, SlowDown, a trickle).
_LAST_LOOK_LIMIT = 1.0
# Deadline entries of ended watches are dropped from the lane once there are this many (and
# more than watches under way): each compaction is one pass over the lane, in slices.
_PRUNE_AFTER = 1024
# Watches told of the client's close per turn of the event loop (each wakes its waiters,
# whose tasks then run in the next turn: up to 200 us each, an exception raised through them).
_CLOSE_SLICE = 250
# A directory whose listing kept failing is polled for this many max_delays before listing again.
_UNLISTABLE_FOR = 4

#: For callbacks that read no context variable: one shared empty context instead of a copy per
#: pending handle (100,000 copies are 100,000 more objects for the garbage collector to scan).
NO_CONTEXT = contextvars.Context()


class CompletionSource(Protocol):
    """A long-lived way of finding results that serves many keys at once.

    A source keeps its own state per key; the engine tells it which keys to cover. It reports
    what it finds to the engine's ``report`` (and failures for good to ``fail``).
    """

    name: str

    def watch(self, key: Key, *, spread: float = 0.0) -> None:
        """Start covering ``key`` (``spread``: it was covered by another source until now)."""

    def unwatch(self, key: Key) -> None:
        """Stop covering ``key``."""


class InferenceSource(CompletionSource, Protocol):
    """A source that hears of whole inferences (notifications): it sees every watch's output key.

    It also learns which inference ids are this client's, and how each watch ended.
    """

    def start(self, scheduler: Scheduler) -> None:
        """Start its services (owned by ``scheduler``)."""

    async def aclose(self) -> None:
        """Stop, tidying what it holds."""

    def expect(self, inference_id: str, deadline: float) -> None:
        """``inference_id`` is this client's until wall time ``deadline``."""

    def forget(self, inference_id: str) -> None:
        """The invoke of ``inference_id`` never reached SageMaker."""

    def ended(self, watch: Watch, *, settled: bool) -> None:
        """``watch`` ended: with its outcome (``settled``), or nobody waits any more."""

    def safety_polling(self, target: WatchTarget, polling: PollingConfig) -> PollingConfig:
        """How S3 is watched for ``target`` while this source hears of it (a safety net)."""

    def counts(self) -> dict[str, int]:
        """Its messages by how they were sorted (``ClientStats.notifications``)."""


def _split(uri: str) -> tuple[str, str, str]:
    """``s3://bucket/dir/name`` -> ``(bucket, "dir/", "dir/name")``: its directory and key."""
    bucket, key = parse_s3_uri(uri)
    return bucket, key[: key.rfind("/") + 1], key


def _canonical(uri: str, bucket: str, key: str) -> str:
    """``uri`` as ``s3://bucket/key`` (the form the engine files locations under)."""
    return uri if uri.startswith("s3://") else f"s3://{bucket}/{key}"


def _locations(target: WatchTarget) -> list[tuple[Kind, str]]:
    """The inference's output location, and its failure location when the endpoint has one."""
    locations = [(OUTPUT, target.output_location)]
    if target.failure_location is not None:
        locations.append((FAILURE, target.failure_location))
    return locations


class CompletionEngine:
    """Finds the outcome of every watched inference of one client."""

    def __init__(
        self,
        store: ObjectStore,
        *,
        config: CompletionConfig,
        retry: RetryConfig,
        clock: Clock,
        budget: RequestBudget,
        concurrency: int,
        rng: random.Random | None = None,
        observer: Observer | None = None,
    ) -> None:
        self._store = store
        self._observer = observer or Observer()
        self._config = config
        self._clock = clock
        self.budget = budget
        self._retry = retry
        self.scheduler = Scheduler(clock, budget, concurrency, expire=self._expire)
        self._watching = 0  # watches under way
        # Watches under way whose locations are not filed now (the engine reads one), by
        # output location; every other live watch is found through its directory.
        self._reading: dict[str, Watch] = {}
        self._moot_deadlines = 0  # deadline entries of ended watches still in the lane
        self._dirs: dict[tuple[str, str], Directory] = {}
        self._unlistable: set[str] = set()  # buckets where ListObjectsV2 was denied
        self._closed = False
        self.stats: Counter[str] = Counter()
        self._rng = rng or random.Random()
        self._heard: list[InferenceSource] = []  # notifications
        self._polling = PollingSource(
            self.scheduler, store, clock, report=self.report, fail=self._fail, rng=self._rng
        )
        self._listing = ListingSource(
            self.scheduler,
            store,
            clock,
            list_cost=config.list_cost,
            report=self.report,
            crowded=self._crowded,
            denied=self._denied,
            failing=self._failing,
            swept=self._swept,
        )

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the scheduler (on the running loop)."""
        self.scheduler.start()

    def listen(self, source: InferenceSource) -> None:
        """Take notifications from ``source`` (started here); S3 becomes the safety net."""
        self._heard.append(source)
        source.start(self.scheduler)
        # A source that starts late (notifications="auto") hears of the watches under way.
        for directory in list(self._dirs.values()):
            for location, watch in list(directory.keys.items()):
                output = watch.output_dir
                if watch.done or output is None or watch.target.output_location != location:
                    continue  # (a watch is filed under its failure location too)
                source.watch(Key(watch, OUTPUT, output, location[len(output.root) :]))

    async def aclose(self) -> None:
        """Stop every job; waiters get :class:`ClientClosedError` (their handles stay pending).

        The watches are told in slices of ``_CLOSE_SLICE``, the loop running in between (each
        wakes its waiters): a million waiting tasks are not all woken in one turn of the loop.
        """
        self._closed = True
        await self.scheduler.aclose()
        for source in self._heard:
            await source.aclose()
        # Nothing files or unfiles a watch any more (release() and report() see _closed), so
        # the directories are read as they are, without a copy of a million entries.
        dirs, self._dirs = list(self._dirs.values()), {}
        reading, self._reading = self._reading, {}
        told = seen = 0
        for watches in (reading.values(), *(d.keys.values() for d in dirs)):
            for watch in watches:
                seen += 1
                if seen % (10 * _CLOSE_SLICE) == 0:
                    await asyncio.sleep(0)  # (a million skipped below are 100 ms too)
                if watch.done:
                    continue  # (a watch is filed under both its locations)
                watch.done = True
                watch.output_dir = None
                for listener in watch.take_listeners():
                    listener._on_closed(watch)
                told += 1
                if told % _CLOSE_SLICE == 0:
                    await asyncio.sleep(0)
        self._watching = 0
        for directory in dirs:  # freeing a million watches at once holds the loop too
            for _ in directory.keys.clear_by_shard():
                await asyncio.sleep(0)

    @property
    def idle(self) -> bool:
        """True when nothing of the engine runs or is ready to run (it waits for the clock)."""
        return self.scheduler.idle

    @property
    def watching(self) -> int:
        """How many inferences are being watched."""
        return self._watching

    def notification_counts(self) -> dict[str, int]:
        """The notification sources' messages by how they were sorted (see ``ClientStats``)."""
        counts: Counter[str] = Counter()
        for source in self._heard:
            counts.update(source.counts())
        return dict(counts)

    def modes(self) -> dict[str, str]:
        """Each watched directory (``s3://bucket/prefix``) and how it is watched now."""
        return {f"s3://{d.bucket}/{d.prefix}": d.mode.value for d in self._dirs.values()}

    # -- the handle's interface -------------------------------------------------------------
    def watch(
        self,
        listener: Listener,
        target: WatchTarget,
        polling: PollingConfig,
        *,
        submitted: float,
        deadline: float,
    ) -> Watch:
        """Start watching ``target`` for ``listener`` (or join the watch under way for it).

        ``submitted`` and ``deadline`` are times of the client's monotonic clock. The
        listener is told of the outcome soon after it is known (from the event loop), or of
        the client's close.
        """
        if self._closed:
            raise ClientClosedError("the AsyncInferenceClient is closed; create a new one")
        existing = self.find(target.output_location)
        if existing is not None:
            existing.add(listener)
            return existing
        for source in self._heard:
            polling = source.safety_polling(target, polling)
        watch = Watch(target, polling, listener, submitted=submitted, deadline=deadline)
        self._watching += 1
        self.scheduler.deadline(watch)
        self._file(watch)
        output = watch.output_dir
        if self._heard and output is not None:
            key = Key(watch, OUTPUT, output, target.output_location[len(output.root) :])
            for source in self._heard:
                source.watch(key)
        return watch

    def expect(self, inference_id: str, deadline: float) -> None:
        """``inference_id`` is this client's until wall time ``deadline``.

        Called before the invoke: its notification may come before the invoke's answer.
        """
        for source in self._heard:
            source.expect(inference_id, deadline)

    def forget(self, inference_id: str) -> None:
        """The invoke of ``inference_id`` failed and never reached SageMaker."""
        for source in self._heard:
            source.forget(inference_id)

    def find(self, output_location: str) -> Watch | None:
        """The watch under way for ``output_location``, if any."""
        try:
            bucket, prefix, name = _split(output_location)
        except ValueError:  # ValidationError: not a location at all
            return None
        location = _canonical(output_location, bucket, name)
        directory = self._dirs.get((bucket, prefix))
        watch = directory.keys.get(location) if directory is not None else None
        if watch is None:
            watch = self._reading.get(location)
        if watch is None or watch.done or watch.target.output_location != location:
            return None
        return watch

    def release(self, watch: Watch, listener: Listener) -> None:
        """``listener`` stopped waiting; the last one to stop ends the watch.

        Nothing runs for it any more then.
        """
        if watch.done or not watch.remove(listener) or self._closed:
            return
        self._end(watch, settled=False)

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Timer:
        """A timer of the client's clock (for ``result(timeout=)``)."""
        return self._clock.call_later(seconds, callback)

    def cancelled(self, target: WatchTarget) -> None:
        """A handle of ``target``'s inference was cancelled (its outcome, for the counts)."""
        self._observer.outcome(
            target, None, source=None, elapsed=self._clock.wall() - target.submitted_at
        )

    # -- directories and sources ------------------------------------------------------------
    def _source(self, directory: Directory) -> PollingSource | ListingSource:
        return self._listing if directory.mode is LIST else self._polling

    def _file(self, watch: Watch) -> None:
        """File ``watch``'s locations with the sources of their directories."""
        keys = []
        for kind, uri in _locations(watch.target):
            bucket, prefix, name = _split(uri)
            directory = self._dirs.get((bucket, prefix))
            if directory is None:
                directory = self._dirs[bucket, prefix] = Directory(bucket, prefix, watch.polling)
            else:
                directory.adopt(watch.polling)
            directory.keys[uri] = watch
            if kind is OUTPUT:
                directory.outputs += 1
                watch.output_dir = directory
            keys.append(Key(watch, kind, directory, name))
        self._reading.pop(watch.target.output_location, None)
        for key in keys:
            if not self._reconsider(key.directory):
                self._source(key.directory).watch(key)

    def _unfile(self, watch: Watch) -> None:
        """Take ``watch``'s locations from their sources (the engine reads, or it ended)."""
        target = watch.target
        if watch.output_dir is None:
            return  # not filed
        filed: list[tuple[Kind, str, Directory | None]] = [
            (OUTPUT, target.output_location, watch.output_dir)
        ]
        if target.failure_location is not None:  # (its directory is looked up: one slot less)
            bucket, prefix, _ = _split(target.failure_location)
            filed.append((FAILURE, target.failure_location, self._dirs.get((bucket, prefix))))
        watch.output_dir = None
        for kind, location, directory in filed:
            if directory is None or directory.keys.get(location) is not watch:
                continue
            del directory.keys[location]
            if kind is OUTPUT:
                directory.outputs -= 1
            key = Key(watch, kind, directory, location[len(directory.root) :])
            self._source(directory).unwatch(key)
            if not directory.keys:
                self._dirs.pop((directory.bucket, directory.prefix), None)
            else:
                self._reconsider(directory)

    def _choose(self, directory: Directory) -> Mode:
        if (
            self._config.strategy == "poll"
            or directory.bucket in self._unlistable
            or (directory.list_after > float("-inf") and directory.list_after > self._now())
        ):
            return POLL
        if self._config.strategy == "list":
            return LIST
        return choose(
            directory.mode, directory.poll_weight, directory.pages, self._config.list_cost
        )

    def _reconsider(self, directory: Directory) -> bool:
        """Switch ``directory`` to the cheaper source; True if it switched."""
        mode = self._choose(directory)
        if mode is directory.mode or not directory.keys:
            return False
        old = self._source(directory)
        spread = old.spread(directory)
        directory.mode = mode
        keys = [directory.key(location, watch) for location, watch in directory.keys.items()]
        for key in keys:
            old.unwatch(key)
        new = self._source(directory)
        for key in keys:
            new.watch(key, spread=spread)
        self.stats[f"switch_to_{mode.value}"] += 1
        logger.debug(
            "s3://%s/%s: %d pending, %d page(s): now %s",
            directory.bucket,
            directory.prefix,
            len(directory.keys),
            directory.pages,
            mode.value,
        )
        return True

    def _swept(self, directory: Directory, pages: int) -> None:
        """A full listing of ``directory`` took ``pages`` pages."""
        directory.pages = pages
        self._reconsider(directory)

    def _crowded(self, directory: Directory, pages_read: int) -> bool:
        """Called by a sweep with more pages to go: give up listing if it costs too much."""
        if self._config.strategy != "auto" or not crowded(
            pages_read, directory.poll_weight, self._config.list_cost
        ):
            return False
        directory.pages = pages_read + 1  # at least
        return self._reconsider(directory)

    def _denied(self, directory: Directory, exc: InvocationError) -> None:
        """Listing failed for good (no s3:ListBucket, no bucket): poll that bucket from now on."""
        if directory.bucket not in self._unlistable:
            self._unlistable.add(directory.bucket)
            logger.warning(
                "cannot list s3://%s (%s): reading each location instead; grant "
                "s3:ListBucket on the bucket to wait for many results with fewer requests",
                directory.bucket,
                exc.code,
            )
        for other in list(self._dirs.values()):
            if other.bucket == directory.bucket:
                self._reconsider(other)

    def _failing(self, directory: Directory) -> None:
        """Listing ``directory`` keeps failing: poll it for a while, then try listing again."""
        if self._config.strategy == "list":
            return  # the user asked for listing only
        again = self._clock.monotonic() + _UNLISTABLE_FOR * directory.max_delay
        directory.list_after = again
        self.stats["list_failing"] += 1
        logger.info(
            "s3://%s/%s: listing keeps failing; reading each location until it is tried again",
            directory.bucket,
            directory.prefix,
        )
        self._reconsider(directory)
        self.scheduler.at(again, _Reconsider(self, directory))

    # -- outcomes (the resolver) ------------------------------------------------------------
    def report(self, completion: Completion, source: str) -> None:
        """A source saw the object at ``completion.location``: resolve its watch.

        With a body, the outcome is made at once; without, one GET reads it first (the sources
        stop covering the watch meanwhile). Reports of locations nobody watches (any more, or
        while the engine reads them) are ignored.
        """
        if self._closed:
            return
        bucket, prefix, name = _split(completion.location)
        location = _canonical(completion.location, bucket, name)
        directory = self._dirs.get((bucket, prefix))
        watch = directory.keys.get(location) if directory is not None else None
        if watch is None or watch.done or directory is None:
            return
        key = directory.key(location, watch)
        self.stats[f"found_by_{source}"] += 1
        watch.source = source
        if completion.body is not None:
            obj = S3Object(completion.body, completion.content_type)
            self._settle(watch, self._outcome(watch, key.kind, obj))
            return
        self._unfile(watch)
        self._reading[watch.target.output_location] = watch
        self.scheduler.soon(_Resolve(self, key))

    async def _resolve(self, job: _Resolve) -> None:
        key = job.key
        watch = key.watch
        if watch.done:  # it ended between the job's start and now
            return
        try:
            found = await self._store.read(key.location)
        except Unavailable as exc:
            watch.last_error = exc
            job.attempt += 1
            self._observer.retried("GetObject")
            # Retried until it answers; the deadline lane ends the watch if it never does.
            self.scheduler.at(self._clock.monotonic() + retry_delay(self._retry, job.attempt), job)
            return
        except InvocationError as exc:
            self._fail(watch, exc)
            return
        if watch.done:
            return
        if isinstance(found, S3Object):
            self._settle(watch, self._outcome(watch, key.kind, found))
            return
        # Listed, then gone (deleted?): keep watching as if never seen.
        self._file(watch)

    async def _last_look(self, watch: Watch) -> None:
        """At the deadline: read both locations once more (bounded), then time the watch out."""
        if watch.done:  # it ended between the job's start and now
            return
        self._unfile(watch)
        self._reading[watch.target.output_location] = watch
        self.scheduler.cancel_owned(watch)  # a read under way for it: the lane reads now
        target = watch.target
        limit = watch.deadline + _LAST_LOOK_LIMIT - self._clock.monotonic()
        locations = _locations(target)
        if limit > 0:  # else the lane is late (a crowd of deadlines): no time to look
            looks = await asyncio.gather(
                *(self._store.read(uri, limit=limit) for _, uri in locations),
                return_exceptions=True,
            )
            if watch.done:
                return
            for (kind, _), found in zip(locations, looks, strict=True):
                if isinstance(found, S3Object):
                    self.stats["found_by_last_look"] += 1
                    watch.source = "last_look"
                    self._settle(watch, self._outcome(watch, kind, found))
                    return
            for found in looks:
                if isinstance(found, Unavailable):
                    watch.last_error = found
                elif isinstance(found, InvocationError):
                    watch.source = "last_look"
                    self._fail(watch, found)
                    return
                elif isinstance(found, BaseException):
                    raise found
                elif found is Absent.FORBIDDEN:
                    watch.forbidden = True
        self._settle(watch, self._timeout(watch))

    def _timeout(self, watch: Watch) -> InferenceTimeoutError:
        target = watch.target
        if target.failure_location is None:
            message = (
                f"inference {target.inference_id}: {target.output_location} did not appear "
                "before the deadline (the endpoint has no S3FailurePath: a failure leaves no "
                "object, only an error notification)"
            )
        else:
            message = (
                f"inference {target.inference_id}: neither {target.output_location} nor "
                f"{target.failure_location} appeared before the deadline"
            )
        if watch.forbidden:
            message += (
                "; S3 answered 403 Forbidden, which it also does for a missing key when the "
                "caller lacks s3:ListBucket: grant s3:ListBucket (and s3:GetObject) on both "
                "buckets to tell a missing object from a forbidden one"
            )
        # Its own reads' last error, else the client's S3 trouble (the reads that would have
        # found it failed, listings included): the user learns why, not only that.
        cause = watch.last_error or self._store.trouble
        if cause is not None:
            message += f"; last S3 error: {cause}"
        error = InferenceTimeoutError(
            message, inference_id=target.inference_id, deadline_exceeded=True
        )
        error.__cause__ = cause
        self.stats["timed_out"] += 1
        return error

    @staticmethod
    def _outcome(watch: Watch, kind: Kind, obj: S3Object) -> InferenceResult | BaseException:
        target = watch.target
        if kind is OUTPUT:
            return InferenceResult(
                body=obj.body,
                content_type=obj.content_type,
                output_location=target.output_location,
                inference_id=target.inference_id,
            )
        return InferenceFailedError(
            obj.body.decode("utf-8", errors="replace"),
            failure_location=target.failure_location,
            inference_id=target.inference_id,
        )

    def report_failure(self, watch: Watch, reason: str, source: str) -> None:
        """A source learned that ``watch``'s inference failed, and why (no object to read)."""
        if watch.done:
            return
        self.stats[f"found_by_{source}"] += 1
        watch.source = source
        target = watch.target
        self._settle(
            watch,
            InferenceFailedError(
                reason,
                failure_location=target.failure_location,
                inference_id=target.inference_id,
            ),
        )

    def _fail(self, watch: Watch, exc: BaseException) -> None:
        """A read for ``watch`` failed for good (the polling source's, unless said before)."""
        if watch.source is None:
            watch.source = PollingSource.name
        self._settle(watch, exc)

    def _settle(self, watch: Watch, outcome: InferenceResult | BaseException) -> None:
        if watch.done:
            return
        listeners = watch.take_listeners()
        self._end(watch, settled=True)
        # Told from the loop, not from here: a source may report while a handle is still
        # being filed (a notification held for it), before the handle knows its watch.
        loop = asyncio.get_running_loop()
        for listener in listeners:
            loop.call_soon(listener._on_settled, watch, outcome, context=NO_CONTEXT)
        self._observer.outcome(
            watch.target,
            outcome,
            source=watch.source,
            elapsed=self._clock.monotonic() - watch.submitted,
        )

    def _end(self, watch: Watch, *, settled: bool) -> None:
        watch.done = True
        self._watching -= 1
        self.scheduler.cancel_owned(watch)
        self._unfile(watch)
        if self._reading.get(watch.target.output_location) is watch:
            del self._reading[watch.target.output_location]
        for source in self._heard:
            source.ended(watch, settled=settled)
        # Ended watches leave the deadline lane: a deadline is hours away, and without this
        # every inference ended since then would stay in memory until then (``client.map``
        # over 100,000 inputs held them all).
        self._moot_deadlines += 1
        if self._moot_deadlines > max(_PRUNE_AFTER, self._watching):
            self.scheduler.compact_deadlines()
            self._moot_deadlines = 0

    def _expire(self, watch: Watch) -> Coroutine[Any, Any, None] | None:
        """The deadline lane's job for ``watch``: its last look (nothing if it ended)."""
        return None if watch.done else self._last_look(watch)

    def _now(self) -> float:
        return self._clock.monotonic()


class _Resolve:
    """The engine's read of a location that a source saw (retried until it answers)."""

    __slots__ = ("attempt", "engine", "key")

    def __init__(self, engine: CompletionEngine, key: Key) -> None:
        self.engine = engine
        self.key = key  # (its watch is in the engine's ``_reading`` meanwhile)
        self.attempt = 0

    @property
    def owner(self) -> Watch:
        """The watch it reads for."""
        return self.key.watch

    def __call__(self) -> Coroutine[Any, Any, None] | None:
        return None if self.key.watch.done else self.engine._resolve(self)


class _Reconsider:
    """A timed check of a directory's source (after its listing kept failing); no request."""

    __slots__ = ("directory", "engine")

    def __init__(self, engine: CompletionEngine, directory: Directory) -> None:
        self.engine = engine
        self.directory = directory

    def __call__(self) -> None:
        if self.directory.keys:
            self.engine._reconsider(self.directory)
