"""Speed-ups for the aiobotocore clients that the client makes itself (never injected ones).

At 10,000 inferences in flight, the client's CPU goes mostly to botocore's per-request work;
these cut what can be cut without changing a result:

- :func:`fast_timestamp`: S3's two timestamp formats without dateutil's parser.
- :func:`lean_listing`: a ListObjectsV2 page read for its keys and paging only.
- header-bound fields of an answer read from one plain ``dict`` of its headers.
- the User-Agent string built once per set of feature ids, not twice per request.
- a ListObjectsV2 answer parsed once, not twice (botocore's check for an error sent with
  status 200 parses every answer whole first).

Each falls back to botocore's own code for anything unusual. aiobotocore has no public way to
set these for one client, so :func:`tune` sets private attributes when they exist and leaves
the client as it is when they do not: only speed depends on them.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from datetime import datetime, timezone
from typing import Any

from aiobotocore.parsers import AioResponseParserFactory, AioRestXMLParser
from botocore import handlers as botocore_handlers
from botocore.context import get_context
from botocore.utils import parse_timestamp

__all__ = ["fast_timestamp", "lean_listing", "tune"]

_ISO_UTC = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?Z")
# An HTTP date (RFC 7231's IMF-fixdate), as in a GET's Last-Modified header.
_HTTP_DATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{4}) (\d\d):(\d\d):(\d\d) GMT"
)
_MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {month: number for number, month in enumerate(_MONTH_NAMES, 1)}


def fast_timestamp(value: str) -> datetime:
    """Botocore's ``parse_timestamp``, without dateutil's parser for S3's usual formats.

    A ListObjectsV2 page has 1,000 LastModified values: botocore's parser spends about 150 ms
    of CPU on them (the event loop stalls meanwhile); this takes about 2 ms. A GET's
    Last-Modified header alone cost a tenth of the GET. Same result: an aware datetime in
    UTC; anything unusual goes to botocore's parser.
    """
    if not isinstance(value, str):
        return parse_timestamp(value)
    match = _ISO_UTC.fullmatch(value)
    if match is not None:
        whole, fraction = match.groups()
        parsed = datetime.fromisoformat(whole).replace(tzinfo=timezone.utc)
        return parsed.replace(microsecond=int(fraction.ljust(6, "0"))) if fraction else parsed
    match = _HTTP_DATE.fullmatch(value)
    if match is not None:
        day, month, year, hour, minute, second = match.groups()
        try:
            return datetime(
                int(year),
                _MONTHS[month],
                int(day),
                int(hour),
                int(minute),
                int(second),
                tzinfo=timezone.utc,
            )
        except ValueError:  # 31 Feb and such: botocore's parser says what is wrong
            pass
    return parse_timestamp(value)


# ListObjectsV2's answer, as the engine reads it: keys and paging, nothing per key but the key.
_LISTING_TEXT = frozenset(
    {"Name", "Prefix", "Delimiter", "EncodingType", "ContinuationToken", "NextContinuationToken"}
)
_FIELDS = tuple(
    f"<{tag}>".encode() for tag in (*_LISTING_TEXT, "IsTruncated", "KeyCount", "MaxKeys")
)
# Entries whose key (prefix) comes first and has no XML escape in it: S3 escapes "<" and "&",
# and with EncodingType=url (which botocore asks for) a key has no escape at all.
_KEYS = re.compile(rb"<Contents><Key>([^<&]*)</Key>")
_PREFIXES = re.compile(rb"<CommonPrefixes><Prefix>([^<&]*)</Prefix></CommonPrefixes>")
_ENDS = (b"</Contents>", b"</CommonPrefixes>")


def lean_listing(body: bytes) -> dict[str, Any] | None:
    """A ListObjectsV2 answer parsed for its keys and paging only, or None if unusual.

    Botocore's parser builds every field of every key (LastModified, ETag, Size, Owner...):
    about 40 ms of CPU per page of 1,000 keys, which was most of what a client watching
    10,000 results spent. This finds the keys with one regular expression (about 1 ms a
    page) and parses the rest of the answer (the few hundred bytes before the first entry
    and after the last) with ElementTree. A page it cannot read that way (a key with an XML
    escape, a field between the entries) goes to ElementTree whole, about 10 ms. Each
    ``Contents`` entry has its ``Key`` only; botocore's handlers then URL-decode keys as
    usual (``EncodingType=url``).
    """
    keys = _KEYS.findall(body)
    prefixes = _PREFIXES.findall(body)
    # Every entry must be one the expressions read (an attribute or a key that is not first
    # would hide it from them).
    if len(keys) != body.count(b"<Contents") or len(prefixes) != body.count(b"<CommonPrefixes"):
        return _tree_listing(body)
    if not keys and not prefixes:
        return _tree_listing(body)
    starts = [at for at in (body.find(b"<Contents>"), body.find(b"<CommonPrefixes>")) if at >= 0]
    ends = [body.rfind(end) + len(end) for end in _ENDS if end in body]
    outside = body[: min(starts)] + body[max(ends) :]
    # Every field of the answer must be outside the entries (a Prefix inside is an entry's).
    for tag in _FIELDS:
        inside = len(prefixes) if tag == b"<Prefix>" else 0
        if body.count(tag) != outside.count(tag) + inside:
            return _tree_listing(body)
    parsed = _tree_listing(outside)
    if parsed is None:
        return _tree_listing(body)
    if keys:
        parsed["Contents"] = [{"Key": key.decode()} for key in keys]
    if prefixes:
        parsed["CommonPrefixes"] = [{"Prefix": prefix.decode()} for prefix in prefixes]
    return parsed


def _tree_listing(body: bytes) -> dict[str, Any] | None:
    """:func:`lean_listing` by ElementTree: every entry, any escape; None if unusual."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    namespace = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    if root.tag != f"{namespace}ListBucketResult":
        return None
    parsed: dict[str, Any] = {}
    contents: list[dict[str, str]] = []
    prefixes: list[dict[str, str]] = []
    skip = len(namespace)
    key_tag, prefix_tag = f"{namespace}Key", f"{namespace}Prefix"
    for child in root:
        tag = child.tag[skip:]
        if tag == "Contents":
            contents.append({"Key": child.findtext(key_tag) or ""})
        elif tag == "CommonPrefixes":
            prefixes.append({"Prefix": child.findtext(prefix_tag) or ""})
        elif tag == "IsTruncated":
            parsed[tag] = (child.text or "").strip() == "true"
        elif tag in ("KeyCount", "MaxKeys"):
            try:
                parsed[tag] = int(child.text or "")
            except ValueError:
                return None
        elif tag in _LISTING_TEXT:
            parsed[tag] = child.text or ""
    if contents:
        parsed["Contents"] = contents
    if prefixes:
        parsed["CommonPrefixes"] = prefixes
    return parsed


class _LeanParser(AioRestXMLParser):
    """Botocore's REST-XML parser, with two shortcuts.

    ListObjectsV2 answers go to :func:`lean_listing`. Header-bound fields are read from a
    plain dict of the headers: botocore looks up every header-bound member of the output
    shape in a case-insensitive mapping (about 80 lookups for one GetObject, a tenth of the
    GET's CPU); one lower-cased ``dict`` of the few headers S3 sent gives the same fields,
    in the same order.
    """

    def _do_parse(self, response: dict[str, Any], shape: Any) -> Any:
        botocore_parser: Any = super()
        if shape is not None and shape.name == "ListObjectsV2Output":
            parsed = lean_listing(response["body"])
            if parsed is not None:
                metadata: Any = getattr(self, "_populate_response_metadata")  # noqa: B009
                parsed["ResponseMetadata"] = metadata(response)
                return parsed
        return botocore_parser._do_parse(response, shape)

    def _parse_non_payload_attrs(
        self, response: dict[str, Any], shape: Any, member_shapes: Any, final_parsed: Any
    ) -> None:
        headers = {name.lower(): value for name, value in response["headers"].items()}
        parse_shape: Any = getattr(self, "_parse_shape")  # noqa: B009 (not in the stubs)
        for name, member_shape in member_shapes.items():
            serialization = member_shape.serialization
            location = serialization.get("location")
            if location == "header":
                value = headers.get(serialization.get("name", name).lower())
                if value is not None:
                    final_parsed[name] = parse_shape(member_shape, value)
            elif location is not None:  # statusCode, a header map (x-amz-meta-*): botocore's
                botocore_parser: Any = super()
                botocore_parser._parse_non_payload_attrs(
                    response, shape, {name: member_shape}, final_parsed
                )


class _ParserFactory(AioResponseParserFactory):
    """Parsers with fast timestamps; for REST-XML (S3), the lean parser."""

    def __init__(self) -> None:
        super().__init__()
        self.set_parser_defaults(timestamp_parser=fast_timestamp)

    def create_parser(self, protocol_name: str) -> Any:
        if protocol_name == "rest-xml":
            return _LeanParser(timestamp_parser=fast_timestamp)
        return super().create_parser(protocol_name)


class _UserAgent:
    """A client's User-Agent string, built once per set of feature ids.

    Botocore builds it twice per request (once for the request, once more when it is signed
    and sent), about a tenth of a GET's CPU. The string depends on the client's fixed
    config and on its feature ids: the client's own (which grow as it is used) and those
    that botocore's context holds for the request. Both sets are the cache key, so the
    result is the string botocore would have built.
    """

    def __init__(self, creator: Any) -> None:
        self._creator = creator
        self._build = creator.to_string
        self._built: dict[tuple[frozenset[str], frozenset[str]], str] = {}

    def __call__(self) -> str:
        context = get_context()
        key = (
            frozenset(getattr(self._creator, "_client_features", None) or ()),
            frozenset(context.features) if context is not None else frozenset(),
        )
        text = self._built.get(key)
        if text is None:
            text = self._built[key] = self._build()
        return text


def _listing_looks_complete(body: object) -> bool:
    """True for a whole ListObjectsV2 answer: it opens and closes its root element."""
    return (
        isinstance(body, bytes)
        and b"<ListBucketResult" in body[:200]
        and body.rstrip().endswith(b"</ListBucketResult>")
    )


class _ErrorIn200:
    """Botocore's check for an S3 error sent with status 200, without parsing a listing twice.

    Botocore parses every answer's whole XML body once before its parser reads it, to find
    an ``<Error>`` root or a cut-off body: for a page of 1,000 keys, as much CPU as botocore's
    own parse. An answer whose root is ``ListBucketResult`` and which ends with its closing
    tag is neither; every other answer goes to botocore's check.
    """

    def __init__(self, check: Any) -> None:
        self._check = check

    def __call__(self, operation_model: Any, response_dict: Any, **kwargs: Any) -> Any:
        if (
            operation_model.name == "ListObjectsV2"
            and response_dict
            and response_dict.get("status_code") == 200
            and _listing_looks_complete(response_dict.get("body"))
        ):
            return None
        return self._check(operation_model=operation_model, response_dict=response_dict, **kwargs)


def tune(client: Any) -> None:
    """Give an aiobotocore client that we made the speed-ups above."""
    check = getattr(botocore_handlers, "_handle_200_error", None)
    if check is not None and client.meta.service_model.service_name == "s3":
        client.meta.events.unregister("before-parse.s3.*", check)
        client.meta.events.register_first("before-parse.s3.*", _ErrorIn200(check))
    endpoint = getattr(client, "_endpoint", None)
    if endpoint is not None and hasattr(endpoint, "_response_parser_factory"):
        endpoint._response_parser_factory = _ParserFactory()
    creator = getattr(client, "_user_agent_creator", None)
    if creator is not None and callable(getattr(creator, "to_string", None)):
        creator.to_string = _UserAgent(creator)
