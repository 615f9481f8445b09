"""Print the README's table of ops (Markdown), generated from the op registry and the source.

    python scripts/op_table.py            # print the table
    python scripts/op_table.py --write    # replace it in README.md, between the markers

One row per registered op: the ``functional`` wrappers that apply it, the ``Tensor`` methods
and operators that call those wrappers, and whether the op has a ``backward_graph`` (second
order). Then one row per wrapper made of other ops (a composition), with the ops it is made
of. Which wrapper applies which op, and which method calls which wrapper, is read from the
source of ``functional*.py`` and ``tensor.py`` (their syntax trees), so the table cannot
drift from the code; ``tests/test_op_table.py`` checks that the README holds this output.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tinygrad_cnn"
START, END = "<!-- op-table:start -->", "<!-- op-table:end -->"


def _functions(paths: list[Path]) -> dict[str, ast.FunctionDef | str]:
    """Module-level functions by name; an alias (``clamp = clip``) maps to its target's name."""
    found: dict[str, ast.FunctionDef | str] = {}
    for path in paths:
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                found[node.name] = node
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Name):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        found[target.id] = node.value.id
    return found


def _uses(fn: ast.FunctionDef, names: set[str]) -> tuple[set[str], set[str]]:
    """(ops applied directly, i.e. ``X.apply``; the functions of ``names`` it calls).

    Wrappers spell their arithmetic as calls (``sub(x, t)``, not ``x - t``) so it is seen.
    """
    ops, calls = set(), set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Attribute) and node.attr == "apply":
            value = node.value
            ops.add(value.attr if isinstance(value, ast.Attribute) else getattr(value, "id", "?"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in names:
                calls.add(node.func.id)
    return ops, calls


def _methods() -> dict[str, list[str]]:
    """functional name -> the Tensor methods/operators that call it."""
    tree = ast.parse((PACKAGE / "tensor.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Tensor")
    out: dict[str, list[str]] = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef):
            for sub in ast.walk(node):
                if (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute)
                        and getattr(sub.func.value, "id", None) == "F"):  # fmt: skip
                    out.setdefault(sub.func.attr, []).append(node.name)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Name):
            for fname, meths in list(out.items()):
                if node.value.id in meths:
                    out[fname] += [t.id for t in node.targets if isinstance(t, ast.Name)]
    return out


def table() -> str:
    sys.path.insert(0, str(ROOT))
    import tinygrad_cnn.functional as F
    from tinygrad_cnn import Function

    registry = {
        n: c for n, c in Function.registry.items() if c.__module__.startswith("tinygrad_cnn.")
    }

    def second(op: str) -> bool:
        return registry[op].backward_graph is not Function.backward_graph

    public = list(F.__all__)
    defs = _functions(sorted(PACKAGE.glob("functional*.py")))
    methods = _methods()
    direct: dict[str, set[str]] = {}
    calls: dict[str, set[str]] = {}
    for name in defs:
        target = defs.get(name)
        while isinstance(target, str):  # an alias: follow it
            target = defs.get(target)
        if isinstance(target, ast.FunctionDef):
            direct[name], calls[name] = _uses(target, set(defs))
        else:  # re-exported helpers (im2col, ...): plain functions, not ops
            direct[name], calls[name] = set(), set()
    for name in public:
        direct.setdefault(name, set())
        calls.setdefault(name, set())

    def closure(name: str, seen: set[str]) -> set[str]:
        """The ops a wrapper applies: its own, or else those of the functions it calls."""
        if direct[name]:
            return set(direct[name])
        return set().union(*(closure(c, seen | {c}) for c in calls[name] - seen))

    def cell(items: list[str]) -> str:
        return ", ".join(f"`{i}`" for i in items) if items else "—"

    def method_cell(names: list[str]) -> str:
        return cell(sorted({m for n in names for m in methods.get(n, [])}))

    rows = ["| op | functional | Tensor method | second order |", "|---|---|---|---|"]
    for op in sorted(registry):
        users = [n for n in public if op in direct[n]]
        rows.append(f"| `{op}` | {cell(users)} | {method_cell(users)} | "
                    f"{'yes' if second(op) else 'no'} |")  # fmt: skip
    composites = [n for n in public if not direct[n] and closure(n, {n})]
    for name in composites:
        ops = sorted(closure(name, {name}))
        made_of = "made of " + ", ".join(f"`{o}`" for o in ops)
        yes = all(second(o) for o in ops if o in registry)
        rows.append(f"| {made_of} | {cell([name])} | {method_cell([name])} | "
                    f"{'yes' if yes else 'no'} |")  # fmt: skip
    rest = [n for n in public if not direct[n] and not closure(n, {n})]
    note = f"\nNot ops (no gradient, or helpers): {cell(rest)}.\n" if rest else "\n"
    return "\n".join(rows) + "\n" + note


def replace_in(text: str, body: str) -> str:
    head, sep, rest = text.partition(START)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"op_table: README.md has no {START} ... {END} markers")
    return f"{head}{START}\n{body}{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update README.md in place")
    args = parser.parse_args()
    body = table()
    if not args.write:
        print(body, end="")
        return
    readme = ROOT / "README.md"
    new = replace_in(readme.read_text(), body)
    fd, tmp = tempfile.mkstemp(dir=ROOT, prefix=".README.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(new)
    os.chmod(tmp, 0o644)
    os.replace(tmp, readme)


if __name__ == "__main__":
    main()
