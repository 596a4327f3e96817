"""Sessions: tests, lint, typecheck, bench. `nox` alone runs the first three."""

from __future__ import annotations

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
    """Benchmarks against the baselines; writes benchmarks/results/."""
    session.install("-e", ".[test,bench]")
    session.run("python", "benchmarks/run.py", *session.posargs)
