"""Sessions: tests, lint, typecheck, floors, newest, wheel, docs, sdk, bench, soak.

`nox` alone runs the first three.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import nox
from packaging.requirements import Requirement
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # nox's own dependency on Python 3.10

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

STUBS = "types-aiobotocore[s3,sagemaker-runtime,sqs,sns]"


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (starts its own moto and emulator servers on 127.0.0.1).

    Four pytest-xdist workers, each with servers of its own (most tests wait on servers and
    subprocesses, so four beat two on two cores: 3 to 7 minutes instead of about 11). Arguments
    after ``--`` replace that (``nox -s tests -- -k notified``). In CI (``CI=true``, no
    arguments), the QUICK subset at the floors follows: ``nox -s floors -- --quick``.
    """
    session.install("-e", ".[test]")
    session.run("pytest", *(session.posargs or ["-n", "4"]))
    if os.environ.get("CI") == "true" and not session.posargs:
        session.notify("floors", ["--quick"])


# What CI runs at the floors after the suite: the tests that use the dependencies' APIs the
# most (botocore's model and private parser, tenacity, aiohttp, aioresponses, moto, werkzeug,
# FastAPI, OpenTelemetry) and the check that every import is declared.
QUICK = [
    "tests/test_packaging.py",
    "tests/test_validation.py",
    "tests/test_retries.py",
    "tests/test_speedups.py",
    "tests/test_observability.py",
    "tests/test_fastapi.py",
    "tests/emulator/test_wire.py",
]
EVERY_EXTRA = ".[test,docs]"


def floors_of(pyproject: Path = Path("pyproject.toml")) -> list[str]:
    """``name==floor`` for each requirement of the package and its extras with a ``>=`` floor.

    A package floored in several groups (aiohttp: the dependencies and the emulator) gets the
    highest: the suite needs every extra.
    """
    project = tomllib.loads(pyproject.read_text())["project"]
    floors: dict[str, Version] = {}
    for group in [project["dependencies"], *project["optional-dependencies"].values()]:
        for requirement in map(Requirement, group):
            for spec in requirement.specifier:
                if spec.operator == ">=":
                    version = Version(spec.version)
                    floors[requirement.name] = max(version, floors.get(requirement.name, version))
    return [f"{name}=={version}" for name, version in sorted(floors.items())]


def _suite_at(session: nox.Session, *how: str) -> None:
    """Install the package with every extra by uv ``how``, then run the suite and build the docs.

    ``-- --quick`` runs the QUICK files only, without the docs; other arguments after ``--``
    replace pytest's (and skip the docs).
    """
    session.install("uv")
    python = str(Path(session.bin) / "python")
    session.run("uv", "pip", "install", "--python", python, *how, "-e", EVERY_EXTRA)
    session.run("uv", "pip", "freeze", "--python", python, "--exclude-editable")
    if session.posargs == ["--quick"]:
        session.run("pytest", "-n", "4", "-q", *QUICK)
        return
    session.run("pytest", *(session.posargs or ["-n", "4"]))
    if not session.posargs:
        site = Path(session.create_tmp()) / "site"
        session.run(
            "mkdocs", "build", "--strict", "--site-dir", str(site),
            env={"NO_MKDOCS_2_WARNING": "1"},
        )  # fmt: skip


@nox.session(reuse_venv=False)  # a fresh venv: nothing of an earlier install stays
def floors(session: nox.Session) -> None:
    """The suite at the floors: each dependency at the lowest version pyproject.toml allows.

    Every requirement of the package and of its extras that has a floor (``>=``) is pinned to
    it (a constraints file), the rest resolves as uv's ``--resolution lowest-direct`` does;
    floors that cannot be installed together fail here. Then the whole suite, and the docs
    site is built. ``-- --quick`` runs the QUICK subset only (CI does, after ``tests``).
    """
    constraints = Path(session.create_tmp()) / "floors.txt"
    constraints.write_text("\n".join(floors_of()) + "\n")
    _suite_at(session, "--resolution", "lowest-direct", "--constraint", str(constraints))


@nox.session(reuse_venv=False)
def newest(session: nox.Session) -> None:
    """The suite with the newest release of every dependency that pyproject.toml allows."""
    _suite_at(session, "--resolution", "highest", "--upgrade")


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
def sdk(session: nox.Session) -> None:
    """The SageMaker Python SDK v2 against the emulator (tests/emulator/test_sagemaker_sdk.py).

    Not in ``tests``: the SDK brings about 65 packages and 550 MB (about 2 minutes to install)
    and botocore pins of its own, so it has a venv of its own; elsewhere the test is skipped.
    """
    session.install("-e", ".[test,sdk]")
    session.run("pytest", "-p", "no:cacheprovider", "tests/emulator/test_sagemaker_sdk.py")


# Never in an sdist: local state, caches, build output, benchmark results and images.
SDIST_JUNK = {
    ".venv", ".nox", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".hypothesis",
    "__pycache__", "site", "dist", "build", "benchmarks",
}  # fmt: skip


@nox.session
def wheel(session: nox.Session) -> None:
    """Build the wheel and the sdist, install each in a fresh venv, and smoke-test it.

    ``python -m build`` (the sdist, then the wheel from it) into a temporary folder; checks
    what each carries (the wheel: the package with py.typed, no tests; the sdist: no local
    state, caches or benchmark results); then, per artifact, a new venv gets
    ``pip install "<artifact>[emulator]"`` (from the configured package index) and runs
    tests/smoke_installed.py from outside the repository: import, version, ``--help``, a short
    ``sagemaker-async demo``, and one inference through the client against the emulator.
    """
    import re
    import tarfile
    import tempfile
    import time
    import zipfile

    version_file = Path("src/sagemaker_async/_version.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', version_file, re.M)
    assert match, "no __version__ in src/sagemaker_async/_version.py"
    version = match.group(1)
    smoke = Path("tests/smoke_installed.py").resolve()
    session.install("build")
    with tempfile.TemporaryDirectory(prefix="sagemaker-async-wheel-") as tmp:
        dist = Path(tmp) / "dist"
        started = time.monotonic()
        session.run("python", "-m", "build", "--outdir", str(dist), ".")
        session.log(f"built in {time.monotonic() - started:.1f} s")
        (wheel_file,) = dist.glob("*.whl")
        (sdist_file,) = dist.glob("*.tar.gz")

        with zipfile.ZipFile(wheel_file) as zf:
            names = zf.namelist()
            metadata = zf.read(f"sagemaker_async-{version}.dist-info/METADATA").decode()
        assert "sagemaker_async/py.typed" in names, "py.typed is missing from the wheel"
        top = {n.split("/", 1)[0] for n in names}
        assert top == {"sagemaker_async", f"sagemaker_async-{version}.dist-info"}, top
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")], names
        assert f"\nVersion: {version}\n" in metadata
        session.log(f"{wheel_file.name}: {len(names)} files, {wheel_file.stat().st_size} bytes")

        with tarfile.open(sdist_file) as tf:
            members = [m.name.split("/", 1)[1] for m in tf.getmembers() if "/" in m.name]
        junk = [m for m in members if SDIST_JUNK & set(m.split("/")) or m.endswith(".pyc")]
        assert not junk, f"the sdist carries {junk}"
        for needed in ("PKG-INFO", "pyproject.toml", "src/sagemaker_async/py.typed"):
            assert needed in members, f"the sdist lacks {needed}"
        session.log(f"{sdist_file.name}: {len(members)} files, {sdist_file.stat().st_size} bytes")

        # The sdist's venv takes the versions pip resolved for the wheel's: resolving moto's
        # and aiobotocore's boto3/botocore pins again would take minutes and test nothing new.
        pins = Path(tmp) / "pins.txt"
        for artifact in (wheel_file, sdist_file):
            venv = Path(tmp) / ("venv-wheel" if artifact is wheel_file else "venv-sdist")
            python = str(venv / "bin" / "python")
            session.run("python", "-m", "venv", str(venv))
            started = time.monotonic()
            constraints = ["--constraint", str(pins)] if pins.exists() else []
            spec = f"{artifact}[emulator]"
            session.run(python, "-m", "pip", "install", "-q", *constraints, spec, external=True)
            session.log(f"{artifact.name} installed in {time.monotonic() - started:.1f} s")
            if not pins.exists():
                frozen = session.run(
                    python, "-m", "pip", "freeze", "--exclude", "sagemaker-async",
                    external=True, silent=True,
                )  # fmt: skip
                pins.write_text(str(frozen))
            with session.chdir(tmp):
                session.run(python, str(smoke), version, external=True)


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
    it. s3batch.py (the S3 batch: 4 processes on one prefix of the fake S3, one killed) runs
    too, at ``--s3batch-items N`` inputs (10,000 by default, 2,000 with ``--quick``; the
    issue's figure is 100,000, about 40 minutes); ``--no-s3batch`` skips it. ``--million``
    runs only the million pending handles (scale.py's resumed-1000000 load, each waiter,
    default gc and the freeze recipe; about 15 minutes on 2 cores), nothing else.
    Writes benchmarks/results/ and prints the tables.
    """
    # matplotlib draws scale.py's plot; uvloop speeds up its fake S3 server process.
    session.install("-e", ".[test]", "matplotlib", "uvloop")
    args = list(session.posargs)
    if "--million" in args:  # the 1,000,000 load alone
        args.remove("--million")
        session.run(
            "python",
            "benchmarks/scale.py",
            "--loads",
            "resumed-1000000",
            "--clients",
            "ours",
            "--gc",
            "default,freeze",
            *args,
        )
        return
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
    s3batch = "--no-s3batch" not in args
    if not s3batch:
        args.remove("--no-s3batch")
    s3batch_items = "2000" if "--quick" in args else "10000"
    if "--s3batch-items" in args:
        at = args.index("--s3batch-items")
        s3batch_items = args[at + 1]
        del args[at : at + 2]
    session.run("python", "benchmarks/scale.py", *args, *sdk)
    if notifications:
        session.run(
            "python", "benchmarks/notifications.py", *(["--quick"] if "--quick" in args else [])
        )
    if fan_out:
        session.run("python", "benchmarks/map.py", *(["--quick"] if "--quick" in args else []))
    if s3batch:
        session.run("python", "benchmarks/s3batch.py", "--items", s3batch_items)
    if not scale_only:
        session.run("python", "benchmarks/run.py", *sdk)
