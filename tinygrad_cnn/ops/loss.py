"""Softmax, log-softmax and the fused, numerically stable softmax cross-entropy."""

from __future__ import annotations

import numpy as np

from ..autograd import Function
from .elementwise import Sigmoid


def _log_softmax(z: np.ndarray, axis: int) -> np.ndarray:
    """``z - logsumexp(z)`` computed from the max-shifted logits: exact for huge logits."""
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


class Softmax(Function):
    attr_names = ("axis",)
    axis: int

    def forward(self, x):
        e = np.exp(x - x.max(axis=self.axis, keepdims=True))
        y = e / e.sum(axis=self.axis, keepdims=True)
        self.save(y=y)
        return y

    def backward(self, gy):
        y = self.saved["y"]
        return y * (gy - (gy * y).sum(axis=self.axis, keepdims=True))

    def backward_graph(self, gy):
        (x,) = self.parents
        y = Softmax.apply(x, axis=self.axis)
        return y * (gy - (gy * y).sum(axis=self.axis, keepdims=True))


class LogSoftmax(Function):
    attr_names = ("axis",)
    axis: int

    def forward(self, x):
        y = _log_softmax(x, self.axis)
        self.save(y=y)
        return y

    def backward(self, gy):
        y = self.saved["y"]
        return gy - np.exp(y) * gy.sum(axis=self.axis, keepdims=True)

    def backward_graph(self, gy):
        (x,) = self.parents
        p = Softmax.apply(x, axis=self.axis)
        return gy - p * gy.sum(axis=self.axis, keepdims=True)


class SoftmaxCrossEntropy(Function):
    """Mean over the batch of ``-log softmax(z)[label]``; logits z (N, K).

    Labels are integer class indices (N,) or (soft) one-hot rows (N, K). The loss is computed
    from ``log_softmax`` directly, never as ``log(p + eps)``, so it stays exact for logits of
    any magnitude, and its gradient ``(softmax(z) - onehot) / N`` never overflows.

    Logits must be floating point (integer logits raise, as in PyTorch: the loss and its
    gradient live in the logits' dtype). An empty batch (N = 0) raises: the mean of no losses
    is undefined (PyTorch returns nan), and a nan loss would poison a training run silently.
    """

    def forward(self, z, t):
        if z.ndim != 2:
            raise ValueError(f"softmax_cross_entropy: logits must be (N, K), got shape {z.shape}")
        if not np.issubdtype(z.dtype, np.floating):
            raise TypeError(
                f"softmax_cross_entropy: logits must be floating point, got dtype {z.dtype} "
                f"(shape {z.shape}); cast them first, e.g. logits.astype(np.float32)"
            )
        N, K = z.shape
        if N == 0:
            raise ValueError(
                f"softmax_cross_entropy: empty batch: logits have shape {z.shape}, and the mean "
                "loss over 0 samples is undefined"
            )
        if K == 0:
            raise ValueError(f"softmax_cross_entropy: logits {z.shape} have no classes (K = 0)")
        if t.ndim == 1:
            if t.dtype.kind not in "iu":
                raise ValueError(
                    f"softmax_cross_entropy: 1-D labels must be integers, got dtype {t.dtype}"
                )
            if t.shape[0] != N:
                raise ValueError(
                    f"softmax_cross_entropy: labels {t.shape} do not match logits {z.shape}"
                )
            if t.min() < 0 or t.max() >= K:
                raise ValueError(
                    f"softmax_cross_entropy: labels must lie in [0, {K}) for logits {z.shape}, "
                    f"got values in [{t.min()}, {t.max()}]"
                )
        elif t.shape != z.shape:
            raise ValueError(
                f"softmax_cross_entropy: labels must be (N,) integers or one-hot (N, K) "
                f"matching logits {z.shape}, got shape {t.shape}"
            )
        logp = _log_softmax(z, axis=1)
        if t.ndim == 1:
            picked = logp[np.arange(N), t]
            loss = -picked.sum() / N
        else:
            loss = -(t * logp).sum() / N
        self.save(logp=logp, t=t)
        return np.asarray(loss, dtype=z.dtype)

    def backward(self, gy):
        logp, t = self.saved["logp"], self.saved["t"]
        N = logp.shape[0]
        scale = gy / N  # 0-d, same dtype as the logits
        gz = gt = None
        if self.needs_input_grad[0]:
            p = np.exp(logp)
            if t.ndim == 1:
                p[np.arange(N), t] -= 1
            else:
                p *= t.sum(axis=1, keepdims=True)
                p -= t
            p *= scale
            gz = p
        if len(self.needs_input_grad) > 1 and self.needs_input_grad[1]:
            gt = -logp * scale
        return gz, gt

    def backward_graph(self, gy):
        z, t = self.parents
        N, K = z.shape
        scale = gy / N
        gz = gt = None
        if self.needs_input_grad[0]:
            p = Softmax.apply(z, axis=1)
            if t.ndim == 1:  # integer labels: a constant one-hot
                onehot = np.zeros((N, K), z.dtype)
                onehot[np.arange(N), t.numpy()] = 1
                gz = (p - onehot) * scale
            else:
                gz = (p * t.sum(axis=1, keepdims=True) - t) * scale
        if len(self.needs_input_grad) > 1 and self.needs_input_grad[1]:
            gt = -LogSoftmax.apply(z, axis=1) * scale
        return gz, gt


class BCEWithLogits(Function):
    """Binary cross-entropy of ``sigmoid(x)`` against targets ``t``, elementwise and unreduced:
    ``max(x, 0) - x t + log1p(exp(-|x|))``, exact for logits of any size (no ``log(0)``).

    x and t broadcast; the gradients are ``sigmoid(x) - t`` and ``-x``.
    """

    def forward(self, x, t):
        try:
            loss = np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))
        except ValueError:
            raise ValueError(
                f"binary_cross_entropy_with_logits: logits {x.shape} and targets {t.shape} "
                "cannot be broadcast together"
            ) from None
        self.save(x=x, t=t)
        return loss

    def backward(self, gy):
        x, t = self.saved["x"], self.saved["t"]
        need = self.needs_input_grad
        gx = gy * (Sigmoid().forward(x) - t) if need[0] else None
        return gx, (-gy * x if need[1] else None)

    def backward_graph(self, gy):
        x, t = self.parents
        need = self.needs_input_grad
        return (gy * (Sigmoid.apply(x) - t) if need[0] else None), (-gy * x if need[1] else None)
