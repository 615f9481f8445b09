"""Tests added while triaging mutmut's survivors in ``tinygrad_cnn/ops`` (see scripts/MUTATION.md).

Each pins a documented behaviour the rest of the suite left open: error messages that name the
op and the argument, the ``None`` an op returns for an input that needs no gradient, gradient
dtypes as an op returns them, the tie masks of ``kinks``, and a few shape corner cases.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinygrad_cnn.functional as F
from tinygrad_cnn import Function, Tensor, col2im, im2col, on_op_backward


def _op(name: str, **attrs):
    return Function.registry[name](**attrs)


# --------------------------------------------------------------------------- messages

X4 = np.zeros((1, 1, 3, 3))
C4 = np.zeros((4, 4))  # the col of X4 for a 2x2 kernel


@pytest.mark.parametrize(
    ("call", "exc", "message"),
    [
        (lambda: im2col(X4, "2"), TypeError, r"^im2col: kernel_size must be an int"),
        (lambda: im2col(X4, 2, stride=1.0), TypeError, r"^im2col: stride must be an int"),
        (lambda: im2col(X4, 2, padding=(1,)), TypeError, r"^im2col: padding must be an int"),
        (lambda: im2col(X4, 5), ValueError, r"^im2col: kernel 5x5 is larger"),
        (lambda: col2im(C4, X4.shape, "2"), TypeError, r"^col2im: kernel_size "),
        (
            lambda: col2im(C4, X4.shape, 2, stride=None),
            TypeError,
            r"^col2im: stride ",
        ),
        (
            lambda: col2im(C4, X4.shape, 2, padding=[]),
            TypeError,
            r"^col2im: padding ",
        ),
        (
            lambda: col2im(C4, X4.shape, 4),
            ValueError,
            r"^col2im: kernel 4x4 is larger",
        ),
        (lambda: col2im(np.zeros((4, 5)), X4.shape, 2), ValueError, r"^col2im: col has shape"),
        (lambda: col2im(C4, "1133", 2), TypeError, r"^col2im: x_shape must be"),
        (lambda: F.avg_pool2d(Tensor(X4), 3, padding=2), ValueError, r"^avg_pool2d: padding "),
        (lambda: F.avg_pool2d(Tensor(X4), 4), ValueError, r"^avg_pool2d: kernel 4x4 is larger"),
        (lambda: F.max_pool2d(Tensor(X4), 3, padding=2), ValueError, r"^max_pool2d: padding "),
        (lambda: F.max_pool2d(Tensor(X4), 4), ValueError, r"^max_pool2d: kernel 4x4 is larger"),
        (
            lambda: _op("MaxPool2d", kernel=(4, 4), stride=(1, 1), padding=(0, 0)).kinks(
                X4, margin=0.1
            ),
            ValueError,
            r"^max_pool2d: kernel 4x4 is larger",
        ),
        (
            lambda: F.transpose(Tensor(np.zeros((2, 3))), (0, 0)),
            ValueError,
            r"^transpose: axes \(0, 0\) are not a permutation of the 2 dims of an input of "
            r"shape \(2, 3\)",
        ),
        (
            lambda: F.getitem(Tensor(np.zeros(3)), 5),
            IndexError,
            r"^getitem: .*index 5 .* \(input shape \(3,\)\)",
        ),
    ],
)
def test_errors_name_the_op_and_the_argument(call, exc, message) -> None:
    with pytest.raises(exc, match=message):
        call()


# --------------------------------------------------------------------------- backward contract

CASES = {
    "sub": (lambda a, b: a - b, (3, 4), (3, 4)),
    "mul": (lambda a, b: a * b, (3, 4), (4,)),
    "div": (lambda a, b: a / (b * b + 1.0), (3, 4), (3, 4)),
    "matmul": (lambda a, b: a @ b, (3, 4), (4, 2)),
    "linear": (lambda a, b: F.linear(a, b), (3, 4), (4, 2)),
    "linear_bias": (lambda a, b: F.linear(a, Tensor(np.ones((4, 2), np.float32)), b), (3, 4), (2,)),
    "conv2d": (lambda a, b: F.conv2d(a, b), (2, 1, 5, 5), (3, 1, 2, 2)),
}


def _grad_inputs(fn, shape_a, shape_b, need_a: bool, need_b: bool, graph: bool):
    """Run backward and record what each op's backward returned, before the engine's casts."""
    rng = np.random.default_rng(0)
    a = Tensor(rng.normal(size=shape_a).astype(np.float32), requires_grad=need_a)
    b = Tensor(rng.normal(size=shape_b).astype(np.float32), requires_grad=need_b)
    seen = []
    with on_op_backward(lambda op, gy, gxs: seen.append((op, gy, op.needs_input_grad, gxs))):
        (fn(a, b) * 1.5).sum().backward(create_graph=graph)
    return seen


@pytest.mark.parametrize("graph", [False, True], ids=["backward", "backward_graph"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("need", [(True, False), (False, True)])
def test_backward_returns_none_for_inputs_that_need_no_gradient(case, need, graph) -> None:
    """Documented: ops compute nothing for an input whose ``needs_input_grad`` is False (they
    return None, or pass the upstream gradient itself through, as Add does)."""
    fn, sa, sb = CASES[case]
    for op, gy, needs, gxs in _grad_inputs(fn, sa, sb, *need, graph):
        for i, (n, g) in enumerate(zip(needs, gxs, strict=True)):
            if not n:
                assert g is None or g is gy, f"{op.name} computed a gradient for input {i}"
            else:
                assert g is not None and g.dtype == np.float32, (op.name, i)


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: F.max(x),
        lambda x: F.max(x, axis=1),
        lambda x: F.getitem(x, (slice(None), 1)),
        lambda x: F.getitem(x, np.array([0, 0, 1])),
        lambda x: F.avg_pool2d(x.reshape((1, 1, 3, 4)), 2, stride=1, padding=1),
        lambda x: F.max_pool2d(x.reshape((1, 1, 3, 4)), 2, stride=1, padding=1),
        lambda x: F.softmax_cross_entropy(x, np.array([0, 1, 3])),
    ],
    ids=["max", "max_axis", "getitem_basic", "getitem_array", "avg_pool", "max_pool", "sce"],
)
@pytest.mark.parametrize("graph", [False, True], ids=["backward", "backward_graph"])
def test_op_gradients_keep_float32(fn, graph) -> None:
    """float32 in, float32 gradients out of every op's backward (not only after the engine)."""
    x = Tensor(np.random.default_rng(1).permutation(12).reshape(3, 4).astype(np.float32), True)
    dtypes = []
    with on_op_backward(lambda op, gy, gxs: dtypes.extend(g.dtype for g in gxs if g is not None)):
        (fn(x) * 2.0).sum().backward(create_graph=graph)
    assert dtypes and set(dtypes) == {np.dtype(np.float32)}


# --------------------------------------------------------------------------- shapes


def test_max_over_all_with_keepdims_keeps_every_axis() -> None:
    x = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y = F.max(x, keepdims=True)
    assert y.shape == (1, 1) and y.numpy()[0, 0] == 5
    (y * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0, 0], [0, 0, 2]])


@pytest.mark.parametrize("graph", [False, True], ids=["backward", "backward_graph"])
def test_transpose_accepts_negative_axes_and_inverts_them(graph) -> None:
    x = Tensor(np.arange(24.0).reshape(2, 3, 4), requires_grad=True)
    y = F.transpose(x, (-1, 0, -2))  # (4, 2, 3)
    assert y.shape == (4, 2, 3)
    gy = np.arange(24.0).reshape(4, 2, 3)
    y.backward(gy, create_graph=graph)
    grad = x.grad.numpy() if isinstance(x.grad, Tensor) else x.grad
    np.testing.assert_array_equal(grad, np.transpose(gy, (1, 2, 0)))
    v = F.transpose(Tensor(np.arange(3.0)), (-1,))
    np.testing.assert_array_equal(v.numpy(), [0, 1, 2])


def test_getitem_with_a_basic_index_scatters_the_gradient() -> None:
    x = Tensor(np.zeros((3, 4)), requires_grad=True)
    F.getitem(x, (slice(1, 3), 2)).backward(np.array([5.0, 7.0]))
    expected = np.zeros((3, 4))
    expected[1:3, 2] = [5.0, 7.0]
    np.testing.assert_array_equal(x.grad, expected)


# --------------------------------------------------------------------------- kinks


def test_max_kinks_mark_elements_within_twice_the_margin_of_a_tie() -> None:
    """``kinks`` flags elements within ``2 * margin`` of their group's max (both ends)."""
    m = 0.25
    x = np.array([[1.0, 0.5, 0.0, 1.0], [3.0, 2.4, 2.0, -1.0]])  # row 0: 0.5 apart; row 1: 0.6
    (over_all,) = _op("Max", axis=None, keepdims=False).kinks(x, margin=m)
    assert over_all.shape == x.shape and not over_all.any()  # 3.0 alone near the global max
    x2 = x.copy()
    x2[1, 1] = 2.5  # exactly 2 * margin below 3.0: a kink
    (over_all,) = _op("Max", axis=None, keepdims=False).kinks(x2, margin=m)
    np.testing.assert_array_equal(over_all, [[0, 0, 0, 0], [1, 1, 0, 0]])
    (rows,) = _op("Max", axis=1, keepdims=False).kinks(x, margin=m)
    np.testing.assert_array_equal(rows, [[1, 1, 0, 1], [0, 0, 0, 0]])
    (cols,) = _op("Max", axis=0, keepdims=True).kinks(x.T, margin=m)
    np.testing.assert_array_equal(cols, np.array([[1, 1, 0, 1], [0, 0, 0, 0]], bool).T)


def test_max_pool_kinks_ignore_the_padding_and_use_twice_the_margin() -> None:
    m = 0.25
    pool = _op("MaxPool2d", kernel=(2, 2), stride=(2, 2), padding=(1, 1))
    # each window of the padded 4x4 input holds one real element: no ties, whatever values
    x = np.array([[[[-0.01, -5.0], [-7.0, -9.0]]]])
    (mask,) = pool.kinks(x, margin=m)
    assert not mask.any()
    pool = _op("MaxPool2d", kernel=(2, 2), stride=(2, 2), padding=(0, 1))
    # windows: [pad, a; pad, c] and [b, pad; d, pad] over x = [[a, b], [c, d]]
    x = np.array([[[[1.0, 2.0], [0.5, 1.375]]]])  # a - c = 0.5 = 2m: a tie; b - d = 2.5m: none
    (mask,) = pool.kinks(x, margin=m)
    np.testing.assert_array_equal(mask[0, 0], [[True, False], [True, False]])


# --------------------------------------------------------------------------- matmul, axes


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ((3,), (3, 2), r"^matmul: both operands need at least 2 dims, got shapes \(3,\) and"),
        ((2, 3), (3,), r"^matmul: both operands need at least 2 dims"),
        ((2, 5, 3), (4, 2), r"^matmul: inner dimensions differ: a \(2, 5, 3\) has 3 columns, "),
        ((2, 5, 3), (3, 3, 4), r"^matmul: batch dims of a \(2, 5, 3\) and b \(3, 3, 4\) cannot"),
        ((4, 2, 2, 3), (3, 3, 4), r"^matmul: batch dims of a \(4, 2, 2, 3\)"),
    ],
)
def test_matmul_errors_name_the_shapes(a, b, message) -> None:
    with pytest.raises(ValueError, match=message):
        Tensor(np.ones(a)) @ Tensor(np.ones(b))


@pytest.mark.parametrize("batched", [False, True])
def test_matmul_promotes_mixed_dtypes_like_numpy(batched) -> None:
    shape_a, shape_b = ((2, 3, 4), (4, 5)) if batched else ((3, 4), (4, 5))
    a64, b32 = np.ones(shape_a), np.ones(shape_b, np.float32)
    assert (Tensor(a64) @ Tensor(b32)).dtype == np.float64
    assert (Tensor(b32.T.copy()) @ Tensor(np.ones(shape_a).swapaxes(-1, -2))).dtype == np.float64


def test_batched_matmul_inside_threads_matches_numpy() -> None:
    from tinygrad_cnn import threads

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(8, 64, 64)), rng.normal(size=(64, 64))
    with threads():
        y = (Tensor(a) @ Tensor(b)).numpy()
    np.testing.assert_allclose(y, a @ b, rtol=1e-12)


@pytest.mark.parametrize(
    ("axis", "message"),
    [(2, r"^sum: axis 2 is out of range for an input with 2 dims$"), ((0, -2), r"^sum: repeated")],
)
def test_reduction_axes_are_checked(axis, message) -> None:
    with pytest.raises(ValueError, match=message):
        F.sum(Tensor(np.ones((2, 3))), axis=axis)


def test_reduction_over_axis_0_of_a_scalar_is_refused_and_axis_minus_1_of_a_vector_works() -> None:
    with pytest.raises(ValueError, match=r"axis 1 is out of range for an input with 1 dims"):
        F.sum(Tensor(np.ones(3)), axis=1)
    assert F.sum(Tensor(np.ones(3)), axis=-1).numpy() == 3


def test_binary_op_shape_error_is_clear() -> None:
    with pytest.raises(ValueError, match=r"^add: operands with shapes \(2,\) and \(3,\) cannot be "
                       r"broadcast together$"):  # fmt: skip
        Tensor(np.ones(2)) + Tensor(np.ones(3))


def test_relu_kinks_include_the_margin_itself() -> None:
    (mask,) = _op("ReLU").kinks(np.array([-0.5, -0.25, 0.0, 0.25, 0.5]), margin=0.25)
    np.testing.assert_array_equal(mask, [False, True, True, True, False])


@pytest.mark.parametrize("graph", [False, True], ids=["backward", "backward_graph"])
def test_cast_sends_the_gradient_back_in_the_input_dtype(graph) -> None:
    x = Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    y = F.cast(x, np.float64)
    assert y.dtype == np.float64
    seen = []
    with on_op_backward(lambda op, gy, gxs: seen.extend(g.dtype for g in gxs) if op.name == "Cast"
                        else None):  # fmt: skip
        (y * y).sum().backward(create_graph=graph)
    assert seen == [np.dtype(np.float32)]
    g = x.grad.numpy() if isinstance(x.grad, Tensor) else x.grad
    assert g.dtype == np.float32
    np.testing.assert_array_equal(g, [2.0, 4.0])
