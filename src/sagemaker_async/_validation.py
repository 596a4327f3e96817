"""Rules of InvokeEndpointAsync, read from botocore's service model (sagemaker-runtime).

The rules (types, lengths, patterns) come from the model at run time, not a copy; the few
places where they are stricter are listed in :data:`DEVIATIONS`. One set of rules serves both
sides: the client validates before any network call, and the emulator answers 400
ValidationError with the same words. Fields are named by their API names; the client adds its
Python parameter name to the message.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import botocore.session

from ._errors import ValidationError

__all__ = [
    "DEVIATIONS",
    "MAX_INLINE_BODY",
    "PARAMETER_NAMES",
    "canonical_s3_uri",
    "java_pattern",
    "parse_s3_uri",
    "validate_field",
    "validate_invoke_request",
]

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
    kind: str  # "string", "integer" or "blob"
    min: int | None = None
    max: int | None = None
    pattern: re.Pattern[str] | None = None
    pattern_text: str = ""
    header: bool = False  # sent as an HTTP header
    ascii_only: bool = False  # the model's pattern is \p{ASCII}*
    sensitive: bool = False


# Java's character classes (the model's regex dialect) that its patterns use, in Python terms.
_JAVA_CLASSES = {"ASCII": "\\x00-\\x7f", "Print": "\\x20-\\x7e"}
# Escapes that mean something else in Python: Java's \s is ASCII whitespace only (Python's
# takes Unicode spaces too), and Java's \z is Python's \Z.
_JAVA_ESCAPES = {"z": "\\Z", "s": "[ \\t\\n\\x0b\\f\\r]", "S": "[^ \\t\\n\\x0b\\f\\r]"}


def java_pattern(text: str) -> str:
    r"""The Python equivalent of one of the model's (Java) patterns.

    ``\p{ASCII}`` and ``\p{Print}`` become ranges (``[...]`` outside a class), ``\z``
    becomes ``\Z``, ``\s`` and ``\S`` keep Java's ASCII meaning; the rest (``\A``,
    groups, lookaheads) reads the same.

    Raises:
        ValueError: the pattern uses a construct this translation does not know.
    """
    out: list[str] = []
    depth = 0  # inside [...]
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            match = re.match(r"\\p\{(\w+)\}", text[i:])
            if match:
                name = match.group(1)
                if name not in _JAVA_CLASSES:
                    raise ValueError(f"unknown class \\p{{{name}}} in {text!r}")
                rng = _JAVA_CLASSES[name]
                out.append(rng if depth else f"[{rng}]")
                i += match.end()
                continue
            nxt = text[i + 1 : i + 2]
            out.append(_JAVA_ESCAPES.get(nxt, char + nxt))
            i += 2
            continue
        if char == "[":
            depth += 1
        elif char == "]" and depth:
            depth -= 1
        out.append(char)
        i += 1
    return "".join(out)


@functools.cache
def _rules() -> dict[str, _Rule]:
    """The rules of InvokeEndpointAsync, read from botocore's service model (once)."""
    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    shape = model.operation_model("InvokeEndpointAsync").input_shape
    assert shape is not None
    rules: dict[str, _Rule] = {}
    for name, member in shape.members.items():
        meta = member.metadata
        text = meta.get("pattern")
        rules[name] = _Rule(
            kind=member.type_name,
            min=meta.get("min"),
            max=meta.get("max"),
            pattern=re.compile(java_pattern(text)) if text else None,
            pattern_text=text or "",
            header=member.serialization.get("location") == "header",
            ascii_only=text == "\\p{ASCII}*",
            sensitive=bool(meta.get("sensitive")),
        )
    return rules


#: Largest inline Body InvokeEndpointAsync accepts (service model: AsyncBodyBlob max).
MAX_INLINE_BODY: int = _rules()["Body"].max or 128_000

#: Where these rules are stricter than the model, and why (docs/reliability.md repeats it).
DEVIATIONS = (
    "Patterns must match the whole value (the model's EndpointName pattern has no '$', and "
    "the service does not take trailing characters either).",
    "Fields sent as HTTP headers whose pattern is \\p{ASCII}* (ContentType, Accept, "
    "CustomAttributes) take printable US-ASCII and tab only: a header cannot carry other "
    "control characters.",
    "No field sent as an HTTP header may hold control characters, line separators (U+0085, "
    "U+2028, U+2029) or unpaired surrogates, whatever its pattern lets through: a header "
    "cannot carry them (InputLocation's '(.*)' would take CR, VT or NUL).",
)
_PRINTABLE = re.compile(r"^[\t\x20-\x7e]*$")
_HEADER_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _utf16_units(value: str) -> int:
    """The length the service counts (Java strings are UTF-16: an emoji is two)."""
    return len(value.encode("utf-16-le", "surrogatepass")) // 2


def _label(field: str, python_names: bool) -> str:
    return f"{PARAMETER_NAMES[field]} ({field})" if python_names else field


def validate_field(
    field: str, value: Any, *, python_names: bool = False, label: str | None = None
) -> None:
    """Check one API field against the service model; ``None`` means "not given" and passes.

    The error names ``label`` when given (``"state.inference_id"``), else the field.
    """
    if value is None:
        return
    rule = _rules()[field]
    label = label or _label(field, python_names)
    shown = None if rule.sensitive else value
    if rule.kind == "integer":
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
    minimum = rule.min
    if minimum is None and rule.pattern is not None and not rule.pattern.fullmatch(""):
        minimum = 1  # the pattern needs a character (EndpointName has no "min")
    length_rule = f"length {minimum}..{rule.max}" if minimum else f"length at most {rule.max}"
    if minimum is not None and len(value) < minimum:
        raise ValidationError(
            label, "is empty" if not value else "is too short", length_rule, shown
        )
    units = _utf16_units(value)
    if rule.max is not None and units > rule.max:
        raise ValidationError(label, f"is {units} UTF-16 code units long", length_rule, shown)
    if rule.header and rule.ascii_only and not _PRINTABLE.fullmatch(value):
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
    unsafe = _HEADER_UNSAFE.search(value) if rule.header else None
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
    rules = _rules()
    unknown = set(fields) - set(rules)
    if unknown:
        raise ValidationError(
            ", ".join(sorted(unknown)),
            "is not a field of InvokeEndpointAsync",
            "one of " + ", ".join(sorted(rules)),
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


_S3_URI = re.compile(r"s3://([^/]*)/?(.*)", re.DOTALL)
_HTTPS_URL = re.compile(r"https://([^/?#]+)/([^?#]*)", re.DOTALL)


def parse_s3_uri(uri: str, *, field: str = "S3 URI", key: bool = True) -> tuple[str, str]:
    """Split an S3 location into ``(bucket, key)``: the one parser of the package.

    Takes ``s3://bucket/key`` and S3's https URLs, virtual-hosted
    (``https://bucket.s3.region.amazonaws.com/key``, ``https://bucket.s3.amazonaws.com/key``)
    or path style (``https://s3.region.amazonaws.com/bucket/key``; any other host is read
    as path style too). An https URL's key is percent-decoded; an ``s3://`` key is taken as
    it is. With ``key=False`` the key may be empty (a bucket, or a prefix).

    Raises:
        ValidationError: naming ``field``: not an S3 location, no bucket, or no key.
    """
    rule = "s3://bucket/key" if key else "s3://bucket/prefix"
    if not isinstance(uri, str):
        raise ValidationError(field, f"a {type(uri).__name__} is not a str", rule)
    match = _S3_URI.fullmatch(uri)
    if match is not None:
        bucket, name = match.groups()
    else:
        https = _HTTPS_URL.fullmatch(uri)
        if https is None:
            raise ValidationError(field, f"{_shown(uri)} is not an S3 location", rule)
        host, path = https.groups()
        path = unquote(path)
        if ".s3." in host or host.endswith(".s3.amazonaws.com"):
            bucket, name = host.rsplit(".s3.", 1)[0], path
        else:
            bucket, _, name = path.partition("/")
    if not bucket:
        raise ValidationError(field, f"{_shown(uri)} has no bucket", rule)
    if key and not name:
        raise ValidationError(field, f"{_shown(uri)} has no key", rule)
    return bucket, name


def canonical_s3_uri(uri: str, *, field: str = "S3 URI") -> str:
    """The ``s3://bucket/key`` form of an S3 location (see :func:`parse_s3_uri`).

    Raises:
        ValidationError: naming ``field``, as :func:`parse_s3_uri`.
    """
    bucket, key = parse_s3_uri(uri, field=field)
    if uri.startswith("s3://"):
        return uri  # (the same string: a million resumed states, no copies)
    return f"s3://{bucket}/{key}"


def _shown(value: str) -> str:
    """``value`` for a message: cut short when long."""
    return repr(value if len(value) <= 200 else value[:200] + "...")
