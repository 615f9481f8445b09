"""Every registered op: forward against an independent oracle, gradients against finite
differences (float64, hypothesis-drawn shapes and parameters), and float32 in -> float32 out.

``SPECS`` holds one entry per op; ``test_every_registered_op_has_a_spec`` fails when an op is
added to ``tinygrad_cnn.ops`` without one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given
from oracles import (
    avg_pool2d_naive,
    avg_pool2d_naive_grad,
    batch_norm_naive,
    bce_with_logits_naive,
    cat_naive,
    conv2d_naive,
    conv2d_naive_grads,
    elu_naive,
    erf_naive,
    gelu_naive,
    gelu_tanh_naive,
    leaky_relu_naive,
    max_pool2d_naive,
    max_pool2d_naive_gather,
    max_pool2d_naive_grad,
    pad_naive,
    softmax_cross_entropy_naive,
    softplus_naive,
)

import tinygrad_cnn.functional as F
from tinygrad_cnn import Function, Tensor
from tinygrad_cnn import strategies as tst
from tinygrad_cnn.ops import adjoint as _adj
from tinygrad_cnn.ops import shape as _shape
from tinygrad_cnn.testing import gradcheck, gradgradcheck


@dataclass
class Case:
    """Inputs for one op call: ``arrays`` become tensors requiring grad, ``consts`` do not."""

    fn: Callable[..., Tensor]
    arrays: list[np.ndarray]
    oracle: Callable[..., np.ndarray]
    consts: tuple[Any, ...] = ()


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ----------------------------------------------------------------------------- case builders
# Each takes hypothesis' ``data`` and returns a Case.


def _unary(fn, oracle, elements=None):
    def build(data):
        x = data.draw(elements if elements is not None else tst.arrays(tst.shapes(max_dims=3)))
        return Case(fn, [x], oracle)

    return build


def _binary(fn, oracle, positive_b=False):
    def build(data):
        a, b = data.draw(tst.broadcastable_pairs(max_dims=3))
        if positive_b:
            b = np.abs(b) + 0.5
        return Case(fn, [a, b], oracle)

    return build


def _reduction(fn, oracle):
    def build(data):
        x = data.draw(tst.distinct_arrays(tst.shapes(max_dims=3), step=0.1))
        axis = data.draw(st.none() | st.integers(-x.ndim, x.ndim - 1))
        keep = data.draw(st.booleans())
        return Case(lambda t: fn(t, axis, keep), [x], lambda a: oracle(a, axis=axis, keepdims=keep))

    return build


def _reshape(data):
    x = data.draw(tst.arrays(tst.shapes(min_dims=2, max_dims=3)))
    shape = (x.shape[-1], -1)
    return Case(lambda t: F.reshape(t, shape), [x], lambda a: a.reshape(shape))


def _transpose(data):
    x = data.draw(tst.arrays(tst.shapes(min_dims=2, max_dims=4)))
    axes = tuple(data.draw(st.permutations(range(x.ndim))))
    return Case(lambda t: F.transpose(t, axes), [x], lambda a: np.transpose(a, axes))


def _getitem(data):
    x = data.draw(tst.arrays(tst.shapes(min_dims=2, max_dims=3, min_side=2)))
    if data.draw(st.booleans()):
        idx = data.draw(st.lists(st.integers(0, x.shape[0] - 1), min_size=1, max_size=6))
        index: Any = np.array(idx)  # integer array, repeats accumulate
    else:
        index = (slice(1, None), slice(None, None, -1))
    return Case(lambda t: F.getitem(t, index), [x], lambda a: a[index])


def _matmul(data):
    n, k, m = (data.draw(st.integers(1, 4)) for _ in range(3))
    batch = data.draw(st.sampled_from([(), (2,), (3, 1)]))
    a = data.draw(tst.arrays((*batch, n, k)))
    b = data.draw(tst.arrays((k, m) if data.draw(st.booleans()) else (*batch, k, m)))
    return Case(F.matmul, [a, b], lambda a, b: np.einsum("...ik,...kj->...ij", a, b))


def _linear(data):
    n, i, o = (data.draw(st.integers(1, 5)) for _ in range(3))
    x, w, b = (data.draw(tst.arrays(s)) for s in ((n, i), (i, o), (o,)))
    return Case(F.linear, [x, w, b], lambda x, w, b: np.einsum("ni,io->no", x, w) + b)


def _conv2d(data):
    cfg = data.draw(tst.conv2d_configs())
    x, w, b = (data.draw(tst.arrays(s)) for s in (cfg.x_shape, cfg.w_shape, cfg.b_shape))
    kw = {"stride": cfg.stride, "padding": cfg.padding}
    return Case(
        lambda x, w, b: F.conv2d(x, w, b, **kw),
        [x, w, b],
        lambda x, w, b: conv2d_naive(x, w, b, **kw),
    )


def _pool(fn, oracle, distinct):
    def build(data):
        cfg = data.draw(tst.pool2d_configs())
        x = data.draw(tst.distinct_arrays(cfg.x_shape) if distinct else tst.arrays(cfg.x_shape))
        kw = {"stride": cfg.stride, "padding": cfg.padding}
        return Case(lambda t: fn(t, cfg.kernel, **kw), [x], lambda a: oracle(a, cfg.kernel, **kw))

    return build


def _softmax_case(fn, oracle):
    def build(data):
        x = data.draw(tst.arrays(tst.shapes(min_dims=1, max_dims=3)))
        axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
        return Case(lambda t: fn(t, axis), [x], lambda a: oracle(a, axis))

    return build


def _sce(data):
    n, k = data.draw(st.integers(1, 5)), data.draw(st.integers(2, 6))
    z = data.draw(tst.arrays((n, k), elements=(-5.0, 5.0)))
    labels = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    if data.draw(st.booleans()):
        labels = np.eye(k)[labels]
    return Case(
        lambda z, t: F.softmax_cross_entropy(z, t),
        [z],
        lambda z, t: np.asarray(softmax_cross_entropy_naive(z, t)),
        consts=(labels,),
    )


def _broadcast_to(data):
    x = data.draw(tst.arrays(tst.shapes(max_dims=3)))
    lead = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    shape = lead + tuple(n if n != 1 else data.draw(st.integers(1, 3)) for n in x.shape)
    return Case(lambda t: _shape.BroadcastTo.apply(t, shape=shape), [x],
                lambda a: np.broadcast_to(a, shape))  # fmt: skip


def _sum_to(data):
    x = data.draw(tst.arrays(tst.shapes(min_dims=1, max_dims=3)))
    cut = data.draw(st.integers(0, x.ndim))
    shape = tuple(1 if data.draw(st.booleans()) else n for n in x.shape[cut:])
    oracle = lambda a: a.sum(axis=tuple(range(cut)) + tuple(  # noqa: E731
        i + cut for i, n in enumerate(shape) if n == 1), keepdims=True).reshape(shape)  # fmt: skip
    return Case(lambda t: _shape.SumTo.apply(t, shape=shape), [x], oracle)


def _index_add(data):
    x_shape = data.draw(tst.shapes(min_dims=1, max_dims=3, min_side=2))
    idx = np.array(data.draw(st.lists(st.integers(0, x_shape[0] - 1), min_size=1, max_size=5)))
    g = data.draw(tst.arrays((len(idx), *x_shape[1:])))

    def oracle(g):
        out = np.zeros(x_shape)
        for k, i in enumerate(idx):
            out[i] += g[k]
        return out

    return Case(lambda t: _shape.IndexAdd.apply(t, index=idx, x_shape=x_shape), [g], oracle)


def _conv_grad_input(data):
    cfg = data.draw(tst.conv2d_configs())
    w = data.draw(tst.arrays(cfg.w_shape))
    out = conv2d_naive(np.zeros(cfg.x_shape), w, None, cfg.stride, cfg.padding).shape
    gy = data.draw(tst.arrays(out))
    kw = {"stride": cfg.stride, "padding": cfg.padding}
    return Case(
        lambda g, w: _adj.Conv2dGradInput.apply(g, w, x_shape=cfg.x_shape, **kw),
        [gy, w],
        lambda g, w: conv2d_naive_grads(np.zeros(cfg.x_shape), w, None, g, **kw)[0],
    )


def _conv_grad_weight(data):
    cfg = data.draw(tst.conv2d_configs())
    x = data.draw(tst.arrays(cfg.x_shape))
    out = conv2d_naive(x, np.zeros(cfg.w_shape), None, cfg.stride, cfg.padding).shape
    gy = data.draw(tst.arrays(out))
    kw = {"stride": cfg.stride, "padding": cfg.padding}
    return Case(
        lambda x, g: _adj.Conv2dGradWeight.apply(x, g, w_shape=cfg.w_shape, **kw),
        [x, gy],
        lambda x, g: conv2d_naive_grads(x, np.zeros(cfg.w_shape), None, g, **kw)[1],
    )


def _pool_attrs(cfg) -> dict[str, Any]:
    return {"kernel": tuple(cfg.kernel), "stride": tuple(cfg.stride),
            "padding": tuple(cfg.padding), "x_shape": tuple(cfg.x_shape)}  # fmt: skip


def _argmax_of(cfg, x) -> np.ndarray:
    """The argmax that max_pool2d saved for ``x`` (distinct values: no ties)."""
    y = F.max_pool2d(Tensor(x, requires_grad=True), cfg.kernel, cfg.stride, cfg.padding)
    return np.array(y.op.saved["idx"])


def _max_scatter(data):
    cfg = data.draw(tst.pool2d_configs())
    x = data.draw(tst.distinct_arrays(cfg.x_shape))
    idx, attrs = _argmax_of(cfg, x), _pool_attrs(cfg)
    gy = data.draw(tst.arrays(idx.shape))
    geometry = (cfg.kernel, cfg.stride, cfg.padding)
    return Case(
        lambda g: _adj.MaxPool2dScatter.apply(g, idx=idx, **attrs),
        [gy],
        lambda g: max_pool2d_naive_grad(x, g, *geometry),
    )


def _max_gather(data):
    cfg = data.draw(tst.pool2d_configs())
    x = data.draw(tst.distinct_arrays(cfg.x_shape))
    idx, attrs = _argmax_of(cfg, x), _pool_attrs(cfg)
    z = data.draw(tst.arrays(cfg.x_shape))
    geometry = (cfg.kernel, cfg.stride, cfg.padding)
    return Case(
        lambda t: _adj.MaxPool2dGather.apply(t, idx=idx, **attrs),
        [z],
        lambda z: max_pool2d_naive_gather(x, z, *geometry),
    )


def _avg_spread(data):
    cfg = data.draw(tst.pool2d_configs())
    out = avg_pool2d_naive(np.zeros(cfg.x_shape), cfg.kernel, cfg.stride, cfg.padding).shape
    gy = data.draw(tst.arrays(out))
    attrs = _pool_attrs(cfg)
    return Case(lambda g: _adj.AvgPool2dSpread.apply(g, **attrs), [gy],
                lambda g: avg_pool2d_naive_grad(np.zeros(cfg.x_shape), g, cfg.kernel, cfg.stride,
                                                cfg.padding))  # fmt: skip


# ----------------------------------------------------------------------------- issue 12's ops
# Inputs are built away from each op's kinks: |x| >= 0.1 for abs, leaky_relu, elu and the norm;
# values on a 0.05 grid against bounds and offsets on the 0.025 off-grid for clip and min/max.


def _grid(a: np.ndarray, step: float = 0.05) -> np.ndarray:
    return np.round(a / step) * step


def _clip(data):
    x = _grid(data.draw(tst.arrays(tst.shapes(max_dims=3))))
    lo, hi = (data.draw(st.none() | st.integers(-40, 40)) for _ in range(2))
    if lo is None and hi is None:
        lo = 0
    lo, hi = (None if v is None else 0.05 * v + 0.025 for v in (lo, hi))
    return Case(lambda t: F.clip(t, lo, hi), [x], lambda a: np.minimum(
        np.maximum(a, -np.inf if lo is None else lo), np.inf if hi is None else hi))  # fmt: skip


def _extremum(fn, pick):
    def build(data):
        a, b = data.draw(tst.broadcastable_pairs(max_dims=3))
        a, b = _grid(a), _grid(b) + 0.025  # never equal
        return Case(fn, [a, b], lambda a, b: np.where(pick(a, b), a, b))

    return build


def _where(data):
    a, b = data.draw(tst.broadcastable_pairs(max_dims=3))
    shape = np.broadcast_shapes(a.shape, b.shape)
    cond = data.draw(hnp.arrays(np.bool_, shape[data.draw(st.integers(0, len(shape))) :]))

    def out(a, b, c):  # element by element
        flat = zip(*(np.broadcast_to(z, shape).ravel() for z in (a, b, c)), strict=True)
        return np.array([u if k else v for u, v, k in flat]).reshape(shape)

    return Case(lambda a, b, c: F.where(c, a, b), [a, b], out, consts=(cond,))


def _cat(data):
    base = data.draw(tst.shapes(min_dims=1, max_dims=3))
    axis = data.draw(st.integers(-len(base), len(base) - 1))
    k = data.draw(st.integers(1, 3))
    shapes = [tuple(data.draw(st.integers(1, 3)) if i == axis % len(base) else n
                    for i, n in enumerate(base)) for _ in range(k)]  # fmt: skip
    xs = [data.draw(tst.arrays(s)) for s in shapes]
    return Case(lambda *ts: F.cat(list(ts), axis), xs, lambda *a: cat_naive(list(a), axis))


def _pad(data):
    x = data.draw(tst.arrays(tst.shapes(max_dims=3)))
    pads = data.draw(st.lists(st.integers(0, 2), min_size=0, max_size=2 * x.ndim))
    pads = pads[: len(pads) // 2 * 2]
    value = data.draw(st.sampled_from([0.0, -1.5]))
    widths = [(0, 0)] * (x.ndim - len(pads) // 2) + [
        (pads[i], pads[i + 1]) for i in range(len(pads) - 2, -1, -2)]  # fmt: skip
    return Case(lambda t: F.pad(t, pads, value=value), [x],
                lambda a: pad_naive(a, widths, "constant", value))  # fmt: skip


def _reduce_many(fn, oracle, elements):
    def build(data):
        x = data.draw(elements)
        axis = data.draw(st.none() | st.integers(-x.ndim, x.ndim - 1) | st.just(
            tuple(range(x.ndim))[: data.draw(st.integers(1, x.ndim))]))  # fmt: skip
        keep = data.draw(st.booleans())
        return Case(lambda t: fn(t, axis=axis, keepdims=keep), [x],
                    lambda a: oracle(a, axis=axis, keepdims=keep))  # fmt: skip

    return build


def _logsumexp_oracle(a, axis, keepdims):
    return np.log(np.sum(np.exp(a), axis=axis, keepdims=keepdims))


def _norm_oracle(a, axis, keepdims):
    return np.sqrt(np.sum(a * a, axis=axis, keepdims=keepdims))


def _gelu(data):
    x = data.draw(tst.arrays(tst.shapes(max_dims=3), elements=(-5.0, 5.0)))
    form = data.draw(st.sampled_from(["none", "tanh"]))
    oracle = gelu_naive if form == "none" else gelu_tanh_naive
    return Case(lambda t: F.gelu(t, approximate=form), [x], oracle)


def _with_param(fn, oracle, values, elements=None):
    def build(data):
        x = data.draw(elements if elements is not None else tst.arrays(tst.shapes(max_dims=3)))
        v = data.draw(st.sampled_from(values))
        return Case(lambda t: fn(t, v), [x], lambda a: oracle(a, v))

    return build


def _bce(data):
    x = data.draw(tst.arrays(tst.shapes(max_dims=3), elements=(-6.0, 6.0)))
    t = data.draw(tst.arrays(x.shape, elements=(0.0, 1.0)))
    return Case(lambda x, t: F.binary_cross_entropy_with_logits(x, t, reduction="none"), [x, t],
                bce_with_logits_naive)  # fmt: skip


def _batch_norm(data):
    if data.draw(st.booleans()):
        shape = (data.draw(st.integers(2, 5)), data.draw(st.integers(1, 4)))  # (N, C)
    else:
        shape = tuple(data.draw(st.integers(1, 3)) for _ in range(4))  # (N, C, H, W)
        if shape[0] * shape[2] * shape[3] < 2:
            shape = (2, *shape[1:])
    C = shape[1]
    x = data.draw(tst.distinct_arrays(shape, step=0.1))  # every channel's variance >= 0.0025
    gamma, beta = data.draw(tst.arrays((C,))), data.draw(tst.arrays((C,)))
    eps = data.draw(st.sampled_from([1e-5, 1e-3]))
    mean = var = None  # training: batch statistics
    if data.draw(st.booleans()):  # evaluation: given (running) statistics, constants
        mean, var = data.draw(tst.arrays((C,))), data.draw(tst.arrays((C,), elements=(0.1, 3.0)))
    return Case(
        lambda x, g, b: F.batch_norm(x, mean, var, g, b, mean is None, eps=eps),
        [x, gamma, beta],
        lambda x, g, b: batch_norm_naive(x, g, b, mean, var, eps),
    )


SPECS: dict[str, Callable[[Any], Case]] = {
    "Add": _binary(F.add, np.add),
    "Sub": _binary(F.sub, np.subtract),
    "Mul": _binary(F.mul, np.multiply),
    "Div": _binary(F.div, np.divide, positive_b=True),
    "Neg": _unary(F.neg, np.negative),
    "Pow": _unary(lambda t: F.pow(t, 3), lambda a: a * a * a),
    "Exp": _unary(F.exp, np.exp),
    "Log": _unary(F.log, np.log, tst.positive_arrays(tst.shapes(max_dims=3))),
    "ReLU": _unary(
        F.relu, lambda a: np.where(a > 0, a, 0.0), tst.away_from_zero(tst.shapes(max_dims=3))
    ),
    "Sigmoid": _unary(F.sigmoid, _sigmoid),
    "Tanh": _unary(F.tanh, np.tanh),
    "Sum": _reduction(F.sum, np.sum),
    "Mean": _reduction(F.mean, np.mean),
    "Max": _reduction(F.max, np.max),
    "Reshape": _reshape,
    "Transpose": _transpose,
    "GetItem": _getitem,
    "MatMul": _matmul,
    "Linear": _linear,
    "Conv2d": _conv2d,
    "MaxPool2d": _pool(F.max_pool2d, max_pool2d_naive, distinct=True),
    "AvgPool2d": _pool(F.avg_pool2d, avg_pool2d_naive, distinct=False),
    "Softmax": _softmax_case(F.softmax, _softmax),
    "LogSoftmax": _softmax_case(F.log_softmax, lambda a, axis: np.log(_softmax(a, axis))),
    "SoftmaxCrossEntropy": _sce,
    # the ops gradients are made of under create_graph (ops/adjoint.py, ops/shape.py)
    "BroadcastTo": _broadcast_to,
    "SumTo": _sum_to,
    "IndexAdd": _index_add,
    "Conv2dGradInput": _conv_grad_input,
    "Conv2dGradWeight": _conv_grad_weight,
    "MaxPool2dScatter": _max_scatter,
    "MaxPool2dGather": _max_gather,
    "AvgPool2dSpread": _avg_spread,
    "Cast": _unary(lambda t: F.cast(t, t.dtype), lambda a: a),  # to float32: test_cast_*
    # issue 12: math, activations, selections, joins, reductions, a loss
    "Abs": _unary(F.abs, np.abs, tst.away_from_zero(tst.shapes(max_dims=3))),
    "Sqrt": _unary(F.sqrt, np.sqrt, tst.positive_arrays(tst.shapes(max_dims=3))),
    "Sin": _unary(F.sin, np.sin),
    "Cos": _unary(F.cos, np.cos),
    "Log1p": _unary(
        F.log1p, lambda a: np.log(1 + a), tst.arrays(tst.shapes(max_dims=3), elements=(-0.5, 3.0))
    ),
    "Erf": _unary(F.erf, erf_naive),
    "Clip": _clip,
    "LeakyReLU": _with_param(
        F.leaky_relu, leaky_relu_naive, [0.01, 0.2], tst.away_from_zero(tst.shapes(max_dims=3))
    ),
    "ELU": _with_param(F.elu, elu_naive, [1.0, 0.5], tst.away_from_zero(tst.shapes(max_dims=3))),
    "GELU": _gelu,
    "Softplus": _with_param(F.softplus, softplus_naive, [1.0, 2.5]),
    "Where": _where,
    "Maximum": _extremum(F.maximum, np.greater),
    "Minimum": _extremum(F.minimum, np.less),
    "Cat": _cat,
    "Pad": _pad,
    "LogSumExp": _reduce_many(F.logsumexp, _logsumexp_oracle, tst.arrays(tst.shapes(max_dims=3))),
    "Norm": _reduce_many(F.norm, _norm_oracle, tst.away_from_zero(tst.shapes(max_dims=3))),
    "BCEWithLogits": _bce,
    # issue 10: batch normalisation (tests/test_batch_norm.py holds the PyTorch vectors)
    "BatchNorm": _batch_norm,
}

#: Ops excused from second order, each with the reason. Nothing on SimpleConvNet's path, and
#: no elementwise, reduction, shape or linear-algebra op, may be listed here.
SECOND_ORDER_EXCUSED: dict[str, str] = {}


def builtin_ops() -> set[str]:
    return {
        name
        for name, cls in Function.registry.items()
        if cls.__module__.startswith("tinygrad_cnn.")
    }


def test_every_registered_op_has_a_spec():
    missing = builtin_ops() - set(SPECS)
    assert not missing, f"ops without a test spec in tests/test_ops.py: {sorted(missing)}"
    assert set(SPECS) <= builtin_ops(), f"specs for unknown ops: {set(SPECS) - builtin_ops()}"


def _run(case: Case, dtype, requires_grad=True):
    tensors = [Tensor(a.astype(dtype), requires_grad=requires_grad) for a in case.arrays]
    return tensors, case.fn(*tensors, *case.consts)


@pytest.mark.parametrize("op", sorted(SPECS))
@given(data=st.data())
def test_forward_matches_oracle(op, data):
    case = SPECS[op](data)
    _, out = _run(case, np.float64)
    expected = case.oracle(*case.arrays, *case.consts)
    np.testing.assert_allclose(out.data, expected, rtol=1e-10, atol=1e-12)
    assert out.dtype == np.float64


@pytest.mark.parametrize("op", sorted(SPECS))
@given(data=st.data())
def test_gradient_matches_finite_differences(op, data):
    case = SPECS[op](data)
    tensors = [Tensor(a, requires_grad=True) for a in case.arrays]
    assert gradcheck(lambda *ts: case.fn(*ts, *case.consts), *tensors)


@pytest.mark.parametrize("op", sorted(SPECS))
@given(data=st.data())
def test_float32_in_float32_out(op, data):
    case = SPECS[op](data)
    tensors, out = _run(case, np.float32)
    assert out.dtype == np.float32, f"{op} returned {out.dtype} for float32 inputs"
    out.backward(np.ones(out.shape, np.float32))
    for t in tensors:
        assert t.grad is not None and t.grad.dtype == np.float32
        assert t.grad.shape == t.shape


# ----------------------------------------------------------------------------- second order
def test_every_registered_op_supports_second_order_or_is_excused():
    lacking = {
        name
        for name in builtin_ops()
        if Function.registry[name].backward_graph is Function.backward_graph
    }
    assert lacking == set(SECOND_ORDER_EXCUSED), (
        f"ops without backward_graph and without a written excuse: "
        f"{sorted(lacking - set(SECOND_ORDER_EXCUSED))}"
    )
    never = {"Conv2d", "ReLU", "MaxPool2d", "Reshape", "Linear", "SoftmaxCrossEntropy"}
    assert not never & set(SECOND_ORDER_EXCUSED)


@pytest.mark.parametrize("op", sorted(set(SPECS) - set(SECOND_ORDER_EXCUSED)))
@given(data=st.data())
def test_second_derivatives_match_finite_differences(op, data):
    case = SPECS[op](data)
    tensors = [Tensor(a, requires_grad=True) for a in case.arrays]
    assert gradgradcheck(lambda *ts: case.fn(*ts, *case.consts), *tensors)


def test_cast_changes_the_dtype_and_brings_the_gradient_back():
    x = Tensor(np.array([1.5, -2.0], np.float32), requires_grad=True)
    y = F.cast(x, np.float64)
    assert y.dtype == np.float64 and x.to(np.float64).dtype == np.float64
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, [3.0, -4.0])
    with pytest.raises(TypeError, match="cast: dtype must be a float dtype, got int64"):
        F.cast(x, np.int64)


# ----------------------------------------------------------------------------- empty batch
def test_empty_batch_flows_through_every_layer_of_the_network():
    # was: flatten raised "cannot reshape ... (0 elements) into shape (0, -1)"
    rng = np.random.default_rng(0)
    x = Tensor(np.zeros((0, 1, 28, 28), np.float32), requires_grad=True)
    w, b = rng.standard_normal((30, 1, 5, 5)), rng.standard_normal(30)
    w2, b2 = rng.standard_normal((4320, 10)), rng.standard_normal(10)
    params = [Tensor(a.astype(np.float32), requires_grad=True) for a in (w, b, w2, b2)]
    h = F.relu(F.conv2d(x, params[0], params[1]))  # (0, 30, 24, 24)
    assert h.shape == (0, 30, 24, 24)
    assert F.avg_pool2d(h, 2).shape == (0, 30, 12, 12)
    p = F.max_pool2d(h, 2)
    flat = F.flatten(p)
    assert flat.shape == (0, 30 * 12 * 12)
    y = F.linear(flat, params[2], params[3])
    assert y.shape == (0, 10) and y.dtype == np.float32
    assert F.matmul(flat, params[2]).shape == (0, 10)
    assert F.softmax(y, axis=1).shape == (0, 10)
    F.sum(y).backward()
    assert x.grad.shape == (0, 1, 28, 28) and x.grad.dtype == np.float32
    for t in params:  # no sample, so no gradient: exactly zero, not nan
        assert t.grad.shape == t.shape and t.grad.dtype == np.float32
        np.testing.assert_array_equal(t.grad, 0)


def test_empty_batch_through_simple_conv_net():
    import tinygrad_cnn.nn  # noqa: F401  (imported before models while they import each other)
    from tinygrad_cnn.models import SimpleConvNet

    net = SimpleConvNet()
    x = np.zeros((0, 1, 28, 28), np.float32)
    assert net.predict(x).shape == (0, 10)
    with pytest.raises(ValueError, match="softmax_cross_entropy: empty batch"):
        net.loss(x, np.zeros(0, np.int64))
