"""AsyncInferenceClient: submits inferences and hands out awaitable handles."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import uuid
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from aiobotocore.client import AioBaseClient
from aiobotocore.config import AioConfig
from aiobotocore.session import AioSession, get_session
from botocore.exceptions import NoRegionError, ProfileNotFound

from ._budget import RequestBudget
from ._clock import Clock, SystemClock
from ._config import (
    CompletionConfig,
    NotificationConfig,
    PollingConfig,
    RetryConfig,
    TelemetryConfig,
)
from ._engine._client_queue import ClientQueue
from ._engine._discovery import TopicDiscovery
from ._engine._engine import CompletionEngine
from ._engine._notifications import NotificationSource
from ._errors import ClientClosedError, InvocationError, SageMakerAsyncError, ValidationError
from ._handle import AsyncInferenceHandle, load_state
from ._map import MapOutcome, MapProgress, map_inferences
from ._observe import ClientStats, Hooks, Observer
from ._result import HandleState, WatchTarget
from ._retry import (
    BadAnswer,
    bounded,
    call_with_retry,
    from_the_service,
    may_have_reached,
    retrying,
    to_invocation_error,
)
from ._s3 import ObjectStore
from ._speedups import tune
from ._validation import (
    MAX_INLINE_BODY,
    canonical_s3_uri,
    parse_s3_uri,
    validate_invoke_request,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sagemaker_runtime import SageMakerRuntimeClient
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

__all__ = ["AsyncInferenceClient"]

logger = logging.getLogger("sagemaker_async")

# Service defaults (botocore model docs) used to derive a handle's deadline.
_DEFAULT_TTL = 21600
_DEFAULT_INVOCATION_TIMEOUT = 900
# S3 reads the engine runs at once: enough for ~1,000 reads/s at S3's usual 30 ms, and few
# enough that answers arriving together never hold the event loop for long (~1 ms each).
_ENGINE_CONCURRENCY = 32
# SQS long polls last 20 s: their read timeout must be longer.
_SQS_READ_TIMEOUT = 30.0


@dataclasses.dataclass
class _Submission:
    """One InvokeEndpointAsync call under way: what it is, since when, and its attempts."""

    endpoint_name: str
    inference_id: str
    submitted_at: float  # wall time
    started: float  # the clock's monotonic time
    wait: float  # how long the handle waits, from ``submitted_at``
    span: Any
    sent: int = 0  # requests sent
    uncertain: int = 0  # failed attempts that may have reached SageMaker anyway

    @property
    def deadline(self) -> float:
        """When attempts stop (monotonic: calls in this process)."""
        return self.started + self.wait

    @property
    def reached(self) -> bool:
        """True when a failed attempt may have been accepted all the same."""
        return self.uncertain > 0

    @property
    def log_fields(self) -> dict[str, str]:
        """The extra fields of the submission's log records."""
        return {"inference_id": self.inference_id, "endpoint": self.endpoint_name}


@dataclasses.dataclass(frozen=True)
class _Accepted:
    """What an accepted InvokeEndpointAsync answered: where its outcome will appear."""

    inference_id: str
    output_location: str
    failure_location: str | None  # none without S3FailurePath


def _accepted(response: Mapping[str, Any], inference_id: str) -> _Accepted:
    """Read an InvokeEndpointAsync answer.

    Raises:
        BadAnswer: it is not the service's, or has no valid S3 OutputLocation (a proxy's
            page with a 200): the inference may have been queued all the same.
    """
    if not from_the_service(response):
        raise BadAnswer("not the service's answer", response)

    def location(name: str) -> str:
        value: Any = response.get(name)
        try:
            return canonical_s3_uri(value, field=name)
        except ValidationError:
            problem = f"has no {name}" if value is None else f"has {name} {value!r}"
            raise BadAnswer(
                f"the answer {problem}, not an s3://bucket/key location: the inference may "
                "have been queued, but where its outcome will appear is unknown",
                response,
            ) from None

    return _Accepted(
        inference_id=str(response.get("InferenceId") or inference_id),
        output_location=location("OutputLocation"),
        # None for an endpoint without S3FailurePath
        failure_location=location("FailureLocation") if "FailureLocation" in response else None,
    )


def _check_injected(name: str, client: object, service: str) -> None:
    """``client`` must be an aiobotocore client of ``service`` (or None)."""
    if client is None:
        return
    model = getattr(getattr(client, "meta", None), "service_model", None)
    given = getattr(model, "service_name", None)
    if not isinstance(client, AioBaseClient) or given != service:
        what = f"a {type(client).__name__}" + (f" of {given}" if given else "")
        raise ValidationError(
            name,
            f"{what} was given",
            f"an aiobotocore {service} client, already entered "
            f"(async with session.create_client({service!r}) as client)",
        )


def _configuration_error(exc: Exception) -> SageMakerAsyncError:
    """Map botocore's set-up errors (no region, unknown profile...) to the public hierarchy."""
    if isinstance(exc, NoRegionError):
        return ValidationError(
            "region_name",
            "no AWS region is configured",
            "pass region_name= (--region on the command line) or set AWS_DEFAULT_REGION "
            "(botocore does not read AWS_REGION)",
        )
    if isinstance(exc, ProfileNotFound):
        return ValidationError("session", str(exc), "an AWS profile that exists in the config")
    if isinstance(exc, SageMakerAsyncError):
        return exc
    return to_invocation_error(exc, "CreateClient")


class AsyncInferenceClient:
    """Client for SageMaker Asynchronous Inference.

    One client owns one aiobotocore session, one sagemaker-runtime client, one S3 client and
    their connection pool, and one completion engine that watches every pending handle with
    shared S3 listings and reads; every handle it makes shares them. Use it as an async
    context manager, or call :meth:`aclose` when done (it also opens itself on first use)::

        async with AsyncInferenceClient(region_name="us-east-1") as client:
            handle = await client.invoke_endpoint_async("my-endpoint", body=b'{"x": 1}',
                                                        content_type="application/json")
            result = await handle

    Args:
        region_name: AWS region; defaults to the standard AWS configuration.
        session: an :class:`aiobotocore.session.AioSession` to take credentials and settings
            from (profile, credential chain); a new default session when omitted.
        endpoint_url: sagemaker-runtime endpoint; defaults to AWS's, or to
            ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` / ``AWS_ENDPOINT_URL`` when set.
        s3_endpoint_url: S3 endpoint; defaults to AWS's, or to ``AWS_ENDPOINT_URL_S3``.
        sqs_endpoint_url: SQS endpoint (notifications); defaults to AWS's, or to
            ``AWS_ENDPOINT_URL_SQS``.
        sns_endpoint_url: SNS endpoint (``NotificationConfig(topics=)``); defaults to AWS's,
            or to ``AWS_ENDPOINT_URL_SNS``.
        sagemaker_endpoint_url: SageMaker's control plane (``notifications="auto"`` reads each
            endpoint's configuration there); defaults to AWS's, or to
            ``AWS_ENDPOINT_URL_SAGEMAKER``.
        polling: how soon and how often results are looked for (per-call override:
            ``invoke_endpoint_async(polling=)``).
        completion: how the completion engine finds results, client-wide: the strategy
            (listing or per-location reads, chosen by cost), the S3 request budget, prices.
        retry: how transient errors are retried.
        notifications: find results from the endpoint's SNS notifications through SQS, with
            S3 as a slow safety net (see :class:`NotificationConfig`). ``"auto"`` is
            ``NotificationConfig(discover=True)``: each endpoint's topics are read from its
            configuration, and an endpoint without topics is watched on S3 alone.
        input_prefix: ``s3://bucket/prefix/`` where bodies larger than 128,000 bytes are
            uploaded before the call, each under a key of its own
            (``<inference id>.<random>.in``). When the call fails for sure, the upload is
            deleted; when it may have reached SageMaker, the error names it.
        max_connections: size of the shared HTTP connection pool of each AWS client. The
            engine reads S3 over at most 32 of them (three quarters of a smaller pool), so
            uploads always find one and answers arriving together never stall the loop.
        clock: where time, sleeps and timers come from (for tests: a fake clock makes every
            schedule run in virtual time); the system clock by default.
        hooks: callbacks on each submission and each outcome, for your own metrics (see
            :class:`Hooks`).
        telemetry: OpenTelemetry spans and metrics (see :class:`TelemetryConfig`); by default
            reported to the global providers when ``opentelemetry-api`` is installed.
        runtime_client: a ready-made aiobotocore ``sagemaker-runtime`` client (already
            entered) to use instead of making one; likewise ``s3_client``, ``sqs_client``
            (with ``notifications``) and ``sns_client`` (with ``NotificationConfig(topics=)``).
            The client uses them as they are (their endpoint, region, retries, timeouts and
            pool; ``endpoint_url``, ``region_name`` and ``max_connections`` do not apply to
            them) and never closes them: close them yourself after :meth:`aclose`. Their
            requests are counted in :meth:`stats` while this client is open, yours included.
    """

    def __init__(
        self,
        *,
        region_name: str | None = None,
        session: AioSession | None = None,
        endpoint_url: str | None = None,
        s3_endpoint_url: str | None = None,
        sqs_endpoint_url: str | None = None,
        sns_endpoint_url: str | None = None,
        sagemaker_endpoint_url: str | None = None,
        polling: PollingConfig | None = None,
        completion: CompletionConfig | None = None,
        retry: RetryConfig | None = None,
        notifications: NotificationConfig | Literal["auto"] | None = None,
        input_prefix: str | None = None,
        max_connections: int = 100,
        clock: Clock | None = None,
        hooks: Hooks | None = None,
        telemetry: TelemetryConfig | None = None,
        runtime_client: SageMakerRuntimeClient | None = None,
        s3_client: S3Client | None = None,
        sqs_client: SQSClient | None = None,
        sns_client: SNSClient | None = None,
    ) -> None:
        if input_prefix is not None:
            if not isinstance(input_prefix, str) or not input_prefix.startswith("s3://"):
                raise ValidationError(
                    "input_prefix", f"{input_prefix!r} is not an s3:// URI", "s3://bucket/prefix/"
                )
            parse_s3_uri(input_prefix, field="input_prefix", key=False)
        if (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or (max_connections < 1)
        ):
            raise ValidationError(
                "max_connections", f"{max_connections!r} is not a positive int", "an int >= 1"
            )
        if isinstance(notifications, str):
            if notifications != "auto":
                raise ValidationError(
                    "notifications",
                    f"{notifications!r} is not a mode",
                    'a NotificationConfig, or "auto" (the topics each endpoint names)',
                )
            notifications = NotificationConfig(discover=True)
        for name, value, kind in (
            ("polling", polling, PollingConfig),
            ("completion", completion, CompletionConfig),
            ("retry", retry, RetryConfig),
            ("notifications", notifications, NotificationConfig),
            ("hooks", hooks, Hooks),
            ("telemetry", telemetry, TelemetryConfig),
        ):
            if value is not None and not isinstance(value, kind):
                raise ValidationError(
                    name, f"a {type(value).__name__} was given", f"a {kind.__name__}"
                )
        _check_injected("runtime_client", runtime_client, "sagemaker-runtime")
        _check_injected("s3_client", s3_client, "s3")
        _check_injected("sqs_client", sqs_client, "sqs")
        _check_injected("sns_client", sns_client, "sns")
        if sqs_client is not None and notifications is None:
            raise ValidationError(
                "sqs_client",
                "was given without notifications",
                "notifications=NotificationConfig(...)",
            )
        if sns_client is not None and (notifications is None or notifications.queue_url):
            raise ValidationError(
                "sns_client",
                'was given without NotificationConfig(topics=) or notifications="auto"',
                'notifications=NotificationConfig(topics=...) or "auto": only then is SNS called',
            )
        self.region_name = region_name
        self.endpoint_url = endpoint_url
        self.s3_endpoint_url = s3_endpoint_url
        self.sqs_endpoint_url = sqs_endpoint_url
        self.sns_endpoint_url = sns_endpoint_url
        self.sagemaker_endpoint_url = sagemaker_endpoint_url
        self.notifications = notifications
        self.polling = polling or PollingConfig()
        self.completion = completion or CompletionConfig()
        self.retry = retry or RetryConfig()
        self.input_prefix = input_prefix
        self._session = session
        self._max_connections = max_connections
        self._clock: Clock = clock or SystemClock()
        self._state = "new"
        self._open_lock: asyncio.Lock | None = None
        self._stack: AsyncExitStack | None = None
        self._runtime: SageMakerRuntimeClient | None = None
        self._queue: ClientQueue | None = None
        self._sqs: SQSClient | None = None
        self._discovery: TopicDiscovery | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop it was opened in
        self._warned_own_ids = False
        self._injected_runtime = runtime_client
        self._injected_s3 = s3_client
        self._injected_sqs = sqs_client
        self._injected_sns = sns_client
        self._observer = Observer(hooks, telemetry)
        budget = RequestBudget(self.completion.max_requests_per_second, self._clock)
        self._store = ObjectStore(self.retry, self._clock, budget, self._observer)
        self._engine = CompletionEngine(
            self._store,
            config=self.completion,
            retry=self.retry,
            clock=self._clock,
            budget=budget,
            concurrency=max(1, min(_ENGINE_CONCURRENCY, max_connections * 3 // 4)),
            rng=random.Random(),
            observer=self._observer,
        )
        self._opener = self._opening  # one bound method shared by every handle

    # -- lifecycle --------------------------------------------------------------------------
    async def __aenter__(self) -> AsyncInferenceClient:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def last_s3_error(self) -> InvocationError | None:
        """Why S3 reads made while waiting keep failing (the last error), or None.

        Such errors never fail a handle: the engine reads again later. A command-line tool or
        a health check can show this so that a wait does not look like a silent hang.
        """
        return self._store.trouble

    @property
    def notification_queue_url(self) -> str | None:
        """The SQS queue this client reads notifications from, or None.

        None without notifications, and with ``NotificationConfig(topics=)`` until the client
        is open (it creates the queue then).
        """
        if self._queue is not None:
            return self._queue.url
        return self.notifications.queue_url if self.notifications is not None else None

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called."""
        return self._state == "closed"

    async def open(self) -> None:
        """Create the AWS clients (done for you by ``async with`` or on first use)."""
        self._check_open()
        if self._state == "open":
            return
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._state != "new":
                self._check_open()
                return
            session = self._session or get_session()
            config = AioConfig(
                retries={"mode": "standard", "total_max_attempts": 1},  # tenacity retries
                max_pool_connections=self._max_connections,
                connect_timeout=self.retry.connect_timeout,
                read_timeout=self.retry.read_timeout,
            )
            stack = AsyncExitStack()
            # Last out: injected clients stop being counted once this client is closed.
            stack.callback(self._observer.uninstrument)
            try:
                runtime: SageMakerRuntimeClient = await self._aws_client(
                    stack,
                    session,
                    "sagemaker-runtime",
                    self.endpoint_url,
                    self._injected_runtime,
                    config,
                )
                s3: S3Client = await self._aws_client(
                    stack, session, "s3", self.s3_endpoint_url, self._injected_s3, config
                )
                source = await self._listen(session, stack, config)
            except BaseException as exc:
                await stack.aclose()
                if isinstance(exc, Exception):
                    raise _configuration_error(exc) from exc
                raise
            if self._state == "closed":  # aclose() ran while the clients were being made
                await self._close_queue()
                await stack.aclose()
                raise ClientClosedError("the AsyncInferenceClient was closed while opening")
            self._stack, self._runtime = stack, runtime
            self._store.bind(s3)
            self._engine.start()
            if source is not None:
                self._hear(source)
            self._state = "open"
            self._loop = asyncio.get_running_loop()

    async def _aws_client(
        self,
        stack: AsyncExitStack,
        session: AioSession,
        service: Literal["sagemaker-runtime", "s3", "sqs", "sns", "sagemaker"],
        endpoint_url: str | None,
        injected: Any,
        config: AioConfig,
    ) -> Any:
        """The ``injected`` client as it is, or one of our own (tuned, closed with ``stack``).

        Its requests are counted either way.
        """
        if injected is not None:
            client = injected
        else:
            client = await stack.enter_async_context(
                session.create_client(
                    service, region_name=self.region_name, endpoint_url=endpoint_url, config=config
                )
            )
            await tune(client)
        self._observer.instrument(client)
        return client

    async def _listen(
        self, session: AioSession, stack: AsyncExitStack, config: AioConfig
    ) -> NotificationSource | None:
        """With notifications: the SQS client, the client's own queue if asked, the source.

        With ``discover=True``, no source yet: it starts when the first topics are found.
        """
        notifications = self.notifications
        if notifications is None:
            return None
        self._sqs = await self._aws_client(
            stack,
            session,
            "sqs",
            self.sqs_endpoint_url,
            self._injected_sqs,
            config.merge(AioConfig(read_timeout=max(self.retry.read_timeout, _SQS_READ_TIMEOUT))),
        )
        if notifications.queue_url is not None:
            return self._source(notifications.queue_url)
        sns: SNSClient = await self._aws_client(
            stack, session, "sns", self.sns_endpoint_url, self._injected_sns, config
        )
        queue = ClientQueue(self._sqs, sns, notifications, self._clock)
        self._queue = queue
        if notifications.discover:
            sagemaker = await self._aws_client(
                stack, session, "sagemaker", self.sagemaker_endpoint_url, None, config
            )
            self._discovery = TopicDiscovery(
                sagemaker,
                queue,
                config=notifications,
                retry=self.retry,
                clock=self._clock,
                scheduler=self._engine.scheduler,
                listen=lambda queue_url: self._hear(self._source(queue_url)),
            )
            return None
        return self._source(await queue.create())

    def _source(self, queue_url: str) -> NotificationSource:
        assert self.notifications is not None and self._sqs is not None
        discovery = self._discovery
        return NotificationSource(
            self._sqs,
            queue_url,
            config=self.notifications,
            retry=self.retry,
            clock=self._clock,
            find=self._engine.find,
            report=self._engine.report,
            report_failure=self._engine.report_failure,
            covers=discovery.covers if discovery is not None else None,
            unannounced=discovery.unannounced if discovery is not None else None,
        )

    def _hear(self, source: NotificationSource) -> None:
        """Take notifications from ``source``: at open, or once the queue exists.

        (With ``discover=True``, the queue is made when the first topics are found.)
        """
        self._engine.listen(source)
        if self._queue is not None:
            self._queue.start(self._engine.scheduler)

    async def _close_queue(self) -> None:
        queue, self._queue = self._queue, None
        if queue is not None:
            await queue.aclose()

    async def aclose(self) -> None:
        """Stop the completion engine (waiters get :class:`ClientClosedError`), close connections.

        Handles stay pending: their ``to_dict()`` can be resumed by another client. Done
        callbacks of handles still pending are not called.
        """
        if self._state == "closed":
            return
        self._state = "closed"
        if self._loop is not None and self._loop is not asyncio.get_running_loop():
            # Opened in another (closed) loop: its connections and tasks died with it.
            self._stack = self._runtime = self._queue = None
            return
        await self._engine.aclose()
        await self._close_queue()
        if self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.aclose()
        self._runtime = None

    # -- the API ----------------------------------------------------------------------------
    async def invoke_endpoint_async(
        self,
        endpoint_name: str,
        *,
        body: bytes | bytearray | memoryview | str | None = None,
        input_location: str | None = None,
        content_type: str | None = None,
        accept: str | None = None,
        custom_attributes: str | None = None,
        inference_id: str | None = None,
        invocation_timeout_seconds: int | None = None,
        request_ttl_seconds: int | None = None,
        s3_output_path_extension: str | None = None,
        filename: str | None = None,
        polling: PollingConfig | None = None,
    ) -> AsyncInferenceHandle:
        """Submit one inference with InvokeEndpointAsync; returns its handle at once.

        Give exactly one of ``body`` (bytes, or str sent as UTF-8) and ``input_location``
        (an ``s3://`` URI of an uploaded payload). A body of at most 128,000 bytes is sent
        inline; a larger one is uploaded to the client's ``input_prefix`` first.

        Transient errors (throttling, InternalFailure, ServiceUnavailable, dropped
        connections) are retried with the same InferenceId; one is generated when none is
        given, so a retry can never create an untraceable duplicate.

        Raises:
            ValidationError: an argument breaks a rule of the API (before any network call).
            InvocationError: SageMaker (or the S3 upload) refused the request.
            ClientClosedError: the client is closed.
        """
        self._check_open()
        fields, upload_body = self._validated_request(
            {
                "EndpointName": endpoint_name,
                "Body": body,
                "InputLocation": input_location,
                "ContentType": content_type,
                "Accept": accept,
                "CustomAttributes": custom_attributes,
                "InferenceId": inference_id,
                "InvocationTimeoutSeconds": invocation_timeout_seconds,
                "RequestTTLSeconds": request_ttl_seconds,
                "S3OutputPathExtension": s3_output_path_extension,
                "Filename": filename,
            },
            polling,
        )
        await self.open()
        if inference_id is None:
            inference_id = self._new_inference_id()
        elif self._queue is not None and not inference_id.startswith(self._queue.id_prefix):
            self._warn_own_ids()
        polling = polling or self.polling
        wait = (
            polling.timeout
            if polling.timeout is not None
            else (request_ttl_seconds or _DEFAULT_TTL)
            + (invocation_timeout_seconds or _DEFAULT_INVOCATION_TIMEOUT)
            + polling.deadline_margin
        )
        submission = _Submission(
            endpoint_name=endpoint_name,
            inference_id=inference_id,
            submitted_at=self._clock.wall(),
            started=self._clock.monotonic(),
            wait=wait,
            span=self._observer.start(endpoint_name, inference_id),
        )
        if self._discovery is not None:  # (in the background: the invoke does not wait)
            self._discovery.used(endpoint_name)
        # Its notification may come before the invoke's answer: the engine must know it is ours.
        self._engine.expect(inference_id, submission.submitted_at + wait)
        uploaded: str | None = None
        if upload_body is not None:
            uploaded = await self._upload(submission, upload_body, content_type)
            fields["InputLocation"] = uploaded
        fields["InferenceId"] = inference_id
        request = {k: v for k, v in fields.items() if v is not None}
        accepted = await self._submit(submission, request, uploaded)
        return self._watch(submission, accepted, polling)

    def _validated_request(
        self, fields: dict[str, Any], polling: PollingConfig | None
    ) -> tuple[dict[str, Any], bytes | None]:
        """Step 1 of an invoke: check every argument before any network call.

        Returns the request's fields (a str body as UTF-8 bytes), and the body to upload
        first when it is too large to send inline (None otherwise).
        """
        body = fields["Body"]
        if isinstance(body, str):
            try:
                body = body.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValidationError(
                    "body",
                    f"is not encodable as UTF-8 ({exc.reason} at position {exc.start})",
                    "a str of valid Unicode text, or bytes",
                ) from None
        elif isinstance(body, (bytearray, memoryview)):
            body = bytes(body)
        input_location = fields["InputLocation"]
        if body == b"" and input_location is None:
            raise ValidationError(
                "body",
                "is empty (SageMaker would refuse it with a misleading message)",
                "at least one byte, or input_location= for a payload in S3",
            )
        upload = isinstance(body, bytes) and len(body) > MAX_INLINE_BODY
        # A large body is validated as the InputLocation it will become; the real URI needs
        # the (validated) InferenceId, so a well-formed stand-in takes its place until then.
        fields = fields | {
            "Body": None if upload else body,
            "InputLocation": "s3://upload/pending" if upload else input_location,
        }
        if upload and input_location is not None:
            fields["Body"] = b""  # report "both given", not a size problem
        validate_invoke_request(fields, python_names=True)
        if polling is not None and not isinstance(polling, PollingConfig):
            raise ValidationError(
                "polling", f"a {type(polling).__name__} was given", "a PollingConfig"
            )
        if upload and self.input_prefix is None:
            raise ValidationError(
                "body",
                f"is {len(body)} bytes, more than the {MAX_INLINE_BODY} bytes sent inline",
                "set input_prefix='s3://bucket/prefix/' on the client to upload large bodies, "
                "or upload it yourself and pass input_location",
            )
        return fields, body if upload else None

    async def _upload(self, submission: _Submission, body: bytes, content_type: str | None) -> str:
        """Step 2 of an invoke, for a large body: upload it; returns its ``s3://`` URI."""
        uri = self._upload_uri(submission.inference_id)
        try:
            with self._observer.using(submission.span):
                await self._store.put(
                    uri, body, content_type=content_type, deadline=submission.deadline
                )
        except Exception as exc:
            self._engine.forget(submission.inference_id)
            self._refused(submission, exc)
            raise
        return uri

    async def _submit(
        self, submission: _Submission, request: dict[str, Any], uploaded: str | None
    ) -> _Accepted:
        """Step 3 of an invoke: send it, retrying transient errors with the same InferenceId.

        Each attempt is counted in ``submission``: sent, and failed but maybe accepted.
        """
        runtime = self._runtime
        assert runtime is not None
        endpoint_name, inference_id = submission.endpoint_name, submission.inference_id
        policy = retrying(
            self.retry,
            clock=self._clock,
            deadline=submission.deadline,
            max_attempts=self.retry.max_attempts,
            # A retried invoke may reach SageMaker twice; the shared InferenceId ties them.
            what=f"InvokeEndpointAsync {endpoint_name} (InferenceId {inference_id})",
            on_retry=self._observer.retried,
            log_fields=submission.log_fields,
        )

        async def attempt() -> _Accepted:
            if self._state == "closed":
                raise ClientClosedError("the AsyncInferenceClient was closed")
            submission.sent += 1
            try:
                # A trickling or stalled answer is abandoned, and the attempt retried.
                with self._engine.scheduler.busy():
                    response = await bounded(
                        runtime.invoke_endpoint_async(**request),
                        self.retry.attempt_timeout,
                        self._clock,
                        f"InvokeEndpointAsync {endpoint_name}",
                    )
                return _accepted(response, inference_id)
            except Exception as exc:
                if may_have_reached(exc):
                    submission.uncertain += 1
                raise

        try:
            with self._observer.using(submission.span):
                return await call_with_retry(policy, attempt)
        except Exception as exc:
            raise await self._submit_failed(submission, exc, uploaded) from exc

    async def _submit_failed(
        self, submission: _Submission, exc: Exception, uploaded: str | None
    ) -> SageMakerAsyncError:
        """The error to raise when every attempt failed (logged and reported)."""
        inference_id, reached = submission.inference_id, submission.reached
        if not reached:
            self._engine.forget(inference_id)
        if self._state == "closed":
            closed = ClientClosedError(
                f"the client was closed during InvokeEndpointAsync of inference {inference_id}"
                + (
                    ": the request may have reached SageMaker, so the inference may run"
                    if reached
                    else "; it was not submitted"
                ),
                inference_id=inference_id,
                possibly_submitted=reached,
            )
            self._refused(submission, closed)
            return closed
        note = await self._forget_upload(uploaded, reached, submission.deadline) if uploaded else ""
        error = to_invocation_error(
            exc,
            "InvokeEndpointAsync",
            note=note,
            inference_id=inference_id,
            possibly_submitted=reached,
        )
        if submission.sent > 1:
            logger.warning(
                "inference %s: InvokeEndpointAsync failed after %d attempts%s",
                inference_id,
                submission.sent,
                "; some may have reached SageMaker and may run" if reached else "",
                extra={
                    "event": "submit_failed",
                    **submission.log_fields,
                    "attempts": submission.sent,
                    "possibly_submitted": reached,
                    "error": error.code,
                },
            )
        self._refused(submission, error)
        return error

    def _watch(
        self, submission: _Submission, accepted: _Accepted, polling: PollingConfig
    ) -> AsyncInferenceHandle:
        """Step 4 of an invoke: the handle that waits for the accepted inference."""
        # The accepted request, and every failed one that may have been accepted all the same.
        submissions = 1 + submission.uncertain
        if submissions > 1:
            logger.warning(
                "inference %s was sent %d times (same InferenceId) after errors that may have "
                "hidden an acceptance: SageMaker may run it more than once",
                submission.inference_id,
                submissions,
                extra={
                    "event": "duplicate_submission",
                    **submission.log_fields,
                    "submit_attempts": submissions,
                },
            )
        target = WatchTarget(
            endpoint_name=submission.endpoint_name,
            inference_id=accepted.inference_id,
            output_location=accepted.output_location,
            failure_location=accepted.failure_location,
            submitted_at=submission.submitted_at,
            deadline=submission.submitted_at + submission.wait,
            span=submission.span,
        )
        self._observer.accepted(
            target,
            attempts=submission.sent,
            submissions=submissions,
            elapsed=self._clock.monotonic() - submission.started,
        )
        return self._handle(
            target,
            polling,
            submit_attempts=submissions,
            clock_times=(submission.started, submission.deadline),
        )

    def _refused(self, submission: _Submission, error: BaseException) -> None:
        self._observer.refused(
            submission.endpoint_name,
            submission.inference_id,
            error,
            attempts=submission.sent,
            uncertain=submission.uncertain,
            elapsed=self._clock.monotonic() - submission.started,
            span=submission.span,
        )

    def map(
        self,
        endpoint_name: str,
        inputs: Iterable[Any] | AsyncIterable[Any],
        *,
        max_in_flight: int = 64,
        ordered: bool = False,
        submit_rate: float | None = None,
        progress: Callable[[MapProgress], object] | None = None,
        on_submit: Callable[[int, AsyncInferenceHandle], object] | None = None,
        **options: Any,
    ) -> AsyncGenerator[MapOutcome, None]:
        """Run one inference per input, at most ``max_in_flight`` at a time; yield outcomes.

        ::

            async with contextlib.aclosing(client.map("my-endpoint", lines, max_in_flight=200,
                                                      content_type="application/json")) as outcomes:
                async for outcome in outcomes:
                    print(outcome.index, outcome.result.body if outcome.ok else outcome.error)

        ``inputs`` (an iterable or async iterable, possibly endless) is read lazily: an input
        is read only when fewer than ``max_in_flight`` are between being read and being given
        back to you, so memory and the endpoint's queue stay bounded whatever its length. An
        input is a body (bytes, or str sent as UTF-8), or a mapping of
        :meth:`invoke_endpoint_async` options for that input (``{"body": ...}`` or
        ``{"input_location": ...}``, plus any other option); ``options`` apply to every input.

        Every input gives one :class:`MapOutcome`: its result, or its error (a submission
        refused, a failure, a timeout: the run goes on). Outcomes come as they finish, or in
        input order with ``ordered=True`` (a slow input then holds back the ones after it,
        still within ``max_in_flight``).

        Leaving the loop early (break, an exception, cancellation) stops reading inputs,
        submitting and waiting once the iterator is closed: use :func:`contextlib.aclosing`
        (or ``await outcomes.aclose()``) to close it at once. Inferences already submitted
        still run in SageMaker: there is no way to cancel them.

        Args:
            endpoint_name: the endpoint every input goes to.
            inputs: bodies, or mappings of per-input options.
            max_in_flight: most inputs read and not yet given back (submitted, running,
                or finished and waiting for you).
            ordered: yield outcomes in input order.
            submit_rate: most submissions per second (protects a small endpoint's queue);
                unlimited when None.
            progress: called with a :class:`MapProgress` each time an outcome is given back
                (the library prints nothing itself).
            on_submit: called with ``(index, handle)`` as soon as an input is accepted, for
                example to save ``handle.to_dict()`` so that a later run can resume the wait;
                an error it raises becomes that input's outcome.
            **options: :meth:`invoke_endpoint_async` options for every input.

        Raises:
            ValidationError: a bad argument (before anything is read or sent).
        """
        return map_inferences(
            self.invoke_endpoint_async,
            endpoint_name,
            inputs,
            max_in_flight=max_in_flight,
            ordered=ordered,
            submit_rate=submit_rate,
            progress=progress,
            on_submit=on_submit,
            clock=self._clock,
            **options,
        )

    async def _forget_upload(self, uri: str, possibly_submitted: bool, deadline: float) -> str:
        """After a failed invoke: delete its uploaded body, or say where it stays."""
        if possibly_submitted:  # a queued request would read it later: keep it
            return f"; its input stays at {uri} (delete it if the inference never ran)"
        try:
            await self._store.delete(uri, deadline=deadline)
        except InvocationError as exc:
            return f"; its uploaded input {uri} could not be deleted: {exc}"
        return ""

    def resume(
        self,
        state: HandleState | Mapping[str, Any],
        *,
        polling: PollingConfig | None = None,
    ) -> AsyncInferenceHandle:
        """Rebuild a handle from :meth:`AsyncInferenceHandle.to_dict` (maybe from another process).

        Args:
            state: a :class:`HandleState` (``handle.to_dict()``, as it is or read back from
                JSON).
            polling: how this handle is watched; the client's ``polling`` by default.

        Raises:
            ValidationError: ``state`` is not a handle's ``to_dict()``.
        """
        self._check_open()
        target, attempts = load_state(state)
        span = self._observer.start(
            target.endpoint_name, target.inference_id, start_time=target.submitted_at, resumed=True
        )
        if span is not None:
            target = dataclasses.replace(target, span=span)
        self._observer.resumed += 1
        if self._discovery is not None:
            self._discovery.used(target.endpoint_name)
        self._engine.expect(target.inference_id, target.deadline)
        # From here on, this process counts the wait on its monotonic clock.
        now, wall = self._clock.monotonic(), self._clock.wall()
        clock_times = (
            now - max(0.0, wall - target.submitted_at),
            now + (target.deadline - wall),
        )
        return self._handle(
            target, polling or self.polling, submit_attempts=attempts, clock_times=clock_times
        )

    def stats(self) -> ClientStats:
        """What this client did so far: a :class:`ClientStats` snapshot (cheap; plain counts).

        In flight, outcomes, retries, duplicate submissions, the sources that found each
        outcome, and the AWS requests sent, by service and kind. See docs/observability.md.
        """
        return self._observer.snapshot(self._engine.watching, self._engine.notification_counts())

    # -- internals ---------------------------------------------------------------------------
    def _handle(
        self,
        target: WatchTarget,
        polling: PollingConfig,
        *,
        submit_attempts: int,
        clock_times: tuple[float, float],
    ) -> AsyncInferenceHandle:
        return AsyncInferenceHandle(
            target=target,
            polling=polling,
            completions=self._engine,
            opener=self._opener,
            clock_times=clock_times,
            submit_attempts=submit_attempts,
        )

    def _opening(self) -> Awaitable[None] | None:
        """``open()`` to await, or None when the client is open (a handle's fast path)."""
        return None if self._state == "open" else self.open()

    def _upload_uri(self, inference_id: str) -> str:
        # Unique per request: two queued requests that share a caller's InferenceId must not
        # overwrite each other's input (one would silently run on the other's bytes).
        assert self.input_prefix is not None
        prefix = self.input_prefix if self.input_prefix.endswith("/") else self.input_prefix + "/"
        return f"{prefix}{quote(inference_id, safe='-_.')}.{uuid.uuid4().hex}.in"

    def _new_inference_id(self) -> str:
        prefix = self._queue.id_prefix if self._queue is not None else ""
        return f"{prefix}{uuid.uuid4()}"

    def _warn_own_ids(self) -> None:
        if not self._warned_own_ids:
            self._warned_own_ids = True
            logger.warning(
                "an InferenceId chosen by the caller does not start with %s, so its "
                "notification does not pass this client's queue filter: its result is found "
                "by the S3 safety net, later (leave inference_id unset to be notified)",
                self._queue.id_prefix if self._queue is not None else "",
            )

    def _check_open(self) -> None:
        if self._state == "closed":
            raise ClientClosedError("the AsyncInferenceClient is closed; create a new one")
        if self._loop is not None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                return  # a sync call (resume) outside any loop: the wait will tell
            if running is not self._loop:
                raise ClientClosedError(
                    "this AsyncInferenceClient was opened in another event loop (each "
                    "asyncio.run() makes a new one, and its connections die with it): create "
                    "the client inside the coroutine that uses it, one client per event loop"
                )
