"""The speed-ups of our own aiobotocore clients give what botocore gives, against moto."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import aiobotocore.session
import pytest

from sagemaker_async._speedups import _tree_listing, fast_timestamp, lean_listing, tune

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
        tune(lean)
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
        tune(tuned)
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
        tune(tuned)
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
