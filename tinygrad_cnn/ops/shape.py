"""Reductions and shape ops: sum, mean, max, reshape, transpose, indexing."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import parallel
from ..autograd import Function, workspace


def normalize_axes(axis: Any, ndim: int, op: str) -> tuple[int, ...]:
    """``axis`` (None, int or tuple) as a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int | np.integer) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"{op}: axis {a} is out of range for an input with {ndim} dims")
        out.append(int(a) % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis}")
    return tuple(sorted(out))


def _expand(gy: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
    """Reinsert reduced axes as size 1 so ``gy`` broadcasts against the input."""
    return gy if keepdims else np.expand_dims(gy, axes)


class Sum(Function):
    attr_names = ("axis", "keepdims")
    axis: tuple[int, ...]
    keepdims: bool

    def forward(self, x):
        self.x_shape = x.shape
        return np.sum(x, axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        # gy (x_shape without the summed axes) -> x_shape, a broadcast view
        return np.broadcast_to(_expand(gy, self.axis, self.keepdims), self.x_shape)


class Mean(Function):
    attr_names = ("axis", "keepdims")
    axis: tuple[int, ...]
    keepdims: bool

    def forward(self, x):
        self.x_shape = x.shape
        self.count = int(np.prod([x.shape[a] for a in self.axis]))
        return np.mean(x, axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        gx = _expand(gy, self.axis, self.keepdims) / self.count
        return np.broadcast_to(gx, self.x_shape)  # reduced axes of length 1 -> x_shape


def near_ties(v: np.ndarray, axis: Any, margin: float) -> np.ndarray:
    """Elements within ``margin`` of their group's max, in groups where two or more are."""
    near = v.max(axis=axis, keepdims=True) - v <= margin
    return near & (near.sum(axis=axis, keepdims=True) >= 2)


class Max(Function):
    """Max over one axis (or all). The gradient goes to the first maximal element."""

    attr_names = ("axis", "keepdims")
    axis: int | None
    keepdims: bool

    def forward(self, x):
        flat = x.reshape(-1) if self.axis is None else x  # axis None: x_shape -> (size,)
        axis = 0 if self.axis is None else self.axis
        idx = np.expand_dims(np.argmax(flat, axis=axis), axis)  # flat_shape with axis -> 1
        y = np.take_along_axis(flat, idx, axis=axis)
        self.save(idx=idx)
        self.x_shape, self.flat_shape = x.shape, flat.shape
        if self.axis is None:  # (1,) -> (1,) * ndim or ()
            return y.reshape((1,) * x.ndim) if self.keepdims else y.reshape(())
        return y if self.keepdims else np.squeeze(y, axis)

    def kinks(self, x, margin):
        if self.axis is None:
            return [near_ties(x.reshape(-1), 0, 2 * margin).reshape(x.shape)]
        return [near_ties(x, self.axis, 2 * margin)]

    def backward(self, gy):
        axis = 0 if self.axis is None else self.axis
        gx = np.zeros(self.flat_shape, dtype=gy.dtype)
        vals = gy.reshape(self.saved["idx"].shape)  # y's shape -> idx's (the axis kept as 1)
        np.put_along_axis(gx, self.saved["idx"], vals, axis=axis)
        return gx.reshape(self.x_shape)  # flat_shape -> x_shape


class Reshape(Function):
    attr_names = ("shape",)
    shape: tuple[int, ...]

    def forward(self, x):
        self.x_shape = x.shape
        try:
            if x.flags.c_contiguous:
                return x.reshape(self.shape)  # x_shape -> shape, a view
            # NumPy would copy into a fresh array; copy into a pooled one instead.
            y = workspace.empty(x.shape, x.dtype)
            parallel.copyto(y, x)
            return y.reshape(self.shape)  # x_shape -> shape
        except ValueError:
            raise ValueError(
                f"reshape: cannot reshape input of shape {x.shape} ({x.size} elements) "
                f"into shape {self.shape}"
            ) from None

    def backward(self, gy):
        return gy.reshape(self.x_shape)  # shape -> x_shape


class Transpose(Function):
    attr_names = ("axes",)
    axes: tuple[int, ...] | None

    def forward(self, x):
        if self.axes is not None and sorted(a % max(x.ndim, 1) for a in self.axes) != list(
            range(x.ndim)
        ):
            raise ValueError(
                f"transpose: axes {self.axes} are not a permutation of the {x.ndim} dims of "
                f"an input of shape {x.shape}"
            )
        return np.transpose(x, self.axes)  # x_shape -> x_shape permuted by axes

    def backward(self, gy):
        if self.axes is None:
            return np.transpose(gy)  # reversed dims, reversed back
        return np.transpose(gy, np.argsort([a % gy.ndim for a in self.axes]))  # the inverse


def _is_basic_index(index: Any) -> bool:
    """True for ints, slices, None and Ellipsis: such an index never repeats an element."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, int | np.integer | slice) or i is None or i is Ellipsis for i in items)


class GetItem(Function):
    """``x[index]`` with basic or integer-array indexing; repeated indices accumulate."""

    attr_names = ("index",)
    index: Any

    def forward(self, x):
        self.x_shape = x.shape
        try:
            return np.asarray(x[self.index])
        except IndexError as e:
            raise IndexError(f"getitem: {e} (input shape {x.shape})") from None

    def backward(self, gy):
        gx = np.zeros(self.x_shape, dtype=gy.dtype)
        if _is_basic_index(self.index):
            gx[self.index] = gy
        else:
            np.add.at(gx, self.index, gy)
        return gx
