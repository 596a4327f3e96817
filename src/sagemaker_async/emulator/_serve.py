"""Running the emulator as a process (what ``sagemaker-async emulate`` calls)."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

from ._config import EndpointConfig
from ._local import LocalAsyncEndpoint

__all__ = ["run_forever", "serve", "shell_exports"]


def shell_exports(env: Mapping[str, str], unset: Iterable[str] = ()) -> str:
    """``unset`` then ``export NAME=value`` lines (shell-quoted) for ``eval`` in a shell."""
    names = " ".join(unset)
    lines = [f"unset {names}\n"] if names else []
    lines += [f"export {name}={shlex.quote(value)}\n" for name, value in env.items()]
    return "".join(lines)


async def serve(
    endpoints: Iterable[EndpointConfig | str],
    *,
    stdout: TextIO | None = None,
    on_ready: Callable[[LocalAsyncEndpoint], None] | None = None,
    **options: Any,
) -> None:
    """Serve ``endpoints`` until cancelled, after printing the ``export`` lines for clients.

    Args:
        endpoints: :class:`EndpointConfig` objects or ``"NAME=MODEL"`` specs.
        stdout: where the export lines go (default ``sys.stdout``).
        on_ready: called once the emulator listens, e.g. to learn its URL.
        options: keyword arguments of :class:`LocalAsyncEndpoint` (``port``, ``host``,
            ``s3_endpoint_url``, ``region``, ``credentials``, ``time_scale``...).
    """
    out = stdout if stdout is not None else sys.stdout
    async with LocalAsyncEndpoint(endpoints, **options) as emulator:
        out.write(shell_exports(emulator.env, LocalAsyncEndpoint.UNSET_ENV))
        names = ", ".join(emulator.endpoints) or "none yet (create them with the SageMaker API)"
        out.write(f"# sagemaker-async emulator: endpoints {names}\n")
        out.flush()
        if on_ready is not None:
            on_ready(emulator)
        await asyncio.Event().wait()  # until cancelled


def run_forever(endpoints: Iterable[EndpointConfig | str], **options: Any) -> None:
    """Blocking :func:`serve`; returns on Ctrl-C (KeyboardInterrupt) after a clean shutdown."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(endpoints, **options))
