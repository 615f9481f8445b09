"""Convolution and pooling over (N, C, H, W) images, via im2col.

Notation
--------
N batch, C input channels, H/W input height/width, OC output channels, KH/KW kernel size,
SH/SW stride, PH/PW zero padding per side, OH/OW output size:
``OH = (H + 2*PH - KH) // SH + 1`` (floor division; see ``conv_output_size``).

Every op here works on the "window" view of the padded input, (N, C, OH, OW, KH, KW), made
with stride tricks (no copy), and folds gradients back with a loop over the KH*KW kernel
offsets only (never over N, H or W).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..autograd import Function

Pair = tuple[int, int]


def pair(value: Any, op: str, arg: str) -> Pair:
    """An int or an (h, w) pair of ints as a pair; anything else raises naming the op."""
    if isinstance(value, int | np.integer):
        return int(value), int(value)
    if isinstance(value, tuple | list) and len(value) == 2:
        if all(isinstance(v, int | np.integer) for v in value):
            return int(value[0]), int(value[1])
    raise TypeError(f"{op}: {arg} must be an int or a pair of ints, got {value!r}")


def conv_output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """Output length of a sliding window: ``(size + 2*pad - kernel) // stride + 1``."""
    return (size + 2 * pad - kernel) // stride + 1


def check_geometry(
    op: str, x_shape: tuple[int, ...], kernel: Pair, stride: Pair, padding: Pair
) -> Pair:
    """Validate a 2-D window geometry for input (N, C, H, W); return (OH, OW)."""
    if len(x_shape) != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W), got shape {x_shape}")
    if min(stride) <= 0:
        raise ValueError(f"{op}: stride must be positive, got {stride}")
    if min(padding) < 0:
        raise ValueError(f"{op}: padding must be non-negative, got {padding}")
    if min(kernel) <= 0:
        raise ValueError(f"{op}: kernel size must be positive, got {kernel}")
    H, W = x_shape[2:]
    (KH, KW), (PH, PW) = kernel, padding
    if KH > H + 2 * PH or KW > W + 2 * PW:
        raise ValueError(
            f"{op}: kernel {KH}x{KW} is larger than the padded input {H + 2 * PH}x{W + 2 * PW} "
            f"(input shape {x_shape}, padding {padding})"
        )
    return (
        conv_output_size(H, KH, stride[0], PH),
        conv_output_size(W, KW, stride[1], PW),
    )


def _pad(x: np.ndarray, padding: Pair, value: float = 0.0) -> np.ndarray:
    PH, PW = padding
    if PH == 0 and PW == 0:
        return x
    N, C, H, W = x.shape
    xp = np.full((N, C, H + 2 * PH, W + 2 * PW), value, dtype=x.dtype)
    xp[:, :, PH : H + PH, PW : W + PW] = x
    return xp


def windows(xp: np.ndarray, kernel: Pair, stride: Pair, out: Pair) -> np.ndarray:
    """Read-only view (N, C, OH, OW, KH, KW) of every window of a padded input (N, C, Hp, Wp)."""
    sN, sC, sH, sW = xp.strides
    N, C = xp.shape[:2]
    return as_strided(
        xp,
        shape=(N, C, out[0], out[1], kernel[0], kernel[1]),
        strides=(sN, sC, sH * stride[0], sW * stride[1], sH, sW),
        writeable=False,
    )


def fold(
    g6: np.ndarray, x_shape: tuple[int, ...], kernel: Pair, stride: Pair, padding: Pair
) -> np.ndarray:
    """Adjoint of ``windows``: add window gradients (N, C, OH, OW, KH, KW) into (N, C, H, W)."""
    N, C, H, W = x_shape
    (KH, KW), (SH, SW), (PH, PW) = kernel, stride, padding
    OH, OW = g6.shape[2:4]
    gxp = np.zeros((N, C, H + 2 * PH, W + 2 * PW), dtype=g6.dtype)
    for i in range(KH):
        for j in range(KW):
            gxp[:, :, i : i + SH * (OH - 1) + 1 : SH, j : j + SW * (OW - 1) + 1 : SW] += g6[
                :, :, :, :, i, j
            ]
    return gxp[:, :, PH : H + PH, PW : W + PW]


def im2col(x: np.ndarray, kernel_size: Any, stride: Any = 1, padding: Any = 0) -> np.ndarray:
    """Unfold image patches into rows of a matrix (the book's layout).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    kernel_size, stride, padding : int or (h, w) pair

    Returns
    -------
    col : ndarray, shape (N*OH*OW, C*KH*KW)
        Row ``(n, oh, ow)`` holds the window at output position (oh, ow) of image n,
        flattened in (c, kh, kw) order, so ``col @ w.reshape(OC, -1).T`` is a convolution.
    """
    kernel = pair(kernel_size, "im2col", "kernel_size")
    stride_, padding_ = pair(stride, "im2col", "stride"), pair(padding, "im2col", "padding")
    OH, OW = check_geometry("im2col", x.shape, kernel, stride_, padding_)
    view = windows(_pad(x, padding_), kernel, stride_, (OH, OW))
    N, C = x.shape[:2]
    # (N, C, OH, OW, KH, KW) -> (N, OH, OW, C, KH, KW) -> (N*OH*OW, C*KH*KW): the one copy
    return view.transpose(0, 2, 3, 1, 4, 5).reshape(N * OH * OW, C * kernel[0] * kernel[1])


def col2im(
    col: np.ndarray, x_shape: tuple[int, ...], kernel_size: Any, stride: Any = 1, padding: Any = 0
) -> np.ndarray:
    """Adjoint of ``im2col``: sum patch rows (N*OH*OW, C*KH*KW) back into images (N, C, H, W).

    Overlapping windows add up, so ``<im2col(x), c> == <x, col2im(c, x.shape, ...)>``.
    """
    kernel = pair(kernel_size, "col2im", "kernel_size")
    stride_, padding_ = pair(stride, "col2im", "stride"), pair(padding, "col2im", "padding")
    OH, OW = check_geometry("col2im", tuple(x_shape), kernel, stride_, padding_)
    N, C = x_shape[:2]
    expected = (N * OH * OW, C * kernel[0] * kernel[1])
    if col.shape != expected:
        raise ValueError(f"col2im: col has shape {col.shape}, expected {expected} for {x_shape}")
    # (N*OH*OW, C*KH*KW) -> (N, OH, OW, C, KH, KW) -> (N, C, OH, OW, KH, KW)
    g6 = col.reshape(N, OH, OW, C, *kernel).transpose(0, 3, 1, 2, 4, 5)
    return fold(g6, tuple(x_shape), kernel, stride_, padding_)


class Conv2d(Function):
    """2-D cross-correlation: x (N, C, H, W), w (OC, C, KH, KW), b (OC,) -> (N, OC, OH, OW)."""

    attr_names = ("kernel", "stride", "padding")
    stride: Pair
    padding: Pair

    def forward(self, x, w, b=None):
        if w.ndim != 4:
            raise ValueError(f"conv2d: w must be 4-D (OC, C, KH, KW), got shape {w.shape}")
        if x.ndim == 4 and x.shape[1] != w.shape[1]:
            raise ValueError(
                f"conv2d: channel mismatch: x {x.shape} has {x.shape[1]} channels, "
                f"w {w.shape} expects {w.shape[1]}"
            )
        OC = w.shape[0]
        if b is not None and b.shape != (OC,):
            raise ValueError(f"conv2d: b must have shape ({OC},), got {b.shape}")
        self.kernel = w.shape[2:]
        OH, OW = check_geometry("conv2d", x.shape, self.kernel, self.stride, self.padding)
        N = x.shape[0]
        col = im2col(x, self.kernel, self.stride, self.padding)  # (N*OH*OW, C*KH*KW)
        wm = w.reshape(OC, -1)  # (OC, C*KH*KW)
        y = col @ wm.T  # (N*OH*OW, OC)
        if b is not None:
            y += b
        self.save(col=col, wm=wm)
        self.x_shape, self.w_shape = x.shape, w.shape
        # (N*OH*OW, OC) -> (N, OH, OW, OC) -> (N, OC, OH, OW)
        return np.ascontiguousarray(y.reshape(N, OH, OW, OC).transpose(0, 3, 1, 2))

    def backward(self, gy):
        col, wm = self.saved["col"], self.saved["wm"]
        OC = gy.shape[1]
        # (N, OC, OH, OW) -> (N, OH, OW, OC) -> (N*OH*OW, OC)
        gy2 = gy.transpose(0, 2, 3, 1).reshape(-1, OC)
        need = self.needs_input_grad
        gx = None
        if need[0]:
            gx = col2im(gy2 @ wm, self.x_shape, self.kernel, self.stride, self.padding)
        gw = (gy2.T @ col).reshape(self.w_shape) if need[1] else None
        if len(need) == 2:
            return gx, gw
        return gx, gw, (gy.sum(axis=(0, 2, 3)) if need[2] else None)


class MaxPool2d(Function):
    """Max over each window; padding acts as -inf.

    Tie rule: when several elements of a window share the maximum, the whole gradient of that
    window goes to the first of them in row-major order (as ``argmax`` picks it).
    """

    attr_names = ("kernel", "stride", "padding")
    kernel: Pair
    stride: Pair
    padding: Pair

    def forward(self, x):
        OH, OW = check_geometry("max_pool2d", x.shape, self.kernel, self.stride, self.padding)
        _check_pool_padding("max_pool2d", self.kernel, self.padding)
        view = windows(_pad(x, self.padding, -np.inf), self.kernel, self.stride, (OH, OW))
        N, C = x.shape[:2]
        flat = view.reshape(N, C, OH, OW, -1)  # (N, C, OH, OW, KH*KW)
        idx = np.argmax(flat, axis=-1)[..., None]
        self.save(idx=idx)
        self.x_shape = x.shape
        return np.take_along_axis(flat, idx, axis=-1)[..., 0]

    def backward(self, gy):
        idx = self.saved["idx"]
        g = np.zeros((*gy.shape, self.kernel[0] * self.kernel[1]), dtype=gy.dtype)
        np.put_along_axis(g, idx, gy[..., None], axis=-1)
        g6 = g.reshape(*gy.shape, *self.kernel)  # (N, C, OH, OW, KH, KW)
        return fold(g6, self.x_shape, self.kernel, self.stride, self.padding)


class AvgPool2d(Function):
    """Mean over each window; zero padding counts in the divisor KH*KW."""

    attr_names = ("kernel", "stride", "padding")
    kernel: Pair
    stride: Pair
    padding: Pair

    def forward(self, x):
        OH, OW = check_geometry("avg_pool2d", x.shape, self.kernel, self.stride, self.padding)
        _check_pool_padding("avg_pool2d", self.kernel, self.padding)
        view = windows(_pad(x, self.padding), self.kernel, self.stride, (OH, OW))
        self.x_shape = x.shape
        return view.mean(axis=(4, 5))

    def backward(self, gy):
        KH, KW = self.kernel
        g = gy / (KH * KW)
        g6 = np.broadcast_to(g[..., None, None], (*gy.shape, KH, KW))
        return fold(g6, self.x_shape, self.kernel, self.stride, self.padding)


def _check_pool_padding(op: str, kernel: Pair, padding: Pair) -> None:
    """Padding may be at most half the kernel, so no window lies wholly in the padding."""
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding {padding} must be at most half the kernel size {kernel}")
