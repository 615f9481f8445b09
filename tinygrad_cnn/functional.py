"""Public, documented wrappers around the ops. ``Tensor`` operators call these.

Every function takes Tensors (or arrays / Python numbers, which become constant tensors) and
returns a Tensor recorded in the graph when any input requires grad.
"""

from __future__ import annotations

import builtins
from typing import Any

import numpy as np

from .ops import conv as _conv
from .ops import elementwise as _ew
from .ops import linalg as _la
from .ops import loss as _loss
from .ops import shape as _shape
from .ops.conv import col2im, conv_output_size, im2col
from .tensor import Axis, Tensor, as_tensor

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "exp", "log", "relu", "sigmoid", "tanh",
    "sum", "mean", "max", "reshape", "transpose", "flatten", "getitem",
    "matmul", "linear", "conv2d", "max_pool2d", "avg_pool2d", "im2col", "col2im",
    "conv_output_size", "softmax", "log_softmax", "softmax_cross_entropy",
]  # fmt: skip

TensorLike = Tensor | np.ndarray | float | int


# ---------------------------------------------------------------------------- elementwise
def add(a: TensorLike, b: TensorLike) -> Tensor:
    """``a + b`` with broadcasting. Shapes: any two broadcastable shapes."""
    return _ew.Add.apply(a, b)


def sub(a: TensorLike, b: TensorLike) -> Tensor:
    """``a - b`` with broadcasting."""
    return _ew.Sub.apply(a, b)


def mul(a: TensorLike, b: TensorLike) -> Tensor:
    """``a * b`` with broadcasting."""
    return _ew.Mul.apply(a, b)


def div(a: TensorLike, b: TensorLike) -> Tensor:
    """``a / b`` with broadcasting."""
    return _ew.Div.apply(a, b)


def neg(x: TensorLike) -> Tensor:
    """``-x``."""
    return _ew.Neg.apply(x)


def pow(x: TensorLike, exponent: float) -> Tensor:  # noqa: A001
    """``x ** exponent`` for a Python-number exponent (a tensor exponent is not supported)."""
    if isinstance(exponent, Tensor) or not isinstance(exponent, int | float):
        raise TypeError(f"pow: exponent must be a Python int or float, got {type(exponent)}")
    return _ew.Pow.apply(x, exponent=exponent)


def exp(x: TensorLike) -> Tensor:
    """Elementwise ``e ** x``."""
    return _ew.Exp.apply(x)


def log(x: TensorLike) -> Tensor:
    """Elementwise natural logarithm (x > 0)."""
    return _ew.Log.apply(x)


def relu(x: TensorLike) -> Tensor:
    """``max(x, 0)`` elementwise; gradient 1 where x > 0, else 0."""
    return _ew.ReLU.apply(x)


def sigmoid(x: TensorLike) -> Tensor:
    """``1 / (1 + exp(-x))``, computed without overflow."""
    return _ew.Sigmoid.apply(x)


def tanh(x: TensorLike) -> Tensor:
    """Elementwise hyperbolic tangent."""
    return _ew.Tanh.apply(x)


# ---------------------------------------------------------------------------- reductions
def sum(x: TensorLike, axis: Axis = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Sum over ``axis`` (None: all, int, or tuple of ints)."""
    x = as_tensor(x)
    return _shape.Sum.apply(x, axis=_shape._normalize_axes(axis, x.ndim, "sum"), keepdims=keepdims)


def mean(x: TensorLike, axis: Axis = None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis`` (None: all, int, or tuple of ints)."""
    x = as_tensor(x)
    axes = _shape._normalize_axes(axis, x.ndim, "mean")
    return _shape.Mean.apply(x, axis=axes, keepdims=keepdims)


def max(x: TensorLike, axis: int | None = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Maximum over one axis (or all when None). Ties: the gradient goes to the first maximum."""
    x = as_tensor(x)
    if axis is not None:
        (axis,) = _shape._normalize_axes(axis, x.ndim, "max")
    if x.size == 0:
        raise ValueError(f"max: cannot take the max of an empty tensor of shape {x.shape}")
    return _shape.Max.apply(x, axis=axis, keepdims=keepdims)


# ---------------------------------------------------------------------------- shape ops
def reshape(x: TensorLike, shape: tuple[int, ...]) -> Tensor:
    """View ``x`` with a new shape of the same size (one dim may be -1)."""
    return _shape.Reshape.apply(x, shape=tuple(shape))


def transpose(x: TensorLike, axes: tuple[int, ...] | None = None) -> Tensor:
    """Permute dimensions (reverse them when ``axes`` is None)."""
    return _shape.Transpose.apply(x, axes=None if axes is None else tuple(axes))


def flatten(x: TensorLike, start_dim: int = 1) -> Tensor:
    """Merge dims ``start_dim..`` into one: (N, C, H, W) -> (N, C*H*W) by default."""
    x = as_tensor(x)
    if not 0 <= start_dim < builtins.max(x.ndim, 1):
        raise ValueError(f"flatten: start_dim {start_dim} out of range for shape {x.shape}")
    return reshape(x, x.shape[:start_dim] + (-1,))


def getitem(x: TensorLike, index: Any) -> Tensor:
    """``x[index]`` for basic slices and integer arrays; repeated indices accumulate grads."""
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return _shape.GetItem.apply(x, index=index)


# ---------------------------------------------------------------------------- linear algebra
def matmul(a: TensorLike, b: TensorLike) -> Tensor:
    """Matrix product. a (..., N, K) @ b (..., K, M) -> (..., N, M); batch dims broadcast."""
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
    """Max pooling over (N, C, H, W) -> (N, C, OH, OW). ``stride`` defaults to the kernel.

    Padding acts as -inf and may be at most half the kernel. Overlapping windows (stride <
    kernel) accumulate gradients. Ties: the gradient goes to the first maximum of the window
    in row-major order.
    """
    return _conv.MaxPool2d.apply(x, **_pool_args("max_pool2d", kernel_size, stride, padding))


def avg_pool2d(x: TensorLike, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Tensor:
    """Average pooling over (N, C, H, W) -> (N, C, OH, OW); zero padding counts in the mean."""
    return _conv.AvgPool2d.apply(x, **_pool_args("avg_pool2d", kernel_size, stride, padding))


# ---------------------------------------------------------------------------- softmax & loss
def softmax(x: TensorLike, axis: int = -1) -> Tensor:
    """Softmax along ``axis``, shifted by the max for stability."""
    return _loss.Softmax.apply(x, axis=axis)


def log_softmax(x: TensorLike, axis: int = -1) -> Tensor:
    """``log(softmax(x))`` computed directly (exact for large logits)."""
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
    """
    if isinstance(labels, np.ndarray | list):
        labels = Tensor(np.asarray(labels))
    return _loss.SoftmaxCrossEntropy.apply(logits, labels)
