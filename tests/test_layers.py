"""The import graph of src/ has no cycle and no import from a lower layer to a higher one.

Every import counts: at module level, inside functions, and under ``TYPE_CHECKING``. The
layers, bottom first; a module may import only from layers below its own (and, inside a
package, from the lower modules of that package's own order).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "sagemaker_async"

LAYERS: list[set[str]] = [
    {"_version", "_result", "_logs", "_speedups", "_backoff"},
    {"_errors"},
    {"_config", "_validation", "_clock", "_tasks"},
    {"_budget", "_retry", "_observe", "_public"},
    {"_s3"},
    {"_claims"},
    # The completion engine, in its own order (shared records, then scheduling, then sources).
    {"_engine._records", "_engine.__init__"},
    {"_engine._strategy"},
    {"_engine._scheduler"},
    {"_engine._polling", "_engine._listing", "_engine._notifications", "_engine._client_queue"},
    {"_engine._discovery"},
    {"_engine._engine"},
    {"_handle"},
    {"_map"},
    {"_client"},
    {"_batch", "_default", "fastapi"},
    {"_s3batch"},
    # The emulator uses the library's rules and errors only (it imports nothing of the client).
    {
        "emulator._sigv4",
        "emulator._models",
        "emulator._notifications",
        "emulator._s3",
        "emulator._shapes",
    },
    {"emulator._config", "emulator._proxy"},
    {"emulator._endpoint"},
    {"emulator._metrics", "emulator._control"},
    {"emulator._scaling"},
    {"emulator._app"},
    {"emulator._local"},
    {"emulator._serve", "emulator._sdk"},
    {"emulator.__init__"},
    {"emulator.pytest_plugin"},
    {"_demo"},
    {"_cli"},
    {"__init__", "__main__"},
]


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def resolve(importer: str, node: ast.ImportFrom) -> list[str]:
    """The package modules that ``node`` (in module ``importer``) imports."""
    if node.level == 0:
        if not (node.module or "").startswith("sagemaker_async"):
            return []
        base = (node.module or "").split(".")[1:]
    else:
        parts = importer.split(".")
        package = parts[:-1]  # a module's package (an __init__'s too: its folder)
        base = package[: len(package) - (node.level - 1)] + (node.module or "").split(".")
        base = [p for p in base if p]
    found = []
    for alias in node.names:
        for candidate in (".".join([*base, alias.name]), ".".join(base)):
            for name in (candidate, f"{candidate}.__init__"):
                if (PACKAGE / (name.replace(".", "/") + ".py")).exists():
                    found.append(name)
                    break
            else:
                continue
            break
    return found


def imports(path: Path) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of a file, and whether it is for type checkers only.

    Type checkers only: under ``if TYPE_CHECKING:`` (its ``else:`` runs).
    """

    def visit(nodes: Iterable[ast.AST], typing_only: bool) -> Iterator[tuple[Any, bool]]:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node, typing_only
            elif isinstance(node, ast.If) and ast.unparse(node.test) in TYPE_CHECKING_TESTS:
                yield from visit(node.body, True)
                yield from visit(node.orelse, typing_only)
            else:
                yield from visit(ast.iter_child_nodes(node), typing_only)

    yield from visit([ast.parse(path.read_text())], False)


TYPE_CHECKING_TESTS = {"TYPE_CHECKING", "typing.TYPE_CHECKING"}


def absolute(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import statement names absolutely (``from .x import y`` names none)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    return [node.module] if node.level == 0 and node.module else []


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        targets = edges.setdefault(importer, set())
        for node, _ in imports(path):
            if isinstance(node, ast.ImportFrom):
                targets.update(t for t in resolve(importer, node) if t != importer)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("sagemaker_async."):
                        targets.add(alias.name.split(".", 1)[1])
    return edges


def rank(module: str) -> int:
    for i, layer in enumerate(LAYERS):
        if module in layer:
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it to one")


def test_every_module_has_a_layer() -> None:
    for module in graph():
        rank(module)


def test_imports_only_run_down() -> None:
    upward = [
        f"{importer} -> {target}"
        for importer, targets in graph().items()
        for target in sorted(targets)
        if rank(target) >= rank(importer) and not target.endswith("__init__")
    ]
    assert not upward, "imports that do not run down a layer:\n" + "\n".join(upward)


def test_the_import_graph_has_no_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_the_checker_sees_a_type_checking_import() -> None:
    """The rules can fail: _errors' TYPE_CHECKING import of _result is seen."""
    assert "_result" in graph()["_errors"]
    typing_only = {
        name for node, only in imports(PACKAGE / "_client.py") if only for name in absolute(node)
    }
    assert "types_aiobotocore_s3" in typing_only and "aiobotocore.client" not in typing_only
