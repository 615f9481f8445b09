"""Anomaly mode: ``with detect_anomaly():`` raises at the first op that makes NaN or Inf.

It is built on the engine's public op hooks (``on_op_created``, ``on_op_backward``), so it is
per thread like them, and costs nothing when off. While it is on, every op also remembers the
line of your code that created it, and the error quotes that line.
"""

from __future__ import annotations

import linecache
import os
import sys
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from .autograd import Function, on_op_backward, on_op_created
from .tensor import Tensor
from .viz import op_label

__all__ = ["AnomalyError", "detect_anomaly", "user_frame"]

_PACKAGE_DIR = os.path.dirname(__file__) + os.sep


class AnomalyError(RuntimeError):
    """An op made NaN or Inf under ``detect_anomaly()``; see ``op``, ``phase`` and ``where``."""

    def __init__(self, message: str, op: Function, phase: str, where: str | None) -> None:
        super().__init__(message)
        self.op, self.phase, self.where = op, phase, where


def user_frame() -> str | None:
    """``file:line in function`` of the innermost caller outside this package (or None)."""
    frame: Any = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
    if frame is None:
        return None
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def _bad(a: np.ndarray) -> str:
    """'nan', 'inf', 'nan and inf' or '' for an array."""
    if a.dtype.kind != "f" or np.isfinite(a).all():
        return ""
    kinds = [k for k, f in (("nan", np.isnan), ("inf", np.isinf)) if f(a).any()]
    return " and ".join(kinds)


def _describe(fn: Function, what: str, arrays: Sequence[np.ndarray], where: str | None) -> str:
    shapes = ", ".join(f"{tuple(a.shape)} {a.dtype}" for a in arrays)
    created = where or "unknown (the op was recorded outside detect_anomaly())"
    lines = [f"detect_anomaly: {op_label(fn)} {what}", f"  input shapes: {shapes}",
             f"  created at: {created}"]  # fmt: skip
    if where:  # "path:line in function"
        path, _, line = where.rsplit(" in ", 1)[0].rpartition(":")
        source = linecache.getline(path, int(line))
        if source.strip():
            lines.append(f"      {source.strip()}")
    return "\n".join(lines)


@contextmanager
def detect_anomaly() -> Iterator[None]:
    """Raise ``AnomalyError`` at the first op whose output or input gradient holds NaN or Inf.

    The error names the op, its input shapes and the line of your code that created it (a
    cheap frame walk done only while the mode is on). It watches this thread only, and its
    hooks are removed on exit, also when the block raises.

    Examples
    --------
    >>> with detect_anomaly():                              # doctest: +SKIP
    ...     loss = net.loss(x, t)
    ...     loss.backward()
    """
    where: weakref.WeakKeyDictionary[Function, str | None] = weakref.WeakKeyDictionary()

    def created(fn: Function, inputs: tuple[Tensor, ...], out: Tensor) -> None:
        where[fn] = trace = user_frame()
        bad = _bad(out.numpy())
        if bad:
            what = f"produced {bad} in its forward output of shape {out.shape}"
            msg = _describe(fn, what, [t.numpy() for t in inputs], trace)
            upstream = [str(i) for i, t in enumerate(inputs) if _bad(t.numpy())]
            if upstream:
                msg += f"\n  note: input {', '.join(upstream)} already held nan/inf when it came in"
            raise AnomalyError(msg, fn, "forward", trace)

    def backward(fn: Function, gy: Any, grads: tuple[Any, ...]) -> None:
        for i, g in enumerate(grads):
            bad = "" if g is None else _bad(np.asarray(getattr(g, "_data", g)))
            if bad:
                what = f"backward produced {bad} in the gradient of input {i} (shape {g.shape})"
                trace = where.get(fn)
                msg = _describe(fn, what, [p.numpy() for p in fn.parents], trace)
                raise AnomalyError(msg, fn, "backward", trace)

    with on_op_created(created), on_op_backward(backward):
        yield
