"""The README's examples run as written, and the top-level default client's lifetime."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import requests

import sagemaker_async
from sagemaker_async import AsyncInferenceClient
from sagemaker_async._default import default_client

README = Path(__file__).parent.parent / "README.md"


def python_blocks() -> list[str]:
    """The Quick start's examples."""
    quick_start = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", quick_start, flags=re.S)


def test_readme_pytest_example_runs(pytester: pytest.Pytester) -> None:
    """The plugin example exactly as written (its test file and its pyproject.toml lines),
    in a fresh project's pytest run of its own: it passes, with no warning."""
    section = README.read_text().split("## Test your own code", 1)[1].split("\n## ", 1)[0]
    pytester.makepyfile(test_user=section.split("```python\n")[1].split("```")[0])
    pytester.makepyprojecttoml(section.split("```toml\n")[1].split("```")[0])
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=1)


@pytest.fixture
def aws_env_on_moto(moto_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the standard AWS configuration at moto, as a user would with env vars."""
    requests.post(f"{moto_url}/moto-api/reset", timeout=10)  # fresh stub state
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", moto_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_url)
    return moto_url


def test_readme_has_the_four_examples() -> None:
    blocks = python_blocks()
    assert len(blocks) == 4
    assert "asyncio.gather" in blocks[1] and "client.map" in blocks[2] and "FastAPI" in blocks[3]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_readme_script_examples_run(
    index: int, aws_env_on_moto: str, capsys: pytest.CaptureFixture[str]
) -> None:
    exec(compile(python_blocks()[index], f"README-{index}", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert out.strip()
    if index == 1:
        assert "100 succeeded, 0 failed" in out
    if index == 2:
        assert out.strip() == "100 succeeded"


def test_readme_fastapi_example_runs(aws_env_on_moto: str) -> None:
    from fastapi.testclient import TestClient

    namespace: dict[str, Any] = {"__name__": "readme_fastapi"}
    exec(compile(python_blocks()[3], "README-fastapi", "exec"), namespace)
    with TestClient(namespace["app"]) as http:
        response = http.post("/predict", json={"x": 1})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["inference_id"] and body["output"]


def test_default_client_lives_as_long_as_the_loop(
    aws_env_on_moto: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[AsyncInferenceClient] = []

    async def main() -> None:
        first = await sagemaker_async.invoke_endpoint_async("ep", input_location="s3://in/a")
        second = await sagemaker_async.invoke_endpoint_async("ep", input_location="s3://in/b")
        await asyncio.gather(first, second)
        seen.append(await default_client())
        assert first._completions is second._completions is seen[0]._engine

    caplog.set_level(logging.ERROR, logger="asyncio")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(main())
        gc.collect()
    assert seen[0].closed  # closed by the loop's shutdown, not by us
    from sagemaker_async import _default

    assert seen[0] not in list(_default._clients.values())  # and forgotten: no leak per loop
    assert seen[0] not in _default._closers
    assert not [w for w in caught if "nclosed" in str(w.message)]
    assert "nclosed" not in caplog.text

    async def again() -> None:  # a new loop gets a new default client
        client = await default_client()
        assert client is not seen[0] and not client.closed
        await sagemaker_async.aclose_default_client()
        assert client.closed
        assert await default_client() is not client  # a closed one is replaced

    asyncio.run(again())


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    readme = README.read_text()
    command = readme.split("## Tests", 1)[1].split("```bash\n", 1)[1].split("\n", 1)[0]
    ci = (README.parent / ".ci" / "run").read_text().splitlines()
    assert command in ci
