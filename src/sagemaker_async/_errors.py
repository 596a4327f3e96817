"""The exception hierarchy of sagemaker-async.

Every error the library raises on purpose derives from :class:`SageMakerAsyncError`::

    SageMakerAsyncError
    ├── ValidationError          (also ValueError)   bad argument, raised before any network call
    ├── InvocationError                              InvokeEndpointAsync (or an S3 call) was refused
    ├── InferenceFailedError                         the model's failure object appeared in S3
    ├── InferenceTimeoutError    (also TimeoutError) the deadline passed with neither object in S3
    └── ClientClosedError                            the client was closed while a handle waited

Errors raised while waiting carry the handle's ``to_dict()`` as ``handle_state`` when they have
one, so another process can resume the wait (see ``AsyncInferenceClient.resume``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._result import HandleState

__all__ = [
    "ClientClosedError",
    "InferenceFailedError",
    "InferenceTimeoutError",
    "InvocationError",
    "SageMakerAsyncError",
    "ValidationError",
]


class SageMakerAsyncError(Exception):
    """Root of every error raised by sagemaker-async."""


class ValidationError(SageMakerAsyncError, ValueError):
    """An argument broke a rule of the API; raised before any network call.

    Attributes:
        field: the API field (or client setting) that is wrong, e.g. ``"RequestTTLSeconds"``.
        value: the offending value (``None`` for sensitive fields such as CustomAttributes).
        rule: the rule it broke, in words.
    """

    def __init__(self, field: str, problem: str, rule: str, value: Any = None) -> None:
        self.field = field
        self.problem = problem
        self.rule = rule
        self.value = value
        super().__init__(f"{field}: {problem} (rule: {rule})")


class InvocationError(SageMakerAsyncError):
    """AWS refused a call (InvokeEndpointAsync, or an S3 call the client had to make).

    Attributes:
        code: the AWS error code, e.g. ``"ValidationError"`` or ``"ThrottlingException"``;
            ``"ConnectionError"`` when no answer came at all.
        request_id: the AWS request id, for AWS support, when the service sent one.
        status_code: the HTTP status, when there was a response.
        operation: the API operation that failed.
        inference_id: for InvokeEndpointAsync, the InferenceId every attempt carried.
        possibly_submitted: for InvokeEndpointAsync, True when an attempt may have reached
            SageMaker although no answer said so (a connection dropped or timed out after the
            request was sent, a 500): the inference may be queued and will then run; look
            for it by ``inference_id``. False when every attempt was refused for sure.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        request_id: str | None = None,
        status_code: int | None = None,
        operation: str = "InvokeEndpointAsync",
        inference_id: str | None = None,
        possibly_submitted: bool = False,
    ) -> None:
        self.code = code
        self.request_id = request_id
        self.status_code = status_code
        self.operation = operation
        self.inference_id = inference_id
        self.possibly_submitted = possibly_submitted
        detail = f"{operation} failed with {code}"
        if status_code is not None:
            detail += f" (HTTP {status_code})"
        if request_id:
            detail += f", request id {request_id}"
        if inference_id:
            detail += f", InferenceId {inference_id}"
        if possibly_submitted:
            detail += " (it may have reached SageMaker anyway: the inference may still run)"
        super().__init__(f"{detail}: {message}")


class InferenceFailedError(SageMakerAsyncError):
    """The endpoint wrote a failure object: the model raised, timed out, or the request expired.

    Attributes:
        message: the failure object's text, decoded as UTF-8 (undecodable bytes replaced),
            or the failure reason of the error notification that reported it.
        failure_location: the S3 URI of the failure object (None for an endpoint without
            S3FailurePath, whose failures are known from their error notification only).
        inference_id: the inference's id.
        handle_state: the handle's ``to_dict()``.
    """

    def __init__(
        self,
        message: str,
        *,
        failure_location: str | None,
        inference_id: str,
        handle_state: HandleState | None = None,
    ) -> None:
        self.message = message
        self.failure_location = failure_location
        self.inference_id = inference_id
        self.handle_state = handle_state
        super().__init__(f"inference {inference_id} failed ({failure_location}): {message}")


class InferenceTimeoutError(SageMakerAsyncError, TimeoutError):
    """Neither the output nor the failure object appeared in time.

    Raised when the handle's deadline passes (the handle is then finished, status
    ``timed_out``), or when ``handle.result(timeout=...)`` gives up first (the handle is then
    still pending and can be awaited again; ``deadline_exceeded`` is False).

    Attributes:
        inference_id: the inference's id.
        deadline_exceeded: True when the handle's own deadline passed.
        handle_state: the handle's ``to_dict()``, to resume the wait elsewhere.
    """

    def __init__(
        self,
        message: str,
        *,
        inference_id: str,
        deadline_exceeded: bool,
        handle_state: HandleState | None = None,
    ) -> None:
        self.inference_id = inference_id
        self.deadline_exceeded = deadline_exceeded
        self.handle_state = handle_state
        super().__init__(message)


class ClientClosedError(SageMakerAsyncError):
    """The client was closed (or never opened) while a call needed it.

    Attributes:
        inference_id: the inference whose call the close cut short, if any.
        possibly_submitted: True when that InvokeEndpointAsync may have reached SageMaker
            before the close (then the inference may run: its output will appear).
    """

    def __init__(
        self, message: str, *, inference_id: str | None = None, possibly_submitted: bool = False
    ) -> None:
        self.inference_id = inference_id
        self.possibly_submitted = possibly_submitted
        super().__init__(message)
