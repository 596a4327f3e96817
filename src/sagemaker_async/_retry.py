"""Which AWS errors are transient, and the tenacity policies that retry them."""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import aiohttp
import tenacity
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProxyConnectionError,
    ReadTimeoutError,
    ResponseStreamingError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from ._backoff import backoff_delay
from ._clock import Clock
from ._config import RetryConfig
from ._errors import InvocationError

__all__ = [
    "NOT_THE_SERVICE",
    "REQUEST_ID_HEADERS",
    "AttemptTimeout",
    "BadAnswer",
    "bounded",
    "call_with_retry",
    "error_code",
    "from_the_service",
    "is_connection_error",
    "is_transient",
    "may_have_reached",
    "retry_delay",
    "retrying",
    "to_invocation_error",
]

T = TypeVar("T")
logger = logging.getLogger("sagemaker_async")


class AttemptTimeout(ReadTimeoutError):
    """One attempt took longer than ``RetryConfig.attempt_timeout`` and was abandoned.

    A read timeout to the retry rules: transient, and it may have reached the service.
    """

    fmt = "No complete answer from {endpoint_url} after {limit:g} s"


def _cancelling() -> bool:
    """True when the current task itself is being cancelled (Python 3.11+; else False)."""
    task = asyncio.current_task()
    return bool(task is not None and sys.version_info >= (3, 11) and task.cancelling())


async def bounded(call: Awaitable[T], limit: float, clock: Clock, what: str) -> T:
    """Await ``call``, abandoning it after ``limit`` seconds of ``clock``.

    botocore's timeouts bound each read of a socket, not an answer that trickles in byte by
    byte, nor time as the client's clock counts it.

    Raises:
        AttemptTimeout: the limit passed first (the call is cancelled).
    """
    task = asyncio.ensure_future(call)
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = clock.call_later(limit, expire)
    try:
        return await task
    except asyncio.CancelledError:
        if expired and not _cancelling():
            raise AttemptTimeout(endpoint_url=what, limit=limit) from None
        raise
    finally:
        timer.cancel()


_THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "EC2ThrottledException",
    }
)
_TRANSIENT = _THROTTLING | {
    "InternalFailure",
    "InternalError",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "RequestTimeout",
    "RequestTimeoutException",
    "PriorRequestNotComplete",
}


#: Headers that name the request in every answer of the services (S3, MinIO: the first; the
#: JSON and query services, and moto for all: the second).
REQUEST_ID_HEADERS = ("x-amz-request-id", "x-amzn-requestid")

#: The code of an answer that is not the service's (see :func:`from_the_service`).
NOT_THE_SERVICE = "NotTheService"


def from_the_service(response: Mapping[str, Any]) -> bool:
    """True when a botocore response (or a ClientError's) names its request.

    Every answer of the service does; an error page of a proxy, captive portal or firewall
    does not.
    botocore fills ``RequestId`` from the header, except for some error answers (S3's HEAD),
    so the headers are read too.
    """
    meta = response.get("ResponseMetadata") or {}
    if meta.get("RequestId"):
        return True
    headers = meta.get("HTTPHeaders") or {}
    return any(str(name).lower() in REQUEST_ID_HEADERS for name in headers)


class BadAnswer(Exception):
    """A successful HTTP answer that cannot be used.

    It is not the service's (no request id), or lacks a field the API always returns.
    Transient when not the service's.
    """

    def __init__(self, message: str, response: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.response = response


def error_code(exc: ClientError) -> str:
    """The AWS error code of a ClientError ("" when the response carried none)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError | BadAnswer) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def is_connection_error(exc: BaseException) -> bool:
    """True for a dropped, refused or timed-out connection (no usable answer at all).

    TLS and proxy failures (a bad CA bundle, a wrong proxy) are not: retrying cannot fix them.
    """
    if isinstance(exc, (SSLError, ProxyConnectionError, aiohttp.ClientSSLError)):
        return False
    if isinstance(exc, HTTPClientError) and isinstance(
        exc.kwargs.get("error"), (ssl.SSLError, aiohttp.ClientSSLError)
    ):
        return False
    if isinstance(
        exc,
        (
            BotoConnectionError,
            ConnectionClosedError,
            ReadTimeoutError,
            ResponseStreamingError,
            aiohttp.ClientConnectionError,
            aiohttp.ClientPayloadError,
        ),
    ):
        return True
    if isinstance(exc, HTTPClientError):
        # aiobotocore wraps every error of its HTTP layer; only network ones are transient.
        inner = exc.kwargs.get("error")
        return isinstance(inner, (aiohttp.ClientError, OSError, asyncio.TimeoutError))
    return False


def is_transient(exc: BaseException) -> bool:
    """True when the same call may succeed if sent again.

    Throttling, 5xx, connection errors, and any answer that is not the service's (a proxy's
    page, whatever its status).
    """
    if isinstance(exc, BadAnswer):
        return not from_the_service(exc.response)
    if isinstance(exc, ClientError):
        return (
            not from_the_service(exc.response)
            or error_code(exc) in _TRANSIENT
            or _status(exc) in (429, 500, 502, 503, 504)
        )
    return is_connection_error(exc)


def may_have_reached(exc: BaseException) -> bool:
    """True when a failed call may still have reached the service (and had its effect).

    An error answer (4xx, throttling, 503) and a connection that never opened are refusals;
    a dropped or timed-out connection after sending, a 500 or 502/504, a success without the
    answer's fields, or anything unknown, may not be.
    """
    if isinstance(exc, ClientError):
        status = _status(exc)
        return error_code(exc) not in _THROTTLING and status not in (503,) and status >= 500
    if isinstance(
        exc, (NoCredentialsError, PartialCredentialsError, NoRegionError, ParamValidationError)
    ):
        return False  # the request was never signed, so never sent
    inner = exc.kwargs.get("error") if isinstance(exc, HTTPClientError) else None
    refused = (EndpointConnectionError, ConnectTimeoutError, aiohttp.ClientConnectorError)
    return not isinstance(exc, refused) and not isinstance(inner, refused)


def to_invocation_error(
    exc: BaseException,
    operation: str,
    *,
    note: str = "",
    error_type: type[InvocationError] = InvocationError,
    **context: Any,
) -> InvocationError:
    """Map a botocore/aiohttp error to the public :class:`InvocationError`.

    ``note`` is appended to the message; ``error_type`` is the class made (a subclass of
    :class:`InvocationError`); ``context`` goes to the error as it is
    (``inference_id=``, ``possibly_submitted=``). An answer that is not the service's gets
    the code ``NotTheService``.
    """
    if isinstance(exc, (ClientError, BadAnswer)) and not from_the_service(exc.response):
        status = _status(exc)
        return error_type(
            f"the HTTP {status} answer is not the service's: it has no request id header "
            f"({', '.join(REQUEST_ID_HEADERS)}); a proxy, captive portal or firewall in "
            "between?" + note,
            code=NOT_THE_SERVICE,
            status_code=status or None,
            operation=operation,
            **context,
        )
    if isinstance(exc, BadAnswer):
        meta = exc.response.get("ResponseMetadata", {})
        return error_type(
            str(exc) + note,
            code="InvalidAnswer",
            request_id=meta.get("RequestId") or None,
            status_code=_status(exc) or None,
            operation=operation,
            **context,
        )
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        return error_type(
            str(err.get("Message") or err.get("message") or exc) + note,
            code=error_code(exc) or "Unknown",
            request_id=meta.get("RequestId"),
            status_code=_status(exc) or None,
            operation=operation,
            **context,
        )
    code = "ConnectionError" if is_connection_error(exc) else type(exc).__name__
    if isinstance(exc, BotoCoreError) and not is_connection_error(exc):
        code = type(exc).__name__
    message = (str(exc) or type(exc).__name__) + note
    if isinstance(exc, NoCredentialsError):
        message += (
            " (no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
            "AWS_PROFILE, or run 'aws configure')"
        )
    return error_type(message, code=code, operation=operation, **context)


def retry_delay(config: RetryConfig, attempt: int) -> float:
    """The wait before retry ``attempt`` (1-based) of ``config``'s policy."""
    return backoff_delay(
        attempt,
        initial=config.initial_delay,
        maximum=config.max_delay,
        multiplier=config.multiplier,
        jitter=config.jitter,
    )


def retrying(
    config: RetryConfig,
    *,
    clock: Clock,
    deadline: float | None,
    max_attempts: int | None,
    what: str,
    retry_if: Callable[[BaseException], bool] = is_transient,
    on_retry: Callable[[str], object] | None = None,
    log_fields: Mapping[str, object] | None = None,
) -> tenacity.AsyncRetrying:
    """A tenacity policy: back off on transient errors, stop at ``max_attempts`` or ``deadline``.

    ``deadline`` is a time of ``clock`` (monotonic); each sleep is clamped to the time left, and no
    attempt starts after it. The last error is re-raised as it was. Each retry is logged at INFO
    with ``what`` (which call, on what; never a payload), as a ``retried`` record whose extra
    fields are the operation (``what``'s first word), the attempt, the error code, the delay,
    and ``log_fields`` (the inference id and endpoint, when known); ``on_retry(operation)`` is
    then called (the client's counts).
    """
    operation = what.split(" ", 1)[0]

    def wait(state: tenacity.RetryCallState) -> float:
        delay = retry_delay(config, state.attempt_number)
        if deadline is not None:
            delay = max(0.0, min(delay, deadline - clock.monotonic()))
        return delay

    stop: Any = tenacity.stop_never
    if max_attempts is not None:
        stop = tenacity.stop_after_attempt(max_attempts)
    if deadline is not None:
        stop = stop | (lambda _state: clock.monotonic() >= deadline)

    def log_retry(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        code = error_code(error) if isinstance(error, ClientError) else type(error).__name__
        logger.info(
            "%s: attempt %d failed (%s); retrying in %.2f s",
            what,
            state.attempt_number,
            code,
            state.upcoming_sleep,
            extra={
                "event": "retried",
                "operation": operation,
                "attempt": state.attempt_number,
                "error": code,
                "delay": state.upcoming_sleep,
                **(log_fields or {}),
            },
        )
        if on_retry is not None:
            on_retry(operation)

    return tenacity.AsyncRetrying(
        sleep=clock.sleep,
        stop=stop,
        wait=wait,
        retry=tenacity.retry_if_exception(retry_if),
        before_sleep=log_retry,
        reraise=True,
    )


async def call_with_retry(policy: tenacity.AsyncRetrying, fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` under ``policy``."""
    async for attempt in policy:
        with attempt:
            return await fn()
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
