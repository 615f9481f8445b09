"""More documented wrappers, part of ``functional`` (which re-exports every name here):
activations, losses and layers, with PyTorch's names and argument conventions.

Losses take ``reduction="mean" | "sum" | "none"``; ``"none"`` keeps one loss per element
(per sample for the classification losses).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .functional_core import (  # noqa: A004
    Tensor,
    TensorLike,
    add,
    as_tensor,
    getitem,
    log_softmax,
    mean,
    mul,
    neg,
    reshape,
    softmax_cross_entropy,
    sub,
    sum,
)
from .functional_tensor import abs  # noqa: A004
from .ops import activations as _act
from .ops import adjoint as _adj
from .ops import conv as _conv
from .ops import loss as _loss
from .ops import norm as _norm

__all__ = [
    "leaky_relu", "elu", "gelu", "softplus", "mse_loss", "l1_loss",
    "binary_cross_entropy_with_logits", "nll_loss", "cross_entropy", "conv_transpose2d",
    "dropout", "embedding", "batch_norm",
]  # fmt: skip


def _number(op: str, name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        raise TypeError(f"{op}: {name} must be a number, got {v!r}")
    return float(v)


# ------------------------------------------------------------------------------ activations
def leaky_relu(x: TensorLike, negative_slope: float = 0.01) -> Tensor:
    """``x`` where x > 0, else ``negative_slope * x``; shape S -> S (kink at 0)."""
    return _act.LeakyReLU.apply(x, negative_slope=_number("leaky_relu", "negative_slope",
                                                          negative_slope))  # fmt: skip


def elu(x: TensorLike, alpha: float = 1.0) -> Tensor:
    """``x`` where x > 0, else ``alpha * (exp(x) - 1)``; shape S -> S (kink at 0)."""
    return _act.ELU.apply(x, alpha=_number("elu", "alpha", alpha))


def gelu(x: TensorLike, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit ``x * Phi(x)``; shape S -> S.

    Parameters
    ----------
    x : Tensor, shape S
    approximate : "none" or "tanh"
        "tanh" uses ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, as PyTorch's.
    """
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _act.GELU.apply(x, approximate=approximate)


def softplus(x: TensorLike, beta: float = 1.0) -> Tensor:
    """``log(1 + exp(beta x)) / beta``, computed without overflow; shape S -> S.

    Unlike PyTorch there is no ``threshold``: the stable form is exact for every x.
    """
    b = _number("softplus", "beta", beta)
    if not b > 0:
        raise ValueError(f"softplus: beta must be positive, got {beta}")
    return _act.Softplus.apply(x, beta=b)


# ------------------------------------------------------------------------------ losses
def _reduce(loss: Tensor, reduction: str, op: str) -> Tensor:
    if reduction == "mean":
        return mean(loss)
    if reduction == "sum":
        return sum(loss)
    if reduction == "none":
        return loss
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _same_shape(op: str, x: Tensor, t: Tensor) -> None:
    if x.shape != t.shape:
        raise ValueError(f"{op}: input {x.shape} and target {t.shape} must have the same shape "
                         "(broadcasting them silently is a classic bug)")  # fmt: skip


def mse_loss(input: TensorLike, target: TensorLike, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Squared error ``(input - target)^2``, reduced.

    Parameters
    ----------
    input, target : Tensor, the same shape S
    reduction : "mean", "sum" or "none"

    Returns
    -------
    Tensor, shape () (or S for "none")
    """
    x, t = as_tensor(input), as_tensor(target, like=as_tensor(input))
    _same_shape("mse_loss", x, t)
    d = sub(x, t)
    return _reduce(mul(d, d), reduction, "mse_loss")


def l1_loss(input: TensorLike, target: TensorLike, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Absolute error ``|input - target|``, reduced; same shapes as :func:`mse_loss`."""
    x, t = as_tensor(input), as_tensor(target, like=as_tensor(input))
    _same_shape("l1_loss", x, t)
    return _reduce(abs(sub(x, t)), reduction, "l1_loss")


def binary_cross_entropy_with_logits(
    input: TensorLike,  # noqa: A002
    target: TensorLike,
    reduction: str = "mean",
) -> Tensor:
    """``-[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))]`` from logits x, exact for any x.

    Parameters
    ----------
    input : Tensor, shape S (logits)
    target : Tensor, shape S, values in [0, 1]
    reduction : "mean", "sum" or "none"

    Returns
    -------
    Tensor, shape () (or S for "none")
    """
    x = as_tensor(input)
    t = as_tensor(target, like=x)
    _same_shape("binary_cross_entropy_with_logits", x, t)
    if t.dtype.kind != "f":
        t = Tensor(t.numpy().astype(x.dtype))
    return _reduce(_loss.BCEWithLogits.apply(x, t), reduction, "binary_cross_entropy_with_logits")


def _labels(op: str, x: Tensor, target: Any) -> np.ndarray:
    t = np.asarray(target._data if isinstance(target, Tensor) else target)
    if x.ndim != 2:
        raise ValueError(f"{op}: input must be (N, C), got shape {x.shape}")
    if t.shape != x.shape[:1] or t.dtype.kind not in "iu":
        raise ValueError(f"{op}: target must be (N,) = {x.shape[:1]} integer class indices, "
                         f"got shape {t.shape} dtype {t.dtype}")  # fmt: skip
    if t.size and (t.min() < 0 or t.max() >= x.shape[1]):
        raise ValueError(f"{op}: target classes must lie in [0, {x.shape[1]}), got values in "
                         f"[{t.min()}, {t.max()}]")  # fmt: skip
    return t


def nll_loss(input: TensorLike, target: Any, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Negative log-likelihood ``-input[n, target[n]]`` of log-probabilities, reduced.

    Parameters
    ----------
    input : Tensor, shape (N, C), log-probabilities (e.g. from ``log_softmax``)
    target : integer array or Tensor, shape (N,), values in [0, C)
    reduction : "mean", "sum" or "none"

    Returns
    -------
    Tensor, shape () (or (N,) for "none")
    """
    x = as_tensor(input)
    t = _labels("nll_loss", x, target)
    return _reduce(neg(getitem(x, (np.arange(len(t)), t))), reduction, "nll_loss")


def cross_entropy(input: TensorLike, target: Any, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Softmax cross-entropy of logits against class indices or probability rows.

    PyTorch's name for :func:`softmax_cross_entropy` (which it runs for ``"mean"``); ``"sum"``
    and ``"none"`` are made of ``log_softmax``.

    Parameters
    ----------
    input : Tensor, shape (N, C), logits
    target : integers (N,) in [0, C), or probabilities (N, C)
    reduction : "mean", "sum" or "none"

    Returns
    -------
    Tensor, shape () (or (N,) for "none")
    """
    if reduction == "mean":
        return softmax_cross_entropy(input, target)
    x = as_tensor(input)
    t = np.asarray(target._data if isinstance(target, Tensor) else target)
    if t.ndim == 2 and t.dtype.kind == "f":
        if t.shape != x.shape:
            raise ValueError(f"cross_entropy: probability targets {t.shape} must match "
                             f"input {x.shape}")  # fmt: skip
        per_sample = neg(sum(mul(log_softmax(x, 1), t.astype(x.dtype)), 1))
    else:
        t = _labels("cross_entropy", x, t)
        per_sample = neg(getitem(log_softmax(x, 1), (np.arange(len(t)), t)))
    return _reduce(per_sample, reduction, "cross_entropy")


# ------------------------------------------------------------------------------ layers
def conv_transpose2d(
    x: TensorLike,
    w: TensorLike,
    b: TensorLike | None = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
) -> Tensor:
    """Transposed 2-D convolution: the adjoint (input gradient) of :func:`conv2d`.

    It runs conv2d's own input-gradient op, ``Conv2dGradInput``.

    Parameters
    ----------
    x : Tensor, shape (N, C, H, W)
    w : Tensor, shape (C, OC, KH, KW), PyTorch's layout (a conv2d weight from OC to C)
    b : Tensor, shape (OC,), optional
    stride, padding, output_padding : int or (h, w) pair
        ``output_padding < stride`` adds rows/columns at the bottom/right, choosing among the
        output sizes that a strided conv2d maps to the same input size.

    Returns
    -------
    Tensor, shape (N, OC, OH, OW) with ``OH = (H - 1)*SH - 2*PH + KH + OPH``.
    """
    op = "conv_transpose2d"
    x, w = as_tensor(x), as_tensor(w)
    s, p = _conv.pair(stride, op, "stride"), _conv.pair(padding, op, "padding")
    opad = _conv.pair(output_padding, op, "output_padding")
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"{op}: x must be (N, C, H, W) and w (C, OC, KH, KW), got x {x.shape} "
                         f"and w {w.shape}")  # fmt: skip
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"{op}: channel mismatch: x {x.shape} has {x.shape[1]} channels, w "
                         f"{w.shape} expects {w.shape[0]}")  # fmt: skip
    if min(s) <= 0 or min(p) < 0:
        raise ValueError(f"{op}: stride must be positive and padding non-negative, got "
                         f"stride {s}, padding {p}")  # fmt: skip
    if not all(0 <= o < st for o, st in zip(opad, s, strict=True)):
        raise ValueError(f"{op}: output_padding {opad} must be non-negative and smaller than "
                         f"the stride {s}")  # fmt: skip
    (N, _, H, W), (OC, KH, KW) = x.shape, w.shape[1:]
    OH, OW = (H - 1) * s[0] - 2 * p[0] + KH + opad[0], (W - 1) * s[1] - 2 * p[1] + KW + opad[1]
    if OH <= 0 or OW <= 0:
        raise ValueError(f"{op}: padding {p} leaves no output ({OH}x{OW}) for input {x.shape} "
                         f"and kernel {KH}x{KW}")  # fmt: skip
    y = _adj.Conv2dGradInput.apply(x, w, x_shape=(N, OC, OH, OW), stride=s, padding=p)
    if b is None:
        return y
    b = as_tensor(b, like=x)
    if b.shape != (OC,):
        raise ValueError(f"{op}: b must have shape ({OC},), got {b.shape}")
    return add(y, reshape(b, (1, OC, 1, 1)))


def dropout(
    x: TensorLike,
    p: float = 0.5,
    training: bool = True,
    rng: int | np.random.Generator | None = None,
) -> Tensor:
    """Inverted dropout: zero each element with probability ``p`` and scale the rest by
    ``1 / (1 - p)``, so the expectation is unchanged; the identity when not ``training``.

    Parameters
    ----------
    x : Tensor, shape S
    p : float in [0, 1]
    training : bool
    rng : int seed, ``np.random.Generator`` or None (fresh entropy)
        The same seed gives the same mask.

    Returns
    -------
    Tensor, shape S (``x`` itself when not training or p == 0)
    """
    x = as_tensor(x)
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be a number in [0, 1], got {p!r}")
    if not isinstance(training, bool | np.bool_):
        raise TypeError(f"dropout: training must be True or False, got {training!r}")
    if not training or p == 0:
        return x
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    keep = gen.random(x.shape) >= p
    scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
    return mul(x, Tensor((keep * scale).astype(x.dtype)))


def embedding(input: Any, weight: TensorLike) -> Tensor:  # noqa: A002
    """Rows of ``weight`` picked by integer indices (a lookup table); an index op, so the
    gradient adds into the rows used (repeated indices add up).

    Parameters
    ----------
    input : integer array or Tensor, any shape S, values in [0, num_embeddings)
    weight : Tensor, shape (num_embeddings, D)

    Returns
    -------
    Tensor, shape (*S, D)
    """
    w = as_tensor(weight)
    idx = np.asarray(input._data if isinstance(input, Tensor) else input)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got dtype {idx.dtype}")
    if w.ndim != 2:
        raise ValueError(f"embedding: weight must be (num_embeddings, D), got {w.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= w.shape[0]):
        raise ValueError(f"embedding: indices must lie in [0, {w.shape[0]}), got values in "
                         f"[{idx.min()}, {idx.max()}]")  # fmt: skip
    return getitem(w, idx)


# ------------------------------------------------------------------------------ normalisation
#: The book's ``BatchNormalization(momentum=0.9)`` keeps ``0.9 * old + 0.1 * batch``: in
#: PyTorch's convention (the one used here) that is ``momentum=0.1``.
BOOK_BN_MOMENTUM = 0.1
#: The book's ``eps`` (PyTorch's default is 1e-5).
BOOK_BN_EPS = 1e-7


def _running(name: str, a: Any, C: int) -> np.ndarray | None:
    if a is None:
        return None
    if not isinstance(a, np.ndarray) or a.dtype.kind != "f":
        raise TypeError(f"batch_norm: {name} must be a float ndarray (a module buffer) or None, "
                        f"got {type(a).__name__}")  # fmt: skip
    if a.shape != (C,):
        raise ValueError(f"batch_norm: {name} must have shape ({C},), got {a.shape}")
    return a


def batch_norm(
    input: TensorLike,  # noqa: A002
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    weight: TensorLike | None = None,
    bias: TensorLike | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch normalisation per channel: ``weight * (x - mean) / sqrt(var + eps) + bias``.

    Training uses the batch's mean and (biased) variance over every axis but 1, and updates
    the running statistics in place, PyTorch's way: ``new = (1 - momentum) * old + momentum *
    batch``, with the unbiased batch variance for ``running_var``. Evaluation uses the running
    statistics, as constants (an affine map of x).

    The book's ``BatchNormalization(gamma, beta, momentum=0.9)`` uses the opposite momentum
    convention and ``eps=1e-7``: pass ``momentum=0.1`` and ``eps=1e-7`` (``BOOK_BN_MOMENTUM``
    and ``BOOK_BN_EPS`` of ``tinygrad_cnn.functional_nn``). Two more differences: for 4-d
    input the book normalises each of the C*H*W features on its own (we normalise per
    channel, as PyTorch's BatchNorm2d), and its running variance is the biased one.

    Parameters
    ----------
    input : Tensor, shape (N, C) or (N, C, H, W) (any (N, C, ...))
    running_mean, running_var : float ndarray, shape (C,), or None
        Updated in place when training; required when not training.
    weight, bias : Tensor, shape (C,), optional
        gamma and beta; None means ones and zeros.
    training : bool
    momentum : float in [0, 1]
    eps : float > 0

    Returns
    -------
    Tensor, the shape of ``input``

    Examples
    --------
    >>> rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    >>> y = batch_norm(x, rm, rv, gamma, beta, training=True)  # doctest: +SKIP
    """
    x = as_tensor(input)
    if x.ndim < 2:
        raise ValueError(f"batch_norm: input must be (N, C) or (N, C, H, W), got shape {x.shape}")
    if not isinstance(training, bool | np.bool_):
        raise TypeError(f"batch_norm: training must be True or False, got {training!r}")
    m, e = _number("batch_norm", "momentum", momentum), _number("batch_norm", "eps", eps)
    if not 0 <= m <= 1 or not e > 0:
        raise ValueError(f"batch_norm: momentum must be in [0, 1] and eps > 0, got momentum "
                         f"{momentum}, eps {eps}")  # fmt: skip
    C = x.shape[1]
    rm, rv = _running("running_mean", running_mean, C), _running("running_var", running_var, C)
    if (rm is None) != (rv is None):
        raise ValueError("batch_norm: give both running_mean and running_var, or neither")
    if not training and rm is None:
        raise ValueError("batch_norm: evaluation (training=False) needs running_mean and "
                         "running_var")  # fmt: skip
    gamma = Tensor(np.ones(C, x.dtype)) if weight is None else as_tensor(weight, like=x)
    beta = Tensor(np.zeros(C, x.dtype)) if bias is None else as_tensor(bias, like=x)
    if not training:  # copies: the op must not see later updates of the buffers
        return _norm.BatchNorm.apply(x, gamma, beta, eps=e, mean=rm.copy(), var=rv.copy())
    y = _norm.BatchNorm.apply(x, gamma, beta, eps=e)  # validates before any buffer changes
    if rm is not None:
        a = x.numpy()
        axes = _norm.channel_axes(a.ndim)
        rm *= 1 - m
        rm += m * a.mean(axis=axes)
        rv *= 1 - m
        rv += m * a.var(axis=axes, ddof=1)
    return y
