"""The ops that gradients are made of when they are differentiated again (``create_graph``).

A backward pass that is linear in the upstream gradient is itself an op here, with its own
backward; the pairs are adjoint to each other, so differentiating to any order stays inside
this family:

- ``BroadcastTo`` <-> ``SumTo`` and ``IndexAdd`` <-> ``GetItem`` live with the shape ops;
- ``Conv2dGradInput`` (the transposed convolution, col2im) and ``Conv2dGradWeight``, with
  ``Conv2d`` (DeZero's ``Deconv2d`` / ``Conv2DGradW`` pattern);
- ``MaxPool2dScatter`` <-> ``MaxPool2dGather`` through a saved argmax (constant: max-pooling's
  second derivative is zero almost everywhere);
- ``AvgPool2dSpread`` <-> ``AvgPool2d``.

These run only when someone asks for a graph of a gradient; the first-order backward of every
op stays on its own ndarray fast path. They use the public im2col/col2im (the book's layout).

Notation: N, C, H, W input; OC, KH, KW weights; OH, OW output; gy upstream gradient.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Function
from .conv import Conv2d, fold, pad2d, windows
from .im2col import col2im, im2col
from .pool import AvgPool2d


def _rows(a: np.ndarray) -> np.ndarray:
    """(N, OC, OH, OW) -> (N*OH*OW, OC), the book's row layout of a conv output."""
    return a.transpose(0, 2, 3, 1).reshape(-1, a.shape[1])


def _unrows(m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(N*OH*OW, OC) -> (N, OC, OH, OW)."""
    N, OC, OH, OW = shape
    return np.ascontiguousarray(m.reshape(N, OH, OW, OC).transpose(0, 3, 1, 2))


class Conv2dGradInput(Function):
    """The transposed convolution: gy (N, OC, OH, OW), w (OC, C, KH, KW) -> gx ``x_shape``.

    It is conv2d's input gradient; its own gradients are a conv2d (for gy) and a weight
    gradient (for w).
    """

    attr_names = ("stride", "padding")
    x_shape: tuple[int, ...]
    stride: tuple[int, int]
    padding: tuple[int, int]

    def forward(self, gy, w):
        OC = w.shape[0]
        self.save(gy=gy, w=w)
        gcol = _rows(gy) @ w.reshape(OC, -1)  # (N*OH*OW, OC) @ (OC, C*KH*KW)
        return col2im(gcol, self.x_shape, w.shape[2:], self.stride, self.padding)

    def backward(self, g):
        gy, w = self.saved["gy"], self.saved["w"]
        col = im2col(g, w.shape[2:], self.stride, self.padding)  # (N*OH*OW, C*KH*KW)
        ggy = (
            _unrows(col @ w.reshape(w.shape[0], -1).T, gy.shape)
            if self.needs_input_grad[0]
            else None
        )
        gw = (_rows(gy).T @ col).reshape(w.shape) if self.needs_input_grad[1] else None
        return ggy, gw

    def backward_graph(self, g):
        gy, w = self.parents
        ggy = Conv2d.apply(g, w, stride=self.stride, padding=self.padding)
        gw = Conv2dGradWeight.apply(g, gy, w_shape=w.shape, stride=self.stride,
                                    padding=self.padding)  # fmt: skip
        return ggy, gw


class Conv2dGradWeight(Function):
    """conv2d's weight gradient: x (N, C, H, W), gy (N, OC, OH, OW) -> gw ``w_shape``."""

    attr_names = ("stride", "padding")
    w_shape: tuple[int, ...]
    stride: tuple[int, int]
    padding: tuple[int, int]

    def forward(self, x, gy):
        col = im2col(x, self.w_shape[2:], self.stride, self.padding)  # (N*OH*OW, C*KH*KW)
        self.save(col=col, gy=gy)
        self.x_shape = x.shape
        return (_rows(gy).T @ col).reshape(self.w_shape)  # (OC, N*OH*OW) @ (.., C*KH*KW)

    def backward(self, gw):
        col, gy = self.saved["col"], self.saved["gy"]
        OC = self.w_shape[0]
        kernel = self.w_shape[2:]
        gx = ggy = None
        if self.needs_input_grad[0]:
            gcol = _rows(gy) @ gw.reshape(OC, -1)  # (N*OH*OW, C*KH*KW)
            gx = col2im(gcol, self.x_shape, kernel, self.stride, self.padding)
        if self.needs_input_grad[1]:
            ggy = _unrows(col @ gw.reshape(OC, -1).T, gy.shape)
        return gx, ggy

    def backward_graph(self, gw):
        x, gy = self.parents
        gx = Conv2dGradInput.apply(gy, gw, x_shape=x.shape, stride=self.stride,
                                   padding=self.padding)  # fmt: skip
        ggy = Conv2d.apply(x, gw, stride=self.stride, padding=self.padding)
        return gx, ggy


class _PoolGeometry(Function, register=False):
    """Shared attributes of the pooling adjoints."""

    attr_names = ("kernel", "stride", "padding")
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    x_shape: tuple[int, ...]


class MaxPool2dScatter(_PoolGeometry):
    """max_pool2d's input gradient: each window's gy goes to the window's argmax (``idx``,
    (N, C, OH, OW), the flat KH*KW offset the forward pass chose)."""

    idx: np.ndarray

    def forward(self, gy):
        N, C, OH, OW = gy.shape
        KH, KW = self.kernel
        g6 = np.zeros((N, C, OH, OW, KH * KW), dtype=gy.dtype)
        np.put_along_axis(g6, self.idx[..., None].astype(np.intp), gy[..., None], axis=4)
        # (N, C, OH, OW, KH*KW) -> (N, C, OH, OW, KH, KW), windows added into x_shape
        return fold(g6.reshape(N, C, OH, OW, KH, KW), self.x_shape, self.kernel, self.stride,
                    self.padding)  # fmt: skip

    def backward(self, g):
        return _gather(g, self.idx, self.kernel, self.stride, self.padding)

    def backward_graph(self, g):
        return MaxPool2dGather.apply(g, idx=self.idx, kernel=self.kernel, stride=self.stride,
                                     padding=self.padding, x_shape=self.x_shape)  # fmt: skip


class MaxPool2dGather(_PoolGeometry):
    """The value at each window's argmax: x (N, C, H, W) -> (N, C, OH, OW); the adjoint of
    ``MaxPool2dScatter``."""

    idx: np.ndarray

    def forward(self, x):
        return _gather(x, self.idx, self.kernel, self.stride, self.padding)

    def backward(self, gy):
        return MaxPool2dScatter(idx=self.idx, kernel=self.kernel, stride=self.stride,
                                padding=self.padding, x_shape=self.x_shape).forward(gy)  # fmt: skip

    def backward_graph(self, gy):
        return MaxPool2dScatter.apply(gy, idx=self.idx, kernel=self.kernel, stride=self.stride,
                                      padding=self.padding, x_shape=self.x_shape)  # fmt: skip


def _gather(x: np.ndarray, idx: np.ndarray, kernel: Any, stride: Any, padding: Any) -> np.ndarray:
    """x at each window's chosen offset: (N, C, H, W) -> (N, C, OH, OW)."""
    N, C, OH, OW = idx.shape
    view = windows(pad2d(x, padding), kernel, stride, (OH, OW))  # (N, C, OH, OW, KH, KW)
    flat = view.reshape(N, C, OH, OW, -1)  # -> (N, C, OH, OW, KH*KW), a copy
    return np.take_along_axis(flat, idx[..., None].astype(np.intp), axis=4)[..., 0]


class AvgPool2dSpread(_PoolGeometry):
    """avg_pool2d's input gradient: each window's gy spread evenly over the window."""

    def forward(self, gy):
        N, C, OH, OW = gy.shape
        KH, KW = self.kernel
        g6 = np.broadcast_to((gy / (KH * KW))[..., None, None], (N, C, OH, OW, KH, KW))
        return fold(g6, self.x_shape, self.kernel, self.stride, self.padding)

    def backward(self, g):
        return AvgPool2d(kernel=self.kernel, stride=self.stride, padding=self.padding).forward(g)

    def backward_graph(self, g):
        return AvgPool2d.apply(g, kernel=self.kernel, stride=self.stride, padding=self.padding)
