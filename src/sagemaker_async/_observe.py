"""What one client did: counts, structured log records, hooks, OpenTelemetry.

The client owns one :class:`Observer` and passes it down: the submit path reports submissions,
the retry policies report retries, the completion engine reports each inference's outcome and
the source that found it, and every AWS request is counted where aiobotocore sends it (a
``before-send`` handler on each AWS client: retries, SQS and SNS included, nothing to add in
the modules that make the calls). Counting is plain ints; hooks and OpenTelemetry are only
called when set up (``opentelemetry-api`` is imported only when installed, never required).

No record, event, span or metric carries a payload or CustomAttributes: ids, endpoint names,
locations, codes and timings only.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._config import TelemetryConfig
from ._errors import InferenceTimeoutError, InvocationError, ValidationError
from ._result import InferenceResult, InferenceStatus

if TYPE_CHECKING:
    from aiobotocore.client import AioBaseClient

    from ._result import WatchTarget

__all__ = ["ClientStats", "Hooks", "Observer", "OutcomeEvent", "SubmitEvent", "otel_available"]

logger = logging.getLogger("sagemaker_async")

# S3 operations by request class (the classes S3 prices and the embedded server counts).
_S3_KINDS = {
    "GetObject": "GET",
    "HeadObject": "HEAD",
    "ListObjectsV2": "LIST",
    "ListObjects": "LIST",
    "PutObject": "PUT",
    "DeleteObject": "DELETE",
}
# The engine's source names, as the public counts and events name them.
_SOURCES = {
    "poll": "polling",
    "list": "listing",
    "notify": "notification",
    "last_look": "last_look",
}


@dataclass(frozen=True)
class ClientStats:
    """What a client did since it was made: a snapshot from ``client.stats()``.

    Inference counts are per inference (two handles of one inference count once), and only
    for what this client waited for: an inference submitted here and resumed elsewhere has
    its outcome counted there.

    Attributes:
        in_flight: inferences being waited for now (a handle nobody awaits is not watched,
            so not counted, though SageMaker may still be running it).
        submitted: submissions accepted by InvokeEndpointAsync.
        submit_failed: submissions that failed for good (the call raised).
        duplicate_submissions: extra InvokeEndpointAsync requests that may have been accepted
            too (each is a copy SageMaker may run: see ``handle.submit_attempts``).
        resumed: handles made by ``client.resume()``.
        succeeded: inferences that ended with their result.
        failed: inferences that ended with an error (the model's failure, or an S3 error
            that retrying cannot fix).
        timed_out: inferences whose deadline passed with no outcome.
        cancelled: handles cancelled with ``handle.cancel()``.
        retries: calls sent again after a transient error (InvokeEndpointAsync, uploads,
            and reads of a found result).
        resolved_by: outcomes by the source that found them: ``"polling"`` (a GET of the
            location), ``"listing"`` (a ListObjectsV2 sweep), ``"notification"`` (SQS),
            ``"last_look"`` (the reads at the deadline). Timeouts have none.
        s3_requests: S3 requests sent, by kind: ``"GET"``, ``"HEAD"``, ``"LIST"``, ``"PUT"``,
            ``"DELETE"``, other operations by name. Each HTTP attempt counts once, as it is
            sent (a read cut short because its inference ended meanwhile is counted, though
            it may not have reached S3).
        sqs_requests: SQS requests sent, by operation (``"ReceiveMessage"``,
            ``"DeleteMessageBatch"``, ``"ChangeMessageVisibilityBatch"``...).
        sns_requests: SNS requests sent, by operation (``NotificationConfig(topics=)``).
        sagemaker_requests: sagemaker-runtime requests sent, by operation (each
            InvokeEndpointAsync attempt).
        notifications: with notifications, the queue's messages by how they were sorted:
            ``"messages"`` (received), ``"own"`` (reported one of this client's inferences),
            ``"duplicates"`` (copies of an own message, deleted with it), ``"foreign"``
            (another consumer's, given back), ``"unparseable"`` (not a SageMaker
            notification, given back), ``"mismatched"`` (named this client's inference or
            output location but contradicted it: resolved nothing; see docs/notifications.md).
            Each receipt counts: a message given back and received again counts again.
    """

    in_flight: int
    submitted: int
    submit_failed: int
    duplicate_submissions: int
    resumed: int
    succeeded: int
    failed: int
    timed_out: int
    cancelled: int
    retries: int
    resolved_by: Mapping[str, int]
    s3_requests: Mapping[str, int]
    sqs_requests: Mapping[str, int]
    sns_requests: Mapping[str, int]
    sagemaker_requests: Mapping[str, int]
    notifications: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SubmitEvent:
    """A submission ended (the argument of ``Hooks.on_submit``).

    Attributes:
        endpoint_name: the endpoint.
        inference_id: the InferenceId every attempt carried.
        attempts: InvokeEndpointAsync requests sent.
        submit_attempts: how many of them may have been accepted (the handle's
            ``submit_attempts``; more than one: SageMaker may run it more than once).
        elapsed: seconds the submission took (upload, invoke and retries).
        error: None when accepted; else the error the call raised (an
            :class:`InvocationError` or :class:`ClientClosedError`).
    """

    endpoint_name: str
    inference_id: str
    attempts: int
    submit_attempts: int
    elapsed: float
    error: BaseException | None = None


@dataclass(frozen=True)
class OutcomeEvent:
    """An inference ended (the argument of ``Hooks.on_outcome``).

    Attributes:
        endpoint_name: the endpoint.
        inference_id: the inference's id.
        status: ``SUCCEEDED``, ``FAILED``, ``TIMED_OUT`` or ``CANCELLED``.
        source: what found the outcome (``"polling"``, ``"listing"``, ``"notification"``,
            ``"last_look"``); None for a timeout or a cancellation.
        elapsed: seconds from submission to the outcome.
        error: the error the handle raises (None when it succeeded or was cancelled).
    """

    endpoint_name: str
    inference_id: str
    status: InferenceStatus
    source: str | None
    elapsed: float
    error: BaseException | None = None


@dataclass(frozen=True)
class Hooks:
    """Callbacks for your own metrics: one when a submission ends, one per inference's outcome.

    ::

        def count(event: OutcomeEvent) -> None:
            outcomes.labels(event.endpoint_name, event.status.value).inc()

        AsyncInferenceClient(hooks=Hooks(on_outcome=count))

    Hooks are plain (synchronous) callables, called on the event loop as the event happens:
    keep them quick (count, record, enqueue). ``async def`` functions are refused; to do
    asynchronous work, start a task from the hook. A hook that raises does not affect the
    inference: the error is logged (once at WARNING, then at DEBUG) and the hook keeps
    being called.

    Attributes:
        on_submit: called with a :class:`SubmitEvent` when a submission ends: accepted by
            InvokeEndpointAsync (``error`` None) or failed for good (``error`` set).
        on_outcome: called with an :class:`OutcomeEvent` once per inference this client
            waited for, when it succeeds, fails or times out, and when a handle is
            cancelled (not when a ``result(timeout=)`` runs out: the handle stays pending).
    """

    on_submit: Callable[[SubmitEvent], object] | None = None
    on_outcome: Callable[[OutcomeEvent], object] | None = None

    def __post_init__(self) -> None:
        for name in ("on_submit", "on_outcome"):
            hook = getattr(self, name)
            if hook is None:
                continue
            if not callable(hook):
                raise ValidationError(
                    f"Hooks.{name}", f"{hook!r} is not callable", "a function of one event"
                )
            if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(hook.__call__):
                raise ValidationError(
                    f"Hooks.{name}",
                    "is an async function; hooks are called synchronously",
                    "a plain function (start a task from it for asynchronous work)",
                )


def otel_available() -> bool:
    """True when ``opentelemetry-api`` can be imported."""
    try:
        import opentelemetry.metrics
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return False
    return True


def _error_type(error: BaseException) -> str:
    code = getattr(error, "code", None) if isinstance(error, InvocationError) else None
    return f"{type(error).__name__}:{code}" if code else type(error).__name__


class _Telemetry:
    """The client's tracer and instruments; made only when opentelemetry-api imports."""

    def __init__(self, config: TelemetryConfig) -> None:
        from opentelemetry import metrics, trace

        self._trace = trace
        self._tracer = trace.get_tracer("sagemaker_async", tracer_provider=config.tracer_provider)
        meter = metrics.get_meter("sagemaker_async", meter_provider=config.meter_provider)
        self.outcomes = meter.create_counter(
            "sagemaker_async.inferences",
            unit="{inference}",
            description="Inferences that ended, by endpoint, status and source",
        )
        self.duration = self._histogram(meter)
        self.submissions = meter.create_counter(
            "sagemaker_async.submissions",
            unit="{submission}",
            description="Submissions that ended, by endpoint and status (accepted or failed)",
        )
        self.retries = meter.create_counter(
            "sagemaker_async.retries",
            unit="{retry}",
            description="Calls sent again after a transient error, by operation",
        )
        self.requests = meter.create_counter(
            "sagemaker_async.aws.requests",
            unit="{request}",
            description="AWS requests sent, by service and operation",
        )

    @staticmethod
    def _histogram(meter: Any) -> Any:
        name, unit = "sagemaker_async.inference.duration", "s"
        description = "Seconds from submission to outcome, by endpoint and status"
        bounds = [0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 7200, 21600]
        try:  # the bucket advice arrived in opentelemetry-api 1.23
            return meter.create_histogram(
                name, unit=unit, description=description, explicit_bucket_boundaries_advisory=bounds
            )
        except TypeError:  # pragma: no cover - older API
            return meter.create_histogram(name, unit=unit, description=description)

    def start(
        self, endpoint: str, inference_id: str, *, start_time: float | None, resumed: bool
    ) -> Any:
        from opentelemetry.trace import SpanKind

        attributes: dict[str, Any] = {
            "sagemaker_async.endpoint": endpoint,
            "sagemaker_async.inference_id": inference_id,
        }
        if resumed:
            attributes["sagemaker_async.resumed"] = True
        return self._tracer.start_span(
            "sagemaker_async.inference",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=None if start_time is None else int(start_time * 1e9),
        )

    def using(self, span: Any) -> contextlib.AbstractContextManager[Any]:
        return self._trace.use_span(
            span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        )

    def end(
        self,
        span: Any,
        status: str,
        *,
        source: str | None = None,
        error: BaseException | None = None,
        attempts: int | None = None,
    ) -> None:
        if span is None or not span.is_recording():
            return  # a no-op span, or one that another handle of the inference ended
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("sagemaker_async.status", status)
        if source is not None:
            span.set_attribute("sagemaker_async.source", source)
        if attempts is not None:
            span.set_attribute("sagemaker_async.submit_attempts", attempts)
        if error is not None:
            # The type and code only: a failure's message is the model's text.
            kind = _error_type(error)
            span.set_attribute("error.type", kind)
            span.set_status(Status(StatusCode.ERROR, kind))
        span.end()


class Observer:
    """Counts, logs, hooks and telemetry of one client (see the module's docstring)."""

    def __init__(self, hooks: Hooks | None = None, telemetry: TelemetryConfig | None = None):
        self.submitted = 0
        self.submit_failed = 0
        self.duplicates = 0
        self.resumed = 0
        self.succeeded = 0
        self.failed = 0
        self.timed_out = 0
        self.cancelled = 0
        self.retries = 0
        self.resolved_by: dict[str, int] = {}
        self.requests: dict[str, dict[str, int]] = {}
        self._on_submit = hooks.on_submit if hooks is not None else None
        self._on_outcome = hooks.on_outcome if hooks is not None else None
        self._hook_warned: set[str] = set()
        self._instrumented: list[AioBaseClient] = []
        # Two clients may share an injected AWS client: each counts its requests.
        self._handler_id = f"sagemaker_async.observe.{id(self)}"
        config = telemetry or TelemetryConfig()
        self._otel = _Telemetry(config) if config.enabled and otel_available() else None

    # -- AWS requests -----------------------------------------------------------------------
    def instrument(self, client: AioBaseClient) -> None:
        """Count every request ``client`` sends (each HTTP attempt, whoever makes the call)."""
        client.meta.events.register("before-send", self._sending, unique_id=self._handler_id)
        self._instrumented.append(client)

    def uninstrument(self) -> None:
        """Stop counting the requests of the clients passed to :meth:`instrument`."""
        clients, self._instrumented = self._instrumented, []
        for client in clients:
            client.meta.events.unregister("before-send", self._sending, unique_id=self._handler_id)

    def _sending(self, event_name: str = "", **_kwargs: Any) -> None:
        # "before-send.<service id>.<operation>"; botocore awaits nothing from us.
        rest = event_name.partition(".")[2]
        service, _, operation = rest.partition(".")
        self.count_request(service, operation)

    def count_request(self, service: str, operation: str) -> None:
        """One request to ``service`` (``"s3"``, ``"sqs"``...) for ``operation``."""
        kind = _S3_KINDS.get(operation, operation) if service == "s3" else operation
        per_service = self.requests.get(service)
        if per_service is None:
            per_service = self.requests[service] = {}
        per_service[kind] = per_service.get(kind, 0) + 1
        if self._otel is not None:
            self._otel.requests.add(1, {"rpc.service": service, "rpc.method": operation})

    # -- submissions ------------------------------------------------------------------------
    def start(
        self,
        endpoint: str,
        inference_id: str,
        *,
        start_time: float | None = None,
        resumed: bool = False,
    ) -> Any:
        """The inference's span (None without OpenTelemetry): ``start_time`` is wall time."""
        if self._otel is None:
            return None
        return self._otel.start(endpoint, inference_id, start_time=start_time, resumed=resumed)

    def using(self, span: Any) -> contextlib.AbstractContextManager[Any]:
        """Make ``span`` current (AWS calls traced by other instrumentations nest under it)."""
        if self._otel is None or span is None:
            return contextlib.nullcontext()
        return self._otel.using(span)

    def retried(self, operation: str) -> None:
        """A call is about to be sent again (the retry policy logs it)."""
        self.retries += 1
        if self._otel is not None:
            self._otel.retries.add(1, {"rpc.method": operation})

    def accepted(
        self, target: WatchTarget, *, attempts: int, submissions: int, elapsed: float
    ) -> None:
        """InvokeEndpointAsync accepted ``target``'s inference after ``attempts`` requests."""
        self.submitted += 1
        self.duplicates += submissions - 1
        endpoint, inference_id = target.endpoint_name, target.inference_id
        if logger.isEnabledFor(logging.DEBUG):  # no record built for nothing
            logger.debug(
                "inference %s submitted to endpoint %s in %.3f s (%d attempt(s))",
                inference_id,
                endpoint,
                elapsed,
                attempts,
                extra={
                    "event": "submitted",
                    "inference_id": inference_id,
                    "endpoint": endpoint,
                    "elapsed": elapsed,
                    "attempts": attempts,
                    "submit_attempts": submissions,
                    "output_location": target.output_location,
                },
            )
        if self._otel is not None:
            self._otel.submissions.add(
                1, {"sagemaker_async.endpoint": endpoint, "sagemaker_async.status": "accepted"}
            )
        if self._on_submit is not None:
            self._call(
                "on_submit",
                self._on_submit,
                SubmitEvent(endpoint, inference_id, attempts, submissions, elapsed),
            )

    def refused(
        self,
        endpoint: str,
        inference_id: str,
        error: BaseException,
        *,
        attempts: int,
        uncertain: int,
        elapsed: float,
        span: Any,
    ) -> None:
        """The submission of ``inference_id`` failed for good with ``error``."""
        self.submit_failed += 1
        logger.debug(
            "inference %s: submission to endpoint %s failed after %.3f s (%d attempt(s)): %s",
            inference_id,
            endpoint,
            elapsed,
            attempts,
            _error_type(error),
            extra={
                "event": "submit_failed",
                "inference_id": inference_id,
                "endpoint": endpoint,
                "elapsed": elapsed,
                "attempts": attempts,
                "error": _error_type(error),
            },
        )
        if self._otel is not None:
            self._otel.submissions.add(
                1, {"sagemaker_async.endpoint": endpoint, "sagemaker_async.status": "failed"}
            )
            self._otel.end(span, "submit_failed", error=error, attempts=uncertain)
        if self._on_submit is not None:
            self._call(
                "on_submit",
                self._on_submit,
                SubmitEvent(endpoint, inference_id, attempts, uncertain, elapsed, error),
            )

    # -- outcomes ---------------------------------------------------------------------------
    def outcome(
        self,
        target: WatchTarget,
        outcome: InferenceResult | BaseException | None,
        *,
        source: str | None,
        elapsed: float,
    ) -> None:
        """``target``'s inference ended: a result, an error, or None when it was cancelled."""
        public = _SOURCES.get(source, source) if source is not None else None
        error = outcome if isinstance(outcome, BaseException) else None
        level = logging.DEBUG
        if outcome is None:
            status = InferenceStatus.CANCELLED
            self.cancelled += 1
            public = None
        elif isinstance(outcome, InferenceResult):
            status = InferenceStatus.SUCCEEDED
            self.succeeded += 1
        elif isinstance(outcome, InferenceTimeoutError):
            status = InferenceStatus.TIMED_OUT
            self.timed_out += 1
            public = None
            level = logging.INFO  # no answer at all: worth seeing with -v
        else:
            status = InferenceStatus.FAILED
            self.failed += 1
        if public is not None:
            self.resolved_by[public] = self.resolved_by.get(public, 0) + 1
        endpoint, inference_id = target.endpoint_name, target.inference_id
        if logger.isEnabledFor(level):
            event = "resolved" if status is InferenceStatus.SUCCEEDED else status.value
            logger.log(
                level,
                "inference %s %s after %.3f s%s%s",
                inference_id,
                status.value,
                elapsed,
                f" ({_error_type(error)})" if error is not None else "",
                f", found by {public}" if public is not None else "",
                extra={
                    "event": event,
                    "inference_id": inference_id,
                    "endpoint": endpoint,
                    "elapsed": elapsed,
                    "source": public,
                    "status": status.value,
                    "error": _error_type(error) if error is not None else None,
                },
            )
        if self._otel is not None:
            attributes = {
                "sagemaker_async.endpoint": endpoint,
                "sagemaker_async.status": status.value,
            }
            self._otel.duration.record(elapsed, attributes)
            if public is not None:
                attributes = {**attributes, "sagemaker_async.source": public}
            self._otel.outcomes.add(1, attributes)
            self._otel.end(target.span, status.value, source=public, error=error)
        if self._on_outcome is not None:
            self._call(
                "on_outcome",
                self._on_outcome,
                OutcomeEvent(endpoint, inference_id, status, public, elapsed, error),
            )

    # -- hooks ------------------------------------------------------------------------------
    def _call(self, name: str, hook: Callable[[Any], object], event: object) -> None:
        try:
            returned = hook(event)
        except Exception:
            self._hook_failed(name, "raised", exc_info=True)
            return
        if inspect.isawaitable(returned):
            if inspect.iscoroutine(returned):
                returned.close()  # never awaited: no "was never awaited" warning either
            self._hook_failed(name, "returned an awaitable (hooks are called synchronously)")

    def _hook_failed(self, name: str, what: str, *, exc_info: bool = False) -> None:
        first = name not in self._hook_warned
        self._hook_warned.add(name)
        logger.log(
            logging.WARNING if first else logging.DEBUG,
            "the %s hook %s; the inference goes on%s",
            name,
            what,
            " (further errors of this hook are logged at DEBUG)" if first else "",
            exc_info=exc_info,
            extra={"event": "hook_failed", "hook": name},
        )

    # -- the snapshot -----------------------------------------------------------------------
    def snapshot(
        self, in_flight: int, notifications: Mapping[str, int] | None = None
    ) -> ClientStats:
        """The counts now, as a :class:`ClientStats` (``notifications``: the sources' counts)."""
        requests = self.requests
        return ClientStats(
            in_flight=in_flight,
            submitted=self.submitted,
            submit_failed=self.submit_failed,
            duplicate_submissions=self.duplicates,
            resumed=self.resumed,
            succeeded=self.succeeded,
            failed=self.failed,
            timed_out=self.timed_out,
            cancelled=self.cancelled,
            retries=self.retries,
            resolved_by=dict(self.resolved_by),
            s3_requests=dict(requests.get("s3", {})),
            sqs_requests=dict(requests.get("sqs", {})),
            sns_requests=dict(requests.get("sns", {})),
            sagemaker_requests=dict(requests.get("sagemaker-runtime", {})),
            notifications=dict(notifications or {}),
        )
