"""Packaging and the public surface: where public names say they live, one version, py.typed.

Cheap checks only; building and installing the wheel and the sdist in a fresh venv is
``nox -s wheel``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import pickle
import re
import sys
import traceback
import typing
from collections.abc import Mapping
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any

import pytest

import sagemaker_async
import sagemaker_async.emulator
from sagemaker_async import (
    ClientClosedError,
    InferenceFailedError,
    InferenceStatus,
    SageMakerAsyncError,
    ValidationError,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_MODULES = [sagemaker_async, sagemaker_async.emulator]


def public_objects(module: ModuleType) -> list[tuple[str, Any]]:
    """The classes and functions among ``module.__all__`` (constants and aliases have no home)."""
    return [
        (name, obj)
        for name in module.__all__
        if isinstance(obj := getattr(module, name), (type, FunctionType))
    ]


def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        data: dict[str, Any] = tomllib.load(f)
    return data


# -- public names say where they live -----------------------------------------------------------
@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_every_public_class_and_function_reports_its_public_module(module: ModuleType) -> None:
    objects = public_objects(module)
    assert len(objects) >= 10  # the filter did not drop everything
    wrong = {name: obj.__module__ for name, obj in objects if obj.__module__ != module.__name__}
    assert not wrong
    for name in module.__all__:
        assert hasattr(module, name), name


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_public_names_pickle_by_their_public_path(module: ModuleType) -> None:
    # pickle finds a class or function by __module__ and __qualname__: this fails if either
    # does not lead back to the object itself.
    for name, obj in public_objects(module):
        assert pickle.loads(pickle.dumps(obj)) is obj, name


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_type_hints_of_public_classes_still_resolve(module: ModuleType) -> None:
    # get_type_hints looks names up in the module that __module__ names, which does not
    # import what the private module's annotations use (Any, Strategy...).
    for _name, obj in public_objects(module):
        typing.get_type_hints(obj)


def test_reprs_and_tracebacks_show_the_public_path() -> None:
    assert repr(InferenceFailedError) == "<class 'sagemaker_async.InferenceFailedError'>"
    assert repr(ClientClosedError("closed")) == "ClientClosedError('closed')"
    assert repr(InferenceStatus.PENDING) == "<InferenceStatus.PENDING: 'pending'>"
    assert repr(InferenceStatus) == "<enum 'InferenceStatus'>"
    error = InferenceFailedError("boom", failure_location="s3://b/f", inference_id="id-1")
    line = traceback.format_exception_only(type(error), error)[-1]
    assert line == "sagemaker_async.InferenceFailedError: inference id-1 failed (s3://b/f): boom\n"
    assert repr(sagemaker_async.emulator.EndpointConfig).startswith(
        "<class 'sagemaker_async.emulator.EndpointConfig'"
    )
    assert sagemaker_async.as_completed.__qualname__ == "as_completed"
    assert repr(sagemaker_async.as_completed).startswith("<function as_completed at ")


def test_exceptions_and_enums_that_pickled_still_do() -> None:
    # The errors whose constructor takes the message alone round-trip with their attributes
    # (the others need keyword arguments that Exception's pickling does not pass).
    error = ClientClosedError("closed", inference_id="id-1", possibly_submitted=True)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ClientClosedError
    assert (copy.args, copy.inference_id, copy.possibly_submitted) == (
        ("closed",),
        "id-1",
        True,
    )
    root = pickle.loads(pickle.dumps(SageMakerAsyncError("root")))
    assert type(root) is SageMakerAsyncError and root.args == ("root",)
    assert pickle.loads(pickle.dumps(InferenceStatus.SUCCEEDED)) is InferenceStatus.SUCCEEDED
    # Every error pickles by its public path (loading some of them fails on their signature,
    # as it did before).
    assert b"sagemaker_async" in pickle.dumps(ValidationError("F", "bad", "a rule"))
    assert b"_errors" not in pickle.dumps(ValidationError("F", "bad", "a rule"))


def test_public_configs_pickle() -> None:
    from sagemaker_async import CompletionConfig, NotificationConfig, PollingConfig, RetryConfig

    for config in (PollingConfig(), RetryConfig(), CompletionConfig()):
        assert pickle.loads(pickle.dumps(config)) == config
    notifications = NotificationConfig(queue_url="http://127.0.0.1:9/123456789012/q")
    assert pickle.loads(pickle.dumps(notifications)) == notifications


# -- one version ----------------------------------------------------------------------------------
def test_the_installed_version_is_the_package_version() -> None:
    assert importlib.metadata.version("sagemaker-async") == sagemaker_async.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", sagemaker_async.__version__)


def test_the_version_is_written_in_one_place() -> None:
    project = pyproject()
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    source = project["tool"]["hatch"]["version"]["path"]
    assert source == "src/sagemaker_async/_version.py"
    assert (ROOT / source).read_text().count("__version__ = ") == 1
    init = (ROOT / "src/sagemaker_async/__init__.py").read_text()
    assert "from ._version import __version__" in init
    assert not re.search(r"^__version__\s*=", init, re.M)


def test_the_changelog_has_a_section_for_this_version() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    version = re.escape(sagemaker_async.__version__)
    assert re.search(rf"^## \[(Unreleased|{version})\]", changelog, re.M)
    assert re.search(rf"^## \[{version}\]", changelog, re.M)


# -- what the wheel and the sdist carry -----------------------------------------------------------
def test_the_package_is_marked_typed() -> None:
    assert (Path(sagemaker_async.__file__).parent / "py.typed").is_file()
    project = pyproject()
    assert "Typing :: Typed" in project["project"]["classifiers"]
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["packages"] == ["src/sagemaker_async"]  # tests/ and benchmarks/ stay out


def test_the_sdist_leaves_out_benchmark_results_and_local_state() -> None:
    include = pyproject()["tool"]["hatch"]["build"]["targets"]["sdist"]["include"]
    assert "/src" in include and "/tests" in include and "/pyproject.toml" in include
    junk = ("/benchmarks", "/site", "/dist", "/build", "/.venv", "/.nox", "/.hypothesis")
    assert not [p for p in include if p.startswith(junk)]


def test_classifiers_cover_the_supported_pythons() -> None:
    project = pyproject()["project"]
    minimum = re.fullmatch(r">=3\.(\d+)", project["requires-python"])
    assert minimum is not None
    listed = {
        int(c.rsplit(".", 1)[1])
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    assert min(listed) == int(minimum.group(1))
    assert listed == set(range(min(listed), max(listed) + 1))
    assert set(project["urls"]) >= {"Homepage", "Documentation", "Changelog"}


# -- every import is declared ---------------------------------------------------------------------
# Which install brings a module's third-party imports: the dependencies, and the extra that the
# module belongs to (the longest prefix of its name that is listed).
MODULE_EXTRAS = {
    "emulator": "emulator",
    "emulator._sdk": "sdk",
    "emulator.pytest_plugin": "pytest",
    "fastapi": "fastapi",
    "_observe": "otel",  # imported only when a meter or tracer is asked for
}


def requirements(group: str, project: dict[str, Any] | None = None) -> dict[str, str]:
    """Distribution name -> requirement, of the dependencies ("") or of an extra.

    An extra that names another of this package's (``sagemaker-async[emulator]``) has its
    requirements too.
    """
    project = project or pyproject()["project"]
    listed = project["dependencies"] if group == "" else project["optional-dependencies"][group]
    found: dict[str, str] = {}
    for requirement in listed:
        match = re.match(r"([A-Za-z0-9._-]+)\s*(?:\[([^\]]*)\])?", requirement)
        assert match, requirement
        name = normalized(match[1])
        if name == "sagemaker-async":
            for extra in (match[2] or "").split(","):
                found.update(requirements(extra.strip(), project))
        else:
            found[name] = requirement
    return found


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def distributions(module: str) -> frozenset[str]:
    """The installed distributions that give a top-level module; else the name itself."""
    found = installed().get(module) or [module]
    return frozenset(normalized(d) for d in found)


@functools.cache
def installed() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def undeclared(project: dict[str, Any]) -> list[str]:
    """``module: import (group)`` for each third-party import its group does not declare.

    Each run-time import of src/sagemaker_async and of docs_hooks.py (the docs extra); an
    import under ``if TYPE_CHECKING:`` is for mypy, which the typecheck session installs.
    """
    from test_layers import PACKAGE, absolute, imports, module_name

    files = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    files["docs_hooks"] = ROOT / "docs_hooks.py"
    missing = []
    for module, path in files.items():
        prefixes = [p for p in MODULE_EXTRAS if module == p or module.startswith(p + ".")]
        extra = "docs" if module == "docs_hooks" else MODULE_EXTRAS.get(max(prefixes, default=""))
        declared = set(requirements("", project)) | set(
            requirements(extra, project) if extra else ()
        )
        for node, typing_only in imports(path):
            for name in absolute(node):
                top = name.split(".")[0]
                if typing_only or top in sys.stdlib_module_names or top == "sagemaker_async":
                    continue
                if not distributions(top) & declared:
                    missing.append(f"{module}: {top} ({extra or 'dependencies'})")
    return sorted(set(missing))


def test_every_third_party_import_is_declared() -> None:
    assert undeclared(pyproject()["project"]) == []


def test_an_undeclared_import_is_found() -> None:
    project = pyproject()["project"]
    core = [r for r in project["dependencies"] if not r.startswith("botocore")]
    extras = {**project["optional-dependencies"], "fastapi": ["fastapi>=0.100"]}
    missing = undeclared({**project, "dependencies": core, "optional-dependencies": extras})
    assert "_validation: botocore (dependencies)" in missing
    assert "emulator._control: botocore (emulator)" in missing
    assert "fastapi: starlette (fastapi)" in missing
    assert not [m for m in missing if "typing" in m or "types_" in m]
    assert requirements("pytest")["moto"].startswith("moto[server]>=")  # through [emulator]
