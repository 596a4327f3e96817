"""Every code block of README.md and docs/*.md runs, or says why it does not.

The convention (also in docs/index.md, "Every example runs"):

- A ```` ```python ```` block is a program: it runs in a process of its own, in a temporary
  folder, with the environment of an emulator (the pytest plugin's ``local_async_endpoint_factory``)
  that serves the endpoints the docs use: ``my-endpoint`` and ``echo`` (echo models, and
  ``my-endpoint`` notifies through SNS topics whose ARNs are in ``SUCCESS_TOPIC_ARN`` and
  ``ERROR_TOPIC_ARN``), ``sentiment``, ``slow`` (``sleep:1``) and ``fail``. It must exit with
  status 0, and print no "never awaited" or "Unclosed" warning.
  - A page that starts the emulator itself, in a shell block (``sagemaker-async emulate ... >
    FILE &``, then ``. ./FILE``), is a reader's whole setup: that block runs as written, in
    bash (with ``sagemaker-async`` on the PATH), and the page's Python blocks run in the
    environment it leaves, against the endpoints that exact command serves, and no other.
  - A block with a top-level ``await`` / ``async with`` / ``async for`` runs inside an event
    loop, as ``python -m asyncio`` would run it.
  - A block that defines a top-level ``test_...`` function is a test file: it runs with pytest
    (warnings are errors) in a fresh project whose pyproject.toml sets only
    ``asyncio_default_fixture_loop_scope = "function"``, and must pass.
  - A block that defines ``app`` (an ASGI application, such as FastAPI's) then has its
    lifespan run: started and stopped once.
- A ```` ```toml ```` or ```` ```json ```` block must parse.
- A shell block (```` ```bash ````, ```` ```console ````, ```` ```sh ````) is not run as a
  whole (they install, build, serve or benchmark), but for a page's emulator setup (above).
  Every ``sagemaker-async COMMAND --option`` in it is checked against
  ``sagemaker-async COMMAND --help``, and every ``nox -s SESSION`` against noxfile.py.
- A block that is deliberately not runnable on its own is preceded by an HTML comment giving
  the reason, on the line before the fence: ``<!-- not-run: a fragment of an endpoint
  configuration -->``. It is skipped, and the reason shows in the test's id. Keep these few
  (``test_few_blocks_are_marked_not_run``).

A block that fails makes its test fail with the block's own output.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from asyncio.subprocess import PIPE
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import aiobotocore.session
import pytest

from sagemaker_async.emulator import (
    ERROR_NOTIFICATION_TOPIC,
    SUCCESS_NOTIFICATION_TOPIC,
    EndpointConfig,
)

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "console", "sh", "shell"}
MAX_NOT_RUN = 8  # the marked set stays small: a block that can run, runs
BLOCK_TIMEOUT = 120.0

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)(?P<fence>`{3,})(?P<info>[^`\n]*)\n"
    r"(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
    re.M | re.S,
)
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(?P<reason>.*?)\s*-->\s*$", re.S)


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    source: str
    not_run: str | None  # the reason, when marked

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks_of(page: Path) -> list[Block]:
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        indent = match["indent"]
        body = match["body"]
        if indent:
            body = "\n".join(line.removeprefix(indent) for line in body.splitlines()) + "\n"
        before = text[: match.start()].rstrip().rsplit("\n", 1)[-1]
        marker = NOT_RUN.search(before)
        found.append(
            Block(
                page=page,
                line=text.count("\n", 0, match.start()) + 1,
                language=(match["info"].split() or [""])[0].lower(),
                source=body,
                not_run=marker["reason"] if marker else None,
            )
        )
    return found


ALL_BLOCKS = [block for page in PAGES for block in blocks_of(page)]


def params(languages: set[str]) -> list[Any]:
    return [
        pytest.param(
            block,
            id=block.id,
            marks=[pytest.mark.skip(reason=f"not-run: {block.not_run}")] if block.not_run else [],
        )
        for block in ALL_BLOCKS
        if block.language in languages
    ]


# --- Python blocks -------------------------------------------------------------------------

# Runs a block given as a file: at the top level, or in an event loop when it awaits there;
# then an ASGI `app` it defines gets its lifespan run once.
RUNNER = """
import ast, asyncio, inspect, sys
path = sys.argv[1]
code = compile(open(path).read(), path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
namespace = {"__name__": "__main__", "__file__": path}
if code.co_flags & inspect.CO_COROUTINE:
    asyncio.run(eval(code, namespace))
else:
    exec(code, namespace)
app = namespace.get("app")
if app is not None and callable(app):
    from fastapi.testclient import TestClient
    with TestClient(app):
        pass
"""

PYPROJECT = '[tool.pytest.ini_options]\nasyncio_default_fixture_loop_scope = "function"\n'


def is_test_file(source: str) -> bool:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False  # the runner reports it, with the block's line
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test")
        for node in tree.body
    )


@pytest.fixture
async def docs_env(local_async_endpoint_factory: Any, moto_url: str) -> dict[str, str]:
    """The environment a block runs in: an emulator serving the endpoints the docs name."""
    session = aiobotocore.session.get_session()
    async with session.create_client("sns", endpoint_url=moto_url, region_name="us-east-1") as sns:
        suffix = uuid.uuid4().hex[:8]
        success = (await sns.create_topic(Name=f"docs-ok-{suffix}"))["TopicArn"]
        error = (await sns.create_topic(Name=f"docs-err-{suffix}"))["TopicArn"]
    emu = await local_async_endpoint_factory(
        [
            EndpointConfig(
                "my-endpoint",
                model="echo",
                success_topic=success,
                error_topic=error,
                include_inference_response_in=(
                    SUCCESS_NOTIFICATION_TOPIC,
                    ERROR_NOTIFICATION_TOPIC,
                ),
            ),
            EndpointConfig("echo", model="echo"),
            EndpointConfig("sentiment", model="sentiment"),
            EndpointConfig("slow", model="sleep:1"),
            EndpointConfig("fail", model="fail"),
        ]
    )
    env = {k: v for k, v in this_checkout(os.environ).items() if k not in emu.UNSET_ENV}
    return {**env, **emu.env, "SUCCESS_TOPIC_ARN": success, "ERROR_TOPIC_ARN": error}


def this_checkout(env: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """``env`` with its PYTHONPATH made absolute: blocks run in other folders, and must import
    the package these tests import."""
    paths = [str(Path(p).resolve()) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)} if paths else dict(env)


async def run(command: list[str], *, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Run a block's process while this loop serves the emulator; its exit status and output."""
    process = await asyncio.create_subprocess_exec(
        *command, env=env, cwd=cwd, stdout=PIPE, stderr=PIPE
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), BLOCK_TIMEOUT)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        return -1, f"timed out after {BLOCK_TIMEOUT} s\n{out.decode()}\n{err.decode()}"
    return process.returncode or 0, f"--- stdout\n{out.decode()}\n--- stderr\n{err.decode()}"


# A shell block that starts the emulator in the background, its output going to a file.
SETUP = re.compile(r"sagemaker-async emulate\b[^\n]*>\s*\S+\s*&")


@cache
def setup_block(page: Path) -> Block | None:
    """The shell block that starts a page's own emulator, if the page has one."""
    for block in blocks_of(page):
        if block.language in SHELL and SETUP.search(re.sub(r"\\\n", " ", block.source)):
            return block
    return None


def python_params(*, own_setup: bool) -> list[Any]:
    return [
        p
        for p in params({"python", "py"})
        if (setup_block(p.values[0].page) is not None) == own_setup
    ]


@pytest.fixture(scope="session")
def page_env(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[Path], dict[str, str]]]:
    """The environment a page's setup block leaves, that block run as written (once a page)."""
    made: dict[Path, dict[str, str]] = {}
    pids: list[int] = []

    def setup(page: Path) -> dict[str, str]:
        block = setup_block(page)
        assert block is not None
        folder = tmp_path_factory.mktemp("page-setup")
        tools = folder / "bin"
        tools.mkdir()
        command = tools / "sagemaker-async"  # the command of this checkout, as installed
        command.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m sagemaker_async "$@"\n')
        command.chmod(0o755)
        script = folder / "setup.sh"
        script.write_text(f"set -e\n{block.source}\necho $! > emulate.pid\nenv -0 > environment\n")
        env = {**this_checkout(os.environ), "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
        with (folder / "setup.log").open("wb") as log:  # not a pipe: the emulator keeps it
            done = subprocess.run(
                ["bash", str(script)], cwd=folder, env=env, stdout=log, stderr=log, timeout=120
            )
        if (folder / "emulate.pid").exists():
            pids.append(int((folder / "emulate.pid").read_text()))
        output = (folder / "setup.log").read_text()
        assert done.returncode == 0, f"{block.id} failed:\n{output}"
        lines = (folder / "environment").read_bytes().split(b"\0")
        return dict(line.decode().split("=", 1) for line in lines if b"=" in line)

    def env_of(page: Path) -> dict[str, str]:
        if page not in made:
            made[page] = setup(page)
        return made[page]

    yield env_of
    for pid in pids:  # not our child (bash started it): stop it, then watch it go
        os.kill(pid, signal.SIGTERM)
        for _ in range(300):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("block", python_params(own_setup=False))
async def test_python_block_runs(block: Block, docs_env: dict[str, str], tmp_path: Path) -> None:
    await check_python_block(block, docs_env, tmp_path)


@pytest.mark.parametrize("block", python_params(own_setup=True))
async def test_python_block_runs_against_its_pages_own_setup(
    block: Block, page_env: Callable[[Path], dict[str, str]], tmp_path: Path
) -> None:
    await check_python_block(block, page_env(block.page), tmp_path)


def test_the_quickstart_sets_up_its_own_emulator() -> None:
    # Its blocks run against what its own command serves (they ran against the docs' set).
    assert setup_block(ROOT / "docs" / "quickstart.md") is not None


async def check_python_block(block: Block, env: dict[str, str], tmp_path: Path) -> None:
    if is_test_file(block.source):
        (tmp_path / "test_doc_block.py").write_text(block.source)
        (tmp_path / "pyproject.toml").write_text(PYPROJECT)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"]
        command += ["-p", "no:randomly"] if has_plugin("pytest_randomly") else []
    else:
        (tmp_path / "doc_block.py").write_text(block.source)
        command = [sys.executable, "-c", RUNNER, str(tmp_path / "doc_block.py")]
    status, output = await run(command, env=env, cwd=tmp_path)
    assert status == 0, f"{block.id} failed:\n{output}"
    for problem in ("never awaited", "Unclosed", "Task was destroyed"):
        assert problem not in output, f"{block.id}: {problem}\n{output}"


@cache
def has_plugin(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# --- Data blocks ---------------------------------------------------------------------------


@pytest.mark.parametrize("block", params({"toml"}))
def test_toml_block_parses(block: Block) -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    tomllib.loads(block.source)


@pytest.mark.parametrize("block", params({"json"}))
def test_json_block_parses(block: Block) -> None:
    json.loads(block.source)


# --- Shell blocks --------------------------------------------------------------------------

CLI = re.compile(  # up to the next sagemaker-async on the line, if any
    r"(?:^|[\s/|;&(])sagemaker-async(?=\s)(?P<args>.*?)(?=(?:[\s/|;&]sagemaker-async\s)|$)"
)
OPTION = re.compile(r"--[a-z0-9][a-z0-9-]*")


def commands(source: str) -> list[tuple[str, list[str]]]:
    """Each ``sagemaker-async COMMAND ...`` in a shell block: the command and its long options."""
    joined = re.sub(r"\\\n", " ", source)
    found = []
    for line in joined.splitlines():
        line = line.split(" #", 1)[0].removeprefix("$ ")
        for match in CLI.finditer(line):
            words = match["args"].split()
            names = [w for w in words if not w.startswith("-")]
            command = names[0] if names else ""
            options = {m.group(0) for w in words if (m := OPTION.match(w.lstrip("[(")))}
            found.append((command, sorted(options)))
    return found


@cache
def cli_help(command: str) -> str:
    args = [command, "--help"] if command else ["--help"]
    done = subprocess.run(
        [sys.executable, "-m", "sagemaker_async", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"sagemaker-async {' '.join(args)}: {done.stderr}"
    return done.stdout


@cache
def nox_sessions() -> set[str]:
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


@pytest.mark.parametrize("block", params(SHELL))
def test_shell_block_names_real_commands_and_options(block: Block) -> None:
    for command, options in commands(block.source):
        text = cli_help(command)
        for option in options:
            assert re.search(rf"{re.escape(option)}\b", text), (
                f"{block.id}: `sagemaker-async {command}` has no option {option}"
            )
    for session in re.findall(r"\bnox -s ((?:[\w-]+[ ,]*)+)", block.source):
        for name in re.split(r"[ ,]+", session.strip()):
            if name and not name.startswith("-"):
                assert name in nox_sessions(), f"{block.id}: no nox session {name!r}"


# --- What a page installs -------------------------------------------------------------------

INSTALL = re.compile(r"pip install (?P<args>[^\n`&|;#]+)")
RUNS_EMULATOR = re.compile(r"sagemaker-async (?:emulate|demo)\b")
RUNS_UVICORN = re.compile(r"^(?:\$ )?uvicorn ", re.M)


def installs(text: str) -> tuple[set[str], set[str]]:
    """The extras of this package and the other packages a page's ``pip install`` lines add."""
    extras: set[str] = set()
    packages: set[str] = set()
    for match in INSTALL.finditer(text):
        for word in match["args"].split():
            word = word.strip("\"'")
            if not word or word.startswith("-"):
                continue
            ours = re.fullmatch(r"(?:\.|sagemaker-async)(?:\[(?P<extras>[\w,-]+)\])?", word)
            if ours:
                extras.update((ours["extras"] or "").split(",") if ours["extras"] else [])
            else:
                packages.add(re.split(r"[\[<>=!~ ]", word, maxsplit=1)[0].lower())
    return extras, packages


@cache
def extras_with(package: str) -> frozenset[str]:
    """The extras that install ``package`` (itself, or through another extra of ours)."""
    from test_packaging import pyproject, requirements

    extras = pyproject()["project"]["optional-dependencies"]
    return frozenset(name for name in extras if package in requirements(name))


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_a_page_that_installs_installs_what_its_commands_need(page: Path) -> None:
    """A reader who follows a page's own ``pip install`` can run the commands it gives."""
    text = page.read_text()
    extras, packages = installs(text)
    if not extras and not packages - {"nox"}:
        return  # the page installs nothing of ours: the quick start's install is assumed
    shell = "\n".join(b.source for b in blocks_of(page) if b.language in SHELL)
    if RUNS_UVICORN.search(shell):
        assert "uvicorn" in packages, f"{page.name} runs uvicorn but never installs it"
    if RUNS_EMULATOR.search(text):
        assert extras & extras_with("moto"), (
            f"{page.name} runs the emulator (moto) but installs only {sorted(extras)}"
        )


def test_the_install_checker_reads_what_the_pages_write() -> None:
    text = (
        'python3 -m pip install ".[fastapi,emulator]" uvicorn\n'
        "pip install 'sagemaker-async[otel]' && nox -s docs\n"
        ".venv/bin/pip install nox\n"
    )
    assert installs(text) == ({"fastapi", "emulator", "otel"}, {"uvicorn", "nox"})
    assert extras_with("moto") >= {"emulator", "pytest"}


# --- The convention itself -----------------------------------------------------------------


def test_the_docs_have_blocks_of_each_kind() -> None:
    languages = {block.language for block in ALL_BLOCKS}
    assert {"python", "toml", "json"} <= languages and languages & SHELL
    assert len([b for b in ALL_BLOCKS if b.language == "python"]) >= 20


def test_every_block_has_a_known_language() -> None:
    """A block with no language, or one the tests do not know, is neither run nor checked."""
    known = {"python", "py", "toml", "json", "text", "mermaid", "yaml", *SHELL}
    unknown = [
        f"{b.id} ({b.language or 'no language'})" for b in ALL_BLOCKS if b.language not in known
    ]
    assert not unknown, f"unknown code block languages: {unknown}"


def test_few_blocks_are_marked_not_run() -> None:
    marked = [f"{b.id}: {b.not_run}" for b in ALL_BLOCKS if b.not_run]
    assert all(reason.split(": ", 1)[1] for reason in marked), "every not-run gives a reason"
    assert len(marked) <= MAX_NOT_RUN, "\n".join(marked)


def test_the_cli_checker_reads_what_the_pages_write() -> None:
    source = (
        "$ sagemaker-async invoke my-endpoint --body hi | sagemaker-async wait --timeout 5\n"
        "sagemaker-async batch EP DIR --out OUT \\\n    [--max-in-flight 256]  # a comment --no\n"
        "python3 -m venv .venv && .venv/bin/sagemaker-async demo\n"
    )
    assert commands(source) == [
        ("invoke", ["--body"]),
        ("wait", ["--timeout"]),
        ("batch", ["--max-in-flight", "--out"]),
        ("demo", []),
    ]


# --- The site, opened from the file system ---------------------------------------------------


def load_docs_hooks() -> Any:
    """docs_hooks.py (mkdocs' hooks), whose link check needs no mkdocs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "docs_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pages_that_say_open_site_index_html_get_a_site_that_works_from_files() -> None:
    # Folder-style links (quickstart/) open a folder listing under file://, not the page.
    saying = [p.name for p in PAGES if "site/index.html" in p.read_text()]
    assert saying, "no page says how to open the site"
    config = (ROOT / "mkdocs.yml").read_text()
    assert re.search(r"^use_directory_urls:\s*false\s*$", config, re.M), saying


def test_the_build_refuses_a_link_that_only_a_web_server_follows(tmp_path: Path) -> None:
    hooks = load_docs_hooks()
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "style.css").write_text("")
    (tmp_path / "quickstart").mkdir()
    (tmp_path / "quickstart.html").write_text('<a href="index.html#top">home</a>')
    (tmp_path / "index.html").write_text(
        '<link href="assets/style.css"><a href="quickstart.html">q</a>'
        '<a href="https://example.invalid/x/">out</a><a href="#here">in</a>'
        '<a href="mailto:x@example.invalid">m</a>'
    )
    assert hooks.links_that_need_a_server(tmp_path) == []
    (tmp_path / "404.html").write_text('<a href="/">only a server shows this page</a>')
    assert hooks.links_that_need_a_server(tmp_path) == []
    (tmp_path / "index.html").write_text(
        '<a href="quickstart/">q</a><a href=".">home</a><a href="quickstart">q</a>'
    )
    assert hooks.links_that_need_a_server(tmp_path) == [
        "index.html: quickstart/",
        "index.html: .",
        "index.html: quickstart",
    ]
