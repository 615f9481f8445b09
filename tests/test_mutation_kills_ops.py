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


# ------------------------------------------------------------------------- second pass (full run)

_RUNNING = (np.zeros(3), np.ones(3))  # float64 buffers: the op casts them to x's dtype
MORE_CASES = {
    "cat": (lambda a, b: F.cat([a, b], axis=1), (3, 4), (3, 2)),
    "batch_norm_weight": (lambda a, b: F.batch_norm(a, None, None, b, training=True), (4, 3), (3,)),
    "batch_norm_bias": (
        lambda a, b: F.batch_norm(a, None, None, None, b, True),
        (2, 3, 2, 2),
        (3,),
    ),
    "batch_norm_eval": (
        lambda a, b: F.batch_norm(a, *(r.copy() for r in _RUNNING), b, b * 2.0),
        (4, 3, 2),
        (3,),
    ),
}


@pytest.mark.parametrize("graph", [False, True], ids=["backward", "backward_graph"])
@pytest.mark.parametrize("case", MORE_CASES)
@pytest.mark.parametrize("need", [(True, False), (False, True)])
def test_more_ops_return_none_for_inputs_that_need_no_gradient(case, need, graph) -> None:
    """The contract of ``test_backward_returns_none_for_inputs_that_need_no_gradient`` for
    cat and batch norm (weight, bias; evaluation with float64 running statistics and float32
    input, where the gradients stay float32)."""
    fn, sa, sb = MORE_CASES[case]
    seen = _grad_inputs(fn, sa, sb, *need, graph)
    assert any(op.name in ("Cat", "BatchNorm") for op, *_ in seen)
    for op, gy, needs, gxs in seen:
        for i, (n, g) in enumerate(zip(needs, gxs, strict=True)):
            if not n:
                assert g is None or g is gy, f"{op.name} computed a gradient for input {i}"
            else:
                assert g is not None and g.dtype == np.float32, (op.name, i)


def test_conv2d_backward_graph_leaves_out_a_bias_that_needs_no_gradient() -> None:
    """(The first-order ``backward`` gets the weight and bias gradients from one GEMM and
    returns both when either is needed; ``backward_graph`` builds each on its own.)"""
    x = Tensor(np.ones((2, 1, 5, 5), np.float32), requires_grad=True)
    b = Tensor(np.ones(3, np.float32))
    seen = _grad_inputs(lambda a, w: F.conv2d(x, w, b) * a, (1,), (3, 1, 2, 2), False, True, True)
    (gxs,) = [gxs for op, _, _, gxs in seen if op.name == "Conv2d"]
    assert gxs[0] is not None and gxs[1] is not None and gxs[2] is None


def _adjoint(name: str, **attrs):
    return lambda a, b: Function.registry[name].apply(a, b, stride=(1, 1), padding=(0, 0), **attrs)


ADJOINT_CASES = {  # the ops a conv's gradient is made of under create_graph
    "grad_input": (_adjoint("Conv2dGradInput", x_shape=(2, 1, 5, 5)), (2, 3, 4, 4), (3, 1, 2, 2)),
    "grad_weight": (_adjoint("Conv2dGradWeight", w_shape=(3, 1, 2, 2)), (2, 1, 5, 5), (2, 3, 4, 4)),
}


@pytest.mark.parametrize("case", ADJOINT_CASES)
@pytest.mark.parametrize("need", [(True, False), (False, True), (True, True)])
def test_conv_adjoint_ops_return_a_gradient_exactly_for_the_inputs_that_need_one(
    case, need
) -> None:
    """First-order ``backward`` of the conv adjoints: an input that needs no gradient gets
    None, one that needs it gets a non-zero float32 gradient. (Their ``backward_graph``
    builds both gradients whatever ``needs_input_grad`` says, so only ``backward`` is pinned.)"""
    fn, sa, sb = ADJOINT_CASES[case]
    seen = [s for s in _grad_inputs(fn, sa, sb, *need, False) if s[0].name.startswith("Conv2dG")]
    assert len(seen) == 1
    _, _, needs, gxs = seen[0]
    assert needs == need
    for n, g in zip(needs, gxs, strict=True):
        assert (g is not None) == n
        if n:
            assert g.dtype == np.float32 and np.abs(g).sum() > 0


@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("reduce", [F.mean, F.sum])
def test_reduction_over_one_axis_differentiates_with_create_graph(reduce, axis) -> None:
    """A reduced axis of a non-keepdims result is put back in place (not broadcast from the
    right) in ``backward_graph``: a square input shows a transposed gradient."""
    x = Tensor(np.ones((3, 3)), requires_grad=True)
    gy = np.array([1.0, 2.0, 4.0])
    reduce(x, axis=axis).backward(gy, create_graph=True)
    scale = 1 / 3 if reduce is F.mean else 1.0
    expected = np.broadcast_to(np.expand_dims(gy, axis) * scale, (3, 3))
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-15)


def _bn(x, gamma, beta, **attrs):
    return Function.registry["BatchNorm"].apply(
        Tensor(x), Tensor(gamma), Tensor(beta), eps=1e-5, **attrs
    )


G3 = np.ones(3)


@pytest.mark.parametrize(
    ("call", "exc", "message"),
    [
        (lambda: _bn(np.ones(3), G3, G3), ValueError,
         r"^batch_norm: input must be \(N, C\) or \(N, C, H, W\), got shape \(3,\)$"),
        (lambda: _bn(np.ones((2, 3), np.int64), G3, G3), TypeError,
         r"^batch_norm: input must be floating point, got dtype int64$"),
        (lambda: _bn(np.ones((2, 3)), np.ones(2), G3), ValueError,
         r"^batch_norm: weight must have shape \(3,\) for input \(2, 3\), got \(2,\)$"),
        (lambda: _bn(np.ones((2, 3)), G3, np.ones(4)), ValueError,
         r"^batch_norm: bias must have shape \(3,\) for input \(2, 3\), got \(4,\)$"),
        (lambda: _bn(np.ones((1, 3)), G3, G3), ValueError,
         r"^batch_norm: training needs more than one value per channel to take batch "
         r"statistics, got input of shape \(1, 3\)$"),
        (lambda: F.batch_norm(Tensor(np.ones((1, 3, 1, 1))), None, None, training=True),
         ValueError, r"^batch_norm: training needs more than one value per channel"),
        (lambda: F.cat([Tensor(np.ones((2, 3))), Tensor(np.ones((3, 4)))]), ValueError,
         r"^cat: inputs of shapes \(2, 3\), \(3, 4\) cannot be joined along axis 0: they must "
         r"match except along it$"),
        (lambda: Function.registry["SumTo"].apply(Tensor(np.ones((2, 3))), shape=(4,)),
         ValueError, r"^sum_to: an input of shape \(2, 3\) cannot be summed to \(4,\)$"),
        (lambda: F.transpose(Tensor(np.ones((2, 3))), (2, 1)), ValueError,
         r"^transpose: axes \(2, 1\) are not a permutation of the 2 dims"),
    ],
)  # fmt: skip
def test_more_errors_name_the_op_the_argument_and_the_shapes(call, exc, message) -> None:
    with pytest.raises(exc, match=message):
        call()


def test_batch_norm_in_evaluation_accepts_one_sample() -> None:
    """The one-value-per-channel refusal is for training only."""
    y = _bn(np.full((1, 3), 2.0), G3, G3, mean=np.ones(3), var=np.full(3, 4.0))
    np.testing.assert_allclose(y.numpy(), [[1.5] * 3], rtol=1e-5)


MIXES = (
    r"^im2col: mixes the book's keywords \(filter_h, filter_w, pad\) with ours "
    r"\(kernel_size, padding\)$"
)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"filter_h": 2, "kernel_size": 2}, MIXES),
        ({"filter_w": 2, "padding": 0}, MIXES),
        ({"pad": 0, "kernel_size": 2}, MIXES),
        (
            {"kernel_size": 2, "filters": 3},
            r"^im2col: unexpected keyword argument\(s\) \['filters'\]$",
        ),
    ],
)
def test_im2col_refuses_mixed_or_unknown_keywords(kwargs, message) -> None:
    """Each of the book's keywords and each of ours is recognised on its own."""
    with pytest.raises(TypeError, match=message):
        im2col(X4, **kwargs)


def test_im2col_takes_the_books_keywords_alone() -> None:
    x = np.arange(18.0).reshape(1, 2, 3, 3)
    np.testing.assert_array_equal(
        im2col(x, filter_h=2, filter_w=2, pad=1, stride=2), im2col(x, 2, 2, 2, 1)
    )
    np.testing.assert_array_equal(im2col(x, filter_h=2, filter_w=2), im2col(x, kernel_size=2))


_X = np.arange(50.0).reshape(1, 2, 5, 5)


@pytest.mark.parametrize(
    ("args", "kwargs", "same_as"),
    [
        ((2, 2, 2, 1), {}, {"kernel_size": 2, "stride": 2, "padding": 1}),  # the book's four
        ((3, 2, 1), {"pad": 1}, {"kernel_size": (3, 2), "padding": 1}),
        ((2, 3), {"stride": 2}, {"kernel_size": (2, 3), "stride": 2}),  # the book's, by stride=
        (((2, 3), 2), {}, {"kernel_size": (2, 3), "stride": 2}),  # ours: a pair first
        ((3,), {"stride": 2}, {"kernel_size": 3, "stride": 2, "padding": 0}),
        ((), {"filter_h": 2, "filter_w": 3}, {"kernel_size": (2, 3), "stride": 1, "padding": 0}),
        ((), {"kernel_size": 2}, {"kernel_size": 2, "stride": 1, "padding": 0}),
    ],
)
def test_im2col_and_col2im_read_both_signatures(args, kwargs, same_as) -> None:
    """Our ``(kernel_size, stride=1, padding=0)`` and the book's ``(filter_h, filter_w,
    stride=1, pad=0)`` give the same windows; unset stride and padding are 1 and 0."""
    want = im2col(_X, **same_as)
    got = im2col(_X, *args, **kwargs)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(
        col2im(got, _X.shape, *args, **kwargs), col2im(want, _X.shape, **same_as)
    )


def _ambiguous(op: str, lead: str, args: str) -> str:
    return (
        f"{op}: ambiguous call {op}({lead}, {args}): the book's signature is {op}({lead}, "
        f"filter_h, filter_w, stride=1, pad=0), ours is {op}({lead}, kernel_size, stride=1, "
        f"padding=0); pass all four as the book does ({op}({lead}, FH, FW, stride, pad)), give "
        f"stride by keyword ({op}({lead}, FH, FW, stride=1)) or name them (filter_h=5, "
        "filter_w=5 or kernel_size=5)"
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: im2col(_X, 3, 3), _ambiguous("im2col", "x", "3, 3")),
        (lambda: im2col(_X, 2, 2, 0), _ambiguous("im2col", "x", "2, 2, 0")),
        (
            lambda: col2im(np.zeros((16, 8)), _X.shape, 2, 1),
            _ambiguous("col2im", "col, input_shape", "2, 1"),
        ),
        (lambda: im2col(_X, 2, 2, 1, 0, 7), "im2col: takes at most 4 window arguments, got 5: "
         "(2, 2, 1, 0, 7)"),
        (lambda: im2col(_X, 2, kernel_size=2), "im2col: got multiple values for ['kernel_size']"),
        (lambda: im2col(_X, 2, 2, 1, 0, pad=0), "im2col: got multiple values for ['pad']"),
        (lambda: im2col(_X, filter_h=2), "im2col: the book's form needs filter_h and filter_w; "
         "missing ['filter_w']"),
        (lambda: col2im(np.zeros((16, 8)), _X.shape, filter_w=2, pad=0), "col2im: the book's "
         "form needs filter_h and filter_w; missing ['filter_h']"),
        (lambda: im2col(_X, stride=1), "im2col: missing kernel_size (or the book's filter_h, "
         "filter_w)"),
        (lambda: im2col(_X, 2, "3", 1, 0), "im2col: filter_h, filter_w must be an int or a pair "
         "of ints, got (2, '3')"),
        (lambda: im2col(_X, 2, 2, 1.0, 0), "im2col: stride must be an int or a pair of ints, "
         "got 1.0"),
        (lambda: im2col(_X, 2, 2, 1, None), "im2col: pad must be an int or a pair of ints, "
         "got None"),
        (lambda: im2col(_X, 2, 1, padding="0"), "im2col: padding must be an int or a pair of "
         "ints, got '0'"),
    ],
)  # fmt: skip
def test_window_argument_errors_say_what_was_wrong(call, message) -> None:
    with pytest.raises(TypeError) as e:
        call()
    assert str(e.value) == message


def _max_pool_grad(x: np.ndarray, k: tuple, s: tuple, p: tuple, gy: np.ndarray) -> np.ndarray:
    """Loop oracle: each window's gy goes to its first maximum (padding is -inf)."""
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=-np.inf)
    gxp = np.zeros_like(xp)
    for n, c, i, j in np.ndindex(*gy.shape):
        win = xp[n, c, i * s[0] : i * s[0] + k[0], j * s[1] : j * s[1] + k[1]]
        a, b = np.unravel_index(np.argmax(win), win.shape)
        gxp[n, c, i * s[0] + a, j * s[1] + b] += gy[n, c, i, j]
    return gxp[:, :, p[0] : p[0] + x.shape[2], p[1] : p[1] + x.shape[3]]


@pytest.mark.parametrize(
    ("shape", "k", "s", "p"),
    [
        ((32, 16, 7, 3), (5, 5), (5, 5), (1, 1)),  # windows leave rows 5, 6 out
        ((32, 16, 3, 7), (5, 5), (5, 5), (1, 1)),  # ... and columns
        ((32, 16, 8, 8), (3, 4), (3, 4), (0, 0)),  # rows 6, 7 left out, columns tiled
        ((4, 3, 4, 4), (3, 3), (3, 3), (1, 1)),  # windows tile the padded input
        ((4, 3, 5, 6), (3, 3), (2, 2), (1, 1)),  # overlapping windows
    ],
)
def test_max_pool_gradient_is_zero_where_no_window_reaches(shape, k, s, p) -> None:
    """Input elements outside every window get 0, even when the workspace hands the backward
    pass a buffer full of stale values (only windows that tile the input skip zeroing)."""
    from tinygrad_cnn.autograd import workspace

    rng = np.random.default_rng(3)
    x = Tensor(rng.permutation(np.prod(shape)).reshape(shape).astype(np.float64), True)
    y = F.max_pool2d(x, k, stride=s, padding=p)
    gy = rng.normal(size=y.shape)
    padded = (*shape[:2], shape[2] + 2 * p[0], shape[3] + 2 * p[1])
    stale = workspace.empty(padded, np.float64)
    stale.fill(np.nan)
    del stale  # back in the pool, dirty
    y.backward(gy)
    np.testing.assert_allclose(x.grad, _max_pool_grad(x.numpy(), k, s, p, gy), rtol=1e-12)


@pytest.mark.parametrize(
    ("x_shape", "w_shape"), [((2, 4, 4), (4, 5)), ((4,), (4, 5)), ((2, 4), (4, 5, 1))]
)
def test_linear_refuses_operands_that_are_not_2d(x_shape, w_shape) -> None:
    """Even when x's second axis happens to match w's first."""
    with pytest.raises(
        ValueError, match=r"^linear: expected x \(N, IN\) and w \(IN, OUT\), got x "
    ):
        Function.registry["Linear"].apply(Tensor(np.ones(x_shape)), Tensor(np.ones(w_shape)))


@pytest.mark.parametrize(
    ("dtype", "width", "at"),
    [(np.float64, 257, 256), (np.float16, 2051, 2049)],
    ids=["tap_256_of_257", "float16_tap_2049"],
)
def test_max_pool_sends_the_gradient_to_a_late_tap_of_a_long_window(dtype, width, at) -> None:
    """Tap numbers past 255 need more than uint8, and past 2048 more than float16 holds."""
    xv = np.zeros((1, 1, 1, width), dtype)
    xv[..., at] = 1
    x = Tensor(xv, requires_grad=True)
    y = F.max_pool2d(x, (1, width))
    y.backward(np.ones(y.shape, dtype))
    assert y.numpy().item() == 1
    np.testing.assert_array_equal(np.flatnonzero(x.grad), [at])


@pytest.mark.parametrize("padding", [(2, 0), (0, 2)])
@pytest.mark.parametrize("pool", [F.max_pool2d, F.avg_pool2d])
def test_pooling_refuses_too_much_padding_along_either_axis(pool, padding) -> None:
    with pytest.raises(ValueError, match=r"padding \(\d, \d\) must be at most half the kernel"):
        pool(Tensor(np.zeros((1, 1, 4, 4))), 3, padding=padding)


def _ones(shape, dtype=np.float32) -> Tensor:
    return Tensor(np.ones(shape, dtype))


@pytest.mark.parametrize(
    ("x", "w", "message"),
    [
        ((1, 3, 5, 5), (2, 2, 3, 3), r"^conv2d: channel mismatch: x \(1, 3, 5, 5\) has 3 "
         r"channels, w \(2, 2, 3, 3\) expects 2$"),
        ((1, 2, 2, 2), (3, 2, 3, 3), r"^conv2d: kernel 3x3 is larger than the padded input 2x2 "),
    ],
)  # fmt: skip
def test_conv2d_errors_name_the_op_and_the_shapes(x, w, message) -> None:
    with pytest.raises(ValueError, match=message):
        F.conv2d(_ones(x), _ones(w))


@pytest.mark.parametrize("wide", ["x", "w", "b", "x_no_bias", "w_no_bias"])
def test_conv2d_promotes_to_the_widest_operand_dtype_like_numpy(wide) -> None:
    """One float64 operand among float32 ones gives a float64 output, whichever it is."""
    dt = {k: np.float64 if wide.startswith(k) else np.float32 for k in "xwb"}
    b = None if wide.endswith("no_bias") else _ones(3, dt["b"])
    y = F.conv2d(_ones((1, 2, 4, 4), dt["x"]), _ones((3, 2, 2, 2), dt["w"]), b)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y.numpy(), np.full((1, 3, 3, 3), 8.0 + (b is not None)))


# ------------------------------------------------------------------------- third pass (geometry)


@pytest.mark.parametrize(
    ("x", "padded"),
    [((1, 1, 2, 3), "4x7"), ((1, 1, 3, 2), "5x6")],  # too tall only; too wide only
)
def test_kernel_larger_than_the_padded_input_along_one_axis_is_refused(x, padded) -> None:
    """Either axis alone is enough, and the message gives the padded size (padding (1, 2))."""
    message = (
        rf"^conv2d: kernel 5x7 is larger than the padded input {padded} \(input shape "
        rf"\(1, 1, {x[2]}, {x[3]}\), padding \(1, 2\)\)$"
    )
    with pytest.raises(ValueError, match=message):
        F.conv2d(_ones(x), _ones((1, 1, 5, 7)), padding=(1, 2))


def test_window_views_are_read_only() -> None:
    """``unfold`` and ``windows`` are documented read-only: overlapping windows share memory,
    and with no padding the view is of the caller's own array."""
    from tinygrad_cnn.ops.conv import unfold, windows

    xp = np.zeros((1, 2, 4, 4))
    for view in (
        unfold(xp.transpose(1, 2, 3, 0), (2, 2), (1, 1), (3, 3)),
        windows(xp, (2, 2), (1, 1), (3, 3)),
    ):
        assert not view.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            view[0, 0, 0, 0, 0, 0] = 1.0
    assert not xp.any()


@pytest.mark.parametrize("reduce", [F.sum, F.mean, F.max, F.logsumexp, F.norm])
def test_reducing_a_0d_input_over_axis_0_gives_its_one_value(reduce) -> None:
    """squeeze, flip, softmax and argmax take axis 0 of a 0-d input (as NumPy's sum and max
    do); the reductions take it too and reduce nothing: the value, and a gradient of 1."""
    x = Tensor(np.array(3.0), requires_grad=True)
    y = reduce(x, axis=0)
    y.backward()
    assert y.shape == () and float(y.data) == 3.0 and float(x.grad) == 1.0
    with pytest.raises(ValueError, match=rf"^{reduce.__name__}: axis 1 is out of range .* 0 dims"):
        reduce(x, axis=1)


def test_var_of_a_0d_input_over_axis_0_has_one_element_per_group() -> None:
    x = Tensor(np.array(3.0))
    assert float(F.var(x, axis=0, correction=0).data) == 0.0
    with pytest.raises(
        ValueError, match=r"^var: 1 elements per group .* correction=1 \(input \(\), axis 0\)"
    ):
        F.var(x, axis=0)
