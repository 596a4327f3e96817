"""One emulated endpoint at run time: its queue, its workers and what they write to S3 and SNS."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from .._validation import parse_s3_uri
from ._config import (
    DEFAULT_BUCKET,
    ERROR_NOTIFICATION_TOPIC,
    SUCCESS_NOTIFICATION_TOPIC,
    EndpointConfig,
    EndpointStats,
)
from ._models import ContainerModel, InferenceRequest, Model, ModelError, call_model
from ._notifications import build_notification

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sns import SNSClient

__all__ = ["EmulatedEndpoint", "Job"]

_log = logging.getLogger("sagemaker_async.emulator")


@dataclass(eq=False)
class Job:
    """One accepted request, from the queue to its output or failure object."""

    inference_id: str
    payload: bytes | None
    input_location: str | None
    content_type: str | None
    accept: str | None
    custom_attributes: str | None = field(repr=False)
    ttl_seconds: int
    timeout_seconds: int
    output_location: str
    failure_location: str | None  # None: the endpoint has no S3FailurePath
    received_at: float  # loop time
    received_wall: dt.datetime
    timer: asyncio.TimerHandle | None = None
    expired: bool = False  # its TTL passed while queued; the workers skip it


class _Lost(Exception):
    """S3 refused the input or the result: the request ends with no object and no notice."""


class _Outcome(Exception):
    """A failure reason, raised inside a worker to end a job with a failure object."""

    def __init__(self, reason: str, body: bytes | None = None) -> None:
        self.reason = reason
        self.body = body
        super().__init__(reason)


class EmulatedEndpoint:
    """An async endpoint: a FIFO queue drained by ``concurrency`` workers.

    Created and started by :class:`~sagemaker_async.emulator.LocalAsyncEndpoint`; use
    :attr:`backlog`, :attr:`in_flight`, :meth:`stats` and :meth:`join` to observe it.
    """

    def __init__(
        self,
        config: EndpointConfig,
        model: Model,
        *,
        s3: S3Client,
        sns: SNSClient,
        region: str,
        bucket: str = DEFAULT_BUCKET,
        time_scale: float = 1.0,
    ) -> None:
        self.config = config
        self.model = model
        self._s3 = s3
        self._sns = sns
        self._region = region
        self._bucket = bucket
        self._time_scale = time_scale
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        # The queued requests in arrival order (backlog and oldest age); expiry removes them.
        self._waiting: dict[Job, None] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[None]] = set()  # workers running a job
        self._instances = config.instance_count
        self._started = False
        self._side_tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._unfinished = 0
        self._in_flight = 0
        self._received = 0
        self._completed = 0
        self._failed = 0
        self._expired = 0
        self._timed_out = 0
        self._input_unreadable = 0
        self._output_unwritable = 0
        self._rng = random.Random()
        self._tokens = float(config.throttle_burst)  # throttle_rate's bucket
        self._refilled = 0.0

    @property
    def name(self) -> str:
        """The endpoint name."""
        return self.config.name

    @property
    def output_path(self) -> str:
        """The S3OutputPath in use (no trailing slash)."""
        return self.config.output_path(self._bucket)

    @property
    def failure_path(self) -> str:
        """The S3FailurePath in use (no trailing slash)."""
        return self.config.failure_path(self._bucket)

    @property
    def instances(self) -> int:
        """Instances serving now (CurrentInstanceCount): the config's, until scaled."""
        return self._instances

    @property
    def concurrency(self) -> int:
        """How many inferences run at once now (instances times the per-instance limit)."""
        return self._instances * self.config.max_concurrent_invocations_per_instance

    def set_instances(self, count: int) -> None:
        """Scale to ``count`` instances at once: workers are added, or leave.

        A leaving worker that runs an inference finishes it first; queued requests stay queued
        (at zero instances they wait, their TTL still running).
        """
        self._instances = count
        if self._started:
            self._resize()

    def _resize(self) -> None:
        for _ in range(self.concurrency - len(self._workers)):
            index = len(self._workers)
            task = asyncio.create_task(self._worker(), name=f"emulator-{self.name}-worker-{index}")
            self._workers.append(task)
        surplus = len(self._workers) - self.concurrency
        for task in [t for t in self._workers if t not in self._busy][:surplus]:
            self._workers.remove(task)  # an idle worker waits on the queue: cancel it
            task.cancel()
        # Busy ones beyond the count leave after their inference (see _worker).

    @property
    def backlog(self) -> int:
        """Requests waiting in the queue (not yet handed to the model)."""
        return len(self._waiting)

    @property
    def in_flight(self) -> int:
        """Requests the model is processing now."""
        return self._in_flight

    def stats(self) -> EndpointStats:
        """A snapshot of the queue and the counters."""
        loop = asyncio.get_running_loop()
        first = next(iter(self._waiting), None)
        oldest = loop.time() - first.received_at if first is not None else 0.0
        return EndpointStats(
            name=self.name,
            backlog=self.backlog,
            in_flight=self._in_flight,
            concurrency=self.concurrency,
            received=self._received,
            completed=self._completed,
            failed=self._failed,
            expired=self._expired,
            timed_out=self._timed_out,
            input_unreadable=self._input_unreadable,
            output_unwritable=self._output_unwritable,
            oldest_request_age_seconds=round(oldest, 3),
        )

    @property
    def idle(self) -> bool:
        """True when every accepted request has its output or failure object (and notice)."""
        return self._idle.is_set()

    async def join(self) -> None:
        """Wait until every accepted request has its output or failure object (and notice)."""
        await self._idle.wait()

    async def start(self) -> None:
        """Check the model container (``/ping``) and the buckets, start the workers.

        The emulator's own bucket (that of the default paths) is created when missing; any
        other bucket must exist: a missing one is logged, and the requests whose objects it
        should hold end with no object, as on AWS.
        """
        if isinstance(self.model, ContainerModel):
            await self.model.start()
        paths = [self.output_path] + (
            [self.failure_path] if self.config.has_s3_failure_path else []
        )
        buckets = {parse_s3_uri(path, key=False)[0] for path in paths}
        for bucket in sorted(buckets):
            if bucket == self._bucket:
                await self._ensure_bucket(bucket)
            elif not await self._bucket_exists(bucket):
                _log.warning(
                    "endpoint %s: bucket %s does not exist: requests whose output or failure "
                    "goes there will have none (the emulator creates only its own bucket, %s)",
                    self.name,
                    bucket,
                    self._bucket,
                )
        self._started = True
        self._resize()

    async def aclose(self) -> None:
        """Cancel the workers and pending writes; queued requests are dropped."""
        for job in self._waiting:
            if job.timer is not None:
                job.timer.cancel()
        self._waiting.clear()
        self._queue = asyncio.Queue()
        tasks = [*self._workers, *self._side_tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        self._busy.clear()
        self._side_tasks.clear()
        self._started = False
        if isinstance(self.model, ContainerModel):
            await self.model.aclose()

    def admit(self) -> str | None:
        """The injected fault this invoke meets (``"throttled"``, ``"fault"``), or None."""
        config = self.config
        if config.fault_rate and self._rng.random() < config.fault_rate:
            return "fault"
        if config.throttle_rate is not None:
            now = asyncio.get_running_loop().time()
            self._tokens = min(
                float(config.throttle_burst),
                self._tokens + (now - self._refilled) * config.throttle_rate,
            )
            self._refilled = now
            if self._tokens < 1.0:
                return "throttled"
            self._tokens -= 1.0
        return None

    def submit(self, job: Job) -> None:
        """Queue an accepted request; its TTL clock starts now."""
        self._received += 1
        self._unfinished += 1
        self._idle.clear()
        self._waiting[job] = None
        self._queue.put_nowait(job)
        loop = asyncio.get_running_loop()
        # A timer per request: an endpoint with no instance (or busy ones) still expires it.
        job.timer = loop.call_later(job.ttl_seconds * self._time_scale, self._expire, job)

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    def _expire(self, job: Job) -> None:
        # Runs when the TTL passes; the job may already be with a worker (then nothing to do).
        if self._waiting.pop(job, False) is False:
            return
        job.expired = True  # still in the queue: the worker that takes it skips it
        self._expired += 1
        reason = (
            "ClientError: Request expired: it waited in the queue longer than "
            f"RequestTTLSeconds ({job.ttl_seconds} s)."
        )
        self._spawn(self._finish_failed(job, reason, None))

    async def _worker(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        while me in self._workers:
            job = await self._queue.get()
            if job.expired:
                continue
            self._waiting.pop(job, None)
            if job.timer is not None:
                job.timer.cancel()
            self._in_flight += 1
            self._busy.add(me)
            try:
                await self._process(job)
            except Exception:
                # Keep the worker alive: one request's S3 trouble must not stop the endpoint.
                _log.exception("endpoint %s: inference %s was lost", self.name, job.inference_id)
            finally:
                self._in_flight -= 1
                self._busy.discard(me)
            if len(self._workers) > self.concurrency:  # scaled in while it worked: leave
                self._workers.remove(me)

    async def _process(self, job: Job) -> None:
        try:
            payload = job.payload if job.payload is not None else await self._read_input(job)
        except _Lost:
            self._input_unreadable += 1
            self._done()
            return
        try:
            body, content_type = await self._invoke(job, payload)
        except _Outcome as outcome:
            await self._finish_failed(job, outcome.reason, outcome.body)
            return
        await self._finish_completed(job, body, content_type)

    async def _read_input(self, job: Job) -> bytes:
        assert job.input_location is not None
        try:
            bucket, key = parse_s3_uri(job.input_location, field="InputLocation")
            response = await self._s3.get_object(Bucket=bucket, Key=key)
            async with response["Body"] as stream:
                return await stream.read()
        except (ClientError, BotoCoreError, ValueError) as exc:
            # As on AWS (a missing object or bucket, a role without s3:GetObject): no output,
            # no failure object, no notification; the caller waits until its deadline.
            _log.warning(
                "endpoint %s: inference %s gets no output: its input %s cannot be read (%s)",
                self.name,
                job.inference_id,
                job.input_location,
                _error_code(exc),
            )
            raise _Lost from None

    async def _invoke(self, job: Job, payload: bytes) -> tuple[bytes, str]:
        request = InferenceRequest(
            payload=payload,
            content_type=job.content_type,
            accept=job.accept,
            custom_attributes=job.custom_attributes,
            inference_id=job.inference_id,
            endpoint_name=self.name,
        )
        timeout = job.timeout_seconds * self._time_scale
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            body, content_type = await asyncio.wait_for(call_model(self.model, request), timeout)
        except asyncio.TimeoutError:
            if loop.time() - started < timeout:
                raise _Outcome(_model_error_reason(500, "TimeoutError")) from None
            self._timed_out += 1
            raise _Outcome(
                "ClientError: The model did not answer within InvocationTimeoutSeconds "
                f"({job.timeout_seconds} s)."
            ) from None
        except ModelError as exc:
            raise _Outcome(
                _model_error_reason(exc.status, exc.message), exc.message.encode()
            ) from None
        except Exception as exc:
            # A Python model's bug is the model's failure, not the emulator's.
            message = f"{type(exc).__name__}: {exc}"
            raise _Outcome(_model_error_reason(500, message), message.encode()) from None
        return body, content_type or job.accept or "application/octet-stream"

    async def _finish_completed(self, job: Job, body: bytes, content_type: str) -> None:
        await self._finish(
            job,
            job.output_location,
            body,
            content_type,
            self.config.success_topic,
            include=SUCCESS_NOTIFICATION_TOPIC,
            response_body=body,
            output_location=job.output_location,
            output_content_type=content_type,
        )

    async def _finish_failed(self, job: Job, reason: str, body: bytes | None) -> None:
        await self._finish(
            job,
            job.failure_location,
            reason.encode(),
            "text/plain; charset=utf-8",
            self.config.error_topic,
            include=ERROR_NOTIFICATION_TOPIC,
            response_body=body if body is not None else reason.encode(),
            failure_location=job.failure_location,
            failure_reason=reason,
        )

    async def _finish(
        self,
        job: Job,
        location: str | None,
        data: bytes,
        content_type: str,
        topic: str | None,
        *,
        include: str,
        response_body: bytes,
        **notice: Any,
    ) -> bool:
        """Write the output or failure object, then the notification (if configured).

        Without S3FailurePath (``location`` None), a failure writes no object. When S3 refuses
        the object (a missing bucket, no permission), nothing more happens: no notification,
        False. The inference counts as completed (or failed) once its object is written, before
        the notification: a client may read the object, and submit again, at once.
        """
        try:
            if location is not None:
                if not await self._put(job, location, data, content_type):
                    return False
                _log.info(
                    "endpoint %s: inference %s written to %s",
                    self.name,
                    job.inference_id,
                    location,
                )
            if include == SUCCESS_NOTIFICATION_TOPIC:
                self._completed += 1
            else:
                self._failed += 1
            if topic:
                await self._publish(
                    topic,
                    build_notification(
                        region=self._region,
                        endpoint_name=self.name,
                        inference_id=job.inference_id,
                        received_at=job.received_wall,
                        completed_at=dt.datetime.now(dt.timezone.utc),
                        request_content_type=job.content_type,
                        request_accept=job.accept,
                        input_location=job.input_location,
                        response_body=(
                            response_body
                            if include in self.config.include_inference_response_in
                            else None
                        ),
                        **notice,
                    ),
                )
            return True
        finally:
            self._done()

    def _done(self) -> None:
        self._unfinished -= 1
        if self._unfinished == 0:
            self._idle.set()

    async def _put(self, job: Job, location: str, body: bytes, content_type: str) -> bool:
        """Write one object; False (logged and counted) when S3 refuses it."""
        bucket, key = parse_s3_uri(location)
        try:
            await self._s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            # No bucket appears by magic: on AWS a missing bucket (or a role without
            # s3:PutObject) means no object, and a poller waits until its deadline.
            self._output_unwritable += 1
            _log.warning(
                "endpoint %s: inference %s gets no output: %s cannot be written (%s)",
                self.name,
                job.inference_id,
                location,
                _error_code(exc),
            )
            return False
        return True

    async def _bucket_exists(self, bucket: str) -> bool:
        try:
            await self._s3.head_bucket(Bucket=bucket)
        except ClientError:
            return False
        return True

    async def _ensure_bucket(self, bucket: str) -> None:
        try:
            if self._region == "us-east-1":
                await self._s3.create_bucket(Bucket=bucket)
            else:
                await self._s3.create_bucket(
                    Bucket=bucket,
                    CreateBucketConfiguration={"LocationConstraint": self._region},  # type: ignore[typeddict-item]
                )
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise

    async def _publish(self, topic_arn: str, message: str) -> None:
        try:
            await self._sns.publish(TopicArn=topic_arn, Message=message)
        except (ClientError, BotoCoreError) as exc:
            # The real service drops a notification it cannot deliver; the S3 object stands.
            _log.warning("endpoint %s: could not notify %s: %s", self.name, topic_arn, exc)


def _error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or exc)
    return str(exc)


def _model_error_reason(status: int, message: str) -> str:
    kind = "client" if 400 <= status < 500 else "server"
    return (
        f'ClientError: Received {kind} error ({status}) from model with message "{message}". '
        "See the emulator's log for more information."
    )
