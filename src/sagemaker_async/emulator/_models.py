"""Models the emulator can serve: Python callables, model containers, and built-ins by name.

A model receives an :class:`InferenceRequest` and returns the response body (``bytes``) or
``(body, content_type)``, or raises: the exception's text then goes into the failure object.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from .._errors import SageMakerAsyncError, ValidationError

__all__ = [
    "BUILTIN_MODELS",
    "ContainerModel",
    "ContainerUnavailableError",
    "InferenceRequest",
    "Model",
    "ModelError",
    "ModelResult",
    "call_model",
    "echo_model",
    "fail_model",
    "resolve_model",
    "sentiment_model",
    "sleep_model",
]

_log = logging.getLogger("sagemaker_async.emulator")


@dataclass(frozen=True)
class InferenceRequest:
    """What a model receives: the payload and the request's headers.

    Attributes:
        payload: the input bytes (inline Body, or the object at InputLocation).
        content_type: ``X-Amzn-SageMaker-Content-Type`` (None when not sent).
        accept: ``X-Amzn-SageMaker-Accept`` (None when not sent).
        custom_attributes: ``X-Amzn-SageMaker-Custom-Attributes``; sensitive, never log it.
        inference_id: the inference's id (given by the caller or generated).
        endpoint_name: the endpoint serving the request.
    """

    payload: bytes
    content_type: str | None
    accept: str | None
    custom_attributes: str | None
    inference_id: str
    endpoint_name: str = ""

    def __repr__(self) -> str:
        # Payloads and custom attributes are user data: keep them out of logs and tracebacks.
        return (
            f"InferenceRequest(inference_id={self.inference_id!r}, "
            f"endpoint_name={self.endpoint_name!r}, payload=<{len(self.payload)} bytes>, "
            f"content_type={self.content_type!r}, accept={self.accept!r})"
        )


#: A model's answer: the body, or the body and its content type.
ModelResult = bytes | tuple[bytes, str]
#: A model: a sync or async callable taking an :class:`InferenceRequest`.
Model = Callable[[InferenceRequest], ModelResult | Awaitable[ModelResult]]


class ModelError(Exception):
    """A model's failure with the HTTP status a container would have answered.

    Raise it from a Python model to choose the status in the failure message (default 500).
    """

    def __init__(self, message: str, status: int = 500) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


async def call_model(model: Model, request: InferenceRequest) -> tuple[bytes, str | None]:
    """Run ``model`` (sync models run in a worker thread) and normalise its answer."""
    func: Callable[[InferenceRequest], Any] = model
    if inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__):
        result: Any = await func(request)
    else:
        # Sync models may block (CPU work, time.sleep): keep them off the event loop.
        result = await asyncio.to_thread(func, request)
        if inspect.isawaitable(result):
            result = await result
    if isinstance(result, tuple):
        body, content_type = result
    else:
        body, content_type = result, None
    if isinstance(body, str):
        body = body.encode()
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"model returned {type(body).__name__}, expected bytes")
    return bytes(body), content_type


async def echo_model(request: InferenceRequest) -> ModelResult:
    """Answer the payload unchanged, with the request's content type."""
    return request.payload, request.content_type or "application/octet-stream"


async def fail_model(request: InferenceRequest) -> ModelResult:
    """Always fail, like a container answering 500."""
    raise ModelError("the 'fail' model always fails (emulator built-in)", 500)


def sleep_model(seconds: float) -> Model:
    """A model that echoes after ``seconds`` of (real, unscaled) time."""

    async def sleep(request: InferenceRequest) -> ModelResult:
        await asyncio.sleep(seconds)
        return await echo_model(request)

    sleep.__name__ = f"sleep_{seconds:g}"
    return sleep


# A tiny logistic-regression sentiment classifier over a bag of words; the weights live here.
_SENTIMENT_WEIGHTS = {
    "good": 1.6, "great": 2.2, "excellent": 2.6, "love": 2.3, "loved": 2.3, "like": 0.9,
    "nice": 1.2, "happy": 1.7, "amazing": 2.4, "best": 1.9, "fast": 0.8, "fantastic": 2.4,
    "wonderful": 2.3, "awesome": 2.3, "recommend": 1.4, "perfect": 2.1, "works": 0.7,
    "bad": -1.8, "terrible": -2.6, "awful": -2.5, "hate": -2.4, "hated": -2.4, "poor": -1.6,
    "slow": -0.9, "worst": -2.5, "broken": -1.9, "boring": -1.5, "disappointing": -2.0,
    "useless": -2.1, "horrible": -2.5, "sad": -1.3, "fails": -1.4, "refund": -1.2,
}  # fmt: skip
_NEGATIONS = frozenset({"not", "no", "never", "don't", "isn't", "wasn't", "didn't", "hardly"})
_SENTIMENT_BIAS = 0.1
_WORD = re.compile(r"[a-z']+")


def _sentiment_of(text: str) -> dict[str, Any]:
    score = _SENTIMENT_BIAS
    negate = False
    for word in _WORD.findall(text.lower()):
        if word in _NEGATIONS:
            negate = True
            continue
        weight = _SENTIMENT_WEIGHTS.get(word, 0.0)
        score += -weight if negate else weight
        if weight:
            negate = False
    positive = 1.0 / (1.0 + math.exp(-score))
    label = "POSITIVE" if positive >= 0.5 else "NEGATIVE"
    return {"label": label, "score": round(max(positive, 1.0 - positive), 4)}


async def sentiment_model(request: InferenceRequest) -> ModelResult:
    """Classify text sentiment; JSON in, JSON out.

    Input: ``{"inputs": "text"}`` or ``{"inputs": ["text", ...]}`` (``"text"`` works as the
    key too), or plain UTF-8 text. Output: ``[{"label": "POSITIVE"|"NEGATIVE", "score": p}]``.
    """
    try:
        text = request.payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelError("sentiment model expects UTF-8 text or JSON", 400) from None
    inputs: Any = text
    if request.content_type is None or "json" in request.content_type:
        try:
            document = json.loads(text)
        except ValueError:
            if request.content_type is not None:
                raise ModelError("sentiment model: the body is not valid JSON", 400) from None
        else:
            if isinstance(document, dict):
                document = document.get("inputs", document.get("text"))
            inputs = document
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ModelError('sentiment model expects {"inputs": "text" | ["text", ...]}', 400)
    answer = json.dumps([_sentiment_of(t) for t in texts]).encode()
    return answer, "application/json"


class ContainerUnavailableError(SageMakerAsyncError, RuntimeError):
    """A model container did not pass ``GET /ping`` in time (the endpoint cannot start)."""


class ContainerModel:
    """A model container reached over HTTP, following the SageMaker container contract.

    ``GET {url}/ping`` must answer 2xx before the endpoint serves (see :meth:`start`);
    each inference is ``POST {url}/invocations`` with the payload and the request's
    Content-Type, Accept and ``X-Amzn-SageMaker-Custom-Attributes`` headers. A non-2xx answer
    is a model failure.
    """

    def __init__(self, url: str, *, ping_timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.ping_timeout = ping_timeout
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"ContainerModel({self.url!r})"

    async def start(self) -> None:
        """Open the HTTP session and wait until ``/ping`` answers 2xx.

        Raises:
            ContainerUnavailableError: no 2xx within ``ping_timeout`` (a RuntimeError).
        """
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ping_timeout
        last = "no answer"
        while True:
            try:
                async with self._session.get(
                    f"{self.url}/ping", timeout=aiohttp.ClientTimeout(total=2)
                ) as response:
                    if 200 <= response.status < 300:
                        return
                    last = f"HTTP {response.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if loop.time() >= deadline:
                await self.aclose()  # nothing left open by a container that never came up
                raise ContainerUnavailableError(
                    f"model container {self.url} did not pass GET /ping within "
                    f"{self.ping_timeout:g} s (last: {last}); is it running?"
                )
            await asyncio.sleep(0.1)

    async def aclose(self) -> None:
        """Close the HTTP session."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __call__(self, request: InferenceRequest) -> ModelResult:
        """POST the payload to ``/invocations``; raise :class:`ModelError` on a non-2xx answer."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        headers = {}
        if request.content_type:
            headers["Content-Type"] = request.content_type
        if request.accept:
            headers["Accept"] = request.accept
        if request.custom_attributes:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = request.custom_attributes
        try:
            async with self._session.post(
                f"{self.url}/invocations", data=request.payload, headers=headers
            ) as response:
                body = await response.read()
                status = response.status
                content_type = response.headers.get("Content-Type", "application/octet-stream")
        except aiohttp.ClientError as exc:
            # A container that went away: a failure that says so, not a bare socket error.
            raise ModelError(
                f"the model container {self.url} could not be reached "
                f"(POST /invocations: {type(exc).__name__}: {exc})",
                500,
            ) from None
        if not 200 <= status < 300:
            raise ModelError(body[:1024].decode("utf-8", "replace"), status)
        return body, content_type


#: Built-in models by name (``sleep:<seconds>`` is resolved by :func:`resolve_model`).
BUILTIN_MODELS: dict[str, Model] = {
    "echo": echo_model,
    "fail": fail_model,
    "sentiment": sentiment_model,
}


def resolve_model(spec: str | Model) -> Model:
    """Turn a model spec into a model.

    ``spec`` is a callable (returned as is), a built-in name (``"echo"``, ``"fail"``,
    ``"sentiment"``), ``"sleep:<seconds>"`` (echo after a delay), or the ``http(s)://`` URL of a
    model container (a :class:`ContainerModel`).

    Raises:
        ValidationError: the spec names no model (a ValueError).
    """
    if callable(spec):
        return spec
    if spec in BUILTIN_MODELS:
        return BUILTIN_MODELS[spec]
    if spec.startswith("sleep:"):
        try:
            seconds = float(spec.partition(":")[2])
        except ValueError:
            seconds = -1.0
        if not seconds >= 0 or math.isinf(seconds):
            raise ValidationError(
                "model", f"{spec!r} has no valid seconds", "sleep:<seconds >= 0>, e.g. sleep:0.5"
            )
        return sleep_model(seconds)
    if spec.startswith(("http://", "https://")):
        return ContainerModel(spec)
    choices = ", ".join([*sorted(BUILTIN_MODELS), "sleep:<seconds>", "http://host:port"])
    raise ValidationError(
        "model", f"{spec!r} is not a model spec", f"one of {choices}, or a callable"
    )
