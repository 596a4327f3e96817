"""SigV4 verification of incoming requests, by recomputing the signature with botocore's signer."""

from __future__ import annotations

import datetime as dt
import hmac
import re
from dataclasses import dataclass
from hashlib import sha256

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from multidict import MultiMapping

__all__ = ["AuthError", "check_authorization", "verify_sigv4"]

_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]+)\s*$"
)
_MAX_SKEW = dt.timedelta(minutes=15)


@dataclass(frozen=True)
class AuthError(Exception):
    """A request failed authentication: AWS's HTTP status, error code and message."""

    status: int
    code: str
    message: str


def check_authorization(
    *,
    headers: MultiMapping[str],
    access_key: str,
    region: str,
    service: str,
    now: dt.datetime | None = None,
) -> re.Match[str]:
    """Check what needs no body, so that a server can refuse a request before reading it.

    The Authorization header's form, the key, the scope, the date, and a signed payload.
    Raises :class:`AuthError`.
    """
    authorization = headers.get("Authorization")
    if not authorization:
        raise AuthError(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    match = _AUTH.match(authorization)
    if match is None:
        raise AuthError(
            403,
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature'.",
        )
    key_id, _, scope = match["credential"].partition("/")
    scope_parts = scope.split("/")
    if key_id != access_key:
        raise AuthError(
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    if len(scope_parts) != 4 or scope_parts[3] != "aws4_request":
        raise AuthError(403, "IncompleteSignatureException", "Malformed credential scope.")
    date, scope_region, scope_service, _ = scope_parts
    if scope_service != service:
        raise AuthError(
            403,
            "InvalidSignatureException",
            f"Credential should be scoped to correct service: '{service}'.",
        )
    if scope_region != region:
        raise AuthError(
            403,
            "InvalidSignatureException",
            f"Credential should be scoped to a valid region, not '{scope_region}'.",
        )
    amz_date = headers.get("X-Amz-Date", "")
    try:
        signed_at = dt.datetime.strptime(amz_date, SIGV4_TIMESTAMP).replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise AuthError(
            403, "IncompleteSignatureException", "Missing or malformed X-Amz-Date header."
        ) from None
    current = now or dt.datetime.now(dt.timezone.utc)
    if abs(current - signed_at) > _MAX_SKEW or not amz_date.startswith(date):
        raise AuthError(
            403,
            "InvalidSignatureException",
            f"Signature expired: {amz_date} is now earlier or later than the allowed 15 minutes.",
        )
    if headers.get("X-Amz-Content-SHA256") == "UNSIGNED-PAYLOAD":
        # The signature would not cover the body: a captured request could be replayed with
        # any other body. botocore signs sagemaker-runtime bodies, so nothing legitimate asks.
        raise AuthError(
            403,
            "InvalidSignatureException",
            "UNSIGNED-PAYLOAD is not accepted: the body must be signed.",
        )
    return match


def verify_sigv4(
    *,
    method: str,
    raw_path: str,
    headers: MultiMapping[str],
    body: bytes,
    access_key: str,
    secret_key: str,
    region: str,
    service: str,
    now: dt.datetime | None = None,
) -> None:
    """Raise :class:`AuthError` unless the request carries a valid SigV4 signature.

    ``raw_path`` is the path and query exactly as sent (still percent-encoded); ``headers`` are
    the received headers (case-insensitive mapping). :func:`check_authorization` does the part
    that needs no body, so a server can refuse a request before reading it.
    """
    match = check_authorization(
        headers=headers, access_key=access_key, region=region, service=service, now=now
    )
    amz_date = headers.get("X-Amz-Date", "")
    signed_names = match["signed"].split(";")
    signed_headers: dict[str, str] = {}
    for name in signed_names:
        values = headers.getall(name, [])
        if not values:
            raise AuthError(403, "InvalidSignatureException", f"Signed header {name!r} is missing.")
        signed_headers[name] = ",".join(values)
    content_sha = signed_headers.get("x-amz-content-sha256")
    if content_sha not in (None, sha256(body).hexdigest()):
        raise AuthError(
            400,
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
        )
    host = signed_headers.get("host", headers.get("Host", "localhost"))
    request = AWSRequest(method=method, url=f"http://{host}{raw_path}", data=body)
    for name, value in signed_headers.items():
        request.headers[name] = value
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(access_key, secret_key), service, region)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, match["signature"]):
        raise AuthError(
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. "
            "Consult the service documentation for details.",
        )
