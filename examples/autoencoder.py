"""A small convolutional autoencoder on the bundled MNIST subset: conv -> conv_transpose, MSE.

    python examples/autoencoder.py [OUT_DIR_OR_FILE] [--steps N]

The encoder halves the image twice with strided convolutions, (1, 28, 28) -> (16, 14, 14) ->
(4, 7, 7), a code of 196 numbers for 784 pixels; the decoder doubles it back with transposed
convolutions (``output_padding=1`` makes 7 -> 14 -> 28 exact) and a sigmoid. Trained with
Adam on the mean squared error, it prints the reconstruction loss on the 2,000 test images
before and after, checks that it fell below ``TARGET``, and writes ``reconstructions.png``
(originals above, reconstructions below) next to OUT (or into the folder OUT).

On this project's 2-core machine (shared) the default 800 steps take about 13 s and end near
0.004 (< ``TARGET`` = 0.01); ``--steps N`` or ``TINYGRAD_CNN_QUICK_EXAMPLES=1`` (100 steps,
checking only that the loss falls) make it shorter.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

import tinygrad_cnn.functional as F
from tinygrad_cnn import nn, no_grad
from tinygrad_cnn.data import load_mnist_mini
from tinygrad_cnn.optim import Adam

#: Test-set MSE per pixel the default run must end below (predicting the mean image gives ~0.067).
TARGET = 0.01
STEPS = 800
#: Set (to anything but "" or "0") for a short run that only checks that the loss falls.
QUICK = os.environ.get("TINYGRAD_CNN_QUICK_EXAMPLES", "") not in ("", "0")


def autoencoder(seed: int = 0) -> nn.Module:
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1, rng=rng),  # (N, 16, 14, 14)
        nn.LeakyReLU(0.1),
        nn.Conv2d(16, 4, 3, stride=2, padding=1, rng=rng),  # (N, 4, 7, 7): the code, 196 numbers
        nn.LeakyReLU(0.1),
        nn.ConvTranspose2d(4, 16, 3, stride=2, padding=1, output_padding=1, rng=rng),  # 14x14
        nn.LeakyReLU(0.1),
        nn.ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1, rng=rng),  # 28x28
        nn.Sigmoid(),
    )


def test_loss(net: nn.Module, x: np.ndarray) -> float:
    with no_grad():
        return float(np.mean([F.mse_loss(net(x[i : i + 500]), x[i : i + 500]).item()
                              for i in range(0, len(x), 500)]))  # fmt: skip


def save_figure(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(x), figsize=(len(x), 2.2))
    for i in range(len(x)):
        for row, img in enumerate((x[i, 0], y[i, 0])):
            axes[row, i].imshow(img, cmap="gray", vmin=0, vmax=1)
            axes[row, i].axis("off")
    fig.suptitle("test images (top) and their reconstructions (bottom)")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="autoencoder", type=Path)
    parser.add_argument("--steps", type=int, default=100 if QUICK else STEPS,
                        help=f"Adam steps of batch 64 (default {STEPS})")  # fmt: skip
    args = parser.parse_args()
    out_dir = args.out.parent if args.out.suffix else args.out
    out_dir.mkdir(parents=True, exist_ok=True)

    (x_train, _), (x_test, _) = load_mnist_mini()
    net = autoencoder()
    opt = Adam(net.parameters(), lr=2e-3)
    rng = np.random.default_rng(0)
    before = test_loss(net, x_test)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = x_train[rng.integers(0, len(x_train), 64)]
        opt.zero_grad()
        loss = F.mse_loss(net(batch), batch)
        loss.backward()
        opt.step()
        if step % 250 == 0:
            print(f"step {step}: batch loss {loss.item():.4f}")
    seconds = time.perf_counter() - start
    after = test_loss(net, x_test)
    print(f"test reconstruction MSE: {before:.4f} -> {after:.4f} after {args.steps} steps "
          f"({seconds:.1f} s)")  # fmt: skip
    with no_grad():
        y = net(x_test[:10]).numpy()
    save_figure(out_dir / "reconstructions.png", x_test[:10], y)
    print(f"wrote {out_dir / 'reconstructions.png'}")
    if args.steps >= STEPS and not after < TARGET:
        raise SystemExit(f"the test loss {after:.4f} did not fall below {TARGET}")
    if not after < before:
        raise SystemExit(f"the test loss did not fall: {before:.4f} -> {after:.4f}")


if __name__ == "__main__":
    main()
