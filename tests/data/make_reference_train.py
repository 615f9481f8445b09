"""Regenerate ``tests/data/reference_train.{json,npz}``: five Adam training steps of the book's
DeepConvNet in PyTorch float64, with fixed dropout masks (needs ``torch``; the tests only read
the files).

    python tests/data/make_reference_train.py [--seed 0] [--out DIR]

The network starts from ``DeepConvNet(seed=0, dtype=np.float64)``'s weights and is rebuilt from
``torch.nn`` layers. Dropout uses the stored keep-masks, inverted as ours and PyTorch's are
(``x * keep / (1 - p)``), so ``fc2`` is trained in our parameterisation (``k**2 * W8``, see the
Notes of ``DeepConvNet``), not the book's: Adam's steps depend on the scale of a parameter.

Arrays are stored under our ``state_dict`` names and layouts (``conv1.weight`` (OC, C, KH, KW),
``fc1.weight`` (IN, OUT): the transpose of ``torch.nn.Linear``'s (OUT, IN)), all float64:

- ``init.<name>``: the starting parameters; ``grad1.<name>``: their gradients at step 1;
  ``final.<name>``: the parameters after the last step.
- ``x`` (S, N, 1, 28, 28): each step's images, bundled-MNIST training digits scaled to
  [0, 1] in float64, ``index`` (S, N) their rows in that set, ``t`` (S, N) int64 labels;
  ``keep1`` (S, N, 50) and ``keep2`` (S, N, 10) bool: the units dropout1 and dropout2 keep.
- ``logits`` (S, N, 10) and ``loss`` (S,): each step's forward pass, before its update.

The json records the settings and the PyTorch version. Both files are written through a
temporary file and a rename; the same seed gives byte-identical files (fixed zip dates).
"""

from __future__ import annotations

import argparse
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tinygrad_cnn.data import load_mnist_mini
from tinygrad_cnn.io import atomic_write
from tinygrad_cnn.models import DeepConvNet

OUT = Path(__file__).resolve().parent
STEPS, BATCH, P, LR = 5, 8, 0.5, 1e-3
#: (padding, pool after it) of the six 3x3 convolutions, as in the book's ch. 8
CONVS = ((1, False), (1, True), (1, False), (2, True), (1, False), (1, True))


class TorchDeepConvNet(torch.nn.Module):
    """DeepConvNet in ``torch.nn`` layers; dropout multiplies by given keep-masks."""

    def __init__(self, init: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.convs = torch.nn.ModuleList()
        for i, (pad, _) in enumerate(CONVS, start=1):
            w = init[f"conv{i}.weight"]  # (OC, C, KH, KW), as PyTorch's
            conv = torch.nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], padding=pad)
            self.convs.append(_copy_into(conv, w, init[f"conv{i}.bias"]))
        w1, w2 = init["fc1.weight"], init["fc2.weight"]  # ours (IN, OUT) -> PyTorch (OUT, IN)
        self.fc1 = _copy_into(torch.nn.Linear(*w1.shape), w1.T, init["fc1.bias"])
        self.fc2 = _copy_into(torch.nn.Linear(*w2.shape), w2.T, init["fc2.bias"])

    def forward(self, x: torch.Tensor, keep1: torch.Tensor, keep2: torch.Tensor) -> torch.Tensor:
        """Logits (N, 10) of images (N, 1, 28, 28) with dropout by ``keep1`` (N, 50) and
        ``keep2`` (N, 10)."""
        for conv, (_, pool) in zip(self.convs, CONVS, strict=True):
            x = torch.relu(conv(x))
            x = torch.nn.functional.max_pool2d(x, 2, 2) if pool else x
        h = torch.relu(self.fc1(x.flatten(1)))  # (N, 64, 4, 4) -> (N, 1024) -> (N, 50)
        h = h * keep1 / (1 - P)
        return self.fc2(h) * keep2 / (1 - P)

    def ours(self) -> dict[str, np.ndarray]:
        """Each parameter by our names, in our layouts."""
        return _by_our_names(self, lambda p: p.detach())

    def grads(self) -> dict[str, np.ndarray]:
        """Each parameter's ``.grad`` by our names, in our layouts."""
        return _by_our_names(self, lambda p: p.grad)


def _copy_into(layer: torch.nn.Module, w: np.ndarray, b: np.ndarray) -> torch.nn.Module:
    layer = layer.double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
        layer.bias.copy_(torch.from_numpy(b))
    return layer


def _by_our_names(net: TorchDeepConvNet, get: Callable) -> dict[str, np.ndarray]:
    layers = [(f"conv{i}", c) for i, c in enumerate(net.convs, start=1)]
    layers += [("fc1", net.fc1), ("fc2", net.fc2)]
    out = {}
    for name, layer in layers:
        w = get(layer.weight).numpy().copy()
        out[f"{name}.weight"] = w.T.copy() if name.startswith("fc") else w
        out[f"{name}.bias"] = get(layer.bias).numpy().copy()
    return out


def make(seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """All arrays of the npz and the json's settings."""
    init = DeepConvNet(seed=0, dtype=np.float64).state_dict()
    rng = np.random.default_rng(seed)
    (pixels, labels), _ = load_mnist_mini(normalize=False)  # (10000, 1, 28, 28) float32 0..255
    index = rng.choice(len(pixels), STEPS * BATCH, replace=False)
    x = (pixels[index].astype(np.float64) / 255).reshape(STEPS, BATCH, 1, 28, 28)
    t = labels[index].astype(np.int64).reshape(STEPS, BATCH)
    keep1 = rng.random((STEPS, BATCH, 50)) >= P  # the rule of our Dropout: keep where >= p
    keep2 = rng.random((STEPS, BATCH, 10)) >= P

    net = TorchDeepConvNet(init)
    opt = torch.optim.Adam(net.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8)
    logits, losses, grad1 = [], [], {}
    for s in range(STEPS):
        opt.zero_grad()
        masks = (torch.from_numpy(k[s].astype(np.float64)) for k in (keep1, keep2))
        y = net(torch.from_numpy(x[s]), *masks)
        loss = torch.nn.functional.cross_entropy(y, torch.from_numpy(t[s]))
        loss.backward()
        grad1 = net.grads() if s == 0 else grad1
        logits.append(y.detach().numpy().copy())
        losses.append(loss.item())
        opt.step()

    arrays = {f"init.{k}": v for k, v in init.items()}
    arrays |= {f"grad1.{k}": v for k, v in grad1.items()}
    arrays |= {f"final.{k}": v for k, v in net.ours().items()}
    arrays |= {"x": x, "t": t, "index": index.reshape(STEPS, BATCH), "keep1": keep1, "keep2": keep2}
    arrays |= {"logits": np.stack(logits), "loss": np.array(losses)}
    meta = {
        "seed": seed, "init": "DeepConvNet(seed=0, dtype=np.float64)", "steps": STEPS,
        "batch": BATCH, "dropout_ratio": P, "optimizer": "torch.optim.Adam",
        "lr": LR, "betas": [0.9, 0.999], "eps": 1e-8, "loss": "cross_entropy, mean",
        "images": "tinygrad_cnn bundled mini MNIST, training split, pixels / 255",
        "torch": torch.__version__, "numpy": np.__version__,
    }  # fmt: skip
    return arrays, meta


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` with a fixed date on every member, so equal arrays give equal
    bytes; written atomically."""
    with atomic_write(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, a in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(a), allow_pickle=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="images and dropout masks")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one reduction order, and leave the cores to others
    torch.use_deterministic_algorithms(True)
    arrays, meta = make(args.seed)
    write_npz(args.out / "reference_train.npz", arrays)
    with atomic_write(args.out / "reference_train.json", "w") as f:
        f.write(json.dumps(meta, indent=1) + "\n")
    losses = ", ".join(f"{v:.6f}" for v in arrays["loss"])
    print(f"wrote {args.out}/reference_train.* (PyTorch {torch.__version__}): losses {losses}")


if __name__ == "__main__":
    main()
