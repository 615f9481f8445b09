"""The README's table of ops is the output of ``scripts/op_table.py``, so it cannot drift."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- op-table:start -->", "<!-- op-table:end -->"


def test_readme_op_table_is_the_generated_one():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "op_table.py")],
                         capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    readme = (ROOT / "README.md").read_text()
    assert readme.count(START) == 1 and readme.count(END) == 1
    table = readme.split(START)[1].split(END)[0].strip("\n")
    assert table == out.stdout.strip("\n"), (
        "README.md's op table is stale: run `python scripts/op_table.py --write`"
    )


def test_the_table_lists_every_registered_op_once():
    from tinygrad_cnn import Function

    readme = (ROOT / "README.md").read_text()
    table = readme.split(START)[1].split(END)[0]
    rows = [r for r in table.splitlines() if r.startswith("| `")]
    ops = [r.split("`")[1] for r in rows]
    builtin = {n for n, c in Function.registry.items() if c.__module__.startswith("tinygrad_cnn.")}
    assert sorted(ops) == sorted(builtin)
    ops_at, next_at = (
        readme.index("\n## Ops\n"),
        readme.index("\n## Seeing and debugging the graph"),
    )
    assert ops_at < readme.index(START) < readme.index(END) < next_at
    assert "\n## " not in readme[ops_at + 1 : next_at]  # the section just before it
