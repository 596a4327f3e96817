"""Configuration value objects: how handles are watched, and how calls are retried."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from ._errors import ValidationError

__all__ = [
    "CompletionConfig",
    "NotificationConfig",
    "PollingConfig",
    "RetryConfig",
    "TelemetryConfig",
]


_MAX_WAIT = 366 * 24 * 3600


def _check_positive(
    owner: str, field: str, value: float | None, *, allow_zero: bool = False
) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValidationError(f"{owner}.{field}", f"{value!r} is not a number", "a finite number")
    if value < 0 or (value == 0 and not allow_zero) or math.isinf(value):
        rule = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValidationError(f"{owner}.{field}", f"{value!r} is out of range", rule, value)


@dataclass(frozen=True)
class PollingConfig:
    """How soon, and how often, a handle's result is looked for.

    The client's completion engine looks for results in one of two ways per S3 directory (see
    :class:`CompletionConfig`): by reading each location (per-location polling), or by listing
    the directory (one request answers for up to 1,000 keys). Either way, the schedule is
    this one:

    - per-location polling reads the output location ``initial_delay`` after submission, then
      sleeps ``initial_delay * multiplier**n`` seconds, capped at ``max_delay`` and shortened
      by a random fraction of up to ``jitter`` of itself ("equal jitter"); the failure
      location is read half as often;
    - a listed directory is swept every ``initial_delay`` while results arrive, and backs off
      by ``multiplier`` while nothing changes, never slower than ``max_delay`` (a directory of
      failure objects only: twice that).

    So a result that is in S3 is found at most ``max_delay`` after it was written (a failure
    object: ``2 * max_delay``), unless the client's request budget is exhausted.

    Attributes:
        initial_delay: the first wait after submission, and the fastest sweep, in seconds.
        max_delay: the longest wait between two looks at a location, in seconds.
        multiplier: growth factor of the wait from one look to the next (>= 1).
        jitter: the largest random fraction (0 to < 1) cut from each per-location wait, so
            that handles submitted together do not poll in lock step.
        timeout: how long a handle waits, in seconds from submission. ``None`` (the default)
            derives it from the request: RequestTTLSeconds + InvocationTimeoutSeconds (their
            service defaults when not given) + ``deadline_margin``.
        deadline_margin: slack added to the derived deadline for queueing and S3 latency.
    """

    initial_delay: float = 0.5
    max_delay: float = 20.0
    multiplier: float = 2.0
    jitter: float = 0.5
    timeout: float | None = None
    deadline_margin: float = 60.0

    def __post_init__(self) -> None:
        _check_positive("PollingConfig", "initial_delay", self.initial_delay)
        _check_positive("PollingConfig", "max_delay", self.max_delay)
        _check_positive("PollingConfig", "jitter", self.jitter, allow_zero=True)
        if self.jitter >= 1:
            raise ValidationError(
                "PollingConfig.jitter",
                f"{self.jitter!r} is 1 or more",
                "a fraction 0 <= x < 1",
                self.jitter,
            )
        _check_positive("PollingConfig", "timeout", self.timeout)
        if self.timeout is not None and self.timeout > _MAX_WAIT:
            raise ValidationError(
                "PollingConfig.timeout",
                f"{self.timeout!r} is more than a year",
                f"at most {_MAX_WAIT} seconds (SageMaker keeps a request at most 7 hours)",
                self.timeout,
            )
        _check_positive("PollingConfig", "deadline_margin", self.deadline_margin, allow_zero=True)
        _check_positive("PollingConfig", "multiplier", self.multiplier)
        if self.multiplier < 1:
            raise ValidationError(
                "PollingConfig.multiplier",
                f"{self.multiplier!r} is below 1",
                ">= 1",
                self.multiplier,
            )
        if self.max_delay < self.initial_delay:
            raise ValidationError(
                "PollingConfig.max_delay",
                f"{self.max_delay!r} is below initial_delay={self.initial_delay!r}",
                "max_delay >= initial_delay",
                self.max_delay,
            )


Strategy = Literal["auto", "poll", "list"]
_STRATEGIES = ("auto", "poll", "list")


@dataclass(frozen=True)
class CompletionConfig:
    """How the client's completion engine finds results, client-wide.

    Pending locations are grouped by S3 directory (bucket and key prefix up to the last
    ``/``). For each directory the engine either reads every pending location (per-location
    polling) or lists the directory (ListObjectsV2: one request answers for up to 1,000
    keys), whichever costs less at the request prices below, and re-decides as the directory
    changes: listing wins when many results are pending in a directory, polling when few are,
    or when the directory holds many other objects (measured by the listing itself).

    Attributes:
        strategy: ``"auto"`` (the default: choose per directory by cost), ``"poll"`` (always
            read each location) or ``"list"`` (always list, even a crowded directory).
        max_requests_per_second: a cap on the S3 requests the client makes while waiting
            (reads of results included), shared by every handle. It halves when S3 answers
            ``SlowDown`` and grows back once S3 recovers, so the client never makes an
            overloaded bucket worse.
        get_price: price of one GET or HEAD, in any unit (default: US$ per 1,000, S3
            Standard in us-east-1).
        list_price: price of one LIST request, in the same unit. Only the ratio to
            ``get_price`` matters (12.5 by default).
    """

    strategy: Strategy = "auto"
    max_requests_per_second: float = 1000.0
    get_price: float = 0.0004
    list_price: float = 0.005

    def __post_init__(self) -> None:
        if self.strategy not in _STRATEGIES:
            raise ValidationError(
                "CompletionConfig.strategy",
                f"{self.strategy!r} is not a strategy",
                "one of 'auto', 'poll', 'list'",
                self.strategy,
            )
        _check_positive("CompletionConfig", "max_requests_per_second", self.max_requests_per_second)
        _check_positive("CompletionConfig", "get_price", self.get_price)
        _check_positive("CompletionConfig", "list_price", self.list_price)

    @property
    def list_cost(self) -> float:
        """What one LIST costs, counted in GETs."""
        return self.list_price / self.get_price


@dataclass(frozen=True)
class RetryConfig:
    """How transient errors are retried (throttling, 5xx, SlowDown, dropped connections).

    The invoke call is retried at most ``max_attempts`` times in all, always with the same
    InferenceId, so SageMaker can tie the attempts together. S3 calls made while waiting are
    retried until the handle's deadline: an unavailable S3 never fails a handle early.
    Validation and access errors are never retried.

    Attributes:
        max_attempts: attempts of InvokeEndpointAsync (and of the body upload), first included.
        initial_delay: first backoff sleep, in seconds.
        max_delay: longest backoff sleep, in seconds.
        multiplier: growth factor of the sleep between attempts.
        jitter: up to this many random seconds added to each sleep.
        connect_timeout: seconds to open a connection before the attempt is abandoned.
        read_timeout: seconds to wait for each chunk of an answer.
        attempt_timeout: seconds one attempt may take in all: an InvokeEndpointAsync (then
            retried, as it may have been accepted), or an S3 read made while waiting (read
            again later). A stalled or trickling answer is abandoned. A handle's last look at
            its deadline gets at most a second (both locations at once), so a handle always
            ends within about a second of its deadline.
        first_byte_timeout: seconds the small S3 reads made while waiting may take to begin
            answering: a HEAD, a result GET until its headers, a LIST page in all. S3's own
            guidance for latency-sensitive clients is to abandon a small request that has not
            answered within about two seconds and send it again: its slow tail is a few
            requests in a hundred, and the next try almost always answers. Such a read is
            tried again at once.
    """

    max_attempts: int = 5
    initial_delay: float = 0.2
    max_delay: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.2
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    attempt_timeout: float = 60.0
    first_byte_timeout: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ValidationError(
                "RetryConfig.max_attempts", f"{self.max_attempts!r} is not an int", "an int >= 1"
            )
        if self.max_attempts < 1:
            raise ValidationError(
                "RetryConfig.max_attempts",
                f"{self.max_attempts} is below 1",
                "an int >= 1",
                self.max_attempts,
            )
        _check_positive("RetryConfig", "initial_delay", self.initial_delay)
        _check_positive("RetryConfig", "max_delay", self.max_delay)
        _check_positive("RetryConfig", "jitter", self.jitter, allow_zero=True)
        _check_positive("RetryConfig", "multiplier", self.multiplier)
        _check_positive("RetryConfig", "connect_timeout", self.connect_timeout)
        _check_positive("RetryConfig", "read_timeout", self.read_timeout)
        _check_positive("RetryConfig", "attempt_timeout", self.attempt_timeout)
        _check_positive("RetryConfig", "first_byte_timeout", self.first_byte_timeout)
        if self.multiplier < 1:
            raise ValidationError(
                "RetryConfig.multiplier", f"{self.multiplier!r} is below 1", ">= 1", self.multiplier
            )


_SNS_ARN = re.compile(r"\Aarn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(\.fifo)?\Z")
_QUEUE_NAME_PREFIX = re.compile(r"\A[A-Za-z0-9_-]{1,60}\Z")


@dataclass(frozen=True)
class NotificationConfig:
    """Find results from the endpoint's SNS notifications, read from an SQS queue.

    An async endpoint whose ``AsyncInferenceConfig.OutputConfig.NotificationConfig`` names a
    success and an error topic publishes a message when each inference ends; with
    ``IncludeInferenceResponseIn`` the response (up to 128 KB) is inside. The client reads
    them with one long-polling receive loop, so a result costs no S3 request at all (one GET
    when the response is not inside), and a failure raises with the message's failure reason.
    S3 stays watched as a slow safety net: a lost notification delays a result, never loses it.

    Three modes; give exactly one of ``queue_url``, ``topics`` and ``discover=True``:

    - ``queue_url``: a queue you subscribed to the topics. Several clients may share it: a
      client deletes only the messages of its own inferences, and makes any other message
      visible again at once for its owner (after a few receipts, later and later).
    - ``topics``: the client creates a queue of its own when it opens, subscribes it to the
      topics with a filter policy that only passes its own inferences (their InferenceIds
      start with a prefix the client generates), and deletes both when it closes. A queue left
      by a client that died is deleted by the next client that opens, once it has been idle
      for ``idle_timeout`` seconds. This scales to any number of processes.
    - ``discover=True`` (``AsyncInferenceClient(notifications="auto")``): the ``topics`` mode,
      with each endpoint's topics read from its configuration (DescribeEndpoint,
      DescribeEndpointConfig) the first time the client invokes it, in the background. An
      endpoint without topics, or that the client may not describe, is watched on S3 alone
      (one INFO line says why). The queue is made when the first topics are found.

    Attributes:
        queue_url: URL of an SQS queue subscribed to the endpoint's topics.
        topics: ARNs of the endpoint's success and error topics (one or both).
        discover: find each endpoint's topics in its configuration (see above).
        safety_net: seconds after submission when S3 is first looked at for a result whose
            notification has not come, and the shortest interval between two looks (the
            handle's ``PollingConfig`` schedule applies when it is slower).
        hold: seconds a received message stays invisible to other consumers while this
            client handles it (SQS visibility timeout). Messages in the answer to a receive
            that was under way when the client closed (or died) come back after this long.
        idle_timeout: ``topics`` mode: seconds without a heartbeat after which a client's
            queue counts as abandoned and is deleted by any other client.
        queue_name_prefix: ``topics`` mode: names of the queues the client creates start
            with this (the client's own name follows).
    """

    queue_url: str | None = None
    topics: tuple[str, ...] = ()
    discover: bool = False
    safety_net: float = 60.0
    hold: float = 10.0
    idle_timeout: float = 3600.0
    queue_name_prefix: str = "sagemaker-async-"

    def __post_init__(self) -> None:
        if isinstance(self.topics, str) or not isinstance(self.topics, (tuple, list)):
            raise ValidationError(
                "NotificationConfig.topics",
                f"{self.topics!r} is not a sequence of ARNs",
                "a tuple of SNS topic ARNs",
            )
        object.__setattr__(self, "topics", tuple(self.topics))
        if not isinstance(self.discover, bool):
            raise ValidationError(
                "NotificationConfig.discover", f"{self.discover!r} is not a bool", "True or False"
            )
        given = [n for n in ("queue_url", "topics", "discover") if getattr(self, n)]
        if len(given) != 1:
            raise ValidationError(
                "NotificationConfig",
                f"{' and '.join(given)} were given" if given else "no mode was given",
                "exactly one: queue_url= (a queue you subscribed), topics= (the client "
                "subscribes a queue of its own) or discover=True (the topics each endpoint's "
                "configuration names)",
            )
        if self.queue_url is not None and (
            not isinstance(self.queue_url, str)
            or not self.queue_url.startswith(("https://", "http://"))
        ):
            raise ValidationError(
                "NotificationConfig.queue_url",
                f"{self.queue_url!r} is not a queue URL",
                "https://sqs.<region>.amazonaws.com/<account>/<queue name>",
            )
        for topic in self.topics:
            if not isinstance(topic, str) or not _SNS_ARN.match(topic):
                raise ValidationError(
                    "NotificationConfig.topics",
                    f"{topic!r} is not an SNS topic ARN",
                    "arn:aws:sns:<region>:<account>:<topic name>",
                )
        if len(set(self.topics)) != len(self.topics):
            raise ValidationError(
                "NotificationConfig.topics", "names a topic twice", "distinct topic ARNs"
            )
        _check_positive("NotificationConfig", "safety_net", self.safety_net)
        _check_positive("NotificationConfig", "hold", self.hold)
        if self.hold > 43200:
            raise ValidationError(
                "NotificationConfig.hold",
                f"{self.hold!r} is more than 12 hours",
                "at most 43200 seconds (SQS's longest visibility timeout)",
                self.hold,
            )
        _check_positive("NotificationConfig", "idle_timeout", self.idle_timeout)
        if self.idle_timeout < 60:
            raise ValidationError(
                "NotificationConfig.idle_timeout",
                f"{self.idle_timeout!r} is below a minute",
                ">= 60 seconds (a live client refreshes its heartbeat every third of it)",
                self.idle_timeout,
            )
        if not isinstance(self.queue_name_prefix, str) or not _QUEUE_NAME_PREFIX.match(
            self.queue_name_prefix
        ):
            raise ValidationError(
                "NotificationConfig.queue_name_prefix",
                f"{self.queue_name_prefix!r} is not usable in a queue name",
                "1 to 60 letters, digits, '-' or '_'",
            )

    def safety_polling(self, polling: PollingConfig) -> PollingConfig:
        """``polling`` slowed down to the safety net's pace."""
        initial = max(polling.initial_delay, self.safety_net)
        return replace(polling, initial_delay=initial, max_delay=max(polling.max_delay, initial))


@dataclass(frozen=True)
class TelemetryConfig:
    """OpenTelemetry spans and metrics, when ``opentelemetry-api`` is installed.

    Without this setting, a client reports to the global tracer and meter providers (no-ops
    until your application installs the OpenTelemetry SDK); without ``opentelemetry-api``,
    nothing is reported and nothing is imported. See docs/observability.md for the span and
    the instruments.

    Attributes:
        enabled: False turns spans and metrics off for this client.
        tracer_provider: an ``opentelemetry.trace.TracerProvider`` to use instead of the
            global one.
        meter_provider: an ``opentelemetry.metrics.MeterProvider`` to use instead of the
            global one.
    """

    enabled: bool = True
    tracer_provider: Any = None
    meter_provider: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValidationError(
                "TelemetryConfig.enabled", f"{self.enabled!r} is not a bool", "True or False"
            )
