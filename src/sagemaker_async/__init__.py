"""sagemaker-async: an asyncio-native client for Amazon SageMaker Asynchronous Inference.

Submit with :meth:`AsyncInferenceClient.invoke_endpoint_async`, then ``await`` the returned
:class:`AsyncInferenceHandle` to get the :class:`InferenceResult`, or the model's failure as
:class:`InferenceFailedError`::

    async with AsyncInferenceClient(region_name="us-east-1") as client:
        handle = await client.invoke_endpoint_async("my-endpoint", body=b'{"x": 1}',
                                                    content_type="application/json")
        result = await handle
        print(result.json())

``sagemaker_async.emulator`` runs a local async endpoint over real S3 for tests and demos.
"""

from ._batch import BatchSummary
from ._client import AsyncInferenceClient
from ._config import (
    CompletionConfig,
    NotificationConfig,
    PollingConfig,
    RetryConfig,
    TelemetryConfig,
)
from ._default import aclose_default_client, invoke_endpoint_async
from ._errors import (
    ClientClosedError,
    InferenceFailedError,
    InferenceTimeoutError,
    InvocationError,
    SageMakerAsyncError,
    ValidationError,
)
from ._handle import AsyncInferenceHandle
from ._logs import RedactingFilter
from ._map import MapOutcome, MapProgress, as_completed
from ._observe import ClientStats, Hooks, OutcomeEvent, SubmitEvent
from ._public import publish
from ._result import HandleState, InferenceResult, InferenceStatus
from ._s3batch import run_s3_batch
from ._version import __version__

__all__ = [
    "AsyncInferenceClient",
    "AsyncInferenceHandle",
    "BatchSummary",
    "ClientClosedError",
    "ClientStats",
    "CompletionConfig",
    "HandleState",
    "Hooks",
    "InferenceFailedError",
    "InferenceResult",
    "InferenceStatus",
    "InferenceTimeoutError",
    "InvocationError",
    "MapOutcome",
    "MapProgress",
    "NotificationConfig",
    "OutcomeEvent",
    "PollingConfig",
    "RedactingFilter",
    "RetryConfig",
    "SageMakerAsyncError",
    "SubmitEvent",
    "TelemetryConfig",
    "ValidationError",
    "__version__",
    "aclose_default_client",
    "as_completed",
    "invoke_endpoint_async",
    "run_s3_batch",
]


publish(__name__, __all__, globals())  # sagemaker_async.InferenceFailedError, not ._errors
del publish
