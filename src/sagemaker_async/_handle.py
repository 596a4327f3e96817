"""AsyncInferenceHandle: an awaitable for one submitted inference."""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Awaitable, Callable, Generator, Mapping
from datetime import datetime, timezone
from typing import Any, Protocol

from ._clock import Timer
from ._config import PollingConfig
from ._engine._records import Listener, Watch
from ._errors import (
    ClientClosedError,
    InferenceFailedError,
    InferenceTimeoutError,
    ValidationError,
)
from ._result import HandleState, InferenceResult, InferenceStatus, WatchTarget
from ._validation import canonical_s3_uri, validate_field

__all__ = ["AsyncInferenceHandle", "HandleState", "InferenceStatus", "dump_state", "load_state"]

logger = logging.getLogger("sagemaker_async")

_STATE_VERSION = 1


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat()


def dump_state(target: WatchTarget, submit_attempts: int) -> HandleState:
    """The saved state of a handle (the one writer of :class:`HandleState`)."""
    return {
        "version": _STATE_VERSION,
        "inference_id": target.inference_id,
        "endpoint_name": target.endpoint_name,
        "output_location": target.output_location,
        "failure_location": target.failure_location,
        "submitted_at": _iso(target.submitted_at),
        "deadline": _iso(target.deadline),
        "submit_attempts": submit_attempts,
    }


def load_state(saved: HandleState | Mapping[str, Any]) -> tuple[WatchTarget, int]:
    """Read a saved state (the one reader of :class:`HandleState`): the target, the attempts.

    Raises:
        ValidationError: ``saved`` is not a handle's ``to_dict()``, or a field is wrong.
    """
    state: Mapping[str, Any] = saved  # read as untrusted (JSON from elsewhere)
    if not isinstance(state, dict) and not isinstance(state, Mapping):  # (dict: the fast check)
        raise ValidationError(
            "state", f"a {type(state).__name__} was given", "a dict from to_dict()"
        )
    version = state.get("version")
    if type(version) is not int or version != _STATE_VERSION:  # not True, not 1.0
        raise ValidationError("state.version", f"{version!r} is not supported", "the int 1")
    values: dict[str, Any] = {}
    for key in ("inference_id", "endpoint_name", "output_location", "failure_location"):
        value = state.get(key)
        if key == "failure_location" and value is None and key in state:
            values[key] = None  # an endpoint without S3FailurePath
            continue
        if not isinstance(value, str) or not value:
            raise ValidationError(
                f"state.{key}", f"{value!r} is missing or empty", "a non-empty str"
            )
        values[key] = value
    # As InvokeEndpointAsync takes them (the model's rules), and every location as s3://.
    for key, api_field in (("inference_id", "InferenceId"), ("endpoint_name", "EndpointName")):
        validate_field(api_field, values[key], label=f"state.{key}")
    for key in ("output_location", "failure_location"):
        if values[key] is not None:
            values[key] = canonical_s3_uri(values[key], field=f"state.{key}")
    times: dict[str, float] = {}
    for key in ("submitted_at", "deadline"):
        try:
            parsed = datetime.fromisoformat(state[key])
        except (KeyError, TypeError, ValueError):
            raise ValidationError(
                f"state.{key}", f"{state.get(key)!r} is not a timestamp", "ISO 8601 with zone"
            ) from None
        if parsed.tzinfo is None:
            raise ValidationError(f"state.{key}", "has no time zone", "ISO 8601 with zone")
        times[key] = parsed.timestamp()
    attempts = state.get("submit_attempts", 0)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
        raise ValidationError(
            "state.submit_attempts", f"{attempts!r} is not a count", "an int >= 0"
        )
    target = WatchTarget(
        # One string for every handle of an endpoint (a million resumed states, one name).
        endpoint_name=sys.intern(values["endpoint_name"]),
        inference_id=values["inference_id"],
        output_location=values["output_location"],
        failure_location=values["failure_location"],
        submitted_at=times["submitted_at"],
        deadline=times["deadline"],
    )
    return target, attempts


class Completions(Protocol):
    """What a handle needs from its client's completion engine."""

    def watch(
        self,
        listener: Listener,
        target: WatchTarget,
        polling: PollingConfig,
        *,
        submitted: float,
        deadline: float,
    ) -> Watch:
        """Start watching (or join the watch of) ``target`` (times of the monotonic clock)."""

    def release(self, watch: Watch, listener: Listener) -> None:
        """``listener`` stopped waiting: stop watching, unless another handle still waits."""

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Timer:
        """A timer of the client's clock."""

    def cancelled(self, target: WatchTarget) -> None:
        """A handle of ``target`` was cancelled (counted as its outcome)."""


# A handle keeps who waits for it as nothing, one, or a list: nearly every pending handle has
# one waiter (a million handles, a million lists saved). A waiter is a done callback (a
# callable: called once the handle is done, not when the client closes), a ``_Waiter`` (the
# future of an ``await``), or a ``_Wake`` (as_completed's: told of the outcome or the close).
_Some = Any  # None | T | list[T]


def _added(held: _Some, item: object) -> _Some:
    if held is None:
        return item
    if isinstance(held, list):
        held.append(item)
        return held
    return [held, item]


def _without(held: _Some, item: object) -> tuple[_Some, int]:
    """``held`` without every ``item`` (by equality); how many were removed."""
    if held is None:
        return None, 0
    if not isinstance(held, list):
        return (None, 1) if held == item else (held, 0)
    kept = [x for x in held if x != item]
    removed = len(held) - len(kept)
    return (kept[0] if len(kept) == 1 else kept or None), removed


def _each(held: _Some) -> list[Any]:
    return [] if held is None else list(held) if isinstance(held, list) else [held]


class _Waiter(asyncio.Future[InferenceResult]):
    """The future that one ``await handle`` (or ``result()``) waits on.

    It gets the handle's result or error; cancelling it (its task was cancelled) tells the
    handle, which stops watching when nobody else waits. An ``await`` costs this future and
    its iterator, nothing else: no coroutine, no task, no callback of ours.
    """

    __slots__ = ("_handle",)

    def __init__(self, handle: AsyncInferenceHandle) -> None:
        super().__init__()
        self._handle: AsyncInferenceHandle | None = handle

    def cancel(self, msg: Any | None = None) -> bool:
        """Cancel this wait (not the handle, which stays pending for others)."""
        if not super().cancel(msg=msg):
            return False
        handle, self._handle = self._handle, None
        if handle is not None:
            handle._waiter_gone(self)
        return True


class _Wake:
    """A waiter that is a callable (as_completed's): ``fn(handle)`` on the outcome or close."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[AsyncInferenceHandle], object]) -> None:
        self.fn = fn


# The background opens under way, by the client's opener (kept here, not in each handle).
_OPENING: dict[Callable[[], Awaitable[None] | None], asyncio.Task[None]] = {}


async def _open_quietly(opening: Awaitable[None]) -> None:
    try:
        await opening
    except Exception:  # closed, or no credentials: result() reports it to its caller
        logger.debug("the client did not open (a resumed handle's callback waits on it)")


def _status(outcome: InferenceResult | BaseException | None) -> InferenceStatus:
    """A handle's status, read from its outcome (one slot less in a million handles)."""
    if outcome is None:
        return InferenceStatus.PENDING
    if isinstance(outcome, InferenceResult):
        return InferenceStatus.SUCCEEDED
    if isinstance(outcome, asyncio.CancelledError):
        return InferenceStatus.CANCELLED
    if isinstance(outcome, InferenceTimeoutError):
        return InferenceStatus.TIMED_OUT
    return InferenceStatus.FAILED


class AsyncInferenceHandle:
    """A submitted inference; ``await handle`` gives its :class:`InferenceResult`.

    The client's completion engine watches the output and failure locations that
    InvokeEndpointAsync returned, only while someone waits for the handle (an ``await``,
    :meth:`result`, or a done callback): a handle nobody waits on costs nothing, and no task
    runs per handle. When the last waiter is cancelled, watching stops and the handle stays
    pending, so it can be awaited again later.

    Its API follows :class:`asyncio.Future`: :meth:`done`, :meth:`cancel`, :meth:`cancelled`,
    :meth:`exception`, :meth:`add_done_callback`. :meth:`cancel` only stops waiting:
    SageMaker has no way to cancel a queued or running asynchronous inference.

    Handles are made by :meth:`AsyncInferenceClient.invoke_endpoint_async` and
    :meth:`AsyncInferenceClient.resume`, not directly.
    """

    __slots__ = (
        "_completions",
        "_deadline",
        "_opener",
        "_outcome",
        "_polling",
        "_submit_attempts",
        "_submitted",
        "_target",
        "_waiting",
        "_watch",
    )

    def __init__(
        self,
        *,
        target: WatchTarget,
        polling: PollingConfig,
        completions: Completions,
        opener: Callable[[], Awaitable[None] | None],
        clock_times: tuple[float, float],
        submit_attempts: int = 1,
    ) -> None:
        self._target = target
        # (submitted, deadline) on the client's monotonic clock: a step of the wall clock
        # neither times the handle out nor delays it (the wall times are for to_dict()).
        self._submitted, self._deadline = clock_times
        self._submit_attempts = submit_attempts
        self._polling = polling
        self._completions = completions
        self._opener = opener  # opens the client; None once it is open
        # None while pending; then the result, or the error (CancelledError: cancelled).
        self._outcome: InferenceResult | BaseException | None = None
        self._watch: Watch | None = None
        self._waiting: _Some = None  # done callbacks, _Waiters and _Wakes (see _added)

    # -- identity ---------------------------------------------------------------------------
    @property
    def inference_id(self) -> str:
        """The inference's id (given by the caller, or generated by the client)."""
        return self._target.inference_id

    @property
    def endpoint_name(self) -> str:
        """The endpoint the inference was submitted to."""
        return self._target.endpoint_name

    @property
    def output_location(self) -> str:
        """S3 URI where the result will appear."""
        return self._target.output_location

    @property
    def failure_location(self) -> str | None:
        """S3 URI where the failure object will appear if the inference fails, or None.

        None when the endpoint has no S3FailurePath: a failure is then known from its error
        notification only.
        """
        return self._target.failure_location

    @property
    def submitted_at(self) -> datetime:
        """When the invoke call was sent (UTC)."""
        return datetime.fromtimestamp(self._target.submitted_at, timezone.utc)

    @property
    def deadline(self) -> datetime:
        """When the handle gives up waiting and raises :class:`InferenceTimeoutError` (UTC)."""
        return datetime.fromtimestamp(self._target.deadline, timezone.utc)

    @property
    def submit_attempts(self) -> int:
        """How many InvokeEndpointAsync requests for this inference may have been accepted.

        The one that was accepted, plus each retried one whose error may have hidden an
        acceptance (a dropped connection, a timeout, a 500 after sending); refusals
        (throttling, a 503, a connection never opened) are not counted. More than one means
        that SageMaker may run the inference more than once (every copy has the same
        InferenceId; this handle watches the locations of the one that answered). 0 when
        unknown (a state saved by an older version).
        """
        return self._submit_attempts

    @property
    def status(self) -> InferenceStatus:
        """pending, succeeded, failed, timed_out or cancelled."""
        return _status(self._outcome)

    def __repr__(self) -> str:
        return (
            f"<AsyncInferenceHandle {self.inference_id!r} endpoint={self.endpoint_name!r} "
            f"status={self.status.value}>"
        )

    # -- Future-like API --------------------------------------------------------------------
    def done(self) -> bool:
        """True once the handle succeeded, failed, timed out or was cancelled."""
        return self._outcome is not None

    def cancelled(self) -> bool:
        """True if :meth:`cancel` stopped the wait."""
        return isinstance(self._outcome, asyncio.CancelledError)

    def cancel(self) -> bool:
        """Stop waiting: waiters get :class:`asyncio.CancelledError`. False if already done.

        This does not cancel the inference itself (SageMaker offers no such call): the
        endpoint still processes it and writes its output.
        """
        if self.done():
            return False
        self._finish(asyncio.CancelledError())
        self._completions.cancelled(self._target)
        return True

    def exception(self) -> BaseException | None:
        """The error the handle ended with, or None if it succeeded.

        Raises:
            asyncio.InvalidStateError: the handle is still pending.
            asyncio.CancelledError: the handle was cancelled.
        """
        if not self.done():
            raise asyncio.InvalidStateError("the inference is still pending")
        if self.cancelled():
            raise asyncio.CancelledError()
        return self._outcome if isinstance(self._outcome, BaseException) else None

    def add_done_callback(self, fn: Callable[[AsyncInferenceHandle], object]) -> None:
        """Call ``fn(handle)`` once the handle is done; starts watching if needed.

        Must be called from a running event loop (unless the handle is already done). If the
        client is closed while the handle is still pending, ``fn`` is not called.
        """
        if self.done():
            asyncio.get_running_loop().call_soon(fn, self)
            return
        self._ensure_watching()
        self._waiting = _added(self._waiting, fn)
        self._open_soon()

    def remove_done_callback(self, fn: Callable[[AsyncInferenceHandle], object]) -> int:
        """Remove every registration of ``fn``; returns how many were removed."""
        self._waiting, removed = _without(self._waiting, fn)
        if removed:
            self._maybe_stop_watching()
        return removed

    def __await__(self) -> Generator[Any, None, InferenceResult]:
        if self.done():
            return self._now()
        opening = self._opener()
        if opening is not None:  # resumed before the client was opened (rare)
            return self._opened_then(opening, None).__await__()
        return self._waiter().__await__()  # one future and its iterator: nothing else

    async def result(self, timeout: float | None = None) -> InferenceResult:
        """Wait for the result.

        Args:
            timeout: wait at most this many seconds for this call; the handle stays pending
                if it runs out. ``None`` waits until the handle's own deadline.

        Raises:
            InferenceFailedError: the model failed (its failure object's text is attached).
            InferenceTimeoutError: the deadline, or ``timeout``, passed first.
            InvocationError: S3 refused a read for a reason that retrying cannot fix.
            ClientClosedError: the client was closed while waiting.
            asyncio.CancelledError: :meth:`cancel` was called.
        """
        if not self.done():
            opening = self._opener()
            if opening is not None:
                return await self._opened_then(opening, timeout)
            return await self._waiter(timeout)
        return self._value()

    async def _opened_then(
        self, opening: Awaitable[None], timeout: float | None
    ) -> InferenceResult:
        """Open the client, then wait (a handle resumed before its client was opened)."""
        await opening
        if not self.done():
            return await self._waiter(timeout)
        return self._value()

    def _value(self) -> InferenceResult:
        """The outcome of a handle that is done: its result, or its error raised."""
        outcome = self._outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        return outcome

    def _now(self) -> Generator[Any, None, InferenceResult]:
        """:meth:`_value` as what ``__await__`` returns."""
        return self._value()
        yield  # (a generator)

    def _waiter(self, timeout: float | None = None) -> _Waiter:
        """A new waiter: its future gets the outcome (or ClientClosedError, or the timeout)."""
        self._ensure_watching()
        waiter = _Waiter(self)
        self._waiting = _added(self._waiting, waiter)
        if timeout is not None:
            timer = self._completions.call_later(
                timeout, functools.partial(self._timed_out, waiter, timeout)
            )
            waiter.add_done_callback(lambda _: timer.cancel())
        return waiter

    def _waiter_gone(self, waiter: _Waiter) -> None:
        """A waiter was cancelled: nobody else waits, the watch stops (the handle is pending)."""
        self._waiting, _ = _without(self._waiting, waiter)
        self._maybe_stop_watching()

    def _timed_out(self, waiter: _Waiter, timeout: float) -> None:
        if waiter.done():
            return
        waiter._handle = None
        self._waiting, _ = _without(self._waiting, waiter)
        waiter.set_exception(
            InferenceTimeoutError(
                f"inference {self.inference_id} still pending after timeout={timeout}s; "
                "the handle keeps its state and can be awaited again",
                inference_id=self.inference_id,
                deadline_exceeded=False,
                handle_state=self.to_dict(),
            )
        )
        self._maybe_stop_watching()

    # -- persistence ------------------------------------------------------------------------
    def to_dict(self) -> HandleState:
        """The handle's saved state (JSON-serializable): see :class:`HandleState`.

        Pass it to :meth:`AsyncInferenceClient.resume` to wait again, here or elsewhere.
        """
        return dump_state(self._target, self._submit_attempts)

    # -- internals --------------------------------------------------------------------------
    def _listen(self, wake: _Wake) -> None:
        """Call ``wake.fn(handle)`` once the handle is done, or its client closed.

        Raises:
            ClientClosedError: the client is closed already.
        """
        if self.done():
            asyncio.get_running_loop().call_soon(wake.fn, self)
            return
        self._ensure_watching()
        self._waiting = _added(self._waiting, wake)
        self._open_soon()

    def _unlisten(self, wake: _Wake) -> None:
        """Undo :meth:`_listen` (if it was not called yet)."""
        self._waiting, removed = _without(self._waiting, wake)
        if removed:
            self._maybe_stop_watching()

    def _ensure_watching(self) -> Watch:
        if self._watch is None:
            self._watch = self._completions.watch(
                self,
                self._target,
                self._polling,
                submitted=self._submitted,
                deadline=self._deadline,
            )
        return self._watch

    def _maybe_stop_watching(self) -> None:
        """Stop watching when nobody waits any more (the handle stays pending)."""
        if self._waiting is None and self._outcome is None:
            self._stop_watching()

    def _stop_watching(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            self._completions.release(watch, self)

    def _open_soon(self) -> None:
        """Open the client in the background (a handle resumed before it was opened)."""
        if self._opener in _OPENING:
            return  # one background open per client, not one per handle
        opening = self._opener()
        if opening is not None:
            task = asyncio.get_running_loop().create_task(_open_quietly(opening))
            _OPENING[self._opener] = task
            task.add_done_callback(lambda _: _OPENING.pop(self._opener, None))

    def _on_settled(self, watch: Watch, outcome: InferenceResult | BaseException) -> None:
        """The engine found the outcome of ``watch``."""
        if self.done() or watch is not self._watch:
            return
        if isinstance(outcome, (InferenceFailedError, InferenceTimeoutError)):
            outcome.handle_state = self.to_dict()
        # Any other error ends the handle too, so that callbacks run and nothing is unretrieved.
        self._finish(outcome)

    def _on_closed(self, watch: Watch) -> None:
        """The client closed: the handle stays pending; its waiters get ClientClosedError."""
        if self.done() or watch is not self._watch:
            return
        self._watch = None
        kept = []
        error: ClientClosedError | None = None
        loop = asyncio.get_running_loop()
        for waiter in _each(self._waiting):
            if isinstance(waiter, _Waiter):
                waiter._handle = None
                if not waiter.done():
                    error = error or ClientClosedError(
                        f"the client was closed while waiting for inference "
                        f"{self.inference_id}; resume the wait with "
                        "AsyncInferenceClient.resume(handle.to_dict())"
                    )
                    waiter.set_exception(error)
            elif isinstance(waiter, _Wake):
                loop.call_soon(waiter.fn, self)
            else:
                kept.append(waiter)  # done callbacks are not called
        self._waiting = kept[0] if len(kept) == 1 else kept or None

    def _finish(self, outcome: InferenceResult | BaseException) -> None:
        if self.done():
            return
        self._outcome = outcome
        self._stop_watching()
        waiting, self._waiting = self._waiting, None
        if waiting is None:
            return
        loop = asyncio.get_running_loop()
        for waiter in _each(waiting):
            if isinstance(waiter, _Waiter):
                waiter._handle = None
                if waiter.done():
                    continue
                if isinstance(outcome, asyncio.CancelledError):
                    waiter.cancel()
                elif isinstance(outcome, BaseException):
                    waiter.set_exception(outcome)
                else:
                    waiter.set_result(outcome)
            elif isinstance(waiter, _Wake):
                loop.call_soon(waiter.fn, self)
            else:
                loop.call_soon(waiter, self)
