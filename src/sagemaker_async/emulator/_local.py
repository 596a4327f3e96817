"""LocalAsyncEndpoint: the emulator in-process, as an async context manager."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Mapping
from contextlib import AsyncExitStack
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from .._clock import Clock, SystemClock
from .._errors import ValidationError
from ._app import ACCOUNT_ID, create_app
from ._config import DEFAULT_BUCKET, EndpointConfig, EndpointStats, parse_endpoint_spec
from ._control import ControlPlane
from ._endpoint import EmulatedEndpoint
from ._models import Model, resolve_model
from ._proxy import RefusingProxy
from ._s3 import EmbeddedS3, connectable_host
from ._scaling import Autoscaler

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_sns import SNSClient

__all__ = ["LocalAsyncEndpoint"]

_log = logging.getLogger("sagemaker_async.emulator")


class LocalAsyncEndpoint:
    """SageMaker async endpoints served on ``http://host:port``, writing to a real S3.

    Example::

        async with LocalAsyncEndpoint(endpoints=[EndpointConfig("ep", model="echo")]) as emu:
            client = session.create_client("sagemaker-runtime", endpoint_url=emu.url, ...)

    Args:
        endpoints: the endpoints to serve: :class:`EndpointConfig` objects or ``"NAME=MODEL"``
            specs.
        s3_endpoint_url: the S3 to read inputs from and write outputs to. ``None`` starts an
            :class:`EmbeddedS3` (moto) for the emulator's lifetime, which also serves SQS and SNS.
        sns_endpoint_url: where to publish notifications; default ``s3_endpoint_url`` (moto
            serves every service on one port).
        sqs_endpoint_url: reported in :attr:`env`; default ``sns_endpoint_url``.
        host: the address to bind; keep the loopback default unless you mean otherwise.
        port: the port to bind; 0 picks a free one (see :attr:`url`).
        region: the region clients must sign for, and the region in notifications.
        credentials: ``(access_key, secret_key)`` clients must sign with.
        s3_credentials: credentials for the emulator's own S3/SNS calls; default
            ``credentials``.
        bucket: the bucket of default output and failure paths.
        time_scale: multiplies RequestTTLSeconds and InvocationTimeoutSeconds (not model delays)
            so tests can expire a 60 s TTL in 0.6 s with ``time_scale=0.01``, and a variant's
            ContainerStartupHealthCheckTimeoutInSeconds. Wire validation is unchanged.
        deployment_seconds: how long an endpoint made through the control plane stays
            ``Creating``, ``Updating`` or ``Deleting`` (real seconds).
        images: for the control plane: a container ``Image`` -> the model to run for it (a
            callable or a :func:`resolve_model` spec such as ``"http://127.0.0.1:8080"``).
            An Image not listed is itself a spec (``echo``, ``sleep:2``, ``http://...``);
            any other makes CreateEndpoint end ``Failed``.
        metrics_interval: every so many seconds, on the boundaries of that period, put each
            endpoint's ApproximateBacklogSize, ApproximateBacklogSizePerInstance,
            ApproximateAgeOfOldestRequest and HasBacklogWithoutCapacity (namespace
            ``AWS/SageMaker``, dimension EndpointName) to the CloudWatch of :attr:`env` (the
            embedded moto), then evaluate the CloudWatch alarms on them and the Application
            Auto Scaling policies registered for ``endpoint/NAME/variant/V`` (see
            docs/emulator.md). The service publishes every minute; ``None`` publishes
            nothing and scales nothing.
        list_bucket_allowed: False: the embedded S3 answers as S3 does to a caller without
            ``s3:ListBucket`` (403 AccessDenied for a missing key and for any listing); see
            :attr:`EmbeddedS3.list_bucket_allowed`. Only with the embedded S3.
        connection_timeout: seconds a connection may stay idle (no request, or a request whose
            headers or body stop coming) before the emulator closes it; a request whose body
            is still incomplete then is answered 408 RequestTimeout. 60, as a load balancer's
            idle timeout; make it longer than your clients keep idle connections pooled.
        scale_out_seconds: how long adding instances takes (the endpoint is ``Updating``
            meanwhile; on AWS, minutes).
        scale_in_seconds: how long removing instances takes.
        clock: the clock of metric periods, alarms, cooldowns and the scaling delays (a
            test's fake clock runs autoscaling in virtual time); default: the real one.
    """

    def __init__(
        self,
        endpoints: Iterable[EndpointConfig | str] = (),
        *,
        s3_endpoint_url: str | None = None,
        sns_endpoint_url: str | None = None,
        sqs_endpoint_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        region: str = "us-east-1",
        credentials: tuple[str, str] = ("testing", "testing"),
        s3_credentials: tuple[str, str] | None = None,
        bucket: str = DEFAULT_BUCKET,
        time_scale: float = 1.0,
        deployment_seconds: float = 1.0,
        images: Mapping[str, Model | str] | None = None,
        metrics_interval: float | None = 60.0,
        list_bucket_allowed: bool = True,
        connection_timeout: float = 60.0,
        scale_out_seconds: float = 1.0,
        scale_in_seconds: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        configs = [parse_endpoint_spec(e) if isinstance(e, str) else e for e in endpoints]
        names = [config.name for config in configs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValidationError(
                "endpoints", f"{duplicates} appear more than once", "unique endpoint names"
            )
        if not time_scale > 0:
            raise ValidationError(
                "time_scale", f"{time_scale!r} is not positive", "> 0", time_scale
            )
        self._configs = configs
        self._s3_url = s3_endpoint_url
        self._sns_url = sns_endpoint_url
        self._sqs_url = sqs_endpoint_url
        self._host = host
        self._port = port
        self._region = region
        self._credentials = credentials
        self._s3_credentials = s3_credentials or credentials
        self._bucket = bucket
        self._time_scale = time_scale
        if not deployment_seconds >= 0:
            raise ValidationError(
                "deployment_seconds", f"{deployment_seconds!r} is negative", ">= 0"
            )
        self._deployment_seconds = deployment_seconds
        self._images = dict(images or {})
        if metrics_interval is not None and not metrics_interval > 0:
            raise ValidationError(
                "metrics_interval", f"{metrics_interval!r} is not positive", "> 0, or None"
            )
        self._metrics_interval = metrics_interval
        if not list_bucket_allowed and s3_endpoint_url is not None:
            raise ValidationError(
                "list_bucket_allowed",
                "False applies to the embedded S3 only, and s3_endpoint_url was given",
                "True with s3_endpoint_url (set the permission on that S3 instead)",
            )
        self._list_bucket_allowed = list_bucket_allowed
        if not connection_timeout > 0:
            raise ValidationError(
                "connection_timeout", f"{connection_timeout!r} is not positive", "> 0"
            )
        self._connection_timeout = connection_timeout
        for name, value in (
            ("scale_out_seconds", scale_out_seconds),
            ("scale_in_seconds", scale_in_seconds),
        ):
            if not value >= 0:
                raise ValidationError(name, f"{value!r} is negative", ">= 0")
        self._scale_out_seconds = scale_out_seconds
        self._scale_in_seconds = scale_in_seconds
        self._clock: Clock = clock or SystemClock()
        self._autoscaler: Autoscaler | None = None
        self._metrics_task: asyncio.Task[None] | None = None
        self._proxy: RefusingProxy | None = None
        self._control: ControlPlane | None = None
        self._s3: S3Client | None = None
        self._sns: SNSClient | None = None
        self._embedded: EmbeddedS3 | None = None
        self._endpoints: dict[str, EmulatedEndpoint] = {}
        self._stack: AsyncExitStack | None = None
        self._runner: web.AppRunner | None = None
        self._url: str | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> LocalAsyncEndpoint:
        """Start S3 (when embedded), the endpoints' workers and the HTTP server."""
        if self._url is not None:
            return self
        try:
            await self._start()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def _start(self) -> None:
        import aiobotocore.session
        from aiobotocore.config import AioConfig

        if self._s3_url is None:
            self._embedded = EmbeddedS3(
                host=self._host, list_bucket_allowed=self._list_bucket_allowed
            )
            await asyncio.to_thread(self._embedded.start)
            self._s3_url = self._embedded.url
        self._stack = AsyncExitStack()
        session = aiobotocore.session.get_session()
        access_key, secret_key = self._s3_credentials
        config = AioConfig(max_pool_connections=64, retries={"mode": "standard"})
        common: dict[str, Any] = {
            "region_name": self._region,
            "aws_access_key_id": access_key,
            "aws_secret_access_key": secret_key,
            "config": config,
        }
        s3: S3Client = await self._stack.enter_async_context(
            session.create_client("s3", endpoint_url=self._s3_url, **common)
        )
        sns: SNSClient = await self._stack.enter_async_context(
            session.create_client("sns", endpoint_url=self.sns_endpoint_url, **common)
        )
        self._s3, self._sns = s3, sns
        self._control = ControlPlane(
            self._endpoints,
            self._make_endpoint,
            region=self._region,
            account_id=ACCOUNT_ID,
            deployment_seconds=self._deployment_seconds,
            images=self._images,
            time_scale=self._time_scale,
            scale_out_seconds=self._scale_out_seconds,
            scale_in_seconds=self._scale_in_seconds,
            clock=self._clock,
        )
        if self._metrics_interval is not None:
            moto = self._embedded.url if self._embedded else self._s3_url
            cloudwatch = await self._stack.enter_async_context(
                session.create_client("cloudwatch", endpoint_url=moto, **common)
            )
            autoscaling = await self._stack.enter_async_context(
                session.create_client("application-autoscaling", endpoint_url=moto, **common)
            )
            self._autoscaler = Autoscaler(
                self._control,
                lambda: self._endpoints,
                cloudwatch=cloudwatch,
                autoscaling=autoscaling,
                interval=self._metrics_interval,
                clock=self._clock,
            )
            self._metrics_task = asyncio.create_task(
                self._autoscaler.run(), name="emulator-metrics"
            )
        for config_ in self._configs:
            endpoint = self._make_endpoint(config_, resolve_model(config_.model))
            self._endpoints[config_.name] = endpoint
            await endpoint.start()
            self._control.register_static(config_)
        app = create_app(
            self._endpoints,
            access_key=self._credentials[0],
            secret_key=self._credentials[1],
            region=self._region,
            control=self._control,
            forward_url=self._embedded.url if self._embedded else self._s3_url,
            body_timeout=self._connection_timeout,
        )
        # An idle connection, or one whose request headers never end, is closed after the
        # timeout (aiohttp's keep-alive timer runs from the connection's start); an unfinished
        # body is the handler's (body_timeout); what is left of it is read for at most the
        # timeout too.
        self._proxy = await RefusingProxy(self._host).start()
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=self._connection_timeout,
            lingering_time=min(10.0, self._connection_timeout),
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self._url = f"http://{connectable_host(host)}:{port}"
        _log.info(
            "SageMaker async emulator on %s (endpoints: %s; S3: %s)",
            self._url,
            ", ".join(self._endpoints) or "none",
            self._s3_url,
        )

    def _make_endpoint(self, config: EndpointConfig, model: Model) -> EmulatedEndpoint:
        assert self._s3 is not None and self._sns is not None
        return EmulatedEndpoint(
            config,
            model,
            s3=self._s3,
            sns=self._sns,
            region=self._region,
            bucket=self._bucket,
            time_scale=self._time_scale,
        )

    async def aclose(self) -> None:
        """Stop serving, then clean up; idempotent.

        Cancels the workers (queued requests are dropped), closes every client and connection,
        and stops the embedded S3.
        """
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._proxy is not None:
            await self._proxy.aclose()
            self._proxy = None
        if self._metrics_task is not None:
            self._metrics_task.cancel()
            await asyncio.gather(self._metrics_task, return_exceptions=True)
            self._metrics_task = None
        if self._control is not None:
            await self._control.aclose()
            self._control = None
        for endpoint in self._endpoints.values():
            await endpoint.aclose()
        self._endpoints.clear()
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None
            self._s3 = self._sns = None
        if self._embedded is not None:
            await asyncio.to_thread(self._embedded.stop)
            self._embedded = None
            self._s3_url = None
        if self._url is not None:
            _log.info("SageMaker async emulator on %s stopped", self._url)
            self._url = None

    async def __aenter__(self) -> LocalAsyncEndpoint:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- what clients need -------------------------------------------------------------------

    def _require_started(self) -> str:
        if self._url is None:
            raise RuntimeError("LocalAsyncEndpoint is not started; use 'async with' or start()")
        return self._url

    @property
    def url(self) -> str:
        """The emulator's URL: the ``endpoint_url`` of a sagemaker-runtime client."""
        return self._require_started()

    @property
    def s3_endpoint_url(self) -> str:
        """The S3 endpoint URL the emulator uses (the embedded one unless given)."""
        self._require_started()
        assert self._s3_url is not None
        return self._s3_url

    @property
    def sns_endpoint_url(self) -> str:
        """Where notifications are published."""
        url = self._sns_url or self._s3_url
        if url is None:
            raise RuntimeError("LocalAsyncEndpoint is not started; use 'async with' or start()")
        return url

    @property
    def sqs_endpoint_url(self) -> str:
        """The SQS endpoint URL to report to clients (moto's, by default)."""
        return self._sqs_url or self.sns_endpoint_url

    @property
    def embedded_s3(self) -> EmbeddedS3 | None:
        """The embedded moto server (with its request counts), when the emulator started one."""
        return self._embedded

    @property
    def autoscaler(self) -> Autoscaler | None:
        """The loop of metrics, alarms and scaling (None without ``metrics_interval``).

        Its ``busy`` says whether a period is being processed, and ``activities`` lists every
        scaling decision.
        """
        return self._autoscaler

    @property
    def bucket(self) -> str:
        """The emulator's own bucket (of the default output and failure paths; it exists)."""
        return self._bucket

    @property
    def region(self) -> str:
        """The region clients sign for."""
        return self._region

    @property
    def credentials(self) -> tuple[str, str]:
        """``(access_key, secret_key)`` that clients must sign with."""
        return self._credentials

    #: Variables of the user's AWS set-up that :attr:`env` users must unset: a profile (its
    #: credentials and endpoints would win) and a real session token.
    UNSET_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point AWS SDKs (boto3, aiobotocore, the CLI) here.

        Every AWS service, not only the emulated ones, goes to 127.0.0.1: the runtime and the
        SageMaker control plane to the emulator, the rest (S3, SQS, SNS, STS, CloudWatch...)
        to the embedded moto through ``AWS_ENDPOINT_URL``. The user's config and credentials
        files are replaced by empty ones, and a configured
        ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`` is turned off; also unset :attr:`UNSET_ENV`
        (the fixtures and ``emulate``'s exports do).

        ``HTTP_PROXY`` and ``HTTPS_PROXY`` (both cases) point at a local proxy that refuses
        every request, naming the emulator, and ``NO_PROXY`` keeps the loopback addresses and
        the hosts of these URLs direct: a client that hard-codes an AWS host (the SageMaker
        Python SDK's STS client) fails at once instead of leaving the machine.
        """
        urls = {
            "AWS_ENDPOINT_URL": self._embedded.url if self._embedded else self.s3_endpoint_url,
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.url,
            "AWS_ENDPOINT_URL_SAGEMAKER": self.url,
            "AWS_ENDPOINT_URL_S3": self.s3_endpoint_url,
            "AWS_ENDPOINT_URL_SQS": self.sqs_endpoint_url,
            "AWS_ENDPOINT_URL_SNS": self.sns_endpoint_url,
        }
        direct = ["127.0.0.1", "localhost", "::1", "[::1]"]
        for url in urls.values():
            host = urlsplit(url).hostname or ""
            for name in (host, f"[{host}]" if ":" in host else host):
                if name and name not in direct:
                    direct.append(name)
        assert self._proxy is not None
        proxies = {
            name: value
            for variable, value in (
                ("HTTP_PROXY", self._proxy.url),
                ("HTTPS_PROXY", self._proxy.url),
                ("NO_PROXY", ",".join(direct)),
            )
            for name in (variable, variable.lower())  # the lower-case ones win in most tools
        }
        return {
            **urls,
            **proxies,
            "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "false",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_DEFAULT_REGION": self._region,
            "AWS_ACCESS_KEY_ID": self._credentials[0],
            "AWS_SECRET_ACCESS_KEY": self._credentials[1],
        }

    @property
    def refusing_proxy(self) -> RefusingProxy:
        """The proxy of :attr:`env`; its ``refused`` lists what tried to leave the machine."""
        self._require_started()
        assert self._proxy is not None
        return self._proxy

    @property
    def endpoints(self) -> Mapping[str, EmulatedEndpoint]:
        """The running endpoints by name (read-only)."""
        return MappingProxyType(self._endpoints)

    def endpoint(self, name: str) -> EmulatedEndpoint:
        """The running endpoint ``name``.

        Raises:
            KeyError: no such endpoint.
        """
        try:
            return self._endpoints[name]
        except KeyError:
            raise KeyError(f"no endpoint {name!r}; have {sorted(self._endpoints)}") from None

    def stats(self, name: str) -> EndpointStats:
        """A snapshot of endpoint ``name``'s queue and counters."""
        return self.endpoint(name).stats()

    async def join(self) -> None:
        """Wait until every accepted request of every endpoint has its output or failure.

        Endpoints replaced by UpdateEndpoint are waited for too.
        """
        for endpoint in list(self._endpoints.values()):
            await endpoint.join()
        if self._control is not None:
            await self._control.join()
