"""The examples run, and the README's commands are the ones CI runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path, tmp_path):
    # Like conftest.py: this checkout's package, whether it is installed or not.
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "TINYGRAD_CNN_QUICK_EXAMPLES": "1",  # examples that train take their short path
    }
    result = subprocess.run(
        [sys.executable, str(path), str(tmp_path / "out.svg")],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


def test_readme_quickstart_has_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Quickstart.*?```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert block, "README needs a Quickstart section with a code block"
    commands = [c for c in block.group(1).splitlines() if c.strip() and not c.startswith("#")]
    assert len(commands) == 2, commands
    assert "tinygrad_cnn train" in commands[0]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


README_BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


@pytest.mark.parametrize("index", range(len(README_BLOCKS)))
def test_readme_python_blocks_run(index, tmp_path, monkeypatch):
    """Every Python block of the README runs as written."""
    code = README_BLOCKS[index]
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README.md block {index}", "exec"), {"__name__": "readme"})
