"""The shape of the code: serving never imports training, and no import cycles.

Imports are read from the source (every ``import`` statement, at the top, inside
functions or under ``TYPE_CHECKING``), so a cycle hidden in a function-level
import is found too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("models", "index", "service", "training")
SERVING = ("models", "index", "service")
# The CLI's train / eval / ensemble / bench bodies: the one place serving code reaches
# training, inside the functions that run those commands.
TRAINING_GATEWAY = "service.commands.learning"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def project_modules() -> dict[str, Path]:
    return {
        module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }


def imported_names(module: str, tree: ast.AST) -> Iterator[tuple[str, ast.stmt]]:
    """The module each import statement imports: ``from a import b`` is a.b if that is a
    module, else a. (A parent package's ``__init__`` runs first, but that is not an edge.)"""
    modules = project_modules()
    is_package = modules[module].name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield (submodule if submodule in modules else base), node


@cache
def import_graph() -> dict[str, dict[str, ast.stmt]]:
    """module -> {project module it imports: one statement that does}."""
    modules = project_modules()
    graph: dict[str, dict[str, ast.stmt]] = {}
    for module, path in modules.items():
        edges: dict[str, ast.stmt] = {}
        for name, node in imported_names(module, ast.parse(path.read_text(encoding="utf-8"))):
            if name in modules and name != module:
                edges.setdefault(name, node)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, dict[str, ast.stmt]]) -> list[str] | None:
    """One import cycle (a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_graph_sees_the_packages() -> None:
    graph = import_graph()
    assert {"models.registry", "index.snapshot", "service.app", "training.train"} <= set(graph)
    assert "models.encoders.base" in graph["models.registry"]
    assert "training.tower_tuning" in graph["training.train_bundle"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    stmt = ast.Pass()
    graph = {"a": {"b": stmt}, "b": {"c": stmt}, "c": {"a": stmt}, "d": {}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": stmt}, "b": {}}) is None


def test_no_import_cycle_among_project_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_serving_code_does_not_import_training() -> None:
    offending = [
        f"{module} imports {target} (line {node.lineno})"
        for module, edges in import_graph().items()
        if module.split(".")[0] in SERVING
        for target, node in edges.items()
        if target.split(".")[0] == "training" and module != TRAINING_GATEWAY
    ]
    assert offending == []


def test_the_cli_loads_training_only_inside_its_command_functions() -> None:
    path = project_modules()[TRAINING_GATEWAY]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = [
        node
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("training")
    ]
    assert top_level == []


def imported_after(code: str) -> list[str]:
    """The project modules a fresh interpreter holds after running ``code``."""
    probe = code + "\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [name for name in out.splitlines() if name.split(".")[0] in PACKAGES]


def test_importing_the_app_imports_no_training() -> None:
    modules = imported_after("import service.app")
    assert "service.app" in modules
    assert [m for m in modules if m.split(".")[0] == "training"] == []


def test_mmsearch_serve_imports_no_training() -> None:
    # Everything `mmsearch serve` does, up to handing the app to uvicorn.
    serve = (
        "import uvicorn\n"
        "uvicorn.run = lambda app, **options: print(type(app).__name__)\n"
        "from service.cli import main\n"
        "assert main(['serve']) == 0\n"
    )
    modules = imported_after(serve)
    assert {"service.cli", "service.app", "service.state"} <= set(modules)
    assert [m for m in modules if m.split(".")[0] == "training"] == []
