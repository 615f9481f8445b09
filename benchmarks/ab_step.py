"""Training-step time of two checkouts, A/B, in alternating processes.

On a shared machine the speed drifts by several percent from minute to minute; alternating the
two versions process by process (A B A B ...) and taking the ratio pair by pair keeps the
comparison fair. Each process times 300 SimpleConvNet steps (batch 100 drawn from the bundled
mini set, Adam) and reports its median. Each side runs the plain loop a user writes, or with
``--mode-a/--mode-b threads`` the loop inside ``tinygrad_cnn.threads()`` (how ``Trainer``
ran before the ops split their work by default):

    python benchmarks/ab_step.py OLD_CHECKOUT NEW_CHECKOUT [--pairs 16]
    python benchmarks/ab_step.py OLD NEW --mode-a threads   # old Trainer vs new plain loop

Figures, not a test.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


def worker(repo: str, steps: int, mode: str) -> None:
    import contextlib

    sys.path.insert(0, repo)
    import tinygrad_cnn
    from tinygrad_cnn.data import load_mnist
    from tinygrad_cnn.nn import SimpleConvNet
    from tinygrad_cnn.optim import Adam

    (x, t), _ = load_mnist(subset="mini")
    rng = np.random.default_rng(0)
    net = SimpleConvNet(seed=0)
    opt = Adam(net.parameters(), lr=1e-3)
    times = []
    with tinygrad_cnn.threads() if mode == "threads" else contextlib.nullcontext():
        for _ in range(steps + 30):
            idx = rng.integers(0, len(x), 100)
            start = time.perf_counter()
            opt.zero_grad()
            net.loss(x[idx], t[idx]).backward()
            opt.step()
            times.append(time.perf_counter() - start)
    print(f"{np.median(times[30:]) * 1e3:.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("repos", nargs="*", help="OLD and NEW checkouts")
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--mode-a", choices=["plain", "threads"], default="plain", help="OLD's loop")
    p.add_argument("--mode-b", choices=["plain", "threads"], default="plain", help="NEW's loop")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="plain", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.steps, args.mode)
    if len(args.repos) != 2:
        p.error("give two checkouts: OLD NEW")

    modes = {args.repos[0]: args.mode_a, args.repos[1]: args.mode_b}

    def run(repo: str) -> float:
        cmd = [sys.executable, str(HERE), "--worker", repo, "--steps", str(args.steps),
               "--mode", modes[repo]]  # fmt: skip
        return float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)

    old, new = [], []
    for i in range(args.pairs):
        first, second = (old, new) if i % 2 == 0 else (new, old)
        order = args.repos if i % 2 == 0 else args.repos[::-1]
        first.append(run(order[0]))
        second.append(run(order[1]))
    ratios = [n / o for n, o in zip(new, old, strict=True)]
    print(f"{args.pairs} process pairs, {args.steps} steps each, median ms per step:")
    print(f"  old {np.median(old):.3f} ms (min {min(old):.3f})   {args.repos[0]} ({args.mode_a})")
    print(f"  new {np.median(new):.3f} ms (min {min(new):.3f})   {args.repos[1]} ({args.mode_b})")
    print(f"  new/old: median of medians {np.median(new) / np.median(old):.4f}, "
          f"pairwise median {np.median(ratios):.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
