"""The HTTP side: InvokeEndpointAsync's wire protocol, AWS errors, and the stats routes."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web

from .._errors import ValidationError
from .._validation import MAX_INLINE_BODY, validate_invoke_request
from ._control import SERVED_ACTIONS, ApiError, ControlPlane, NotOurs, not_emulated
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
_CONTROL_KEY = web.AppKey("control", ControlPlane)
#: The JSON protocol's content type (the ``sagemaker`` control plane).
_JSON_11 = "application/x-amz-json-1.1"

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


ErrorAnswer = Callable[[int, str, str], web.Response]


def _unauthenticated(request: web.Request, error: ErrorAnswer = _aws_error) -> web.Response | None:
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
        return error(exc.status, exc.code, exc.message)
    return None


async def _authenticated_body(
    request: web.Request, error: ErrorAnswer = _aws_error
) -> bytes | web.Response:
    """The request's body once its signature checks out, or the error answer."""
    settings = request.app[_SETTINGS_KEY]
    refused = _unauthenticated(request, error)
    if refused is not None:
        return refused
    if (request.content_length or 0) > MAX_INLINE_BODY:
        return error(  # as for any rule of the model: a 400 ValidationError
            400,
            "ValidationError",
            f"The request body is {request.content_length} bytes, more than the "
            f"{MAX_INLINE_BODY} that InvokeEndpointAsync accepts inline.",
        )
    try:  # at most MAX_INLINE_BODY (client_max_size) when chunked
        body = await asyncio.wait_for(request.read(), settings["body_timeout"])
    except asyncio.TimeoutError:
        _log.info("closed %s: its body did not arrive in time", request.path)
        return error(
            408,
            "RequestTimeout",
            f"The request body did not arrive within {settings['body_timeout']:g} s.",
        )
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
        return error(exc.status, exc.code, exc.message)
    return body


async def _invoke_async(request: web.Request) -> web.Response:
    body = await _authenticated_body(request)
    if isinstance(body, web.Response):
        return body
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


def _json_error(status: int, code: str, message: str) -> web.Response:
    """An error of the JSON protocol: ``__type`` in the body and ``x-amzn-ErrorType``."""
    return web.Response(
        body=json.dumps({"__type": code, "message": message}).encode(),
        status=status,
        content_type=_JSON_11,
        headers={"x-amzn-ErrorType": code, "x-amzn-RequestId": str(uuid.uuid4())},
    )


async def _control_plane(request: web.Request) -> web.StreamResponse:
    """``POST /`` with ``X-Amz-Target: SageMaker.<Action>``: the SageMaker control plane.

    The actions of :data:`SERVED_ACTIONS` are answered here; any other SageMaker action is
    passed to the embedded moto when there is one.
    """
    body = await _authenticated_body(request, _json_error)
    if isinstance(body, web.Response):
        return body
    target = request.headers.get("X-Amz-Target", "")
    prefix, _, action = target.partition(".")
    if prefix != "SageMaker" or not action:
        return _json_error(400, "UnknownOperationException", f"Unknown target {target!r}.")
    if action in not_emulated():
        return _json_error(
            400,
            "UnknownOperationException",
            f"SageMaker.{action} is not emulated: it acts on endpoints, endpoint configurations "
            "or models, which the emulator holds itself (see docs/emulator.md).",
        )
    if action not in SERVED_ACTIONS:
        return await _forward(request, body, action)
    try:
        params = json.loads(body or b"{}")
        if not isinstance(params, dict):
            raise ValueError("not an object")
    except ValueError:
        return _json_error(400, "SerializationException", "The request body is not a JSON object.")
    try:
        answer = await request.app[_CONTROL_KEY].handle(action, params)
    except ApiError as exc:
        return _json_error(exc.status, exc.code, exc.message)
    except NotOurs:
        return await _forward(request, body, action)
    return web.Response(
        body=json.dumps(answer).encode(),
        content_type=_JSON_11,
        headers={"x-amzn-RequestId": str(uuid.uuid4())},
    )


async def _forward(request: web.Request, body: bytes, action: str) -> web.StreamResponse:
    """Pass a SageMaker action the emulator does not serve to the embedded moto."""
    url = request.app[_SETTINGS_KEY].get("forward_url")
    if not url:
        return _json_error(
            400,
            "UnknownOperationException",
            f"The emulator does not serve SageMaker.{action} (and has no moto to pass it to).",
        )
    headers = {
        name: value
        for name, value in request.headers.items()
        if name.lower() not in ("host", "content-length", "transfer-encoding", "connection")
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/", data=body, headers=headers) as answer,
    ):
        data = await answer.read()
        kept = {
            name: value
            for name, value in answer.headers.items()
            if name.lower() in ("content-type", "x-amzn-errortype", "x-amzn-requestid")
        }
        return web.Response(body=data, status=answer.status, headers=kept)


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
    endpoints: dict[str, EmulatedEndpoint],
    *,
    access_key: str,
    secret_key: str,
    region: str,
    control: ControlPlane,
    forward_url: str | None = None,
    body_timeout: float = 60.0,
) -> web.Application:
    """The aiohttp application serving ``endpoints``, verifying SigV4 with the given key.

    ``endpoints`` is used as is (not copied): the control plane adds and removes entries.
    SageMaker actions the control plane does not serve go to ``forward_url`` (moto) if given.
    A request body that has not arrived whole after ``body_timeout`` seconds is answered 408.
    """
    # An inline body is at most 128,000 bytes (the model's AsyncBodyBlob): memory per
    # connection stays bounded whatever a client announces.
    app = web.Application(middlewares=[_errors_middleware], client_max_size=MAX_INLINE_BODY)
    app[_ENDPOINTS_KEY] = endpoints
    app[_CONTROL_KEY] = control
    app[_SETTINGS_KEY] = {
        "access_key": access_key,
        "secret_key": secret_key,
        "region": region,
        "forward_url": forward_url,
        "body_timeout": body_timeout,
    }
    app.router.add_post("/", _control_plane)
    app.router.add_post("/endpoints/{name}/async-invocations", _invoke_async)
    app.router.add_post("/endpoints/{name}/invocations", _invoke_sync)
    app.router.add_post("/endpoints/{name}/invocations-response-stream", _invoke_sync)
    app.router.add_get("/_emulator/endpoints", _all_stats)
    app.router.add_get("/_emulator/endpoints/{name}", _endpoint_stats)
    app.router.add_get("/_emulator/ping", _ping)
    return app
