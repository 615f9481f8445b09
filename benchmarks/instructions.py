"""Instructions per SimpleConvNet training step, counted by valgrind (callgrind).

Wall-clock step times on a shared 2-core machine move by several percent from run to run;
instruction counts do not (the same binary, inputs and environment give the same count, what
else the machine is doing notwithstanding). This counts a one-thread step (batch 100, Adam)
of the package at each REPO given, so an engine change can be checked to the 0.1 % level:

    python benchmarks/instructions.py                       # this checkout
    python benchmarks/instructions.py /path/to/old/checkout . # before / after

Needs ``valgrind`` (Debian: ``apt-get install valgrind``). Figures, not a test.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()


def worker(repo: str, steps: int) -> None:
    sys.path.insert(0, repo)
    import numpy as np

    import tinygrad_cnn
    from tinygrad_cnn.nn import SimpleConvNet
    from tinygrad_cnn.optim import Adam

    rng = np.random.default_rng(0)
    x = rng.random((100, 1, 28, 28), dtype=np.float32)
    t = rng.integers(0, 10, 100)
    net = SimpleConvNet(seed=0)
    opt = Adam(net.parameters(), lr=1e-3)
    with tinygrad_cnn.threads(1):
        for _ in range(steps):
            opt.zero_grad()
            net.loss(x, t).backward()
            opt.step()


def count(repo: str, steps: int) -> int:
    """Instructions of a whole process that imports, sets up and runs ``steps`` steps."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out",
             os.path.realpath(sys.executable), str(HERE), "--worker", repo, "--steps", str(steps)],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
    match = re.search(r"Collected : (\d+)", out.stderr)
    if not match:
        raise RuntimeError(f"callgrind printed no count:\n{out.stderr[-2000:]}")
    return int(match.group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("repos", nargs="*", default=[str(HERE.parents[1])], help="checkouts")
    p.add_argument("--steps", type=int, default=10, help="steps counted (after 2 set-up steps)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.steps)
    first = None
    for repo in args.repos:
        # The difference of two runs leaves out imports and set-up: per-step instructions.
        per_step = (count(repo, 2 + args.steps) - count(repo, 2)) / args.steps
        first = first or per_step
        print(
            f"{repo}: {per_step / 1e6:8.2f} M instructions per step ({per_step:,.0f}; "
            f"{per_step / first:.5f}x)"
        )


if __name__ == "__main__":
    main()
