"""Batch normalisation, one fused op for training (batch statistics) and evaluation (given
statistics).

Notation: the input x is (N, C) or (N, C, *S) (e.g. (N, C, H, W)); statistics are per channel
C, taken over the other axes, M = N * prod(S) values each. ``xhat = (x - mean) / sqrt(var +
eps)`` and ``y = gamma * xhat + beta``, with gamma and beta (C,).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Function


def channel_axes(ndim: int) -> tuple[int, ...]:
    """The axes statistics are taken over: every axis but the channel axis 1."""
    return (0, *range(2, ndim))


def _check(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, training: bool) -> None:
    if x.ndim < 2:
        raise ValueError(f"batch_norm: input must be (N, C) or (N, C, H, W), got shape {x.shape}")
    if x.dtype.kind != "f":
        raise TypeError(f"batch_norm: input must be floating point, got dtype {x.dtype}")
    C = x.shape[1]
    for name, a in (("weight", gamma), ("bias", beta)):
        if a.shape != (C,):
            raise ValueError(
                f"batch_norm: {name} must have shape ({C},) for input {x.shape}, got {a.shape}"
            )
    if training and x.size // max(C, 1) < 2:
        raise ValueError(
            f"batch_norm: training needs more than one value per channel to take batch "
            f"statistics, got input of shape {x.shape}"
        )


class BatchNorm(Function):
    """``gamma * (x - mean) / sqrt(var + eps) + beta`` per channel (axis 1).

    Training (``mean`` and ``var`` None): the biased mean and variance of the batch, over every
    axis but 1, and the gradient flows through them. Evaluation: ``mean`` and ``var`` are
    constant (C,) arrays (the running statistics) and the op is an affine map of x.
    """

    attr_names = ("training", "eps")
    eps: float
    mean: np.ndarray | None = None
    var: np.ndarray | None = None

    @property
    def training(self) -> bool:
        return self.mean is None

    def forward(self, x, gamma, beta):
        _check(x, gamma, beta, self.training)
        axes = channel_axes(x.ndim)
        bshape = (1, x.shape[1]) + (1,) * (x.ndim - 2)  # (C,) -> broadcastable against x
        if self.training:
            mean = x.mean(axis=axes, keepdims=True)
            xhat = x - mean
            var = np.mean(np.square(xhat), axis=axes, keepdims=True)
        else:
            mean = self.mean.astype(x.dtype, copy=False).reshape(bshape)
            var = self.var.astype(x.dtype, copy=False).reshape(bshape)
            xhat = x - mean
        inv = 1.0 / np.sqrt(var + self.eps)  # (1, C, 1, ...), x's dtype (eps never upcasts)
        xhat *= inv
        y = xhat * gamma.reshape(bshape)
        y += beta.reshape(bshape)
        if any(self.needs_input_grad):
            self.save(xhat=xhat, inv=inv, gamma=gamma.reshape(bshape))
        return y

    def backward(self, gy):
        xhat, inv, gamma = self.saved["xhat"], self.saved["inv"], self.saved["gamma"]
        axes = channel_axes(gy.ndim)
        need_x, need_g, need_b = self.needs_input_grad
        gb = gy.sum(axis=axes, keepdims=True)  # (1, C, 1, ...)
        gg = np.sum(gy * xhat, axis=axes, keepdims=True)
        gx = None
        if need_x:
            scale = gamma * inv
            if self.training:  # the mean and variance depend on x too
                M = gy.size // gy.shape[1]
                gx = gy - gb / M
                gx -= xhat * (gg / M)
                gx *= scale
            else:
                gx = gy * scale
        C = gy.shape[1]
        return gx, (gg.reshape(C) if need_g else None), (gb.reshape(C) if need_b else None)

    def backward_graph(self, gy):
        x, gamma, beta = self.parents
        axes = channel_axes(x.ndim)
        C = x.shape[1]
        bshape = (1, C) + (1,) * (x.ndim - 2)
        if self.training:
            mean = x.mean(axis=axes, keepdims=True)
            xc = x - mean
            inv = ((xc * xc).mean(axis=axes, keepdims=True) + self.eps) ** -0.5
        else:
            xc = x - self.mean.astype(x.dtype).reshape(bshape)
            inv = (1.0 / np.sqrt(self.var.astype(x.dtype) + self.eps)).reshape(bshape)
        xhat = xc * inv
        need_x, need_g, need_b = self.needs_input_grad
        gx: Any = None
        if need_x:
            scale = gamma.reshape(bshape) * inv
            if self.training:
                gy_mean = gy.mean(axis=axes, keepdims=True)
                proj = (gy * xhat).mean(axis=axes, keepdims=True)
                gx = (gy - gy_mean - xhat * proj) * scale
            else:
                gx = gy * scale
        gg = (gy * xhat).sum(axis=axes).reshape(C) if need_g else None
        gb = gy.sum(axis=axes).reshape(C) if need_b else None
        return gx, gg, gb
