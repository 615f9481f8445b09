"""Tests added while triaging mutmut's survivors in ops/activations.py, select.py and loss.py.

See scripts/MUTATION.md: the ``kinks`` masks of the newer ops (their boundaries, and the
reduction of a broadcast tie mask to each input's shape), and Where's gradients.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from tinygrad_cnn import Function, Tensor, on_op_backward

M = 0.25  # margin; all values below are exact in binary


def _op(name: str, **attrs):
    return Function.registry[name](**attrs)


X = np.array([-0.5, -0.25, 0.0, 0.25, 0.5])


@pytest.mark.parametrize(
    ("name", "attrs"),
    [("Abs", {}), ("LeakyReLU", {"negative_slope": 0.1}), ("ELU", {"alpha": 1.0})],
)
def test_kinks_at_zero_include_the_margin(name, attrs) -> None:
    (mask,) = _op(name, **attrs).kinks(X, margin=M)
    np.testing.assert_array_equal(mask, [False, True, True, True, False])


def test_clip_kinks_at_each_bound() -> None:
    x = np.array([0.5, 0.75, 1.0, 1.5, 2.0, 2.25, 3.0])
    (both,) = _op("Clip", low=1.0, high=2.0).kinks(x, margin=M)
    np.testing.assert_array_equal(both, [0, 1, 1, 0, 1, 1, 0])
    (low,) = _op("Clip", low=1.0, high=None).kinks(x, margin=M)
    np.testing.assert_array_equal(low, [0, 1, 1, 0, 0, 0, 0])
    (high,) = _op("Clip", low=None, high=2.0).kinks(x, margin=M)
    np.testing.assert_array_equal(high, [0, 0, 0, 0, 1, 1, 0])


def test_norm_kinks_where_the_norm_is_within_four_margins_of_zero() -> None:
    x = np.array([[0.6, 0.8], [0.3, 0.4], [3.0, 4.0]])  # row norms 1.0 (= 4 M), 0.5, 5.0
    (rows,) = _op("Norm", axis=(1,), keepdims=False).kinks(x, margin=M)
    assert rows.shape == x.shape
    np.testing.assert_array_equal(rows[:, 0], [True, True, False])
    (whole,) = _op("Norm", axis=(0, 1), keepdims=False).kinks(x, margin=M)
    assert whole.shape == x.shape and not whole.any()


def test_maximum_kinks_reduce_a_broadcast_tie_to_each_input() -> None:
    a = np.array([[0.0], [1.0], [2.0]])  # (3, 1)
    b = np.array([0.25, 5.0, 5.0, 5.0])  # (4,): |a - b| <= 2 M only at a[0], b[0]
    ka, kb = _op("Maximum").kinks(a, b, margin=M)
    np.testing.assert_array_equal(ka, [[True], [False], [False]])
    np.testing.assert_array_equal(kb, [True, False, False, False])
    ka, kb = _op("Minimum").kinks(a, np.array([[-0.75, 9.0, 9.0, 9.0]]), margin=M)
    assert not ka.any() and not kb.any()  # 0.75 apart: more than 2 M
    same = np.array([[1.0, 2.0]])
    ka, kb = _op("Maximum").kinks(same, same + 0.5, margin=M)  # same shapes: no reduction
    np.testing.assert_array_equal(ka, [[True, True]])
    assert kb.shape == (1, 2)


@pytest.mark.parametrize("graph", [False, True], ids=["backward", "backward_graph"])
@pytest.mark.parametrize("need", [(True, False), (False, True), (True, True)])
def test_where_gradients_go_to_the_chosen_input_only(need, graph) -> None:
    cond = np.array([[True, False, True]])  # broadcasts over the (2, 3) inputs
    a = Tensor(np.full((2, 3), 2.0, np.float32), requires_grad=need[0])
    b = Tensor(np.full((2, 3), 3.0, np.float32), requires_grad=need[1])
    seen = []
    with on_op_backward(lambda fn, gy, gxs: seen.append(gxs) if fn.name == "Where" else None):
        (Function.registry["Where"].apply(a, b, cond=cond) * 5.0).sum().backward(create_graph=graph)
    (gxs,) = seen
    for t, g, want, n in zip((a, b), gxs, (cond, ~cond), need, strict=True):
        if not n:
            assert g is None
            continue
        g = g.numpy() if isinstance(g, Tensor) else g
        assert g.dtype == np.float32
        np.testing.assert_array_equal(g, np.broadcast_to(5.0 * want, (2, 3)))
        grad = t.grad.numpy() if isinstance(t.grad, Tensor) else t.grad
        np.testing.assert_array_equal(grad, np.broadcast_to(5.0 * want, (2, 3)))


@pytest.mark.parametrize(
    ("name", "attrs", "x", "slope"),
    [
        ("Abs", {}, [-2.0, 0.0, 3.0], [-1.0, 0.0, 1.0]),  # documented: 0 at exactly 0
        ("ReLU", {}, [-2.0, 0.0, 3.0], [0.0, 0.0, 1.0]),
        ("Clip", {"low": -1.0, "high": 1.0}, [-2.0, -1.0, 1.0, 3.0], [0.0, 1.0, 1.0, 0.0]),
        ("LeakyReLU", {"negative_slope": 0.25}, [-2.0, 0.0, 3.0], [0.25, 0.25, 1.0]),
        # at 0 the negative branch: alpha; exp(2 * 60) overflows float32 on the unused branch
        ("ELU", {"alpha": 0.5}, [-1.0, 0.0, 0.5, 60.0], [0.5 * np.exp(-1.0), 0.5, 1.0, 1.0]),
    ],
)
@pytest.mark.parametrize("graph", [False, True], ids=["backward", "backward_graph"])
def test_activation_gradients_in_float32(name, attrs, x, slope, graph) -> None:
    xt = Tensor(np.array(x, np.float32), requires_grad=True)
    dtypes = []
    with on_op_backward(lambda fn, gy, gxs: dtypes.extend(g.dtype for g in gxs) if fn.name == name
                        else None):  # fmt: skip
        (Function.registry[name].apply(xt, **attrs) * 2.0).sum().backward(create_graph=graph)
    assert dtypes == [np.dtype(np.float32)]
    grad = xt.grad.numpy() if isinstance(xt.grad, Tensor) else xt.grad
    np.testing.assert_allclose(grad, 2.0 * np.array(slope), rtol=1e-6)


def test_pad_refuses_a_pad_width_of_another_rank() -> None:
    with pytest.raises(
        ValueError, match=r"^pad: pad_width \(\(1, 1\),\) does not fit an input \(2, 3\)$"
    ):
        Function.registry["Pad"].apply(Tensor(np.ones((2, 3))), pad_width=((1, 1),), value=0.0)


@pytest.mark.parametrize("graph", [False, True], ids=["backward", "backward_graph"])
@pytest.mark.parametrize("need", [(True, False), (False, True)])
def test_bce_with_logits_computes_no_gradient_for_an_input_that_needs_none(need, graph) -> None:
    x = Tensor(np.array([0.5, -1.0], np.float32), requires_grad=need[0])
    t = Tensor(np.array([1.0, 0.0], np.float32), requires_grad=need[1])
    seen = []
    with on_op_backward(lambda fn, gy, gxs: seen.append(gxs) if fn.name == "BCEWithLogits"
                        else None):  # fmt: skip
        Function.registry["BCEWithLogits"].apply(x, t).sum().backward(create_graph=graph)
    (gxs,) = seen
    for n, g in zip(need, gxs, strict=True):
        assert (g is None) != n


def test_logsumexp_never_overflows_and_handles_empty_and_all_minus_inf() -> None:
    from tinygrad_cnn.functional_tensor import logsumexp

    y = logsumexp(Tensor(np.array([[1000.0, 1000.0], [-np.inf, -np.inf]])), axis=1).numpy()
    np.testing.assert_allclose(y[0], 1000.0 + np.log(2.0), rtol=1e-15)
    assert y[1] == -np.inf
    empty = logsumexp(Tensor(np.zeros((0, 3))), axis=0).numpy()
    assert empty.shape == (3,) and (empty == -np.inf).all()


@pytest.mark.parametrize("graph", [False, True], ids=["backward", "backward_graph"])
def test_norm_gradient_is_zero_where_the_norm_is_zero(graph) -> None:
    from tinygrad_cnn.functional_tensor import norm

    x = Tensor(np.array([[0.0, 0.0], [3.0, 4.0]], np.float32), requires_grad=True)
    seen = []
    with on_op_backward(lambda fn, gy, gxs: seen.extend(g.dtype for g in gxs) if fn.name == "Norm"
                        else None):  # fmt: skip
        norm(x, axis=1).sum().backward(create_graph=graph)
    assert seen == [np.dtype(np.float32)]
    grad = x.grad.numpy() if isinstance(x.grad, Tensor) else x.grad
    np.testing.assert_allclose(grad, [[0.0, 0.0], [0.6, 0.8]], rtol=1e-6)


def test_where_names_the_shapes_that_do_not_broadcast() -> None:
    with pytest.raises(ValueError, match=r"^where: cond \(2,\), a \(3,\) and b \(3,\) cannot be "
                       r"broadcast together$"):  # fmt: skip
        Function.registry["Where"].apply(np.ones(3), np.ones(3), cond=np.array([True, False]))


def test_erf_is_float64_accurate_for_float32_and_integer_inputs() -> None:
    from tinygrad_cnn.functional_tensor import erf

    x = np.linspace(-4.0, 4.0, 801, dtype=np.float32)  # computed in float64, then rounded
    want = np.array([math.erf(v) for v in x.astype(np.float64)])
    y = erf(Tensor(x)).numpy()
    assert y.dtype == np.float32
    np.testing.assert_array_max_ulp(y, want.astype(np.float32), maxulp=1)
    ints = erf(Tensor(np.array([-2, 0, 1, 3]))).numpy()  # integers give floats, not 0 or 1
    assert ints.dtype.kind == "f"
    np.testing.assert_allclose(ints, [math.erf(v) for v in (-2, 0, 1, 3)], rtol=0, atol=1e-15)


def test_erf_beyond_three_uses_the_accurate_continued_fraction() -> None:
    from tinygrad_cnn.functional_tensor import erf

    x = np.concatenate([np.linspace(3.0005, 6.0, 2000), -np.linspace(3.0005, 6.0, 2000)])
    want = np.array([math.erf(v) for v in x])
    np.testing.assert_array_max_ulp(erf(Tensor(x)).numpy(), want, maxulp=2)


@pytest.mark.parametrize("graph", [False, True], ids=["backward", "backward_graph"])
@pytest.mark.parametrize("need", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize(
    ("name", "share"), [("Maximum", [0.0, 0.5, 1.0]), ("Minimum", [1.0, 0.5, 0.0])]
)
def test_extremum_gradients_split_ties_keep_float32_and_skip_unneeded(
    name, share, need, graph
) -> None:
    a = Tensor(np.array([1.0, 2.0, 3.0], np.float32), requires_grad=need[0])
    b = Tensor(np.array([3.0, 2.0, 1.0], np.float32), requires_grad=need[1])
    seen = []
    with on_op_backward(lambda fn, gy, gxs: seen.append(gxs) if fn.name == name else None):
        (Function.registry[name].apply(a, b) * 4.0).sum().backward(create_graph=graph)
    (gxs,) = seen
    for g, want, n in zip(gxs, (np.array(share), 1.0 - np.array(share)), need, strict=True):
        if not n:
            assert g is None
            continue
        g = g.numpy() if isinstance(g, Tensor) else g
        assert g.dtype == np.float32
        np.testing.assert_array_equal(g, 4.0 * want)


def test_logsumexp_shifts_each_group_by_its_own_maximum_without_warnings() -> None:
    from tinygrad_cnn.functional_tensor import logsumexp

    x = np.array([[1000.0, 1000.0], [-1000.0, -1000.0], [-np.inf, -np.inf]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # log(0) of the all -inf row is expected, not warned
        y = logsumexp(Tensor(x), axis=1).numpy()
        cols = logsumexp(Tensor(x.T), axis=0).numpy()
    want = [1000.0 + np.log(2.0), -1000.0 + np.log(2.0), -np.inf]
    np.testing.assert_allclose(y, want, rtol=1e-15)
    np.testing.assert_allclose(cols, want, rtol=1e-15)


def test_norm_kinks_stop_at_four_margins() -> None:
    x = np.array([[0.75, 1.0], [0.6, 0.8]])  # row norms 1.25 (= 5 M) and 1.0 (= 4 M)
    (rows,) = _op("Norm", axis=(1,), keepdims=False).kinks(x, margin=M)
    np.testing.assert_array_equal(rows, [[False, False], [True, True]])


def test_bce_with_logits_names_the_shapes_that_do_not_broadcast() -> None:
    with pytest.raises(
        ValueError,
        match=r"^binary_cross_entropy_with_logits: logits \(2,\) and targets \(3,\) cannot be "
        r"broadcast together$",
    ):
        Function.registry["BCEWithLogits"].apply(np.zeros(2), np.zeros(3))


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_norm_of_a_tiny_or_huge_vector_is_exact(scale) -> None:
    """Squares of 1e-200 underflow to 0 and of 1e200 overflow: each group is scaled by its
    largest |x| first, as ``np.linalg.norm`` does."""
    from tinygrad_cnn.functional_tensor import norm

    x = Tensor(np.array([3.0, 4.0]) * scale, requires_grad=True)
    with np.errstate(over="ignore"):
        y = norm(x)
        y.backward()
    np.testing.assert_allclose(y.numpy(), 5.0 * scale, rtol=1e-15)
    np.testing.assert_allclose(x.grad, [0.6, 0.8], rtol=1e-15)


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_relu_of_integers_stays_integer(dtype) -> None:
    y = Function.registry["ReLU"].apply(Tensor(np.array([[-2, 0], [3, 7]], dtype))).numpy()
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, [[0, 0], [3, 7]])


def test_softmax_ce_allows_one_class_and_names_empty_shapes() -> None:
    sce = Function.registry["SoftmaxCrossEntropy"]
    z = Tensor(np.array([[0.3], [2.0]]), requires_grad=True)  # K = 1: p = 1, loss 0
    sce.apply(z, np.array([0, 0])).backward()
    np.testing.assert_array_equal(z.grad, [[0.0], [0.0]])
    with pytest.raises(
        ValueError,
        match=r"^softmax_cross_entropy: empty batch: logits have shape \(0, 3\), and the mean "
        r"loss over 0 samples is undefined$",
    ):
        sce.apply(np.zeros((0, 3)), np.zeros(0, np.int64))
    with pytest.raises(
        ValueError, match=r"^softmax_cross_entropy: logits \(2, 0\) have no classes \(K = 0\)$"
    ):
        sce.apply(np.zeros((2, 0)), np.zeros(2, np.int64))


@pytest.mark.parametrize("name", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("other", [np.int64, np.uint8, np.bool_, np.float64])
def test_binary_op_gives_an_integer_operand_the_float_operands_dtype(name, other) -> None:
    """int64 (uint8, bool) with float32 gives float32, either way round; float64 with float32
    gives float64, and a float operand is never cast to the other's integer dtype."""
    f = np.array([1.5, 2.5, 4.0], np.float32)
    o = np.array([3, 1, 2], other)
    want = np.float64 if other is np.float64 else np.float32
    fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[name]
    for a, b in ((f, o), (o, f)):
        y = Function.registry[name].apply(Tensor(a), Tensor(b)).numpy()
        assert y.dtype == want
        np.testing.assert_allclose(y, fn(a.astype(np.float64), b.astype(np.float64)), rtol=1e-6)
