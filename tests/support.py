"""Helpers for the client's tests (imported by name: tests/ is on sys.path)."""

from __future__ import annotations

import asyncio

import aiohttp


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


def other_tasks() -> set[object]:
    """Tasks alive besides the current one: a clean wait leaves none."""
    return asyncio.all_tasks() - {asyncio.current_task()}
