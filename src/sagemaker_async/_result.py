"""What an inference is and what it ends with: its target, its saved state, its result."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, TypedDict

__all__ = ["HandleState", "InferenceResult", "InferenceStatus", "WatchTarget"]


class InferenceStatus(str, enum.Enum):
    """Where a handle stands."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class InferenceResult:
    """The output of one inference, read from its output location.

    Attributes:
        body: the raw bytes the model returned.
        content_type: the object's Content-Type as S3 reports it (the model's, when set).
        output_location: the S3 URI the result was read from.
        inference_id: the inference's id.
    """

    body: bytes = field(repr=False)
    content_type: str | None
    output_location: str
    inference_id: str

    def text(self, encoding: str | None = None) -> str:
        """The body decoded as text: ``encoding``, else the Content-Type's charset, else UTF-8."""
        return self.body.decode(encoding or self._charset() or "utf-8")

    def json(self, **kwargs: Any) -> Any:
        """The body parsed as JSON (keyword arguments go to :func:`json.loads`)."""
        return json.loads(self.text(), **kwargs)

    def _charset(self) -> str | None:
        for part in (self.content_type or "").split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                return value.strip('"')
        return None

    def __len__(self) -> int:
        return len(self.body)


@dataclass(frozen=True, slots=True)
class WatchTarget:
    """One submitted inference, as the engine needs it (times are wall-clock seconds)."""

    endpoint_name: str
    inference_id: str
    output_location: str
    failure_location: str | None  # None: the endpoint has no S3FailurePath
    submitted_at: float
    deadline: float
    #: The inference's OpenTelemetry span (None without OpenTelemetry): never saved.
    span: Any = field(default=None, compare=False, repr=False)


class _SavedState(TypedDict):
    version: int
    inference_id: str
    endpoint_name: str
    output_location: str
    failure_location: str | None
    submitted_at: str
    deadline: str


class HandleState(_SavedState, total=False):
    """A handle's saved state: what :meth:`AsyncInferenceHandle.to_dict` returns (JSON-safe).

    Give it to :meth:`AsyncInferenceClient.resume` (in this process or another) to wait for
    the inference again. Keys:

    - ``version``: 1.
    - ``inference_id``, ``endpoint_name``: the inference and its endpoint.
    - ``output_location``: ``s3://`` URI of the result; ``failure_location``: of the failure
      object, or None for an endpoint without S3FailurePath. :meth:`~AsyncInferenceClient.resume`
      also takes S3's https URLs (``https://bucket.s3.region.amazonaws.com/key``, or path
      style) and reads them as the ``s3://`` URIs they name.
    - ``submitted_at``, ``deadline``: ISO 8601 timestamps with a time zone (UTC).
    - ``submit_attempts``: how many InvokeEndpointAsync requests may have been accepted
      (always written; a state without it reads as 0, unknown).
    """

    submit_attempts: int
