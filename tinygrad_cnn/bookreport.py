"""Reports of ``tinygrad_cnn.book``'s checks: a row per gradient, a table, a drawing in red."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .bookdiag import Diagnosis

__all__ = ["GradientRow", "LayerReport", "NetworkReport", "draw_layers", "table"]


@dataclass(frozen=True)
class GradientRow:
    """One checked gradient: ``ok``, relative error, worst index with both values, diagnosis."""

    layer: str
    name: str
    shape: tuple[int, ...]
    ok: bool
    error: float
    worst: tuple[int, ...] | None
    analytic: float
    numeric: float
    checked: int
    held: int = 0
    diagnosis: Diagnosis | None = None

    @property
    def verified(self) -> bool:
        """False for a row that is not wrong but proves nothing: every checked element sat on
        a kink (or none could be checked). Such a row is neither ok nor wrong."""
        return not self.ok or self.checked > self.held

    def cells(self) -> tuple[str, ...]:
        worst = "-" if self.worst is None else str(self.worst).replace(" ", "")
        vals = "-" if self.worst is None else f"{self.analytic:.4g}"
        num = "-" if self.worst is None else f"{self.numeric:.4g}"
        size = int(np.prod(self.shape))
        result = "ok" if self.ok else f"WRONG: {self.diagnosis.code if self.diagnosis else '?'}"
        if not self.verified:
            result = "not checked (every sampled element on a kink)"
        return (
            self.layer,
            self.name,
            str(self.shape).replace(" ", ""),
            f"{self.checked}/{size}",
            "-" if not self.verified else f"{self.error:.1e}",
            worst,
            vals,
            num,
            result,
        )


def table(rows: list[GradientRow]) -> list[str]:
    head = (
        "layer",
        "grad",
        "shape",
        "checked",
        "rel.err",
        "worst",
        "analytic",
        "numeric",
        "result",
    )
    body = [r.cells() for r in rows]
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [head, *body]
    ]
    for r in rows:
        if r.diagnosis is not None:
            lines.append(f"{r.layer}.{r.name}: {r.diagnosis.code}: {r.diagnosis.message}")
        if r.held:
            n = f"{r.held} element{'s' if r.held != 1 else ''}"
            lines.append(f"{r.layer}.{r.name}: {n} on a kink held fixed")
    return lines


@dataclass
class LayerReport:
    """``check_layer``'s result: ``ok``, ``rows`` (one per gradient), ``print`` for a table."""

    layer: str
    rows: list[GradientRow]
    header: str = ""
    draw: Callable[..., Any] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    @property
    def failed(self) -> list[GradientRow]:
        return [r for r in self.rows if not r.ok]

    @property
    def unverified(self) -> list[GradientRow]:
        """Rows neither ok nor wrong: every checked element on a kink."""
        return [r for r in self.rows if not r.verified]

    def __str__(self) -> str:
        verdict = "all gradients right" if self.ok else f"{len(self.failed)} wrong"
        if self.ok and self.unverified:
            names = ", ".join(r.name for r in self.unverified)
            verdict = f"no gradient wrong, but {names} not checked (every element on a kink)"
        return "\n".join([self.header, *table(self.rows), f"{self.layer}: {verdict}"])

    def render(self, path: str | Path) -> Path:
        """Draw the layer as an op with its inputs; failing gradients (and the op) in red."""
        from .viz import save_graph

        if self.draw is None:
            raise ValueError("render: this report has no drawing (built without a layer)")
        return save_graph(self.draw(), path)


@dataclass
class NetworkReport:
    """``check_network``'s result: parameter rows, one ``LayerReport`` per layer, the verdict."""

    rows: list[GradientRow]
    layers: list[LayerReport]
    seconds: float
    header: str = ""
    draw: Callable[..., Any] | None = field(default=None, repr=False)

    @property
    def first_wrong(self) -> str | None:
        """Name of the first layer (in forward order) with a wrong gradient, or None."""
        return next((rep.layer for rep in self.layers if not rep.ok), None)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows) and self.first_wrong is None

    def __str__(self) -> str:
        lines = [self.header, "network.gradient vs finite differences of network.loss:"]
        lines += table(self.rows)
        lines.append("each layer on its actual input:")
        lines += table([r for rep in self.layers for r in rep.rows])
        lines.append(f"{self.verdict()} ({self.seconds:.1f} s)")
        return "\n".join(lines)

    def verdict(self) -> str:
        """The last line: the first wrong layer, else the wrong parameters, else all right."""
        bad = [r.name for r in self.rows if not r.ok]
        if self.first_wrong:
            return f"first wrong layer: {self.first_wrong}"
        if bad:
            return (
                f"network.gradient is wrong for {', '.join(bad)} although every layer checks "
                "right: look at gradient() (which layer's dW goes to which key) and at how "
                "the layers get network.params"
            )
        unverified = [r.name for r in self.rows if not r.verified]
        unverified += [f"{rep.layer}.{r.name}" for rep in self.layers for r in rep.unverified]
        if unverified:
            return f"nothing wrong, but not checked: {', '.join(unverified)} (on kinks)"
        return "all right"

    render = LayerReport.render


def draw_layers(
    layers: list[tuple[str, Any, list[GradientRow]]],
    x: np.ndarray,
    t: Any = None,
    names: dict[int, str] | None = None,
    param_rows: list[GradientRow] | None = None,
) -> Any:
    """The chain of book-style layers as a graph (``as_function`` ops); wrong gradients in red.

    A layer with a wrong gradient is a red op; the tensor whose gradient is wrong (its input
    for ``dx``, a parameter for ``dW``...) is red too, labelled with the diagnosis.
    """
    import copy

    from .bookbridge import as_function, param_pairs
    from .tensor import Tensor
    from .viz import draw_graph, graph_tensors, node_ids

    names = names or {}
    h = Tensor(x, requires_grad=True, name="x")
    bad, red = [], []
    for lname, layer, rows in layers:
        labels = {p: names.get(id(getattr(layer, p)), f"{lname}.{p}") for p in param_pairs(layer)}
        fn = as_function(copy.deepcopy(layer), labels=labels)
        by_grad = dict(zip(fn.grads, fn.params, strict=True))
        for r in rows:
            if not r.ok:
                tensor = h if r.name == "dx" else by_grad.get(r.name)
                code = r.diagnosis.code if r.diagnosis else "wrong"
                red.extend([(tensor, f"{lname}.{r.name}: {code}")] if tensor is not None else [])
        h = fn(h, t) if fn.loss else fn(h)
        if not all(r.ok for r in rows):
            bad.append(h._ctx)
        for p in fn.params:
            for r in param_rows or ():
                if r.name == p.name and not r.ok:
                    red.append((p, f"{r.name}: {r.diagnosis.code if r.diagnosis else 'wrong'}"))
    graph = draw_graph(h, highlight=bad)
    _, ids = node_ids(graph_tensors(h))
    for tensor, why in red:
        graph.node(
            ids[id(tensor)],
            style="filled,bold",
            fillcolor="#ff6666",
            color="red",
            xlabel=why,
            fontcolor="red",
        )
    return graph
