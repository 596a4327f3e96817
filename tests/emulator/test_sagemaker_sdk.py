"""The SageMaker Python SDK against the emulator (``nox -s sdk``; skipped without the SDK).

Its install is heavy (about 65 packages, 550 MB, and botocore pins of its own), so it is not in
the ``test`` extra: ``nox -s sdk`` makes a venv with it and runs this file.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from typing import Any

import pytest

from sagemaker_async.emulator import LocalAsyncEndpoint, sagemaker_session

sagemaker = pytest.importorskip("sagemaker")

ROLE = "arn:aws:iam::123456789012:role/sagemaker-execution"


async def test_deploy_predict_async_get_result_predict_and_delete(
    local_async_endpoint_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagemaker.async_inference import AsyncInferenceConfig, WaiterConfig
    from sagemaker.model import Model
    from sagemaker.predictor import Predictor

    emu: LocalAsyncEndpoint = await local_async_endpoint_factory([], deployment_seconds=0.05)
    # The emulator's environment, proxies included: anything the SDK sends elsewhere than
    # 127.0.0.1 is refused and listed.
    for name in emu.UNSET_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in emu.env.items():
        monkeypatch.setenv(name, value)
    assert os.environ["HTTPS_PROXY"] == emu.refusing_proxy.url
    monkeypatch.setenv("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    name = f"sdk-{uuid.uuid4().hex[:8]}"
    # get_result() and predict() also poll for the failure object, in a thread that outlives
    # the call until its attempts run out: few attempts, and the test waits for those threads
    # before the servers close.
    waiter = WaiterConfig(max_attempts=10, delay=1)
    before = set(threading.enumerate())

    def workflow() -> tuple[bytes, bytes, str]:
        session = sagemaker_session(emu)
        assert session.account_id() == "123456789012"
        model = Model(
            image_uri="echo",
            role=ROLE,
            sagemaker_session=session,
            name=name,
            predictor_cls=Predictor,
        )
        predictor = model.deploy(
            initial_instance_count=1,
            instance_type="ml.m5.large",
            endpoint_name=name,
            async_inference_config=AsyncInferenceConfig(
                output_path=f"s3://{session.default_bucket()}/{name}/out"
            ),
        )
        status = session.sagemaker_client.describe_endpoint(EndpointName=name)["EndpointStatus"]
        response = predictor.predict_async(data=b"with data")  # uploaded to the default bucket
        first = response.get_result(waiter)
        second = predictor.predict(data=b"and predict", waiter_config=waiter)
        predictor.delete_endpoint()
        return first, second, status

    first, second, status = await asyncio.to_thread(workflow)
    for thread in set(threading.enumerate()) - before:
        if thread.name.startswith("Thread-"):  # the SDK's pollers, not the loop's workers
            await asyncio.to_thread(thread.join, 60)
    assert status == "InService"
    assert first == b"with data"
    assert second == b"and predict"
    refused = list(emu.refusing_proxy.refused)
    assert refused == [], f"the SDK tried to leave the machine: {refused}"
