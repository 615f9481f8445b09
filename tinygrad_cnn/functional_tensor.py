"""More documented wrappers, part of ``functional`` (which re-exports every name here): shape
ops, elementwise math and reductions, with PyTorch's names and argument conventions.

``axis`` is the documented spelling; PyTorch's ``dim`` (and ``keepdim``) are accepted as
aliases. Compositions of registered ops are marked as such; their gradients come from the ops.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .functional_core import (  # noqa: A004
    Axis,
    Tensor,
    TensorLike,
    _flag,
    _one_axis,
    as_tensor,
    dim_alias,
    div,
    getitem,
    max,
    mean,
    mul,
    neg,
    pow,
    reshape,
    sub,
    sum,
)
from .ops import activations as _act
from .ops import join as _join
from .ops import select as _sel
from .ops import shape as _shape

__all__ = [
    "cat", "stack", "split", "chunk", "unsqueeze", "squeeze", "broadcast_to", "expand", "pad",
    "flip", "abs", "sqrt", "sin", "cos", "erf", "log1p", "square", "clip", "clamp", "where",
    "minimum", "maximum", "min", "var", "std", "logsumexp", "norm", "argmax", "argmin",
]  # fmt: skip


def _axis(x: Tensor, axis: int, op: str, extra: int = 0) -> int:
    """One axis of a tensor with ``x.ndim + extra`` dims, as a non-negative int."""
    if not _shape.is_int(axis):
        raise TypeError(f"{op}: axis must be one int, got {axis!r}")
    n = x.ndim + extra
    if not -n <= axis < builtins.max(n, 1):
        raise ValueError(f"{op}: axis {axis} is out of range for {n} dims (shape {x.shape})")
    return int(axis) % builtins.max(n, 1)


def _tensors(xs: Any, op: str) -> list[Tensor]:
    if isinstance(xs, Tensor | np.ndarray) or not isinstance(xs, Sequence) or not xs:
        raise TypeError(f"{op}: expected a non-empty list or tuple of tensors, got {xs!r:.60}")
    first = next((t for t in xs if isinstance(t, Tensor)), None)
    return [as_tensor(t, like=first) for t in xs]


# ------------------------------------------------------------------------------ shape ops
@dim_alias
def cat(tensors: Sequence[TensorLike], axis: int = 0) -> Tensor:
    """Concatenate along an existing axis.

    Parameters
    ----------
    tensors : sequence of Tensors, shapes equal except along ``axis``
    axis : int

    Returns
    -------
    Tensor; its ``axis`` is as long as the inputs' together.

    Examples
    --------
    >>> cat([Tensor(np.ones((2, 3))), Tensor(np.ones((1, 3)))]).shape
    (3, 3)
    """
    ts = _tensors(tensors, "cat")
    return _join.Cat.apply(*ts, axis=_axis(ts[0], axis, "cat"))


@dim_alias
def stack(tensors: Sequence[TensorLike], axis: int = 0) -> Tensor:
    """Join tensors of one shape S along a new axis (``unsqueeze`` + ``cat``).

    Returns
    -------
    Tensor, S with ``len(tensors)`` inserted at ``axis``.
    """
    ts = _tensors(tensors, "stack")
    if any(t.shape != ts[0].shape for t in ts):
        raise ValueError(f"stack: all shapes must be equal, got {[t.shape for t in ts]}")
    ax = _axis(ts[0], axis, "stack", extra=1)
    return cat([unsqueeze(t, ax) for t in ts], ax)


def _cuts(x: Tensor, sizes: list[int], ax: int) -> tuple[Tensor, ...]:
    bounds = np.cumsum([0, *sizes])
    lead = (slice(None),) * ax
    return tuple(
        getitem(x, (*lead, slice(int(a), int(b))))
        for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    )


@dim_alias
def split(
    x: TensorLike, split_size_or_sections: int | Sequence[int], axis: int = 0
) -> tuple[Tensor, ...]:
    """Split into pieces along ``axis`` (slices, so gradients flow back into ``x``).

    Parameters
    ----------
    x : Tensor, shape S
    split_size_or_sections : int or sequence of ints
        One int: pieces of that length, the last one shorter if need be. A sequence: the
        length of each piece; they must add up to ``S[axis]``.
    axis : int

    Returns
    -------
    tuple of Tensors
    """
    x = as_tensor(x)
    ax = _axis(x, axis, "split")
    n = x.shape[ax]
    if _shape.is_int(split_size_or_sections):
        step = int(split_size_or_sections)
        if step <= 0:
            raise ValueError(f"split: split_size must be positive, got {step}")
        sizes = [builtins.min(step, n - lo) for lo in range(0, n, step)] or [0]
    else:
        sizes = list(split_size_or_sections)
        if not all(_shape.is_int(s) and s >= 0 for s in sizes) or builtins.sum(sizes) != n:
            raise ValueError(
                f"split: sections {sizes} must be non-negative ints adding up to {n}, the "
                f"length of axis {ax} of shape {x.shape}"
            )
    return _cuts(x, sizes, ax)


@dim_alias
def chunk(x: TensorLike, chunks: int, axis: int = 0) -> tuple[Tensor, ...]:
    """Split into ``chunks`` pieces of length ``ceil(S[axis] / chunks)`` (the last may be
    shorter, and there may be fewer pieces, as in PyTorch); returns a tuple of Tensors."""
    x = as_tensor(x)
    if not _shape.is_int(chunks) or chunks <= 0:
        raise ValueError(f"chunk: chunks must be a positive int, got {chunks!r}")
    n = x.shape[_axis(x, axis, "chunk")]
    return split(x, builtins.max(1, -(-n // int(chunks))), axis)


@dim_alias
def unsqueeze(x: TensorLike, axis: int) -> Tensor:
    """Insert an axis of length 1 at ``axis`` (in ``-ndim-1 .. ndim``); a reshape."""
    x = as_tensor(x)
    ax = _axis(x, axis, "unsqueeze", extra=1)
    return reshape(x, x.shape[:ax] + (1,) + x.shape[ax:])


@dim_alias
def squeeze(x: TensorLike, axis: Axis = None) -> Tensor:
    """Remove axes of length 1: all of them (``axis=None``) or those listed; a listed axis of
    another length is left alone, as in PyTorch. A reshape."""
    x = as_tensor(x)
    axes = _shape.normalize_axes(axis, x.ndim, "squeeze")
    return reshape(x, tuple(n for i, n in enumerate(x.shape) if not (i in axes and n == 1)))


def broadcast_to(x: TensorLike, shape: Sequence[int]) -> Tensor:
    """``x`` broadcast (NumPy rules) to ``shape``; the gradient is summed back to ``x``'s shape.

    Parameters
    ----------
    x : Tensor, shape S
    shape : tuple of ints that S broadcasts to

    Returns
    -------
    Tensor, shape ``shape``
    """
    dims = (shape,) if _shape.is_int(shape) else shape
    if not isinstance(dims, tuple | list) or not all(_shape.is_int(d) for d in dims):
        raise TypeError(f"broadcast_to: shape must be a tuple of ints, got {shape!r}")
    return _shape.BroadcastTo.apply(x, shape=tuple(int(d) for d in dims))


def expand(x: TensorLike, *sizes: Any) -> Tensor:
    """PyTorch's ``expand``: :func:`broadcast_to` where ``-1`` keeps an existing length.

    ``expand(x, 3, -1)`` and ``expand(x, (3, -1))`` both work.
    """
    x = as_tensor(x)
    if len(sizes) == 1 and isinstance(sizes[0], tuple | list):
        sizes = tuple(sizes[0])
    extra = len(sizes) - x.ndim
    if extra < 0 or any(s == -1 and i < extra for i, s in enumerate(sizes)):
        raise ValueError(f"expand: sizes {sizes} do not fit a tensor of shape {x.shape}")
    return broadcast_to(x, [x.shape[i - extra] if s == -1 else s for i, s in enumerate(sizes)])


def pad(x: TensorLike, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    """Pad the last ``len(pad) // 2`` axes, PyTorch's way round.

    Parameters
    ----------
    x : Tensor, shape (..., H, W) for example
    pad : sequence of non-negative ints
        ``(left, right)`` for the last axis, then ``(top, bottom)`` for the one before, ...
    mode : "constant" or "reflect"
        "reflect" mirrors without repeating the edge (``pad < length`` of that axis);
        it is made of slices and a ``cat``.
    value : float
        The fill value of "constant".

    Returns
    -------
    Tensor, shape (..., H + top + bottom, W + left + right)
    """
    x = as_tensor(x)
    widths = list(pad) if isinstance(pad, tuple | list) else None
    if widths is None or len(widths) % 2 or len(widths) > 2 * x.ndim:
        raise ValueError(f"pad: pad must hold (before, after) pairs for at most {x.ndim} axes "
                         f"of an input {x.shape}, got {pad!r}")  # fmt: skip
    if not all(_shape.is_int(p) and p >= 0 for p in widths):
        raise ValueError(f"pad: pad widths must be non-negative ints, got {pad!r}")
    pairs = [(0, 0)] * (x.ndim - len(widths) // 2) + [
        (int(widths[i]), int(widths[i + 1])) for i in range(len(widths) - 2, -1, -2)
    ]
    if mode == "constant":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise TypeError(f"pad: value must be a number, got {value!r}")
        return _join.Pad.apply(x, pad_width=tuple(pairs), value=float(value))
    if mode != "reflect":
        raise ValueError(f"pad: mode must be 'constant' or 'reflect', got {mode!r}")
    for ax, (lo, hi) in enumerate(pairs):
        if lo == hi == 0:
            continue
        n = x.shape[ax]
        if builtins.max(lo, hi) >= n:
            raise ValueError(f"pad: reflect padding ({lo}, {hi}) must be smaller than the "
                             f"length {n} of axis {ax} (input {x.shape})")  # fmt: skip
        lead = (slice(None),) * ax
        left = getitem(x, (*lead, slice(lo, 0, -1)))  # x[lo], ..., x[1]
        stop = n - 2 - hi if n - 2 - hi >= 0 else None  # a stop of -1 would mean the end
        right = getitem(x, (*lead, slice(n - 2, stop, -1)))  # x[n-2], ..., x[n-1-hi]
        x = cat([left, x, right], ax)
    return x


@dim_alias
def flip(x: TensorLike, axis: Axis = None) -> Tensor:
    """Reverse the order along ``axis`` (an int, a tuple, or None for all); a slice."""
    x = as_tensor(x)
    axes = _shape.normalize_axes(axis, x.ndim, "flip")
    return getitem(x, tuple(slice(None, None, -1) if i in axes else slice(None)
                            for i in range(x.ndim)))  # fmt: skip


# ------------------------------------------------------------------------------ elementwise
def abs(x: TensorLike) -> Tensor:  # noqa: A001
    """Elementwise ``|x|``; shape S -> S. The gradient at exactly 0 is 0."""
    return _act.Abs.apply(x)


def sqrt(x: TensorLike) -> Tensor:
    """Elementwise square root; x : Tensor, shape S, x >= 0 -> Tensor, shape S."""
    return _act.Sqrt.apply(x)


def sin(x: TensorLike) -> Tensor:
    """Elementwise sine; shape S -> S."""
    return _act.Sin.apply(x)


def cos(x: TensorLike) -> Tensor:
    """Elementwise cosine; shape S -> S."""
    return _act.Cos.apply(x)


def erf(x: TensorLike) -> Tensor:
    """Elementwise error function ``2/sqrt(pi) * integral_0^x exp(-t^2) dt``; shape S -> S."""
    return _act.Erf.apply(x)


def log1p(x: TensorLike) -> Tensor:
    """Elementwise ``log(1 + x)``, exact for tiny x; x > -1, shape S -> S."""
    return _act.Log1p.apply(x)


def square(x: TensorLike) -> Tensor:
    """Elementwise ``x * x`` (``pow(x, 2)``); shape S -> S."""
    return pow(x, 2)


def _bound(op: str, name: str, v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        raise TypeError(f"{op}: {name} must be a number or None, got {v!r}")
    if math.isnan(v):
        raise ValueError(f"{op}: {name} must not be nan")
    return float(v)


def clip(x: TensorLike, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
    """Limit values to ``[min, max]`` (either bound may be None).

    Parameters
    ----------
    x : Tensor, shape S
    min, max : float or None
        Python numbers. The gradient passes where ``min <= x <= max``, bounds included.

    Returns
    -------
    Tensor, shape S
    """
    lo, hi = _bound("clip", "min", min), _bound("clip", "max", max)
    if lo is None and hi is None:
        raise ValueError("clip: at least one of min and max must be given")
    return _act.Clip.apply(x, low=lo, high=hi)


clamp = clip


def where(cond: Any, a: TensorLike, b: TensorLike) -> Tensor:
    """``a`` where ``cond`` is True, else ``b``; all three broadcast together.

    Parameters
    ----------
    cond : boolean array or Tensor (not differentiated)
    a, b : Tensor, array or Python number

    Returns
    -------
    Tensor, the broadcast shape
    """
    c = np.asarray(cond._data if isinstance(cond, Tensor) else cond)
    if c.dtype != np.bool_:
        raise TypeError(f"where: cond must be boolean, got dtype {c.dtype} (shape {c.shape})")
    return _sel.Where.apply(a, b, cond=c)


def minimum(a: TensorLike, b: TensorLike) -> Tensor:
    """Elementwise minimum with broadcasting; at a tie each input gets half the gradient."""
    return _sel.Minimum.apply(a, b)


def maximum(a: TensorLike, b: TensorLike) -> Tensor:
    """Elementwise maximum with broadcasting; at a tie each input gets half the gradient."""
    return _sel.Maximum.apply(a, b)


# ------------------------------------------------------------------------------ reductions
@dim_alias
def min(x: TensorLike, axis: int | None = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Minimum over one axis or all (``-max(-x)``); same arguments and shapes as ``max``.

    Returns the values only (PyTorch's ``min(dim=...)`` also returns indices: use
    :func:`argmin`). Ties: the gradient goes to the first minimal element.
    """
    return neg(max(neg(x), axis, keepdims))


def _count(x: Tensor, axes: tuple[int, ...]) -> int:
    return math.prod(x.shape[a] for a in axes)


@dim_alias
def var(x: TensorLike, axis: Axis = None, correction: int = 1, keepdims: bool = False) -> Tensor:
    """Variance ``sum((x - mean)^2) / (n - correction)`` over ``axis``.

    Parameters
    ----------
    x : Tensor, shape S
    axis : None, int or tuple of ints
    correction : int
        1 (the default, as in PyTorch) gives the unbiased estimate, 0 the population variance.
    keepdims : bool

    Returns
    -------
    Tensor, S without (or with length-1) reduced axes. Raises ValueError when
    ``n <= correction``.
    """
    x = as_tensor(x)
    axes = _shape.reduction_axes(axis, x.ndim, "var")
    keep = _flag("var", "keepdims", keepdims)
    n = _count(x, axes)
    if not _shape.is_int(correction) or correction < 0:
        raise ValueError(f"var: correction must be a non-negative int, got {correction!r}")
    if n <= correction:
        raise ValueError(f"var: {n} elements per group leave no degrees of freedom with "
                         f"correction={correction} (input {x.shape}, axis {axis})")  # fmt: skip
    d = sub(x, mean(x, axes, keepdims=True))
    return div(sum(mul(d, d), axes, keep), float(n - correction))


@dim_alias
def std(x: TensorLike, axis: Axis = None, correction: int = 1, keepdims: bool = False) -> Tensor:
    """Standard deviation, ``sqrt(var(...))``; same arguments as :func:`var`."""
    return sqrt(var(x, axis, correction, keepdims))


@dim_alias
def logsumexp(x: TensorLike, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """``log(sum(exp(x)))`` over ``axis``, from max-shifted values (never overflows).

    Parameters
    ----------
    x : Tensor, shape S
    axis : None, int or tuple of ints
    keepdims : bool

    Returns
    -------
    Tensor, S without (or with length-1) reduced axes. The gradient is ``softmax(x)``.
    """
    x = as_tensor(x)
    axes = _shape.reduction_axes(axis, x.ndim, "logsumexp")
    return _sel.LogSumExp.apply(x, axis=axes, keepdims=_flag("logsumexp", "keepdims", keepdims))


@dim_alias
def norm(x: TensorLike, p: float | str = 2, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Vector p-norm over ``axis`` (all elements by default).

    Parameters
    ----------
    x : Tensor, shape S
    p : 2 (or "fro"), 1, ``inf`` or any number > 0
        2 is one op whose gradient at a zero vector is 0; the others are made of ``abs``,
        ``pow``, ``sum`` and ``max``.
    axis : None, int or tuple of ints
    keepdims : bool

    Returns
    -------
    Tensor, S without (or with length-1) reduced axes
    """
    x = as_tensor(x)
    axes = _shape.reduction_axes(axis, x.ndim, "norm")
    keep = _flag("norm", "keepdims", keepdims)
    if p == "fro" or p == 2:
        return _sel.Norm.apply(x, axis=axes, keepdims=keep)
    if isinstance(p, bool) or not isinstance(p, int | float) or not p > 0:
        raise ValueError(f"norm: p must be a number > 0, inf or 'fro', got {p!r}")
    if p == 1:
        return sum(abs(x), axes, keep)
    if p == math.inf:
        y = abs(x)
        for a in sorted(axes, reverse=True):
            y = max(y, a, keepdims=True)
        return y if keep else reshape(y, [n for i, n in enumerate(y.shape) if i not in axes])
    return pow(sum(pow(abs(x), p), axes, keep), 1.0 / p)


def _arg(fn: Any, op: str, x: TensorLike, axis: int | None, keepdims: bool) -> Tensor:
    x = as_tensor(x)
    if axis is not None:
        x, axis = _one_axis(x, axis, op)
    if x.size == 0:
        raise ValueError(f"{op}: empty tensor of shape {x.shape}")
    return Tensor(fn(x.numpy(), axis=axis, keepdims=_flag(op, "keepdims", keepdims)))


@dim_alias
def argmax(x: TensorLike, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """Index of the maximum along ``axis`` (of the flattened tensor when None).

    Returns an int64 Tensor outside any graph: indices have no gradient, so ``backward`` or
    ``grad`` through it raises (it "does not require grad"). Ties: the first index.
    """
    return _arg(np.argmax, "argmax", x, axis, keepdims)


@dim_alias
def argmin(x: TensorLike, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """Index of the minimum along ``axis``; an int64 Tensor without gradient, like argmax."""
    return _arg(np.argmin, "argmin", x, axis, keepdims)
