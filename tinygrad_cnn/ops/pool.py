"""Max and average pooling over (N, C, H, W) images; notation as in ``ops.conv``."""

from __future__ import annotations

import numpy as np

from .. import parallel
from ..autograd import Function, memory_order, workspace
from .conv import Pair, check_geometry, fold, pad2d, tap, windows
from .shape import near_ties


class MaxPool2d(Function):
    """Max over each window; padding acts as -inf.

    Tie rule: when several elements of a window share the maximum, the whole gradient of that
    window goes to the first of them in row-major order (as ``argmax`` picks it).

    Both passes loop over the KH*KW kernel offsets ("taps"), each a strided (N, C, OH, OW)
    view of the input, so no (N, C, OH, OW, KH*KW) copy is ever made. Forward keeps a
    running max and, when a gradient is needed, the tap index of each window's max (uint8);
    only a strictly greater value moves it, which gives the tie rule.
    """

    attr_names = ("kernel", "stride", "padding")
    kernel: Pair
    stride: Pair
    padding: Pair

    def forward(self, x):
        OH, OW = check_geometry("max_pool2d", x.shape, self.kernel, self.stride, self.padding)
        _check_pool_padding("max_pool2d", self.kernel, self.padding)
        xp = pad2d(x, self.padding, -np.inf)  # (N, C, Hp, Wp)
        taps = [tap(xp, i, j, self.stride, (OH, OW)) for i, j in np.ndindex(*self.kernel)]
        y = workspace.empty_like(x, (*x.shape[:2], OH, OW))  # in x's memory order
        axis = memory_order(y)[0]  # threads take blocks of y's outermost dimension
        if not any(self.needs_input_grad):

            def max_only(s: tuple[slice, ...]) -> None:
                np.copyto(y[s], taps[0][s])
                for t in taps[1:]:
                    np.maximum(y[s], t[s], out=y[s])

            parallel.along(axis, y.shape, max_only)
            return y
        taps_dtype = np.min_scalar_type(len(taps) - 1)  # uint8 up to 16x16 windows
        idx = workspace.empty_like(y, dtype=taps_dtype)  # tap holding each window's max
        better, k_if_better = workspace.empty_like(idx, dtype=bool), workspace.empty_like(idx)

        def max_and_argmax(s: tuple[slice, ...]) -> None:
            ys, idxs, b, kb = y[s], idx[s], better[s], k_if_better[s]
            np.copyto(ys, taps[0][s])
            idxs.fill(0)
            for k, t in enumerate(taps[1:], start=1):
                np.greater(t[s], ys, out=b)  # strictly greater: ties keep the first
                np.maximum(ys, t[s], out=ys)
                np.multiply(b, taps_dtype.type(k), out=kb)  # k where tap k took over
                np.maximum(idxs, kb, out=idxs)  # taps come in increasing k

        parallel.along(axis, y.shape, max_and_argmax)
        self.save(idx=idx)
        self.x_shape = x.shape
        return y

    def kinks(self, x, margin):
        out = check_geometry("max_pool2d", x.shape, self.kernel, self.stride, self.padding)
        view = windows(pad2d(x, self.padding, -np.inf), self.kernel, self.stride, out)
        ties = near_ties(view, (4, 5), 2 * margin).astype(np.float64)  # (N, C, OH, OW, KH, KW)
        return [fold(ties, x.shape, self.kernel, self.stride, self.padding) > 0]  # -> x_shape

    def backward(self, gy):
        idx = self.saved["idx"]
        (N, C, H, W), (PH, PW), out = self.x_shape, self.padding, gy.shape[2:]
        # Windows that tile the input exactly write every element of gx once: no zeroing.
        tiled = self.stride == self.kernel and (H + 2 * PH, W + 2 * PW) == (
            out[0] * self.kernel[0],
            out[1] * self.kernel[1],
        )
        shape = (N, C, H + 2 * PH, W + 2 * PW)
        gxp = workspace.empty_like(idx, shape, gy.dtype)  # (N, C, Hp, Wp), the input's order
        gy = _like(idx, gy)  # passes below then walk matching strides
        hit = workspace.empty_like(idx, dtype=bool)
        taps = [tap(gxp, i, j, self.stride, out) for i, j in np.ndindex(*self.kernel)]
        if not tiled:  # overlapping windows: threads would add into the same elements
            gxp.fill(0)
            for k, gx_k in enumerate(taps):  # (N, C, OH, OW) view into gxp
                gx_k += gy * np.equal(idx, k, out=hit)
            return gxp[:, :, PH : H + PH, PW : W + PW]

        def scatter(s: tuple[slice, ...]) -> None:
            for k, gx_k in enumerate(taps):
                np.equal(idx[s], k, out=hit[s])
                np.multiply(gy[s], hit[s], out=gx_k[s])

        parallel.along(memory_order(idx)[0], idx.shape, scatter)
        return gxp[:, :, PH : H + PH, PW : W + PW]

    def backward_graph(self, gy):
        from .adjoint import MaxPool2dScatter  # it builds on this module

        return MaxPool2dScatter.apply(gy, idx=self.saved["idx"], kernel=self.kernel,
                                      stride=self.stride, padding=self.padding,
                                      x_shape=self.x_shape)  # fmt: skip


def _like(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``b`` in ``a``'s memory order (a pooled copy unless it already is)."""
    if b.transpose(memory_order(a)).flags.c_contiguous:
        return b
    out = workspace.empty_like(a, dtype=b.dtype)
    parallel.copyto(out, b)
    return out


class AvgPool2d(Function):
    """Mean over each window; zero padding counts in the divisor KH*KW."""

    attr_names = ("kernel", "stride", "padding")
    kernel: Pair
    stride: Pair
    padding: Pair

    def forward(self, x):
        OH, OW = check_geometry("avg_pool2d", x.shape, self.kernel, self.stride, self.padding)
        _check_pool_padding("avg_pool2d", self.kernel, self.padding)
        xp = pad2d(x, self.padding)  # (N, C, Hp, Wp)
        view = windows(xp, self.kernel, self.stride, (OH, OW))  # (N, C, OH, OW, KH, KW)
        self.x_shape = x.shape
        return view.mean(axis=(4, 5))

    def backward(self, gy):
        KH, KW = self.kernel
        gy_each = gy / (KH * KW)  # each of a window's KH*KW elements gets this share
        # (N, C, OH, OW) -> (N, C, OH, OW, KH, KW), a broadcast view
        g6 = np.broadcast_to(gy_each[..., None, None], (*gy.shape, KH, KW))
        return fold(g6, self.x_shape, self.kernel, self.stride, self.padding)

    def backward_graph(self, gy):
        from .adjoint import AvgPool2dSpread  # it builds on this module

        return AvgPool2dSpread.apply(gy, kernel=self.kernel, stride=self.stride,
                                     padding=self.padding, x_shape=self.x_shape)  # fmt: skip


def _check_pool_padding(op: str, kernel: Pair, padding: Pair) -> None:
    """Padding may be at most half the kernel, so no window lies wholly in the padding."""
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding {padding} must be at most half the kernel size {kernel}")
