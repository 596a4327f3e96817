"""A small, fast, in-memory S3 stand-in for the scale benchmark (aiohttp, path-style, no auth).

Not moto: moto saturates near 300 requests/s on the benchmark machine, which would make the
server, not the client under test, the bottleneck. This serves the few calls the clients make:
CreateBucket, PutObject (with If-None-Match: * and If-Match), multipart uploads (create, upload
part, complete, abort), CopyObject, GetObject, HeadObject, DeleteObject and ListObjectsV2 (prefix,
delimiter, start-after, continuation-token, max-keys up to 1,000), with S3's XML errors.
Signatures are not checked.

Every S3 request is counted here, on the server, by kind (GET, HEAD, LIST, PUT, OTHER), per
bucket and per 0.1 s tick; every object written records its time.time(). An admin JSON API
under ``/__admin/`` reads and resets these (see :func:`add_admin_routes`).
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import hashlib
import resource
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any
from urllib.parse import quote, unquote
from xml.sax.saxutils import escape

from aiohttp import web

KINDS = ("GET", "HEAD", "LIST", "PUT", "OTHER")
_KIND_INDEX = {kind: i for i, kind in enumerate(KINDS)}
TICK = 0.1  # seconds per bucket of the request time series
_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
_STORE_KEY = web.AppKey("store", object)


@dataclass(slots=True)
class StoredObject:
    body: bytes
    content_type: str
    modified: float
    etag: str
    http_date: str  # Last-Modified, RFC 7231
    iso_date: str  # LastModified in listings


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


class Bucket:
    """Objects by key, plus the keys kept sorted (bisect) for listings."""

    __slots__ = ("keys", "objects")

    def __init__(self) -> None:
        self.objects: dict[str, StoredObject] = {}
        self.keys: list[str] = []

    def put(self, key: str, obj: StoredObject) -> None:
        if key not in self.objects:
            bisect.insort(self.keys, key)
        self.objects[key] = obj

    def delete(self, key: str) -> None:
        if self.objects.pop(key, None) is not None:
            i = bisect.bisect_left(self.keys, key)
            del self.keys[i]

    def bulk(self, items: dict[str, StoredObject]) -> None:
        fresh = [k for k in items if k not in self.objects]
        self.objects.update(items)
        if fresh:
            self.keys.extend(fresh)
            self.keys.sort()


def _upper_bound(prefix: str) -> str:
    """The smallest string above every string that starts with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class Store:
    """The buckets, the request counters and the write times."""

    def __init__(self) -> None:
        self.buckets: dict[str, Bucket] = {}
        self.reset_counts()
        self.writes: dict[str, dict[str, float]] = defaultdict(dict)
        self.reset_hooks: list[Any] = []
        self.uploads: dict[str, tuple[str, str, dict[int, bytes]]] = {}  # id: bucket, key, parts
        self.lag: list[float] = []

    # -- counting -----------------------------------------------------------------------------
    def reset_counts(self) -> None:
        self.counts: dict[str, list[int]] = defaultdict(lambda: [0] * len(KINDS))
        self.series: dict[int, list[int]] = defaultdict(lambda: [0] * len(KINDS))
        self.lag = []
        self.counts_reset_at = time.time()
        self.labels: Counter[str] = Counter()

    def label(self, kind: str, key: str) -> None:
        """Count a request by kind and by what its key is in an S3 batch (claims, manifest)."""
        what = (
            "claims"
            if "/.claims/" in key
            else "renewals"
            if "/.owners/" in key
            else "manifest"
            if "/.manifest/" in key or key.endswith("manifest.jsonl")
            else "other"
        )
        self.labels[f"{kind} {what}"] += 1

    def count(self, bucket: str, kind: str) -> None:
        i = _KIND_INDEX[kind]
        self.counts[bucket][i] += 1
        self.series[int(time.time() / TICK)][i] += 1

    # -- objects ------------------------------------------------------------------------------
    def put(
        self,
        bucket: str,
        key: str,
        body: bytes,
        content_type: str = "binary/octet-stream",
        *,
        modified: float | None = None,
        record: bool = True,
    ) -> StoredObject:
        now = time.time() if modified is None else modified
        obj = StoredObject(
            body=body,
            content_type=content_type,
            modified=now,
            etag='"' + hashlib.md5(body).hexdigest() + '"',
            http_date=formatdate(now, usegmt=True),
            iso_date=_iso(now),
        )
        self.buckets.setdefault(bucket, Bucket()).put(key, obj)
        if record:
            self.writes[bucket][key] = now
        return obj

    def bulk_create(self, bucket: str, prefix: str, count: int, age: float = 86400.0) -> None:
        """``count`` small objects named like results (``<prefix><uuid4>.out``), ``age`` s old."""
        when = time.time() - age
        body = b'{"old": true}'
        template = StoredObject(
            body=body,
            content_type="application/json",
            modified=when,
            etag='"' + hashlib.md5(body).hexdigest() + '"',
            http_date=formatdate(when, usegmt=True),
            iso_date=_iso(when),
        )
        items = {f"{prefix}{uuid.uuid4()}.out": template for _ in range(count)}
        self.buckets.setdefault(bucket, Bucket()).bulk(items)

    def clear(self) -> None:
        """Empty every bucket (the buckets stay), forget write times, reset the counters."""
        for name in self.buckets:
            self.buckets[name] = Bucket()
        self.writes.clear()
        self.reset_counts()
        for hook in self.reset_hooks:
            hook()

    def list_v2(
        self,
        bucket: Bucket,
        *,
        prefix: str,
        delimiter: str,
        start_after: str,
        token: str,
        max_keys: int,
    ) -> tuple[list[tuple[str, StoredObject]], list[str], str | None]:
        """One page: (contents, common prefixes, next continuation marker or None).

        A marker is ``"K" + key`` (resume after that key) or ``"P" + common prefix`` (resume
        after every key under it).
        """
        keys = bucket.keys
        if max_keys == 0:
            return [], [], None
        after = token[1:] if token else start_after
        start = bisect.bisect_right(keys, after) if after else 0
        if token.startswith("P"):
            start = max(start, bisect.bisect_left(keys, _upper_bound(after)))
        start = max(start, bisect.bisect_left(keys, prefix))
        contents: list[tuple[str, StoredObject]] = []
        prefixes: list[str] = []
        last = ""
        i, n = start, len(keys)
        while i < n:
            key = keys[i]
            if not key.startswith(prefix):
                break
            if len(contents) + len(prefixes) >= max_keys:
                return contents, prefixes, last
            if delimiter:
                cut = key.find(delimiter, len(prefix))
                if cut >= 0:
                    common = key[: cut + len(delimiter)]
                    prefixes.append(common)
                    last = "P" + common
                    i = bisect.bisect_left(keys, _upper_bound(common), i + 1)
                    continue
            contents.append((key, bucket.objects[key]))
            last = "K" + key
            i += 1
        return contents, prefixes, None


# -- HTTP -------------------------------------------------------------------------------------
def _error(status: int, code: str, message: str, resource_: str = "") -> web.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>"
        f"<Resource>{escape(resource_)}</Resource><RequestId>{uuid.uuid4().hex}</RequestId>"
        "</Error>"
    )
    return web.Response(status=status, body=body.encode(), content_type="application/xml")


def _object_headers(obj: StoredObject) -> dict[str, str]:
    return {
        "Content-Type": obj.content_type,
        "Last-Modified": obj.http_date,
        "ETag": obj.etag,
        "Content-Length": str(len(obj.body)),
        "Accept-Ranges": "bytes",
    }


def _decode_aws_chunked(data: bytes) -> bytes:
    """Strip aws-chunked framing (``size;chunk-signature=...\\r\\n data \\r\\n``, then trailers)."""
    out = bytearray()
    pos = 0
    while True:
        eol = data.index(b"\r\n", pos)
        size = int(data[pos:eol].split(b";", 1)[0], 16)
        if size == 0:
            return bytes(out)
        start = eol + 2
        out += data[start : start + size]
        pos = start + size + 2


def _enc(value: str, url: bool) -> str:
    return escape(quote(value, safe="/~") if url else value)


async def _bucket_op(request: web.Request) -> web.StreamResponse:
    store: Store = request.app[_STORE_KEY]  # type: ignore[assignment]
    name = request.match_info["bucket"]
    method = request.method
    query = request.query
    if method == "GET" and "location" not in query and "versioning" not in query:
        store.count(name, "LIST")
        store.label("LIST", query.get("prefix", ""))
        bucket = store.buckets.get(name)
        if bucket is None:
            return _error(404, "NoSuchBucket", "The specified bucket does not exist", name)
        return _list(name, bucket, query, store)
    store.count(name, "OTHER")
    if method == "PUT":
        await request.read()
        store.buckets.setdefault(name, Bucket())
        return web.Response(status=200, headers={"Location": f"/{name}"})
    if method == "HEAD":
        status = 200 if name in store.buckets else 404
        return web.Response(status=status)
    if method == "GET" and "location" in query:
        body = f'<?xml version="1.0" encoding="UTF-8"?>\n<LocationConstraint xmlns="{_XMLNS}"/>'
        return web.Response(body=body.encode(), content_type="application/xml")
    if method == "DELETE":
        store.buckets.pop(name, None)
        return web.Response(status=204)
    return _error(501, "NotImplemented", f"{method} on a bucket is not implemented", name)


def _list(name: str, bucket: Bucket, query: Any, store: Store) -> web.Response:
    prefix = query.get("prefix", "")
    delimiter = query.get("delimiter", "")
    start_after = query.get("start-after", "")
    url = query.get("encoding-type") == "url"
    token_in = query.get("continuation-token", "")
    try:
        max_keys = min(1000, max(0, int(query.get("max-keys", "1000"))))
        marker = base64.urlsafe_b64decode(token_in.encode()).decode() if token_in else ""
    except ValueError:
        return _error(400, "InvalidArgument", "Invalid max-keys or continuation-token", name)
    contents, prefixes, next_marker = store.list_v2(
        bucket,
        prefix=prefix,
        delimiter=delimiter,
        start_after=start_after,
        token=marker,
        max_keys=max_keys,
    )
    parts = [
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{_XMLNS}">',
        f"<Name>{escape(name)}</Name><Prefix>{_enc(prefix, url)}</Prefix>",
        f"<KeyCount>{len(contents) + len(prefixes)}</KeyCount><MaxKeys>{max_keys}</MaxKeys>",
    ]
    if delimiter:
        parts.append(f"<Delimiter>{_enc(delimiter, url)}</Delimiter>")
    if url:
        parts.append("<EncodingType>url</EncodingType>")
    parts.append(f"<IsTruncated>{'true' if next_marker is not None else 'false'}</IsTruncated>")
    if token_in:
        parts.append(f"<ContinuationToken>{escape(token_in)}</ContinuationToken>")
    if next_marker is not None:
        token_out = base64.urlsafe_b64encode(next_marker.encode()).decode()
        parts.append(f"<NextContinuationToken>{token_out}</NextContinuationToken>")
    if start_after:
        parts.append(f"<StartAfter>{_enc(start_after, url)}</StartAfter>")
    for key, obj in contents:
        parts.append(
            f"<Contents><Key>{_enc(key, url)}</Key><LastModified>{obj.iso_date}</LastModified>"
            f"<ETag>{escape(obj.etag)}</ETag><Size>{len(obj.body)}</Size>"
            "<StorageClass>STANDARD</StorageClass></Contents>"
        )
    for common in prefixes:
        parts.append(f"<CommonPrefixes><Prefix>{_enc(common, url)}</Prefix></CommonPrefixes>")
    parts.append("</ListBucketResult>")
    return web.Response(body="".join(parts).encode(), content_type="application/xml")


async def _object_op(request: web.Request) -> web.StreamResponse:
    store: Store = request.app[_STORE_KEY]  # type: ignore[assignment]
    name = request.match_info["bucket"]
    key = request.match_info["key"]
    method = request.method
    if not key:
        return await _bucket_op(request)
    bucket = store.buckets.get(name)
    if method == "GET":
        store.count(name, "GET")
        store.label("GET", key)
        if bucket is None:
            return _error(404, "NoSuchBucket", "The specified bucket does not exist", name)
        obj = bucket.objects.get(key)
        if obj is None:
            return _error(404, "NoSuchKey", "The specified key does not exist.", f"/{name}/{key}")
        headers = _object_headers(obj)
        del headers["Content-Length"]  # aiohttp sets it from the body
        return web.Response(body=obj.body, headers=headers)
    if method == "HEAD":
        store.count(name, "HEAD")
        store.label("HEAD", key)
        obj = bucket.objects.get(key) if bucket is not None else None
        if obj is None:
            return web.Response(status=404)
        return web.Response(status=200, headers=_object_headers(obj))
    if "uploads" in request.query or "uploadId" in request.query:
        return await _multipart(request, store, name, key)
    if method == "PUT" and "x-amz-copy-source" in request.headers:
        store.count(name, "PUT")
        store.label("COPY", key)
        source = unquote(request.headers["x-amz-copy-source"]).lstrip("/")
        source_bucket, _, source_key = source.partition("/")
        found = store.buckets.get(source_bucket)
        original = found.objects.get(source_key) if found is not None else None
        if bucket is None or original is None:
            return _error(404, "NoSuchKey", "The specified key does not exist.", source)
        obj = store.put(name, key, original.body, original.content_type)
        body = (
            f'<CopyObjectResult xmlns="{_XMLNS}"><ETag>{escape(obj.etag)}</ETag>'
            f"<LastModified>{obj.iso_date}</LastModified></CopyObjectResult>"
        )
        return web.Response(body=body.encode(), content_type="application/xml")
    if method == "PUT":
        store.count(name, "PUT")
        data = await request.read()
        if bucket is None:
            return _error(404, "NoSuchBucket", "The specified bucket does not exist", name)
        # Conditional writes, as S3 does them: If-None-Match: * and If-Match: <ETag>.
        existing = bucket.objects.get(key)
        if request.headers.get("If-None-Match") == "*":
            store.label("PUT if-none-match", key)
            if existing is not None:
                return _error(
                    412,
                    "PreconditionFailed",
                    "At least one of the pre-conditions you specified did not hold",
                    key,
                )
        elif "If-Match" in request.headers:
            store.label("PUT if-match", key)
            if existing is None:
                return _error(404, "NoSuchKey", "The specified key does not exist.", key)
            if existing.etag != request.headers["If-Match"]:
                return _error(
                    412,
                    "PreconditionFailed",
                    "At least one of the pre-conditions you specified did not hold",
                    key,
                )
        else:
            store.label("PUT", key)
        encoding = request.headers.get("Content-Encoding", "")
        sha = request.headers.get("x-amz-content-sha256", "")
        if "aws-chunked" in encoding or sha.startswith("STREAMING-"):
            data = _decode_aws_chunked(data)
        obj = store.put(name, key, data, request.headers.get("Content-Type", "binary/octet-stream"))
        return web.Response(status=200, headers={"ETag": obj.etag})
    store.count(name, "OTHER")
    if method == "DELETE":
        if bucket is not None:
            bucket.delete(key)
        return web.Response(status=204)
    return _error(501, "NotImplemented", f"{method} on an object is not implemented", key)


def _body_of(request: web.Request, data: bytes) -> bytes:
    encoding = request.headers.get("Content-Encoding", "")
    sha = request.headers.get("x-amz-content-sha256", "")
    if "aws-chunked" in encoding or sha.startswith("STREAMING-"):
        return _decode_aws_chunked(data)
    return data


async def _multipart(request: web.Request, store: Store, name: str, key: str) -> web.Response:
    """CreateMultipartUpload, UploadPart, CompleteMultipartUpload, AbortMultipartUpload."""
    method, query = request.method, request.query
    store.count(name, "PUT" if method == "PUT" else "OTHER")
    store.label(f"{method} multipart", key)
    if method == "POST" and "uploads" in query:
        upload_id = uuid.uuid4().hex
        store.uploads[upload_id] = (name, key, {})
        body = (
            f'<InitiateMultipartUploadResult xmlns="{_XMLNS}"><Bucket>{escape(name)}</Bucket>'
            f"<Key>{escape(key)}</Key><UploadId>{upload_id}</UploadId>"
            "</InitiateMultipartUploadResult>"
        )
        return web.Response(body=body.encode(), content_type="application/xml")
    upload = store.uploads.get(query["uploadId"])
    if upload is None or upload[:2] != (name, key):
        return _error(404, "NoSuchUpload", "The specified upload does not exist.", key)
    if method == "PUT":
        data = _body_of(request, await request.read())
        upload[2][int(query["partNumber"])] = data
        return web.Response(status=200, headers={"ETag": '"' + hashlib.md5(data).hexdigest() + '"'})
    if method == "DELETE":
        del store.uploads[query["uploadId"]]
        return web.Response(status=204)
    if method == "POST":
        await request.read()
        del store.uploads[query["uploadId"]]
        parts = upload[2]
        obj = store.put(name, key, b"".join(parts[n] for n in sorted(parts)))
        body = (
            f'<CompleteMultipartUploadResult xmlns="{_XMLNS}"><Bucket>{escape(name)}</Bucket>'
            f"<Key>{escape(key)}</Key><ETag>{escape(obj.etag)}</ETag>"
            "</CompleteMultipartUploadResult>"
        )
        return web.Response(body=body.encode(), content_type="application/xml")
    return _error(501, "NotImplemented", f"{method} on an upload is not implemented", key)


# -- admin ------------------------------------------------------------------------------------
def _counts_json(store: Store, bucket: str | None) -> dict[str, Any]:
    per = {b: dict(zip(KINDS, c, strict=True)) for b, c in store.counts.items()}
    total = [0] * len(KINDS)
    for b, c in store.counts.items():
        if bucket is None or b == bucket:
            total = [x + y for x, y in zip(total, c, strict=True)]
    return {"total": dict(zip(KINDS, total, strict=True)), "buckets": per}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


async def _admin_counts(request: web.Request) -> web.Response:
    store: Store = request.app[_STORE_KEY]  # type: ignore[assignment]
    return web.json_response(_counts_json(store, request.query.get("bucket")))


async def _admin_labels(request: web.Request) -> web.Response:
    store: Store = request.app[_STORE_KEY]  # type: ignore[assignment]
    return web.json_response(dict(store.labels))


async def _admin_reset_counts(request: web.Request) -> web.Response:
    store: Store = request.app[_STORE_KEY]  # type: ignore[assignment]
    store.reset_counts()
    return web.json_response({"ok": True})


async def _admin_reset(request: web.Request) -> web.Response:
    store: Store = request.app[_STORE_KEY]  # type: ignore[assignment]
    store.clear()
    for name in request.query.getall("bucket", []):
        store.buckets.setdefault(name, Bucket())
    return web.json_response({"ok": True})


async def _admin_writes(request: web.Request) -> web.Response:
    store: Store = request.app[_STORE_KEY]  # type: ignore[assignment]
    prefix = request.query.get("prefix", "")
    writes = store.writes.get(request.query["bucket"], {})
    return web.json_response({k: t for k, t in writes.items() if k.startswith(prefix)})


async def _admin_bulk(request: web.Request) -> web.Response:
    store: Store = request.app[_STORE_KEY]  # type: ignore[assignment]
    q = request.query
    started = time.monotonic()
    store.bulk_create(q["bucket"], q.get("prefix", ""), int(q["count"]))
    return web.json_response({"ok": True, "seconds": round(time.monotonic() - started, 3)})


async def _admin_series(request: web.Request) -> web.Response:
    store: Store = request.app[_STORE_KEY]  # type: ignore[assignment]
    since = float(request.query.get("since", "0"))
    until = float(request.query.get("until", "1e12"))
    rows = [
        [round(tick * TICK, 1), *counts]
        for tick, counts in sorted(store.series.items())
        if since <= tick * TICK < until
    ]
    return web.json_response({"tick": TICK, "kinds": KINDS, "rows": rows})


async def _admin_stats(request: web.Request) -> web.Response:
    store: Store = request.app[_STORE_KEY]  # type: ignore[assignment]
    lag = sorted(store.lag)

    def pct(q: float) -> float | None:
        return round(lag[min(len(lag) - 1, int(q * len(lag)))] * 1000, 2) if lag else None

    return web.json_response(
        {
            "time": time.time(),
            "cpu_s": _cpu(),
            "rss_bytes": _rss(),
            "objects": sum(len(b.keys) for b in store.buckets.values()),
            "loop_lag_ms": {"p99": pct(0.99), "max": pct(1.0), "samples": len(lag)},
            "counts_since": store.counts_reset_at,
        }
    )


def add_admin_routes(app: web.Application) -> None:
    """``/__admin/``: counts, reset-counts, reset, writes, bulk, series, stats (JSON)."""
    app.router.add_get("/__admin/counts", _admin_counts)
    app.router.add_get("/__admin/labels", _admin_labels)
    app.router.add_post("/__admin/reset-counts", _admin_reset_counts)
    app.router.add_post("/__admin/reset", _admin_reset)
    app.router.add_get("/__admin/writes", _admin_writes)
    app.router.add_post("/__admin/bulk", _admin_bulk)
    app.router.add_get("/__admin/series", _admin_series)
    app.router.add_get("/__admin/stats", _admin_stats)


async def _lag_ticker(store: Store, period: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(period)
        store.lag.append(max(0.0, loop.time() - before - period))


def create_app(store: Store) -> web.Application:
    app = web.Application(client_max_size=64 * 1024**2)
    app[_STORE_KEY] = store
    add_admin_routes(app)
    app.router.add_route("*", "/{bucket}", _bucket_op)
    app.router.add_route("*", "/{bucket}/", _bucket_op)
    app.router.add_route("*", "/{bucket}/{key:.+}", _object_op)

    async def ticker(app: web.Application) -> Any:
        task = asyncio.get_running_loop().create_task(_lag_ticker(store))
        yield
        task.cancel()

    async def request_id(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-amz-request-id"] = "fake"  # S3 names every answer's request

    app.on_response_prepare.append(request_id)
    app.cleanup_ctx.append(ticker)
    return app
