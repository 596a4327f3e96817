"""Fan-out with backpressure: ``AsyncInferenceClient.map`` and ``as_completed``."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from dataclasses import dataclass
from typing import Any

from ._clock import Clock
from ._errors import ClientClosedError, ValidationError
from ._handle import AsyncInferenceHandle, _Wake
from ._result import InferenceResult
from ._tasks import cancel_all

#: What ``map`` submits with: :meth:`AsyncInferenceClient.invoke_endpoint_async`.
Submit = Callable[..., Awaitable[AsyncInferenceHandle]]

__all__ = ["MapOutcome", "MapProgress", "as_completed", "map_inferences"]

logger = logging.getLogger("sagemaker_async")

# The keyword arguments of invoke_endpoint_async that map passes on (per item or for all).
_OPTIONS = frozenset(
    {
        "body",
        "input_location",
        "content_type",
        "accept",
        "custom_attributes",
        "inference_id",
        "invocation_timeout_seconds",
        "request_ttl_seconds",
        "s3_output_path_extension",
        "filename",
        "polling",
    }
)
# Invokes sent at once: enough to keep a pool busy, few enough not to starve result reads.
_SUBMITTERS = 16
# Handles that as_completed starts or stops watching per turn of the event loop (starting to
# watch 500 took 100 ms of a loaded machine's CPU, collections included).
_SLICE = 250


@dataclass(frozen=True, slots=True)
class MapOutcome:
    """What became of one input of :meth:`AsyncInferenceClient.map`.

    Attributes:
        index: the input's position in ``inputs`` (0-based).
        input: the input as it was given.
        handle: the inference's handle; None when it was never submitted (``error`` says why).
        result: the result, or None when the inference failed, timed out, or was not submitted.
        error: the exception (``InvocationError``, ``ValidationError``,
            ``InferenceFailedError``, ``InferenceTimeoutError``...), or None.
    """

    index: int
    input: Any
    handle: AsyncInferenceHandle | None
    result: InferenceResult | None
    error: BaseException | None

    @property
    def ok(self) -> bool:
        """True when the inference succeeded."""
        return self.error is None


@dataclass(frozen=True, slots=True)
class MapProgress:
    """Counts of a :meth:`AsyncInferenceClient.map` run, given to its ``progress`` hook.

    Attributes:
        read: inputs taken from ``inputs`` so far.
        submitted: inputs accepted by InvokeEndpointAsync.
        succeeded: outcomes with a result.
        failed: outcomes with an error (not submitted, failed, timed out).
        in_flight: read and not yet given to the caller.
    """

    read: int = 0
    submitted: int = 0
    succeeded: int = 0
    failed: int = 0

    @property
    def in_flight(self) -> int:
        """Inputs read whose outcome has not been given to the caller yet."""
        return self.read - self.succeeded - self.failed


def _check(
    max_in_flight: int,
    submit_rate: float | None,
    ordered: bool,
    progress: Callable[[MapProgress], object] | None,
    options: Mapping[str, Any],
) -> None:
    if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
        raise ValidationError(
            "max_in_flight", f"{max_in_flight!r} is not a positive int", "an int >= 1"
        )
    if submit_rate is not None and (
        isinstance(submit_rate, bool)
        or not isinstance(submit_rate, (int, float))
        or not math.isfinite(submit_rate)
        or submit_rate <= 0
    ):
        raise ValidationError(
            "submit_rate", f"{submit_rate!r} is not a positive number", "inputs per second > 0"
        )
    if not isinstance(ordered, bool):
        raise ValidationError("ordered", f"{ordered!r} is not a bool", "True or False")
    if progress is not None and not callable(progress):
        raise ValidationError("progress", f"{progress!r} is not callable", "fn(MapProgress)")
    for name in options:
        if name not in _OPTIONS or name in ("body", "input_location"):
            raise ValidationError(
                name,
                "is not an option of map (bodies come from the inputs)"
                if name in ("body", "input_location")
                else "is not an option of invoke_endpoint_async",
                f"one of {', '.join(sorted(_OPTIONS - {'body', 'input_location'}))}",
            )


def _invoke_options(item: Any, common: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of one input's invoke (raises ValidationError for a bad item)."""
    if isinstance(item, (bytes, bytearray, memoryview, str)):
        return {**common, "body": item}
    if isinstance(item, Mapping):
        unknown = sorted(str(k) for k in item if k not in _OPTIONS)
        if unknown:
            raise ValidationError(
                "inputs[]",
                f"has keys that are not invoke options: {', '.join(unknown)}",
                f"keys among {', '.join(sorted(_OPTIONS))}",
            )
        return {**common, **item}
    raise ValidationError(
        "inputs[]",
        f"a {type(item).__name__} was given",
        "bytes or str (the body), or a mapping of invoke options (body=... or input_location=...)",
    )


async def _items(inputs: Iterable[Any] | AsyncIterable[Any]) -> AsyncGenerator[Any, None]:
    if isinstance(inputs, AsyncIterable):
        async for item in inputs:
            yield item
    else:
        for item in inputs:
            yield item


def map_inferences(
    submit: Submit,
    endpoint_name: str,
    inputs: Iterable[Any] | AsyncIterable[Any],
    *,
    max_in_flight: int = 64,
    ordered: bool = False,
    submit_rate: float | None = None,
    progress: Callable[[MapProgress], object] | None = None,
    on_submit: Callable[[int, AsyncInferenceHandle], object] | None = None,
    clock: Clock,
    **options: Any,
) -> AsyncGenerator[MapOutcome, None]:
    """The implementation of :meth:`AsyncInferenceClient.map` (see there): checks, then runs."""
    _check(max_in_flight, submit_rate, ordered, progress, options)
    if on_submit is not None and not callable(on_submit):
        raise ValidationError("on_submit", f"{on_submit!r} is not callable", "fn(index, handle)")
    if not isinstance(inputs, (Iterable, AsyncIterable)) or isinstance(inputs, (bytes, str)):
        raise ValidationError(
            "inputs",
            f"a {type(inputs).__name__} is not an iterable of inputs",
            "an iterable or async iterable of bodies or option mappings",
        )
    return _run(
        submit,
        endpoint_name,
        inputs,
        max_in_flight,
        ordered,
        submit_rate,
        progress,
        on_submit,
        clock,
        options,
    )


async def _run(
    submit: Submit,
    endpoint_name: str,
    inputs: Iterable[Any] | AsyncIterable[Any],
    max_in_flight: int,
    ordered: bool,
    submit_rate: float | None,
    progress: Callable[[MapProgress], object] | None,
    on_submit: Callable[[int, AsyncInferenceHandle], object] | None,
    clock: Clock,
    options: Mapping[str, Any],
) -> AsyncGenerator[MapOutcome, None]:
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[MapOutcome | BaseException | None] = asyncio.Queue()
    slots = asyncio.Semaphore(max_in_flight)  # read and not yet given to the caller
    submitters = asyncio.Semaphore(min(_SUBMITTERS, max_in_flight))
    tasks: set[asyncio.Task[None]] = set()
    counts = MapProgress()
    submitted = 0
    read = 0  # inputs taken from ``inputs``

    async def one(index: int, item: Any) -> None:
        nonlocal submitted
        handle: AsyncInferenceHandle | None = None
        try:
            kwargs = _invoke_options(item, options)
            async with submitters:
                handle = await submit(endpoint_name, **kwargs)
            submitted += 1
            if on_submit is not None:
                on_submit(index, handle)
            result = await handle
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            events.put_nowait(MapOutcome(index, item, handle, None, exc))
        else:
            events.put_nowait(MapOutcome(index, item, handle, result, None))

    async def feed() -> None:
        nonlocal read
        interval = 1.0 / submit_rate if submit_rate else 0.0
        next_start = clock.monotonic()
        items = _items(inputs)
        try:
            while True:
                await slots.acquire()  # given back with each outcome
                if interval:
                    await clock.sleep(max(0.0, next_start - clock.monotonic()))
                    next_start = max(next_start + interval, clock.monotonic())
                try:
                    item = await anext(items)
                except StopAsyncIteration:
                    break
                task = loop.create_task(one(read, item))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                read += 1
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the inputs' own error: the caller's to see
            events.put_nowait(exc)
            return
        finally:
            await items.aclose()
        events.put_nowait(None)

    feeder = loop.create_task(feed(), name="map inputs")
    buffered: dict[int, MapOutcome] = {}
    next_index = 0
    exhausted = False
    try:
        while True:
            if exhausted and read == counts.succeeded + counts.failed:
                return
            event = await events.get()
            if event is None:
                exhausted = True
                continue
            if isinstance(event, BaseException):
                raise event
            ready = [event]
            if ordered:
                buffered[event.index] = event
                ready = []
                while next_index in buffered:
                    ready.append(buffered.pop(next_index))
                    next_index += 1
            for outcome in ready:
                counts = MapProgress(
                    read=read,
                    submitted=submitted,
                    succeeded=counts.succeeded + (outcome.error is None),
                    failed=counts.failed + (outcome.error is not None),
                )
                if progress is not None:
                    progress(counts)
                slots.release()
                yield outcome
    finally:
        await cancel_all([feeder, *tasks])


async def as_completed(
    handles: Iterable[AsyncInferenceHandle],
) -> AsyncGenerator[AsyncInferenceHandle, None]:
    """Yield ``handles`` as they finish (succeeded, failed, timed out or cancelled).

    Each handle is watched while the loop runs; leaving the loop early stops watching the ones
    not yet given (they stay pending and can be awaited later). A handle's outcome is read
    from it: ``await handle`` (or ``handle.exception()``) does not wait any more. A handle
    still pending when its client closes is given too (awaiting it raises
    :class:`ClientClosedError`).

    No task runs per handle, and work over all the handles (starting and stopping to watch
    them) is done in slices that let the event loop run: a million handles are fine.
    """
    # Each handle once, in order: the dict grows one handle at a time, in slices (a million
    # handles made into a dict in one call hold the loop 100 ms or more).
    unique: dict[AsyncInferenceHandle, None] = {}
    for i, handle in enumerate(handles, 1):
        if not isinstance(handle, AsyncInferenceHandle):
            raise ValidationError(
                "handles[]", f"a {type(handle).__name__} was given", "AsyncInferenceHandle"
            )
        unique[handle] = None
        if i % (_SLICE * 10) == 0:
            await asyncio.sleep(0)
    pending = list(unique)
    del unique
    finished: asyncio.Queue[AsyncInferenceHandle] = asyncio.Queue()
    done = _Wake(finished.put_nowait)  # one waiter for every handle (told of a close too)
    listened = 0  # pending[:listened] were given ``done``
    try:
        for handle in pending:
            try:
                handle._listen(done)
            except ClientClosedError:
                finished.put_nowait(handle)  # awaiting it says so
            listened += 1
            if listened % _SLICE == 0:
                await asyncio.sleep(0)
        for i in range(1, len(pending) + 1):
            if i % _SLICE == 0:  # (a full queue is read without a pause: a million at close)
                await asyncio.sleep(0)
            yield await finished.get()
    finally:
        for i, handle in enumerate(pending[:listened], 1):
            handle._unlisten(done)  # (nothing for those done, or whose client closed)
            if i % _SLICE == 0:
                await asyncio.sleep(0)
