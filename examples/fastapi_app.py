"""A FastAPI service in front of a SageMaker asynchronous endpoint.

- ``POST /predict`` submits the JSON body and waits up to ``wait_seconds`` (10 by default):
  200 with the result, or 202 with a status URL (also in ``Location``) when the model is
  slower.
- ``GET /inferences/{token}`` (the status URL) waits up to ``wait_seconds`` too, then answers
  as ``POST /predict`` does: 200 with the result, or 202 while the inference is pending.

Either answers 502 with the model's error when the model failed, 504 when SageMaker's deadline
passed, 400 for a status URL this service did not issue, 422 for a body that is not a JSON
object.

The token in the status URL is the handle's ``to_dict()``, signed: any worker resumes the wait
from it with ``client.resume()``, after a restart too. The signature matters: the state names
the S3 objects the service will read with its own credentials, so it must not take them from
callers.

Configuration: the standard AWS variables (credentials, region, ``AWS_ENDPOINT_URL_*``), and

- ``SAGEMAKER_ENDPOINT_NAME``: the asynchronous endpoint (required);
- ``STATUS_TOKEN_KEY``: the key that signs status tokens, the same for every worker. Without
  it each app signs with a random key of its own, and its status URLs die with it.

Run it with ``uvicorn --app-dir examples --factory fastapi_app:create_app``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sagemaker_async import (
    AsyncInferenceHandle,
    ClientClosedError,
    InferenceFailedError,
    InferenceResult,
    InferenceTimeoutError,
    InvocationError,
    ValidationError,
)
from sagemaker_async.fastapi import ClientFactory, InferenceClient, client_lifespan

logger = logging.getLogger("fastapi_app")

_RETRYABLE = frozenset({"ThrottlingException", "ServiceUnavailable"})


class StatusTokens:
    """Turns a handle's ``to_dict()`` into an opaque, signed, URL-safe token, and back."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def issue(self, state: Mapping[str, Any]) -> str:
        """The token of a handle's ``state``: ``<state>.<signature>``, both base64url."""
        payload = _b64(json.dumps(state, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def read(self, token: str) -> dict[str, Any] | None:
        """The handle state in ``token``, or None if this key did not sign it."""
        payload, _, signature = token.partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return None
        state = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return state if isinstance(state, dict) else None

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _result_json(result: InferenceResult) -> Any:
    try:
        return result.json() if "json" in (result.content_type or "") else result.text()
    except ValueError:  # not JSON, or not text (UnicodeDecodeError is a ValueError too)
        return {"base64": base64.b64encode(result.body).decode()}


def _error(
    status_code: int, kind: str, message: str, *, inference_id: str | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"error": {"type": kind, "message": message}}
    if inference_id is not None:
        body.update(inference_id=inference_id, status="failed")
    return JSONResponse(body, status_code=status_code)


def create_app(
    *,
    endpoint_name: str | None = None,
    wait_seconds: float = 10.0,
    token_key: bytes | None = None,
    client_factory: ClientFactory | None = None,
) -> FastAPI:
    """The service; arguments left out come from the environment (see the module's doc)."""
    endpoint = endpoint_name or os.environ.get("SAGEMAKER_ENDPOINT_NAME")
    if not endpoint:
        raise RuntimeError("set SAGEMAKER_ENDPOINT_NAME to the name of the async endpoint")
    key = token_key or os.environ.get("STATUS_TOKEN_KEY", "").encode()
    if not key:
        logger.warning("STATUS_TOKEN_KEY is not set: status URLs end with this app")
        key = secrets.token_bytes(32)
    tokens = StatusTokens(key)
    app = FastAPI(
        title="SageMaker async inference", lifespan=client_lifespan(factory=client_factory)
    )

    def pending(handle: AsyncInferenceHandle, request: Request) -> JSONResponse:
        token = tokens.issue(handle.to_dict())
        url = str(request.url_for("inference", token=token))
        return JSONResponse(
            {"inference_id": handle.inference_id, "status": "pending", "status_url": url},
            status_code=202,
            headers={"Location": url, "Retry-After": "1"},
        )

    async def answer(handle: AsyncInferenceHandle, request: Request) -> JSONResponse:
        try:
            result = await handle.result(timeout=wait_seconds)
        except InferenceFailedError as exc:
            return _error(502, "model_error", exc.message, inference_id=handle.inference_id)
        except InferenceTimeoutError as exc:
            if not exc.deadline_exceeded:  # only this request's wait ran out
                return pending(handle, request)
            message = "no result before SageMaker's deadline (RequestTTL + InvocationTimeout)"
            return _error(504, "deadline_exceeded", message, inference_id=handle.inference_id)
        except ClientClosedError:  # shutting down: another worker takes over from the token
            return pending(handle, request)
        except InvocationError as exc:  # S3 refused a read that retrying cannot fix
            logger.error("inference %s: %s", handle.inference_id, exc)
            return _error(502, "storage_error", exc.code, inference_id=handle.inference_id)
        return JSONResponse(
            {
                "inference_id": handle.inference_id,
                "status": "succeeded",
                "result": _result_json(result),
            }
        )

    @app.post("/predict")
    async def predict(
        payload: dict[str, Any], request: Request, client: InferenceClient
    ) -> JSONResponse:
        """Submit ``payload``; 200 with the result, or 202 with its status URL."""
        try:
            handle = await client.invoke_endpoint_async(
                endpoint, body=json.dumps(payload), content_type="application/json"
            )
        except ValidationError as exc:  # e.g. a body over 128,000 bytes
            return _error(400, "invalid_request", str(exc))
        except InvocationError as exc:
            logger.warning("invoke failed: %s", exc)
            if exc.code in _RETRYABLE:
                response = _error(503, "unavailable", exc.code)
                response.headers["Retry-After"] = "1"
                return response
            return _error(502, "invocation_error", exc.code)
        return await answer(handle, request)

    @app.get("/inferences/{token}", name="inference")
    async def inference(token: str, request: Request, client: InferenceClient) -> JSONResponse:
        """The inference behind a status URL: 200 with its result, or 202 while pending."""
        state = tokens.read(token)
        if state is None or state.get("endpoint_name") != endpoint:
            return _error(400, "invalid_id", "this is not a status URL this service issued")
        try:
            handle = client.resume(state)
        except ValidationError as exc:
            return _error(400, "invalid_id", str(exc))
        return await answer(handle, request)

    return app
