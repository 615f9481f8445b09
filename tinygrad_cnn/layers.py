"""More layers, re-exported by ``nn`` (``nn.ConvTranspose2d`` etc.): PyTorch's names and
arguments, each a thin module around a ``functional`` wrapper.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import functional as F
from .nn import InitSpec, Module, Parameter, _rng, init_std
from .ops.conv import pair
from .tensor import Tensor

__all__ = [
    "ConvTranspose2d", "Embedding", "LeakyReLU", "GELU", "Tanh", "MSELoss", "BCEWithLogitsLoss",
    "CrossEntropyLoss", "Identity", "BatchNorm1d", "BatchNorm2d",
]  # fmt: skip


class ConvTranspose2d(Module):
    """Transposed convolution: (N, C, H, W) -> (N, OC, OH, OW) with
    ``OH = (H - 1)*SH - 2*PH + KH + OPH``; weight (C, OC, KH, KW) as in PyTorch.

    ``init`` follows ``nn.Conv2d`` with fan-in ``OC*KH*KW`` (the inputs each output sums, on
    average, times the stride area), as PyTorch counts it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        output_padding: int | tuple[int, int] = 0,
        bias: bool = True,
        init: InitSpec = "he",
        rng: int | np.random.Generator | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        KH, KW = pair(kernel_size, "ConvTranspose2d", "kernel_size")
        std = init_std(init, out_channels * KH * KW)
        w = std * _rng(rng).standard_normal((in_channels, out_channels, KH, KW))
        self.weight = Parameter(w.astype(dtype))
        self.bias = Parameter(np.zeros(out_channels, dtype)) if bias else None
        self.stride, self.padding, self.output_padding = stride, padding, output_padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                  self.output_padding)  # fmt: skip

    def extra_repr(self) -> str:
        c, oc, kh, kw = self.weight.shape
        return (f"{c}, {oc}, kernel_size=({kh}, {kw}), stride={self.stride}, "
                f"padding={self.padding}, output_padding={self.output_padding}")  # fmt: skip


class Embedding(Module):
    """Lookup table: integer indices of any shape S -> (*S, embedding_dim).

    The weight (num_embeddings, embedding_dim) starts standard normal, as in PyTorch.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        rng: int | np.random.Generator | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        w = _rng(rng).standard_normal((num_embeddings, embedding_dim))
        self.weight = Parameter(w.astype(dtype))

    def forward(self, idx: Any) -> Tensor:
        return F.embedding(idx, self.weight)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, {self.weight.shape[1]}"


class LeakyReLU(Module):
    """``x`` where x > 0, else ``negative_slope * x``; any shape."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: Tensor) -> Tensor:
        return F.leaky_relu(x, self.negative_slope)


class GELU(Module):
    """``x * Phi(x)``, or its tanh form with ``approximate="tanh"``; any shape."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x, self.approximate)


class Tanh(Module):
    """Hyperbolic tangent; any shape."""

    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)


class Identity(Module):
    """Returns its input unchanged (a placeholder, e.g. for a skipped layer)."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class _Loss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = reduction


class MSELoss(_Loss):
    """``loss(input, target)``: mean (or sum, or none) squared error; see ``F.mse_loss``."""

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002
        return F.mse_loss(input, target, self.reduction)


class BCEWithLogitsLoss(_Loss):
    """``loss(logits, target)``: binary cross-entropy from logits, stable for any logit."""

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002
        return F.binary_cross_entropy_with_logits(input, target, self.reduction)


class CrossEntropyLoss(_Loss):
    """``loss(logits (N, C), target)``: softmax cross-entropy; see ``F.cross_entropy``."""

    def forward(self, input: Tensor, target: Any) -> Tensor:  # noqa: A002
        return F.cross_entropy(input, target, self.reduction)


class _BatchNorm(Module):
    """Shared by BatchNorm1d/2d: gamma (``weight``) and beta (``bias``) are Parameters, the
    running statistics buffers (saved in ``state_dict``, never trained)."""

    ndims: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = True,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int | np.integer) or (
                num_features < 1):  # fmt: skip
            raise ValueError(f"{type(self).__name__}: num_features must be a positive int, "
                             f"got {num_features!r}")  # fmt: skip
        who = type(self).__name__
        if isinstance(momentum, bool) or not isinstance(momentum, int | float | np.number) or (
                not 0 <= momentum <= 1):  # fmt: skip
            raise ValueError(f"{who}: momentum must be a number in [0, 1] (the weight of the "
                             f"new batch statistics), got {momentum!r}")  # fmt: skip
        if isinstance(eps, bool) or not isinstance(eps, int | float | np.number) or not eps > 0:
            raise ValueError(f"{who}: eps must be a positive number, got {eps!r}")
        C = int(num_features)
        self.weight = Parameter(np.ones(C, dtype)) if affine else None
        self.bias = Parameter(np.zeros(C, dtype)) if affine else None
        self.register_buffer("running_mean", np.zeros(C, dtype))
        self.register_buffer("running_var", np.ones(C, dtype))
        self.num_features, self.eps, self.momentum = C, eps, momentum

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in self.ndims:
            want = " or ".join(f"{n}-d" for n in self.ndims)
            raise ValueError(f"{type(self).__name__}: input must be {want} (N, C, ...), got "
                             f"shape {x.shape}")  # fmt: skip
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps)  # fmt: skip

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) input per feature C; see ``F.batch_norm``.

    ``train()``: batch statistics, and the running ones updated with ``momentum`` (PyTorch's
    convention); ``eval()``: the running statistics. The book's ``BatchNormalization``
    defaults (its momentum 0.9 keeps 0.9 of the old value) are ``BatchNorm1d(C, eps=1e-7,
    momentum=0.1)``.
    """

    ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) input per channel C; see :class:`BatchNorm1d`."""

    ndims = (4,)
