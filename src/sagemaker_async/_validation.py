"""Rules of InvokeEndpointAsync, mirrored from botocore's service model (sagemaker-runtime).

One table serves both sides: the client validates before any network call, and the emulator
answers 400 ValidationError with the same words. Fields are named by their API names; the client
adds its Python parameter name to the message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._errors import ValidationError

__all__ = [
    "MAX_INLINE_BODY",
    "PARAMETER_NAMES",
    "parse_s3_uri",
    "validate_field",
    "validate_invoke_request",
]

#: Largest inline Body InvokeEndpointAsync accepts (service model: AsyncBodyBlob max).
MAX_INLINE_BODY = 128_000

#: API field name -> the client's Python parameter name.
PARAMETER_NAMES: dict[str, str] = {
    "EndpointName": "endpoint_name",
    "Body": "body",
    "InputLocation": "input_location",
    "ContentType": "content_type",
    "Accept": "accept",
    "CustomAttributes": "custom_attributes",
    "InferenceId": "inference_id",
    "RequestTTLSeconds": "request_ttl_seconds",
    "InvocationTimeoutSeconds": "invocation_timeout_seconds",
    "S3OutputPathExtension": "s3_output_path_extension",
    "Filename": "filename",
}


@dataclass(frozen=True)
class _Rule:
    kind: str  # "str", "int" or "blob"
    min: int | None = None
    max: int | None = None
    pattern: re.Pattern[str] | None = None
    pattern_text: str = ""
    charset: str = ""  # "" or "ascii-printable"
    sensitive: bool = False


def _rx(text: str) -> tuple[re.Pattern[str], str]:
    return re.compile(text), text


# Patterns are applied with fullmatch: `$` alone would let a trailing newline through.
# HTTP header values cannot carry CR, LF or other controls, so the model's \p{ASCII} is read as
# printable ASCII plus tab: a stricter rule that no valid request breaks.
_RULES: dict[str, _Rule] = {
    "EndpointName": _Rule("str", 1, 63, *_rx(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")),
    "InputLocation": _Rule("str", 1, 1024, *_rx(r"^(https|s3)://([^/]+)/?(.*)$")),
    "ContentType": _Rule("str", None, 1024, charset="ascii-printable"),
    "Accept": _Rule("str", None, 1024, charset="ascii-printable"),
    "CustomAttributes": _Rule("str", None, 1024, charset="ascii-printable", sensitive=True),
    "InferenceId": _Rule("str", 1, 64, *_rx(r"^[\x21-\x7e][\x20-\x7e]*$")),
    "RequestTTLSeconds": _Rule("int", 60, 21600),
    "InvocationTimeoutSeconds": _Rule("int", 1, 3600),
    "S3OutputPathExtension": _Rule("str", 1, 512, *_rx(r"^(?!s3:|https:)[a-zA-Z0-9!_.*'()/-]+$")),
    "Filename": _Rule("str", 1, 32, *_rx(r"^(?!.*\..*\.)[a-zA-Z0-9][a-zA-Z0-9-_\.]*$")),
    "Body": _Rule("blob", None, MAX_INLINE_BODY, sensitive=True),
}
_PRINTABLE = re.compile(r"^[\t\x20-\x7e]*$")
# Java's `.` (the model's regex dialect) stops at line terminators, and an HTTP header value
# cannot carry control characters or unpaired surrogates: none of these may be in a header.
_HEADER_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _utf16_units(value: str) -> int:
    """The length the service counts (Java strings are UTF-16: an emoji is two)."""
    return len(value.encode("utf-16-le", "surrogatepass")) // 2


def _label(field: str, python_names: bool) -> str:
    return f"{PARAMETER_NAMES[field]} ({field})" if python_names else field


def validate_field(field: str, value: Any, *, python_names: bool = False) -> None:
    """Check one API field against the service model; ``None`` means "not given" and passes."""
    if value is None:
        return
    rule = _RULES[field]
    label = _label(field, python_names)
    shown = None if rule.sensitive else value
    if rule.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(
                label, f"{value!r} is not an integer", f"an integer {rule.min}..{rule.max}", shown
            )
        assert rule.min is not None and rule.max is not None
        if not rule.min <= value <= rule.max:
            raise ValidationError(
                label, f"{value} is out of range", f"an integer {rule.min}..{rule.max}", shown
            )
        return
    if rule.kind == "blob":
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise ValidationError(label, f"a {type(value).__name__} is not bytes", "bytes or str")
        if rule.max is not None and len(value) > rule.max:
            raise ValidationError(
                label, f"is {len(value)} bytes long", f"at most {rule.max} bytes inline"
            )
        return
    if not isinstance(value, str):
        raise ValidationError(label, f"a {type(value).__name__} is not a str", "a str", shown)
    length_rule = (
        f"length {rule.min or 0}..{rule.max}" if rule.min else f"length at most {rule.max}"
    )
    if rule.min is not None and len(value) < rule.min:
        raise ValidationError(
            label, "is empty" if not value else "is too short", length_rule, shown
        )
    units = _utf16_units(value)
    if rule.max is not None and units > rule.max:
        raise ValidationError(label, f"is {units} UTF-16 code units long", length_rule, shown)
    if rule.charset and not _PRINTABLE.fullmatch(value):
        raise ValidationError(
            label,
            "contains a character that is not printable US-ASCII",
            "printable US-ASCII (0x20-0x7E) and tab",
            shown,
        )
    if rule.pattern is not None and not rule.pattern.fullmatch(value):
        raise ValidationError(
            label, f"{value!r} does not match the pattern", f"must match {rule.pattern_text}", shown
        )
    unsafe = _HEADER_UNSAFE.search(value)
    if unsafe is not None:  # what the patterns above let through
        raise ValidationError(
            label,
            f"contains {unsafe.group()!r} at position {unsafe.start()}",
            "no control characters, line separators or unpaired surrogates",
            shown,
        )


def validate_invoke_request(fields: Mapping[str, Any], *, python_names: bool = False) -> None:
    """Validate an InvokeEndpointAsync request given by API field names.

    Raises:
        ValidationError: naming the first field that breaks a rule.
    """
    unknown = set(fields) - set(_RULES)
    if unknown:
        raise ValidationError(
            ", ".join(sorted(unknown)),
            "is not a field of InvokeEndpointAsync",
            "one of " + ", ".join(sorted(_RULES)),
        )
    if fields.get("EndpointName") is None:
        raise ValidationError(_label("EndpointName", python_names), "is missing", "required", None)
    for name, value in fields.items():
        validate_field(name, value, python_names=python_names)
    has_body = fields.get("Body") is not None
    has_location = fields.get("InputLocation") is not None
    if has_body == has_location:
        body, loc = _label("Body", python_names), _label("InputLocation", python_names)
        problem = "both are given" if has_body else "neither is given"
        raise ValidationError(f"{body} / {loc}", problem, "give exactly one of them")


def parse_s3_uri(uri: str, *, field: str = "S3 URI") -> tuple[str, str]:
    """Split ``s3://bucket/key`` (or an ``https://`` S3 URL) into ``(bucket, key)``."""
    match = re.fullmatch(r"s3://([^/]+)/?(.*)", uri)
    if match is None:
        # https://bucket.s3.region.amazonaws.com/key or https://host/bucket/key (path style)
        https = re.fullmatch(r"https://([^/]+)/(.*)", uri)
        if https is None:
            raise ValidationError(field, f"{uri!r} is not an S3 URI", "s3://bucket/key")
        host, rest = https.groups()
        if ".s3." in host or host.endswith(".s3.amazonaws.com"):
            return host.split(".s3.", 1)[0], rest
        bucket, _, key = rest.partition("/")
        return bucket, key
    bucket, key = match.groups()
    return bucket, key
