"""Reductions and shape ops: sum, mean, max, reshape, transpose, indexing."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import parallel
from ..autograd import Function, unbroadcast, workspace


def is_int(value: Any) -> bool:
    """True for Python and NumPy integers, but not for bools."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def normalize_axes(axis: Any, ndim: int, op: str) -> tuple[int, ...]:
    """``axis`` (None, int or tuple) as a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    try:
        axes = (axis,) if isinstance(axis, int | np.integer) else tuple(axis)
    except TypeError:
        axes = (None,)  # not iterable: refused just below
    if isinstance(axis, str | bytes) or not all(is_int(a) for a in axes):
        raise TypeError(f"{op}: axis must be None, an int or a tuple of ints, got {axis!r}")
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"{op}: axis {a} is out of range for an input with {ndim} dims")
        out.append(int(a) % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis}")
    return tuple(sorted(out))


def reduction_axes(axis: Any, ndim: int, op: str) -> tuple[int, ...]:
    """``normalize_axes`` for a reduction: axis 0 of a 0-d input (which ``normalize_axes``
    accepts, as squeeze and argmax need) reduces nothing, so the result is the input's one
    value, as NumPy's ``sum`` and ``max`` answer."""
    axes = normalize_axes(axis, ndim, op)
    return axes if ndim else ()


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

    def backward_graph(self, gy):
        expanded = gy if self.keepdims else gy.reshape(_kept_shape(self.x_shape, self.axis))
        return BroadcastTo.apply(expanded, shape=self.x_shape)


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

    def backward_graph(self, gy):
        expanded = gy if self.keepdims else gy.reshape(_kept_shape(self.x_shape, self.axis))
        return BroadcastTo.apply(expanded, shape=self.x_shape) / self.count


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

    def backward_graph(self, gy):
        # The argmax is constant where max is differentiable: a fixed one-hot mask.
        axis = 0 if self.axis is None else self.axis
        onehot = np.zeros(self.flat_shape, dtype=gy.dtype)
        np.put_along_axis(onehot, self.saved["idx"], 1, axis=axis)
        kept = (
            (1,) * len(self.x_shape)
            if self.axis is None
            else _kept_shape(self.x_shape, (self.axis,))
        )
        expanded = gy if self.keepdims else gy.reshape(kept)
        return BroadcastTo.apply(expanded, shape=self.x_shape) * onehot.reshape(self.x_shape)


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

    def backward_graph(self, gy):
        return gy.reshape(self.x_shape)


class Transpose(Function):
    attr_names = ("axes",)
    axes: tuple[int, ...] | None

    def forward(self, x):
        n = x.ndim
        if self.axes is not None and (
            not all(-n <= a < n for a in self.axes)
            or sorted(a % n for a in self.axes) != list(range(n))
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

    def backward_graph(self, gy):
        if self.axes is None:
            return gy.transpose()
        return gy.transpose(tuple(int(a) for a in np.argsort([a % gy.ndim for a in self.axes])))


def is_basic_index(index: Any) -> bool:
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
        if is_basic_index(self.index):
            gx[self.index] = gy
        else:
            np.add.at(gx, self.index, gy)
        return gx

    def backward_graph(self, gy):
        return IndexAdd.apply(gy, index=self.index, x_shape=self.x_shape)


def _kept_shape(x_shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """``x_shape`` with the reduced ``axes`` kept as 1 (what ``keepdims=True`` gives)."""
    return tuple(1 if i in axes else n for i, n in enumerate(x_shape))


class BroadcastTo(Function):
    """``x`` broadcast to ``shape`` (a copy, so the result may be written)."""

    attr_names = ("shape",)
    shape: tuple[int, ...]

    def forward(self, x):
        try:
            y = np.broadcast_to(x, self.shape)
        except ValueError:
            raise ValueError(
                f"broadcast_to: cannot broadcast an input of shape {x.shape} to {self.shape}"
            ) from None
        self.x_shape = x.shape
        return np.array(y)

    def backward(self, gy):
        return unbroadcast(gy, self.x_shape)

    def backward_graph(self, gy):
        return SumTo.apply(gy, shape=self.x_shape)


class SumTo(Function):
    """Sum ``x`` down to ``shape`` (the adjoint of broadcasting ``shape`` to ``x.shape``)."""

    attr_names = ("shape",)
    shape: tuple[int, ...]

    def forward(self, x):
        self.x_shape = x.shape
        try:
            return np.array(unbroadcast(x, tuple(self.shape)))
        except ValueError:
            raise ValueError(
                f"sum_to: an input of shape {x.shape} cannot be summed to {self.shape}"
            ) from None

    def backward(self, gy):
        return np.broadcast_to(gy, self.x_shape)

    def backward_graph(self, gy):
        return BroadcastTo.apply(gy, shape=self.x_shape)


class IndexAdd(Function):
    """Zeros of ``x_shape`` with ``g`` added at ``index`` (repeated indices add up): the
    adjoint of ``x[index]``, and ``GetItem``'s gradient."""

    attr_names = ("index",)
    index: Any
    x_shape: tuple[int, ...]

    def forward(self, g):
        gx = np.zeros(self.x_shape, dtype=g.dtype)
        if is_basic_index(self.index):
            gx[self.index] = g
        else:
            np.add.at(gx, self.index, g)
        return gx

    def backward(self, gy):
        return np.asarray(gy[self.index])

    def backward_graph(self, gy):
        return GetItem.apply(gy, index=self.index)


class Cast(Function):
    """``x`` as another float dtype; the gradient comes back in ``x``'s dtype."""

    attr_names = ("dtype",)
    dtype: np.dtype

    def forward(self, x):
        self.x_dtype = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy):
        return gy.astype(self.x_dtype)

    def backward_graph(self, gy):
        return Cast.apply(gy, dtype=self.x_dtype)
