"""A fault-injecting HTTP proxy (aiohttp, 127.0.0.1) for the soak (imported by name).

It forwards each request to its upstream (moto's S3, or the emulator's runtime) unless the
dice pick a fault, and counts what it did. Faults before forwarding never reach the upstream;
faults after forwarding hide an answer that the upstream gave (an accepted inference).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields

import aiohttp
from aiohttp import web
from yarl import URL

_HOP_BY_HOP = {
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "content-encoding",
}


@dataclass(frozen=True)
class FaultMix:
    """Probability of each fault, per request (the rest pass through untouched)."""

    unavailable: float = 0.0  # 503 (S3: SlowDown), not forwarded
    throttle: float = 0.0  # 400 ThrottlingException (runtime) / 503 SlowDown (S3), not forwarded
    internal_after: float = 0.0  # forwarded, then 500 instead of the answer
    reset_before: float = 0.0  # connection dropped, not forwarded
    reset_after: float = 0.0  # forwarded, then the connection dropped
    stall: float = 0.0  # no answer for longer than the client's read timeout, not forwarded
    stall_after: float = 0.0  # forwarded, then no answer for that long
    truncate: float = 0.0  # forwarded, the body cut in the middle (GETs with a body)
    trickle: float = 0.0  # forwarded, the headers at once, then the body a byte a second


#: Picks the fault for one request by what it is (a field name of FaultMix, or None).
Rule = Callable[[web.Request], "str | None"]


class FaultProxy:
    """One proxy; ``kind`` is ``"s3"`` or ``"runtime"`` (how its error answers look)."""

    def __init__(
        self,
        upstream: str,
        mix: FaultMix,
        *,
        kind: str,
        seed: int,
        stall_seconds: float,
        rule: Rule | None = None,
    ) -> None:
        self.upstream = upstream
        self.mix = mix
        self.rule = rule  # when given, it picks each fault (the dice pick none)
        self.kind = kind
        self.stall_seconds = stall_seconds
        self.counts: Counter[str] = Counter()
        self._rng = random.Random(seed)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application(client_max_size=16 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=0.1
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _pick(self) -> str | None:
        roll = self._rng.random()
        for field in fields(self.mix):
            chance = getattr(self.mix, field.name)
            if roll < chance:
                return field.name
            roll -= chance
        return None

    def _error(self, status: int, code: str) -> web.Response:
        if self.kind == "s3":
            body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>"
            return web.Response(
                status=status,
                text=body,
                content_type="application/xml",
                headers={"x-amz-request-id": uuid.uuid4().hex},
            )
        return web.json_response(
            {"message": "injected"},
            status=status,
            headers={"x-amzn-ErrorType": code, "x-amzn-RequestId": str(uuid.uuid4())},
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self.rule(request) if self.rule is not None else self._pick()
        self.counts["requests"] += 1
        if fault is not None:
            self.counts[fault] += 1
        assert request.transport is not None
        if fault == "unavailable":
            return self._error(503, "SlowDown" if self.kind == "s3" else "ServiceUnavailable")
        if fault == "throttle":
            if self.kind == "s3":
                return self._error(503, "SlowDown")
            return self._error(400, "ThrottlingException")
        if fault == "reset_before":
            request.transport.close()
            return web.Response()
        if fault == "stall":
            await asyncio.sleep(self.stall_seconds)
            request.transport.close()
            return web.Response()
        try:
            status, headers, body = await self._forward(request)
        except ConnectionError:  # the client hung up before its request could be forwarded
            self.counts["hung_up"] += 1
            return web.Response()
        self.counts["forwarded"] += 1
        if fault == "internal_after":
            return self._error(500, "InternalError" if self.kind == "s3" else "InternalFailure")
        if fault == "reset_after":
            if request.transport is not None:  # (None: the client already hung up)
                request.transport.close()
            return web.Response()
        if fault == "stall_after":
            await asyncio.sleep(self.stall_seconds)
            if request.transport is not None:
                request.transport.close()
            return web.Response()
        if fault == "truncate" and request.method == "GET" and len(body) > 1 and status == 200:
            response = web.StreamResponse(status=status, headers=headers)
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            request.transport.close()
            return response
        if fault == "trickle":
            response = web.StreamResponse(status=status, headers=headers)
            response.content_length = len(body)
            await response.prepare(request)
            for byte in body:
                await response.write(bytes([byte]))
                await asyncio.sleep(1.0)
            return response
        if fault == "truncate":
            self.counts["truncate"] -= 1  # nothing to cut: passed through
        return web.Response(status=status, headers=headers, body=body)

    async def _forward(self, request: web.Request) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method,
            URL(self.upstream + request.raw_path, encoded=True),  # as signed: not re-encoded
            headers=headers,
            data=await request.read(),
            allow_redirects=False,
        ) as answer:
            body = await answer.read()
            back = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
            return answer.status, back, body
