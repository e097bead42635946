"""No import cycle in the package, the job or the benchmarks: each module sits above the ones it imports.

A static check over the source, so it sees every import a module can make: at the top, inside a
function (the lazy imports that keep DAG parsing light) and under ``TYPE_CHECKING``. A lazy import
breaks no cycle, it only hides it until the day someone moves the import to the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("airflow_spark_triton", "spark_jobs", "benchmarks")


def modules_under(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``packages`` (a package is its ``__init__``)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    """The modules of ``modules`` that one import statement of module ``name`` loads."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the module's package, up level - 1
            package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            package = package[: len(package) - node.level + 1]
            base = ".".join([*package, base] if base else package)
        # ``from pkg import mod`` loads pkg.mod; ``from mod import name`` loads mod.
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    found = set()
    for target in targets:
        while target and target not in modules:  # an attribute path: the module that defines it
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[name] = set().union(
            *(
                imported(name, path, node, modules)
                for node in ast.walk(tree)
                if isinstance(node, ast.Import | ast.ImportFrom)
            )
        )
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def path_through(graph: dict[str, set[str]], component: list[str]) -> str:
    """One cycle of ``component`` as ``a -> b -> a``, for the failure message."""
    members, start = set(component), component[0]
    trail, node = [start], start
    while True:
        node = sorted(graph[node] & members)[0]
        if node in trail:
            return " -> ".join([*trail[trail.index(node) :], node])
        trail.append(node)


def test_no_module_imports_its_way_back_to_itself():
    modules = modules_under(REPO, PACKAGES)
    assert {"airflow_spark_triton.backends.local.backend", "spark_jobs.contract", "benchmarks.bench"} <= set(
        modules
    )
    graph = import_graph(modules)
    found = [path_through(graph, component) for component in cycles(graph)]
    assert not found, "import cycles:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (  # a lazy import in a function closes the cycle all the same
            {
                "pkg/__init__.py": "",
                "pkg/a.py": "from pkg.b import x\n",
                "pkg/b.py": "def f():\n    import pkg.a\n",
            },
            [["pkg.a", "pkg.b"]],
        ),
        (  # relative, and a package importing its own module that imports the package back
            {"pkg/__init__.py": "from .a import x\n", "pkg/a.py": "from pkg import y\n"},
            [["pkg", "pkg.a"]],
        ),
        (  # ``from pkg import mod`` is an import of pkg.mod, not of pkg
            {"pkg/__init__.py": "", "pkg/a.py": "from pkg import b\n", "pkg/b.py": "x = 1\n"},
            [],
        ),
    ],
)
def test_the_check_finds_a_cycle_where_there_is_one(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cycles(import_graph(modules_under(tmp_path, ("pkg",)))) == expected
