"""Sessions: tests, lint, typecheck, bench, soak. `nox` alone runs the first three."""

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
    """mypy --strict over src/ and tests/ (the files and settings are in pyproject.toml)."""
    session.install("-e", ".[test]", "mypy>=1.10", STUBS, "types-tqdm")
    session.run("mypy", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site strictly (any warning fails) into site/ (git-ignored)."""
    session.install("-e", ".[docs]")
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"}
    )


@nox.session
def soak(session: nox.Session) -> None:
    """The soak: 1,000 inferences per fault mix through fault-injecting proxies.

    ``tests/test_soak.py`` with ``SOAK_INFERENCES`` (default here 1,000; CI runs 100). Writes
    benchmarks/results/soak-<date>.json and .md and prints the table.
    """
    import datetime
    import json

    session.install("-e", ".[test]")
    count = session.posargs[0] if session.posargs else "1000"
    stem = Path("benchmarks/results") / f"soak-{datetime.date.today().isoformat()}"
    report = stem.with_suffix(".json")
    report.unlink(missing_ok=True)
    session.run(
        "pytest",
        "-q",
        "-p",
        "no:randomly",
        "tests/test_soak.py",
        env={"SOAK_INFERENCES": count, "SOAK_REPORT": str(report)},
    )
    rows = json.loads(report.read_text())
    lines = [
        f"# Soak {datetime.date.today().isoformat()}: {count} inferences per fault mix",
        "",
        "| mix | seconds | S3 requests / faults | invokes / faults | duplicates at the "
        "emulator / reported | lost | latest end past the deadline (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s3 = ", ".join(f"{k} {v}" for k, v in sorted(r["s3_faults"].items())) or "none"
        rt = ", ".join(f"{k} {v}" for k, v in sorted(r["runtime_faults"].items())) or "none"
        lines.append(
            f"| {r['mix']} | {r['seconds']} | {r['s3_requests']}: {s3} | "
            f"{r['invoke_requests']}: {rt} | {r['duplicates_at_emulator']} / "
            f"{r['duplicates_reported']} | {r['lost']} | {r['latest_past_deadline_s']} |"
        )
    table = "\n".join(lines) + "\n"
    stem.with_suffix(".md").write_text(table)
    print(table)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: benchmarks/scale.py (the main one), notifications.py, map.py, then run.py.

    Arguments after ``--`` go to scale.py (``--quick``, ``--loads``, ``--clients``...).
    ``--no-sdk`` skips the SageMaker Python SDK v2 baseline, which runs in its own venv (its
    pins differ from aiobotocore's). ``--scale-only`` skips run.py, and so does ``--quick``
    (run.py's small moto benchmark would overwrite its dated results). notifications.py (SNS
    and SQS over moto) runs too, at small sizes with ``--quick``; ``--no-notifications``
    skips it. map.py (``client.map`` over 10,000 and 100,000 inputs against the emulator,
    about 15 minutes) runs too, at 1,000 and 5,000 inputs with ``--quick``; ``--no-map`` skips
    it.
    Writes benchmarks/results/ and prints the tables.
    """
    # matplotlib draws scale.py's plot; uvloop speeds up its fake S3 server process.
    session.install("-e", ".[test]", "matplotlib", "uvloop")
    args = list(session.posargs)
    sdk: list[str] = []
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
        sdk = ["--sdk-python", str(sdk_venv / "bin" / "python")]
    scale_only = "--quick" in args
    if "--scale-only" in args:
        args.remove("--scale-only")
        scale_only = True
    notifications = "--no-notifications" not in args
    if not notifications:
        args.remove("--no-notifications")
    fan_out = "--no-map" not in args
    if not fan_out:
        args.remove("--no-map")
    session.run("python", "benchmarks/scale.py", *args, *sdk)
    if notifications:
        session.run(
            "python", "benchmarks/notifications.py", *(["--quick"] if "--quick" in args else [])
        )
    if fan_out:
        session.run("python", "benchmarks/map.py", *(["--quick"] if "--quick" in args else []))
    if not scale_only:
        session.run("python", "benchmarks/run.py", *sdk)
