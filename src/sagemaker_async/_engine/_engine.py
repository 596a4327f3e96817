"""CompletionEngine: one per client; watches every pending inference with shared sources.

A handle asks :meth:`CompletionEngine.watch` for a :class:`~._records.Watch`, waits on its
``outcome`` future (:meth:`CompletionEngine.wait`), and gives it back with
:meth:`CompletionEngine.release` when nobody waits any more. In between, the engine:

- files the watch's output and failure locations under their S3 directories;
- lets one source serve each directory (per-location polling or listing), chosen by the cost
  model and re-chosen as the directory changes;
- with notifications (:meth:`listen`), lets the notification source report first, and keeps
  S3 watched at the slow pace of the safety net;
- resolves what a source reports (:meth:`report`): the one GET when the source has no body,
  then ``InferenceResult`` or ``InferenceFailedError``, the same for every source;
- at the watch's deadline, looks at both locations once more, then times it out;
- tells the client's observer each outcome, and which source found it.

All of it runs as short jobs of one scheduler task (see ``_scheduler.py``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
from collections import Counter
from collections.abc import Coroutine
from typing import Any, Protocol

from .._config import CompletionConfig, NotificationConfig, PollingConfig, RetryConfig
from .._errors import (
    ClientClosedError,
    InferenceFailedError,
    InferenceTimeoutError,
    InvocationError,
)
from .._observe import Observer
from .._result import InferenceResult
from .._retry import retry_delay
from .._s3 import Absent, ObjectStore, S3Object, Unavailable
from .._validation import parse_s3_uri
from ._budget import RequestBudget
from ._clock import Clock
from ._listing import ListingSource
from ._notifications import NotificationSource
from ._polling import PollingSource
from ._records import Completion, Directory, Key, Kind, Mode, Watch, WatchTarget
from ._scheduler import Scheduler
from ._strategy import choose, crowded

__all__ = ["NO_CONTEXT", "CompletionEngine", "CompletionSource"]

logger = logging.getLogger("sagemaker_async")

# The last look at each location, at the deadline, gets this long: a handle ends within about
# two seconds of its deadline even when S3 stalls.
_LAST_LOOK_LIMIT = 1.0
# Deadline jobs of ended watches are dropped from the heap once there are this many (and more
# than watches under way): each prune costs one pass over the heap.
_PRUNE_AFTER = 1024

#: For callbacks that read no context variable: one shared empty context instead of a copy per
#: pending handle (100,000 copies are 100,000 more objects for the garbage collector to scan).
NO_CONTEXT = contextvars.Context()


class CompletionSource(Protocol):
    """A long-lived way of finding results that serves many keys at once."""

    name: str

    def watch(self, key: Key, *, spread: float = 0.0) -> None:
        """Start covering ``key`` (``spread``: it was covered by another source until now)."""

    def unwatch(self, key: Key) -> None:
        """Stop covering ``key``."""


def _split(uri: str) -> tuple[str, str, str]:
    """``s3://bucket/dir/name`` -> ``(bucket, "dir/", "dir/name")`` (URIs checked before)."""
    bucket, key = parse_s3_uri(uri)
    return bucket, key[: key.rfind("/") + 1], key


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
        self.scheduler = Scheduler(clock, budget, concurrency)
        self._watches: dict[str, Watch] = {}
        self._moot_deadlines = 0  # deadline jobs of ended watches still in the heap
        self._dirs: dict[tuple[str, str], Directory] = {}
        self._unlistable: set[str] = set()  # buckets where ListObjectsV2 was denied
        self._closed = False
        self.stats: Counter[str] = Counter()
        self._rng = rng or random.Random()
        self._notices: NotificationSource | None = None
        self._notify_config: NotificationConfig | None = None
        self._unannounced = False  # warned that S3 found a result no notification announced
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
            swept=self._reconsider,
        )

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the scheduler (on the running loop)."""
        self.scheduler.start()

    def listen(self, source: NotificationSource, config: NotificationConfig) -> None:
        """Take notifications from ``source`` (started here); S3 becomes the safety net."""
        self._notices, self._notify_config = source, config
        source.start()

    async def aclose(self) -> None:
        """Stop every job; waiters get :class:`ClientClosedError` (their handles stay pending)."""
        self._closed = True
        await self.scheduler.aclose()
        if self._notices is not None:
            await self._notices.aclose()
        watches, self._watches = list(self._watches.values()), {}
        self._dirs.clear()
        for watch in watches:
            watch.done = True
            if not watch.outcome.done():
                watch.outcome.set_exception(
                    ClientClosedError(
                        f"the client was closed while waiting for inference "
                        f"{watch.target.inference_id}; resume the wait with "
                        "AsyncInferenceClient.resume(handle.to_dict())"
                    )
                )

    @property
    def watching(self) -> int:
        """How many inferences are being watched."""
        return len(self._watches)

    def modes(self) -> dict[str, str]:
        """Each watched directory (``s3://bucket/prefix``) and how it is watched now."""
        return {f"s3://{d.bucket}/{d.prefix}": d.mode.value for d in self._dirs.values()}

    # -- the handle's interface -------------------------------------------------------------
    def watch(self, target: WatchTarget, polling: PollingConfig) -> Watch:
        """Start watching ``target`` (or join the watch already under way for it)."""
        if self._closed:
            raise ClientClosedError("the AsyncInferenceClient is closed; create a new one")
        existing = self._watches.get(target.output_location)
        if existing is not None and not existing.done:
            existing.refs += 1
            return existing
        if self._notify_config is not None:
            polling = self._notify_config.safety_polling(polling)
        now, wall = self._clock.monotonic(), self._clock.wall()
        watch = Watch(
            target,
            polling,
            asyncio.get_running_loop().create_future(),
            submitted=now - max(0.0, wall - target.submitted_at),
            deadline=now + (target.deadline - wall),
        )
        self._watches[target.output_location] = watch
        self._file(watch, self._locations(target))
        self._schedule_last_look(watch)
        if self._notices is not None:
            self._notices.watching(watch)
        return watch

    def expect(self, inference_id: str, deadline: float) -> None:
        """``inference_id`` is this client's until wall time ``deadline``.

        Called before the invoke: its notification may come before the invoke's answer.
        """
        if self._notices is not None:
            self._notices.expect(inference_id, deadline)

    def forget(self, inference_id: str) -> None:
        """The invoke of ``inference_id`` failed and never reached SageMaker."""
        if self._notices is not None:
            self._notices.forget(inference_id)

    def find(self, output_location: str) -> Watch | None:
        """The watch under way for ``output_location``, if any."""
        return self._watches.get(output_location)

    @staticmethod
    def _locations(target: WatchTarget) -> list[tuple[Kind, str]]:
        locations = [(Kind.OUTPUT, target.output_location)]
        if target.failure_location is not None:
            locations.append((Kind.FAILURE, target.failure_location))
        return locations

    def _schedule_last_look(self, watch: Watch) -> None:
        job = _LastLook(self, watch)
        watch.last_look = job
        self.scheduler.at(watch.deadline, job)

    def _drop_last_look(self, watch: Watch) -> None:
        """``watch`` ended: its deadline job lets go of it, and moot ones leave the heap.

        A deadline is hours away; without this, every inference ended since then would stay
        in memory with its result until then (``client.map`` over 100,000 inputs held them
        all).
        """
        job, watch.last_look = watch.last_look, None
        if not isinstance(job, _LastLook):
            return
        job.watch = None
        self._moot_deadlines += 1
        if self._moot_deadlines > max(_PRUNE_AFTER, len(self._watches)):
            self.scheduler.prune(_LastLook.is_moot)
            self._moot_deadlines = 0

    def release(self, watch: Watch) -> None:
        """A handle stopped waiting; the last one to stop ends the watch (nothing runs for it)."""
        watch.refs -= 1
        if watch.refs > 0 or watch.done:
            return
        self._end(watch, settled=False)
        watch.outcome.cancel()

    async def wait(self, watch: Watch, timeout: float | None) -> bool:
        """Wait for ``watch``'s outcome, at most ``timeout`` seconds; True if it has one.

        Never cancels the shared outcome future; waits on the client's clock.
        """
        outcome = watch.outcome
        if outcome.done():
            return True
        woken = asyncio.get_running_loop().create_future()

        def wake(_: object = None) -> None:
            if not woken.done():
                woken.set_result(None)

        outcome.add_done_callback(wake, context=NO_CONTEXT)
        timer = self._clock.call_later(timeout, wake) if timeout is not None else None
        try:
            await woken
        finally:
            outcome.remove_done_callback(wake)
            if timer is not None:
                timer.cancel()
        return outcome.done()

    # -- directories and sources ------------------------------------------------------------
    def _source(self, directory: Directory) -> CompletionSource:
        return self._listing if directory.mode is Mode.LIST else self._polling

    def _file(self, watch: Watch, locations: list[tuple[Kind, str]]) -> None:
        keys = []
        for kind, uri in locations:
            bucket, prefix, name = _split(uri)
            directory = self._dirs.get((bucket, prefix))
            if directory is None:
                directory = self._dirs[bucket, prefix] = Directory(bucket, prefix, watch.polling)
            else:
                directory.adopt(watch.polling)
            key = Key(watch, kind, directory, name)
            directory.keys[name] = key
            if kind is Kind.OUTPUT:
                directory.outputs += 1
            keys.append(key)
            if not self._reconsider(directory):
                self._source(directory).watch(key)
        watch.keys = tuple(keys)

    def _unfile(self, watch: Watch) -> None:
        for key in watch.keys:
            directory = key.directory
            if directory.keys.get(key.name) is not key:
                continue
            del directory.keys[key.name]
            if key.kind is Kind.OUTPUT:
                directory.outputs -= 1
            self._source(directory).unwatch(key)
            if not directory.keys:
                self._dirs.pop((directory.bucket, directory.prefix), None)
            else:
                self._reconsider(directory)
        watch.keys = ()

    def _choose(self, directory: Directory) -> Mode:
        if directory.bucket in self._unlistable or self._config.strategy == "poll":
            return Mode.POLL
        if self._config.strategy == "list":
            return Mode.LIST
        return choose(
            directory.mode, directory.poll_weight, directory.pages, self._config.list_cost
        )

    def _reconsider(self, directory: Directory) -> bool:
        """Switch ``directory`` to the cheaper source; True if it switched."""
        mode = self._choose(directory)
        if mode is directory.mode or not directory.keys:
            return False
        old = self._source(directory)
        spread = directory.interval if directory.mode is Mode.LIST else 0.0
        directory.mode = mode
        for key in directory.keys.values():
            old.unwatch(key)
        new = self._source(directory)
        for key in directory.keys.values():
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

    def _crowded(self, directory: Directory) -> bool:
        """Called by a sweep with more pages to go: give up listing if it costs too much."""
        if self._config.strategy != "auto" or not crowded(
            directory.pages_read, directory.poll_weight, self._config.list_cost
        ):
            return False
        directory.pages = directory.pages_read + 1  # at least
        directory.token, directory.pages_read = None, 0
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

    # -- outcomes (the resolver) ------------------------------------------------------------
    def report(self, completion: Completion, source: str) -> None:
        """A source saw the object at ``completion.location``: resolve its watch.

        With a body, the outcome is made at once; without, one GET reads it first. Reports of
        locations nobody watches (any more) are ignored.
        """
        bucket, prefix, name = _split(completion.location)
        directory = self._dirs.get((bucket, prefix))
        key = directory.keys.get(name) if directory is not None else None
        if key is None or key.watch.done or key.watch.resolving:
            return
        watch = key.watch
        self.stats[f"found_by_{source}"] += 1
        watch.source = source
        if self._notices is not None and source != self._notices.name:
            self._unannounced_result(watch)
        if completion.body is not None:
            obj = S3Object(completion.body, completion.content_type)
            self._settle(watch, self._outcome(watch, key.kind, obj))
            return
        watch.resolving = True
        self._unfile(watch)
        key.step = 0
        self.scheduler.soon(lambda: None if watch.done else self._resolve(key))

    async def _resolve(self, key: Key) -> None:
        watch = key.watch
        if watch.done:  # it ended between the job's start and now
            return
        watch.enter()
        try:
            found = await self._store.read(key.location)
        except Unavailable as exc:
            watch.last_error = exc
            key.step += 1
            self._observer.retried("GetObject")
            self.scheduler.at(
                self._clock.monotonic() + retry_delay(self._retry, key.step),
                lambda: None if watch.done else self._resolve(key),
            )
            return
        except InvocationError as exc:
            self._fail(watch, exc)
            return
        finally:
            watch.leave()
        if watch.done:
            return
        if isinstance(found, S3Object):
            self._settle(watch, self._outcome(watch, key.kind, found))
            return
        # Listed, then gone (deleted?): keep watching as if never seen.
        watch.resolving = False
        self._file(watch, self._locations(watch.target))
        if self._clock.monotonic() >= watch.deadline:
            self._schedule_last_look(watch)

    async def _last_look(self, watch: Watch) -> None:
        """At the deadline: read both locations once more, then time the watch out."""
        if watch.done:  # it ended between the job's start and now
            return
        watch.last_look = None  # (its job left the heap to run)
        self._unfile(watch)
        watch.resolving = True
        target = watch.target
        for kind, uri in self._locations(target):
            if kind is Kind.FAILURE:
                self.budget.take()
            watch.enter()
            try:
                found = await self._store.read(uri, limit=_LAST_LOOK_LIMIT)
            except Unavailable as exc:
                watch.last_error = exc
                continue
            except InvocationError as exc:
                watch.source = "last_look"
                self._fail(watch, exc)
                return
            finally:
                watch.leave()
            if isinstance(found, S3Object):
                self.stats["found_by_last_look"] += 1
                watch.source = "last_look"
                if self._notices is not None:
                    self._unannounced_result(watch)
                self._settle(watch, self._outcome(watch, kind, found))
                return
            watch.forbidden = watch.forbidden or found is Absent.FORBIDDEN
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
        if watch.last_error is not None:
            message += f"; last S3 error: {watch.last_error}"
        error = InferenceTimeoutError(
            message, inference_id=target.inference_id, deadline_exceeded=True
        )
        error.__cause__ = watch.last_error
        self.stats["timed_out"] += 1
        self._settle(watch, error)

    @staticmethod
    def _outcome(watch: Watch, kind: Kind, obj: S3Object) -> InferenceResult | BaseException:
        target = watch.target
        if kind is Kind.OUTPUT:
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

    def _unannounced_result(self, watch: Watch) -> None:
        if self._unannounced or watch.notice is not None:
            return
        self._unannounced = True
        assert self._notices is not None
        logger.warning(
            "inference %s was found in S3 by the safety net, not by a notification; if this "
            "repeats, check that the endpoint's NotificationConfig topics deliver to %s%s",
            watch.target.inference_id,
            self._notices.queue_url,
            " (InferenceIds that you choose do not pass this client's filter)"
            if self._notify_config is not None and self._notify_config.topics
            else "",
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
        self._end(watch, settled=True)
        if isinstance(outcome, BaseException):
            watch.outcome.set_exception(outcome)
        else:
            watch.outcome.set_result(outcome)
        self._observer.outcome(
            watch.target,
            outcome,
            source=watch.source,
            elapsed=self._clock.monotonic() - watch.submitted,
        )

    def cancelled(self, target: WatchTarget) -> None:
        """A handle of ``target``'s inference was cancelled (its outcome, for the counts)."""
        self._observer.outcome(
            target, None, source=None, elapsed=self._clock.wall() - target.submitted_at
        )

    def _end(self, watch: Watch, *, settled: bool) -> None:
        watch.done = True
        watch.cancel_tasks()
        self._drop_last_look(watch)
        self._unfile(watch)
        if self._watches.get(watch.target.output_location) is watch:
            del self._watches[watch.target.output_location]
        if self._notices is not None:
            self._notices.ended(watch, settled=settled)


class _LastLook:
    """The deadline job of one watch.

    One small object per pending watch (a closure is three), since the garbage collector's
    pauses grow with the number of objects alive.
    """

    __slots__ = ("engine", "watch")

    def __init__(self, engine: CompletionEngine, watch: Watch) -> None:
        self.engine = engine
        self.watch: Watch | None = watch  # None once the watch ended

    def __call__(self) -> Coroutine[Any, Any, None] | None:
        watch = self.watch
        if watch is None or watch.done or watch.resolving:
            return None
        return self.engine._last_look(watch)

    @staticmethod
    def is_moot(job: object) -> bool:
        """True for the deadline job of a watch that ended."""
        return isinstance(job, _LastLook) and job.watch is None
