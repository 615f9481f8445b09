"""What the explorer's panel shows about one array, and the gradients of one backward pass.

Statistics are small summaries computed once, when the page is made; no array is embedded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..autograd import Function, on_op_backward, unbroadcast
from ..backprop import grad
from ..tensor import Tensor

#: Bars in each histogram of the panel.
BINS = 16


def num(x: float) -> float | str:
    """A float for JSON: four significant digits; NaN and +-Inf as strings."""
    if np.isfinite(x):
        return float(f"{x:.4g}")
    return str(x)


def summarize(a: np.ndarray) -> dict[str, Any]:
    """Summary of an array for the panel: min, max, mean, std, fraction of zeros, NaN and Inf
    counts and a histogram of the finite values.

    Parameters
    ----------
    a : ndarray, any shape
        Numeric values (booleans and integers are summarized as floats).

    Returns
    -------
    dict
        ``min, max, mean, std`` (of the finite values; absent when there are none), ``zeros``
        (fraction, 0..1), ``nan``, ``inf`` (counts), ``n`` (size) and ``hist`` (``BINS``
        counts over ``[min, max]``).

    Examples
    --------
    >>> summarize(np.array([0.0, 1.0, np.nan]))["nan"]
    1
    """
    a = np.asarray(a)
    n = int(a.size)
    out: dict[str, Any] = {"n": n, "nan": 0, "inf": 0, "zeros": 0.0}
    if n == 0:
        return out
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    flat = a.reshape(-1)
    finite = np.isfinite(flat)
    if not finite.all():
        out["nan"] = int(np.isnan(flat).sum())
        out["inf"] = int(n - out["nan"] - finite.sum())
        flat = flat[finite]
    out["zeros"] = num(float(np.count_nonzero(flat == 0)) / n)
    if flat.size == 0:
        return out
    lo, hi = float(flat.min()), float(flat.max())
    out.update(min=num(lo), max=num(hi), mean=num(float(flat.mean(dtype=np.float64))),
               std=num(float(flat.std(dtype=np.float64))))  # fmt: skip
    if hi > lo:
        # Bin index of each value; the max goes into the last bin.
        idx = ((flat - lo) * (BINS / (hi - lo))).astype(np.int64)
        np.minimum(idx, BINS - 1, out=idx)
        out["hist"] = np.bincount(idx, minlength=BINS).tolist()
    else:
        out["hist"] = [int(flat.size)]
    return out


def pack(s: dict[str, Any]) -> list[Any]:
    """``summarize``'s dict as the page stores it: ``[n, zeros, nan, inf, min, max, mean, std,
    hist]``, the trailing entries left out when empty (and the histogram of one value)."""
    keys = ("n", "zeros", "nan", "inf", "min", "max", "mean", "std")
    out = [s.get(k) for k in keys] + [s["hist"] if s.get("hist") and s["n"] > 1 else None]
    while out[-1] is None:
        out.pop()
    return out


def backward_record(
    roots: Sequence[Tensor], tensors: Sequence[Tensor]
) -> tuple[list[Function], dict[int, dict[str, Any]], dict[tuple[int, int], float]]:
    """Run one backward pass over the (intact) graph and record what the explorer replays.

    The gradient of the sum of ``roots`` is taken with ``autograd.grad`` and observed through
    the public ``on_op_backward`` hook, so no ``.grad`` is touched and the graph is kept. The
    hook fires once per op, in the order the engine computes the ops' gradients.

    Returns
    -------
    order : list of Function
        The ops in the engine's backward order.
    grads : dict
        ``id(tensor) -> summarize(gradient)`` for every tensor a gradient reaches.
    edges : dict
        ``(id(tail), id(head)) -> L2 norm`` of the gradient flowing back along each edge:
        tensor -> op edges carry the op's gradient for that input, op -> tensor edges the
        output's gradient. Keys are ids of tensors and of ``Function`` objects.
    """
    roots = [r for r in roots if r.requires_grad]
    leaves = [t for t in tensors if t._ctx is None and t.requires_grad]
    order: list[Function] = []
    grads: dict[int, dict[str, Any]] = {}
    edges: dict[tuple[int, int], float] = {}
    if not roots or not leaves:
        return order, grads, edges
    out_of = {id(t._ctx): id(t) for t in tensors if t._ctx is not None}

    def record(fn: Function, gy: Any, gxs: Any) -> None:
        order.append(fn)
        out = out_of[id(fn)]
        grads[out] = summarize(gy)
        edges[(id(fn), out)] = float(np.linalg.norm(gy))
        for parent, gx in zip(fn.parents, gxs, strict=True):
            if gx is not None:
                gx = unbroadcast(np.asarray(gx), parent.shape)
                edges[(id(parent), id(fn))] = float(np.linalg.norm(gx))

    ones = [np.ones(r.shape, r.dtype) for r in roots]
    with on_op_backward(record):
        gs = grad(roots, leaves, ones, retain_graph=True, allow_unused=True)
    grads.update((id(t), summarize(g)) for t, g in zip(leaves, gs, strict=True) if g is not None)
    return order, grads, edges
