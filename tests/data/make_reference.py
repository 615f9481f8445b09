"""Regenerate the PyTorch reference vectors in ``tests/data/reference`` (needs ``torch``).

Run ``python tests/data/make_reference.py [--out DIR] [--seed 0]`` on a machine with PyTorch.
Never imported by the tests or the package: they only read the files it writes. Every case is
computed by PyTorch's float64 autograd from random inputs, for the geometries the ops must
handle (strides above, at and below the kernel, padding per side, odd sizes). Writes
``NAME.json`` (one dict of parameters per case, ``"case": "000"`` ...) and ``NAME.npz`` (arrays
keyed ``NNN_field``) for each op, each file through a temporary file and a rename, so an
interrupted run leaves the old files whole. ``tests/data/README.md`` lists the fields.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as tf

Case = tuple[dict, dict[str, np.ndarray]]  # (json parameters, arrays by field name)


def _grad_inputs(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]


def _out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def _geometry(rng: np.random.Generator, max_pad: Callable[[int], int]) -> tuple:
    """Kernel, stride, padding and an input size (H, W) with at least one output per axis."""
    k = tuple(int(v) for v in rng.integers(1, 5, 2))
    s = tuple(int(v) for v in rng.integers(1, 5, 2))
    p = tuple(int(rng.integers(0, max_pad(kk) + 1)) for kk in k)
    hw = tuple(int(rng.integers(max(1, kk - 2 * pp), 11)) for kk, pp in zip(k, p, strict=True))
    return k, s, p, hw


def conv2d_cases(rng: np.random.Generator, count: int = 80) -> list[Case]:
    cases = []
    for _ in range(count):
        k, s, p, (H, W) = _geometry(rng, lambda kk: 2)
        N, C, OC = (int(v) for v in rng.integers(1, 4, 3))
        x, w = rng.standard_normal((N, C, H, W)), rng.standard_normal((OC, C, *k))
        b = rng.standard_normal(OC)
        gy = rng.standard_normal(
            (N, OC, _out_size(H, k[0], s[0], p[0]), _out_size(W, k[1], s[1], p[1]))
        )
        tx, tw, tb = _grad_inputs(x, w, b)
        y = tf.conv2d(tx, tw, tb, stride=s, padding=p)
        y.backward(torch.tensor(gy))
        arrays = {"x": x, "w": w, "b": b, "gy": gy, "y": y.detach().numpy()}
        arrays.update(gx=tx.grad.numpy(), gw=tw.grad.numpy(), gb=tb.grad.numpy())
        cases.append(({"stride": list(s), "padding": list(p)}, arrays))
    return cases


def pool_cases(rng: np.random.Generator, name: str, count: int) -> list[Case]:
    """Max-pool inputs are distinct values spaced 0.01 (no ties); avg-pool uses no padding."""
    cases = []
    for _ in range(count):
        max_pad = (lambda kk: kk // 2) if name == "max_pool2d" else (lambda kk: 0)
        k, s, p, (H, W) = _geometry(rng, max_pad)
        N, C = (int(v) for v in rng.integers(1, 4, 2))
        if name == "max_pool2d":
            x = (rng.permutation(N * C * H * W) - N * C * H * W // 2).reshape(N, C, H, W) * 0.01
        else:
            x = rng.standard_normal((N, C, H, W))
        gy = rng.standard_normal(
            (N, C, _out_size(H, k[0], s[0], p[0]), _out_size(W, k[1], s[1], p[1]))
        )
        (tx,) = _grad_inputs(x)
        pool = tf.max_pool2d if name == "max_pool2d" else tf.avg_pool2d
        y = pool(tx, k, s, p)
        y.backward(torch.tensor(gy))
        arrays = {"x": x, "gy": gy, "y": y.detach().numpy(), "gx": tx.grad.numpy()}
        cases.append(({"kernel_size": list(k), "stride": list(s), "padding": list(p)}, arrays))
    return cases


def softmax_cross_entropy_cases(rng: np.random.Generator, count: int = 40) -> list[Case]:
    """Logits scaled by 1 ... 1e4, so saturated rows (huge logits) are covered."""
    cases = []
    for i in range(count):
        scale = (1.0, 20.0, 1000.0, 10000.0)[i % 4]
        N, K = int(rng.integers(1, 9)), int(rng.integers(2, 12))
        z, t, g = rng.standard_normal((N, K)) * scale, rng.integers(0, K, N), rng.standard_normal()
        (tz,) = _grad_inputs(z)
        loss = tf.cross_entropy(tz, torch.tensor(t))  # mean over N
        loss.backward(torch.tensor(g, dtype=torch.float64))
        log_softmax = tf.log_softmax(torch.tensor(z), dim=1).numpy()
        arrays = {"z": z, "t": t, "g": np.asarray(g), "loss": loss.detach().numpy()}
        arrays.update(gz=tz.grad.numpy(), log_softmax=log_softmax)
        cases.append(({"scale": scale}, arrays))
    return cases


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(out: Path, name: str, cases: list[Case]) -> None:
    params, arrays = [], {}
    for i, (p, a) in enumerate(cases):
        params.append({"case": f"{i:03d}", **p})
        arrays.update({f"{i:03d}_{field}": v for field, v in a.items()})

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez_compressed(f, **arrays)

    _write_atomically(out / f"{name}.npz", write_npz)
    _write_atomically(out / f"{name}.json", lambda tmp: tmp.write_text(json.dumps(params)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "reference")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    save(args.out, "conv2d", conv2d_cases(rng))
    save(args.out, "max_pool2d", pool_cases(rng, "max_pool2d", 80))
    save(args.out, "avg_pool2d", pool_cases(rng, "avg_pool2d", 40))
    save(args.out, "softmax_cross_entropy", softmax_cross_entropy_cases(rng))
    print(f"wrote the reference vectors to {args.out} (PyTorch {torch.__version__})")


if __name__ == "__main__":
    main()
