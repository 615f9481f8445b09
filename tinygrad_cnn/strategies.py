"""Hypothesis strategies for property-testing ops, yours or ours.

Every strategy draws float64 by default, finite and bounded, and builds awkward inputs by
construction rather than by filtering, so no examples are discarded. Each line below decorates
a separate test::

    from hypothesis import given, strategies as st
    from tinygrad_cnn import strategies as tst

    @given(shape=tst.shapes(max_dims=3))                     # any small shape
    @given(x=tst.arrays((3, 4), elements=(-1.0, 1.0)))       # bounded finite floats
    @given(x=tst.tensors((2, 5)))                            # float64 Tensor, requires_grad
    @given(ab=tst.broadcastable_pairs())                     # a + b with broadcasting
    @given(shapes=tst.broadcastable_shapes(max_dims=3))      # just the two shapes
    @given(x=tst.away_from_zero((3, 4)))                     # relu, abs: no value near the kink
    @given(x=tst.positive_arrays((3, 4), min_value=0.5))     # log, sqrt, division
    @given(cfg=tst.conv2d_configs())                         # cfg.x_shape, cfg.w_shape, ...
    @given(cfg=tst.pool2d_configs(), data=st.data())         # then, in the test body:
    #     x = data.draw(tst.distinct_arrays(cfg.x_shape))    # tie-free input for max-pool

Shapes use N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW with
``OH = (H + 2*PH - KH) // SH + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
from hypothesis.strategies import SearchStrategy

Shape = tuple[int, ...]
ShapeLike = int | Shape | SearchStrategy | None

__all__ = [
    "ConvConfig",
    "PoolConfig",
    "arrays",
    "away_from_zero",
    "broadcastable_pairs",
    "broadcastable_shapes",
    "conv2d_configs",
    "distinct_arrays",
    "positive_arrays",
    "pool2d_configs",
    "shapes",
    "tensors",
]


def shapes(
    min_dims: int = 1, max_dims: int = 4, min_side: int = 1, max_side: int = 5
) -> SearchStrategy[Shape]:
    """Array shapes with ``min_dims..max_dims`` axes of length ``min_side..max_side``."""
    return hnp.array_shapes(
        min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
    )


def _shape_strategy(shape: ShapeLike) -> SearchStrategy[Shape]:
    if shape is None:
        return shapes()
    if isinstance(shape, SearchStrategy):
        return shape
    return st.just((int(shape),) if isinstance(shape, (int, np.integer)) else tuple(shape))


def _floats(dtype: np.dtype, low: float, high: float) -> SearchStrategy[float]:
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"strategies: a floating dtype is required, got {dtype}")
    if not low <= high:
        raise ValueError(f"strategies: empty element range ({low}, {high})")
    finite = {"allow_nan": False, "allow_infinity": False, "allow_subnormal": False}
    return st.floats(low, high, width=8 * dtype.itemsize, **finite)


def arrays(
    shape: ShapeLike = None,
    dtype: np.dtype | type = np.float64,
    elements: tuple[float, float] = (-3.0, 3.0),
) -> SearchStrategy[np.ndarray]:
    """Arrays of finite floats in ``[low, high] = elements``, no NaN, inf or subnormals.

    ``shape`` is a tuple, an int, a strategy of shapes, or None to draw one with :func:`shapes`.
    """
    return hnp.arrays(np.dtype(dtype), _shape_strategy(shape), elements=_floats(dtype, *elements))


def tensors(
    shape: ShapeLike = None,
    dtype: np.dtype | type = np.float64,
    elements: tuple[float, float] = (-3.0, 3.0),
    requires_grad: bool = True,
) -> SearchStrategy:
    """``Tensor`` leaves wrapping :func:`arrays` (a fresh Tensor per example)."""
    from tinygrad_cnn.tensor import Tensor

    return arrays(shape, dtype, elements).map(lambda a: Tensor(a, requires_grad=requires_grad))


@st.composite
def broadcastable_shapes(
    draw, min_dims: int = 0, max_dims: int = 4, min_side: int = 1, max_side: int = 5
) -> tuple[Shape, Shape]:
    """Pairs of shapes ``(a, b)`` that broadcast against each other, in either direction.

    Each is a trailing slice of a common shape with some axes set to 1, so ``a`` may have fewer
    axes than ``b``, more, or the same, and both may expand at once, e.g. ``(3, 1)`` vs
    ``(2, 1, 4)``. Each has ``min_dims..max_dims`` axes; 0 axes is a scalar shape ``()``.
    """
    full = draw(shapes(max(min_dims, 1), max_dims, min_side, max_side))

    def operand() -> Shape:
        ndim = draw(st.integers(min_dims, len(full)))
        ones = draw(st.lists(st.booleans(), min_size=ndim, max_size=ndim))
        return tuple(
            1 if one else side for one, side in zip(ones, full[len(full) - ndim :], strict=True)
        )

    return operand(), operand()


def broadcastable_pairs(
    dtype: np.dtype | type = np.float64,
    elements: tuple[float, float] = (-3.0, 3.0),
    max_dims: int = 4,
    max_side: int = 5,
) -> SearchStrategy[tuple[np.ndarray, np.ndarray]]:
    """Two arrays ``(a, b)`` with :func:`broadcastable_shapes`, e.g. to test ``a * b``."""
    pairs = broadcastable_shapes(max_dims=max_dims, max_side=max_side)
    return pairs.flatmap(
        lambda ab: st.tuples(arrays(ab[0], dtype, elements), arrays(ab[1], dtype, elements))
    )


def away_from_zero(
    shape: ShapeLike = None,
    dtype: np.dtype | type = np.float64,
    min_abs: float = 0.1,
    max_abs: float = 3.0,
) -> SearchStrategy[np.ndarray]:
    """Arrays with ``min_abs <= |x| <= max_abs`` and random signs, for ops with a kink at 0.

    Built as magnitude times sign, so nothing is filtered out.
    """
    if not 0 < min_abs <= max_abs:
        raise ValueError(f"away_from_zero: need 0 < min_abs <= max_abs, got {min_abs}, {max_abs}")

    def signed(shape: Shape) -> SearchStrategy[np.ndarray]:
        magnitude = arrays(shape, dtype, (min_abs, max_abs))
        negative = hnp.arrays(np.bool_, shape)
        return st.tuples(magnitude, negative).map(lambda mn: np.where(mn[1], -mn[0], mn[0]))

    return _shape_strategy(shape).flatmap(signed)


def positive_arrays(
    shape: ShapeLike = None,
    dtype: np.dtype | type = np.float64,
    min_value: float = 0.1,
    max_value: float = 3.0,
) -> SearchStrategy[np.ndarray]:
    """Arrays in ``[min_value, max_value]`` with ``min_value > 0``: domains of log, sqrt, 1/x."""
    if not 0 < min_value <= max_value:
        raise ValueError(f"positive_arrays: need 0 < min_value <= max_value, got {min_value}")
    return arrays(shape, dtype, (min_value, max_value))


def distinct_arrays(
    shape: ShapeLike, dtype: np.dtype | type = np.float64, step: float = 0.01
) -> SearchStrategy[np.ndarray]:
    """Tie-free arrays: a random permutation of ``0..size-1`` times ``step``, centred on 0.

    Any two values differ by at least ``step`` (up to rounding), so a finite-difference
    perturbation much smaller than ``step`` never changes which element of a window is maximal.
    """
    if not step > 0:
        raise ValueError(f"distinct_arrays: step must be > 0, got {step}")

    def permuted(shape: Shape) -> SearchStrategy[np.ndarray]:
        size = int(np.prod(shape))
        centred = (np.arange(size) - (size - 1) / 2) * step
        perms = st.permutations(range(size))
        return perms.map(lambda p: centred[list(p)].astype(dtype).reshape(shape))

    return _shape_strategy(shape).flatmap(permuted)


class _Window2d:
    """Geometry shared by the configs: needs N, C, H, W, kernel, stride and padding."""

    def _validate(self, sizes: tuple[int, ...]) -> None:
        (kh, kw), (ph, pw) = self.kernel, self.padding
        if min(*sizes, *self.stride) < 1 or min(ph, pw) < 0:
            raise ValueError(f"{self}: sizes and strides must be >= 1, padding >= 0")
        if kh > self.H + 2 * ph or kw > self.W + 2 * pw:
            raise ValueError(f"{self}: kernel larger than the padded input")

    @property
    def OH(self) -> int:
        return (self.H + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1

    @property
    def OW(self) -> int:
        return (self.W + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1

    @property
    def x_shape(self) -> tuple[int, int, int, int]:
        return self.N, self.C, self.H, self.W


@dataclass(frozen=True)
class ConvConfig(_Window2d):
    """A valid conv2d geometry: x (N, C, H, W), w (OC, C, KH, KW), b (OC,) -> (N, OC, OH, OW)."""

    N: int
    C: int
    H: int
    W: int
    OC: int
    KH: int
    KW: int
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        self._validate((self.N, self.C, self.H, self.W, self.OC, self.KH, self.KW))

    @property
    def kernel(self) -> tuple[int, int]:
        return self.KH, self.KW

    @property
    def w_shape(self) -> tuple[int, int, int, int]:
        return self.OC, self.C, self.KH, self.KW

    @property
    def b_shape(self) -> tuple[int]:
        return (self.OC,)

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        return self.N, self.OC, self.OH, self.OW


@dataclass(frozen=True)
class PoolConfig(_Window2d):
    """A valid 2-D pooling geometry: x (N, C, H, W) -> (N, C, OH, OW), padding <= kernel // 2."""

    N: int
    C: int
    H: int
    W: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)

    def __post_init__(self) -> None:
        self._validate((self.N, self.C, self.H, self.W, *self.kernel))
        if self.padding[0] > self.kernel[0] // 2 or self.padding[1] > self.kernel[1] // 2:
            raise ValueError(f"{self}: padding must be <= kernel // 2 per side")

    @property
    def out_shape(self) -> tuple[int, int, int, int]:
        return self.N, self.C, self.OH, self.OW


@st.composite
def conv2d_configs(
    draw,
    max_batch: int = 3,
    max_channels: int = 3,
    max_out_channels: int = 4,
    max_side: int = 9,
    max_kernel: int = 4,
    max_stride: int = 4,
    max_padding: int = 2,
) -> ConvConfig:
    """Valid conv geometries (:class:`ConvConfig`), small enough for float64 finite differences.

    Kernels and strides are drawn per axis (non-square), strides may exceed the kernel, and
    padding may exceed it too. The kernel and padding are drawn first, then H and W from
    ``max(1, K - 2*P)``, so every draw is valid.
    """
    if max_kernel > max_side:
        raise ValueError(f"conv2d_configs: max_kernel {max_kernel} > max_side {max_side}")
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    ph, pw = draw(st.integers(0, max_padding)), draw(st.integers(0, max_padding))
    return ConvConfig(
        N=draw(st.integers(1, max_batch)),
        C=draw(st.integers(1, max_channels)),
        H=draw(st.integers(max(1, kh - 2 * ph), max_side)),
        W=draw(st.integers(max(1, kw - 2 * pw), max_side)),
        OC=draw(st.integers(1, max_out_channels)),
        KH=kh,
        KW=kw,
        stride=(draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))),
        padding=(ph, pw),
    )


@st.composite
def pool2d_configs(
    draw,
    max_batch: int = 3,
    max_channels: int = 3,
    max_side: int = 9,
    max_kernel: int = 4,
    max_stride: int = 5,
) -> PoolConfig:
    """Valid pool geometries (:class:`PoolConfig`), small enough for finite differences.

    Strides fall below (overlapping windows), at and above the kernel, per axis. Padding is
    drawn in ``0..K // 2`` (PyTorch's rule), so every window holds a real pixel.
    """
    if max_kernel > max_side:
        raise ValueError(f"pool2d_configs: max_kernel {max_kernel} > max_side {max_side}")
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    return PoolConfig(
        N=draw(st.integers(1, max_batch)),
        C=draw(st.integers(1, max_channels)),
        H=draw(st.integers(max(1, kh - 2 * ph), max_side)),
        W=draw(st.integers(max(1, kw - 2 * pw), max_side)),
        kernel=(kh, kw),
        stride=(draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))),
        padding=(ph, pw),
    )
