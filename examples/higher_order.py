"""Differentiate gradients again: Newton's method, tanh's higher derivatives, double backprop.

    python examples/higher_order.py [OUT_DIR_OR_FILE]

1. Newton's method on y = x**4 - 2 x**2 from x = 2: the second derivative comes from
   ``grad(..., create_graph=True)``, and x reaches the minimum at 1.
2. The n-th derivative of tanh for n = 1..6, each checked against central differences of the
   (n-1)-th, each graph drawn to ``tanh_d{n}.svg`` (when Graphviz's ``dot`` is installed).
3. One training step of a small CNN on ``loss + lam * ||d loss / d x||^2`` (an input-gradient
   penalty, "double backprop"), whose parameter gradients pass ``gradcheck``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

import tinygrad_cnn.functional as F
from tinygrad_cnn import Tensor, grad
from tinygrad_cnn.models import SimpleConvNet
from tinygrad_cnn.optim import SGD
from tinygrad_cnn.testing import gradcheck
from tinygrad_cnn.viz import graph_tensors, render_graph


def newton() -> float:
    x = Tensor([2.0], requires_grad=True)
    for i in range(1, 11):
        y = x**4 - 2 * x**2
        (dy,) = grad(y, x, create_graph=True)  # 4x^3 - 4x, a Tensor with a graph
        (d2y,) = grad(dy, x)  # 12x^2 - 4
        x = Tensor(x.numpy() - dy.numpy() / d2y, requires_grad=True)
        print(f"  iteration {i}: x = {x.item():.10f}")
        if abs(x.item() - 1.0) < 1e-7:
            return x.item()
    raise AssertionError(f"Newton's method did not converge: x = {x.item()}")


def tanh_derivatives(out: Path) -> None:
    x0 = np.linspace(-2.0, 2.0, 7)
    draw = shutil.which("dot") is not None

    def derivative(n: int, at: np.ndarray) -> Tensor:
        x = Tensor(at, requires_grad=True)
        y = F.tanh(x)
        for _ in range(n):
            (y,) = grad(y.sum(), x, create_graph=True)
        return y

    eps = 1e-5
    for n in range(1, 7):
        dn = derivative(n, x0)
        fd = (derivative(n - 1, x0 + eps).numpy() - derivative(n - 1, x0 - eps).numpy()) / (2 * eps)
        err = float(np.max(np.abs(dn.numpy() - fd)) / max(1.0, float(np.max(np.abs(fd)))))
        assert err < 1e-6, f"d{n} tanh disagrees with finite differences: {err:.1e}"
        nodes = len(graph_tensors(dn))
        where = ""
        if draw:
            where = f", drawn to {render_graph(dn, out / f'tanh_d{n}.svg').name}"
        print(f"  d^{n}/dx^{n} tanh: {nodes} graph nodes, finite-difference error {err:.1e}{where}")


def double_backprop(lam: float = 0.1) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((4, 1, 10, 10))
    t = rng.integers(0, 3, 4)
    cfg = {"filter_num": 3, "filter_size": 3, "pad": 0, "stride": 1}
    net = SimpleConvNet((1, 10, 10), cfg, hidden_size=8, output_size=3, seed=0,
                        weight_init_std="he", dtype=np.float64)  # fmt: skip

    def penalized_loss(w1, b1, w2, b2, w3, b3) -> Tensor:
        """The net's loss plus lam * ||d loss / d x||^2, as a function of its parameters."""
        xt = Tensor(x, requires_grad=True)
        h = F.max_pool2d(F.relu(F.conv2d(xt, w1, b1)), 2)
        h = F.relu(F.linear(F.flatten(h), w2, b2))
        loss = F.softmax_cross_entropy(F.linear(h, w3, b3), t)
        (gx,) = grad(loss, xt, create_graph=True)  # a Tensor with a graph
        return loss + lam * (gx * gx).sum()

    params = net.parameters()  # conv1.weight, conv1.bias, fc1.weight, fc1.bias, fc2.weight, ...
    assert gradcheck(penalized_loss, *params)  # the second-order gradients are right
    opt = SGD(params, lr=0.1)
    opt.zero_grad()
    before = penalized_loss(*params)
    before.backward()
    opt.step()
    after = penalized_loss(*params).item()
    print(f"  penalized loss {before.item():.6f} -> {after:.6f} after one SGD step; "
          "its parameter gradients pass gradcheck")  # fmt: skip
    assert after < before.item()


def main(argv: list[str]) -> None:
    target = Path(argv[1]) if len(argv) > 1 else Path("higher_order")
    out = target.parent if target.suffix else target
    out.mkdir(parents=True, exist_ok=True)
    print("1. Newton's method on y = x^4 - 2x^2 from x = 2")
    newton()
    print("2. higher derivatives of tanh")
    tanh_derivatives(out)
    print("3. double backprop: an input-gradient penalty")
    double_backprop()


if __name__ == "__main__":
    main(sys.argv)
