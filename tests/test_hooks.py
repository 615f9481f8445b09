"""The public hooks: tensor gradient hooks, retain_grad, module forward hooks, op hooks."""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_cnn.functional as F
from tinygrad_cnn import Tensor, grad, on_op_backward, on_op_created
from tinygrad_cnn.models import SimpleConvNet
from tinygrad_cnn.nn import Linear, ReLU, Sequential


def leaf(*values: float) -> Tensor:
    return Tensor(np.array(values, dtype=np.float64), requires_grad=True)


# ----------------------------------------------------------------------------- Tensor.register_hook
def test_tensor_hook_sees_the_total_gradient_and_may_replace_it():
    x = leaf(1.0, 2.0)
    y = x * 3.0
    seen = []
    y.register_hook(lambda g: seen.append(g.copy()))
    y.register_hook(lambda g: g * 10)  # replaces what flows on to x
    (y * y).sum().backward()  # dy = 2y = [6, 12]
    np.testing.assert_array_equal(seen[0], [6.0, 12.0])
    np.testing.assert_array_equal(x.grad, [180.0, 360.0])  # 3 * 10 * dy


def test_tensor_hook_on_a_leaf_runs_before_accumulation_and_in_order():
    x = leaf(1.0, -1.0)
    order = []
    x.register_hook(lambda g: order.append("first") or g + 1)
    x.register_hook(lambda g: order.append(("second", g.tolist())))
    (x * 2.0).sum().backward()
    assert order == ["first", ("second", [3.0, 3.0])]
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])


def test_tensor_hook_of_a_shared_tensor_runs_once_with_the_summed_gradient():
    x = leaf(2.0)
    h = x * 1.0
    calls = []
    h.register_hook(lambda g: calls.append(float(g[0])))
    (h * 3.0 + h * 4.0).sum().backward()
    assert calls == [7.0]


def test_hook_handle_removes_and_works_as_a_context_manager():
    x = leaf(1.0)
    calls = []
    handle = x.register_hook(lambda g: calls.append(1))
    (x * 2.0).sum().backward()
    handle.remove()
    handle.remove()  # twice is harmless
    (x * 2.0).sum().backward()
    with x.register_hook(lambda g: calls.append(2)):
        (x * 2.0).sum().backward()
    (x * 2.0).sum().backward()
    assert calls == [1, 2]


def test_tensor_hooks_also_run_under_grad_without_touching_dot_grad():
    x = leaf(1.0, 2.0)
    y = x * x
    y.register_hook(lambda g: g * 0.5)
    (gx,) = grad(y.sum(), x)
    np.testing.assert_array_equal(gx, [1.0, 2.0])
    assert x.grad is None


def test_a_hook_returning_the_wrong_shape_is_named():
    x = leaf(1.0, 2.0)
    y = x * 2.0
    y.register_hook(lambda g: np.ones(3))
    with pytest.raises(RuntimeError, match=r"hook returned a gradient of shape \(3,\).*\(2,\)"):
        y.sum().backward()


def test_an_exception_in_a_hook_propagates_and_leaves_no_state_behind():
    x = leaf(1.0)

    def boom(g):
        raise KeyError("in the hook")

    handle = x.register_hook(boom)
    with pytest.raises(KeyError, match="in the hook"):
        (x * 2.0).sum().backward()
    handle.remove()
    (x * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0])
    from tinygrad_cnn import is_grad_enabled

    assert is_grad_enabled()  # backward's internal no_grad was restored


def test_register_hook_refuses_a_tensor_without_grad_and_non_callables():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(2)).register_hook(lambda g: g)
    with pytest.raises(TypeError, match="must be callable"):
        leaf(1.0).register_hook("not a function")


# ----------------------------------------------------------------------------- retain_grad
def test_retain_grad_keeps_an_intermediate_gradient_and_accumulates():
    x = leaf(1.0, 2.0)
    y = x * 3.0
    y.retain_grad()
    z = (y * y).sum()
    z.backward(retain_graph=True)
    np.testing.assert_array_equal(y.grad, [6.0, 12.0])
    z.backward()
    np.testing.assert_array_equal(y.grad, [12.0, 24.0])
    w = x * 2.0
    w.sum().backward()
    assert w.grad is None  # not retained: intermediates keep nothing


def test_retain_grad_on_a_leaf_is_a_no_op_and_refuses_no_grad_tensors():
    x = leaf(1.0)
    x.retain_grad()
    (x * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0])
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(1)).retain_grad()


# ----------------------------------------------------------------------------- module forward hooks
def test_forward_hook_sees_module_inputs_and_output_and_may_replace_it():
    net = Sequential(Linear(3, 2, rng=0, dtype=np.float64), ReLU())
    x = np.ones((4, 3))
    seen = []
    h1 = net[0].register_forward_hook(lambda m, xs, y: seen.append((m, xs[0].shape, y.shape)))
    h2 = net[1].register_forward_hook(lambda m, xs, y: y * 0.0)
    out = net(x)
    assert seen == [(net[0], (4, 3), (4, 2))]
    np.testing.assert_array_equal(out.numpy(), np.zeros((4, 2)))
    h1.remove()
    h2.remove()
    assert net(x).numpy().any() and len(seen) == 1


def test_forward_hooks_collect_every_activation_of_simpleconvnet():
    net = SimpleConvNet(seed=0)
    acts = {}
    handles = [
        m.register_forward_hook(lambda m, xs, y, name=name: acts.__setitem__(name, y.shape))
        for name, m in net.named_modules()
        if name
    ]
    net.predict(np.zeros((2, 1, 28, 28), np.float32))
    for h in handles:
        h.remove()
    assert acts == {
        "conv1": (2, 30, 24, 24), "relu1": (2, 30, 24, 24), "pool1": (2, 30, 12, 12),
        "flatten": (2, 4320), "fc1": (2, 100), "relu2": (2, 100), "fc2": (2, 10),
    }  # fmt: skip


def test_forward_hook_exception_propagates_and_refuses_non_callables():
    lin = Linear(2, 2, rng=0)

    def boom(m, xs, y):
        raise ValueError("hook failed")

    with lin.register_forward_hook(boom), pytest.raises(ValueError, match="hook failed"):
        lin(np.ones((1, 2), np.float32))
    lin(np.ones((1, 2), np.float32))  # removed on exit
    with pytest.raises(TypeError, match="must be callable"):
        lin.register_forward_hook(3)


# ----------------------------------------------------------------------------- op hooks
def test_on_op_created_sees_every_op_recorded_or_not():
    seen = []
    x = leaf(1.0, 2.0)
    with on_op_created(lambda fn, xs, y: seen.append((fn.name, len(xs), y.op is not None))):
        F.relu(x * 2.0)
        F.exp(Tensor(np.ones(2)))
    assert seen == [("Mul", 2, True), ("ReLU", 1, True), ("Exp", 1, False)]
    F.relu(x)
    assert len(seen) == 3


def test_on_op_backward_sees_grads_in_engine_order_and_may_replace_them():
    x = leaf(1.0, 2.0)
    y = (x * 3.0).exp().sum()
    order = []

    def record(fn, gy, gxs):
        order.append(fn.name)
        if fn.name == "Mul":
            return (gxs[0] * 0.0, gxs[1])

    with on_op_backward(record) as handle:
        y.backward()
    assert order == ["Sum", "Exp", "Mul"] and isinstance(handle.remove, object)
    np.testing.assert_array_equal(x.grad, [0.0, 0.0])


def test_op_hook_exceptions_propagate_and_handles_remove():
    def boom(fn, xs, y):
        raise RuntimeError("creation hook failed")

    handle = on_op_created(boom)
    with pytest.raises(RuntimeError, match="creation hook failed"):
        leaf(1.0) * 2.0
    handle.remove()
    leaf(1.0) * 2.0
    with pytest.raises(TypeError, match="must be callable"):
        on_op_backward(None)


# ----------------------------------------------------------------------------- module scope
def test_a_shape_error_inside_a_module_names_the_layer():
    net = SimpleConvNet(seed=0)
    with pytest.raises(ValueError, match=r"\(in module SimpleConvNet\.conv1\)"):
        net.predict(np.zeros((2, 3, 28, 28), np.float32))  # 3 channels for a 1-channel conv
    with pytest.raises(ValueError) as info:
        F.conv2d(Tensor(np.zeros((1, 3, 8, 8))), Tensor(np.zeros((2, 1, 3, 3))))
    assert "in module" not in str(info.value)  # outside any module: the op's own message


def test_a_forward_hook_returning_an_array_is_refused_not_a_silent_cut():
    lin = Linear(2, 2, rng=0)
    with (
        lin.register_forward_hook(lambda m, xs, y: y.numpy() * 1),
        pytest.raises(TypeError, match="forward hook returned a ndarray; return a Tensor"),
    ):
        lin(np.ones((1, 2), np.float32))


def test_a_user_op_named_like_a_builtin_does_not_replace_it():
    from tinygrad_cnn import Function
    from tinygrad_cnn.ops.elementwise import ReLU as BuiltinReLU

    class ReLU(Function):  # noqa: N801  (a learner's own)
        def forward(self, x):
            return np.maximum(x, 0)

        def backward(self, gy):
            return gy

    assert Function.registry["ReLU"] is BuiltinReLU
    assert Function.registry[f"{__name__}.{ReLU.__qualname__}"] is ReLU
