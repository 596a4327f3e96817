"""Smoke test of an installed sagemaker-async (a built wheel or sdist), run by ``nox -s wheel``.

Run with the python of a fresh venv that has ``sagemaker-async[emulator]`` installed, from a
folder outside the repository::

    python smoke_installed.py 0.1.0

It checks the import, the version, ``py.typed``, ``sagemaker-async --help``, a short
``sagemaker-async demo``, and one inference through the client against the emulator (an
embedded moto on 127.0.0.1, fake credentials: nothing contacts AWS).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"smoke test failed: {what}")
    print(f"  ok  {what}")


def isolate_from_aws() -> None:
    """No profile, endpoint or credential of this machine reaches the checks."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        del os.environ[key]
    os.environ.update(FAKE_ENV)


def check_package(version: str) -> None:
    import sagemaker_async

    package = Path(sagemaker_async.__file__).resolve().parent
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    check(package.parent == site, f"imported from the venv's site-packages ({package})")
    check(sagemaker_async.__version__ == version, f"__version__ is {version}")
    installed = importlib.metadata.version("sagemaker-async")
    check(installed == version, f"the installed distribution's version is {version}")
    check((package / "py.typed").is_file(), "py.typed is installed")
    check(
        sagemaker_async.InferenceFailedError.__module__ == "sagemaker_async",
        "public names report sagemaker_async as their module",
    )


def check_cli() -> None:
    cli = str(Path(sys.executable).with_name("sagemaker-async"))
    helped = subprocess.run([cli, "--help"], capture_output=True, text=True, timeout=60)
    check(helped.returncode == 0 and "demo" in helped.stdout, "sagemaker-async --help")
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        demo = subprocess.run(
            [cli, "demo", "--count", "5", "--no-progress", "--out", f"{tmp}/demo"],
            capture_output=True,
            text=True,
            timeout=300,
        )
    print(demo.stdout, end="")
    counts = dict(re.findall(r"^\s*(succeeded|failed)\s+(\d+)", demo.stdout, re.M))
    check(
        demo.returncode == 0 and int(counts["succeeded"]) + int(counts["failed"]) == 5,
        f"sagemaker-async demo --count 5 ({time.monotonic() - started:.1f} s)",
    )


async def round_trip() -> None:
    """One inference through the public client, against the emulator and its embedded moto."""
    from sagemaker_async import AsyncInferenceClient, PollingConfig
    from sagemaker_async.emulator import EndpointConfig, LocalAsyncEndpoint

    endpoints = [EndpointConfig("echo", model="echo")]
    async with (
        LocalAsyncEndpoint(endpoints=endpoints) as emu,
        AsyncInferenceClient(
            region_name="us-east-1",
            endpoint_url=emu.url,
            s3_endpoint_url=emu.s3_endpoint_url,
            polling=PollingConfig(initial_delay=0.05, max_delay=0.2),
        ) as client,
    ):
        handle = await client.invoke_endpoint_async(
            "echo", body=b'{"smoke": true}', content_type="application/json"
        )
        result = await handle.result(timeout=60)
    check(result.json() == {"smoke": True}, f"one inference round trip ({handle.inference_id})")


def main() -> None:
    version = sys.argv[1]
    isolate_from_aws()
    check_package(version)
    check_cli()
    asyncio.run(round_trip())
    print("smoke test passed")


if __name__ == "__main__":
    main()
