"""The speed-ups of our own aiobotocore clients give what botocore gives, against moto; one
whose botocore internals changed is switched off, and costs speed, never a result."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys
import types
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import aiobotocore.session
import aiohttp
import botocore
import pytest
from botocore.awsrequest import HeadersDict

from sagemaker_async import (
    AsyncInferenceClient,
    CompletionConfig,
    InferenceFailedError,
    InferenceResult,
    PollingConfig,
    RetryConfig,
)
from sagemaker_async._speedups import (
    FAST_PATHS,
    _tree_listing,
    fast_paths,
    fast_timestamp,
    lean_listing,
    reset_checks,
    tune,
)
from support import set_moto_results

KEYS = [
    "dir/plain.out",
    "dir/with space.out",
    "dir/plus+sign&amp;.out",
    "dir/ünïcödé-日本.out",
    "dir/percent%20not-decoded.out",
    "dir/<angle>'quote\".out",
    "dir/sub/deeper.out",  # a common prefix with Delimiter="/"
]


@pytest.mark.parametrize("page_size", [1000, 2])
async def test_lean_listing_reads_what_botocore_reads(moto_url: str, page_size: int) -> None:
    session = aiobotocore.session.get_session()
    options: dict[str, Any] = {"endpoint_url": moto_url, "region_name": "us-east-1"}
    bucket = f"lean-{uuid.uuid4().hex[:12]}"
    async with (
        session.create_client("s3", **options) as plain,
        session.create_client("s3", **options) as lean,
    ):
        await tune(lean)
        factory = lean._endpoint._response_parser_factory  # type: ignore[attr-defined]
        assert type(factory).__name__ == "_ParserFactory"  # the lean parser is in use
        await plain.create_bucket(Bucket=bucket)
        for key in KEYS:
            await plain.put_object(Bucket=bucket, Key=key, Body=b"x")
        pages: list[list[Any]] = []
        for client in (plain, lean):
            token: dict[str, Any] = {}
            seen: list[Any] = []
            while True:
                answer = await client.list_objects_v2(
                    Bucket=bucket, Prefix="dir/", Delimiter="/", MaxKeys=page_size, **token
                )
                seen.append(
                    (
                        [c["Key"] for c in answer.get("Contents", [])],
                        [p["Prefix"] for p in answer.get("CommonPrefixes", [])],
                        answer.get("IsTruncated"),
                        answer["ResponseMetadata"]["HTTPStatusCode"],
                        bool(answer["ResponseMetadata"].get("RequestId")),
                    )
                )
                if not answer.get("IsTruncated"):
                    break
                token = {"ContinuationToken": answer["NextContinuationToken"]}
            pages.append(seen)
        assert pages[0] == pages[1]
        assert sorted(k for page in pages[1] for k in page[0]) == sorted(KEYS[:-1])


def test_lean_listing_leaves_anything_unusual_to_botocore() -> None:
    assert lean_listing(b"not xml") is None
    assert lean_listing(b"<Error><Code>AccessDenied</Code></Error>") is None
    assert lean_listing(b"<ListBucketResult><KeyCount>x</KeyCount></ListBucketResult>") is None


PAGE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name>'
    b"<Prefix>dir/</Prefix><NextContinuationToken>tok+/=</NextContinuationToken>"
    b"<KeyCount>3</KeyCount><MaxKeys>3</MaxKeys><Delimiter>/</Delimiter>"
    b"<IsTruncated>true</IsTruncated>"
    b"<Contents><Key>dir/a.out</Key><LastModified>2026-11-26T07:00:00.000Z</LastModified>"
    b"<ETag>&quot;x&quot;</ETag><Size>2</Size><StorageClass>STANDARD</StorageClass></Contents>"
    b"<Contents><Key>dir/%C3%BC%20b.out</Key><Size>2</Size></Contents>"
    b"<CommonPrefixes><Prefix>dir/sub/</Prefix></CommonPrefixes>"
    b"<EncodingType>url</EncodingType></ListBucketResult>"
)


@pytest.mark.parametrize(
    "body",
    [
        PAGE,
        PAGE.replace(b"dir/a.out", b"dir/a&amp;b.out"),  # an escape: ElementTree reads it all
        PAGE.replace(b' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"', b""),
        PAGE.replace(b"<Contents>", b"<Contents>\n  ").replace(b"<Key>", b"\n<Key>"),
        PAGE.replace(b"<Contents><Key>dir/%C3", b"<Contents><Size>1</Size><Key>dir/%C3"),
        PAGE.replace(b"<Contents><Key>dir/%C3", b'<Contents a="1"><Key>dir/%C3'),
        # a field between the entries (no store does that; if one did, nothing is missed)
        PAGE.replace(
            b"<CommonPrefixes>", b"<IsTruncated>false</IsTruncated><CommonPrefixes>"
        ).replace(b"<IsTruncated>true</IsTruncated>", b""),
        b"<ListBucketResult><Name>b</Name><KeyCount>0</KeyCount></ListBucketResult>",
    ],
)
def test_the_fast_listing_path_reads_what_elementtree_reads(body: bytes) -> None:
    fast = lean_listing(body)
    assert fast is not None and fast == _tree_listing(body)
    if b"<Contents>" in body:
        assert fast["Contents"][0]["Key"].startswith("dir/a")
        assert fast["IsTruncated"] is (b"<IsTruncated>true" in body)
        assert fast["NextContinuationToken"] == "tok+/="
        assert [c["Key"] for c in fast["Contents"]] == ["dir/a.out", "dir/%C3%BC%20b.out"] or (
            b"&amp;" in body
        )
        assert fast["CommonPrefixes"] == [{"Prefix": "dir/sub/"}]


def test_the_fast_timestamp_parser_agrees_with_botocores() -> None:
    from botocore.utils import parse_timestamp

    for value in (
        "2026-11-26T07:00:00.000Z",
        "2026-11-26T07:00:00Z",
        "2026-11-26T07:00:00.123456Z",
        "2026-11-26T07:00:00.1Z",
        "Thu, 26 Nov 2026 07:00:00 GMT",
        "Sun, 01 Mar 2026 23:59:59 GMT",
        "2026-11-26T07:00:00+01:00",
        "Thursday, 26-Nov-26 07:00:00 GMT",  # RFC 850: botocore's parser
        1_800_000_000,
    ):
        assert fast_timestamp(value) == parse_timestamp(value), value  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        fast_timestamp("Sat, 31 Feb 2026 07:00:00 GMT")


async def test_a_tuned_client_reads_and_signs_as_botocore_does(moto_url: str) -> None:
    # Same parsed answers (headers, metadata, timestamps) and the same User-Agent, request
    # by request, as a client without the speed-ups.
    options: dict[str, Any] = {"endpoint_url": moto_url, "region_name": "us-east-1"}
    bucket = f"tuned-{uuid.uuid4().hex[:12]}"
    async with (  # a session each: each finds its credentials (a feature id in the UA)
        aiobotocore.session.get_session().create_client("s3", **options) as plain,
        aiobotocore.session.get_session().create_client("s3", **options) as tuned,
    ):
        await tune(tuned)
        agents: dict[str, list[str]] = {"plain": [], "tuned": []}
        for name, client in (("plain", plain), ("tuned", tuned)):
            client.meta.events.register(
                "before-send",
                lambda request, _n=name, **_: agents[_n].append(request.headers["User-Agent"]),
            )
        await plain.create_bucket(Bucket=bucket)
        answers: dict[str, list[Any]] = {"plain": [], "tuned": []}
        for name, client in (("plain", plain), ("tuned", tuned)):
            key = f"dir/{name}.out"
            await client.put_object(
                Bucket=bucket,
                Key=key,
                Body=b'{"ok": true}',
                ContentType="application/json",
                ContentEncoding="identity",
                Metadata={"inference-id": "abc", "Mixed-Case": "v"},
            )
        for name, client in (("plain", plain), ("tuned", tuned)):
            key = "dir/plain.out"  # both read one object (LastModified has whole seconds)
            got = await client.get_object(Bucket=bucket, Key=key)
            async with got["Body"] as stream:
                body = await stream.read()
            head = await client.head_object(Bucket=bucket, Key=key)
            parsed = [
                {k: v for k, v in a.items() if k not in ("ResponseMetadata", "Body")}
                for a in (got, head)
            ]
            answers[name] = [body, *parsed]
        assert answers["plain"] == answers["tuned"]
        assert answers["tuned"][1]["Metadata"] == {"inference-id": "abc", "mixed-case": "v"}
        assert isinstance(answers["tuned"][1]["LastModified"], datetime)
        # request by request (put, get, head); the plain one also made the bucket
        assert agents["plain"][1:] == agents["tuned"]
        assert len(set(agents["tuned"])) >= 1


async def test_an_s3_error_sent_with_status_200_is_still_found(moto_url: str) -> None:
    # Botocore turns a 200 whose body is an <Error> (or is cut off) into a 500 to retry; the
    # tuned client skips that check (a second parse of the page) only for whole listings.
    options: dict[str, Any] = {"endpoint_url": moto_url, "region_name": "us-east-1"}
    whole = PAGE
    bodies = {
        "error": b"<Error><Code>InternalError</Code><Message>x</Message></Error>",
        "cut off": whole[: len(whole) // 2],
        "whole": whole,
        "malformed inside": whole.replace(b"</Contents>", b"</Content>", 1),
    }
    async with (
        aiobotocore.session.get_session().create_client("s3", **options) as plain,
        aiobotocore.session.get_session().create_client("s3", **options) as tuned,
    ):
        await tune(tuned)
        operation = tuned.meta.service_model.operation_model("ListObjectsV2")
        status: dict[str, dict[str, int]] = {"plain": {}, "tuned": {}}
        for name, client in (("plain", plain), ("tuned", tuned)):
            for label, body in bodies.items():
                answer = {"status_code": 200, "headers": {}, "body": body}
                await client.meta.events.emit(
                    "before-parse.s3.ListObjectsV2",
                    operation_model=operation,
                    response_dict=answer,
                    customized_response_dict={},
                )
                status[name][label] = answer["status_code"]  # type: ignore[assignment]
    assert status["plain"] == {"error": 500, "cut off": 500, "whole": 200, "malformed inside": 500}
    # the tuned client did not parse the whole page to find that out
    assert status["tuned"] == {**status["plain"], "malformed inside": 200}


# --- A speed-up can cost speed, never a result ----------------------------------------------
#
# Each fast path leans on botocore's private names. These tests break one at a time (as a
# botocore release that renamed or changed it would: botocore's own code still works, the
# fast path's use of it fails) and check that every inference still resolves as it should,
# against moto, and that only the fast paths that used it are off, each with one WARNING naming
# the botocore version.

SPEEDUPS = "sagemaker_async._speedups"
MISSING = object()


@pytest.fixture(autouse=True)
def _fresh_checks() -> Iterator[None]:
    """Each test starts with no verdict, and leaves none behind."""
    reset_checks()
    yield
    reset_checks()


def hide_from_speedups(
    monkeypatch: pytest.MonkeyPatch, owner: type, name: str, *, changed: object = MISSING
) -> None:
    """``owner.name`` as the fast paths would see it after a botocore change: gone (or
    ``changed``) for code in _speedups; botocore's own code still finds it as it was."""
    original = owner.__dict__.get(name)  # a method, or None for an instance attribute

    def get(self: Any) -> Any:
        if sys._getframe(1).f_globals.get("__name__") == SPEEDUPS:
            if changed is MISSING:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            return changed
        if original is not None:
            return original.__get__(self, type(self))
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(name) from None

    def put(self: Any, value: Any) -> None:
        self.__dict__[name] = value

    monkeypatch.setattr(owner, name, property(get, put), raising=False)


def without_get_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """A botocore whose botocore.context has no get_context (botocore's own modules keep
    theirs, imported by name)."""
    real = importlib.import_module("botocore.context")
    stripped = types.ModuleType(real.__name__)
    stripped.__dict__.update({k: v for k, v in vars(real).items() if k != "get_context"})
    monkeypatch.setitem(sys.modules, real.__name__, stripped)


def break_name(monkeypatch: pytest.MonkeyPatch, broken: str) -> None:
    from aiobotocore.client import AioBaseClient
    from aiobotocore.endpoint import AioEndpoint
    from botocore import handlers
    from botocore.model import OperationModel
    from botocore.parsers import BaseRestParser, ResponseParser
    from botocore.useragent import UserAgentString

    owners: dict[str, type] = {
        "_populate_response_metadata": BaseRestParser,
        "_do_parse": BaseRestParser,
        "_parse_non_payload_attrs": BaseRestParser,
        "_parse_shape": ResponseParser,
        "_response_parser_factory": AioEndpoint,
        "_user_agent_creator": AioBaseClient,
        "to_string": UserAgentString,
        "_client_features": UserAgentString,
        "OperationModel.name": OperationModel,
    }
    if broken == "_handle_200_error":
        monkeypatch.delattr(handlers, "_handle_200_error")
    elif broken == "get_context":
        without_get_context(monkeypatch)
    elif broken == "_client_features=5":  # not a set of feature ids any more
        hide_from_speedups(monkeypatch, UserAgentString, "_client_features", changed=5)
    else:
        hide_from_speedups(monkeypatch, owners[broken], broken.rpartition(".")[2])


def speedup_warnings(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    """The WARNING of each fast path switched off, by name (each must be logged once)."""
    found: dict[str, str] = {}
    for record in caplog.records:
        message = record.getMessage()
        if record.name == "sagemaker_async" and message.startswith("speed-up "):
            assert record.levelno == logging.WARNING
            name = message.split("'")[1]
            assert name not in found, f"a second WARNING for {name}: {message}"
            found[name] = message
    return found


async def inferences_resolve(
    client: AsyncInferenceClient, admin: aiohttp.ClientSession, strategy: str
) -> None:
    """Two results and a failure, each read as it was written."""
    tag = uuid.uuid4().hex
    await set_moto_results(
        admin,
        (json.dumps({"n": 1, "tag": tag}), False),
        (json.dumps({"n": 2, "tag": tag}), False),
        (f"ModelError: {tag}", True),
    )
    handles = [
        await client.invoke_endpoint_async(
            "my-endpoint", input_location=f"s3://inputs/{strategy}/{uuid.uuid4()}"
        )
        for _ in range(3)
    ]
    first, second, failed = await asyncio.gather(*handles, return_exceptions=True)
    assert isinstance(first, InferenceResult) and first.json() == {"n": 1, "tag": tag}
    assert isinstance(second, InferenceResult) and second.json() == {"n": 2, "tag": tag}
    assert first.content_type is not None
    assert isinstance(failed, InferenceFailedError) and failed.message == f"ModelError: {tag}"


def moto_client(moto_url: str, strategy: str) -> AsyncInferenceClient:
    return AsyncInferenceClient(
        region_name="us-east-1",
        endpoint_url=moto_url,
        s3_endpoint_url=moto_url,
        polling=PollingConfig(initial_delay=0.02, max_delay=0.1, jitter=0.01),
        retry=RetryConfig(initial_delay=0.01, max_delay=0.05, jitter=0.0),
        completion=CompletionConfig(strategy=strategy),  # type: ignore[arg-type]
    )


ALL_ON = dict.fromkeys(FAST_PATHS, True)


@pytest.mark.parametrize(
    ("broken", "off"),
    [
        ("_populate_response_metadata", {"listing"}),
        ("_parse_shape", {"headers"}),
        ("_parse_non_payload_attrs", {"headers"}),
        ("_do_parse", {"listing"}),
        ("_response_parser_factory", {"timestamps", "listing", "headers"}),
        ("_user_agent_creator", {"user-agent"}),
        ("to_string", {"user-agent"}),
        ("_client_features", {"user-agent"}),  # a stale User-Agent: the check sees it differ
        ("get_context", {"user-agent"}),
        ("_handle_200_error", {"error-in-200"}),
    ],
)
async def test_a_fast_path_whose_botocore_name_broke_is_off_from_the_start(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    moto_url: str,
    moto_admin: aiohttp.ClientSession,
    broken: str,
    off: set[str],
) -> None:
    break_name(monkeypatch, broken)
    with caplog.at_level(logging.WARNING, "sagemaker_async"):
        for strategy in ("poll", "list"):
            async with moto_client(moto_url, strategy) as client:
                await inferences_resolve(client, moto_admin, strategy)
    assert fast_paths() == {**ALL_ON, **dict.fromkeys(off, False)}
    warnings = speedup_warnings(caplog)
    assert set(warnings) == off
    for message in warnings.values():
        assert f"botocore {botocore.__version__}" in message, message


@pytest.mark.parametrize(
    ("broken", "off", "strategy"),
    [
        ("_populate_response_metadata", {"listing"}, "list"),
        ("_parse_shape", {"headers"}, "poll"),
        ("_client_features=5", {"user-agent"}, "poll"),
        ("OperationModel.name", {"error-in-200"}, "list"),
    ],
)
async def test_a_fast_path_that_raises_at_run_time_falls_back_to_botocore_and_goes_off(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    moto_url: str,
    moto_admin: aiohttp.ClientSession,
    broken: str,
    off: set[str],
    strategy: str,
) -> None:
    with caplog.at_level(logging.WARNING, "sagemaker_async"):
        async with moto_client(moto_url, strategy) as client:
            assert fast_paths() == ALL_ON  # checked at the first use, and on
            break_name(monkeypatch, broken)  # botocore changes under the running client
            await inferences_resolve(client, moto_admin, strategy)
            await inferences_resolve(client, moto_admin, strategy)  # and once it is off
    assert fast_paths() == {**ALL_ON, **dict.fromkeys(off, False)}
    warnings = speedup_warnings(caplog)
    assert set(warnings) == off
    for message in warnings.values():
        assert "at run time" in message and f"botocore {botocore.__version__}" in message


async def test_an_answer_that_botocore_refuses_too_does_not_switch_a_fast_path_off(
    moto_url: str,
) -> None:
    # A bad answer is the answer's fault: botocore's error is raised, the fast path stays on.
    options: dict[str, Any] = {"endpoint_url": moto_url, "region_name": "us-east-1"}
    async with aiobotocore.session.get_session().create_client("s3", **options) as s3:
        await tune(s3)
        factory = s3._endpoint._response_parser_factory  # type: ignore[attr-defined]
        shape = s3.meta.service_model.operation_model("HeadObject").output_shape
        answer = {
            "status_code": 200,
            "headers": HeadersDict({"last-modified": "not a date", "x-amz-request-id": "r"}),
            "body": b"",
            "context": {},
        }
        with pytest.raises(ValueError):
            await factory.create_parser("rest-xml").parse(answer, shape)
    assert fast_paths() == ALL_ON
