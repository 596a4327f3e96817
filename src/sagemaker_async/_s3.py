"""The S3 calls the client makes: read a result or failure object, upload a large body."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from ._config import RetryConfig
from ._errors import InvocationError
from ._retry import Sleep, call_with_retry, error_code, retrying, to_invocation_error
from ._validation import parse_s3_uri

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

__all__ = ["Absent", "ObjectStore", "S3Object"]

logger = logging.getLogger("sagemaker_async")

# "NoSuchKey" from GET, a bare "404" from HEAD; S3 answers 403 instead when the caller may not
# s3:ListBucket, so a missing key and a forbidden one look alike.
_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})
_FORBIDDEN = frozenset({"AccessDenied", "403", "Forbidden"})


class Absent(enum.Enum):
    """Why an object could not be read: not there yet, or S3 said 403 (maybe not there yet)."""

    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"


@dataclass(frozen=True)
class S3Object:
    """An object read from S3.

    ``age`` is how old the object was when read, in seconds, from S3's own clock (its
    ``Date`` minus the object's ``Last-Modified``, both to the second); None if unknown.
    """

    body: bytes
    content_type: str | None
    age: float | None = None


def _age(response: Any) -> float | None:
    modified = response.get("LastModified")
    date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    if modified is None or not date:
        return None
    try:
        age: float = (parsedate_to_datetime(date) - modified).total_seconds()
    except (TypeError, ValueError):
        return None
    return max(0.0, age)


class ObjectStore:
    """S3 reads and writes with the client's retry policy; shares one aiobotocore S3 client."""

    def __init__(self, client: S3Client, retry: RetryConfig, sleep: Sleep) -> None:
        self._client = client
        self._retry = retry
        self._sleep = sleep

    async def get(self, uri: str, *, deadline: float | None) -> S3Object | Absent:
        """Read ``uri``; transient errors are retried until ``deadline``.

        Raises:
            InvocationError: on a non-transient error other than 404/403, or when the deadline
                passes while S3 keeps failing.
        """
        bucket, key = parse_s3_uri(uri)

        async def forbidden_or_denied() -> Absent:
            # A 403 is "not yet" without s3:ListBucket, but also "there, and you may not read
            # it" (s3:GetObject, or kms:Decrypt for an SSE-KMS object). HEAD needs neither the
            # read right nor the key: if it finds the object, waiting would never end.
            try:
                await self._client.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if error_code(exc) in _NOT_FOUND | _FORBIDDEN:
                    return Absent.FORBIDDEN
                raise
            raise InvocationError(
                f"{uri} exists but GetObject is denied: grant s3:GetObject on it (and "
                "kms:Decrypt on its KMS key if the bucket encrypts with SSE-KMS)",
                code="AccessDenied",
                status_code=403,
                operation="GetObject",
            )

        async def attempt() -> S3Object | Absent:
            try:
                response = await self._client.get_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                code = error_code(exc)
                if code in _NOT_FOUND:
                    return Absent.NOT_FOUND
                if code in _FORBIDDEN:
                    return await forbidden_or_denied()
                raise
            async with response["Body"] as stream:
                body = await stream.read()
            return S3Object(body=body, content_type=response.get("ContentType"), age=_age(response))

        policy = retrying(
            self._retry,
            deadline=deadline,
            max_attempts=None,
            sleep=self._sleep,
            what=f"GetObject {uri}",
        )
        try:
            return await call_with_retry(policy, attempt)
        except InvocationError:
            raise
        except Exception as exc:
            raise to_invocation_error(exc, "GetObject") from exc

    async def put(
        self,
        uri: str,
        body: bytes,
        *,
        content_type: str | None,
        deadline: float | None,
    ) -> None:
        """Upload ``body`` to ``uri`` (idempotent: a retry overwrites the same key)."""
        bucket, key = parse_s3_uri(uri)

        async def attempt() -> None:
            extra = {"ContentType": content_type} if content_type else {}
            await self._client.put_object(Bucket=bucket, Key=key, Body=body, **extra)  # type: ignore[arg-type]

        policy = retrying(
            self._retry,
            deadline=deadline,
            max_attempts=self._retry.max_attempts,
            sleep=self._sleep,
            what=f"PutObject {uri}",
        )
        try:
            await call_with_retry(policy, attempt)
        except Exception as exc:
            raise to_invocation_error(exc, "PutObject") from exc
        logger.debug("uploaded a %d-byte body to %s", len(body), uri)
