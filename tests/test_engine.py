"""The engine: graph traversal, gradient accumulation, backward semantics, grad mode, memory,
broadcasting and the dtype policy. Per-op gradients are checked in ``test_ops.py``.
"""

from __future__ import annotations

import gc
import operator
import weakref
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_cnn.functional as F
from tinygrad_cnn import Function, Tensor, enable_grad, is_grad_enabled, no_grad
from tinygrad_cnn import strategies as tst
from tinygrad_cnn.autograd import unbroadcast
from tinygrad_cnn.backprop import toposort
from tinygrad_cnn.testing import gradcheck

RNG_SEED = 0


def rand(*shape: int, dtype=np.float64, seed: int = RNG_SEED) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def leaf(*shape: int, dtype=np.float64, seed: int = RNG_SEED) -> Tensor:
    return Tensor(rand(*shape, dtype=dtype, seed=seed), requires_grad=True)


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """Let a test define registered Function subclasses without leaking them to other tests."""
    saved = dict(Function.registry)
    yield
    Function.registry.clear()
    Function.registry.update(saved)


class CountingIdentity(Function, register=False):
    """y = x; counts backward calls and reads of ``parents`` (how often the engine visits it)."""

    backward_calls = 0
    parent_reads = 0

    @property
    def parents(self):
        type(self).parent_reads += 1
        return self._parents

    @parents.setter
    def parents(self, value):
        self._parents = value

    def forward(self, x):
        return x.copy()

    def backward(self, gy):
        type(self).backward_calls += 1
        return gy

    @classmethod
    def reset(cls) -> None:
        cls.backward_calls = cls.parent_reads = 0


# ----------------------------------------------------------------------------- small net
def small_net(x, w, b, W1, b1, M, labels):
    """A graph that uses every built-in op; returns a (2,) tensor."""
    h = F.relu(F.conv2d(x, w, b, padding=1))  # (2, 3, 6, 6)
    p, a = F.max_pool2d(h, 2), F.avg_pool2d(h, 2)  # (2, 3, 3, 3) each
    z = F.linear((p + a).reshape(2, 27), W1, b1)  # (2, 5)
    loss = F.softmax_cross_entropy(z, labels)
    q = (F.softmax(z) * z.sigmoid() - F.log_softmax(z) / (z.tanh().exp() + 1.0)) ** 2
    m = (q @ M).transpose()  # (4, 2)
    return m[1:3].max(axis=0) - (-m.mean(axis=0)) + (m.sum(axis=0) ** 2 + 1).log() + loss * 1.0


def small_net_inputs(dtype=np.float64) -> list[Tensor]:
    shapes = [(2, 1, 6, 6), (3, 1, 3, 3), (3,), (27, 5), (5,), (5, 4)]
    params = [leaf(*s, dtype=dtype, seed=i) for i, s in enumerate(shapes)]
    return [*params, Tensor(np.array([1, 3]))]


#: Ops that gradients are made of under create_graph, and casts; the spec table in
#: test_ops.py and test_higher_order.py cover them.
GRADIENT_OPS = {
    "BroadcastTo", "SumTo", "IndexAdd", "Cast", "Conv2dGradInput", "Conv2dGradWeight",
    "MaxPool2dScatter", "MaxPool2dGather", "AvgPool2dSpread",
}  # fmt: skip
#: The ops of issue 12 (activations, select, join, BCE): SPECS and test_new_ops cover them.
NEWER_OPS = {
    "Abs", "Sqrt", "Sin", "Cos", "Log1p", "Erf", "Clip", "LeakyReLU", "ELU", "GELU", "Softplus",
    "Where", "Maximum", "Minimum", "Cat", "Pad", "LogSumExp", "Norm", "BCEWithLogits",
    "BatchNorm",  # issue 10: SPECS and test_batch_norm.py cover it
}  # fmt: skip


def builtin_ops() -> set[str]:
    ops = {n for n, c in Function.registry.items() if c.__module__.startswith("tinygrad_cnn.ops")}
    return ops - GRADIENT_OPS - NEWER_OPS


def test_small_net_uses_every_builtin_op():
    out = small_net(*small_net_inputs())
    used = {t._ctx.name for t in toposort(out) if t._ctx is not None}
    assert builtin_ops() <= used, f"small_net misses {sorted(builtin_ops() - used)}"


# ----------------------------------------------------------------------------- diamonds, reuse
def test_diamond_a_plus_a_twice():
    a = Tensor(np.array([1.5, -2.0]), requires_grad=True)
    b = a + a
    c = b + b
    c.sum().backward()
    np.testing.assert_array_equal(a.grad, [4.0, 4.0])


def test_square_by_self_multiplication():
    x = leaf(3, 4)
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data, rtol=1e-15)


def test_shared_subexpression_backpropagates_once_with_summed_gradient():
    CountingIdentity.reset()
    x = leaf(5)
    s = CountingIdentity.apply(x * 3.0)  # shared by two branches
    y = (s * 2.0 + s * 5.0).sum()
    y.backward()
    np.testing.assert_allclose(x.grad, np.full(5, 21.0))
    assert CountingIdentity.backward_calls == 1  # both paths summed before s's backward runs


def test_same_leaf_used_in_many_ops():
    x = Tensor(np.array([0.3, -0.7, 1.2]), requires_grad=True)
    y = x * 2.0 + x * 3.0 + x.exp() + x**2 - x + x / 4.0 + x.tanh()
    y.sum().backward()
    d = x.data
    expected = 2 + 3 + np.exp(d) + 2 * d - 1 + 0.25 + (1 - np.tanh(d) ** 2)
    np.testing.assert_allclose(x.grad, expected, rtol=1e-13)


def test_leaf_used_a_hundred_times():
    x = leaf(4)
    total = x * 1.0
    for i in range(2, 101):
        total = total + x * float(i)
    total.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(4, 5050.0))


def test_constant_inputs_get_no_grad():
    x, c = leaf(3), Tensor(rand(3, seed=1))
    (x * c).sum().backward()
    assert c.grad is None
    np.testing.assert_array_equal(x.grad, c.data)


# ----------------------------------------------------------------------------- deep graphs
def test_20000_deep_chain_backpropagates_iteratively():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x
    for _ in range(20_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, np.full(2, 1.0001**20_000), rtol=1e-10)


def test_deep_chain_visits_each_op_a_constant_number_of_times():
    CountingIdentity.reset()
    n = 20_000
    x = leaf(2)
    y = x
    for _ in range(n):
        y = CountingIdentity.apply(y)
    CountingIdentity.parent_reads = 0
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, np.ones(2))
    assert CountingIdentity.backward_calls == n
    assert CountingIdentity.parent_reads <= 3 * n  # linear traversal: O(1) visits per op


def test_deleting_a_deep_unfreed_graph_does_not_crash():
    x = leaf(2)
    y = x
    for _ in range(50_000):
        y = y + 1.0
    ref = weakref.ref(y._ctx)
    del y
    assert ref() is None


# ----------------------------------------------------------------------------- repeated backward
def test_leaf_grads_accumulate_across_graphs():
    x = leaf(3)
    (x * 2.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, np.full(3, 5.0))


def test_retain_graph_allows_second_backward_which_doubles_grad():
    x = leaf(3)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.copy()
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * first)
    np.testing.assert_allclose(first, 2 * x.data)


def test_second_backward_without_retain_graph_raises():
    x = leaf(3)
    y = (x.exp() * 2.0).sum()
    y.backward()
    grad = x.grad.copy()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()
    np.testing.assert_array_equal(x.grad, grad)


def test_backward_through_a_freed_subgraph_raises():
    x = leaf(3)
    h = x.exp()
    h.sum().backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        (h * 2.0).sum().backward()


def test_retain_then_free_then_raise():
    x = leaf(2)
    y = (x * 3.0).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(x.grad, np.full(2, 6.0))
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_non_scalar_backward_without_grad_raises():
    y = leaf(2, 3) * 2.0
    with pytest.raises(RuntimeError, match=r"\(2, 3\)"):
        y.backward()


@pytest.mark.parametrize("shape", [(3, 2), (6,), (2, 3, 1), ()])
def test_grad_of_wrong_shape_raises_value_error(shape):
    y = leaf(2, 3) * 2.0
    with pytest.raises(ValueError, match="shape"):
        y.backward(np.ones(shape))


def test_backward_on_tensor_without_grad_raises():
    with pytest.raises(RuntimeError, match="require"):
        Tensor(np.ones(3)).sum().backward()
    x = leaf(3)
    with no_grad():
        y = (x * 2.0).sum()
    with pytest.raises(RuntimeError, match="require"):
        y.backward()


def test_backward_accepts_a_tensor_grad_and_casts_it():
    x = leaf(3, dtype=np.float32)
    y = x * 2.0
    y.backward(Tensor(np.array([1.0, 2.0, 3.0])))  # float64 grad for a float32 output
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, [2.0, 4.0, 6.0])


def test_backward_of_a_scalar_leaf():
    x = Tensor(np.array(2.0), requires_grad=True)
    x.backward()
    assert x.grad == 1.0


def test_intermediate_tensors_keep_no_grad():
    x = leaf(3)
    h = x * 2.0
    g = h.exp()
    y = g.sum()
    y.backward()
    assert h.grad is None and g.grad is None and y.grad is None
    assert x.grad is not None


def test_backward_inside_no_grad_still_works():
    x = leaf(3)
    y = (x * 4.0).sum()
    with no_grad():
        y.backward()
        assert not is_grad_enabled()
    np.testing.assert_array_equal(x.grad, np.full(3, 4.0))


def test_backward_does_not_leave_grad_mode_disabled_on_error():
    class Broken(Function, register=False):
        def forward(self, x):
            return x.copy()

        def backward(self, gy):
            raise ZeroDivisionError("boom")

    y = Broken.apply(leaf(2)).sum()
    with pytest.raises(ZeroDivisionError):
        y.backward()
    assert is_grad_enabled()


def test_op_gradient_of_the_wrong_shape_is_caught():
    class Transposing(Function, register=False):
        def forward(self, x):
            return x.copy()

        def backward(self, gy):
            return np.ascontiguousarray(gy.T)  # (4, 3) for a (3, 4) input

    y = Transposing.apply(leaf(3, 4)).sum()
    with pytest.raises(RuntimeError, match=r"Transposing.backward returned a gradient of shape "
                       r"\(4, 3\) for input 0, whose shape is \(3, 4\)"):  # fmt: skip
        y.backward()


def test_op_returning_the_wrong_number_of_gradients_is_named():
    class TwoGrads(Function, register=False):
        def forward(self, x):
            return x.copy()

        def backward(self, gy):
            return gy, gy

    with pytest.raises(RuntimeError, match=r"TwoGrads.backward returned 2 gradient\(s\) for 1"):
        TwoGrads.apply(leaf(3)).sum().backward()


# ----------------------------------------------------------------------------- grad mode
def test_no_grad_records_nothing():
    x = leaf(3)
    with no_grad():
        assert not is_grad_enabled()
        y = (x * 2.0).exp()
    assert is_grad_enabled()
    assert not y.requires_grad and y._ctx is None
    np.testing.assert_allclose(y.data, np.exp(2 * x.data))


def test_no_grad_as_decorator():
    @no_grad()
    def double(t):
        assert not is_grad_enabled()
        return t * 2.0

    y = double(leaf(3))
    assert not y.requires_grad and y._ctx is None
    assert is_grad_enabled()
    assert double.__name__ == "double"


def test_no_grad_nests_and_one_instance_can_be_reentered():
    guard = no_grad()
    with guard:
        with guard:
            assert not is_grad_enabled()
        assert not is_grad_enabled()
        with no_grad():
            assert not is_grad_enabled()
        assert not is_grad_enabled()
    assert is_grad_enabled()


def test_enable_grad_inside_no_grad():
    x = leaf(3)
    with no_grad():
        with enable_grad():
            assert is_grad_enabled()
            y = x * 2.0
        assert not is_grad_enabled()
        z = x * 2.0
    assert y.requires_grad and y._ctx is not None
    assert not z.requires_grad

    @enable_grad()
    def recorded(t):
        return t * 2.0

    with no_grad():
        assert recorded(x).requires_grad
        assert not is_grad_enabled()


def test_grad_mode_restored_on_exception():
    with pytest.raises(KeyError):
        with no_grad():
            raise KeyError("x")
    assert is_grad_enabled()

    @no_grad()
    def fails():
        raise ValueError("inside")

    with pytest.raises(ValueError, match="inside"):
        fails()
    assert is_grad_enabled()

    with no_grad():
        with pytest.raises(KeyError):
            with enable_grad():
                raise KeyError("y")
        assert not is_grad_enabled()
    assert is_grad_enabled()


# ----------------------------------------------------------------------------- no mutation
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_backward_mutates_neither_upstream_grad_nor_any_op_input(dtype):
    inputs = small_net_inputs(dtype)
    out = small_net(*inputs)
    nodes = toposort(out)
    before = {id(t): t.data.copy() for t in nodes}
    gy = rand(*out.shape, dtype=dtype, seed=7)
    gy_before = gy.copy()
    out.backward(gy)
    np.testing.assert_array_equal(gy, gy_before)
    for t in nodes:
        name = t._ctx.name if t._ctx is not None else "leaf"
        np.testing.assert_array_equal(t.data, before[id(t)], err_msg=f"{name} output mutated")
    for p in inputs[:6]:
        assert not np.shares_memory(p.grad, gy)


def test_leaf_grad_never_aliases_upstream_grad():
    x = leaf(2, 3)
    gy = rand(2, 3, seed=3)
    gy_before = gy.copy()
    y = x.reshape(6).reshape(2, 3)  # gradients that are views of gy all the way down
    y.backward(gy)
    assert not np.shares_memory(x.grad, gy)
    (x + 0.0).backward(gy)  # the second backward adds in place into x.grad
    np.testing.assert_array_equal(gy, gy_before)
    np.testing.assert_array_equal(x.grad, 2 * gy)


# ----------------------------------------------------------------------------- memory
def test_graph_is_freed_by_refcounting_alone():
    gc.disable()
    try:
        inputs = small_net_inputs()
        out = small_net(*inputs)
        nodes = [t for t in toposort(out) if t._ctx is not None]
        tensor_refs = [weakref.ref(t) for t in nodes]
        op_refs = [weakref.ref(t._ctx) for t in nodes]
        del nodes, out
        assert all(r() is None for r in tensor_refs), "intermediate tensors outlived the root"
        assert all(r() is None for r in op_refs), "op instances outlived the root"
        assert all(t.data is not None for t in inputs)
    finally:
        gc.enable()


@pytest.mark.parametrize("retain_graph", [False, True])
def test_graph_is_freed_after_backward_without_cycles(retain_graph):
    gc.disable()
    try:
        x = leaf(4)
        h = (x * 2.0).exp()
        y = h.sum()
        h_ref, ctx_ref = weakref.ref(h), weakref.ref(h._ctx)
        y.backward(retain_graph=retain_graph)
        del h
        # Without retain_graph the root no longer links to its inputs; with it, it does.
        assert (h_ref() is None) is (not retain_graph)
        del y
        assert h_ref() is None and ctx_ref() is None
    finally:
        gc.enable()


def test_backward_drops_saved_arrays_unless_retained():
    inputs = small_net_inputs()
    out = small_net(*inputs)
    ops = [t._ctx for t in toposort(out) if t._ctx is not None]
    assert any(op.saved for op in ops)
    out.backward(np.ones(out.shape), retain_graph=True)
    assert not any(op.freed for op in ops)
    assert all(op.parents for op in ops)
    out.backward(np.ones(out.shape))
    for op in ops:
        assert op.freed and op.saved == {} and op.parents == (), op.name


# ----------------------------------------------------------------------------- broadcasting
@given(shapes=tst.broadcastable_shapes(max_dims=4), data=st.data())
def test_unbroadcast_is_the_adjoint_of_broadcast_to(shapes, data):
    small = shapes[0]
    big = np.broadcast_shapes(*shapes)
    g = data.draw(tst.arrays(big))
    v = data.draw(tst.arrays(small))
    r = unbroadcast(g, small)
    assert r.shape == small
    lhs = np.vdot(r, v)
    rhs = np.vdot(g, np.broadcast_to(v, big))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12)


@given(shapes=tst.broadcastable_shapes(max_dims=4))
def test_unbroadcast_of_ones_counts_the_copies(shapes):
    small = shapes[0]
    big = np.broadcast_shapes(*shapes)
    r = unbroadcast(np.ones(big), small)
    copies = int(np.prod(big)) // int(np.prod(small))
    np.testing.assert_array_equal(r, np.full(small, float(copies)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_broadcast_gradients_have_input_shapes_and_dtype(dtype):
    a, b = leaf(3, 1, dtype=dtype), leaf(4, dtype=dtype, seed=1)
    gy = rand(3, 4, dtype=dtype, seed=2)
    (a * b).backward(gy)
    assert a.grad.shape == (3, 1) and b.grad.shape == (4,)
    assert a.grad.dtype == dtype and b.grad.dtype == dtype
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(a.grad, (gy * b.data).sum(axis=1, keepdims=True), rtol=tol)
    np.testing.assert_allclose(b.grad, (gy * a.data).sum(axis=0), rtol=tol)

    c, d = leaf(3, 1, dtype=dtype), leaf(4, dtype=dtype, seed=1)
    (c + d).sum().backward()
    np.testing.assert_array_equal(c.grad, np.full((3, 1), 4.0))
    np.testing.assert_array_equal(d.grad, np.full(4, 3.0))


# ----------------------------------------------------------------------------- dtype policy
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept_through_every_op_and_gradient(dtype):
    inputs = small_net_inputs(dtype)
    out = small_net(*inputs)
    for t in toposort(out):
        if t.dtype.kind == "f":
            assert t.dtype == dtype, f"{t._ctx.name if t._ctx else 'leaf'} gave {t.dtype}"
    out.backward(np.ones(out.shape, dtype))
    for p in inputs[:6]:
        assert p.grad.dtype == dtype and p.grad.shape == p.shape


@pytest.mark.parametrize(
    "expr",
    [
        lambda x: x * 2.0,
        lambda x: 2.0 * x,
        lambda x: 2.0 / x,
        lambda x: x / 3,
        lambda x: x + 1,
        lambda x: 1 - x,
        lambda x: x**2,
        lambda x: x**0.5,
        lambda x: x * np.float64(2.0),
        lambda x: np.float64(2.0) * x,
    ],
)
def test_python_scalar_operand_does_not_upcast_float32(expr):
    x = Tensor(np.array([1.0, 2.0, 4.0], dtype=np.float32), requires_grad=True)
    y = expr(x)
    assert isinstance(y, Tensor) and y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


@pytest.mark.parametrize(
    ("op", "ref"),
    [
        (operator.add, np.add),
        (operator.sub, np.subtract),
        (operator.mul, np.multiply),
        (operator.truediv, np.divide),
        (operator.matmul, np.matmul),
    ],
    ids=["add", "sub", "mul", "div", "matmul"],
)
def test_ndarray_op_tensor_returns_tensor(op, ref):
    a = rand(3, 3, seed=1)
    t = Tensor(rand(3, 3, seed=2) + 5.0, requires_grad=True)
    y = op(a, t)  # ndarray on the left: NumPy must defer to Tensor's reflected operator
    assert isinstance(y, Tensor) and y.requires_grad
    np.testing.assert_allclose(y.data, ref(a, t.data))
    y.sum().backward()
    assert t.grad.shape == (3, 3)


# ----------------------------------------------------------------------------- custom ops
def test_custom_function_is_registered_and_differentiable(clean_registry):
    class EngineTestCube(Function):
        """y = x ** 3."""

        def forward(self, x):
            self.save(x=x)
            return x**3

        def backward(self, gy):
            return 3 * gy * self.saved["x"] ** 2

    assert Function.registry["EngineTestCube"] is EngineTestCube
    x = leaf(2, 3)
    y = EngineTestCube.apply(x)
    assert y._ctx.name == "EngineTestCube"
    (y * 2.0).sum().backward()
    np.testing.assert_allclose(x.grad, 6 * x.data**2, rtol=1e-14)
    assert gradcheck(lambda t: EngineTestCube.apply(t).tanh(), leaf(2, 3, seed=4))


def test_unregistered_function_subclass(clean_registry):
    class EngineTestHidden(Function, register=False):
        def forward(self, x):
            return x.copy()

        def backward(self, gy):
            return gy

    assert "EngineTestHidden" not in Function.registry


def test_apply_accepts_arrays_and_scalars_as_constants():
    x = leaf(3)
    y = F.mul(x, np.arange(3.0))
    z = F.add(2.0, y)
    z.sum().backward()
    np.testing.assert_array_equal(x.grad, np.arange(3.0))


# ----------------------------------------------------------------------------- clear errors
def test_add_shape_mismatch_names_op_and_shapes():
    with pytest.raises(ValueError, match=r"add.*\(3, 1\).*\(4, 2\)"):
        Tensor(np.ones((3, 1))) + Tensor(np.ones((4, 2)))


@pytest.mark.parametrize("op", ["sub", "mul", "div"])
def test_binary_op_mismatch_names_the_op(op):
    with pytest.raises(ValueError, match=rf"{op}.*\(2, 3\).*\(4,\)"):
        getattr(F, op)(leaf(2, 3), leaf(4))


def test_matmul_inner_dim_mismatch():
    with pytest.raises(ValueError, match=r"matmul.*\(3, 4\).*\(5, 2\)"):
        leaf(3, 4) @ leaf(5, 2)


def test_reshape_to_impossible_shape():
    with pytest.raises(ValueError, match=r"reshape.*\(3, 4\).*\(5, 3\)"):
        leaf(3, 4).reshape(5, 3)


def test_failed_op_records_nothing():
    x = leaf(3)
    with pytest.raises(ValueError):
        x + leaf(4)
    y = (x * 2.0).sum()
    y.backward()
    np.testing.assert_array_equal(x.grad, np.full(3, 2.0))
