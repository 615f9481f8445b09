"""The public strategies draw what they promise, and cover the awkward cases they claim to."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st
from oracles import conv2d_naive, max_pool2d_naive

from tinygrad_cnn.strategies import (
    ConvConfig,
    PoolConfig,
    arrays,
    away_from_zero,
    broadcastable_pairs,
    broadcastable_shapes,
    conv2d_configs,
    distinct_arrays,
    pool2d_configs,
    positive_arrays,
    shapes,
    tensors,
)

# coverage searches: stop at the first hit, no shrinking (shrinking arrays costs seconds)
FIND = settings(max_examples=2000, database=None, phases=[Phase.generate])


def assert_finds(strategy: st.SearchStrategy, condition) -> None:
    """Some draw satisfies ``condition`` (raises ``NoSuchExample`` otherwise)."""
    find(strategy, condition, settings=FIND)


@given(shape=shapes(min_dims=2, max_dims=3, min_side=2, max_side=4))
def test_shapes_respect_bounds(shape: tuple[int, ...]) -> None:
    assert 2 <= len(shape) <= 3
    assert all(2 <= side <= 4 for side in shape)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(data=st.data())
def test_arrays_are_finite_bounded_and_normal(dtype, data: st.DataObject) -> None:
    x = data.draw(arrays(dtype=dtype, elements=(-2.0, 0.5)))
    assert x.dtype == dtype
    assert np.all(np.isfinite(x)) and np.all((-2.0 <= x) & (x <= 0.5))
    assert np.all(np.abs(x[x != 0]) >= np.finfo(dtype).tiny)  # no subnormals


@given(x=arrays((2, 3)), y=arrays(4), z=arrays(st.just((1, 2))))
def test_arrays_accept_tuple_int_and_strategy_shapes(x, y, z) -> None:
    assert (x.shape, y.shape, z.shape) == ((2, 3), (4,), (1, 2))


def test_arrays_reject_integer_dtypes() -> None:
    with pytest.raises(TypeError, match="floating"):
        arrays((2,), dtype=np.int64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@given(data=st.data())
def test_away_from_zero_respects_min_abs(dtype, data: st.DataObject) -> None:
    x = data.draw(away_from_zero(dtype=dtype, min_abs=0.25, max_abs=2.0))
    assert x.dtype == dtype
    assert np.all((np.abs(x) >= 0.25) & (np.abs(x) <= 2.0))


def test_away_from_zero_draws_both_signs() -> None:
    assert_finds(away_from_zero((6,)), lambda x: (x < 0).any() and (x > 0).any())


@given(x=positive_arrays(min_value=1e-3, max_value=10.0))
def test_positive_arrays_are_positive(x: np.ndarray) -> None:
    assert np.all((x >= 1e-3) & (x <= 10.0))


@given(data=st.data(), step=st.sampled_from([0.01, 0.5]))
def test_distinct_arrays_are_tie_free_and_centred(data: st.DataObject, step: float) -> None:
    x = data.draw(distinct_arrays(shapes(max_dims=4, max_side=4), step=step))
    values = np.sort(x.ravel())
    assert np.unique(values).size == x.size
    if x.size > 1:
        assert np.diff(values).min() >= step * (1 - 1e-9)
    assert abs(values.mean()) <= 1e-9


@given(ab=broadcastable_shapes())
def test_broadcastable_shapes_broadcast(ab: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
    np.broadcast_shapes(*ab)


@given(ab=broadcastable_pairs(dtype=np.float32))
def test_broadcastable_pairs_broadcast(ab: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = ab
    assert a.dtype == b.dtype == np.float32
    assert (a + b).shape == np.broadcast_shapes(a.shape, b.shape)


def _expands(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """``a`` is stretched on some axis when broadcast against ``b``."""
    return any(x == 1 < y for x, y in zip(a[::-1], b[::-1], strict=False))


@pytest.mark.parametrize(
    "condition",
    [
        lambda a, b: len(a) < len(b),
        lambda a, b: len(a) > len(b),
        lambda a, b: _expands(a, b) and _expands(b, a),  # both expand, e.g. (3, 1) vs (2, 1, 4)
        lambda a, b: len(a) == 0,
    ],
    ids=["a-fewer-dims", "a-more-dims", "both-expand", "scalar"],
)
def test_broadcastable_pairs_cover_both_directions(condition) -> None:
    assert_finds(broadcastable_pairs(), lambda ab: condition(ab[0].shape, ab[1].shape))


@given(cfg=conv2d_configs())
def test_conv_configs_are_valid_and_out_shape_matches(cfg: ConvConfig) -> None:
    (sh, sw), (ph, pw) = cfg.stride, cfg.padding
    assert cfg.KH <= cfg.H + 2 * ph and cfg.KW <= cfg.W + 2 * pw
    assert cfg.N <= 3 and cfg.C <= 3 and cfg.OC <= 4 and cfg.H <= 9 and cfg.W <= 9
    # count window positions directly, then ask the oracle, instead of re-using the formula
    oh, ow = (
        len(range(0, cfg.H + 2 * ph - cfg.KH + 1, sh)),
        len(range(0, cfg.W + 2 * pw - cfg.KW + 1, sw)),
    )
    assert cfg.out_shape == (cfg.N, cfg.OC, oh, ow)
    y = conv2d_naive(
        np.zeros((1, 1, cfg.H, cfg.W)),
        np.zeros((1, 1, cfg.KH, cfg.KW)),
        None,
        cfg.stride,
        cfg.padding,
    )
    assert y.shape[2:] == cfg.out_shape[2:]
    assert cfg.x_shape == (cfg.N, cfg.C, cfg.H, cfg.W) and cfg.w_shape[:2] == (cfg.OC, cfg.C)


@pytest.mark.parametrize(
    "condition",
    [
        lambda c: c.KH != c.KW,
        lambda c: c.stride[0] != c.stride[1],
        lambda c: c.stride[0] > c.KH,
        lambda c: min(c.padding) >= 1,
        lambda c: c.padding[0] >= c.KH,
        lambda c: c.H < c.KH,  # only valid thanks to padding
    ],
    ids=[
        "non-square-kernel",
        "non-square-stride",
        "stride>kernel",
        "padded",
        "pad>=kernel",
        "H<KH",
    ],
)
def test_conv_configs_cover_awkward_geometries(condition) -> None:
    assert_finds(conv2d_configs(), condition)


@given(cfg=pool2d_configs())
def test_pool_configs_are_valid(cfg: PoolConfig) -> None:
    (kh, kw), (sh, sw), (ph, pw) = cfg.kernel, cfg.stride, cfg.padding
    assert ph <= kh // 2 and pw <= kw // 2
    assert kh <= cfg.H + 2 * ph and kw <= cfg.W + 2 * pw
    oh, ow = len(range(0, cfg.H + 2 * ph - kh + 1, sh)), len(range(0, cfg.W + 2 * pw - kw + 1, sw))
    assert cfg.out_shape == (cfg.N, cfg.C, oh, ow)
    # the oracle raises if a window held only padding; every output must be a real pixel
    y = max_pool2d_naive(np.zeros((1, 1, cfg.H, cfg.W)), cfg.kernel, cfg.stride, cfg.padding)
    assert y.shape[2:] == (oh, ow) and np.all(y == 0)


@pytest.mark.parametrize(
    "condition",
    [
        lambda c: c.stride[0] < c.kernel[0],  # overlapping windows
        lambda c: c.stride[0] == c.kernel[0] > 1,
        lambda c: c.stride[0] > c.kernel[0],  # gaps between windows
        lambda c: min(c.padding) >= 1,
        lambda c: c.kernel[0] != c.kernel[1],
    ],
    ids=["overlap", "tile", "gap", "padded", "non-square-kernel"],
)
def test_pool_configs_cover_stride_regimes(condition) -> None:
    assert_finds(pool2d_configs(), condition)


def test_configs_reject_invalid_geometry() -> None:
    with pytest.raises(ValueError, match="kernel larger"):
        ConvConfig(N=1, C=1, H=2, W=2, OC=1, KH=5, KW=1, stride=(1, 1), padding=(1, 0))
    with pytest.raises(ValueError, match="kernel // 2"):
        PoolConfig(N=1, C=1, H=4, W=4, kernel=(2, 2), stride=(2, 2), padding=(2, 0))


def test_tensors_are_float64_leaves_requiring_grad() -> None:
    pytest.importorskip(
        "tinygrad_cnn.tensor", reason="engine not written yet: no tinygrad_cnn.tensor"
    )

    @given(t=tensors((2, 3)), frozen=tensors(requires_grad=False))
    def check(t, frozen) -> None:
        assert t.data.dtype == np.float64 and t.data.shape == (2, 3)
        assert t.requires_grad is True and frozen.requires_grad is False

    check()
