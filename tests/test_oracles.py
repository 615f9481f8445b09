"""The naive oracles agree with PyTorch's float64 autograd on every stored reference case.

Also cross-checks the oracles without a PyTorch counterpart (im2col, col2im, one-hot targets)
against ones that have one, and pins the max-pool tie rule.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from oracles import (
    REFERENCE_DIR,
    avg_pool2d_naive,
    avg_pool2d_naive_grad,
    col2im_naive,
    conv2d_naive,
    conv2d_naive_grads,
    im2col_naive,
    load_reference,
    log_softmax_naive,
    max_pool2d_naive,
    max_pool2d_naive_grad,
    softmax_cross_entropy_naive,
    softmax_cross_entropy_naive_grad,
)

# atol matters only near 0: in saturated softmax rows log_softmax(max) = -log(1 + tiny) differs
# from PyTorch by ~4e-15 absolute (3e-7 relative) from summation order alone.
RTOL, ATOL = 1e-10, 1e-12


def _cases(name: str) -> list:
    """One pytest param per reference case (the files ship in ``tests/data/reference``)."""
    return [pytest.param(case, id=case["case"]) for case in load_reference(name)]


def assert_close(actual: np.ndarray | float, expected: np.ndarray) -> None:
    assert np.shape(actual) == np.shape(expected)
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", _cases("conv2d"))
def test_conv2d_matches_pytorch(case: dict) -> None:
    x, w, b, gy = case["x"], case["w"], case["b"], case["gy"]
    stride, padding = case["stride"], case["padding"]
    assert_close(conv2d_naive(x, w, b, stride, padding), case["y"])
    gx, gw, gb = conv2d_naive_grads(x, w, b, gy, stride, padding)
    assert_close(gx, case["gx"])
    assert_close(gw, case["gw"])
    assert_close(gb, case["gb"])


@pytest.mark.parametrize("case", _cases("max_pool2d"))
def test_max_pool2d_matches_pytorch(case: dict) -> None:
    params = case["kernel_size"], case["stride"], case["padding"]
    assert_close(max_pool2d_naive(case["x"], *params), case["y"])
    assert_close(max_pool2d_naive_grad(case["x"], case["gy"], *params), case["gx"])


@pytest.mark.parametrize("case", _cases("avg_pool2d"))
def test_avg_pool2d_matches_pytorch(case: dict) -> None:
    params = case["kernel_size"], case["stride"], case["padding"]
    assert_close(avg_pool2d_naive(case["x"], *params), case["y"])
    assert_close(avg_pool2d_naive_grad(case["x"], case["gy"], *params), case["gx"])


@pytest.mark.parametrize("case", _cases("softmax_cross_entropy"))
def test_softmax_cross_entropy_matches_pytorch(case: dict) -> None:
    z, t, g = case["z"], case["t"], float(case["g"])
    assert_close(log_softmax_naive(z), case["log_softmax"])
    assert_close(softmax_cross_entropy_naive(z, t), case["loss"])
    assert_close(softmax_cross_entropy_naive_grad(z, t, g), case["gz"])
    one_hot = np.eye(z.shape[1])[t]
    assert_close(softmax_cross_entropy_naive(z, one_hot), case["loss"])
    assert_close(softmax_cross_entropy_naive_grad(z, one_hot, g), case["gz"])


@pytest.mark.parametrize("name", ["conv2d", "max_pool2d", "avg_pool2d", "softmax_cross_entropy"])
def test_reference_files_are_complete(name: str) -> None:
    fields = {
        "conv2d": {"x", "w", "b", "gy", "y", "gx", "gw", "gb"},
        "max_pool2d": {"x", "gy", "y", "gx"},
        "avg_pool2d": {"x", "gy", "y", "gx"},
        "softmax_cross_entropy": {"z", "t", "g", "loss", "gz", "log_softmax"},
    }[name]
    cases = load_reference(name)
    assert cases
    for case in cases:
        assert fields <= case.keys(), (case["case"], fields - case.keys())
        assert all(case[f].dtype != np.float32 for f in fields)


# ---- oracles without a PyTorch counterpart, checked against ones that have one ----

GEOMETRIES = [  # (x_shape, kernel, stride, padding)
    ((2, 3, 5, 4), (2, 3), (1, 2), (1, 0)),
    ((1, 2, 7, 6), (3, 2), (3, 1), (1, 1)),
    ((2, 1, 4, 5), 2, 2, 0),
    ((1, 2, 3, 3), (1, 3), (4, 1), (0, 1)),
]


@pytest.mark.parametrize(("x_shape", "kernel", "stride", "padding"), GEOMETRIES)
def test_im2col_times_weights_is_conv(x_shape, kernel, stride, padding) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(x_shape)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    w = rng.standard_normal((4, x_shape[1], kh, kw))
    y = conv2d_naive(x, w, None, stride, padding)
    N, OC, OH, OW = y.shape
    col = im2col_naive(x, kernel, stride, padding)  # (N*OH*OW, C*KH*KW)
    y_col = col @ w.reshape(OC, -1).T  # (N*OH*OW, OC)
    y_col = y_col.reshape(N, OH, OW, OC).transpose(0, 3, 1, 2)  # -> (N, OC, OH, OW)
    np.testing.assert_allclose(y_col, y, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("x_shape", "kernel", "stride", "padding"), GEOMETRIES)
def test_col2im_is_adjoint_of_im2col(x_shape, kernel, stride, padding) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(x_shape)
    col = im2col_naive(x, kernel, stride, padding)
    c = rng.standard_normal(col.shape)
    lhs = np.sum(col * c)
    rhs = np.sum(x * col2im_naive(c, x_shape, kernel, stride, padding))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


def test_max_pool_tie_goes_to_first_maximal_element() -> None:
    x = np.array([[[[1.0, 5.0, 5.0], [5.0, 2.0, 5.0]]]])  # (1, 1, 2, 3)
    gy = np.array([[[[10.0, 100.0]]]])  # kernel (2, 2), stride 1 -> (1, 1, 1, 2)
    assert max_pool2d_naive(x, 2, 1).tolist() == [[[[5.0, 5.0]]]]
    gx = max_pool2d_naive_grad(x, gy, 2, 1)
    # window 0 covers columns 0-1: first 5 is (0, 1); window 1 covers 1-2: first 5 is (0, 1) too
    assert gx.tolist() == [[[[0.0, 110.0, 0.0], [0.0, 0.0, 0.0]]]]


def test_pool_padding_never_wins_and_counts_in_average() -> None:
    x = -np.ones((1, 1, 2, 2))
    assert max_pool2d_naive(x, 3, 1, 1).tolist() == [[[[-1.0, -1.0], [-1.0, -1.0]]]]
    assert avg_pool2d_naive(x, 3, 1, 1).tolist() == [[[[-4 / 9, -4 / 9], [-4 / 9, -4 / 9]]]]
    with pytest.raises(ValueError, match="kernel // 2"):
        max_pool2d_naive(x, 2, 1, 2)


def test_reference_vectors_ship_with_the_tests() -> None:
    """A bare clone runs the PyTorch comparisons: the vectors live in ``tests/data``."""
    here = Path(__file__).resolve().parent / "data" / "reference"
    names = ["conv2d", "max_pool2d", "avg_pool2d", "softmax_cross_entropy"]
    missing = [
        f"{n}.{ext}"
        for n in names
        for ext in ("json", "npz")
        if not (here / f"{n}.{ext}").is_file()
    ]
    assert not missing, f"reference files missing from {here}: {missing}"
    assert (here.parent / "README.md").is_file() and (here.parent / "make_reference.py").is_file()
    if "TINYGRAD_CNN_REFERENCE_DIR" not in os.environ:
        assert REFERENCE_DIR.resolve() == here
