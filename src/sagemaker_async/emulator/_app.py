"""The HTTP side: InvokeEndpointAsync's wire protocol, AWS errors, and the stats routes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from .._errors import ValidationError
from .._validation import MAX_INLINE_BODY, validate_invoke_request
from ._endpoint import EmulatedEndpoint, Job
from ._sigv4 import AuthError, check_authorization, verify_sigv4

__all__ = ["ACCOUNT_ID", "create_app"]

_log = logging.getLogger("sagemaker_async.emulator")

#: The account id the emulator pretends to be (moto's default too).
ACCOUNT_ID = "123456789012"

_HEADER = "X-Amzn-SageMaker-"
# API field -> request header, from botocore's service model (sagemaker-runtime).
_STRING_HEADERS = {
    "ContentType": _HEADER + "Content-Type",
    "Accept": _HEADER + "Accept",
    "CustomAttributes": _HEADER + "Custom-Attributes",
    "InferenceId": _HEADER + "Inference-Id",
    "InputLocation": _HEADER + "InputLocation",
    "S3OutputPathExtension": _HEADER + "S3OutputPathExtension",
    "Filename": _HEADER + "Filename",
}
_INT_HEADERS = {
    "RequestTTLSeconds": _HEADER + "RequestTTLSeconds",
    "InvocationTimeoutSeconds": _HEADER + "InvocationTimeoutSeconds",
}
_DEFAULT_TTL = 21600
_DEFAULT_TIMEOUT = 900

_ENDPOINTS_KEY = web.AppKey("endpoints", dict)
_SETTINGS_KEY = web.AppKey("settings", dict)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _aws_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"message": message},
        status=status,
        headers={"x-amzn-ErrorType": code, "x-amzn-RequestId": str(uuid.uuid4())},
    )


@web.middleware
async def _errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status == 404:
            return _aws_error(404, "UnknownOperationException", f"No route for {request.path}")
        if exc.status == 405:
            return _aws_error(
                405, "UnknownOperationException", f"{request.method} is not allowed here"
            )
        if exc.status == 413:
            return _aws_error(413, "ValidationError", "The request body is too large.")
        raise
    except Exception:
        _log.exception("internal error while serving %s %s", request.method, request.path)
        return _aws_error(500, "InternalFailure", "An internal error occurred in the emulator.")


def _request_fields(request: web.Request, body: bytes) -> dict[str, Any]:
    fields: dict[str, Any] = {"EndpointName": request.match_info["name"]}
    for field, header in _STRING_HEADERS.items():
        if header in request.headers:
            fields[field] = request.headers[header]
    for field, header in _INT_HEADERS.items():
        if header in request.headers:
            text = request.headers[header]
            if not re.fullmatch(r"[0-9]{1,9}", text):  # int() would take "+6", "6_0", "١٢"
                raise ValidationError(field, f"{text!r} is not an integer", "an integer")
            fields[field] = int(text)
    if body:
        fields["Body"] = body
    return fields


def _unauthenticated(request: web.Request) -> web.Response | None:
    """The error answer for a request whose headers fail authentication, or None.

    Everything that needs no body is checked first: an unauthenticated body is never read.
    """
    settings = request.app[_SETTINGS_KEY]
    try:
        check_authorization(
            headers=request.headers,
            access_key=settings["access_key"],
            region=settings["region"],
            service="sagemaker",
        )
    except AuthError as exc:
        _log.info("rejected %s: %s", request.path, exc.code)
        return _aws_error(exc.status, exc.code, exc.message)
    return None


async def _invoke_async(request: web.Request) -> web.Response:
    settings = request.app[_SETTINGS_KEY]
    refused = _unauthenticated(request)
    if refused is not None:
        return refused
    if (request.content_length or 0) > MAX_INLINE_BODY:
        return _aws_error(  # as for any rule of the model: a 400 ValidationError
            400,
            "ValidationError",
            f"The request body is {request.content_length} bytes, more than the "
            f"{MAX_INLINE_BODY} that InvokeEndpointAsync accepts inline.",
        )
    body = await request.read()  # at most MAX_INLINE_BODY (client_max_size) when chunked
    try:
        verify_sigv4(
            method=request.method,
            raw_path=request.raw_path,
            headers=request.headers,
            body=body,
            access_key=settings["access_key"],
            secret_key=settings["secret_key"],
            region=settings["region"],
            service="sagemaker",
        )
    except AuthError as exc:
        _log.info("rejected %s: %s", request.path, exc.code)
        return _aws_error(exc.status, exc.code, exc.message)
    try:
        fields = _request_fields(request, body)
        validate_invoke_request(fields)
    except ValidationError as exc:
        return _aws_error(400, "ValidationError", str(exc))
    name = fields["EndpointName"]
    endpoint: EmulatedEndpoint | None = request.app[_ENDPOINTS_KEY].get(name)
    if endpoint is None:
        return _aws_error(
            400, "ValidationError", f"Endpoint {name} of account {ACCOUNT_ID} not found."
        )
    fault = endpoint.admit()
    if fault == "throttled":
        return _aws_error(400, "ThrottlingException", "Rate exceeded")
    if fault == "fault":
        return _aws_error(
            503, "ServiceUnavailable", "The service is unavailable (injected by the emulator)."
        )
    inference_id = fields.get("InferenceId") or str(uuid.uuid4())
    object_id = str(uuid.uuid4())
    output_dir = endpoint.output_path
    if fields.get("S3OutputPathExtension"):
        output_dir += "/" + fields["S3OutputPathExtension"].strip("/")
    output_location = f"{output_dir}/{fields.get('Filename') or object_id + '.out'}"
    failure_location = (
        f"{endpoint.failure_path}/{object_id}-error.out"
        if endpoint.config.has_s3_failure_path
        else None
    )
    job = Job(
        inference_id=inference_id,
        payload=body if "Body" in fields else None,
        input_location=fields.get("InputLocation"),
        content_type=fields.get("ContentType"),
        accept=fields.get("Accept"),
        custom_attributes=fields.get("CustomAttributes"),
        ttl_seconds=fields.get("RequestTTLSeconds", _DEFAULT_TTL),
        timeout_seconds=fields.get("InvocationTimeoutSeconds", _DEFAULT_TIMEOUT),
        output_location=output_location,
        failure_location=failure_location,
        received_at=asyncio.get_running_loop().time(),
        received_wall=dt.datetime.now(dt.timezone.utc),
    )
    endpoint.submit(job)
    _log.debug("endpoint %s: accepted inference %s", name, inference_id)
    return web.json_response(
        {"InferenceId": inference_id},
        status=202,
        headers={
            "x-amzn-RequestId": str(uuid.uuid4()),
            _HEADER + "OutputLocation": output_location,
            **({_HEADER + "FailureLocation": failure_location} if failure_location else {}),
        },
    )


async def _invoke_sync(request: web.Request) -> web.Response:
    """InvokeEndpoint(WithResponseStream) on an async endpoint: refused, as the service does."""
    refused = _unauthenticated(request)
    if refused is not None:
        return refused
    name = request.match_info["name"]
    if name not in request.app[_ENDPOINTS_KEY]:
        return _aws_error(
            400, "ValidationError", f"Endpoint {name} of account {ACCOUNT_ID} not found."
        )
    return _aws_error(
        400,
        "ValidationError",
        f"Endpoint {name} of account {ACCOUNT_ID} is an asynchronous endpoint: it can only "
        "receive asynchronous invocations (InvokeEndpointAsync).",
    )


async def _endpoint_stats(request: web.Request) -> web.Response:
    endpoint = request.app[_ENDPOINTS_KEY].get(request.match_info["name"])
    if endpoint is None:
        return _aws_error(404, "ResourceNotFound", f"No endpoint {request.match_info['name']}")
    return web.json_response(endpoint.stats().to_dict())


async def _all_stats(request: web.Request) -> web.Response:
    endpoints: dict[str, EmulatedEndpoint] = request.app[_ENDPOINTS_KEY]
    return web.json_response(
        {"endpoints": [endpoint.stats().to_dict() for endpoint in endpoints.values()]}
    )


async def _ping(request: web.Request) -> web.Response:
    return web.Response(text=json.dumps({"status": "ok"}), content_type="application/json")


def create_app(
    endpoints: Mapping[str, EmulatedEndpoint],
    *,
    access_key: str,
    secret_key: str,
    region: str,
) -> web.Application:
    """The aiohttp application serving ``endpoints``, verifying SigV4 with the given key."""
    # An inline body is at most 128,000 bytes (the model's AsyncBodyBlob): memory per
    # connection stays bounded whatever a client announces.
    app = web.Application(middlewares=[_errors_middleware], client_max_size=MAX_INLINE_BODY)
    app[_ENDPOINTS_KEY] = dict(endpoints)
    app[_SETTINGS_KEY] = {"access_key": access_key, "secret_key": secret_key, "region": region}
    app.router.add_post("/endpoints/{name}/async-invocations", _invoke_async)
    app.router.add_post("/endpoints/{name}/invocations", _invoke_sync)
    app.router.add_post("/endpoints/{name}/invocations-response-stream", _invoke_sync)
    app.router.add_get("/_emulator/endpoints", _all_stats)
    app.router.add_get("/_emulator/endpoints/{name}", _endpoint_stats)
    app.router.add_get("/_emulator/ping", _ping)
    return app
