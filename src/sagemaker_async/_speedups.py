"""Speed-ups for the aiobotocore clients that the client makes itself (never injected ones).

At 10,000 inferences in flight, the client's CPU goes mostly to botocore's per-request work;
these cut what can be cut without changing a result. Each is a *fast path*, named:

- ``timestamps``: S3's two timestamp formats without dateutil's parser (:func:`fast_timestamp`).
- ``listing``: a ListObjectsV2 page read for its keys and paging only (:func:`lean_listing`).
- ``headers``: header-bound fields of an S3 answer read from one plain ``dict`` of its headers.
- ``user-agent``: the User-Agent string built once per set of feature ids, not twice per request.
- ``error-in-200``: a ListObjectsV2 answer parsed once, not twice (botocore's check for an
  error sent with status 200 parses every answer whole first).

A speed-up can cost speed, never a result. The fast paths lean on botocore's and aiobotocore's
private code (a parser's private methods, private attributes of the client, a private
handler), which any botocore release may change. So at its first use (the first client the
library makes in the process; the first S3 client for the three that read S3's answers) each
fast path checks itself against botocore's own code on canned answers, and is switched off
when it differs or raises: one WARNING names the fast path and the botocore version, and
botocore's own code does that work from then on. At run time, an exception in a fast path
falls back to botocore's code for that answer (its own parser parses it again) and switches
the fast path off the same way. :func:`fast_paths` says which are on.
"""

from __future__ import annotations

import copy
import importlib
import logging
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

import aiobotocore
import botocore
from aiobotocore.parsers import AioResponseParserFactory, AioRestXMLParser
from botocore import handlers as botocore_handlers
from botocore.awsrequest import HeadersDict
from botocore.utils import parse_timestamp

__all__ = ["FAST_PATHS", "fast_paths", "fast_timestamp", "lean_listing", "reset_checks", "tune"]

logger = logging.getLogger("sagemaker_async")

#: The fast paths, by name.
FAST_PATHS = ("timestamps", "listing", "headers", "user-agent", "error-in-200")
_PARSING = ("timestamps", "listing", "headers")  # the ones the parser factory carries

# Per fast path: True (checked and on), False (switched off), None (not checked yet).
_state: dict[str, bool | None] = dict.fromkeys(FAST_PATHS)


def fast_paths() -> dict[str, bool | None]:
    """Each fast path's state: True (checked, on), False (switched off), None (not checked)."""
    return dict(_state)


def reset_checks() -> None:
    """Forget every verdict, so that each fast path checks itself again at its next first use.

    For tests, which change botocore's private names on purpose.
    """
    for name in FAST_PATHS:
        _state[name] = None


def _on(name: str) -> bool:
    return _state[name] is True


def _passed(name: str) -> None:
    if _state[name] is None:
        _state[name] = True


def _switch_off(name: str, reason: str) -> None:
    """Switch the fast path ``name`` off for good (this process), with one WARNING."""
    if _state[name] is False:
        return
    _state[name] = False
    logger.warning(
        "speed-up %r switched off: with botocore %s (aiobotocore %s), %s; botocore's own code "
        "does this work instead (slower, same results)",
        name,
        botocore.__version__,
        aiobotocore.__version__,
        reason,
    )


def _why(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


# --- timestamps ----------------------------------------------------------------------------

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


def _timestamp(value: str) -> datetime:
    """The parsers' timestamp parser: :func:`fast_timestamp` while it is on, else botocore's."""
    if not _on("timestamps"):
        return parse_timestamp(value)
    try:
        return fast_timestamp(value)
    except Exception as exc:
        parsed = parse_timestamp(value)  # botocore's own error, when the value is bad for it too
        _switch_off("timestamps", f"it raised at run time ({_why(exc)})")
        return parsed


_CANNED_TIMESTAMPS: tuple[Any, ...] = (
    "2026-11-26T07:00:00.000Z",
    "2026-11-26T07:00:00Z",
    "2026-11-26T07:00:00.123456Z",
    "2026-11-26T07:00:00.1Z",
    "Thu, 26 Nov 2026 07:00:00 GMT",
    "Sun, 01 Mar 2026 23:59:59 GMT",
    "2026-11-26T07:00:00+01:00",
    1_800_000_000,
)


def _check_timestamps() -> None:
    try:
        for value in _CANNED_TIMESTAMPS:
            ours, theirs = fast_timestamp(value), parse_timestamp(value)
            if ours != theirs or ours.utcoffset() != theirs.utcoffset():
                _switch_off("timestamps", f"it reads {value!r} otherwise than botocore")
                return
    except Exception as exc:
        _switch_off("timestamps", f"it raised on a canned value ({_why(exc)})")
        return
    _passed("timestamps")


# --- listing -------------------------------------------------------------------------------

# ListObjectsV2's answer, as the engine reads it: keys and paging, nothing per key but the key.
_LISTING_TEXT = frozenset(
    {"Name", "Prefix", "Delimiter", "EncodingType", "ContinuationToken", "NextContinuationToken"}
)
_FIELDS = tuple(
    f"<{tag}>".encode() for tag in (*_LISTING_TEXT, "IsTruncated", "KeyCount", "MaxKeys")
)
# What a lean listing holds: the fields above, the entries' keys, the metadata.
_LEAN_KEYS = _LISTING_TEXT | {
    "IsTruncated",
    "KeyCount",
    "MaxKeys",
    "Contents",
    "CommonPrefixes",
    "ResponseMetadata",
}
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


def _as_lean(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """Botocore's parse of a listing, cut down to what :func:`lean_listing` reads."""
    lean = {key: value for key, value in parsed.items() if key in _LEAN_KEYS}
    if "Contents" in lean:
        lean["Contents"] = [{"Key": entry["Key"]} for entry in lean["Contents"]]
    if "CommonPrefixes" in lean:
        lean["CommonPrefixes"] = [{"Prefix": entry["Prefix"]} for entry in lean["CommonPrefixes"]]
    return lean


# --- the parser: listing and headers -------------------------------------------------------


class _FallbackParser(AioRestXMLParser):
    """Botocore's REST-XML parser with shortcuts (in the subclasses below), each a fast path.

    An exception that went through a shortcut has the answer parsed again by ``stock()``
    (botocore's own parser): its result is returned and the shortcut switched off; if
    botocore's parser fails too, the answer was bad, and botocore's error is raised. A
    subclass overrides only the methods of the shortcuts it carries, so botocore's own
    methods run everywhere else.
    """

    def __init__(
        self,
        stock: Callable[[], Any],
        *,
        fallback: bool = True,
        timestamp_parser: Callable[[str], datetime] | None = None,
    ) -> None:
        super().__init__(timestamp_parser=timestamp_parser)
        self._stock = stock
        self._fallback = fallback
        self._failed = ""  # the shortcut an exception went through first

    def _blame(self, name: str) -> None:
        self._failed = self._failed or name

    async def parse(self, response: Mapping[str, Any], shape: Any) -> dict[str, Any]:
        try:
            return await super().parse(response, shape)
        except Exception as exc:
            if not self._failed or not self._fallback:
                raise
            parsed: dict[str, Any] = await self._stock().parse(response, shape)
            _switch_off(self._failed, f"it raised at run time ({_why(exc)})")
            return parsed


class _ListingParser(_FallbackParser):
    """The ``listing`` shortcut: ListObjectsV2 answers go to :func:`lean_listing`."""

    def _do_parse(self, response: dict[str, Any], shape: Any) -> Any:
        try:
            if shape is not None and shape.name == "ListObjectsV2Output":
                parsed = lean_listing(response["body"])
                if parsed is not None:
                    metadata: Any = self._populate_response_metadata  # type: ignore[attr-defined]
                    parsed["ResponseMetadata"] = metadata(response)
                    return parsed
            botocore_parser: Any = super()
            return botocore_parser._do_parse(response, shape)
        except Exception:
            self._blame("listing")
            raise


class _HeadersParser(_FallbackParser):
    """The ``headers`` shortcut: header-bound fields read from a plain dict of the headers.

    Botocore looks up every header-bound member of the output shape in a case-insensitive
    mapping (about 80 lookups for one GetObject, a tenth of the GET's CPU); one lower-cased
    ``dict`` of the few headers S3 sent gives the same fields, in the same order.
    """

    def _parse_non_payload_attrs(
        self, response: dict[str, Any], shape: Any, member_shapes: Any, final_parsed: Any
    ) -> None:
        try:
            botocore_parser: Any = super()
            headers = {name.lower(): value for name, value in response["headers"].items()}
            parse_shape: Any = self._parse_shape  # type: ignore[attr-defined]
            for name, member_shape in member_shapes.items():
                serialization = member_shape.serialization
                location = serialization.get("location")
                if location == "header":
                    value = headers.get(serialization.get("name", name).lower())
                    if value is not None:
                        final_parsed[name] = parse_shape(member_shape, value)
                elif location is not None:  # statusCode, a header map (x-amz-meta-*): botocore's
                    botocore_parser._parse_non_payload_attrs(
                        response, shape, {name: member_shape}, final_parsed
                    )
        except Exception:
            self._blame("headers")
            raise


class _LeanParser(_ListingParser, _HeadersParser):
    """Both shortcuts."""


_PARSERS: dict[tuple[bool, bool], type[_FallbackParser]] = {
    (True, True): _LeanParser,
    (True, False): _ListingParser,
    (False, True): _HeadersParser,
}


class _ParserFactory(AioResponseParserFactory):
    """Parsers with the fast paths that are on; ``original`` (botocore's) makes the others."""

    def __init__(self, original: Any) -> None:
        super().__init__()
        self._original = original
        self.set_parser_defaults(timestamp_parser=_timestamp)

    def _stock(self) -> Any:
        return self._original.create_parser("rest-xml")

    def create_parser(self, protocol_name: str) -> Any:
        listing, headers = _on("listing"), _on("headers")
        try:
            if protocol_name == "rest-xml" and (listing or headers):
                return _PARSERS[listing, headers](self._stock, timestamp_parser=_timestamp)
            if _on("timestamps"):
                return super().create_parser(protocol_name)
        except Exception as exc:
            names = ("listing", "headers") if listing or headers else ("timestamps",)
            for name in names:
                _switch_off(name, f"its parser could not be made ({_why(exc)})")
        return self._original.create_parser(protocol_name)


# Canned answers, as S3 sends them (header names lower-cased, as aiobotocore gives them).
_PAGE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>bucket</Name>'
    b"<Prefix>out/</Prefix><NextContinuationToken>token+/=</NextContinuationToken>"
    b"<KeyCount>3</KeyCount><MaxKeys>3</MaxKeys><Delimiter>/</Delimiter>"
    b"<EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>"
    b"<Contents><Key>out/a.out</Key><LastModified>2026-11-26T07:00:00.000Z</LastModified>"
    b"<ETag>&quot;0cc175b9c0f1b6a831c399e269772661&quot;</ETag><Size>2</Size>"
    b"<StorageClass>STANDARD</StorageClass></Contents>"
    b"<Contents><Key>out/%C3%BC%20b.out</Key><LastModified>2026-11-26T07:00:01.123Z"
    b"</LastModified><Size>2</Size></Contents>"
    b"<CommonPrefixes><Prefix>out/sub/</Prefix></CommonPrefixes></ListBucketResult>"
)
_ESCAPED_PAGE = _PAGE.replace(b"out/a.out", b"out/a&amp;b.out")  # read by ElementTree whole
_XML_HEADERS = {
    "x-amz-request-id": "REQ0CANNED",
    "x-amz-id-2": "host-id/canned=",
    "content-type": "application/xml",
    "date": "Thu, 26 Nov 2026 07:00:02 GMT",
    "server": "AmazonS3",
}
_OBJECT_HEADERS = {
    "x-amz-request-id": "REQ1CANNED",
    "x-amz-id-2": "host-id/canned=",
    "date": "Thu, 26 Nov 2026 07:00:02 GMT",
    "last-modified": "Thu, 26 Nov 2026 07:00:00 GMT",
    "expires": "Fri, 27 Nov 2026 07:00:00 GMT",
    "etag": '"0cc175b9c0f1b6a831c399e269772661"',
    "accept-ranges": "bytes",
    "content-type": "application/json",
    "content-length": "12",
    "content-encoding": "identity",
    "cache-control": "no-cache",
    "x-amz-server-side-encryption": "AES256",
    "x-amz-version-id": "v1",
    "x-amz-delete-marker": "false",
    "x-amz-mp-parts-count": "2",
    "x-amz-tagging-count": "1",
    "x-amz-meta-inference-id": "canned-1",
    "x-amz-meta-mixed-case": "v",
    "server": "AmazonS3",
}
_STREAM = object()  # a GET's body: the parser passes it on unread


def _answer(status: int, headers: Mapping[str, str], body: object) -> dict[str, Any]:
    return {"status_code": status, "headers": HeadersDict(headers), "body": body, "context": {}}


def _canned() -> list[tuple[str, dict[str, Any]]]:
    """(operation, answer) pairs: what a client watching results reads.

    Each is a fast path's work, or one it must leave as botocore reads it.
    """
    return [
        ("ListObjectsV2", _answer(200, _XML_HEADERS, _PAGE)),
        ("ListObjectsV2", _answer(200, _XML_HEADERS, _ESCAPED_PAGE)),
        ("GetObject", _answer(200, _OBJECT_HEADERS, _STREAM)),
        ("HeadObject", _answer(200, _OBJECT_HEADERS, b"")),
    ]


async def _check_parser(name: str, original: Any, service_model: Any) -> None:
    """Check the fast path ``name`` (listing or headers) against ``original``'s parser."""
    try:
        parser = _PARSERS[name == "listing", name == "headers"]
        for operation, answer in _canned():
            shape = service_model.operation_model(operation).output_shape
            lean = parser(
                lambda: original.create_parser("rest-xml"),
                fallback=False,
                timestamp_parser=_timestamp,
            )
            ours = await lean.parse(dict(answer), shape)
            theirs = await original.create_parser("rest-xml").parse(dict(answer), shape)
            if name == "listing" and operation == "ListObjectsV2":
                same = set(ours) <= _LEAN_KEYS and ours == _as_lean(theirs)
            else:
                same = ours == theirs and list(ours) == list(theirs)
            if not same:
                _switch_off(name, f"it reads a canned {operation} answer otherwise than botocore")
                return
    except Exception as exc:
        _switch_off(name, f"it raised on a canned answer ({_why(exc)})")
        return
    _passed(name)


# --- user-agent ----------------------------------------------------------------------------


class _UserAgent:
    """A client's User-Agent string, built once per set of feature ids.

    Botocore builds it twice per request (once for the request, once more when it is signed
    and sent), about a tenth of a GET's CPU. The string depends on the client's fixed
    config and on its feature ids: the client's own (which grow as it is used) and those
    that botocore's context holds for the request. Both sets are the cache key, so the
    result is the string botocore would have built.
    """

    def __init__(
        self,
        creator: Any,
        build: Callable[[], str],
        get_context: Callable[[], Any],
        *,
        checking: bool = False,
    ) -> None:
        self._creator = creator
        self._build = build
        self._get_context = get_context
        self._checking = checking  # used by the check itself, before the fast path is on
        self._built: dict[tuple[frozenset[str], frozenset[str]], str] = {}

    def __call__(self) -> str:
        if not (self._checking or _on("user-agent")):
            return self._build()
        try:
            context = self._get_context()
            key = (
                frozenset(getattr(self._creator, "_client_features", None) or ()),
                frozenset(context.features) if context is not None else frozenset(),
            )
            text = self._built.get(key)
        except Exception as exc:
            if self._checking:
                raise
            _switch_off("user-agent", f"it raised at run time ({_why(exc)})")
            return self._build()
        if text is None:
            text = self._built[key] = self._build()
        return text


def _check_user_agent(creator: Any, context: Any) -> None:
    """Check that a cached User-Agent follows the feature ids as botocore's own string does."""
    try:
        probe = copy.copy(creator)
        build = probe.to_string
        fast = _UserAgent(probe, build, context.get_context, checking=True)
        same = [fast() == build()]
        with context.start_as_current_context():
            for feature in ("x", "y"):
                context.get_context().features.add(feature)
                same.append(fast() == build())
        for features in ({"z"}, {"z", "w"}):
            probe.set_client_features(features)
            same.append(fast() == build())
        same.append(fast() == build())
    except Exception as exc:
        _switch_off("user-agent", f"it raised on canned feature ids ({_why(exc)})")
        return
    if not all(same):
        _switch_off("user-agent", "its string differs from botocore's for canned feature ids")
        return
    _passed("user-agent")


def _tune_user_agent(client: Any) -> None:
    creator = getattr(client, "_user_agent_creator", None)
    build = getattr(creator, "to_string", None)
    if creator is None or not callable(build):
        _switch_off("user-agent", "the client has no _user_agent_creator.to_string")
        return
    try:
        context = importlib.import_module("botocore.context")
        get_context = context.get_context
        if _state["user-agent"] is None:
            _check_user_agent(creator, context)
        if _on("user-agent"):
            creator.to_string = _UserAgent(creator, build, get_context)
    except Exception as exc:
        _switch_off("user-agent", f"it could not be set ({_why(exc)})")


# --- error-in-200 --------------------------------------------------------------------------


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

    def __init__(self, check: Any, *, checking: bool = False) -> None:
        self._check = check
        self._checking = checking  # used by the check itself, before the fast path is on

    def __call__(self, operation_model: Any, response_dict: Any, **kwargs: Any) -> Any:
        if self._checking or _on("error-in-200"):
            try:
                whole_listing = (
                    operation_model.name == "ListObjectsV2"
                    and bool(response_dict)
                    and response_dict.get("status_code") == 200
                    and _listing_looks_complete(response_dict.get("body"))
                )
            except Exception as exc:
                if self._checking:
                    raise
                _switch_off("error-in-200", f"it raised at run time ({_why(exc)})")
                whole_listing = False
            if whole_listing:
                return None
        return self._check(operation_model=operation_model, response_dict=response_dict, **kwargs)


def _check_error_in_200(check: Any, service_model: Any) -> None:
    """Check that the shortcut leaves each canned answer's status as botocore's check does."""
    error = b"<Error><Code>InternalError</Code><Message>canned</Message></Error>"
    try:
        operation = service_model.operation_model("ListObjectsV2")
        fast = _ErrorIn200(check, checking=True)
        for body in (_PAGE, _PAGE[: len(_PAGE) // 2], error):
            ours, theirs = _answer(200, _XML_HEADERS, body), _answer(200, _XML_HEADERS, body)
            fast(operation_model=operation, response_dict=ours, customized_response_dict={})
            check(operation_model=operation, response_dict=theirs, customized_response_dict={})
            if ours["status_code"] != theirs["status_code"]:
                _switch_off("error-in-200", "it judges a canned answer otherwise than botocore")
                return
    except Exception as exc:
        _switch_off("error-in-200", f"it raised on a canned answer ({_why(exc)})")
        return
    _passed("error-in-200")


def _tune_error_in_200(client: Any, service_model: Any) -> None:
    check = getattr(botocore_handlers, "_handle_200_error", None)
    if check is None:
        _switch_off("error-in-200", "botocore.handlers has no _handle_200_error")
        return
    try:
        if _state["error-in-200"] is None:
            _check_error_in_200(check, service_model)
        if _on("error-in-200"):
            # Ours first, then botocore's out: should the second step fail, both run (slower).
            client.meta.events.register_first("before-parse.s3.*", _ErrorIn200(check))
            client.meta.events.unregister("before-parse.s3.*", check)
    except Exception as exc:
        _switch_off("error-in-200", f"it could not be set ({_why(exc)})")


# --- tune ----------------------------------------------------------------------------------


async def tune(client: Any) -> None:
    """Give an aiobotocore client that we made the fast paths that hold.

    Each fast path not yet checked in this process checks itself first (see the module's
    docstring). Never raises: a fast path that cannot be set leaves that part of the client
    as botocore made it.
    """
    if _state["timestamps"] is None:
        _check_timestamps()
    service_model = client.meta.service_model
    s3 = service_model.service_name == "s3"
    endpoint = getattr(client, "_endpoint", None)
    original = getattr(endpoint, "_response_parser_factory", None)
    parsing = _PARSING if s3 else ("timestamps",)
    if original is None:
        for name in parsing:
            _switch_off(name, "the client has no _endpoint._response_parser_factory")
    else:
        if s3:
            for name in ("listing", "headers"):
                if _state[name] is None:
                    await _check_parser(name, original, service_model)
        if any(_on(name) for name in parsing):
            try:
                endpoint._response_parser_factory = _ParserFactory(original)  # type: ignore[union-attr]
            except Exception as exc:
                for name in parsing:
                    _switch_off(name, f"the parsers could not be set ({_why(exc)})")
    _tune_user_agent(client)
    if s3:
        _tune_error_in_200(client, service_model)
