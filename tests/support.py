"""Helpers for the client's tests (imported by name: tests/ is on sys.path)."""

from __future__ import annotations

import asyncio

import aiohttp

ENGINE_TASK = "sagemaker-async completion engine"


async def set_moto_results(admin: aiohttp.ClientSession, *results: tuple[str, bool]) -> None:
    """Queue what moto's InvokeEndpointAsync stub writes next: (data, is_failure) pairs."""
    resp = await admin.post(
        "/moto-api/static/sagemaker/async-endpoint-results",
        json={
            "results": [{"data": d, "is_failure": f} for d, f in results],
            "region": "us-east-1",
        },
    )
    assert resp.status in (200, 201), await resp.text()


async def other_tasks() -> set[object]:
    """Tasks alive besides the current one and a client's engine, once the loop has turned.

    A clean wait leaves none: no task per handle, and a request made for a handle alone is
    cancelled when its last waiter leaves (it unwinds within a few turns of the loop).
    """
    for _ in range(5):
        await asyncio.sleep(0)
    current = asyncio.current_task()
    return {t for t in asyncio.all_tasks() if t is not current and t.get_name() != ENGINE_TASK}
