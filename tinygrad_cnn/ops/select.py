"""Selections and the reductions built on them: where, minimum, maximum, logsumexp, the
2-norm. Binary ops broadcast like NumPy; the engine sums gradients back down."""

from __future__ import annotations

import numpy as np

from ..autograd import Function, reduced_axes
from .elementwise import BinaryOp, Exp


def _any_to(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``mask`` (a broadcast shape) reduced with ``any`` to ``shape``: an input's own elements."""
    axes = reduced_axes(mask.shape, shape)
    return (mask.any(axis=axes, keepdims=True) if axes else mask).reshape(shape)


class Where(Function):
    """``a`` where ``cond`` is True, else ``b``; ``cond`` (a boolean array, an attribute, not
    differentiated) broadcasts with both."""

    cond: np.ndarray

    def forward(self, a, b):
        try:
            y = np.where(self.cond, a, b)
        except ValueError:
            raise ValueError(
                f"where: cond {self.cond.shape}, a {a.shape} and b {b.shape} cannot be "
                "broadcast together"
            ) from None
        return y

    def backward(self, gy):
        cond = np.broadcast_to(self.cond, gy.shape)
        need = self.needs_input_grad
        return (gy * cond if need[0] else None), (gy * ~cond if need[1] else None)

    def backward_graph(self, gy):
        cond = np.broadcast_to(self.cond, gy.shape).astype(gy.dtype)
        need = self.needs_input_grad
        return (gy * cond if need[0] else None), (gy * (1 - cond) if need[1] else None)


class _Extremum(BinaryOp, register=False):
    """Elementwise max or min; at a tie each input gets half the gradient (as in PyTorch)."""

    def compute(self, a, b):
        y = self.pick(a, b)
        wins = self.beats(a, b)
        share = wins.astype(y.dtype) + 0.5 * (a == b)  # a's part of the gradient
        self.save(share=share.astype(y.dtype, copy=False))
        return y

    def kinks(self, a, b, margin):
        tie = np.abs(a - b) <= 2 * margin
        return [_any_to(tie, a.shape), _any_to(tie, b.shape)]

    def backward(self, gy):
        share = self.saved["share"]
        need = self.needs_input_grad
        return (gy * share if need[0] else None), (gy * (1 - share) if need[1] else None)

    def backward_graph(self, gy):
        return self.backward(gy)  # the shares are constant away from ties


class Maximum(_Extremum):
    pick, beats = staticmethod(np.maximum), staticmethod(np.greater)


class Minimum(_Extremum):
    pick, beats = staticmethod(np.minimum), staticmethod(np.less)


class LogSumExp(Function):
    """``log(sum(exp(x)))`` over ``axis`` (a tuple), from max-shifted values: never overflows."""

    attr_names = ("axis", "keepdims")
    axis: tuple[int, ...]
    keepdims: bool

    def forward(self, x):
        m = x.max(axis=self.axis, keepdims=True) if x.size else np.zeros(_kept(x, self.axis))
        m = np.where(np.isfinite(m), m, 0).astype(x.dtype)  # all -inf: log(0) = -inf, no nan
        with np.errstate(divide="ignore"):  # an empty or all -inf group: log(0) = -inf
            y = np.log(np.exp(x - m).sum(axis=self.axis, keepdims=True)) + m
        self.save(x=x, y=y)
        return y if self.keepdims else y.reshape([n for i, n in enumerate(y.shape)
                                                  if i not in self.axis])  # fmt: skip

    def backward(self, gy):
        x, y = self.saved["x"], self.saved["y"]
        return gy.reshape(y.shape) * np.exp(x - y)  # y keeps the axes as 1: broadcasts

    def backward_graph(self, gy):
        (x,) = self.parents
        y = LogSumExp.apply(x, axis=self.axis, keepdims=True)
        return gy.reshape(y.shape) * Exp.apply(x - y)


def _kept(x: np.ndarray, axis: tuple[int, ...]) -> tuple[int, ...]:
    """``x.shape`` with the reduced axes kept as 1."""
    return tuple(1 if i in axis else n for i, n in enumerate(x.shape))


def _l2(x: np.ndarray, axis: tuple[int, ...]) -> np.ndarray:
    """``sqrt(sum(x**2))`` over ``axis`` (kept), each group scaled by its largest |x| first,
    so squares neither underflow to 0 nor overflow to inf (as ``np.linalg.norm`` does)."""
    s = np.max(np.abs(x), axis=axis, keepdims=True, initial=0)
    safe = np.where((s == 0) | ~np.isfinite(s), 1, s)  # all zero, inf or NaN: unscaled
    with np.errstate(invalid="ignore"):  # inf - inf in an unscaled group: NaN, replaced below
        y = safe * np.sqrt(((x / safe) ** 2).sum(axis=axis, keepdims=True))
    inf = np.isinf(s)
    return np.where(inf, np.inf, y) if inf.any() else y


class Norm(Function):
    """The Euclidean norm ``sqrt(sum(x**2))`` over ``axis`` (a tuple); the gradient
    ``x / norm`` is taken as 0 where the norm is 0 (a kink)."""

    attr_names = ("axis", "keepdims")
    axis: tuple[int, ...]
    keepdims: bool

    def forward(self, x):
        y = _l2(x, self.axis)
        self.save(x=x, y=y)
        return y if self.keepdims else y.reshape([n for i, n in enumerate(y.shape)
                                                  if i not in self.axis])  # fmt: skip

    def kinks(self, x, margin):
        y = _l2(x, self.axis)
        return [np.broadcast_to(y <= 4 * margin, x.shape)]

    def backward(self, gy):
        x, y = self.saved["x"], self.saved["y"]
        return gy.reshape(y.shape) * x / np.where(y == 0, 1, y)

    def backward_graph(self, gy):
        (x,) = self.parents
        zero = (self.saved["y"] == 0).astype(gy.dtype)  # a constant: 0 / (0 + 1) = 0 there
        y = Norm.apply(x, axis=self.axis, keepdims=True)
        return gy.reshape(y.shape) * x / (y + zero)
