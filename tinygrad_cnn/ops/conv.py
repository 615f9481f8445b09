"""Convolution over (N, C, H, W) images via im2col, and the window helpers pooling shares.

Notation
--------
N batch, C input channels, H/W input height/width, OC output channels, KH/KW kernel size,
SH/SW stride, PH/PW zero padding per side, Hp/Wp padded size, OH/OW output size:
``OH = (H + 2*PH - KH) // SH + 1`` (floor division; see ``conv_output_size``).

One im2col
----------
``unfold`` is the im2col every caller runs: a no-copy view (C, KH, KW, OH, OW, N) of the
windows of padded images (C, Hp, Wp, N). Any strides do, so an (N, C, H, W) array transposed
is as good as channels-first memory. ``fold_into`` is its adjoint, col2im: it adds window
gradients back with a loop over the KH*KW kernel offsets ("taps") only, never over N, H or W.
``Conv2d`` copies ``unfold`` into its GEMM matrix and folds its input gradient with
``fold_into``; the public ``im2col``/``col2im`` are the same two routines in the book's
(N*OH*OW, C*KH*KW) layout, and pooling reads the same windows through ``windows``/``fold``
(NCHW order). So the tests of ``im2col``/``col2im`` check the code the network runs.

Arrays come from the engine's ``workspace`` (reused between steps), and an op's output keeps
its input's memory order: ``Conv2d`` returns (N, OC, OH, OW) views of (OH, OW, N, OC) memory,
and ReLU and pooling carry that layout on (see ``Conv2d``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import parallel
from ..autograd import Function, workspace

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
    if min(kernel) <= 0:
        raise ValueError(f"{op}: kernel size must be positive, got {kernel} (input {x_shape})")
    if min(stride) <= 0:
        raise ValueError(f"{op}: stride must be positive, got {stride} (input {x_shape})")
    if min(padding) < 0:
        raise ValueError(f"{op}: padding must be non-negative, got {padding} (input {x_shape})")
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


def pad2d(x: np.ndarray, padding: Pair, value: float = 0.0) -> np.ndarray:
    """Images (N, C, H, W) padded with ``value`` to (N, C, H + 2*PH, W + 2*PW).

    Returns ``x`` itself when there is no padding, else a workspace array.
    """
    PH, PW = padding
    if PH == 0 and PW == 0:
        return x
    N, C, H, W = x.shape
    xp = workspace.empty((N, C, H + 2 * PH, W + 2 * PW), x.dtype)
    xp.fill(value)
    xp[:, :, PH : H + PH, PW : W + PW] = x
    return xp


# ---------------------------------------------------------------------------- the one im2col
def unfold(xp: np.ndarray, kernel: Pair, stride: Pair, out: Pair) -> np.ndarray:
    """im2col as a view: every window of padded images, (C, Hp, Wp, N) -> (C, KH, KW, OH, OW, N).

    ``xp`` may have any strides. The result is read-only and copies nothing; copying it into a
    (C*KH*KW, OH*OW*N) array gives the transpose of the book's im2col matrix.
    """
    sC, sH, sW, sN = xp.strides
    (C, N), (KH, KW), (SH, SW), (OH, OW) = xp.shape[::3], kernel, stride, out
    return as_strided(
        xp, (C, KH, KW, OH, OW, N), (sC, sH, sW, sH * SH, sW * SW, sN), writeable=False
    )


def taps(i: int, j: int, stride: Pair, out: Pair) -> tuple[slice, slice]:
    """Rows and columns that kernel offset (i, j) reads across all OH x OW windows."""
    (SH, SW), (OH, OW) = stride, out
    return slice(i, i + SH * (OH - 1) + 1, SH), slice(j, j + SW * (OW - 1) + 1, SW)


def fold_into(gxp: np.ndarray, gcol6: np.ndarray, stride: Pair) -> None:
    """col2im, the adjoint of ``unfold``: add gcol6 (C, KH, KW, OH, OW, N) into gxp (C, Hp, Wp, N).

    Works in place on ``gxp`` (any strides); overlapping windows add up.
    """
    _, KH, KW, OH, OW, _ = gcol6.shape
    for i in range(KH):
        for j in range(KW):
            rows, cols = taps(i, j, stride, (OH, OW))
            acc = gxp[:, rows, cols]  # (C, OH, OW, N) view into gxp
            acc += gcol6[:, i, j]


# ---------------------------------------------------------------------------- NCHW views of it
def windows(xp: np.ndarray, kernel: Pair, stride: Pair, out: Pair) -> np.ndarray:
    """``unfold`` in NCHW order: read-only view (N, C, OH, OW, KH, KW) of padded (N, C, Hp, Wp)."""
    # (N, C, Hp, Wp) -> (C, Hp, Wp, N); unfold's (C, KH, KW, OH, OW, N) -> (N, C, OH, OW, KH, KW)
    return unfold(xp.transpose(1, 2, 3, 0), kernel, stride, out).transpose(5, 0, 3, 4, 1, 2)


def tap(xp: np.ndarray, i: int, j: int, stride: Pair, out: Pair) -> np.ndarray:
    """View (N, C, OH, OW) of the element at kernel offset (i, j) of every window of xp.

    Equal to ``windows(xp, ...)[..., i, j]``, but writeable when ``xp`` is.
    """
    rows, cols = taps(i, j, stride, out)
    return xp[:, :, rows, cols]


def fold(
    g6: np.ndarray, x_shape: tuple[int, ...], kernel: Pair, stride: Pair, padding: Pair
) -> np.ndarray:
    """``fold_into`` in NCHW order: add window gradients (N, C, OH, OW, KH, KW) to (N, C, H, W)."""
    N, C, H, W = x_shape
    PH, PW = padding
    gxp = workspace.zeros((N, C, H + 2 * PH, W + 2 * PW), g6.dtype)
    # (N, C, Hp, Wp) -> (C, Hp, Wp, N) and (N, C, OH, OW, KH, KW) -> (C, KH, KW, OH, OW, N)
    fold_into(gxp.transpose(1, 2, 3, 0), g6.transpose(1, 4, 5, 2, 3, 0), stride)
    return gxp[:, :, PH : H + PH, PW : W + PW]


class Conv2d(Function):
    """2-D cross-correlation: x (N, C, H, W), w (OC, C, KH, KW), b (OC,) -> (N, OC, OH, OW).

    im2col (``unfold``) + one GEMM, with layouts chosen so that no big array is transposed:

    - The images are first laid side by side, ``xs`` (C, Hp, Wp, N) (small: the input), so
      that copying ``unfold(xs)`` into ``col`` (C*KH*KW, OH*OW*N), im2col with K = C*KH*KW rows
      (the transpose of the book's layout), moves runs of N contiguous values.
    - With a bias, ``col`` gets a last row of ones: the GEMM adds the bias, and the backward
      GEMM returns its gradient (the sum of gy over N, OH, OW) as its last row.
    - The GEMM writes y as (OH, OW, N, OC) memory, returned as a (N, OC, OH, OW) view (same
      shape and values as NCHW, other strides). ReLU and pooling keep this layout, in which
      each pooling tap is a run of N*OC contiguous values; backward reads gy back without a
      copy when it comes in that layout, and folds the input gradient with ``fold_into``.
    """

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
        (N, C, H, W), (PH, PW), K = x.shape, self.padding, w[0].size
        dtype = np.result_type(x, w) if b is None else np.result_type(x, w, b)
        xs = workspace.empty((C, H + 2 * PH, W + 2 * PW, N), dtype)
        if PH or PW:
            xs.fill(0)
        np.copyto(xs[:, PH : PH + H, PW : PW + W], x.transpose(1, 2, 3, 0))  # (N, C, H, W) ->
        col = workspace.empty((K + (b is not None), OH * OW * N), dtype)
        col6 = col[:K].reshape(C, *self.kernel, OH, OW, N)  # (C*KH*KW, ...) -> (C, KH, KW, ...)
        wm = w.reshape(OC, K)  # (OC, C, KH, KW) -> (OC, K)
        if b is not None:
            wm = np.concatenate([wm, b[:, None]], axis=1)  # (OC, K + 1)
        y = workspace.empty((OH, OW, N, OC), dtype)
        y2, per_row = y.reshape(OH * OW * N, OC), OW * N  # (OH, OW, N, OC) -> (OH*OW*N, OC)
        cols = unfold(xs, self.kernel, self.stride, (OH, OW))  # (C, KH, KW, OH, OW, N) view

        def rows_of_output(lo: int, hi: int) -> None:  # output rows lo:hi, on one thread
            col6[:, :, :, lo:hi] = cols[:, :, :, lo:hi]  # im2col: one copy, runs of N values
            p = slice(lo * per_row, hi * per_row)
            if b is not None:
                col[K, p] = 1
            np.matmul(col[:, p].T, wm.T, out=y2[p])  # (rows, K [+1]) @ (K [+1], OC)

        parallel.run(rows_of_output, OH, col.size, ranges=4, gemm=True)
        if any(self.needs_input_grad):
            self.save(col=col, wm=wm)
            self.x_shape, self.w_shape = x.shape, w.shape
        return y.transpose(2, 3, 0, 1)  # (OH, OW, N, OC) memory viewed as (N, OC, OH, OW)

    def backward(self, gy):
        col, wm = self.saved["col"], self.saved["wm"]
        (N, C, H, W), (PH, PW) = self.x_shape, self.padding
        K = C * self.kernel[0] * self.kernel[1]
        _, OC, OH, OW = gy.shape
        # (N, OC, OH, OW) -> (OH, OW, N, OC) -> (OH*OW*N, OC): free when gy is in y's layout
        gyt = gy.transpose(2, 3, 0, 1)
        if not gyt.flags.c_contiguous:  # another layout: one (threaded) transposing copy
            gyt, src = workspace.empty(gyt.shape, gy.dtype), gyt
            parallel.copyto(gyt, src)
        gy2 = gyt.reshape(OH * OW * N, OC)  # (OH, OW, N, OC) -> (OH*OW*N, OC)
        need = self.needs_input_grad
        gx = gw = gb = None
        if need[0]:  # the input gradient: a GEMM into im2col layout, then col2im
            gcol = workspace.empty((K, OH * OW * N), gy2.dtype)
            wk = wm[:, :K].T  # (OC, K) -> (K, OC)

            def columns(lo: int, hi: int) -> None:  # (K, OC) @ (OC, hi - lo)
                np.matmul(wk, gy2[lo:hi].T, out=gcol[:, lo:hi])

            parallel.run(columns, len(gy2), gy2.size * K, 256, gemm=True)
            gcol6 = gcol.reshape(C, *self.kernel, OH, OW, N)  # (C*KH*KW, ...) -> (C, KH, KW, ...)
            gxs = workspace.zeros((C, H + 2 * PH, W + 2 * PW, N), gy2.dtype)

            def images(lo: int, hi: int) -> None:  # windows overlap in H, W: split over N
                fold_into(gxs[..., lo:hi], gcol6[..., lo:hi], self.stride)

            parallel.run(images, N, gcol.size)
            gx = gxs[:, PH : PH + H, PW : PW + W].transpose(3, 0, 1, 2)  # -> (N, C, H, W)
        if any(need[1:]):  # (OC, OH*OW*N) @ (OH*OW*N, K [+1]) -> (OC, K [+1])
            # Long only in its inner dimension: threads sum over blocks of it.
            parts = parallel.run(
                lambda lo, hi: gy2[lo:hi].T @ col[:, lo:hi].T,
                len(gy2), gy2.size * len(col), 4096, gemm=True,
            )  # fmt: skip
            gwb = parts[0] if len(parts) == 1 else np.sum(parts, axis=0)
            gw = gwb[:, :K].reshape(self.w_shape)  # (OC, K) -> (OC, C, KH, KW)
            gb = gwb[:, K] if len(need) == 3 else None  # the row of ones: sum over N, OH, OW
        return (gx, gw) if len(need) == 2 else (gx, gw, gb)

    def backward_graph(self, gy):
        from .adjoint import Conv2dGradInput, Conv2dGradWeight  # they build on this module

        x, w, *b = self.parents
        need = self.needs_input_grad
        attrs = {"stride": self.stride, "padding": self.padding}
        gx = Conv2dGradInput.apply(gy, w, x_shape=x.shape, **attrs) if need[0] else None
        gw = Conv2dGradWeight.apply(x, gy, w_shape=w.shape, **attrs) if need[1] else None
        if not b:
            return gx, gw
        return gx, gw, (gy.sum(axis=(0, 2, 3)) if need[2] else None)
