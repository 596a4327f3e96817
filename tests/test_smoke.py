import asyncio

import pytest

from sagemaker_async import AsyncInferenceClient, InferenceFailedError, PollingConfig


async def test_smoke(moto_url: str, moto_admin) -> None:
    async with AsyncInferenceClient(
        region_name="us-east-1", endpoint_url=moto_url, s3_endpoint_url=moto_url,
        polling=PollingConfig(initial_delay=0.05, max_delay=0.2),
    ) as client:
        h = await client.invoke_endpoint_async("ep", input_location="s3://b/smoke1")
        r = await h
        print(r, r.body)
        resp = await moto_admin.post(
            "/moto-api/static/sagemaker/async-endpoint-results",
            json={"results": [{"data": "boom", "is_failure": True}], "region": "us-east-1"},
        )
        assert resp.status == 201, await resp.text()
        h = await client.invoke_endpoint_async("ep", input_location="s3://b/smoke2")
        with pytest.raises(InferenceFailedError) as ei:
            await h
        print(ei.value)
        assert h.status == "failed"
    assert asyncio.all_tasks() == {asyncio.current_task()}
