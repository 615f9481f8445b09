"""The wrappers of issue 12 that are compositions of registered ops (stack, split, pad
"reflect", var, the losses, conv_transpose2d, embedding, ...): forward against independent
oracles, float64 first and second derivatives, float32 in/out; then argument errors, argmax's
missing gradient, dropout, the ``dim`` alias, and the nn modules. The registered ops
themselves have their specs in ``test_ops.py``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given, settings
from oracles import conv_transpose2d_naive, pad_naive
from test_ops import Case

import tinygrad_cnn.functional as F
from tinygrad_cnn import Tensor, grad, nn
from tinygrad_cnn import strategies as tst
from tinygrad_cnn.testing import gradcheck, gradgradcheck


def _conv_t(data):
    N, C, OC = (data.draw(st.integers(1, 2)) for _ in range(3))
    H, W, KH, KW = (data.draw(st.integers(1, 3)) for _ in range(4))
    s = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    op = tuple(data.draw(st.integers(0, si - 1)) for si in s)
    p = tuple(data.draw(st.integers(0, (k - 1) // 2)) for k in (KH, KW))
    x, w, b = (data.draw(tst.arrays(sh)) for sh in ((N, C, H, W), (C, OC, KH, KW), (OC,)))
    kw = {"stride": s, "padding": p, "output_padding": op}
    return Case(lambda x, w, b: F.conv_transpose2d(x, w, b, **kw), [x, w, b],
                lambda x, w, b: conv_transpose2d_naive(x, w, b, **kw))  # fmt: skip


def _reflect(data):
    x = data.draw(tst.arrays(tst.shapes(min_dims=2, max_dims=3, min_side=2)))
    pads = [data.draw(st.integers(0, n - 1)) for n in (x.shape[-1], x.shape[-1],
                                                       x.shape[-2], x.shape[-2])]  # fmt: skip
    widths = [(0, 0)] * (x.ndim - 2) + [(pads[2], pads[3]), (pads[0], pads[1])]
    return Case(lambda t: F.pad(t, pads, mode="reflect"), [x],
                lambda a: pad_naive(a, widths, "reflect"))  # fmt: skip


def _var(fn, root):
    def build(data):
        x = data.draw(tst.distinct_arrays(tst.shapes(min_dims=1, max_dims=3, min_side=2)))
        axis = data.draw(st.none() | st.integers(-x.ndim, x.ndim - 1))
        c = data.draw(st.integers(0, 1))

        def oracle(a):
            m = a.mean(axis=axis, keepdims=True)
            n = a.size if axis is None else a.shape[axis]
            v = ((a - m) ** 2).sum(axis=axis) / (n - c)
            return np.sqrt(v) if root else v

        return Case(lambda t: fn(t, axis, correction=c), [x], oracle)

    return build


def _loss(fn, oracle, targets):
    def build(data):
        x = data.draw(tst.arrays(tst.shapes(max_dims=3), elements=(-3.0, 3.0)))
        t = _grid(data.draw(tst.arrays(x.shape))) + 0.025 if targets == "offset" else (
            data.draw(tst.arrays(x.shape)))  # fmt: skip
        red = data.draw(st.sampled_from(["mean", "sum", "none"]))
        reduce = {"mean": np.mean, "sum": np.sum, "none": lambda v: v}[red]
        x = _grid(x) if targets == "offset" else x  # l1: never x == t
        return Case(lambda a, b: fn(a, b, reduction=red), [x, t],
                    lambda a, b: reduce(oracle(a, b)))  # fmt: skip

    return build


def _grid(a: np.ndarray) -> np.ndarray:
    return np.round(a / 0.05) * 0.05


def _classification(fn, log_probs):
    def build(data):
        n, k = data.draw(st.integers(1, 4)), data.draw(st.integers(2, 5))
        x = data.draw(tst.arrays((n, k), elements=(-4.0, 4.0)))
        t = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
        red = data.draw(st.sampled_from(["mean", "sum", "none"]))

        def oracle(z, t):
            logp = z if log_probs else z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            per = np.array([-logp[i, t[i]] for i in range(n)])
            return {"mean": per.mean(), "sum": per.sum(), "none": per}[red]

        return Case(lambda z, t: fn(z, t, reduction=red), [x], oracle, consts=(t,))

    return build


def _embedding(data):
    v, d = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 3))
    shape = tuple(data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    idx = np.array(data.draw(st.lists(st.integers(0, v - 1), min_size=math.prod(shape),
                                      max_size=math.prod(shape)))).reshape(shape)  # fmt: skip
    w = data.draw(tst.arrays((v, d)))
    return Case(lambda w, i: F.embedding(i, w), [w],
                lambda w, i: np.array([[w[j, e] for e in range(d)] for j in i.ravel()]
                                      ).reshape(*i.shape, d), consts=(idx,))  # fmt: skip


def _shape_case(fn, oracle, min_dims=1):
    def build(data):
        x = data.draw(tst.arrays(tst.shapes(min_dims=min_dims, max_dims=3)))
        axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
        return Case(lambda t: fn(t, axis), [x], lambda a: oracle(a, axis))

    return build


def _stack(data):
    x = data.draw(tst.arrays(tst.shapes(max_dims=2)))
    y = data.draw(tst.arrays(x.shape))
    axis = data.draw(st.integers(-x.ndim - 1, x.ndim))

    def oracle(a, b):
        out = np.zeros((2, *a.shape))
        out[0], out[1] = a, b
        return np.moveaxis(out, 0, axis)

    return Case(lambda a, b: F.stack([a, b], axis), [x, y], oracle)


def _split(data):
    x = data.draw(tst.arrays(tst.shapes(max_dims=3)))
    axis = data.draw(st.integers(0, x.ndim - 1))
    size = data.draw(st.integers(1, 3))
    pieces = [(k, min(k + size, x.shape[axis])) for k in range(0, x.shape[axis], size)]
    u = [data.draw(tst.arrays(np.take(x, range(a, b), axis).shape)) for a, b in pieces]

    def fn(t):  # one tensor out: the pieces, weighted so that each one's gradient matters
        pieces = zip(F.split(t, size, axis), u, strict=True)
        return sum(
            ((p * c.astype(t.dtype)).sum() for p, c in pieces), Tensor(np.zeros((), t.dtype))
        )

    def oracle(a):
        return sum(float((np.take(a, range(lo, hi), axis) * c).sum())
                   for (lo, hi), c in zip(pieces, u, strict=True))  # fmt: skip

    return Case(fn, [x], lambda a: np.asarray(oracle(a)))


COMPOSITES: dict[str, Callable[[Any], Case]] = {
    "conv_transpose2d": _conv_t,
    "pad_reflect": _reflect,
    "var": _var(F.var, root=False),
    "std": _var(F.std, root=True),
    "mse_loss": _loss(F.mse_loss, lambda a, b: (a - b) ** 2, "any"),
    "l1_loss": _loss(F.l1_loss, lambda a, b: np.abs(a - b), "offset"),
    "nll_loss": _classification(F.nll_loss, log_probs=True),
    "cross_entropy": _classification(F.cross_entropy, log_probs=False),
    "embedding": _embedding,
    "flip": _shape_case(F.flip, lambda a, ax: np.flip(a, ax)),
    "unsqueeze": _shape_case(F.unsqueeze, lambda a, ax: np.expand_dims(a, ax)),
    "min": _shape_case(lambda t, ax: F.min(t, ax), lambda a, ax: a.min(axis=ax)),
    "square": lambda data: Case(F.square, [data.draw(tst.arrays(tst.shapes()))], lambda a: a * a),
    "rpow": lambda data: Case(
        lambda t: 3.0**t, [data.draw(tst.arrays(tst.shapes()))], lambda a: np.exp(a * math.log(3.0))
    ),  # fmt: skip
    "stack": _stack,
    "split": _split,
}
FEW = settings(max_examples=12)


@pytest.mark.parametrize("name", sorted(COMPOSITES))
@FEW
@given(data=st.data())
def test_composite_forward_and_gradients(name, data):
    case = COMPOSITES[name](data)
    if name == "min":  # distinct values: no ties
        case.arrays = [np.argsort(np.argsort(a, axis=None)).reshape(a.shape) * 0.1
                       for a in case.arrays]  # fmt: skip
    xs = [Tensor(a, requires_grad=True) for a in case.arrays]
    out = case.fn(*xs, *case.consts)
    np.testing.assert_allclose(out.numpy(), case.oracle(*case.arrays, *case.consts),
                               rtol=1e-10, atol=1e-12)  # fmt: skip
    fn = lambda *ts: case.fn(*ts, *case.consts)  # noqa: E731
    assert gradcheck(fn, *xs)
    assert gradgradcheck(fn, *xs)
    x32 = [Tensor(a.astype(np.float32), requires_grad=True) for a in case.arrays]
    y32 = case.fn(*x32, *case.consts)
    assert y32.dtype == np.float32
    y32.sum().backward()
    assert all(t.grad.dtype == np.float32 and t.grad.shape == t.shape for t in x32)


# ----------------------------------------------------------------------------- argument errors
X = Tensor(np.zeros((2, 3)))
IMG = Tensor(np.zeros((1, 2, 3, 3)))
ERRORS = [
    # axes
    (lambda: F.cat([X, X], axis=2), ValueError, r"^cat: axis 2 is out of range for 2 dims"),
    (lambda: F.cat([X, Tensor(np.zeros((3, 3)))], 1), ValueError, r"^cat: inputs of shapes"),
    (lambda: F.cat(X), TypeError, r"^cat: expected a non-empty list"),
    (lambda: F.stack([X, X.T]), ValueError, r"^stack: all shapes must be equal"),
    (lambda: F.unsqueeze(X, 1.0), TypeError, r"^unsqueeze: axis must be one int"),
    (lambda: F.var(X, axis=1, dim=1), TypeError, r"^var: got both axis and its alias dim"),
    (lambda: F.argmax(X, 5), ValueError, r"^argmax: axis 5 is out of range"),
    # sizes and shapes
    (
        lambda: F.split(X, [1, 1], 1),
        ValueError,
        r"^split: sections \[1, 1\] must .* adding up to 3",
    ),
    (lambda: F.chunk(X, 0), ValueError, r"^chunk: chunks must be a positive int"),
    (lambda: F.expand(X, -1, 2, 3), ValueError, r"^expand: sizes"),
    (lambda: F.broadcast_to(X, (3, 3)), ValueError, r"^broadcast_to: cannot broadcast"),
    (lambda: F.where(np.ones((2, 3)), X, X), TypeError, r"^where: cond must be boolean"),
    (lambda: F.maximum(X, np.zeros(4)), ValueError, r"^maximum: operands with shapes"),
    # padding
    (lambda: F.pad(X, (1,)), ValueError, r"^pad: pad must hold \(before, after\) pairs"),
    (lambda: F.pad(X, (-1, 1)), ValueError, r"^pad: pad widths must be non-negative"),
    (lambda: F.pad(X, (3, 0), mode="reflect"), ValueError, r"^pad: reflect padding \(3, 0\)"),
    (lambda: F.pad(X, (1, 1), mode="wrap"), ValueError, r"^pad: mode must be"),
    # numeric arguments
    (lambda: F.clip(X), ValueError, r"^clip: at least one of min and max"),
    (lambda: F.clip(X, "0"), TypeError, r"^clip: min must be a number or None"),
    (lambda: F.var(Tensor(np.zeros(1))), ValueError, r"^var: 1 elements per group leave no"),
    (lambda: F.norm(X, p=-1), ValueError, r"^norm: p must be a number > 0"),
    (lambda: F.leaky_relu(X, "a"), TypeError, r"^leaky_relu: negative_slope must be a number"),
    (lambda: F.gelu(X, "erf"), ValueError, r"^gelu: approximate must be 'none' or 'tanh'"),
    (lambda: F.softplus(X, 0), ValueError, r"^softplus: beta must be positive"),
    (lambda: F.dropout(X, 1.5), ValueError, r"^dropout: p must be a number in \[0, 1\]"),
    (lambda: F.pow(-2.0, X), ValueError, r"^pow: a number raised to a Tensor needs a positive"),
    # losses
    (lambda: F.mse_loss(X, np.zeros(3)), ValueError, r"^mse_loss: input \(2, 3\) and target"),
    (lambda: F.l1_loss(X, X, reduction="avg"), ValueError, r"^l1_loss: reduction must be"),
    (
        lambda: F.binary_cross_entropy_with_logits(X, np.zeros((3, 2))),
        ValueError,
        r"^binary_cross_entropy_with_logits: input \(2, 3\)",
    ),  # fmt: skip
    (lambda: F.nll_loss(X, [0, 3]), ValueError, r"^nll_loss: target classes must lie in \[0, 3\)"),
    (lambda: F.nll_loss(X, [0.0, 1.0]), ValueError, r"^nll_loss: target must be \(N,\)"),
    (lambda: F.cross_entropy(X, np.zeros((2, 2)), "sum"), ValueError, r"^cross_entropy: prob"),
    # layers
    (
        lambda: F.conv_transpose2d(IMG, np.zeros((3, 1, 2, 2))),
        ValueError,
        r"^conv_transpose2d: channel mismatch: x \(1, 2, 3, 3\) has 2 channels",
    ),  # fmt: skip
    (
        lambda: F.conv_transpose2d(IMG, np.zeros((2, 1, 2, 2)), output_padding=1),
        ValueError,
        r"^conv_transpose2d: output_padding \(1, 1\) must be .* smaller than the stride",
    ),
    (
        lambda: F.conv_transpose2d(IMG, np.zeros((2, 1, 2, 2)), stride="2"),
        TypeError,
        r"^conv_transpose2d: stride must be an int or a pair",
    ),  # fmt: skip
    (
        lambda: F.conv_transpose2d(IMG, np.zeros((2, 1, 1, 1)), padding=2),
        ValueError,
        r"^conv_transpose2d: padding \(2, 2\) leaves no output",
    ),  # fmt: skip
    (
        lambda: F.conv_transpose2d(IMG, np.zeros((2, 4, 2, 2)), np.zeros(3)),
        ValueError,
        r"^conv_transpose2d: b must have shape \(4,\)",
    ),  # fmt: skip
    (lambda: F.embedding(np.array([0.0]), X), TypeError, r"^embedding: indices must be integers"),
    (lambda: F.embedding(np.array([2]), X), ValueError, r"^embedding: indices must lie in \[0, 2"),
]


@pytest.mark.parametrize(("call", "exc", "message"), ERRORS, ids=[e[2][1:30] for e in ERRORS])
def test_bad_arguments_raise_clear_errors(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


# ----------------------------------------------------------------------------- behaviours
def test_argmax_and_argmin_are_integer_tensors_without_gradient():
    x = Tensor(np.array([[1.0, 3.0, 3.0], [-1.0, -2.0, 0.0]]), requires_grad=True)
    i = F.argmax(x, axis=1)
    assert i.dtype == np.int64 and not i.requires_grad and i.op is None
    np.testing.assert_array_equal(i.numpy(), [1, 2])  # ties: the first index
    np.testing.assert_array_equal(x.argmin(dim=1, keepdim=True).numpy(), [[0], [1]])
    assert x.argmax().item() == 1
    with pytest.raises(RuntimeError, match="does not require grad"):
        i.backward()
    with pytest.raises(RuntimeError, match="output 0 .* does not require grad"):
        grad(i, x)


def test_bce_with_logits_is_exact_at_huge_logits():
    x = Tensor(np.array([1e4, -1e4, 1e4, -1e4, 0.0]), requires_grad=True)
    t = np.array([1.0, 0.0, 0.0, 1.0, 0.5])
    loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    np.testing.assert_array_equal(loss.numpy(), [0.0, 0.0, 1e4, 1e4, math.log(2)])
    loss.sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 1.0, -1.0, 0.0])
    x32 = Tensor(np.array([1e4, -1e4], np.float32), requires_grad=True)
    y32 = F.binary_cross_entropy_with_logits(x32, np.array([0.0, 1.0], np.float32))
    assert y32.dtype == np.float32 and y32.item() == 1e4


def test_maximum_and_minimum_split_the_gradient_at_ties_like_pytorch():
    a, b = Tensor([1.0, 2.0, 3.0], requires_grad=True), Tensor([1.0, 0.0, 5.0], requires_grad=True)
    F.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad, [0.5, 1.0, 0.0])
    np.testing.assert_array_equal(b.grad, [0.5, 0.0, 1.0])
    assert F.minimum(a, b).op.kinks(a.numpy(), b.numpy(), margin=1e-6)[0].tolist() == [
        True, False, False]  # fmt: skip


def test_dropout_is_seeded_scales_the_kept_and_is_off_outside_training():
    x = Tensor(np.ones((200, 50), np.float32), requires_grad=True)
    y = F.dropout(x, 0.3, rng=7)
    np.testing.assert_array_equal(y.numpy(), F.dropout(x, 0.3, rng=7).numpy())
    assert not np.array_equal(y.numpy(), F.dropout(x, 0.3, rng=8).numpy())
    kept = y.numpy() != 0
    assert abs(kept.mean() - 0.7) < 0.02 and y.dtype == np.float32
    np.testing.assert_allclose(y.numpy()[kept], 1 / 0.7, rtol=1e-6)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, y.numpy())  # d/dx of x * mask / (1 - p)
    assert F.dropout(x, 0.3, training=False) is x and F.dropout(x, 0.0) is x
    np.testing.assert_array_equal(F.dropout(x, 1.0, rng=0).numpy(), 0)
    g = np.random.default_rng(1)
    assert not np.array_equal(F.dropout(x, 0.5, rng=g).numpy(), F.dropout(x, 0.5, rng=g).numpy())


def test_dim_and_keepdim_are_aliases_of_axis_and_keepdims():
    x = Tensor(np.arange(24.0).reshape(2, 3, 4))
    for name in ("var", "std", "logsumexp", "norm", "min", "argmax"):
        a = getattr(F, name)(x, axis=1, keepdims=True).numpy()
        np.testing.assert_array_equal(getattr(x, name)(dim=1, keepdim=True).numpy(), a)
    assert F.cat([x, x], dim=2).shape == (2, 3, 8)
    assert x.flip(dim=(0, 1)).numpy()[0, 0, 0] == 20


def test_tensor_methods_delegate_to_functional():
    x = Tensor(np.array([[0.5, -2.0, 3.0]]))
    np.testing.assert_array_equal(abs(x).numpy(), [[0.5, 2.0, 3.0]])
    np.testing.assert_array_equal(x.clamp(-1, 1).numpy(), x.clip(-1, 1).numpy())
    np.testing.assert_allclose((2**x).numpy(), 2 ** x.numpy(), rtol=1e-6)
    assert x.unsqueeze(0).shape == (1, 1, 3) and x.squeeze().shape == (3,)
    assert x.expand(4, -1).shape == (4, 3) and x.broadcast_to((2, 3)).shape == (2, 3)
    assert [t.shape for t in x.split(2, 1)] == [(1, 2), (1, 1)] and len(x.chunk(3, 1)) == 3
    np.testing.assert_array_equal(x.where(x.numpy() > 0, 0.0).numpy(), [[0.5, 0.0, 3.0]])
    for name in ("sqrt", "sin", "cos", "erf", "log1p", "square"):
        y = abs(x) if name in ("sqrt", "log1p") else x
        np.testing.assert_array_equal(getattr(y, name)().numpy(), getattr(F, name)(y).numpy())


def test_conv_transpose2d_is_the_adjoint_of_conv2d():
    """<conv2d(z, w), x> == <z, conv_transpose2d(x, w)> for every geometry conv2d accepts."""
    rng = np.random.default_rng(0)
    for stride, padding, out_pad in (((2, 1), (1, 0), (1, 0)), (3, 1, 2), (1, (0, 2), 0)):
        x, w = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((3, 2, 3, 5))
        y = F.conv_transpose2d(x, w, stride=stride, padding=padding, output_padding=out_pad)
        z = rng.standard_normal(y.shape)
        lhs = np.vdot(F.conv2d(z, w, stride=stride, padding=padding).numpy(), x)
        assert np.isclose(lhs, np.vdot(z, y.numpy()), rtol=1e-12)


def test_new_nn_modules():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 3, 5, 5)).astype(np.float32))
    up = nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1, rng=0)
    assert up(x).shape == (2, 4, 10, 10) and up(x).dtype == np.float32
    assert [n for n, _ in up.named_parameters()] == ["weight", "bias"]
    assert up.weight.shape == (3, 4, 3, 3) and "output_padding=1" in repr(up)
    emb = nn.Embedding(10, 4, rng=0)
    np.testing.assert_array_equal(emb(np.array([[3, 3]])).numpy()[0, 1], emb.weight.numpy()[3])
    for module, fn in ((nn.LeakyReLU(0.2), lambda t: F.leaky_relu(t, 0.2)),
                       (nn.GELU("tanh"), lambda t: F.gelu(t, "tanh")), (nn.Tanh(), F.tanh),
                       (nn.Identity(), lambda t: t)):  # fmt: skip
        np.testing.assert_array_equal(module(x).numpy(), fn(x).numpy())
    t = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    assert nn.MSELoss()(x, t).item() == pytest.approx(float(((x.numpy() - t) ** 2).mean()))
    assert nn.MSELoss("sum")(x, t).shape == () and nn.MSELoss("none")(x, t).shape == x.shape
    p = rng.random((2, 3))
    assert nn.BCEWithLogitsLoss("none")(Tensor(p), p).shape == (2, 3)
    logits = Tensor(rng.standard_normal((4, 3)))
    assert nn.CrossEntropyLoss()(logits, [0, 1, 2, 0]).item() == pytest.approx(
        F.softmax_cross_entropy(logits, [0, 1, 2, 0]).item())  # fmt: skip
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        nn.Nope  # noqa: B018
