"""The book's recipe on the full MNIST: prints per-epoch accuracy, final accuracy and wall time.

    python benchmarks/train_mnist.py [--data-dir ../shared/data/mnist] [--epochs 20] [--seeds 0 1 2]

SimpleConvNet (30 filters 5x5, hidden 100), Adam lr 0.001, batch 100, weight std 0.01,
evaluation on the full training and test sets after every epoch. The book reports about
98.9 % test accuracy; the target here is >= 98.8 %.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from tinygrad_cnn.data import load_mnist
from tinygrad_cnn.io import atomic_write
from tinygrad_cnn.nn import SimpleConvNet
from tinygrad_cnn.train import Trainer

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def run(args: argparse.Namespace, seed: int, data: tuple) -> dict:
    """One run of the recipe from ``seed`` (weights and batch order); prints its figures."""
    (x_train, t_train), (x_test, t_test) = data
    net = SimpleConvNet(weight_init_std=0.01, seed=seed)
    trainer = Trainer(
        net, x_train, t_train, x_test, t_test, epochs=args.epochs, mini_batch_size=100,
        optimizer="Adam", optimizer_param={"lr": 0.001}, seed=seed, progress=False,
    )  # fmt: skip
    t0 = time.perf_counter()
    history = trainer.train()
    wall = time.perf_counter() - t0
    final = history["test_acc"][-1]
    print(f"\nseed {seed}: training + per-epoch evaluation {wall:.1f} s ({wall / 60:.2f} min) "
          f"for {args.epochs} epochs")  # fmt: skip
    print("test accuracy per epoch:", " ".join(f"{a:.4f}" for a in history["test_acc"]))
    print(f"final test accuracy {final:.4f} ({'meets' if final >= 0.988 else 'MISSES'} >= 0.988)")
    return {"seed": seed, "wall_s": wall, **history}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one run per seed")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    t0 = time.perf_counter()
    data = load_mnist(root=args.data_dir, download=False)
    print(f"data loaded in {time.perf_counter() - t0:.1f} s; numpy {np.__version__}, "
          f"python {platform.python_version()}, {platform.machine()}")  # fmt: skip
    runs = [run(args, seed, data) for seed in args.seeds]
    if len(runs) > 1:
        finals = np.array([r["test_acc"][-1] for r in runs])
        print(f"\nfinal test accuracy over seeds {args.seeds}: mean {finals.mean():.4f}, "
              f"min {finals.min():.4f}, max {finals.max():.4f}")  # fmt: skip
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(runs, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
