"""A notification queue of one client's own: created at open, filtered, removed at close.

``NotificationConfig(topics=...)`` mode. The client names itself with a random token; its
InferenceIds start with ``<token>-``; its queue ``<queue_name_prefix><token>`` is subscribed to
each topic with a filter policy on that prefix (FilterPolicyScope ``MessageBody``), so the
queue receives this client's notifications only, however many processes share the topics.

A live client refreshes a heartbeat tag on its queue every third of ``idle_timeout``. When a
client opens, it deletes the queues (and their subscriptions, named in tags) of clients whose
heartbeat is older than ``idle_timeout``: what a killed process left behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._clock import Clock
from .._config import NotificationConfig
from .._errors import InvocationError
from .._retry import to_invocation_error
from .._tasks import cancel_all
from ._scheduler import Scheduler

if TYPE_CHECKING:
    from types_aiobotocore_sns import SNSClient
    from types_aiobotocore_sqs import SQSClient

__all__ = ["ClientQueue"]

logger = logging.getLogger("sagemaker_async")

_HEARTBEAT = "sagemaker-async:heartbeat"
_SUBSCRIPTION = "sagemaker-async:subscription:"


class ClientQueue:
    """Creates, keeps alive and deletes one client's filtered notification queue."""

    def __init__(
        self,
        sqs: SQSClient,
        sns: SNSClient,
        config: NotificationConfig,
        clock: Clock,
        *,
        token: str | None = None,
    ) -> None:
        self._sqs = sqs
        self._sns = sns
        self._config = config
        self._clock = clock
        self.token = token or secrets.token_hex(6)
        #: Every InferenceId the client generates starts with this; the filter passes those.
        self.id_prefix = f"{self.token}-"
        self.name = f"{config.queue_name_prefix}{self.token}"
        self.url: str | None = None
        self._arn = ""
        #: The topics the queue is subscribed to.
        self.topics: list[str] = []
        self._subscriptions: list[str] = []
        self._tasks: list[asyncio.Task[None]] = []

    def filter_policy(self) -> str:
        """The subscription filter: only notifications of this client's inferences pass."""
        return json.dumps({"inferenceId": [{"prefix": self.id_prefix}]})

    def queue_policy(self, queue_arn: str, topics: Sequence[str]) -> str:
        """Lets the ``topics`` (and nothing else) send to the queue."""
        return json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "sns.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": queue_arn,
                        "Condition": {"ArnEquals": {"aws:SourceArn": list(topics)}},
                    }
                ],
            }
        )

    async def create(self, topics: Sequence[str] | None = None) -> str:
        """Create the queue (the first time) and subscribe it to ``topics``; returns its URL.

        ``topics`` defaults to ``NotificationConfig.topics``. Topics it is subscribed to
        already are skipped, so the set can grow (``NotificationConfig(discover=True)``).

        Raises:
            InvocationError: SQS or SNS refused. A queue made by this call is removed again;
                subscriptions made before it stay.
        """
        made = self.url is None
        operation = "CreateQueue"
        try:
            if self.url is None:
                created = await self._sqs.create_queue(
                    QueueName=self.name, tags={_HEARTBEAT: self._now()}
                )
                self.url = created["QueueUrl"]
                operation = "GetQueueAttributes"
                attributes = await self._sqs.get_queue_attributes(
                    QueueUrl=self.url, AttributeNames=["QueueArn"]
                )
                self._arn = attributes["Attributes"]["QueueArn"]
            wanted = self._config.topics if topics is None else topics
            new = [t for t in dict.fromkeys(wanted) if t not in self.topics]
            if new:
                operation = "SetQueueAttributes"
                policy = self.queue_policy(self._arn, [*self.topics, *new])
                await self._sqs.set_queue_attributes(
                    QueueUrl=self.url, Attributes={"Policy": policy}
                )
                operation = "Subscribe"
                for topic in new:
                    subscribed = await self._sns.subscribe(
                        TopicArn=topic,
                        Protocol="sqs",
                        Endpoint=self._arn,
                        Attributes={
                            "FilterPolicyScope": "MessageBody",
                            "FilterPolicy": self.filter_policy(),
                            "RawMessageDelivery": "true",
                        },
                        ReturnSubscriptionArn=True,
                    )
                    self._subscriptions.append(subscribed["SubscriptionArn"])
                    self.topics.append(topic)
                operation = "TagQueue"
                await self._sqs.tag_queue(
                    QueueUrl=self.url,
                    Tags={f"{_SUBSCRIPTION}{i}": a for i, a in enumerate(self._subscriptions)},
                )
        except Exception as exc:
            if made:
                await self.delete()
            raise to_invocation_error(
                exc,
                operation,
                note=f" (while creating this client's notification queue {self.name}; see "
                "the IAM permissions that NotificationConfig(topics=) needs in the docs)",
            ) from exc
        if new:
            logger.info(
                "notifications: queue %s subscribed to %s for InferenceIds %s*",
                self.name,
                ", ".join(new),
                self.id_prefix,
            )
        assert self.url is not None
        return self.url

    def start(self, scheduler: Scheduler) -> None:
        """Start the heartbeat and a sweep of the queues that dead clients left.

        Both are services of ``scheduler``, the client's one task owner.
        """
        self._tasks = [
            scheduler.spawn(self._heartbeats(), "sagemaker-async queue heartbeat"),
            scheduler.spawn(self._sweep_quietly(), "sagemaker-async queue sweep"),
        ]

    async def aclose(self) -> None:
        """Stop the heartbeat; delete the subscriptions and the queue."""
        tasks, self._tasks = self._tasks, []
        await cancel_all(tasks)
        await self.delete()

    async def delete(self) -> None:
        """Unsubscribe and delete the queue (errors are logged: a later sweep retries)."""
        subscriptions, self._subscriptions = self._subscriptions, []
        self.topics = []
        url, self.url = self.url, None
        for arn in subscriptions:
            await self._quietly("Unsubscribe", self._sns.unsubscribe(SubscriptionArn=arn))
        if url is not None:
            await self._quietly("DeleteQueue", self._sqs.delete_queue(QueueUrl=url))

    async def sweep(self) -> int:
        """Delete queues of this prefix whose heartbeat is older than ``idle_timeout``."""
        abandoned = 0
        oldest = self._clock.wall() - self._config.idle_timeout
        pages: dict[str, Any] = {"QueueNamePrefix": self._config.queue_name_prefix}
        while True:
            listed = await self._sqs.list_queues(**pages)
            for url in listed.get("QueueUrls", []):
                if url == self.url:
                    continue
                tags = (await self._sqs.list_queue_tags(QueueUrl=url)).get("Tags", {})
                try:
                    heartbeat = float(tags[_HEARTBEAT])
                except (KeyError, ValueError):
                    continue  # not one of ours
                if heartbeat >= oldest:
                    continue
                for name, arn in tags.items():
                    if name.startswith(_SUBSCRIPTION):
                        await self._quietly(
                            "Unsubscribe", self._sns.unsubscribe(SubscriptionArn=arn)
                        )
                await self._quietly("DeleteQueue", self._sqs.delete_queue(QueueUrl=url))
                logger.info("notifications: deleted abandoned queue %s", url)
                abandoned += 1
            token = listed.get("NextToken")
            if not token:
                return abandoned
            pages["NextToken"] = token

    async def _sweep_quietly(self) -> None:
        try:
            await self.sweep()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.info("notifications: could not look for abandoned queues: %s", exc)

    async def _heartbeats(self) -> None:
        while True:
            await self._clock.sleep(self._config.idle_timeout / 3)
            if self.url is not None:
                beat = self._sqs.tag_queue(QueueUrl=self.url, Tags={_HEARTBEAT: self._now()})
                await self._quietly("TagQueue", beat)

    def _now(self) -> str:
        return str(int(self._clock.wall()))

    @staticmethod
    async def _quietly(operation: str, call: Any) -> None:
        try:
            await call
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error: InvocationError = to_invocation_error(exc, operation)
            logger.warning("notifications: %s failed: %s (%s)", operation, error, error.code)
