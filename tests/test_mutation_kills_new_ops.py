"""Tests added while triaging mutmut's survivors in ops/activations.py and ops/select.py.

See scripts/MUTATION.md: the ``kinks`` masks of the newer ops (their boundaries, and the
reduction of a broadcast tie mask to each input's shape), and Where's gradients.
"""

from __future__ import annotations

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
