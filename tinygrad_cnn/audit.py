"""Audit a recorded graph op by op, and catch the first NaN/Inf with ``detect_anomaly``.

``audit_graph`` re-runs every op node of a real graph on float64 copies of the arrays that
actually flowed into it and checks its backward there: the dot-product test
``<u, J v> = <J^T u, v>`` always, central differences element by element when the inputs are
small. It works for any ``Function`` subclass, including yours:

>>> loss = net.loss(x, t)
>>> report = audit_graph(loss)
>>> print(report)                      # one row per op; report.failed lists the bad ones
>>> report.render("audit.svg")         # the graph with failing ops in red
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .autograd import Function, enable_grad
from .tensor import Tensor
from .viz import graph_tensors, node_ids, op_label

__all__ = ["AuditRow", "AuditReport", "audit_graph"]

Masks = list[np.ndarray | None]


# ------------------------------------------------------------------------------ audit
@dataclass(frozen=True)
class AuditRow:
    """The check of one op node.

    ``index`` is the op's position in topological order, ``node`` its id in ``draw_graph``
    (``"n3"``), ``error`` the relative error of the dot-product test (nan if it did not run),
    ``check`` ``"vjp"`` or ``"vjp+fd"`` (central differences too), ``status`` ``"ok"``,
    ``"FAIL"`` or ``"skipped"`` (every differentiable input element on a kink).
    """

    index: int
    node: str
    op: str
    scope: str
    input_shapes: tuple[tuple[int, ...], ...]
    error: float
    check: str
    status: str
    note: str = ""

    @property
    def passed(self) -> bool:
        return self.status != "FAIL"


class AuditReport:
    """The rows of an audit; ``print`` it for a table, ``render`` it for a graph in red."""

    def __init__(self, rows: list[AuditRow], roots: tuple[Tensor, ...], fns: list[Function]):
        self.rows, self._roots, self._fns = rows, roots, fns

    @property
    def failed(self) -> list[AuditRow]:
        return [r for r in self.rows if not r.passed]

    @property
    def ok(self) -> bool:
        return not self.failed

    def __len__(self) -> int:
        return len(self.rows)

    def __str__(self) -> str:
        head = ("#", "node", "op", "module", "input shapes", "check", "rel. error", "result")
        body = [
            (
                str(r.index), r.node, r.op, r.scope or "-",
                " ".join(str(s).replace(" ", "") for s in r.input_shapes),
                r.check, f"{r.error:.1e}", r.status + (f": {r.note}" if r.note else ""),
            )
            for r in self.rows
        ]  # fmt: skip
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head) - 1)]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
            for row in [head, *body]
        ]
        skipped = sum(r.status == "skipped" for r in self.rows)
        lines.append(
            f"{len(self.rows)} ops: {len(self.rows) - len(self.failed) - skipped} ok, "
            f"{len(self.failed)} failed, {skipped} skipped"
        )
        return "\n".join(lines)

    def draw(self, **kwargs: Any) -> Any:
        """The graph as a ``graphviz.Digraph`` with failing op nodes in red."""
        from .viz import draw_graph

        bad = [fn for fn, r in zip(self._fns, self.rows, strict=True) if not r.passed]
        return draw_graph(*self._roots, highlight=bad, **kwargs)

    def render(self, path: str | Path, **kwargs: Any) -> Path:
        """Write the graph with failing op nodes in red (format from the extension)."""
        from .viz import save_graph

        return save_graph(self.draw(**kwargs), path)


def audit_graph(
    loss: Tensor, max_fd_elements: int = 64, rtol: float = 1e-5, seed: int = 0, eps: float = 1e-6
) -> AuditReport:
    """Check the backward of every op node of the graph ending at ``loss``, in float64.

    Each op is re-run as ``type(fn).apply(*inputs, **fn.attrs())`` on float64 copies of its
    recorded inputs (inputs that needed no gradient stay constants). Elements sitting on a
    kink (ReLU at 0, max/max-pool ties; see ``Function.kinks``) are held fixed, and the row says so.

    Parameters
    ----------
    loss : Tensor
        Root of a graph not yet backpropagated, or kept with ``backward(retain_graph=True)``.
    max_fd_elements : int
        Also run element-wise central differences on ops whose differentiable inputs have
        at most this many elements in total.
    rtol, eps : float
        Largest relative error that passes; finite-difference step.
    seed : int
        Seed of the random vectors u and v.

    Returns
    -------
    AuditReport
    """
    tensors = graph_tensors(loss)
    op_ids, _ = node_ids(tensors)
    fns = [t._ctx for t in tensors if t._ctx is not None]
    rows = [
        AuditRow(i, op_ids[id(fn)], op_label(fn), ".".join(fn.scope),
                 tuple(tuple(p.shape) for p in fn.parents),
                 *_check_op(fn, max_fd_elements, rtol, seed, eps))
        for i, fn in enumerate(fns)
    ]  # fmt: skip
    return AuditReport(rows, (loss,), fns)


def _check_op(
    fn: Function, max_fd: int, rtol: float, seed: int, eps: float
) -> tuple[float, str, str, str]:
    """Return (relative error, check, status, note) for one op node."""
    from .testing import gradcheck, vjp_error  # here, so testing can re-export this module

    cls, kwargs = type(fn), fn.attrs()
    arrays = [p.numpy().astype(np.float64) if p.dtype.kind == "f" else p.numpy()
              for p in fn.parents]  # fmt: skip
    need = fn.needs_input_grad
    masks = fn.kinks(*arrays, margin=10 * eps)
    if isinstance(masks, np.ndarray):  # one mask for a one-input op
        masks = [masks]
    masks = list(masks) if masks is not None else [None] * len(arrays)
    if len(masks) != len(arrays):
        raise ValueError(
            f"audit: {fn.name}.kinks returned {len(masks)} mask(s) for {len(arrays)} input(s); "
            "return one boolean mask (or None) per input"
        )
    # An input with kinks is reparametrized as x0 + z * keep with z = 0, so the random
    # directions of both tests never move an element that sits on a kink.
    keep = {i: (~m).astype(np.float64) for i, m in enumerate(masks) if need[i] and m is not None}
    keep = {i: k for i, k in keep.items() if k.size and not k.all()}
    n_kinks = sum(int(k.size - k.sum()) for k in keep.values())
    inputs = [
        Tensor(np.zeros_like(a) if i in keep else a.copy(), requires_grad=need[i])
        for i, a in enumerate(arrays)
    ]

    def f(*xs: Any) -> Tensor:
        xs = tuple(arrays[i] + x * keep[i] if i in keep else x for i, x in enumerate(xs))
        return cls.apply(*xs, **kwargs)

    total = sum(arrays[i].size for i in keep)
    note = f"{n_kinks} of {total} input elements on a kink held fixed" if n_kinks else ""
    if all(keep.get(i, np.ones(1)).sum() == 0 for i in range(len(arrays)) if need[i]):
        return float("nan"), "-", "skipped", "every input element sits on a kink"
    fd = sum(a.size for a, n in zip(arrays, need, strict=True) if n) <= max_fd
    check, error = ("vjp+fd" if fd else "vjp"), float("nan")
    try:
        with enable_grad():
            error = vjp_error(f, *inputs, eps=eps, seed=seed)
            if check == "vjp+fd":
                gradcheck(f, *inputs, eps=eps, rtol=rtol, seed=seed)
    except AssertionError as e:  # gradcheck names the input and the worst element
        return error, check, "FAIL", str(e).removeprefix("gradcheck: ")
    except Exception as e:  # a re-run that raises is a finding, not a crash of the audit
        return float("nan"), check, "FAIL", f"{type(e).__name__}: {e}"
    if not error <= rtol:
        return error, check, "FAIL", f"dot-product test off by {error:.1e} > rtol={rtol:g}"
    return error, check, "ok", note
