"""Configuration of one emulated endpoint, and the statistics it reports."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .._errors import ValidationError
from ._models import Model, resolve_model

__all__ = [
    "DEFAULT_BUCKET",
    "ERROR_NOTIFICATION_TOPIC",
    "SUCCESS_NOTIFICATION_TOPIC",
    "EndpointConfig",
    "EndpointStats",
    "parse_endpoint_spec",
]

#: The bucket that holds outputs and failures of endpoints configured without S3 paths.
DEFAULT_BUCKET = "sagemaker-async-emulator"
#: Values of ``include_inference_response_in`` (NotificationConfig.IncludeInferenceResponseIn).
SUCCESS_NOTIFICATION_TOPIC = "SUCCESS_NOTIFICATION_TOPIC"
ERROR_NOTIFICATION_TOPIC = "ERROR_NOTIFICATION_TOPIC"

_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")


@dataclass(frozen=True)
class EndpointConfig:
    """One async endpoint: its model and its AsyncInferenceConfig.

    Attributes:
        name: the endpoint name (1..63, letters, digits and hyphens).
        model: a :data:`Model` callable, or a spec for :func:`resolve_model` (``"echo"``,
            ``"fail"``, ``"sentiment"``, ``"sleep:0.5"``, ``"http://127.0.0.1:8080"``).
        s3_output_path: OutputConfig.S3OutputPath; default
            ``s3://<emulator bucket>/<name>/output``.
        s3_failure_path: OutputConfig.S3FailurePath; default
            ``s3://<emulator bucket>/<name>/failure``.
        has_s3_failure_path: False for an endpoint without S3FailurePath (it is optional):
            responses then carry no FailureLocation and a failure writes no object; only the
            error notification (if configured) tells of it.
        instance_count: instances behind the endpoint at start (0 is allowed: requests wait
            until their TTL, or until autoscaling adds an instance, like an endpoint scaled to
            zero); autoscaling and UpdateEndpointWeightsAndCapacities change the running count
            (:attr:`EmulatedEndpoint.instances`), not this.
        max_concurrent_invocations_per_instance: ClientConfig's limit (1..1000); the endpoint
            runs ``instance_count * max_concurrent_invocations_per_instance`` inferences at once
            and queues the rest. The service chooses a value itself when none is configured
            (its documentation promises "an optimal value", and names none); the emulator's
            default, 4, is only a small number that makes queueing visible in tests: set the
            value of the endpoint you emulate.
        success_topic: SNS topic ARN for success notifications (NotificationConfig.SuccessTopic).
        error_topic: SNS topic ARN for error notifications (NotificationConfig.ErrorTopic).
        include_inference_response_in: any of ``SUCCESS_NOTIFICATION_TOPIC`` and
            ``ERROR_NOTIFICATION_TOPIC``: add the response (when at most 128 KB) to that
            notification.
        throttle_rate: invokes per second the endpoint takes (a token bucket of
            ``throttle_burst``); above it, 400 ThrottlingException, as the service answers.
            None (the default): no limit.
        throttle_burst: the bucket's size (requests that may come at once).
        fault_rate: the probability (0..1) that an invoke is answered 503
            ServiceUnavailable instead of being queued, to test retry handling.
    """

    name: str
    model: Model | str = "echo"
    s3_output_path: str | None = None
    s3_failure_path: str | None = None
    has_s3_failure_path: bool = True
    instance_count: int = 1
    max_concurrent_invocations_per_instance: int = 4
    success_topic: str | None = None
    error_topic: str | None = None
    include_inference_response_in: tuple[str, ...] = field(default=())
    throttle_rate: float | None = None
    throttle_burst: int = 1
    fault_rate: float = 0.0

    def __post_init__(self) -> None:
        if not (1 <= len(self.name) <= 63 and _NAME.fullmatch(self.name)):
            raise ValidationError(
                "EndpointConfig.name",
                f"{self.name!r} is not a valid endpoint name",
                "1..63 letters, digits and hyphens, starting and ending with a letter or digit",
                self.name,
            )
        if self.instance_count < 0:
            raise ValidationError(
                "EndpointConfig.instance_count",
                f"{self.instance_count} is negative",
                ">= 0",
                self.instance_count,
            )
        if not 1 <= self.max_concurrent_invocations_per_instance <= 1000:
            raise ValidationError(
                "EndpointConfig.max_concurrent_invocations_per_instance",
                f"{self.max_concurrent_invocations_per_instance} is out of range",
                "1..1000",
                self.max_concurrent_invocations_per_instance,
            )
        for path_field in ("s3_output_path", "s3_failure_path"):
            value = getattr(self, path_field)
            if value is not None and not value.startswith("s3://"):
                raise ValidationError(
                    f"EndpointConfig.{path_field}",
                    f"{value!r} is not an s3:// URI",
                    "s3://bucket/prefix",
                    value,
                )
        unknown = set(self.include_inference_response_in) - {
            SUCCESS_NOTIFICATION_TOPIC,
            ERROR_NOTIFICATION_TOPIC,
        }
        if unknown:
            raise ValidationError(
                "EndpointConfig.include_inference_response_in",
                f"{sorted(unknown)} are unknown",
                f"{SUCCESS_NOTIFICATION_TOPIC!r} and/or {ERROR_NOTIFICATION_TOPIC!r}",
            )
        if self.throttle_rate is not None and not self.throttle_rate > 0:
            raise ValidationError(
                "EndpointConfig.throttle_rate",
                f"{self.throttle_rate!r} is not a positive rate",
                "requests per second > 0, or None",
                self.throttle_rate,
            )
        if isinstance(self.throttle_burst, bool) or not (
            isinstance(self.throttle_burst, int) and self.throttle_burst >= 1
        ):
            raise ValidationError(
                "EndpointConfig.throttle_burst",
                f"{self.throttle_burst!r} is not a whole number >= 1",
                "an int >= 1",
                self.throttle_burst,
            )
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValidationError(
                "EndpointConfig.fault_rate",
                f"{self.fault_rate!r} is not a probability",
                "0 <= fault_rate <= 1",
                self.fault_rate,
            )
        if isinstance(self.model, str):
            resolve_model(self.model)  # fail early on a bad spec

    @property
    def concurrency(self) -> int:
        """How many inferences run at once."""
        return self.instance_count * self.max_concurrent_invocations_per_instance

    def output_path(self, bucket: str = DEFAULT_BUCKET) -> str:
        """S3OutputPath without trailing slash (the default one under ``bucket`` when unset)."""
        return (self.s3_output_path or f"s3://{bucket}/{self.name}/output").rstrip("/")

    def failure_path(self, bucket: str = DEFAULT_BUCKET) -> str:
        """S3FailurePath without trailing slash (the default one under ``bucket`` when unset)."""
        return (self.s3_failure_path or f"s3://{bucket}/{self.name}/failure").rstrip("/")


@dataclass(frozen=True)
class EndpointStats:
    """A snapshot of an endpoint's queue and counters.

    Attributes:
        name: the endpoint name.
        backlog: requests waiting in the queue (ApproximateBacklogSize).
        in_flight: requests the model is processing now.
        concurrency: how many requests run at once at most.
        received: requests accepted since start.
        completed: requests whose output object was written.
        failed: requests whose failure object was written (including expired and timed out).
        expired: requests that waited longer than their RequestTTLSeconds.
        timed_out: requests whose model ran longer than InvocationTimeoutSeconds.
        oldest_request_age_seconds: age of the oldest queued request
            (ApproximateAgeOfOldestRequest), 0.0 when the queue is empty.
        input_unreadable: requests that got no output, no failure and no notification
            because their InputLocation could not be read (a missing object or bucket, 403).
        output_unwritable: requests whose output or failure object S3 refused (a missing
            bucket, 403): they have no object and no notification.
    """

    name: str
    backlog: int
    in_flight: int
    concurrency: int
    received: int
    completed: int
    failed: int
    expired: int
    timed_out: int
    oldest_request_age_seconds: float
    input_unreadable: int = 0
    output_unwritable: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The stats as a JSON-ready dict (the body of ``GET /_emulator/endpoints/{name}``)."""
        return asdict(self)


def parse_endpoint_spec(spec: str, **options: Any) -> EndpointConfig:
    """Parse ``"NAME=MODEL"`` (as in ``--endpoint NAME=MODEL``) into an :class:`EndpointConfig`.

    ``MODEL`` is a :func:`resolve_model` spec; it defaults to ``echo`` when ``=MODEL`` is left
    out. ``options`` are further EndpointConfig fields.

    Raises:
        ValidationError: the name or the model spec is invalid (a ValueError).
    """
    name, _, model = spec.partition("=")
    return EndpointConfig(name=name.strip(), model=model.strip() or "echo", **options)
