"""Sessions: tests, lint, typecheck, bench. `nox` alone runs the first three."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

STUBS = "types-aiobotocore[s3,sagemaker-runtime,sqs,sns]"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (starts its own moto and emulator servers on 127.0.0.1)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over src/."""
    session.install("-e", ".[test]", "mypy>=1.10", STUBS)
    session.run("mypy", "--strict", "src")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against the baselines; writes benchmarks/results/ and prints the table.

    The SageMaker Python SDK v2 baseline runs in its own venv (its pins differ from
    aiobotocore's); pass ``-- --no-sdk`` to skip it.
    """
    session.install("-e", ".[test]")
    args = list(session.posargs)
    if "--no-sdk" in args:
        args.remove("--no-sdk")
    else:
        sdk_venv = Path(session.virtualenv.location).parent / "sdk-baseline"
        if not (sdk_venv / "bin" / "python").exists():
            session.run("python", "-m", "venv", str(sdk_venv))
        session.run(
            str(sdk_venv / "bin" / "pip"),
            "install",
            "--quiet",
            "sagemaker>=2.250,<3",
            external=True,
        )
        args += ["--sdk-python", str(sdk_venv / "bin" / "python")]
    session.run("python", "benchmarks/run.py", *args)
