"""Step time of SimpleConvNet training with the monitor off and on (every 50, every 1).

Four configurations train side by side on the bundled mini MNIST (batch 100, Adam lr 1e-3,
He init, float32): ``bare`` (zero_grad/loss/backward/step written out, no Trainer: the
step before the monitor existed), ``off`` (``Trainer.train_step`` without a monitor),
``every 50`` and ``every 1``. The machine is shared, so they are interleaved: each round runs a
block of ``--block`` steps of every configuration, in an order rotated from round to round.
Blocks start at multiples of the block size, so ``every 50`` records exactly one step per block
of 50. Prints, per configuration, the median and mean ms/step over all its steps (the mean
includes the recorded steps' cost, spread over the interval) and the median of the recorded
steps alone. Figures, not a test.

    python benchmarks/monitor_overhead.py                 # 8 rounds x 50 steps
    python benchmarks/monitor_overhead.py --rounds 12 --block 50
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tinygrad_cnn import threads  # noqa: E402
from tinygrad_cnn.data import load_mnist_mini  # noqa: E402
from tinygrad_cnn.models import SimpleConvNet  # noqa: E402
from tinygrad_cnn.train import Trainer  # noqa: E402

BATCH = 100


def make(x, t, monitor):
    net = SimpleConvNet(seed=0, weight_init_std="he")
    return Trainer(net, x, t, x[:BATCH], t[:BATCH], verbose=False, seed=0, monitor=monitor)


def bare_step(trainer: Trainer, x: np.ndarray, t: np.ndarray) -> float:
    """The training step with nothing around it."""
    trainer.optimizer.zero_grad()
    loss = trainer.network.loss(x, t)
    loss.backward()
    trainer.optimizer.step()
    return float(loss.data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--block", type=int, default=50, help="steps per block (default 50)")
    args = parser.parse_args()

    (x, t), _ = load_mnist_mini()
    n_batches = len(x) // BATCH
    configs = {
        "bare": make(x, t, None),
        "off": make(x, t, None),
        "every 50": make(x, t, 50),
        "every 1": make(x, t, 1),
    }
    times: dict[str, list[float]] = {name: [] for name in configs}
    recorded: dict[str, list[float]] = {name: [] for name in configs}
    names = list(configs)
    with threads():
        for r in range(args.rounds + 1):  # round 0 warms up the allocator and is not counted
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                trainer = configs[name]
                step = bare_step if name == "bare" else Trainer.train_step
                for _ in range(args.block):
                    s = trainer.optimizer.step_count
                    i = s % n_batches
                    xb, tb = x[i * BATCH : (i + 1) * BATCH], t[i * BATCH : (i + 1) * BATCH]
                    due = trainer.monitor is not None and trainer.monitor.due(s)
                    start = time.perf_counter()
                    step(trainer, xb, tb)
                    seconds = time.perf_counter() - start
                    if r > 0:
                        times[name].append(seconds)
                        if due:
                            recorded[name].append(seconds)
            print(f"round {r}/{args.rounds} done", file=sys.stderr, flush=True)

    base = np.median(times["off"])
    print(f"SimpleConvNet, mini MNIST, batch {BATCH}, Adam; {args.rounds} rounds x {args.block}")
    print(f"{'config':>9} {'median ms':>10} {'mean ms':>8} {'vs off':>7} {'recorded step ms':>17}")
    for name in names:
        ms = np.asarray(times[name]) * 1e3
        rec = recorded[name]
        rec_text = f"{np.median(rec) * 1e3:.2f} (n={len(rec)})" if rec else "-"
        print(
            f"{name:>9} {np.median(ms):10.2f} {ms.mean():8.2f} "
            f"{np.median(ms) / (base * 1e3):7.3f} {rec_text:>17}"
        )
    for name in ("every 50", "every 1"):
        n = len(configs[name].monitor.records)
        print(f"{name}: {n} records")


if __name__ == "__main__":
    main()
