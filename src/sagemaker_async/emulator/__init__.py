"""A local emulator of SageMaker asynchronous endpoints, over a real S3 (moto by default).

It speaks the wire protocol of ``InvokeEndpointAsync`` (SigV4-verified, AWS error shapes), so
unmodified boto3 and aiobotocore clients work against it; it queues requests per endpoint with
a real concurrency limit, runs a model (a Python callable, a built-in, or a model container),
and writes the output or failure object to S3 and the SNS notifications, as the service does.

Three ways to use it:

- in-process: ``async with LocalAsyncEndpoint(endpoints=[EndpointConfig("ep")]) as emu: ...``
- in pytest: the fixtures of :mod:`sagemaker_async.emulator.pytest_plugin`
- as a process: :func:`serve` / :func:`run_forever` (``sagemaker-async emulate``)

See docs/emulator.md.
"""

from __future__ import annotations

from .._public import publish
from ._config import (
    DEFAULT_BUCKET,
    ERROR_NOTIFICATION_TOPIC,
    SUCCESS_NOTIFICATION_TOPIC,
    EndpointConfig,
    EndpointStats,
    parse_endpoint_spec,
)
from ._endpoint import EmulatedEndpoint
from ._local import LocalAsyncEndpoint
from ._models import (
    BUILTIN_MODELS,
    ContainerModel,
    ContainerUnavailableError,
    InferenceRequest,
    Model,
    ModelError,
    ModelResult,
    resolve_model,
)
from ._notifications import MAX_RESPONSE_IN_NOTIFICATION, build_notification
from ._s3 import S3_KINDS, EmbeddedS3
from ._sdk import sagemaker_session
from ._serve import run_forever, serve, shell_exports

__all__ = [
    "BUILTIN_MODELS",
    "DEFAULT_BUCKET",
    "ERROR_NOTIFICATION_TOPIC",
    "MAX_RESPONSE_IN_NOTIFICATION",
    "S3_KINDS",
    "SUCCESS_NOTIFICATION_TOPIC",
    "ContainerModel",
    "ContainerUnavailableError",
    "EmbeddedS3",
    "EmulatedEndpoint",
    "EndpointConfig",
    "EndpointStats",
    "InferenceRequest",
    "LocalAsyncEndpoint",
    "Model",
    "ModelError",
    "ModelResult",
    "build_notification",
    "parse_endpoint_spec",
    "resolve_model",
    "run_forever",
    "sagemaker_session",
    "serve",
    "shell_exports",
]

publish(__name__, __all__, globals())  # sagemaker_async.emulator.EndpointConfig, not ._config
del publish
