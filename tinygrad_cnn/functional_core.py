"""The core of ``functional``: the wrappers ``Tensor`` operators and SimpleConvNet use.

Every function takes Tensors (or arrays / Python numbers, which become constant tensors) and
returns a Tensor recorded in the graph when any input requires grad.
"""

from __future__ import annotations

import builtins
import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from .ops import conv as _conv
from .ops import elementwise as _ew
from .ops import linalg as _la
from .ops import loss as _loss
from .ops import pool as _pool
from .ops import shape as _shape
from .ops.conv import conv_output_size
from .ops.im2col import col2im, im2col
from .tensor import Axis, Tensor, as_tensor

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "exp", "log", "relu", "sigmoid", "tanh",
    "sum", "mean", "max", "reshape", "transpose", "flatten", "getitem",
    "matmul", "linear", "conv2d", "max_pool2d", "avg_pool2d", "im2col", "col2im",
    "conv_output_size", "softmax", "log_softmax", "softmax_cross_entropy", "cast",
]  # fmt: skip

TensorLike = Tensor | np.ndarray | float | int


# ---------------------------------------------------------------------------- elementwise
def add(a: TensorLike, b: TensorLike) -> Tensor:
    """Elementwise ``a + b`` with NumPy broadcasting.

    Parameters
    ----------
    a, b : Tensor, array or Python number, shapes broadcastable to a common shape S

    Returns
    -------
    Tensor, shape S. Gradients are summed back to each operand's own shape.

    Examples
    --------
    >>> add(Tensor(np.ones((2, 3))), Tensor(np.arange(3.0))).shape
    (2, 3)
    """
    return _ew.Add.apply(a, b)


def sub(a: TensorLike, b: TensorLike) -> Tensor:
    """Elementwise ``a - b`` with broadcasting.

    Parameters
    ----------
    a, b : Tensor, array or Python number, shapes broadcastable to S

    Returns
    -------
    Tensor, shape S
    """
    return _ew.Sub.apply(a, b)


def mul(a: TensorLike, b: TensorLike) -> Tensor:
    """Elementwise ``a * b`` with broadcasting.

    Parameters
    ----------
    a, b : Tensor, array or Python number, shapes broadcastable to S

    Returns
    -------
    Tensor, shape S
    """
    return _ew.Mul.apply(a, b)


def div(a: TensorLike, b: TensorLike) -> Tensor:
    """Elementwise ``a / b`` with broadcasting.

    Parameters
    ----------
    a, b : Tensor, array or Python number, shapes broadcastable to S (b nonzero)

    Returns
    -------
    Tensor, shape S
    """
    return _ew.Div.apply(a, b)


def neg(x: TensorLike) -> Tensor:
    """Elementwise ``-x``; x : Tensor of any shape S -> Tensor, shape S."""
    return _ew.Neg.apply(x)


def pow(x: TensorLike, exponent: float) -> Tensor:  # noqa: A001
    """Elementwise ``x ** exponent``.

    Parameters
    ----------
    x : Tensor, shape S; or a positive Python number when ``exponent`` is a Tensor
    exponent : int or float, or a Tensor when ``x`` is a number (``2 ** t``, as
        ``exp(t * log(2))``); a Tensor raised to a Tensor is not supported.

    Returns
    -------
    Tensor, shape S
    """
    if isinstance(exponent, Tensor) and isinstance(x, int | float) and not isinstance(x, bool):
        if not x > 0:  # base ** t as exp(t * log(base))
            raise ValueError(f"pow: a number raised to a Tensor needs a positive base, got {x}")
        return exp(mul(exponent, math.log(x)))
    if isinstance(exponent, Tensor) or not isinstance(exponent, int | float):
        raise TypeError(f"pow: exponent must be a Python int or float, got {type(exponent)}")
    return _ew.Pow.apply(x, exponent=exponent)


def exp(x: TensorLike) -> Tensor:
    """Elementwise ``e ** x``; x : Tensor, shape S -> Tensor, shape S."""
    return _ew.Exp.apply(x)


def log(x: TensorLike) -> Tensor:
    """Elementwise natural logarithm; x : Tensor, shape S, x > 0 -> Tensor, shape S."""
    return _ew.Log.apply(x)


def relu(x: TensorLike) -> Tensor:
    """Elementwise ``max(x, 0)``; x : Tensor, shape S -> Tensor, shape S.

    The gradient is 1 where x > 0 and 0 elsewhere (0 at exactly x == 0).
    """
    return _ew.ReLU.apply(x)


def sigmoid(x: TensorLike) -> Tensor:
    """Elementwise ``1 / (1 + exp(-x))`` without overflow; shape S -> shape S."""
    return _ew.Sigmoid.apply(x)


def tanh(x: TensorLike) -> Tensor:
    """Elementwise hyperbolic tangent; x : Tensor, shape S -> Tensor, shape S."""
    return _ew.Tanh.apply(x)


# ---------------------------------------------------------------------------- reductions
def _flag(op: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{op}: {name} must be True or False, got {value!r}")
    return bool(value)


Fn = TypeVar("Fn", bound=Callable[..., Any])


def dim_alias(fn: Fn) -> Fn:
    """Accept PyTorch's ``dim=`` / ``keepdim=`` for ``axis=`` / ``keepdims=``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for alias, name in (("dim", "axis"), ("keepdim", "keepdims")):
            if alias in kwargs:
                if name in kwargs:
                    raise TypeError(f"{fn.__name__}: got both {name} and its alias {alias}")
                kwargs[name] = kwargs.pop(alias)
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dim_alias
def sum(x: TensorLike, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Sum over axes.

    Parameters
    ----------
    x : Tensor, shape S
    axis : None, int or tuple of ints
        Axes to reduce; None reduces all.
    keepdims : bool
        Keep reduced axes with length 1.

    Returns
    -------
    Tensor, S without (or with length-1) reduced axes; shape () for ``axis=None``.
    """
    x = as_tensor(x)
    axes = _shape.reduction_axes(axis, x.ndim, "sum")
    return _shape.Sum.apply(x, axis=axes, keepdims=_flag("sum", "keepdims", keepdims))


@dim_alias
def mean(x: TensorLike, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Mean over axes; same arguments and shapes as :func:`sum`."""
    x = as_tensor(x)
    axes = _shape.reduction_axes(axis, x.ndim, "mean")
    return _shape.Mean.apply(x, axis=axes, keepdims=_flag("mean", "keepdims", keepdims))


@dim_alias
def max(x: TensorLike, axis: int | None = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Maximum over one axis, or over all elements when ``axis`` is None.

    Parameters
    ----------
    x : Tensor, shape S (not empty)
    axis : int or None
    keepdims : bool

    Returns
    -------
    Tensor, S without (or with length-1) axis ``axis``.
    Ties: the whole gradient goes to the first maximal element.
    """
    if axis is not None:
        x, axis = _one_axis(x, axis, "max")
        axis = axis if x.ndim else None  # a 0-d input's axis 0: its one value
    x = as_tensor(x)
    if x.size == 0:
        raise ValueError(f"max: cannot take the max of an empty tensor of shape {x.shape}")
    return _shape.Max.apply(x, axis=axis, keepdims=_flag("max", "keepdims", keepdims))


# ---------------------------------------------------------------------------- shape ops
def cast(x: Tensor, dtype: Any) -> Tensor:
    """``x`` converted to the float ``dtype``; the gradient is converted back.

    Parameters
    ----------
    x : Tensor, any shape, floating point
    dtype : float dtype (np.float16, np.float32, np.float64)

    Returns
    -------
    Tensor, shape of x, dtype ``dtype``
    """
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise TypeError(f"cast: dtype must be a float dtype, got {dt}")
    x = as_tensor(x)
    if x.dtype.kind != "f":
        raise TypeError(f"cast: x must be floating point, got {x.dtype}")
    return _shape.Cast.apply(x, dtype=dt)


def reshape(x: TensorLike, shape: tuple[int, ...]) -> Tensor:
    """Same data in a new shape.

    Parameters
    ----------
    x : Tensor, shape S
    shape : tuple of ints
        Same number of elements as S; one entry may be -1.

    Returns
    -------
    Tensor, shape ``shape``
    """
    dims = (shape,) if _shape.is_int(shape) else shape
    if not isinstance(dims, tuple | list) or not all(_shape.is_int(d) for d in dims):
        raise TypeError(f"reshape: shape must be a tuple of ints, got {shape!r}")
    return _shape.Reshape.apply(x, shape=tuple(int(d) for d in dims))


def transpose(x: TensorLike, axes: tuple[int, ...] | None = None) -> Tensor:
    """Permute dimensions.

    Parameters
    ----------
    x : Tensor, shape (d0, ..., dk)
    axes : tuple of ints, optional
        A permutation of ``range(k + 1)``; None reverses the dimensions.

    Returns
    -------
    Tensor, shape ``(d[axes[0]], ..., d[axes[k]])``
    """
    if axes is not None and (
        not isinstance(axes, tuple | list) or not all(_shape.is_int(a) for a in axes)
    ):
        raise TypeError(f"transpose: axes must be None or a tuple of ints, got {axes!r}")
    return _shape.Transpose.apply(x, axes=None if axes is None else tuple(int(a) for a in axes))


def flatten(x: TensorLike, start_dim: int = 1) -> Tensor:
    """Merge the dimensions from ``start_dim`` on into one.

    Parameters
    ----------
    x : Tensor, shape (N, C, H, W) for example
    start_dim : int

    Returns
    -------
    Tensor, shape (N, C*H*W) for the default ``start_dim=1``; also for an empty batch N = 0.
    """
    x = as_tensor(x)
    if not _shape.is_int(start_dim):
        raise TypeError(f"flatten: start_dim must be an int, got {start_dim!r}")
    if not 0 <= start_dim < builtins.max(x.ndim, 1):
        raise ValueError(f"flatten: start_dim {start_dim} out of range for shape {x.shape}")
    # (d0, ..., dk) -> (d0, ..., d[start_dim-1], product of the rest); the size is spelled
    # out, not -1, which NumPy cannot resolve when the array is empty
    return reshape(x, x.shape[:start_dim] + (math.prod(x.shape[start_dim:]),))


def getitem(x: TensorLike, index: Any) -> Tensor:
    """``x[index]``: basic slices, integers and integer arrays (also Tensors of integers).

    Parameters
    ----------
    x : Tensor, shape S
    index : anything NumPy accepts for basic or integer-array indexing

    Returns
    -------
    Tensor, shape of ``x.data[index]``. Repeated indices accumulate their gradients.
    """
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return _shape.GetItem.apply(x, index=index)


# ---------------------------------------------------------------------------- linear algebra
def matmul(a: TensorLike, b: TensorLike) -> Tensor:
    """Matrix product, 2-D or batched.

    Parameters
    ----------
    a : Tensor, shape (..., N, K)
    b : Tensor, shape (..., K, M); the leading batch dims broadcast against a's

    Returns
    -------
    Tensor, shape (..., N, M)
    """
    return _la.MatMul.apply(a, b)


def linear(x: TensorLike, w: TensorLike, b: TensorLike | None = None) -> Tensor:
    """Affine map ``x @ w + b``.

    Parameters
    ----------
    x : Tensor, shape (N, IN)
    w : Tensor, shape (IN, OUT)
    b : Tensor, shape (OUT,), optional

    Returns
    -------
    Tensor, shape (N, OUT)
    """
    return _la.Linear.apply(x, w) if b is None else _la.Linear.apply(x, w, b)


# ---------------------------------------------------------------------------- convolution
def conv2d(
    x: TensorLike, w: TensorLike, b: TensorLike | None = None, stride: Any = 1, padding: Any = 0
) -> Tensor:
    """2-D convolution (cross-correlation, as in every deep learning library).

    Parameters
    ----------
    x : Tensor, shape (N, C, H, W)
    w : Tensor, shape (OC, C, KH, KW)
    b : Tensor, shape (OC,), optional
    stride, padding : int or (h, w) pair
        Zero padding is added on both sides.

    Returns
    -------
    Tensor, shape (N, OC, OH, OW) with ``OH = (H + 2*PH - KH) // SH + 1``.

    Examples
    --------
    >>> x = Tensor(np.zeros((2, 1, 28, 28), np.float32))
    >>> w = Tensor(np.zeros((30, 1, 5, 5), np.float32), requires_grad=True)
    >>> conv2d(x, w).shape
    (2, 30, 24, 24)
    """
    s, p = _conv.pair(stride, "conv2d", "stride"), _conv.pair(padding, "conv2d", "padding")
    args = (x, w) if b is None else (x, w, b)
    return _conv.Conv2d.apply(*args, stride=s, padding=p)


def _pool_args(op: str, kernel_size: Any, stride: Any, padding: Any) -> dict[str, Any]:
    kernel = _conv.pair(kernel_size, op, "kernel_size")
    s = kernel if stride is None else _conv.pair(stride, op, "stride")
    return {"kernel": kernel, "stride": s, "padding": _conv.pair(padding, op, "padding")}


def max_pool2d(x: TensorLike, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Tensor:
    """Max pooling.

    Parameters
    ----------
    x : Tensor, shape (N, C, H, W)
    kernel_size : int or (KH, KW)
    stride : int or (SH, SW), optional
        Defaults to the kernel size.
    padding : int or (PH, PW)
        Acts as -inf; at most half the kernel per side.

    Returns
    -------
    Tensor, shape (N, C, OH, OW) with ``OH = (H + 2*PH - KH) // SH + 1``.
    Overlapping windows (stride < kernel) accumulate gradients. Ties: a window's gradient goes
    to its first maximal element in row-major order.
    """
    return _pool.MaxPool2d.apply(x, **_pool_args("max_pool2d", kernel_size, stride, padding))


def avg_pool2d(x: TensorLike, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Tensor:
    """Average pooling; same arguments and shapes as :func:`max_pool2d`.

    Zero padding counts in the mean (the divisor is always KH*KW).
    """
    return _pool.AvgPool2d.apply(x, **_pool_args("avg_pool2d", kernel_size, stride, padding))


# ---------------------------------------------------------------------------- softmax & loss
def _one_axis(x: TensorLike, axis: Any, op: str) -> tuple[Tensor, int]:
    x = as_tensor(x)
    if not isinstance(axis, int | np.integer):
        raise TypeError(f"{op}: axis must be one int, got {axis!r}")
    (axis,) = _shape.normalize_axes(axis, x.ndim, op)
    return x, axis


@dim_alias
def softmax(x: TensorLike, axis: int = -1) -> Tensor:
    """Softmax along ``axis``, computed from max-shifted values (never overflows).

    Parameters
    ----------
    x : Tensor, shape S
    axis : int

    Returns
    -------
    Tensor, shape S; entries along ``axis`` are positive and sum to 1.
    """
    x, axis = _one_axis(x, axis, "softmax")
    return _loss.Softmax.apply(x, axis=axis)


@dim_alias
def log_softmax(x: TensorLike, axis: int = -1) -> Tensor:
    """``log(softmax(x))`` computed directly, exact for logits of any magnitude.

    Parameters
    ----------
    x : Tensor, shape S
    axis : int

    Returns
    -------
    Tensor, shape S
    """
    x, axis = _one_axis(x, axis, "log_softmax")
    return _loss.LogSoftmax.apply(x, axis=axis)


def softmax_cross_entropy(logits: TensorLike, labels: TensorLike) -> Tensor:
    """Mean cross-entropy of ``softmax(logits)`` against the labels; fused and stable.

    Parameters
    ----------
    logits : Tensor, shape (N, K)
    labels : ndarray or Tensor, integer shape (N,) or one-hot float shape (N, K)

    Returns
    -------
    Tensor, shape () — the mean loss over the batch.

    Raises
    ------
    TypeError
        For integer logits (cast them to float first, as PyTorch requires too), and for
        labels that are not numbers (strings, objects).
    ValueError
        For an empty batch (N = 0): the mean over no samples is undefined.
    """
    if not isinstance(labels, Tensor):
        try:
            arr = np.asarray(labels)
        except ValueError:  # a ragged list
            arr = np.asarray(None)
        if arr.dtype.kind not in "biuf":
            raise TypeError(
                "softmax_cross_entropy: labels must be integer class indices or one-hot rows, "
                f"got {type(labels).__name__} of dtype {arr.dtype} (shape {arr.shape})"
            )
        labels = Tensor(arr)
    return _loss.SoftmaxCrossEntropy.apply(logits, labels)
