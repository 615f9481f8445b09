"""conv2d, im2col/col2im and pooling: PyTorch reference vectors, naive-oracle gradients,
adjointness, linearity, the max-pool tie rule and padding, and clear geometry errors."""

from __future__ import annotations

import ast
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given
from oracles import (
    avg_pool2d_naive_grad,
    conv2d_naive_grads,
    im2col_naive,
    load_reference,
    max_pool2d_naive_grad,
)

import tinygrad_cnn.functional as F
from tinygrad_cnn import Tensor, col2im, im2col
from tinygrad_cnn import strategies as tst
from tinygrad_cnn.ops import conv as conv_ops


def _tensors(*arrays):
    return [Tensor(a, requires_grad=True) for a in arrays]


# ----------------------------------------------------------------------------- PyTorch oracle
def test_conv2d_matches_pytorch_reference():
    cases = load_reference("conv2d")
    assert cases
    for c in cases:
        x, w, b = _tensors(c["x"], c["w"], c["b"])
        y = F.conv2d(x, w, b, stride=c["stride"], padding=c["padding"])
        np.testing.assert_allclose(y.data, c["y"], rtol=1e-10, atol=1e-12)
        y.backward(c["gy"])
        for t, key in ((x, "gx"), (w, "gw"), (b, "gb")):
            np.testing.assert_allclose(t.grad, c[key], rtol=1e-10, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("name, fn", [("max_pool2d", F.max_pool2d), ("avg_pool2d", F.avg_pool2d)])
def test_pooling_matches_pytorch_reference(name, fn):
    cases = load_reference(name)
    assert cases
    for c in cases:
        (x,) = _tensors(c["x"])
        y = fn(x, c["kernel_size"], c["stride"], c["padding"])
        np.testing.assert_allclose(y.data, c["y"], rtol=1e-10, atol=1e-12)
        y.backward(c["gy"])
        np.testing.assert_allclose(x.grad, c["gx"], rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- naive oracles
@given(cfg=tst.conv2d_configs(), data=st.data())
def test_conv2d_backward_matches_naive_loops(cfg, data):
    x, w, b, gy = (
        data.draw(tst.arrays(s)) for s in (cfg.x_shape, cfg.w_shape, (cfg.OC,), cfg.out_shape)
    )
    tx, tw, tb = _tensors(x, w, b)
    F.conv2d(tx, tw, tb, cfg.stride, cfg.padding).backward(gy)
    gx, gw, gb = conv2d_naive_grads(x, w, b, gy, cfg.stride, cfg.padding)
    np.testing.assert_allclose(tx.grad, gx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(tw.grad, gw, rtol=1e-10, atol=1e-12)
    # the bias gradient is the upstream gradient summed over (N, OH, OW)
    np.testing.assert_allclose(tb.grad, gy.sum(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(gb, gy.sum(axis=(0, 2, 3)), rtol=1e-12)


@given(cfg=tst.pool2d_configs(), data=st.data())
def test_pool_backward_matches_naive_loops(cfg, data):
    x = data.draw(tst.distinct_arrays(cfg.x_shape))
    gy = data.draw(tst.arrays(cfg.out_shape))
    for fn, oracle in (
        (F.max_pool2d, max_pool2d_naive_grad),
        (F.avg_pool2d, avg_pool2d_naive_grad),
    ):
        (t,) = _tensors(x)
        fn(t, cfg.kernel, cfg.stride, cfg.padding).backward(gy)
        expected = oracle(x, gy, cfg.kernel, cfg.stride, cfg.padding)
        np.testing.assert_allclose(t.grad, expected, rtol=1e-10, atol=1e-12)


@given(cfg=tst.conv2d_configs(), data=st.data())
def test_im2col_matches_naive_and_col2im_is_its_adjoint(cfg, data):
    x = data.draw(tst.arrays(cfg.x_shape))
    k, s, p = cfg.kernel, cfg.stride, cfg.padding
    col = im2col(x, k, s, p)
    np.testing.assert_array_equal(col, im2col_naive(x, k, s, p))
    c = data.draw(tst.arrays(col.shape))
    lhs, rhs = np.vdot(col, c), np.vdot(x, col2im(c, x.shape, k, s, p))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


@given(cfg=tst.conv2d_configs(), data=st.data())
def test_conv2d_is_linear_in_input_and_weight(cfg, data):
    x1, x2 = (data.draw(tst.arrays(cfg.x_shape)) for _ in range(2))
    w1, w2 = (data.draw(tst.arrays(cfg.w_shape)) for _ in range(2))
    a, b = 1.5, -0.75

    def conv(x, w):
        return F.conv2d(Tensor(x), Tensor(w), None, cfg.stride, cfg.padding).data

    np.testing.assert_allclose(
        conv(a * x1 + b * x2, w1), a * conv(x1, w1) + b * conv(x2, w1), rtol=1e-9, atol=1e-11
    )
    np.testing.assert_allclose(
        conv(x1, a * w1 + b * w2), a * conv(x1, w1) + b * conv(x1, w2), rtol=1e-9, atol=1e-11
    )


# ----------------------------------------------------------------------------- max-pool rules
def test_max_pool_tie_rule_routes_gradient_to_first_maximum():
    # one 2x2 window whose four values are equal: the gradient goes to (0, 0) only
    x = Tensor(np.ones((1, 1, 2, 2)), requires_grad=True)
    F.max_pool2d(x, 2).backward(np.array([[[[3.0]]]]))
    np.testing.assert_array_equal(x.grad[0, 0], [[3.0, 0.0], [0.0, 0.0]])
    # a tie between the 2nd and 4th elements (row-major): the 2nd wins
    x = Tensor(np.array([[[[0.0, 5.0], [1.0, 5.0]]]]), requires_grad=True)
    F.max_pool2d(x, 2).backward(np.ones((1, 1, 1, 1)))
    np.testing.assert_array_equal(x.grad[0, 0], [[0.0, 1.0], [0.0, 0.0]])


def test_max_pool_padding_acts_as_minus_infinity():
    x = Tensor(-np.arange(1.0, 17.0).reshape(1, 1, 4, 4), requires_grad=True)
    y = F.max_pool2d(x, 3, stride=2, padding=1)
    assert (y.data < 0).all(), "an all-negative input must never pool to the zero padding"
    np.testing.assert_array_equal(y.data[0, 0], [[-1.0, -2.0], [-5.0, -6.0]])


def test_max_pool_overlapping_windows_accumulate():
    x = Tensor(
        np.array([[[[0.0, 0.0, 0.0], [0.0, 9.0, 0.0], [0.0, 0.0, 0.0]]]]), requires_grad=True
    )
    F.max_pool2d(x, 2, stride=1).backward(np.ones((1, 1, 2, 2)))
    assert x.grad[0, 0, 1, 1] == 4.0 and x.grad.sum() == 4.0


def test_max_pool_stride_defaults_to_kernel():
    assert F.max_pool2d(Tensor(np.zeros((2, 3, 24, 24), np.float32)), 2).shape == (2, 3, 12, 12)


# ----------------------------------------------------------------------------- errors
z = np.zeros
X, W3 = z((1, 1, 5, 5)), z((3, 1, 3, 3))
BAD_GEOMETRY = [
    (lambda: F.conv2d(z((1, 2, 5, 5)), W3), ["conv2d", "channel", "(1, 2, 5, 5)", "(3, 1, 3, 3)"]),
    (lambda: F.conv2d(z((1, 1, 3, 3)), z((3, 1, 5, 5))), ["conv2d", "kernel", "(1, 1, 3, 3)"]),
    (lambda: F.conv2d(X, W3, stride=0), ["conv2d", "stride", "(1, 1, 5, 5)"]),
    (lambda: F.conv2d(X, W3, padding=-1), ["conv2d", "padding"]),
    (lambda: F.conv2d(z((1, 5, 5)), W3), ["conv2d", "4-D", "(1, 5, 5)"]),
    (lambda: F.conv2d(X, W3, z(2)), ["conv2d", "b", "(2,)"]),
    (lambda: F.max_pool2d(z((1, 1, 2, 2)), 3), ["max_pool2d", "kernel", "(1, 1, 2, 2)"]),
    (lambda: F.max_pool2d(z((1, 1, 4, 4)), 2, padding=2), ["max_pool2d", "padding"]),
    (lambda: F.avg_pool2d(z((1, 1, 4, 4)), 2, stride=-1), ["avg_pool2d", "stride"]),
    (lambda: F.max_pool2d(z((4, 4)), 2), ["max_pool2d", "4-D", "(4, 4)"]),
    (lambda: F.max_pool2d(z((1, 1, 4, 4)), 0), ["max_pool2d", "kernel size", "(1, 1, 4, 4)"]),
    (lambda: im2col(z((1, 1, 2, 2)), 3), ["im2col", "kernel"]),
    (lambda: col2im(z((3, 3)), (1, 1, 4, 4), 2), ["col2im", "(3, 3)"]),
]


@pytest.mark.parametrize("call, words", BAD_GEOMETRY)
def test_impossible_geometry_raises_clear_value_error(call, words):
    with pytest.raises(ValueError) as info:
        call()
    for word in words:
        assert word in str(info.value), f"{word!r} missing from: {info.value}"


def test_bad_stride_type_is_a_type_error():
    with pytest.raises(TypeError, match="conv2d: stride"):
        F.conv2d(np.zeros((1, 1, 5, 5)), np.zeros((3, 1, 3, 3)), stride=(1, 1, 1))


def test_odd_sizes_use_floor_division():
    y = F.conv2d(Tensor(np.zeros((1, 1, 29, 29))), Tensor(np.zeros((2, 1, 5, 5))), stride=2)
    assert y.shape == (1, 2, 13, 13)  # (29 - 5) // 2 + 1
    assert F.max_pool2d(Tensor(np.zeros((1, 1, 25, 25))), 2).shape == (1, 1, 12, 12)


# ----------------------------------------------------------------------------- one im2col
def test_conv2d_and_im2col_run_the_same_unfold_and_fold(monkeypatch):
    """Conv2d, im2col and col2im share one im2col (``unfold``) and one col2im (``fold_into``),
    so the adjointness and reference tests above check the code the network runs."""
    calls = {"unfold": 0, "fold_into": 0}

    def counted(name):
        real = getattr(conv_ops, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    for name in calls:
        monkeypatch.setattr(conv_ops, name, counted(name))
    rng = np.random.default_rng(0)
    x, w = _tensors(rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2)))
    F.conv2d(x, w, stride=(2, 1), padding=1).backward(rng.standard_normal((2, 4, 4, 7)))
    assert calls["unfold"] >= 1 and calls["fold_into"] >= 1, calls
    for name in calls:
        calls[name] = 0
    col = im2col(x.data, (3, 2), (2, 1), 1)
    col2im(col, x.shape, (3, 2), (2, 1), 1)
    assert calls == {"unfold": 1, "fold_into": 1}


def test_im2col_rows_times_weights_equal_conv2d():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2))
    y = F.conv2d(Tensor(x), Tensor(w), stride=(2, 1), padding=1).data  # (N, OC, OH, OW)
    col = im2col(x, (3, 2), (2, 1), 1)  # (N*OH*OW, C*KH*KW)
    # (N*OH*OW, OC) -> (N, OH, OW, OC) -> (N, OC, OH, OW)
    y_col = (col @ w.reshape(4, -1).T).reshape(2, 4, 7, 4).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(y, y_col, rtol=1e-12, atol=1e-12)


def test_ops_modules_import_no_private_names_from_each_other():
    """Helpers shared across ``tinygrad_cnn.ops`` (``pad2d``, ``windows``, ``fold``...) are
    public; a module importing a sibling's ``_name`` would break when that name changes."""
    for path in Path(conv_ops.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports private {private} from {node.module}"
