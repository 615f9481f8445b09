"""Apply one mutmut mutant to a private copy of the checkout, to check that a test kills it.

Triage of a surviving mutant ends with a test that fails on the mutant; mutmut re-runs a named
mutant only with its whole covering test set, which can take minutes, so check a new test on a
copy instead:

    python scripts/apply_mutant.py --reset /tmp/mc            # a fresh copy of package and tests
    python scripts/apply_mutant.py NAME /tmp/mc               # the mutant NAME, into that copy
    cd /tmp/mc && python -m pytest -q -p no:cacheprovider tests/test_x.py -k new_test  # must fail

Run it from the checkout that holds ``mutants/`` (it reads ``python -m mutmut show NAME``).
``mutmut show`` prints a method without its class indentation; both the plain and the
one-level-indented text are tried. A text that is not found exactly once is refused (apply it
by hand).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def reset(dest: Path) -> None:
    """Make ``dest`` a fresh copy of the package, the tests and the files tests read."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in ("tinygrad_cnn", "tests"):
        shutil.rmtree(dest / part, ignore_errors=True)
        shutil.copytree(REPO / part, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "README.ja.md"):
        shutil.copy(REPO / name, dest / name)


def _sides(diff: str) -> tuple[str, str, str]:
    """(file, old text, new text) of ``mutmut show``'s one-hunk diff."""
    lines = diff.splitlines()
    path = next(line[4:].strip() for line in lines if line.startswith("--- "))
    body = lines[next(i for i, line in enumerate(lines) if line.startswith("@@")) + 1 :]
    old = "\n".join(line[1:] for line in body if line[:1] in (" ", "-"))
    new = "\n".join(line[1:] for line in body if line[:1] in (" ", "+"))
    return path, old, new


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line if line.strip() else "" for line in text.split("\n"))


def apply(name: str, dest: Path) -> Path:
    """Write mutant ``name`` into its file under ``dest``; the file's path."""
    shown = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", name],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    path, old, new = _sides(shown)
    target = dest / path
    text = target.read_text()
    for prefix in ("", "    "):
        o, n = _indent(old, prefix), _indent(new, prefix)
        if text.count(o) == 1:
            target.write_text(text.replace(o, n))
            return target
    found = [text.count(_indent(old, p)) for p in ("", "    ")]
    sys.exit(f"{name}: its function's text occurs {found} times in {path}; apply it by hand")


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    if sys.argv[1] == "--reset":
        reset(Path(sys.argv[2]))
    else:
        print(f"applied {sys.argv[1]} to {apply(sys.argv[1], Path(sys.argv[2]))}")


if __name__ == "__main__":
    main()
