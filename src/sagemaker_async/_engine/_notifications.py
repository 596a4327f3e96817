"""The notification source: SageMaker's SNS notifications, read from an SQS queue.

One receive loop per client long-polls the queue (up to 10 messages a call) and sorts each
message:

- it completes an inference this client watches: the engine resolves it (from the message,
  or with one GET of the output location when the response is not inside), and the message,
  with every copy of it that came or comes, is deleted once the watch has its outcome;
- it belongs to an inference of this client that nobody waits for right now, or whose invoke
  has not answered yet: it is held (invisible to others) until a handle waits for it;
- it belongs to an inference this client already resolved: it is deleted (a copy);
- it names an inference of this client but contradicts it (another output location or
  endpoint), or names another inference with this client's output location: it is a
  *mismatch*, which resolves nothing (logged once per message, counted);
- anything else belongs to someone else (another process on a shared queue, an old run) or is
  not a SageMaker notification: it is made visible again, never deleted, after a second at its
  first receipt and a second more at each receipt after (SQS's ApproximateReceiveCount; half
  its age once that is longer), so that a queue full of others' messages cannot keep a
  client's own from it.

What a message must match to resolve a handle: its ``inferenceId`` is the handle's; the output
location it names, if any, is the handle's; the endpoint it names, if any, is the handle's.
Whoever may send to the queue can still forge a message that matches: the queue policy is the
trust boundary (see docs/notifications.md).

Deletes and releases go out in batches of up to 10 from a second task: releases at once (the
message's owner waits for it), deletes when ten are due or after ``delete_linger`` (nobody
waits for a delete; the message stays invisible for ``hold`` meanwhile).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._clock import Clock, Timer
from .._config import NotificationConfig, PollingConfig, RetryConfig
from .._errors import InvocationError, ValidationError
from .._result import WatchTarget
from .._retry import is_transient, retry_delay, to_invocation_error
from .._tasks import cancel_all
from .._validation import canonical_s3_uri
from ._records import Completion, Key, Watch
from ._scheduler import Scheduler

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient

__all__ = ["Notice", "NotificationSource", "parse_notification", "release_delay"]

logger = logging.getLogger("sagemaker_async")

_BATCH = 10  # SQS's most messages per receive, delete or visibility batch
_WAIT = 20  # long-polling seconds (SQS's longest)
# SQS's limit is 12 hours from the receipt, not from the change: leave a margin for the time
# between the two (a change past it fails, and moto fails the whole batch).
_MAX_VISIBILITY = 43200 - 600
_PRUNE_EVERY = 60.0
# On close, a receive under way on a busy queue is let finish (it answers within a round trip)
# for at most this long, so that what it brings is given back rather than hidden for ``hold``.
_CLOSE_GRACE = 1.0
# On close, how long the last deletes and releases may take.
_CLOSE_SEND = 10.0
# How long a resolved inference's id is remembered, to delete a second delivery of its message.
_REMEMBER_SETTLED = 900.0
_SORTED = ("messages", "own", "duplicates", "foreign", "unparseable", "mismatched")
# Mismatching messages already logged (by MessageId), at most this many remembered.
_REMEMBER_LOGGED = 10_000


@dataclass(slots=True, eq=False)
class Notice:
    """One received SageMaker notification (``receipt`` is the latest receipt handle)."""

    message_id: str
    receipt: str
    sent: float | None  # wall time SQS got it (SentTimestamp)
    inference_id: str
    succeeded: bool
    output_location: str | None = None
    content_type: str | None = None
    body: bytes | None = None
    reason: str | None = None
    endpoint_name: str | None = None  # requestParameters.endpointName, when given
    receipts: int = 1  # SQS's ApproximateReceiveCount: this receipt is the how-manyth


def parse_notification(message: dict[str, Any]) -> Notice | None:
    """Read an SQS message (SNS-wrapped or raw) as a SageMaker notification, or None."""
    try:
        data = json.loads(message.get("Body", ""))
        if isinstance(data, dict) and data.get("Type") == "Notification":
            data = json.loads(data.get("Message", ""))
    except (TypeError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("eventSource") != "aws:sagemaker":
        return None
    inference_id, status = data.get("inferenceId"), data.get("invocationStatus")
    if not isinstance(inference_id, str) or status not in ("Completed", "Failed"):
        return None
    notice = _stranger(message)
    notice.inference_id = inference_id
    notice.succeeded = status == "Completed"
    request = data.get("requestParameters")
    if isinstance(request, dict) and isinstance(request.get("endpointName"), str):
        notice.endpoint_name = request["endpointName"]
    response = data.get("responseParameters")
    if isinstance(response, dict):
        location, content_type = response.get("outputLocation"), response.get("contentType")
        if isinstance(location, str):
            try:
                notice.output_location = canonical_s3_uri(location)
            except ValidationError:
                notice.output_location = location  # matches no watch: resolves nothing
        notice.content_type = content_type if isinstance(content_type, str) else None
    if notice.succeeded:
        included = data.get("responseBody")
        if (
            isinstance(included, dict)
            and included.get("encoding") == "BASE64"
            and isinstance(included.get("content"), str)
        ):
            try:
                notice.body = base64.b64decode(included["content"], validate=True)
            except (binascii.Error, ValueError):
                notice.body = None  # read it from S3 instead
    else:
        reason = data.get("failureReason")
        notice.reason = reason if isinstance(reason, str) else "the inference failed"
    return notice


def release_delay(receipts: int, age: float = 0.0, young: float = math.inf) -> int:
    """Seconds a message that is not this client's stays invisible when given back.

    As many seconds as the message has had receipts (one at its first); once it is older
    than ``young`` seconds (the safety net: its owner, if alive, has looked in S3 by then),
    at least half its ``age`` (seconds since it was sent). So a young message whose owner
    shares the queue is back for its owner within seconds even after many misses, while
    messages nobody takes (an old run's, junk) come back less and less often. Never past
    SQS's limit (12 hours from the receipt, less a margin).
    """
    grown = int(age / 2) if age >= young else 0
    return max(1, min(max(receipts, grown), _MAX_VISIBILITY))


def _attribute(message: dict[str, Any], name: str) -> int | None:
    try:
        return int((message.get("Attributes") or {})[name])
    except (KeyError, TypeError, ValueError):
        return None


def _stranger(message: dict[str, Any]) -> Notice:
    """A received message as a notice of no inference (what every message is, at first)."""
    sent = _attribute(message, "SentTimestamp")
    return Notice(
        message_id=str(message.get("MessageId", "")),
        receipt=str(message.get("ReceiptHandle", "")),
        sent=None if sent is None else sent / 1000,
        inference_id="",
        succeeded=False,
        receipts=_attribute(message, "ApproximateReceiveCount") or 1,
    )


class NotificationSource:
    """Reads one SQS queue for the engine; see the module's docstring."""

    name = "notify"

    def __init__(
        self,
        sqs: SQSClient,
        queue_url: str,
        *,
        config: NotificationConfig,
        retry: RetryConfig,
        clock: Clock,
        find: Callable[[str], Watch | None],
        report: Callable[[Completion, str], None],
        report_failure: Callable[[Watch, str, str], None],
        linger: float = 0.1,
        delete_linger: float = 1.0,
        close_grace: float = _CLOSE_GRACE,
        covers: Callable[[str], bool] | None = None,
        unannounced: Callable[[WatchTarget], None] | None = None,
    ) -> None:
        self._sqs = sqs
        self.queue_url = queue_url
        self._config = config
        self._retry = retry
        self._clock = clock
        self._find = find  # output location -> the watch of it
        self._report = report
        self._report_failure = report_failure
        self._covers = covers  # endpoint name -> do its notifications come here (None: all)
        self._on_unannounced = unannounced
        self._linger = linger
        # A claimed message must be deleted well before ``hold`` makes it visible again.
        self._delete_linger = min(delete_linger, config.hold / 4)
        self._delete_timer: Timer | None = None
        self._deletes_due = False
        self._busy = False  # the last receive brought messages
        self._close_grace = close_grace
        self._closing = False
        # Ours, no outcome yet / resolved: id -> until when (the monotonic clock's time).
        self._pending_ids: dict[str, float] = {}
        self._settled_ids: dict[str, float] = {}
        self._by_id: dict[str, Watch] = {}  # watches now under way
        # The notices of each watch: the first reported it, the others are copies of it.
        self._claimed: dict[Watch, list[Notice]] = {}
        self._shared_ids: set[str] = set()  # ids this client submitted more than once
        self._held: dict[str, list[Notice]] = {}  # ours, nobody waits yet: by inference id
        self._by_message: dict[str, Notice] = {}  # every notice held or claimed
        self._logged: dict[str, None] = {}  # mismatching messages logged (by MessageId)
        self._deletes: list[Notice] = []
        self._releases: list[tuple[Notice, int]] = []
        self._flush = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._unannounced = False  # warned that S3 found a result no notification announced
        self._next_prune = 0.0
        self._warned: set[str] = set()
        self.trouble: InvocationError | None = None
        self.stats: Counter[str] = Counter()

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, scheduler: Scheduler) -> None:
        """Start the receive loop and the batch sender (services of ``scheduler``)."""
        self._tasks = [
            scheduler.spawn(self._receive_loop(), "sagemaker-async notifications"),
            scheduler.spawn(self._send_loop(), "sagemaker-async notification batches"),
        ]

    async def aclose(self) -> None:
        """Stop receiving; delete what is resolved and give back what is held (best effort)."""
        tasks, self._tasks = self._tasks, []
        self._closing = True
        receiver, sender = tasks if tasks else (None, None)
        if receiver is not None and self._busy and not receiver.done():
            # A long poll cut short may still take messages (they would stay hidden for
            # ``hold``): on a busy queue its answer is a round trip away, so wait for it.
            await asyncio.wait({receiver}, timeout=self._close_grace)
        await cancel_all([receiver] if receiver is not None else [])
        for notice in list(self._by_message.values()):
            self._releases.append((notice, 0))  # ours, unresolved: another client may resume
        self._by_message.clear()
        if sender is not None:
            # Let a send under way finish (cancelled, its batches would be lost), then stop.
            self._deletes_due = True
            self._flush.set()
            await asyncio.wait({sender}, timeout=2.0)
            await cancel_all([sender])
        try:
            # (Deletes not sent now leave this client's results to come back to others for
            # good: a slow SQS is given its read timeout's worth, not just a moment.)
            await asyncio.wait_for(self._send_all(), timeout=_CLOSE_SEND)
        except (asyncio.TimeoutError, InvocationError) as exc:
            logger.info("notifications: could not tidy the queue on close: %s", exc)

    # -- the engine's interface -------------------------------------------------------------
    def expect(self, inference_id: str, deadline: float) -> None:
        """``inference_id`` is this client's (submitted now, or resumed) until wall ``deadline``."""
        if inference_id in self._pending_ids:
            self._shared_ids.add(inference_id)
        # Read once against the wall clock, then kept on the monotonic one (a step of the wall
        # clock must not make a pending inference foreign).
        until = self._clock.monotonic() + (deadline - self._clock.wall())
        self._pending_ids[inference_id] = max(until, self._pending_ids.get(inference_id, until))

    def forget(self, inference_id: str) -> None:
        """The invoke of ``inference_id`` failed for sure: it is nobody's."""
        self._pending_ids.pop(inference_id, None)

    def safety_polling(self, target: WatchTarget, polling: PollingConfig) -> PollingConfig:
        """S3 is the safety net while notifications come: watched at its slower pace."""
        if self._covers is not None and not self._covers(target.endpoint_name):
            return polling  # its endpoint does not notify this queue
        return self._config.safety_polling(polling)

    def counts(self) -> dict[str, int]:
        """Messages by how they were sorted (see ``ClientStats.notifications``)."""
        return {kind: self.stats[kind] for kind in _SORTED if self.stats[kind]}

    def watch(self, key: Key, *, spread: float = 0.0) -> None:
        """A watch started (``key`` is its output): use the messages that came for it before."""
        watch = key.watch
        self._by_id[watch.target.inference_id] = watch
        for notice in self._held.pop(watch.target.inference_id, ()):
            self._sort(notice)

    def unwatch(self, key: Key) -> None:
        """Nothing to stop: a message is matched when it comes (see :meth:`ended`)."""

    def ended(self, watch: Watch, *, settled: bool) -> None:
        """A watch ended, with its outcome (``settled``) or because nobody waits any more."""
        target = watch.target
        if self._by_id.get(target.inference_id) is watch:
            del self._by_id[target.inference_id]
        notices = self._claimed.pop(watch, [])
        if not settled:
            for notice in notices:
                self._hold(notice)
            return
        if not notices and watch.source in ("poll", "list", "last_look"):
            self._unannounced_result(watch)
        self._pending_ids.pop(target.inference_id, None)
        self._settled_ids[target.inference_id] = min(
            watch.deadline, self._clock.monotonic() + _REMEMBER_SETTLED
        )
        held = self._held.pop(target.inference_id, [])
        # (Another inference of a shared id keeps the messages that name its own location.)
        theirs = [n for n in held if n.output_location not in (None, target.output_location)]
        if theirs:
            self._held[target.inference_id] = theirs
        for notice in notices + [n for n in held if n not in theirs]:
            self._delete(notice)

    # -- sorting messages -------------------------------------------------------------------
    def take(self, message: dict[str, Any]) -> None:
        """Sort one received message (see the module's docstring)."""
        self.stats["messages"] += 1
        notice = parse_notification(message)
        if notice is None:
            self.stats["unparseable"] += 1
            self._warn_once(
                "unparseable",
                "notifications: a message on %s is not a SageMaker notification; leaving it "
                "to whoever owns it (a dead-letter queue keeps such messages from coming back)",
                self.queue_url,
            )
            self._release(_stranger(message))
            return
        known = self._by_message.get(notice.message_id)
        if known is not None:  # seen again while we still hold it: keep the newest receipt
            known.receipt = notice.receipt
            return
        self._sort(notice)

    def _sort(self, notice: Notice) -> None:
        watch, contradicted = self._match(notice)
        if contradicted is not None:
            self._mismatch(notice, contradicted)
        elif watch is not None and not watch.done:
            self._claim(watch, notice)
        elif notice.inference_id in self._settled_ids:
            self.stats["duplicates"] += 1
            self._delete(notice)
        elif notice.inference_id in self._pending_ids:
            self._hold(notice)
        else:
            self.stats["foreign"] += 1
            self._release(notice)

    def _match(self, notice: Notice) -> tuple[Watch | None, Watch | None]:
        """``(the watch notice reports, None)``, or ``(None, the watch it contradicts)``."""
        location = notice.output_location
        watch = self._find(location) if location is not None else None
        if watch is not None:
            if watch.target.inference_id != notice.inference_id:
                return None, watch  # another inference's output location
        else:
            watch = self._by_id.get(notice.inference_id)
            if watch is None:
                return None, None
            if location is not None and location != watch.target.output_location:
                if notice.inference_id in self._shared_ids:
                    return None, None  # the id's other inference, not watched now
                return None, watch
        named = notice.endpoint_name
        if named is not None and named.lower() != watch.target.endpoint_name.lower():
            return None, watch
        return watch, None

    def _mismatch(self, notice: Notice, watch: Watch) -> None:
        """A message contradicts a watch: it resolves nothing (logged once, counted)."""
        self.stats["mismatched"] += 1
        if notice.message_id not in self._logged:
            if len(self._logged) >= _REMEMBER_LOGGED:
                del self._logged[next(iter(self._logged))]
            self._logged[notice.message_id] = None
            target = watch.target
            logger.warning(
                "notifications: message %s on %s names inference %s (endpoint %s, output %s), "
                "which does not match inference %s of this client (endpoint %s, output %s); it "
                "resolves nothing. Only the endpoint's topics should be allowed to send to the "
                "queue (see the trust boundary in docs/notifications.md)",
                notice.message_id,
                self.queue_url,
                notice.inference_id,
                notice.endpoint_name or "not named",
                notice.output_location or "not named",
                target.inference_id,
                target.endpoint_name,
                target.output_location,
            )
        self._release(notice)

    def _unannounced_result(self, watch: Watch) -> None:
        if self._on_unannounced is not None:  # the endpoints' topics are found, not given
            self._on_unannounced(watch.target)
            return
        if self._unannounced:
            return
        self._unannounced = True
        logger.warning(
            "inference %s was found in S3 by the safety net, not by a notification; if this "
            "repeats, check that the endpoint's NotificationConfig topics deliver to %s%s",
            watch.target.inference_id,
            self.queue_url,
            " (InferenceIds that you choose do not pass this client's filter)"
            if self._config.topics
            else "",
        )

    def _claim(self, watch: Watch, notice: Notice) -> None:
        self._by_message[notice.message_id] = notice
        claimed = self._claimed.get(watch)
        if claimed is not None:  # a copy of the message that reported it
            self.stats["duplicates"] += 1
            claimed.append(notice)
            return
        self._claimed[watch] = [notice]
        self.stats["own"] += 1
        target = watch.target
        if notice.succeeded:
            completion = Completion(target.output_location, notice.body, notice.content_type)
        elif notice.inference_id in self._shared_ids and target.failure_location is not None:
            # An error notification names only the InferenceId: with two inferences of that
            # id, the failure location tells which one failed.
            completion = Completion(target.failure_location)
        else:
            self._report_failure(watch, notice.reason or "the inference failed", self.name)
            return
        self._report(completion, self.name)

    def _hold(self, notice: Notice) -> None:
        self._by_message[notice.message_id] = notice
        self._held.setdefault(notice.inference_id, []).append(notice)

    def _delete(self, notice: Notice) -> None:
        self._by_message.pop(notice.message_id, None)
        self._deletes.append(notice)
        if len(self._deletes) >= _BATCH:
            self._flush.set()
        elif self._delete_timer is None:
            self._delete_timer = self._clock.call_later(self._delete_linger, self._deletes_ready)

    def _deletes_ready(self) -> None:
        self._delete_timer = None
        self._deletes_due = True
        self._flush.set()

    def _release(self, notice: Notice) -> None:
        """Make a message visible again: after a second, then later at each receipt."""
        self._by_message.pop(notice.message_id, None)
        age = 0.0 if notice.sent is None else max(0.0, self._clock.wall() - notice.sent)
        delay = release_delay(notice.receipts, age, self._config.safety_net)
        self._releases.append((notice, delay))
        self._flush.set()

    def _prune(self) -> None:
        """Forget ids past their deadline; delete held messages that nobody can claim now."""
        now = self._clock.monotonic()
        for ids in (self._pending_ids, self._settled_ids):
            for inference_id in [i for i, deadline in ids.items() if deadline < now]:
                del ids[inference_id]
        self._shared_ids &= self._pending_ids.keys()
        for inference_id in [i for i in self._held if i not in self._pending_ids]:
            for notice in self._held.pop(inference_id):
                self._delete(notice)

    def _warn_once(self, kind: str, message: str, *args: object) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning(message, *args)

    # -- the two tasks ----------------------------------------------------------------------
    async def _receive_loop(self) -> None:
        failures = 0
        visibility = math.ceil(self._config.hold)
        while not self._closing:
            try:
                self.stats["receive"] += 1
                answer = await self._sqs.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=_BATCH,
                    WaitTimeSeconds=_WAIT,
                    VisibilityTimeout=visibility,
                    MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                await self._clock.sleep(self._trouble(exc, "ReceiveMessage", failures))
                continue
            failures, self.trouble = 0, None
            messages = answer.get("Messages", [])
            self._busy = bool(messages)
            for message in messages:
                self.take(dict(message))
            if self._clock.monotonic() >= self._next_prune:
                self._next_prune = self._clock.monotonic() + _PRUNE_EVERY
                self._prune()
            if len(messages) < _BATCH and not self._closing:
                # Let a few more arrive: one call for several messages, at a small delay.
                await self._clock.sleep(self._linger)

    def _trouble(self, exc: Exception, operation: str, failures: int) -> float:
        """Log a failed SQS call (once per bout); how long to wait before the next."""
        error = to_invocation_error(exc, operation, note=f" (queue {self.queue_url})")
        self.trouble = error
        transient = is_transient(exc)
        if failures == 1 or not transient:
            (logger.info if transient else logger.error)(
                "notifications: %s failed: %s (%s); results are still found in S3, more slowly%s",
                operation,
                error,
                error.code,
                "" if transient else "; check the queue URL and sqs:ReceiveMessage permission",
            )
        return retry_delay(self._retry, min(failures, 8)) if transient else 60.0

    async def _send_loop(self) -> None:
        while not self._closing:
            await self._flush.wait()
            self._flush.clear()
            with contextlib.suppress(InvocationError):  # logged; the messages come back
                await self._send_all(all_deletes=self._deletes_due)

    async def _send_all(self, *, all_deletes: bool = True) -> None:
        """Send every release and the deletes that are due, all batches at once."""
        calls = []
        releases, self._releases = self._releases, []
        for start in range(0, len(releases), _BATCH):
            self.stats["release"] += 1
            entries = [
                {"Id": str(i), "ReceiptHandle": n.receipt, "VisibilityTimeout": delay}
                for i, (n, delay) in enumerate(releases[start : start + _BATCH])
            ]
            calls.append(self._batch("ChangeMessageVisibilityBatch", entries))
        due = len(self._deletes) if all_deletes else len(self._deletes) // _BATCH * _BATCH
        deletes, self._deletes = self._deletes[:due], self._deletes[due:]
        if all_deletes:
            self._deletes_due = False
            if self._delete_timer is not None:
                self._delete_timer.cancel()
                self._delete_timer = None
        for start in range(0, len(deletes), _BATCH):
            self.stats["delete"] += 1
            entries = [
                {"Id": str(i), "ReceiptHandle": n.receipt}
                for i, n in enumerate(deletes[start : start + _BATCH])
            ]
            calls.append(self._batch("DeleteMessageBatch", entries))
        try:
            answers = await asyncio.gather(*calls, return_exceptions=True)
        except asyncio.CancelledError:
            # Cut short (the client closes): what may not have been sent is sent again by the
            # close's last send (a delete or a change sent twice does no harm).
            self._releases[:0] = releases
            self._deletes[:0] = deletes
            raise
        failed = [error for error in answers if isinstance(error, BaseException)]
        for error in failed:
            if not isinstance(error, InvocationError):
                raise error
        if failed:
            raise failed[0]

    async def _batch(self, operation: str, entries: Any) -> None:
        try:
            if operation == "DeleteMessageBatch":
                answer: Any = await self._sqs.delete_message_batch(
                    QueueUrl=self.queue_url, Entries=entries
                )
            else:
                answer = await self._sqs.change_message_visibility_batch(
                    QueueUrl=self.queue_url, Entries=entries
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._trouble(exc, operation, 1)
            assert self.trouble is not None
            raise self.trouble from exc
        for failed in answer.get("Failed", []):
            logger.debug("notifications: %s entry failed: %s", operation, failed.get("Code"))
