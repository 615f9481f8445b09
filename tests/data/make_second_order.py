"""Regenerate ``tests/data/second_order.npz``: second derivatives computed by PyTorch autograd.

    pip install ".[bench]"   # PyTorch, used here only; the package and its tests never import it
    python tests/data/make_second_order.py

Each case stores its float64 inputs and what ``torch.autograd.grad(..., create_graph=True)``
gives for them; ``tests/test_second_order_reference.py`` recomputes the same quantities with
tinygrad_cnn and compares. The file is replaced atomically.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as TF

OUT = Path(__file__).resolve().parent / "second_order.npz"
torch.set_default_dtype(torch.float64)


def t(a: np.ndarray, grad: bool = True) -> torch.Tensor:
    return torch.tensor(a, requires_grad=grad)


def tanh_derivatives(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """d^n/dx^n of sum(tanh(x)), n = 1..6, elementwise."""
    x = rng.uniform(-1.5, 1.5, 5)
    xt = t(x)
    out = {"x": x}
    y = torch.tanh(xt).sum()
    for n in range(1, 7):
        (g,) = torch.autograd.grad(y, xt, create_graph=True)
        out[f"d{n}"] = g.detach().numpy()
        y = g.sum()
    return out


def small_cnn(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A conv -> relu -> max-pool -> linear -> softmax-CE net: a Hessian-vector product with
    respect to the conv weight and the gradients of an input-gradient penalty."""
    x = rng.permutation(2 * 1 * 6 * 6).reshape(2, 1, 6, 6) / 72.0  # distinct: no pooling ties
    w = rng.standard_normal((3, 1, 3, 3)) * 0.5
    b = rng.standard_normal(3) * 0.1
    w2 = rng.standard_normal((12, 4)) * 0.5
    b2 = rng.standard_normal(4) * 0.1
    labels = np.array([1, 3])
    v = rng.standard_normal(w.shape)
    xt, wt, bt, w2t, b2t = t(x), t(w), t(b), t(w2), t(b2)

    def loss_fn():
        h = TF.max_pool2d(torch.relu(TF.conv2d(xt, wt, bt)), 2)  # (2, 3, 2, 2)
        return TF.cross_entropy(h.flatten(1) @ w2t + b2t, torch.tensor(labels))

    loss = loss_fn()
    (gw,) = torch.autograd.grad(loss, wt, create_graph=True)
    (hv,) = torch.autograd.grad((gw * torch.tensor(v)).sum(), wt)
    loss = loss_fn()
    (gx,) = torch.autograd.grad(loss, xt, create_graph=True)
    penalty = loss + 0.5 * (gx * gx).sum()
    grads = torch.autograd.grad(penalty, [wt, bt, w2t, b2t])
    out = {"x": x, "w": w, "b": b, "w2": w2, "b2": b2, "labels": labels, "v": v}
    out["hvp_w"] = hv.numpy()
    out["penalty"] = np.asarray(penalty.item())
    for name, g in zip(["w", "b", "w2", "b2"], grads, strict=True):
        out[f"penalty_grad_{name}"] = g.numpy()
    return out


def elementwise_mix(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The full Hessian of a scalar built from the elementwise ops and reductions."""
    a = rng.uniform(0.5, 1.5, 4)
    b = rng.uniform(0.5, 1.5, 4)
    at, bt = t(a), t(b)

    def f(a_):
        s = torch.sigmoid(a_) * torch.log(bt) / (a_ * a_ + 1)
        return s.sum() + (torch.exp(-a_) ** 3).mean() + torch.tanh(a_).max() - (a_ * bt).mean()

    hess = torch.autograd.functional.hessian(f, at)
    return {"a": a, "b": b, "hessian": hess.numpy()}


def pool_softmax(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """avg-pool -> softmax / log-softmax, gradient of a gradient norm with respect to x."""
    x = rng.standard_normal((1, 2, 4, 4))
    xt = t(x)
    y = TF.avg_pool2d(xt, 2).flatten(1)  # (1, 8)
    f = (torch.softmax(y, dim=1) * torch.log_softmax(y * 2.0, dim=1)).sum()
    (g,) = torch.autograd.grad(f, xt, create_graph=True)
    (gg,) = torch.autograd.grad((g * g).sum(), xt)
    return {"x": x, "grad": g.detach().numpy(), "grad_of_grad_norm": gg.numpy()}


def main() -> None:
    rng = np.random.default_rng(2026)
    arrays: dict[str, np.ndarray] = {}
    for case in (tanh_derivatives, small_cnn, elementwise_mix, pool_softmax):
        for key, value in case(rng).items():
            arrays[f"{case.__name__}.{key}"] = np.asarray(value)
    fd, tmp = tempfile.mkstemp(dir=OUT.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, **arrays)
    os.replace(tmp, OUT)
    print(f"wrote {OUT} ({len(arrays)} arrays, torch {torch.__version__})")


if __name__ == "__main__":
    main()
