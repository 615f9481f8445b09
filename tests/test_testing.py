"""The public gradient-checking API, ``gradcheck`` and ``check_vjp``, tested against ops that are
right and ops that are deliberately wrong in the ways real backward passes go wrong.
"""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

import tinygrad_cnn.functional as F
from tinygrad_cnn import Function, Tensor
from tinygrad_cnn.testing import check_vjp, gradcheck, module_gradcheck, vjp_error


def leaf(*shape: int, seed: int = 100, dtype=np.float64, name: str | None = None) -> Tensor:
    data = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return Tensor(data, requires_grad=True, name=name)


# ----------------------------------------------------------------------------- custom ops
class MatMulOp(Function, register=False):
    """y = x @ w for x (N, K) and a square w (K, K). ``bug`` picks a transposed gradient."""

    bug: str | None = None
    last_gy: np.ndarray | None = None

    def forward(self, x, w):
        self.save(x=x, w=w)
        return x @ w

    def backward(self, gy):
        x, w = self.saved["x"], self.saved["w"]
        type(self).last_gy = gy.copy()
        gx = gy @ (w if self.bug == "gx" else w.T)  # right: gy @ w.T
        gw = gy.T @ x if self.bug == "gw" else x.T @ gy  # right: x.T @ gy
        return gx, gw


def matmul_op(bug: str | None):
    return lambda x, w: MatMulOp.apply(x, w, bug=bug)


class Triple(Function, register=False):
    """y = 3 x elementwise, with backward bugs that an all-ones upstream gradient hides."""

    bug: str

    def forward(self, x):
        self.shape = x.shape
        return 3 * x

    def backward(self, gy):
        if self.bug == "ignores_gy":
            return np.full(self.shape, 3.0)
        if self.bug == "mean_of_gy":
            return np.full(self.shape, 3.0 * gy.mean())
        return 3 * gy


class ScaledProduct(Function, register=False):
    """y = a * b, with a wrong (or missing) gradient for the second input only."""

    bug: str

    def forward(self, a, b):
        self.save(a=a, b=b)
        return a * b

    def backward(self, gy):
        a, b = self.saved["a"], self.saved["b"]
        if self.bug == "missing":
            return gy * b, None
        return gy * b, gy * a * 1.001  # 0.1% off


class InPlace(Function, register=False):
    """y = x + 1 computed by mutating x, in forward or in backward."""

    where: str

    def forward(self, x):
        if self.where == "forward":
            x += 1.0
            return x.copy()
        self.save(x=x)
        return x + 1.0

    def backward(self, gy):
        if self.where == "backward":
            self.saved["x"] *= 2.0
        return gy


class ToFloat32(Function, register=False):
    """Identity that silently casts to float32: hard-coded precision a float64 check must see."""

    def forward(self, x):
        return x.astype(np.float32)

    def backward(self, gy):
        return gy


# ----------------------------------------------------------------------------- gradcheck passes
def test_gradcheck_passes_on_a_correct_composition_and_returns_true():
    x, w, b = leaf(4, 3, seed=101), leaf(3, 5, seed=102), leaf(5, seed=103)
    result = gradcheck(lambda x, w, b: (F.linear(x, w, b).tanh() * x.sum()).exp(), x, w, b)
    assert result is True


@pytest.mark.parametrize("as_tensor", [True, False], ids=["tensor", "ndarray"])
def test_gradcheck_passes_with_non_differentiable_labels(as_tensor):
    z, w = leaf(6, 4, seed=101), leaf(4, 3, seed=102)
    labels = np.array([0, 2, 1, 1, 0, 2])
    t = Tensor(labels) if as_tensor else labels
    assert gradcheck(lambda z, w, t: F.softmax_cross_entropy(z @ w, t), z, w, t) is True


def test_gradcheck_passes_on_correct_custom_op():
    assert gradcheck(matmul_op(None), leaf(3, 4, seed=101), leaf(4, 4, seed=102)) is True


def test_gradcheck_default_tolerances_are_not_looser_than_pytorch():
    params = inspect.signature(gradcheck).parameters
    assert params["eps"].default <= 1e-6
    assert params["rtol"].default <= 1e-3 and params["atol"].default <= 1e-5


def test_gradcheck_leaves_the_callers_tensors_alone():
    x = leaf(3, 2, dtype=np.float32)
    before = x.data.copy()
    gradcheck(lambda t: (t * t).sum(axis=0), x)
    assert x.grad is None and x.dtype == np.float32 and x._ctx is None
    np.testing.assert_array_equal(x.data, before)


def test_gradcheck_runs_float32_inputs_in_float64():
    seen = []

    def fn(a, b):
        seen.append((a.dtype, b.dtype))
        return (a * b).sigmoid()

    x, y = leaf(3, 4, seed=101, dtype=np.float32), leaf(3, 4, seed=102, dtype=np.float32)
    assert gradcheck(fn, x, y)
    assert seen and all(d == (np.float64, np.float64) for d in seen)


def test_gradcheck_reports_a_function_that_drops_to_float32():
    with pytest.raises(AssertionError, match="float64"):
        gradcheck(lambda t: ToFloat32.apply(t), leaf(3))


def test_gradcheck_requires_a_differentiable_input():
    with pytest.raises(ValueError, match="requires_grad"):
        gradcheck(lambda t: t * 2.0, Tensor(np.ones(3)))


def test_gradcheck_requires_fn_to_return_a_tensor():
    with pytest.raises(TypeError, match="Tensor"):
        gradcheck(lambda t: t.data * 2.0, leaf(3))


# ----------------------------------------------------------------------------- gradcheck fails
_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def _parse_failure(message: str) -> tuple[int, tuple[int, ...], float, float]:
    """(input position, index, backward value, finite-difference value) from the message."""
    position = int(re.search(r"input (\d+)", message).group(1))
    index = tuple(int(i) for i in re.search(r"index \(([\d, ]*)\)", message).group(1).split(","))
    analytic = float(re.search(rf"backward gives (?:np\.float64\()?({_FLOAT})", message).group(1))
    numeric = float(
        re.search(rf"finite differences give (?:np\.float64\()?({_FLOAT})", message).group(1)
    )
    return position, index, analytic, numeric


def test_gradcheck_catches_transposed_weight_gradient_and_names_input_index_and_values():
    x, w = leaf(3, 4, seed=101, name="x"), leaf(4, 4, seed=102, name="weight")
    with pytest.raises(AssertionError) as info:
        gradcheck(matmul_op("gw"), x, w)
    message = str(info.value)
    assert "input 1" in message and "'weight'" in message and "(4, 4)" in message
    position, index, analytic, numeric = _parse_failure(message)
    assert position == 1 and len(index) == 2
    # Recompute both values from the upstream gradient the broken op was given.
    gy = MatMulOp.last_gy
    wrong, right = gy.T @ x.data, x.data.T @ gy
    np.testing.assert_allclose(analytic, wrong[index], rtol=1e-12)
    np.testing.assert_allclose(numeric, right[index], rtol=1e-6, atol=1e-8)
    assert abs(analytic - numeric) > 1e-3


def test_gradcheck_catches_transposed_input_gradient():
    with pytest.raises(AssertionError, match="input 0"):
        gradcheck(matmul_op("gx"), leaf(4, 4, seed=101), leaf(4, 4, seed=102))


@pytest.mark.parametrize("bug", ["wrong", "missing"])
def test_gradcheck_checks_every_input_not_just_the_first(bug):
    a, b = leaf(2, 3, seed=101), leaf(2, 3, seed=102, name="b")
    with pytest.raises(AssertionError, match=r"input 1 \('b'\)"):
        gradcheck(lambda a, b: ScaledProduct.apply(a, b, bug=bug), a, b)


@pytest.mark.parametrize("bug", ["ignores_gy", "mean_of_gy"])
def test_gradcheck_uses_a_random_upstream_gradient(bug):
    # These bugs are invisible to an all-ones upstream gradient ...
    x = leaf(2, 3)
    Triple.apply(x, bug=bug).backward(np.ones((2, 3)))
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 3.0))
    # ... and gradcheck must still see them.
    with pytest.raises(AssertionError, match="input 0"):
        gradcheck(lambda t: Triple.apply(t, bug=bug), leaf(2, 3))
    assert gradcheck(lambda t: Triple.apply(t, bug=None), leaf(2, 3))


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_gradcheck_reports_an_op_that_mutates_its_input(where):
    with pytest.raises(AssertionError, match="in place"):
        gradcheck(lambda t: InPlace.apply(t, where=where), leaf(3))


# ----------------------------------------------------------------------------- check_vjp
def simple_conv_net(x, w1, b1, w2, b2, w3, b3, t):
    """conv 5x5 - relu - pool 2 - linear - relu - linear - softmax cross-entropy."""
    h = F.max_pool2d(F.relu(F.conv2d(x, w1, b1)), 2)  # (N, 30, 12, 12)
    h = F.relu(F.linear(h.flatten(), w2, b2))  # (N, 100)
    return F.softmax_cross_entropy(F.linear(h, w3, b3), t)


def simple_conv_net_inputs(N: int = 16, seed: int = 0) -> list:
    """Book-sized inputs built away from the ReLU and max-pool kinks.

    A finite difference that straddles a kink is wrong by O(1) for that element, and among
    276,480 conv outputs some lie within eps of 0 (check_vjp then fails on a correct net). So:
    images are ramps plus small noise, half the filters are positive (conv output >= 0.1, and
    the bottom-right pixel of every 2x2 pool window wins by > 0.01) and half are negative
    (conv output <= -0.1). Only the 1,600 hidden ReLU inputs are left to chance (checked below).
    """
    rng = np.random.default_rng(seed)
    a, c = rng.uniform(0.5, 1.0, (2, N, 1, 1, 1))
    rows, cols = np.arange(28)[:, None], np.arange(28)[None, :]
    x = (a * rows + c * cols) / 28 + 0.01 * rng.random((N, 1, 28, 28))  # (N, 1, 28, 28)
    sign = np.repeat([1.0, -1.0], 15)
    w1 = sign[:, None, None, None] * rng.uniform(0.02, 0.2, (30, 1, 5, 5))
    b1 = sign * rng.uniform(0.1, 0.2, 30)
    w2, b2 = 0.02 * rng.standard_normal((4320, 100)), 0.1 * rng.standard_normal(100)
    w3, b3 = 0.1 * rng.standard_normal((100, 10)), 0.1 * rng.standard_normal(10)
    params = [Tensor(p, requires_grad=True) for p in (x, w1, b1, w2, b2, w3, b3)]
    return [*params, Tensor(rng.integers(0, 10, N))]


def _kink_margins(x, w1, b1, w2, b2, *_):
    """Distances from the kinks: min |conv out|, min pool top-2 gap, min |hidden pre-act|."""
    z1 = F.conv2d(x, w1, b1).data  # (N, 30, 24, 24)
    N, OC = z1.shape[:2]
    # (N, OC, 24, 24) -> (N, OC, 12, 2, 12, 2) -> (N, OC, 12, 12, 4): the 2x2 pool windows
    windows = z1.reshape(N, OC, 12, 2, 12, 2).transpose(0, 1, 2, 4, 3, 5).reshape(N, OC, 12, 12, 4)
    top2 = np.sort(windows[:, :15], axis=-1)[..., -2:]  # live (positive) filters only
    pooled = F.max_pool2d(F.relu(Tensor(z1)), 2).data.reshape(N, -1)
    return (
        np.abs(z1).min(),
        (top2[..., 1] - top2[..., 0]).min(),
        np.abs(pooled @ w2.data + b2.data).min(),
    )


def test_check_vjp_passes_on_a_simple_conv_net_at_realistic_size():
    inputs = simple_conv_net_inputs()
    relu1, pool_gap, relu2 = _kink_margins(*inputs)
    assert relu1 > 0.09 and pool_gap > 0.005 and relu2 > 1e-4  # far beyond eps * |v|
    err = check_vjp(simple_conv_net, *inputs)
    assert isinstance(err, float) and 0 <= err < 1e-6


def test_check_vjp_passes_on_float32_inputs():
    x, w = leaf(8, 6, seed=101, dtype=np.float32), leaf(6, 6, seed=102, dtype=np.float32)
    assert check_vjp(lambda x, w: (x @ w).tanh(), x, w) < 1e-6


@pytest.mark.parametrize("bug", ["gx", "gw"])
def test_check_vjp_catches_a_broken_op_inside_a_net(bug):
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((16, 20)), requires_grad=True)
    w1 = Tensor(rng.standard_normal((20, 32)) * 0.3, requires_grad=True)
    w2 = Tensor(rng.standard_normal((32, 32)) * 0.3, requires_grad=True)
    w3 = Tensor(rng.standard_normal((32, 10)) * 0.3, requires_grad=True)
    t = Tensor(rng.integers(0, 10, 16))

    def net(x, w1, w2, w3, t, bug=bug):
        h = (x @ w1).tanh()
        h = MatMulOp.apply(h, w2, bug=bug).tanh()
        return F.softmax_cross_entropy(h @ w3, t)

    assert check_vjp(lambda *a: net(*a, bug=None), x, w1, w2, w3, t) < 1e-6
    with pytest.raises(AssertionError, match="check_vjp"):
        check_vjp(net, x, w1, w2, w3, t)


@pytest.mark.parametrize("bug", ["gx", "gw"])
def test_check_vjp_catches_a_broken_op_applied_to_the_inputs(bug):
    # The output has the shape of x, so this only works if the upstream gradient u and the
    # direction v are independent random draws.
    x, w = leaf(8, 8, seed=101), leaf(8, 8, seed=102)
    assert check_vjp(matmul_op(None), x, w) < 1e-6
    with pytest.raises(AssertionError, match="check_vjp"):
        check_vjp(matmul_op(bug), x, w)


def test_check_vjp_catches_a_random_upstream_gradient_bug():
    with pytest.raises(AssertionError):
        check_vjp(lambda t: Triple.apply(t, bug="ignores_gy"), leaf(4, 5))


@pytest.mark.parametrize("bug", ["gx", "gw"])
def test_vjp_error_of_a_broken_op_is_large_for_every_seed(bug):
    x, w = leaf(6, 6, seed=101), leaf(6, 6, seed=102)
    errors = [vjp_error(matmul_op(bug), x, w, seed=s) for s in range(5)]
    assert min(errors) > 1e-3, errors


# ----------------------------------------------------------------------------- module_gradcheck
def test_module_gradcheck_on_a_tiny_conv_net_restores_its_parameters():
    from tinygrad_cnn.nn import SimpleConvNet

    net = SimpleConvNet((1, 6, 6), {"filter_num": 2, "filter_size": 3}, 4, 3, 0.5, seed=0)
    x, t = np.random.default_rng(1).random((2, 1, 6, 6)), np.array([0, 2])
    params = net.parameters()
    before = [p.data.copy() for p in params]
    assert module_gradcheck(net, lambda: net.loss(x, t)) is True
    assert net.parameters() == params  # the very same objects are back
    for p, old in zip(params, before, strict=True):
        assert p.dtype == np.float32 and p.grad is None
        np.testing.assert_array_equal(p.data, old)


@pytest.mark.parametrize("bug", ["gx", "gw"])
def test_module_gradcheck_catches_a_broken_layer(bug):
    from tinygrad_cnn.nn import Module, Parameter

    class Square(Module):
        def __init__(self):
            super().__init__()
            self.w1 = Parameter(np.random.default_rng(5).standard_normal((4, 4)))
            self.w2 = Parameter(np.random.default_rng(6).standard_normal((4, 4)))

        def forward(self, x):
            return MatMulOp.apply(MatMulOp.apply(x, self.w1), self.w2, bug=bug).tanh()

    net = Square()
    x = np.random.default_rng(7).standard_normal((3, 4))
    with pytest.raises(AssertionError, match=r"input \d \('w\d'\)"):
        module_gradcheck(net, lambda: net(x).sum())


def test_gradcheck_is_not_fooled_by_a_kink_next_to_the_point():
    """An input 5e-7 from ReLU's kink: the default step (1e-6) straddles it, smaller steps do
    not. The check measures the disagreeing elements again before failing, so a right
    gradient passes, and a wrong one still fails."""
    from tinygrad_cnn import Function

    x = Tensor(np.array([5e-7, 0.3, -0.2]), requires_grad=True)
    assert gradcheck(lambda t: (t * 1.0).relu(), x)

    class WrongRamp(Function):
        def forward(self, x):
            self.save(x=x)
            return np.maximum(x, 0)

        def backward(self, gy):
            return gy * (self.saved["x"] > 0) * 1.5

    with pytest.raises(AssertionError, match="is wrong at index"):
        gradcheck(lambda t: WrongRamp.apply(t), x)
