"""Softmax cross-entropy: PyTorch reference, saturation, label forms, batch invariance."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from oracles import load_reference

import tinygrad_cnn.functional as F
from tinygrad_cnn import Tensor
from tinygrad_cnn import strategies as tst


def test_matches_pytorch_reference_including_huge_logits():
    cases = load_reference("softmax_cross_entropy")
    assert cases
    scales = set()
    for c in cases:
        z = Tensor(c["z"], requires_grad=True)
        loss = F.softmax_cross_entropy(z, c["t"])
        np.testing.assert_allclose(loss.data, c["loss"], rtol=1e-10)
        loss.backward(c["g"])
        np.testing.assert_allclose(z.grad, c["gz"], rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(F.log_softmax(Tensor(c["z"])).data, c["log_softmax"], rtol=1e-10)
        scales.add(float(c["scale"]))
    assert max(scales) >= 1e4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_saturated_logits_give_exact_finite_loss_and_grad(dtype):
    z = Tensor(np.array([[1e4, -1e4, 0.0], [0.0, 1e4, -1e4]], dtype), requires_grad=True)
    loss = F.softmax_cross_entropy(z, np.array([1, 1]))
    # row 0: the right class is 2e4 below the max, so its loss is exactly 2e4; row 1: loss 0
    assert loss.dtype == dtype and loss.item() == pytest.approx(1e4, rel=1e-6)
    loss.backward()
    assert np.isfinite(z.grad).all() and z.grad.dtype == dtype
    np.testing.assert_allclose(z.grad, [[0.5, -0.5, 0.0], [0.0, 0.0, 0.0]], atol=1e-6)


@given(data=st.data())
def test_one_hot_labels_equal_integer_labels(data):
    n, k = data.draw(st.integers(1, 6)), data.draw(st.integers(2, 5))
    z = data.draw(tst.arrays((n, k)))
    t = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    za, zb = Tensor(z, requires_grad=True), Tensor(z, requires_grad=True)
    la, lb = F.softmax_cross_entropy(za, t), F.softmax_cross_entropy(zb, np.eye(k)[t])
    np.testing.assert_allclose(la.data, lb.data, rtol=1e-12)
    la.backward()
    lb.backward()
    np.testing.assert_allclose(za.grad, zb.grad, rtol=1e-12, atol=1e-15)


@given(data=st.data())
def test_duplicating_the_batch_changes_neither_loss_nor_grads(data):
    n, k = data.draw(st.integers(1, 5)), data.draw(st.integers(2, 5))
    z = data.draw(tst.arrays((n, k)))
    t = np.array(data.draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    w = Tensor(np.ones(k), requires_grad=True)  # a shared parameter sees the mean gradient
    once = F.softmax_cross_entropy(Tensor(z) * w, t)
    once.backward()
    g_once = w.grad.copy()
    w.grad = None
    twice = F.softmax_cross_entropy(Tensor(np.concatenate([z, z])) * w, np.concatenate([t, t]))
    twice.backward()
    np.testing.assert_allclose(once.data, twice.data, rtol=1e-12)
    np.testing.assert_allclose(g_once, w.grad, rtol=1e-12, atol=1e-15)


def test_respects_the_upstream_gradient():
    z = np.random.default_rng(0).standard_normal((4, 3))
    a, b = Tensor(z, requires_grad=True), Tensor(z, requires_grad=True)
    F.softmax_cross_entropy(a, np.array([0, 1, 2, 0])).backward()
    (F.softmax_cross_entropy(b, np.array([0, 1, 2, 0])) * 2.5).backward()
    np.testing.assert_allclose(b.grad, 2.5 * a.grad, rtol=1e-12)


@pytest.mark.parametrize(
    "labels, words",
    [
        (np.array([0, 3]), ["softmax_cross_entropy", "[0, 3)", "(2, 3)"]),
        (np.array([0, -1]), ["softmax_cross_entropy", "[0, 3)"]),
        (np.array([0, 1, 2]), ["softmax_cross_entropy", "(3,)", "(2, 3)"]),
        (np.zeros((2, 4)), ["softmax_cross_entropy", "(2, 4)", "(2, 3)"]),
        (np.array([0.0, 1.0]), ["softmax_cross_entropy", "integers"]),
    ],
)
def test_bad_labels_raise_clear_errors(labels, words):
    with pytest.raises(ValueError) as info:
        F.softmax_cross_entropy(Tensor(np.zeros((2, 3))), labels)
    for word in words:
        assert word in str(info.value)


def test_softmax_and_log_softmax_are_stable():
    z = Tensor(np.array([[1e4, 0.0, -1e4]], np.float32))
    assert np.isfinite(F.softmax(z).data).all()
    np.testing.assert_allclose(F.log_softmax(z).data, [[0.0, -1e4, -2e4]])


def test_bad_axes_name_the_op():
    x = Tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="softmax: axis 5 is out of range"):
        F.softmax(x, axis=5)
    with pytest.raises(ValueError, match="log_softmax: axis -3"):
        F.log_softmax(x, axis=-3)
    with pytest.raises(TypeError, match="max: axis must be one int"):
        F.max(x, axis=(0, 1))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.bool_])
def test_integer_logits_raise_a_clear_type_error(dtype):
    # was: an integer loss (2 instead of 2.4076), silently truncated to the logits' dtype
    z = np.array([[1, 2, 3], [0, 1, 5]]).astype(dtype)
    with pytest.raises(TypeError) as info:
        F.softmax_cross_entropy(z, np.array([0, 1]))
    for word in ["softmax_cross_entropy", "logits", "floating point", str(np.dtype(dtype))]:
        assert word in str(info.value), f"{word!r} missing from: {info.value}"


def test_integer_logits_cast_to_float_give_the_float_loss():
    z = np.array([[1, 2, 3], [0, 1, 5]]).astype(np.float32)  # the cast the error asks for
    loss = F.softmax_cross_entropy(z, np.array([0, 1]))
    assert loss.dtype == np.float32
    assert loss.item() == pytest.approx((2.4076060 + 4.0247449) / 2, rel=1e-6)


@pytest.mark.parametrize("labels", [np.zeros(0, np.int64), np.zeros((0, 10))])
def test_empty_batch_loss_is_a_clear_value_error(labels):
    # was: nan with a RuntimeWarning (0 / 0); the mean over no samples is undefined
    z = Tensor(np.zeros((0, 10), np.float32), requires_grad=True)
    with pytest.raises(ValueError, match=r"softmax_cross_entropy: empty batch.*\(0, 10\)"):
        F.softmax_cross_entropy(z, labels)
