"""EmbeddedS3: moto's S3/SQS/SNS server in a thread on 127.0.0.1, counting S3 requests by kind.

The counter sits in front of moto as WSGI middleware, so it sees exactly what a client sent,
whatever the client is (ours, boto3, the emulator itself). Tests and benchmarks use it to measure
S3 requests per inference on the server side.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote

__all__ = ["S3_KINDS", "EmbeddedS3", "RequestCountingMiddleware", "classify_request"]

_log = logging.getLogger("sagemaker_async.emulator")

#: The request kinds EmbeddedS3 counts. S3 kinds follow S3 pricing classes; requests to other
#: moto services are counted under the service name (``"sqs"``, ``"sns"``, ...).
S3_KINDS = ("GET", "HEAD", "LIST", "PUT", "OTHER")

# Bucket sub-resources whose GET is a configuration read, not a listing.
_BUCKET_SUBRESOURCES = frozenset(
    {
        "accelerate", "acl", "analytics", "cors", "encryption", "intelligent-tiering",
        "inventory", "lifecycle", "location", "logging", "metrics", "notification",
        "object-lock", "ownershipControls", "policy", "policyStatus", "publicAccessBlock",
        "replication", "requestPayment", "tagging", "versioning", "website", "uploads",
    }
)  # fmt: skip
_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/[^/]*/([^/]+)/aws4_request")
_QUERY_SCOPE = re.compile(r"^[^/]+/\d{8}/[^/]*/([^/]+)/aws4_request$")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _service_of(environ: dict[str, Any]) -> str:
    match = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if match:
        return match.group(1)
    query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    credential = query.get("X-Amz-Credential", "")
    match = _QUERY_SCOPE.match(credential)
    if match:
        return match.group(1)
    # Unsigned requests: moto's own admin API, or plain HTTP reads of S3.
    path = environ.get("PATH_INFO", "")
    return "moto_api" if path.startswith("/moto-api") else "s3"


def classify_request(environ: dict[str, Any]) -> tuple[str, str]:
    """Return ``(kind, path)`` for a WSGI request sent to moto.

    ``kind`` is one of :data:`S3_KINDS` for S3, else the service name. ``path`` is
    ``"bucket/key"`` for object requests and ``"bucket/<list prefix>"`` for listings (path-style
    addressing, which every client uses with an ``http://127.0.0.1`` endpoint); for a service
    of the JSON protocol (SQS), the action (``"ReceiveMessage"``); ``""`` otherwise.
    """
    service = _service_of(environ)
    if service != "s3":
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        return service, target.rpartition(".")[2]
    method = environ.get("REQUEST_METHOD", "GET").upper()
    path = unquote(environ.get("PATH_INFO", "")).lstrip("/")
    bucket, _, key = path.partition("/")
    query = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    if method == "HEAD":
        return "HEAD", path
    if method == "PUT":
        return "PUT", path
    if method == "GET":
        if key:
            return ("OTHER" if set(query) & {"acl", "tagging", "uploadId"} else "GET"), path
        if bucket and not set(query) & _BUCKET_SUBRESOURCES:
            return "LIST", f"{bucket}/{query.get('prefix', '')}"
    return "OTHER", path


def connectable_host(host: str) -> str:
    """The address a client connects to for a server bound to ``host``.

    A wildcard (``0.0.0.0``, ``::``) serves every address, and is none to connect to: the
    loopback one stands for it.
    """
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _access_denied(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """S3's 403 AccessDenied answer (no body for a HEAD, as S3 sends)."""
    request_id = uuid.uuid4().hex[:16].upper()
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
        f"<Message>Access Denied</Message><RequestId>{request_id}</RequestId>"
        f"<HostId>{request_id}</HostId></Error>"
    ).encode()
    if environ.get("REQUEST_METHOD", "GET").upper() == "HEAD":
        body = b""
    start_response(
        "403 Forbidden",
        [
            ("Content-Type", "application/xml"),
            ("Content-Length", str(len(body))),
            ("x-amz-request-id", request_id),
            ("x-amz-id-2", request_id),
        ],
    )
    return [body]


class RequestCountingMiddleware:
    """WSGI middleware that counts requests by ``(kind, path)``; thread-safe.

    With :attr:`list_bucket_allowed` False it answers as S3 does to a caller without
    ``s3:ListBucket``: 403 AccessDenied for a GET or HEAD of a missing key, and for a listing.
    """

    def __init__(self, app: WSGIApp) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self.list_bucket_allowed = True

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        """Count the request, then hand it to the wrapped app."""
        kind = classify_request(environ)
        with self._lock:
            self._counts[kind] += 1
        if self.list_bucket_allowed or kind[0] not in ("GET", "HEAD", "LIST"):
            return self._app(environ, start_response)
        if kind[0] == "LIST":
            return _access_denied(environ, start_response)
        if "/" not in kind[1]:  # HEAD of a bucket
            return self._app(environ, start_response)
        answer: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            answer[:] = [status, headers]
            return lambda data: None

        chunks = self._app(environ, capture)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        status, headers = answer
        if status.startswith("404"):
            return _access_denied(environ, start_response)
        start_response(status, headers)
        return [body]

    def counts(self, *prefixes: str) -> dict[str, int]:
        """Requests per kind, limited to paths starting with any of ``prefixes`` when given.

        The result always has the S3 kinds (zero when none) and ``"total"``; other services
        appear under their name when no prefix is given.
        """
        starts = tuple(prefix.removeprefix("s3://") for prefix in prefixes)
        result = dict.fromkeys(S3_KINDS, 0)
        with self._lock:
            items = list(self._counts.items())
        for (kind, path), count in items:
            if starts and (kind not in S3_KINDS or not path.startswith(starts)):
                continue
            result[kind] = result.get(kind, 0) + count
        result["total"] = sum(result.values())
        return result

    def actions(self, service: str) -> dict[str, int]:
        """Requests to ``service`` (``"sqs"``) per action, and ``"total"``."""
        result: dict[str, int] = {}
        with self._lock:
            items = list(self._counts.items())
        for (kind, action), count in items:
            if kind == service:
                result[action] = result.get(action, 0) + count
        result["total"] = sum(result.values())
        return result

    def counts_by_path(self) -> dict[str, dict[str, int]]:
        """Requests per S3 path, then per kind."""
        result: dict[str, dict[str, int]] = {}
        with self._lock:
            items = list(self._counts.items())
        for (kind, path), count in items:
            if kind in S3_KINDS:
                per_kind = result.setdefault(path, {})
                per_kind[kind] = per_kind.get(kind, 0) + count
        return result

    def reset(self) -> None:
        """Forget every count."""
        with self._lock:
            self._counts.clear()


def _faithful_sqs() -> None:
    """Make moto's SQS behave as SQS does where tests of a busy queue can tell the difference.

    - **Deletes never lose messages.** moto's server is threaded, and a queue's delete rebuilds
      its list of messages without the lock that sends take: a message sent, or deleted,
      during another delete comes back or disappears. The delete takes that lock here.
    - **A receive costs the same in a long queue.** moto computes every attribute of the queue
      (scans of all its messages) for each message a ReceiveMessage returns, to read one
      number, the retention period: about a second per receive at 1,000 messages on two
      cores, where SQS answers in milliseconds. It is read directly here; same result.
    - **A message visible again goes to any receive that waits.** moto's long polls look
      again when a message is sent, else once a second from their start: the client that gave
      a message back and polled again at once looked just after it came back, every time,
      and another client's waiting poll almost never got it (on a queue two clients share,
      a result missed its owner for a minute). Here a waiting poll also wakes when the next
      hidden or delayed message is due.
    """
    import random
    import time

    from moto.core.utils import unix_time, unix_time_millis
    from moto.sqs.models import Queue, SQSBackend

    if getattr(Queue, "_sagemaker_async_faithful", False):
        return
    Queue._sagemaker_async_faithful = True  # type: ignore[attr-defined]
    delete = Queue.delete_message

    def delete_message(self: Any, receipt_handle: str) -> None:
        with self._messages_lock:
            delete(self, receipt_handle)

    Queue.delete_message = delete_message  # type: ignore[method-assign]

    def wait_for_messages(self: Any, timeout: int) -> None:
        end = time.monotonic() + timeout
        with self._messages_lock:
            while not self.messages:
                left = end - time.monotonic()
                if left <= 0:
                    return
                now = unix_time_millis()
                due = [
                    max(m.visible_at, getattr(m, "delayed_until", 0.0))
                    for m in self._messages
                    if m.visible_at >= now or getattr(m, "delayed_until", 0.0) > now
                ]
                if due:  # (visible strictly after visible_at; which waiting poll takes it is
                    # SQS's choice, not the order the threads wake in: up to 10 ms at random)
                    wake = min(due) - now + 1 + 10 * random.random()
                    left = min(left, max(0.001, wake / 1000))
                self._messages_lock.wait(left)

    Queue.wait_for_messages = wait_for_messages  # type: ignore[method-assign]

    if hasattr(SQSBackend, "is_message_valid_based_on_retention_period"):

        def is_message_valid_based_on_retention_period(
            self: Any, queue_name: str, message: Any
        ) -> bool:
            retention = int(self.get_queue(queue_name).message_retention_period)
            return bool(retention + message.sent_timestamp / 1000 > unix_time())

        SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
            is_message_valid_based_on_retention_period
        )


class EmbeddedS3:
    """moto's server (S3, SQS, SNS and the rest) in a background thread on ``host:port``.

    Usable as ``with EmbeddedS3() as s3: ...`` or with :meth:`start` / :meth:`stop`. ``port=0``
    picks a free port; :attr:`url` tells which. Every request is counted, see :meth:`counts`.
    moto keeps its state per process: two servers in one process share buckets and queues.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, list_bucket_allowed: bool = True
    ) -> None:
        self._host = host
        self._port = port
        self._list_bucket_allowed = list_bucket_allowed
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._counter: RequestCountingMiddleware | None = None

    @property
    def list_bucket_allowed(self) -> bool:
        """False: answer as S3 does to a caller without ``s3:ListBucket``.

        A GET or HEAD of a missing key then answers 403 AccessDenied instead of 404, and a
        listing answers 403 AccessDenied. Settable at any time (it applies to every client).
        """
        return self._list_bucket_allowed

    @list_bucket_allowed.setter
    def list_bucket_allowed(self, value: bool) -> None:
        self._list_bucket_allowed = value
        if self._counter is not None:
            self._counter.list_bucket_allowed = value

    @contextlib.contextmanager
    def without_list_bucket(self) -> Iterator[EmbeddedS3]:
        """``with s3.without_list_bucket(): ...``: :attr:`list_bucket_allowed` False inside."""
        before = self.list_bucket_allowed
        self.list_bucket_allowed = False
        try:
            yield self
        finally:
            self.list_bucket_allowed = before

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._server is None:
            raise RuntimeError("EmbeddedS3 is not started; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{connectable_host(str(host))}:{port}"

    @property
    def running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._server is not None

    def start(self) -> EmbeddedS3:
        """Start serving (idempotent); returns self."""
        if self._server is not None:
            return self
        # Heavy imports stay here so that importing the emulator package is cheap.
        try:
            from moto.moto_server.werkzeug_app import (
                DomainDispatcherApplication,
                MotoRequestHandler,
                create_backend_app,
            )
            from werkzeug.serving import make_server

            _faithful_sqs()
        except ModuleNotFoundError as exc:  # the emulator extra is not installed
            raise ModuleNotFoundError(
                f"the embedded S3 needs {exc.name or 'moto'}, from the emulator extra: "
                f'pip install "sagemaker-async[emulator]"',
                name=exc.name,
            ) from exc

        class _Handler(MotoRequestHandler):
            # moto sets its own Server header; http.server would add a second one, which strict
            # HTTP parsers (aiohttp in debug mode) reject.
            def send_response(self, code: int, message: str | None = None) -> None:
                self.log_request(code)
                self.send_response_only(code, message)
                self.send_header("Date", self.date_time_string())

            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                _log.debug("embedded S3: %s -> %s", self.requestline, code)

        self._counter = RequestCountingMiddleware(DomainDispatcherApplication(create_backend_app))
        self._counter.list_bucket_allowed = self._list_bucket_allowed
        # werkzeug prints a bind error and exits the process: check the address first.
        try:
            socket.getaddrinfo(self._host, self._port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise OSError(exc.errno, f"{self._host}: {exc.strerror}") from None
        self._server = make_server(
            self._host,
            self._port,
            self._counter,
            threaded=True,
            request_handler=_Handler,
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="sagemaker-async-embedded-s3", daemon=True
        )
        self._thread.start()
        _log.info("embedded S3 (moto) listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        _log.info("embedded S3 stopped")

    def counts(self, *prefixes: str) -> dict[str, int]:
        """Requests per kind (``GET``, ``HEAD``, ``LIST``, ``PUT``, ``OTHER``, ``total``).

        With ``prefixes`` (``"bucket/key-prefix"`` or ``"s3://bucket/key-prefix"``), only S3
        requests whose path starts with one of them, e.g. an endpoint's output and failure
        paths. Without, other services (``sqs``, ``sns``) are included under their names.
        """
        if self._counter is None:
            return dict.fromkeys(S3_KINDS, 0)
        return self._counter.counts(*prefixes)

    def actions(self, service: str) -> dict[str, int]:
        """Requests to ``service`` (``"sqs"``) per action, and ``"total"``."""
        return self._counter.actions(service) if self._counter else {"total": 0}

    def counts_by_path(self) -> dict[str, dict[str, int]]:
        """S3 requests per ``"bucket/key"`` path (listings: ``"bucket/prefix"``), per kind."""
        return self._counter.counts_by_path() if self._counter else {}

    def reset_counts(self) -> None:
        """Forget every count, e.g. between the warm-up and the measured part of a benchmark."""
        if self._counter is not None:
            self._counter.reset()

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
