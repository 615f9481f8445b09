"""Second derivatives against PyTorch's ``autograd.grad(create_graph=True)`` on fixed cases.

The vectors in ``tests/data/second_order.npz`` were made by ``tests/data/make_second_order.py``
(PyTorch, float64); this file recomputes each quantity with tinygrad_cnn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tinygrad_cnn.functional as F
from tinygrad_cnn import Tensor, grad
from tinygrad_cnn.transforms import hessian

REF = np.load(Path(__file__).resolve().parent / "data" / "second_order.npz")
TOL = {"rtol": 1e-10, "atol": 1e-12}


def case(name: str) -> dict[str, np.ndarray]:
    prefix = name + "."
    return {k[len(prefix) :]: REF[k] for k in REF.files if k.startswith(prefix)}


def leaf(a: np.ndarray) -> Tensor:
    return Tensor(np.array(a, dtype=np.float64), requires_grad=True)


def test_nth_derivatives_of_tanh():
    ref = case("tanh_derivatives")
    x = leaf(ref["x"])
    y = F.tanh(x).sum()
    for n in range(1, 7):
        (g,) = grad(y, x, create_graph=True)
        np.testing.assert_allclose(g.numpy(), ref[f"d{n}"], rtol=1e-9, atol=1e-10)
        y = g.sum()


@pytest.fixture
def cnn():
    ref = case("small_cnn")
    params = {k: leaf(ref[k]) for k in ("w", "b", "w2", "b2")}
    x = leaf(ref["x"])

    def loss_fn():
        h = F.max_pool2d(F.relu(F.conv2d(x, params["w"], params["b"])), 2)  # (2, 3, 2, 2)
        return F.softmax_cross_entropy(F.flatten(h) @ params["w2"] + params["b2"], ref["labels"])

    return ref, x, params, loss_fn


def test_hessian_vector_product_of_a_small_cnn(cnn):
    ref, _, params, loss_fn = cnn
    (gw,) = grad(loss_fn(), params["w"], create_graph=True)
    (hv,) = grad((gw * ref["v"]).sum(), params["w"])
    np.testing.assert_allclose(hv, ref["hvp_w"], **TOL)


def test_input_gradient_penalty_of_a_small_cnn(cnn):
    ref, x, params, loss_fn = cnn
    loss = loss_fn()
    (gx,) = grad(loss, x, create_graph=True)
    penalty = loss + 0.5 * (gx * gx).sum()
    np.testing.assert_allclose(penalty.item(), ref["penalty"], **TOL)
    grads = grad(penalty, [params[k] for k in ("w", "b", "w2", "b2")])
    for name, g in zip(("w", "b", "w2", "b2"), grads, strict=True):
        np.testing.assert_allclose(g, ref[f"penalty_grad_{name}"], **TOL, err_msg=name)


def test_hessian_of_an_elementwise_mix():
    ref = case("elementwise_mix")
    b = Tensor(ref["b"])

    def f(a):
        s = F.sigmoid(a) * F.log(b) / (a * a + 1)
        return s.sum() + (F.exp(-a) ** 3).mean() + F.tanh(a).max() - (a * b).mean()

    np.testing.assert_allclose(hessian(f, ref["a"]), ref["hessian"], **TOL)


def test_gradient_of_a_gradient_norm_through_pooling_and_softmax():
    ref = case("pool_softmax")
    x = leaf(ref["x"])
    y = F.flatten(F.avg_pool2d(x, 2))  # (1, 8)
    f = (F.softmax(y, axis=1) * F.log_softmax(y * 2.0, axis=1)).sum()
    (g,) = grad(f, x, create_graph=True)
    np.testing.assert_allclose(g.numpy(), ref["grad"], **TOL)
    (gg,) = grad((g * g).sum(), x)
    np.testing.assert_allclose(gg, ref["grad_of_grad_norm"], **TOL)
