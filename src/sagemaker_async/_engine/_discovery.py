"""Each endpoint's notification topics, read from its configuration: ``notifications="auto"``.

``NotificationConfig(discover=True)``. The first time the client uses an endpoint (an invoke,
a resume), a service of the scheduler reads DescribeEndpoint and DescribeEndpointConfig, in the
background: the invoke's answer never waits for it.

- The configuration's ``AsyncInferenceConfig.OutputConfig.NotificationConfig`` names topics:
  the client's own filtered queue (:class:`ClientQueue`, made with the first topics found) is
  subscribed to them, and the endpoint's inferences are watched on S3 at the safety net's pace
  from then on.
- It names none, or the client may not describe the endpoint: its inferences are watched on
  S3 alone, as without notifications; one INFO line per endpoint says why.

A configuration can change (UpdateEndpoint to a config with other topics): when S3 finds a
result of an endpoint that no notification announced, the endpoint is read again, at most
once per ``safety_net`` seconds (every five minutes at most for an endpoint that had no
topics), and new topics are subscribed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from .._clock import Clock
from .._config import NotificationConfig, RetryConfig
from .._errors import InvocationError
from .._result import WatchTarget
from .._retry import call_with_retry, retrying, to_invocation_error
from ._client_queue import ClientQueue
from ._scheduler import Scheduler

__all__ = ["TopicDiscovery"]

logger = logging.getLogger("sagemaker_async")

_ATTEMPTS = 3  # DescribeEndpoint and DescribeEndpointConfig, each, on transient errors
_UNCOVERED_RECHECK = 300.0  # seconds between reads of an endpoint that had no topics


class TopicDiscovery:
    """Finds the topics of each endpoint the client uses and subscribes its queue to them."""

    def __init__(
        self,
        sagemaker: Any,
        queue: ClientQueue,
        *,
        config: NotificationConfig,
        retry: RetryConfig,
        clock: Clock,
        scheduler: Scheduler,
        listen: Callable[[str], None],
    ) -> None:
        self._sagemaker = sagemaker  # an aiobotocore "sagemaker" (control plane) client
        self._queue = queue
        self._config = config
        self._retry = retry
        self._clock = clock
        self._scheduler = scheduler
        self._listen = listen  # called once, with the queue's URL, when the queue is made
        self._covered: set[str] = set()  # endpoints whose topics the queue is subscribed to
        self._looked: dict[str, float] = {}  # endpoint -> when it was last read (monotonic)
        self._said: set[tuple[str, str]] = set()
        self._lock = asyncio.Lock()  # one queue change at a time

    def covers(self, endpoint_name: str) -> bool:
        """True when ``endpoint_name``'s notifications reach the client's queue."""
        return endpoint_name in self._covered

    def used(self, endpoint_name: str) -> None:
        """The client invokes (or resumes) ``endpoint_name``: read its topics the first time."""
        if endpoint_name not in self._looked:
            self._look(endpoint_name)

    def unannounced(self, target: WatchTarget) -> None:
        """S3 found ``target``'s result with no notification: its endpoint may have changed."""
        endpoint = target.endpoint_name
        last = self._looked.get(endpoint)
        pause = self._config.safety_net if self.covers(endpoint) else _UNCOVERED_RECHECK
        if last is None or self._clock.monotonic() - last >= pause:
            self._look(endpoint)

    def _look(self, endpoint_name: str) -> None:
        self._looked[endpoint_name] = self._clock.monotonic()
        self._scheduler.spawn(
            self._lookup(endpoint_name), f"sagemaker-async topics of {endpoint_name}"
        )

    async def _lookup(self, endpoint_name: str) -> None:
        try:
            topics = await self._topics(endpoint_name)
        except InvocationError as exc:
            self._covered.discard(endpoint_name)
            self._say(endpoint_name, f"its configuration could not be read: {exc} ({exc.code})")
            return
        if not topics:
            self._covered.discard(endpoint_name)
            self._say(endpoint_name, "its configuration names no notification topics")
            return
        async with self._lock:
            made = self._queue.url is not None
            try:
                url = await self._queue.create(topics)
            except InvocationError as exc:
                self._say(endpoint_name, f"its topics could not be subscribed: {exc} ({exc.code})")
                return
            if not made:
                self._listen(url)
        if endpoint_name not in self._covered:
            self._covered.add(endpoint_name)
            logger.info(
                "notifications: endpoint %s notifies %s; its results come from the queue",
                endpoint_name,
                ", ".join(topics),
            )

    async def _topics(self, endpoint_name: str) -> list[str]:
        """The topics ``endpoint_name``'s configuration names (none: an empty list)."""

        async def call(operation: str, method: Any, **fields: str) -> Any:
            policy = retrying(
                self._retry,
                clock=self._clock,
                deadline=None,
                max_attempts=_ATTEMPTS,
                what=f"{operation} of {endpoint_name}",
            )
            try:
                return await call_with_retry(policy, lambda: method(**fields))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise to_invocation_error(exc, operation) from exc

        endpoint = await call(
            "DescribeEndpoint", self._sagemaker.describe_endpoint, EndpointName=endpoint_name
        )
        config = await call(
            "DescribeEndpointConfig",
            self._sagemaker.describe_endpoint_config,
            EndpointConfigName=endpoint["EndpointConfigName"],
        )
        output = (config.get("AsyncInferenceConfig") or {}).get("OutputConfig") or {}
        notify = output.get("NotificationConfig") or {}
        named = (notify.get("SuccessTopic"), notify.get("ErrorTopic"))
        return list(dict.fromkeys(t for t in named if isinstance(t, str) and t))

    def _say(self, endpoint_name: str, why: str) -> None:
        if (endpoint_name, why) not in self._said:
            self._said.add((endpoint_name, why))
            logger.info("notifications: endpoint %s is watched on S3 alone: %s", endpoint_name, why)
