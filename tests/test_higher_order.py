"""create_graph: gradients that carry a graph, the grad API, and ops without second order."""

from __future__ import annotations

import numpy as np
import pytest

from tinygrad_cnn import Function, Tensor, grad, on_op_backward
from tinygrad_cnn.testing import gradgradcheck


class HOCube(Function):
    """x**3 with a backward_graph built from HOThreeSquare (3 x**2)."""

    def forward(self, x):
        self.save(x=x)
        return x**3

    def backward(self, gy):
        return 3 * self.saved["x"] ** 2 * gy

    def backward_graph(self, gy):
        (x,) = self.parents
        return HOThreeSquare.apply(x) * gy


class HOThreeSquare(Function):
    def forward(self, x):
        self.save(x=x)
        return 3 * x**2

    def backward(self, gy):
        return 6 * self.saved["x"] * gy

    def backward_graph(self, gy):
        (x,) = self.parents
        return HOSix.apply(x) * gy


class HOSix(Function):
    """6x, first order only (no backward_graph)."""

    def forward(self, x):
        return 6 * x

    def backward(self, gy):
        return 6 * gy


class HOFirstOrderOnly(Function):
    def forward(self, x):
        self.save(x=x)
        return x**3

    def backward(self, gy):
        return 3 * self.saved["x"] ** 2 * gy


def leaf(*values: float) -> Tensor:
    return Tensor(np.array(values), requires_grad=True)


def test_grad_with_create_graph_differentiates_to_third_order():
    x = leaf(2.0, -1.0)
    (d1,) = grad(HOCube.apply(x).sum(), x, create_graph=True)
    np.testing.assert_allclose(d1.numpy(), [12.0, 3.0])  # 3x^2
    assert d1.requires_grad and d1.op is not None
    (d2,) = grad(d1.sum(), x, create_graph=True)
    np.testing.assert_allclose(d2.numpy(), [12.0, -6.0])  # 6x
    (d3,) = grad(d2.sum(), x)
    np.testing.assert_allclose(d3, [6.0, 6.0])
    assert isinstance(d3, np.ndarray) and x.grad is None


def test_an_op_without_backward_graph_works_once_and_names_itself_when_asked_twice():
    x = leaf(2.0)
    (d1,) = grad(HOFirstOrderOnly.apply(x).sum(), x, create_graph=True)
    np.testing.assert_allclose(d1.numpy(), [12.0])
    with pytest.raises(RuntimeError, match="HOFirstOrderOnly can be differentiated once but not "
                       "twice: it has no backward_graph"):  # fmt: skip
        grad(d1.sum(), x)


def test_backward_create_graph_puts_a_tensor_in_dot_grad():
    x = leaf(2.0)
    HOCube.apply(x).sum().backward(create_graph=True)
    assert isinstance(x.grad, Tensor) and x.grad.requires_grad
    np.testing.assert_allclose(x.grad.numpy(), [12.0])
    g = x.grad
    x.grad = None
    g.sum().backward()  # d(3x^2)/dx = 6x
    np.testing.assert_allclose(x.grad, [12.0])
    assert isinstance(x.grad, np.ndarray)


def test_create_graph_accumulates_onto_an_existing_grad():
    x = leaf(1.0)
    HOCube.apply(x).sum().backward()
    HOCube.apply(x).sum().backward(create_graph=True)
    assert isinstance(x.grad, Tensor)
    np.testing.assert_allclose(x.grad.numpy(), [6.0])


def test_create_graph_keeps_the_graph_by_default_and_hooks_see_tensors():
    x = leaf(2.0)
    y = HOCube.apply(x).sum()
    seen = []
    with on_op_backward(lambda fn, gy, gxs: seen.append(type(gy).__name__)):
        grad(y, x, create_graph=True)
    grad(y, x)  # retain_graph defaulted to True
    assert seen == ["Tensor", "Tensor"]
    with pytest.raises(RuntimeError, match="already freed"):
        grad(y, x)


def test_grad_outputs_may_carry_a_graph_for_the_double_vjp_trick():
    x = leaf(1.0, 2.0)
    y = HOCube.apply(x)
    u = Tensor(np.zeros(2), requires_grad=True)
    (g,) = grad(y, x, u, create_graph=True)  # J^T u, linear in u
    v = np.array([1.0, -1.0])
    (jv,) = grad(g, u, v)  # = J v = 3x^2 * v
    np.testing.assert_allclose(jv, [3.0, -12.0])


def test_grad_argument_errors_name_the_input():
    x = leaf(1.0)
    y = HOCube.apply(x)
    with pytest.raises(RuntimeError, match="input 0 .* does not require grad"):
        grad(y, Tensor(np.ones(1)))
    with pytest.raises(RuntimeError, match="input 1 .* was not used"):
        grad(y, [x, leaf(3.0)])
    assert grad(y, [x, leaf(3.0)], allow_unused=True)[1] is None
    with pytest.raises(ValueError, match="got 2 grad_outputs for 1 outputs"):
        grad(y, x, [np.ones(1), np.ones(1)])
    with pytest.raises(TypeError, match=r"inputs\[0\] must be a Tensor"):
        grad(y, [np.ones(1)])


def test_gradgradcheck_passes_a_right_op_and_catches_a_wrong_backward_graph():
    x = leaf(2.0, -1.0, 0.5)
    assert gradgradcheck(lambda t: HOCube.apply(t), x)

    class HOCubeOff(HOCube):
        def backward_graph(self, gy):
            (x,) = self.parents
            return HOThreeSquare.apply(x) * gy * 1.01  # disagrees with backward

    with pytest.raises(AssertionError, match="backward_graph disagrees with its backward at "
                       "first order"):  # fmt: skip
        gradgradcheck(lambda t: HOCubeOff.apply(t), x)

    class HOSquareWrong(HOThreeSquare):
        def backward(self, gy):
            return 5 * self.saved["x"] * gy  # the second derivative is wrong

    class HOCubeBadSecond(HOCube):
        def backward_graph(self, gy):
            (x,) = self.parents
            return HOSquareWrong.apply(x) * gy

    with pytest.raises(AssertionError, match="gradgradcheck: second derivative wrong"):
        gradgradcheck(lambda t: HOCubeBadSecond.apply(t), x)


def test_a_gradient_graph_is_drawn_with_module_clusters_and_audits_clean():
    import re

    from tinygrad_cnn.audit import audit_graph
    from tinygrad_cnn.models import SimpleConvNet
    from tinygrad_cnn.viz import draw_graph

    net = SimpleConvNet((1, 8, 8), {"filter_num": 2, "filter_size": 3}, 4, 3, seed=0)
    x = Tensor(np.random.default_rng(0).random((2, 1, 8, 8)), requires_grad=True)
    (gx,) = grad(net.loss(x, [0, 2]), x, create_graph=True)
    src = draw_graph(gx).source
    clusters = set(re.findall(r"cluster_([\w.]+)", src))
    assert {"SimpleConvNet.conv1", "SimpleConvNet.pool1", "SimpleConvNet.fc1"} <= clusters
    for op in ("Conv2dGradInput", "MaxPool2dScatter", "MatMul"):  # the backward, as ops
        assert op in src
    report = audit_graph((gx * gx).sum())
    assert report.ok and {"Conv2dGradInput", "MaxPool2dScatter"} <= {
        r.op.split()[0] for r in report.rows
    }


def test_a_plain_backward_after_a_create_graph_one_adds_to_the_values():
    x = leaf(1.0, 2.0)
    (x**3).sum().backward(create_graph=True)
    assert isinstance(x.grad, Tensor)
    x.grad.sum().backward()  # the usual double-backward idiom: 3x^2 + 6x
    np.testing.assert_allclose(x.grad, [9.0, 24.0])


def test_optimizers_step_on_a_tensor_grad():
    from tinygrad_cnn.nn import Linear
    from tinygrad_cnn.optim import Adam

    lin = Linear(2, 1, rng=0, dtype=np.float64)
    before = lin.weight.numpy().copy()
    (lin(np.ones((3, 2))) ** 2).mean().backward(create_graph=True)
    Adam(lin.parameters(), lr=0.1).step()
    assert not np.array_equal(lin.weight.numpy(), before)


def test_grad_on_a_freed_graph_says_so():
    x = leaf(1.0, 2.0)
    z = HOCube.apply(x)
    grad(z.sum(), x)
    with pytest.raises(RuntimeError, match="graph through HOCube was already freed"):
        grad((z * 2.0).sum(), x)
