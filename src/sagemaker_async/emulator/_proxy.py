"""A local HTTP proxy that refuses everything: nothing reaches AWS, whatever a client hard-codes.

The emulator's environment points ``HTTP_PROXY`` and ``HTTPS_PROXY`` at it (loopback
addresses stay direct through ``NO_PROXY``), so a client that builds its own AWS host name
(the SageMaker Python SDK's STS client, a telemetry call) fails at once with an answer that
names the emulator, instead of reaching the network.
"""

from __future__ import annotations

import asyncio
import logging

from ._s3 import connectable_host

__all__ = ["REFUSAL", "RefusingProxy"]

_log = logging.getLogger("sagemaker_async.emulator")

#: The status line's reason (clients print it: "Tunnel connection failed: 403 ...").
REFUSAL = "Refused by the sagemaker-async emulator: only 127.0.0.1 is reachable"
# A request line and its headers: more is not read.
_MAX_HEAD = 16384


class RefusingProxy:
    """A proxy on ``host:port`` answering every request, CONNECT included, 403 :data:`REFUSAL`.

    :attr:`refused` lists the targets it refused (``"sts.us-east-1.amazonaws.com:443"``), so a
    test can see what tried to leave.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self.refused: list[str] = []

    @property
    def url(self) -> str:
        """``http://host:port`` of the running proxy."""
        if self._server is None:
            raise RuntimeError("RefusingProxy is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{connectable_host(host)}:{port}"

    async def start(self) -> RefusingProxy:
        """Listen (idempotent)."""
        if self._server is None:
            self._server = await asyncio.start_server(self._answer, self._host, self._port)
        return self

    async def aclose(self) -> None:
        """Stop listening and close the connections (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError):
            head = b""
        except ConnectionError:
            writer.close()
            return
        line = head[:_MAX_HEAD].split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split(" ")
        target = parts[1] if len(parts) > 1 else "?"
        self.refused.append(target)
        _log.warning(
            "refused %s %s: a client tried to leave the machine (through HTTP(S)_PROXY)",
            parts[0] if parts else "?",
            target,
        )
        body = (
            f"The sagemaker-async emulator refused {line!r}: its environment sends every AWS "
            "call to 127.0.0.1, and this client tried to reach another host. Point the "
            "client at the emulator's endpoint URLs (see docs/emulator.md).\n"
        ).encode()
        writer.write(
            f"HTTP/1.1 403 {REFUSAL}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        try:
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()
