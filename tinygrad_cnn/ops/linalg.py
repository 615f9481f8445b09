"""Matrix products: ``matmul`` (2-D and batched) and the fused affine map ``linear``."""

from __future__ import annotations

import numpy as np

from .. import parallel
from ..autograd import Function, workspace


class MatMul(Function):
    """``a @ b`` for a (..., N, K) and b (..., K, M); batch dims broadcast."""

    def forward(self, a, b):
        if a.ndim < 2 or b.ndim < 2:
            raise ValueError(
                f"matmul: both operands need at least 2 dims, got shapes {a.shape} and {b.shape}"
            )
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(
                f"matmul: inner dimensions differ: a {a.shape} has {a.shape[-1]} columns, "
                f"b {b.shape} has {b.shape[-2]} rows"
            )
        try:
            np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise ValueError(
                f"matmul: batch dims of a {a.shape} and b {b.shape} cannot be broadcast"
            ) from None
        self.save(a=a, b=b)
        return _matmul(a, b)

    def backward(self, gy):
        a, b = self.saved["a"], self.saved["b"]
        # gy (..., N, M) @ b.T (..., M, K) -> (..., N, K); a.T (..., K, N) @ gy -> (..., K, M)
        ga = _matmul(gy, np.swapaxes(b, -1, -2)) if self.needs_input_grad[0] else None
        gb = _matmul(np.swapaxes(a, -1, -2), gy) if self.needs_input_grad[1] else None
        return ga, gb

    def backward_graph(self, gy):
        a, b = self.parents
        need = self.needs_input_grad
        # gy (..., N, M) @ b^T (..., M, K) -> (..., N, K); a^T (..., K, N) @ gy -> (..., K, M)
        ga = gy @ _swap_last(b) if need[0] else None
        gb = _swap_last(a) @ gy if need[1] else None
        return ga, gb


def _swap_last(t):
    """A Tensor with its last two axes swapped (a transposed matrix, batched)."""
    axes = list(range(t.ndim))
    axes[-2], axes[-1] = axes[-1], axes[-2]
    return t.transpose(tuple(axes))


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b``, split across threads (``parallel.run``): 2-D products by rows of
    ``a``, batched ones by their first batch dimension."""
    dtype = np.result_type(a, b)
    if a.ndim == b.ndim == 2:
        return parallel.matmul(a, b, workspace.empty((len(a), b.shape[1]), dtype))
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = np.broadcast_to(a, (*batch, *a.shape[-2:]))  # views: stride 0 where broadcast
    b = np.broadcast_to(b, (*batch, *b.shape[-2:]))
    out = workspace.empty((*batch, a.shape[-2], b.shape[-1]), dtype)
    work = out.size * a.shape[-1]
    parallel.run(
        lambda lo, hi: np.matmul(a[lo:hi], b[lo:hi], out=out[lo:hi]), len(out), work, gemm=True
    )
    return out


class Linear(Function):
    """``x @ w + b`` with x (N, IN), w (IN, OUT), b (OUT,) — the book's affine layer."""

    def forward(self, x, w, b=None):
        if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
            flat = x.ndim > 2 and w.ndim == 2 and int(np.prod(x.shape[1:])) == w.shape[0]
            hint = (  # the book's Affine flattens by itself; ours wants it done first
                f": flatten x first, as the book's Affine does inside (nn.Flatten() before "
                f"the layer, or x.reshape({x.shape[0]}, -1))"
                if flat
                else ""
            )
            raise ValueError(
                f"linear: expected x (N, IN) and w (IN, OUT), got x {x.shape} and w {w.shape}"
                + hint
            )
        if b is not None and b.shape != (w.shape[1],):
            raise ValueError(f"linear: b must have shape ({w.shape[1]},), got {b.shape}")
        self.save(x=x, w=w)
        y = parallel.matmul(x, w)
        if b is not None:
            y += b
        return y

    def backward(self, gy):
        x, w = self.saved["x"], self.saved["w"]
        need = self.needs_input_grad
        dtype = np.result_type(gy, w, x)
        # gy (N, OUT) @ w.T (OUT, IN) -> gx (N, IN); x.T (IN, N) @ gy (N, OUT) -> gw (IN, OUT)
        gx = parallel.matmul(gy, w.T, workspace.empty(x.shape, dtype)) if need[0] else None
        gw = parallel.matmul(x.T, gy, workspace.empty(w.shape, dtype)) if need[1] else None
        if len(need) == 2:
            return gx, gw
        gb = gy.sum(axis=0) if need[2] else None
        return gx, gw, gb

    def backward_graph(self, gy):
        x, w, *b = self.parents
        need = self.needs_input_grad
        gx = gy @ w.transpose() if need[0] else None  # (N, OUT) @ (OUT, IN)
        gw = x.transpose() @ gy if need[1] else None  # (IN, N) @ (N, OUT)
        if not b:
            return gx, gw
        return gx, gw, (gy.sum(axis=0) if need[2] else None)
