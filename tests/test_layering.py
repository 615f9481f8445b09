"""The package's floors: every module imports alone, and no import runs back up a floor.

Run as a script to print the import circles and upward imports of a checkout:
``python tests/test_layering.py [PACKAGE_DIR]``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tinygrad_cnn"

#: Floors, bottom up (STYLE.md). A module may import its own floor and the floors below.
FLOORS: dict[str, int] = {
    "workspace": 0, "parallel": 0, "tracked": 0, "io": 0, "picklesafe": 0,
    "autograd": 1, "backprop": 1,
    "ops": 2,
    "functional": 3, "functional_core": 3, "functional_tensor": 3, "functional_nn": 3,
    "tensor": 4,
    "nn": 5, "optim": 5, "transforms": 5, "layers": 5,
    "models": 6,
    "data": 7, "datasets": 7, "train": 7, "monitor": 7,
    "viz": 8, "audit": 8, "anomaly": 8, "testing": 8, "strategies": 8, "book": 8,
    "bookbridge": 8, "bookdiag": 8, "bookreport": 8,
    "plots": 8, "explore": 8,
    "cli": 9, "cli_common": 9, "cli_train": 9, "cli_plot": 9, "cli_check": 9,
    "__main__": 9, "__init__": 9,
}  # fmt: skip
CORE = {"autograd", "backprop", "tensor", "ops", "functional", "functional_core",
        "functional_tensor", "functional_nn", "nn", "layers", "optim", "workspace", "parallel",
        "tracked"}  # fmt: skip
TOOLS = {"viz", "audit", "anomaly", "testing", "cli", "train", "data", "monitor", "plots"}
#: Upward imports allowed, each inside one function: (module, function, imported module).
ALLOWED_UP = {
    ("autograd", "apply", "tensor"),  # the one tensor <-> ops loop every anchor has
    ("functional", None, "tensor"),
    ("functional_core", None, "tensor"),
    ("backprop", "_tensor_type", "tensor"),
    ("tensor", "plot", "viz"),  # lazy one-line delegations
    ("tensor", "_repr_svg_", "viz"),
    ("tensor", "_repr_html_", "explore"),
    ("nn", "plot", "viz"),
    ("nn", "__getattr__", "models"),  # ``nn.SimpleConvNet`` still resolves
}


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    return ".".join(rel.parts)


def top(name: str) -> str:
    """The floor key of a dotted module name inside the package ("ops.conv" -> "ops"); the
    ``functional_*`` files are one public module, ``functional``, split by family."""
    key = name.split(".")[0]
    return "functional" if key.startswith("functional_") else key


def imports(root: Path) -> list[tuple[str, str, str | None]]:
    """(importing module, imported module, enclosing function or None) for every import of a
    package module, ``TYPE_CHECKING`` blocks excluded."""
    found = []
    for path in sorted(root.rglob("*.py")):
        mod = module_name(path, root)
        package = mod.rpartition(".")[0]  # "ops.conv" -> "ops", "tensor" -> ""
        tree = ast.parse(path.read_text())
        found.extend(_walk(tree, mod, package, None))
    return found


def _walk(node: ast.AST, mod: str, package: str, func: str | None):
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            continue
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _walk(child, mod, package, func or child.name)
            continue
        if isinstance(child, ast.ImportFrom) and child.level > 0:
            base = package.split(".") if package else []
            base = base[: len(base) - (child.level - 1)]
            target = ".".join([*base, *(child.module.split(".") if child.module else [])])
            if child.module is None or not target:
                for alias in child.names:
                    yield mod, ".".join([*base, alias.name]), func
            else:
                yield mod, target, func
        elif isinstance(child, ast.Import | ast.ImportFrom):
            name = child.module if isinstance(child, ast.ImportFrom) else child.names[0].name
            if name and name.startswith("tinygrad_cnn."):
                yield mod, name.removeprefix("tinygrad_cnn."), func
        yield from _walk(child, mod, package, func)


def circles(edges: list[tuple[str, str, str | None]]) -> list[set[str]]:
    """Strongly connected groups (size > 1) of the module-level import graph, by floor key."""
    graph: dict[str, set[str]] = {}
    for a, b, func in edges:
        if func is None and top(a) != top(b):
            graph.setdefault(top(a), set()).add(top(b))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(v: str) -> None:  # Tarjan; the graph is a few dozen nodes
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in list(graph):
        if v not in index:
            visit(v)
    return groups


def upward(edges: list[tuple[str, str, str | None]]) -> list[tuple[str, str, str | None]]:
    """Imports from a module to a higher floor (unknown modules count as tools)."""
    return [
        (a, b, f)
        for a, b, f in edges
        if FLOORS.get(top(b), 8) > FLOORS.get(top(a), 8) and top(a) != "__init__"
    ]


def test_every_module_of_the_package_has_a_floor():
    names = {top(module_name(p, PACKAGE)) for p in PACKAGE.rglob("*.py")}
    assert names <= set(FLOORS), sorted(names - set(FLOORS))


def test_only_the_tensor_functional_circle():
    assert circles(imports(PACKAGE)) == [{"tensor", "functional"}]


def test_no_import_runs_up_a_floor_except_the_lazy_delegations():
    up = {(top(a), f, top(b)) for a, b, f in upward(imports(PACKAGE))}
    assert up <= ALLOWED_UP, sorted(up - ALLOWED_UP)


def test_no_core_module_imports_a_tool():
    bad = [(a, b, f) for a, b, f in imports(PACKAGE) if top(a) in CORE and top(b) in TOOLS]
    lazy = {(top(a), f, top(b)) for a, b, f in bad}
    assert lazy <= ALLOWED_UP, sorted(lazy - ALLOWED_UP)


MODULES = sorted(
    "tinygrad_cnn." + module_name(p, PACKAGE).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
    if p.name != "__main__.py"
)


def test_every_module_imports_first_in_a_fresh_interpreter():
    """One interpreter per module, importing only that module."""
    failures = {}
    for name in MODULES:
        result = subprocess.run(
            [sys.executable, "-c", f"import {name.replace('.__init__', '')}"],
            capture_output=True, text=True, timeout=60, cwd=PACKAGE.parent,
        )  # fmt: skip
        if result.returncode != 0:
            failures[name] = result.stderr.strip().splitlines()[-1]
    assert not failures, failures


@pytest.mark.parametrize("name", ["tinygrad_cnn.models", "tinygrad_cnn.nn"])
def test_simpleconvnet_imports_from_models_and_nn_first(name):
    code = f"from {name} import SimpleConvNet; print(SimpleConvNet.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=PACKAGE.parent)  # fmt: skip
    assert out.stdout.strip() == "tinygrad_cnn.models", out.stderr


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE
    edges = imports(root)
    found = circles(edges)
    print(f"import circles: {len(found)}")
    for group in found:
        print("  " + " <-> ".join(sorted(group)))
    up = upward(edges)
    print(f"imports that run up a floor: {len(up)}")
    for a, b, f in up:
        print(f"  {a} -> {b}" + (f" (inside {f})" if f else ""))
