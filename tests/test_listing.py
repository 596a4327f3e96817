"""The client's own ListObjectsV2 parser reads what botocore's reads, against moto."""

from __future__ import annotations

import uuid
from typing import Any

import aiobotocore.session
import pytest

from sagemaker_async._s3 import lean_listing

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
    from sagemaker_async._s3 import ObjectStore

    session = aiobotocore.session.get_session()
    options: dict[str, Any] = {"endpoint_url": moto_url, "region_name": "us-east-1"}
    bucket = f"lean-{uuid.uuid4().hex[:12]}"
    async with (
        session.create_client("s3", **options) as plain,
        session.create_client("s3", **options) as lean,
    ):
        ObjectStore.bind_parsers(lean)
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
