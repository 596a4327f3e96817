"""The S3 calls the client makes: read a location, list a directory page, upload a large body.

A body made as it goes (an S3 batch's manifest) is streamed with a multipart upload, one part
in memory at a time, and aborted on any failure or cancellation (nothing is left behind).

Reads and listings make one attempt each: the completion engine's schedule is their retry (a
missed poll is polled again later anyway), so no task sleeps inside a request. A transient
failure raises :class:`Unavailable`; ``SlowDown`` also halves the request budget. Uploads,
made while submitting, are retried here with the client's retry policy.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterable, Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import ClientError

from ._budget import RequestBudget
from ._clock import Clock
from ._config import RetryConfig
from ._errors import ClientClosedError, InvocationError
from ._observe import Observer
from ._retry import (
    NOT_THE_SERVICE,
    AttemptTimeout,
    BadAnswer,
    bounded,
    call_with_retry,
    error_code,
    from_the_service,
    is_transient,
    retrying,
    to_invocation_error,
)
from ._validation import parse_s3_uri

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

__all__ = ["Absent", "ObjectStore", "Page", "S3Object", "Unavailable"]

logger = logging.getLogger("sagemaker_async")

# "NoSuchKey" from GET, a bare "404" from HEAD; S3 answers 403 instead when the caller may not
# s3:ListBucket, so a missing key and a forbidden one look alike.
_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_FORBIDDEN = frozenset({"AccessDenied", "403", "Forbidden"})
# A conditional write whose condition did not hold (or raced another): nothing was written.
_CONDITION_FAILED = frozenset(
    {"PreconditionFailed", "412", "ConditionalRequestConflict", "409", "NoSuchKey", "404"}
)


class Absent(enum.Enum):
    """Why an object could not be read: not there yet, or S3 said 403 (maybe not there yet)."""

    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"


class Unavailable(InvocationError):
    """S3 failed in a way that may pass (5xx, SlowDown, a dropped connection): try later."""


@dataclass(frozen=True)
class S3Object:
    """An object read from S3."""

    body: bytes
    content_type: str | None
    etag: str | None = None


@dataclass(frozen=True)
class Page:
    """One page of a directory listing: the object keys on it, and where the next page starts."""

    keys: list[str]
    next_token: str | None


T = TypeVar("T")

#: The smallest part of a multipart upload but the last (S3's rule, not in botocore's model).
MIN_PART = 5 * 1024 * 1024


class ObjectStore:
    """The client's S3 requests; shares one aiobotocore S3 client and one request budget."""

    def __init__(
        self,
        retry: RetryConfig,
        clock: Clock,
        budget: RequestBudget,
        observer: Observer | None = None,
    ) -> None:
        self._client_or_none: S3Client | None = None
        self._retry = retry
        self._on_retry = observer.retried if observer is not None else None
        self._clock = clock
        self._budget = budget
        #: The error of the last read or listing, while S3 keeps failing; None once it answers.
        self.trouble: InvocationError | None = None
        self._warned_not_s3 = False

    def bind(self, client: S3Client) -> None:
        """Use ``client`` (the client's aiobotocore S3 client, once it is open)."""
        self._client_or_none = client

    @property
    def _client(self) -> S3Client:
        if self._client_or_none is None:
            raise ClientClosedError("the AsyncInferenceClient is not open")
        return self._client_or_none

    async def _bounded(
        self, call: Awaitable[T], limit: float, what: str, *, first: bool = False
    ) -> T:
        """Await ``call`` within ``limit`` seconds; :class:`Unavailable` after.

        ``first``: the limit is on the answer's beginning (its headers).
        """
        try:
            return await bounded(call, limit, self._clock, what)
        except AttemptTimeout:
            self.trouble = Unavailable(
                f"{what}: no {'answer' if first else 'complete answer'} after {limit:g} s",
                code="Timeout",
                operation=what.split()[0],
            )
            raise self.trouble from None

    def _failed(self, exc: Exception, operation: str) -> InvocationError:
        """Map an error of one attempt (the one place for S3's errors).

        :class:`Unavailable` when it may pass, such as an answer that is not S3's (a proxy's
        page, whatever its status).
        """
        if isinstance(exc, ClientError) and (
            error_code(exc) == "SlowDown"
            or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 503
        ):
            self._budget.slow_down()
        if not is_transient(exc):
            return to_invocation_error(exc, operation)
        self.trouble = to_invocation_error(exc, operation, error_type=Unavailable)
        if self.trouble.code == NOT_THE_SERVICE and not self._warned_not_s3:
            self._warned_not_s3 = True
            logger.warning("%s; reading again later", self.trouble)
        return self.trouble

    async def read(self, uri: str, *, limit: float | None = None) -> S3Object | Absent:
        """One GET of ``uri``, abandoned after ``limit`` seconds (``attempt_timeout``).

        Its headers must come within ``first_byte_timeout`` (or ``limit``, if shorter).

        Raises:
            Unavailable: a transient failure (a stalled answer too); try again later.
            InvocationError: any other failure, such as an object that exists but may not be
                read (a 403 followed by a HEAD that finds it).
        """
        bucket, key = parse_s3_uri(uri)

        what = f"GetObject {uri}"
        limit = self._retry.attempt_timeout if limit is None else limit
        first = min(limit, self._retry.first_byte_timeout)

        async def get() -> tuple[Any, bytes]:
            response = await self._bounded(
                self._client.get_object(Bucket=bucket, Key=key), first, what, first=True
            )
            async with response["Body"] as stream:
                return response, await stream.read()

        try:
            response, body = await self._bounded(get(), limit, what)
        except Unavailable:
            raise
        except ClientError as exc:
            code = error_code(exc) if from_the_service(exc.response) else NOT_THE_SERVICE
            if code in _NOT_FOUND | _FORBIDDEN:
                self.trouble = None  # S3 answered
            if code in _NOT_FOUND:
                return Absent.NOT_FOUND
            if code in _FORBIDDEN:
                return await self._forbidden_or_denied(uri, bucket, key)
            raise self._failed(exc, "GetObject") from exc
        except Exception as exc:
            raise self._failed(exc, "GetObject") from exc
        self._check_genuine(response, "GetObject")
        self.trouble = None
        return S3Object(
            body=body, content_type=response.get("ContentType"), etag=response.get("ETag")
        )

    def _check_genuine(self, response: Any, operation: str) -> None:
        """Raise :class:`Unavailable` for a 200 that is not S3's (a proxy's or portal's page).

        It must be neither a result nor a failure object, nor an empty listing.
        """
        if not from_the_service(response):
            exc = BadAnswer("not S3's", response)
            raise self._failed(exc, operation) from exc

    async def _forbidden_or_denied(self, uri: str, bucket: str, key: str) -> Absent:
        # A 403 is "not yet" without s3:ListBucket, but also "there, and you may not read it"
        # (s3:GetObject, or kms:Decrypt for an SSE-KMS object). HEAD needs neither the read
        # right nor the key: if it finds the object, waiting would never end.
        self._budget.take()
        try:
            response = await self._bounded(
                self._client.head_object(Bucket=bucket, Key=key),
                self._retry.first_byte_timeout,
                f"HeadObject {uri}",
                first=True,
            )
        except Unavailable:
            raise
        except ClientError as exc:
            if from_the_service(exc.response) and error_code(exc) in _NOT_FOUND | _FORBIDDEN:
                return Absent.FORBIDDEN
            raise self._failed(exc, "HeadObject") from exc
        except Exception as exc:
            raise self._failed(exc, "HeadObject") from exc
        self._check_genuine(response, "HeadObject")
        raise InvocationError(
            f"{uri} exists but GetObject is denied: grant s3:GetObject on it (and "
            "kms:Decrypt on its KMS key if the bucket encrypts with SSE-KMS)",
            code="AccessDenied",
            status_code=403,
            operation="GetObject",
        )

    async def list_page(
        self,
        bucket: str,
        prefix: str,
        token: str | None,
        *,
        recursive: bool = False,
        start_after: str | None = None,
    ) -> Page:
        """One ListObjectsV2 page (up to 1,000 keys) of the directory ``prefix``.

        ``recursive``: every key under ``prefix``, in sub-folders too (no delimiter).
        ``start_after``: only keys after this one (a first page; the token carries it on).

        Raises:
            Unavailable: a transient failure; try again later.
            InvocationError: any other failure (``AccessDenied`` without s3:ListBucket).
        """
        extra: dict[str, Any] = {"ContinuationToken": token} if token else {}
        if not recursive:
            extra["Delimiter"] = "/"
        if start_after and not token:
            extra["StartAfter"] = start_after
        try:
            response = await self._bounded(
                self._client.list_objects_v2(Bucket=bucket, Prefix=prefix, **extra),
                self._retry.first_byte_timeout,
                f"ListObjectsV2 s3://{bucket}/{prefix}",
            )
        except Unavailable:
            raise
        except Exception as exc:
            raise self._failed(exc, "ListObjectsV2") from exc
        self._check_genuine(response, "ListObjectsV2")
        self.trouble = None
        keys = [item["Key"] for item in response.get("Contents", ())]
        token = response.get("NextContinuationToken") if response.get("IsTruncated") else None
        return Page(keys=keys, next_token=token)

    def _policy(self, what: str, deadline: float | None) -> Any:
        return retrying(
            self._retry,
            clock=self._clock,
            deadline=deadline,
            max_attempts=self._retry.max_attempts,
            what=what,
            on_retry=self._on_retry,
        )

    async def put_if(
        self, uri: str, body: bytes, *, if_match: str | None = None, deadline: float | None = None
    ) -> str | None:
        """A conditional PutObject; its new ETag, or None when the condition did not hold.

        Without ``if_match``, the object must not exist (``If-None-Match: *``); with it, the
        object must be unchanged since it had that ETag. S3 answers 412 (PreconditionFailed)
        when it does not hold, 409 (ConditionalRequestConflict) when another write raced this
        one, and 404 for ``if_match`` on an object that is gone: all three give None. A retried
        attempt may meet its own earlier write (412): the caller reads the object to tell.
        """
        bucket, key = parse_s3_uri(uri)
        condition = {"IfMatch": if_match} if if_match is not None else {"IfNoneMatch": "*"}
        try:
            response = await call_with_retry(
                self._policy(f"PutObject {uri}", deadline),
                lambda: self._client.put_object(Bucket=bucket, Key=key, Body=body, **condition),  # type: ignore[arg-type]
            )
        except ClientError as exc:
            if from_the_service(exc.response) and error_code(exc) in _CONDITION_FAILED:
                return None
            raise to_invocation_error(exc, "PutObject") from exc
        except Exception as exc:
            raise to_invocation_error(exc, "PutObject") from exc
        etag: str | None = response.get("ETag")
        return etag

    async def copy(self, source: str, target: str, *, deadline: float | None = None) -> None:
        """Copy ``source`` to ``target`` inside S3 (CopyObject: the bytes never pass through here).

        Raises:
            InvocationError: S3 refused (a missing source is ``NoSuchKey``).
        """
        bucket, key = parse_s3_uri(source)
        target_bucket, target_key = parse_s3_uri(target)
        try:
            await call_with_retry(
                self._policy(f"CopyObject {target}", deadline),
                lambda: self._client.copy_object(
                    Bucket=target_bucket, Key=target_key, CopySource={"Bucket": bucket, "Key": key}
                ),
            )
        except Exception as exc:
            raise to_invocation_error(exc, "CopyObject") from exc

    async def delete(self, uri: str, *, deadline: float | None) -> None:
        """Delete ``uri`` (retried like an upload)."""
        bucket, key = parse_s3_uri(uri)
        policy = retrying(
            self._retry,
            clock=self._clock,
            deadline=deadline,
            max_attempts=self._retry.max_attempts,
            what=f"DeleteObject {uri}",
            on_retry=self._on_retry,
        )
        try:
            await call_with_retry(
                policy, lambda: self._client.delete_object(Bucket=bucket, Key=key)
            )
        except Exception as exc:
            raise to_invocation_error(exc, "DeleteObject") from exc

    async def put(
        self,
        uri: str,
        body: bytes,
        *,
        content_type: str | None,
        deadline: float | None,
    ) -> None:
        """Upload ``body`` to ``uri`` (idempotent: a retry overwrites the same key).

        ``deadline`` is a time of the client's clock (monotonic).
        """
        bucket, key = parse_s3_uri(uri)

        async def attempt() -> None:
            extra = {"ContentType": content_type} if content_type else {}
            await self._client.put_object(Bucket=bucket, Key=key, Body=body, **extra)  # type: ignore[arg-type]

        policy = retrying(
            self._retry,
            clock=self._clock,
            deadline=deadline,
            max_attempts=self._retry.max_attempts,
            what=f"PutObject {uri}",
            on_retry=self._on_retry,
        )
        try:
            await call_with_retry(policy, attempt)
        except Exception as exc:
            raise to_invocation_error(exc, "PutObject") from exc
        logger.debug("uploaded a %d-byte body to %s", len(body), uri)

    async def put_streamed(
        self, uri: str, chunks: AsyncIterable[bytes], *, deadline: float | None = None
    ) -> None:
        """Upload the concatenation of ``chunks`` to ``uri``, holding about one part at a time.

        Under :data:`MIN_PART` in all, one PutObject; else a multipart upload whose parts (all
        but the last of at least :data:`MIN_PART`) are filled from ``chunks`` as they come.
        Each request is retried with the client's retry policy (an UploadPart overwrites its
        part). On any failure or cancellation, the upload is aborted (AbortMultipartUpload)
        before the error is raised again: no part is left stored, nor billed.

        Raises:
            InvocationError: S3 refused a request (the error of the first failed one).
        """
        bucket, key = parse_s3_uri(uri)
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[CompletedPartTypeDef] = []

        async def send(body: bytes) -> None:
            nonlocal upload_id
            if upload_id is None:
                created = await self._multipart(
                    "CreateMultipartUpload",
                    uri,
                    deadline,
                    lambda: self._client.create_multipart_upload(Bucket=bucket, Key=key),
                )
                upload_id = str(created["UploadId"])
            number, upload = len(parts) + 1, upload_id
            answer = await self._multipart(
                "UploadPart",
                uri,
                deadline,
                lambda: self._client.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=body
                ),
            )
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})

        try:
            async for chunk in chunks:
                buffer += chunk
                if len(buffer) >= MIN_PART:
                    body, buffer = bytes(buffer), bytearray()
                    await send(body)
                    del body
            if upload_id is None:
                await self.put(uri, bytes(buffer), content_type=None, deadline=deadline)
                return
            if buffer:
                await send(bytes(buffer))
                buffer = bytearray()
            upload = upload_id
            await self._multipart(
                "CompleteMultipartUpload",
                uri,
                deadline,
                lambda: self._client.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
                ),
            )
        except BaseException:
            if upload_id is not None:
                await asyncio.shield(self._abort(bucket, key, upload_id))
            raise
        logger.debug("uploaded %s in %d part(s)", uri, len(parts))

    async def _multipart(
        self, operation: str, uri: str, deadline: float | None, call: Any
    ) -> dict[str, Any]:
        try:
            answer: dict[str, Any] = await call_with_retry(
                self._policy(f"{operation} {uri}", deadline), call
            )
        except Exception as exc:
            raise to_invocation_error(exc, operation) from exc
        return answer

    async def _abort(self, bucket: str, key: str, upload_id: str) -> None:
        """AbortMultipartUpload, retried; a failure is logged.

        The bucket's lifecycle rule ``AbortIncompleteMultipartUpload`` is then the last resort.
        """
        uri = f"s3://{bucket}/{key}"
        try:
            await self._multipart(
                "AbortMultipartUpload",
                uri,
                None,
                lambda: self._client.abort_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id
                ),
            )
        except InvocationError as exc:
            if exc.code != "NoSuchUpload":  # completed, or aborted already
                logger.warning("the multipart upload %s of %s is left: %s", upload_id, uri, exc)
