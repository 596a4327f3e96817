"""InferenceResult: what a handle resolves to."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["InferenceResult", "InferenceStatus"]


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
