"""Draw the graph behind a tensor with Graphviz: ops, tensors, module clusters, gradient norms.

One node per op (``Conv2d k=5x5 s=1 p=0``) and one per tensor (name or ``t7``, shape, dtype);
edges follow the data, tensor -> op -> tensor. Node ids are handed out in topological order
(``n0, n1, ...``), so the DOT source of the same graph is byte-identical in every run. Building
the source is iterative and linear in the graph and never needs the ``dot`` program; only
rendering an image does.

>>> loss = net.loss(x, t)
>>> loss.backward(retain_graph=True)
>>> render_graph(loss, "graph.svg", show_grads=True)      # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .autograd import Function, on_op_backward
from .backprop import grad, toposort
from .io import atomic_write
from .tensor import Tensor

if TYPE_CHECKING:
    import graphviz

    from .audit import AuditReport
    from .nn import Module

__all__ = [
    "GraphvizNotFoundError", "draw_graph", "render_graph", "save_graph", "plot_module",
    "grad_norms", "graph_tensors", "op_label", "explore",
]  # fmt: skip

#: File extension -> Graphviz output format; ``.dot``/``.gv`` write the source itself.
FORMATS = {".svg": "svg", ".png": "png", ".pdf": "pdf", ".dot": "dot", ".gv": "dot"}
INSTALL_HINT = (
    "install Graphviz (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz; "
    "conda: conda install graphviz), or write a .dot file, which needs no program"
)
_ABBREV = {"kernel": "k", "stride": "s", "padding": "p"}
_STYLES: dict[str, dict[str, str]] = {
    "op": {"shape": "ellipse", "style": "filled", "fillcolor": "#fff2cc", "color": "#bf9000"},
    "param": {"shape": "box", "style": "filled", "fillcolor": "#cfe2f3", "color": "#3d85c6"},
    "input": {"shape": "box", "style": "filled,dashed", "fillcolor": "#eeeeee", "color": "#666666"},
    "tensor": {"shape": "box", "style": "rounded", "color": "#999999"},
    "root": {"shape": "box", "style": "filled,bold", "fillcolor": "#ffd966", "peripheries": "2"},
    "failed": {"shape": "ellipse", "style": "filled,bold", "fillcolor": "#ff6666", "color": "red"},
}

_FONT = {"fontname": "Helvetica", "fontsize": "10"}
_CLUSTER = {"style": "rounded,dashed", "color": "#7f7f7f", "fontcolor": "#444444", "labeljust": "l"}


class GraphvizNotFoundError(RuntimeError):
    """Rendering an image needs the Graphviz ``dot`` program, and it is not on PATH."""


def graph_tensors(*roots: Tensor) -> list[Tensor]:
    """Every tensor of the graphs ending at ``roots``, inputs first, each once.

    Raises ``RuntimeError`` when backward already freed part of the graph.
    """
    order: list[Tensor] = []
    seen: set[int] = set()
    for root in roots:
        if not isinstance(root, Tensor):
            raise TypeError(f"draw_graph: roots must be Tensors, got {type(root).__name__}")
        for t in toposort(root):
            if id(t) not in seen:
                seen.add(id(t))
                order.append(t)
    for t in order:
        if t._ctx is not None and t._ctx.freed:
            raise RuntimeError(
                f"the graph through {t._ctx.name} was freed by backward(); call "
                "backward(retain_graph=True) to keep it, or draw/audit it before backward()"
            )
    return order


def grad_norms(roots: Sequence[Tensor], tensors: Sequence[Tensor]) -> dict[int, float]:
    """L2 norm of d(sum of roots)/d(tensor) for every tensor a gradient reaches, by ``id``.

    Runs its own backward pass over the (intact) graph through the public hooks and
    ``autograd.grad``, so nothing is stored on the graph and no ``.grad`` is touched.
    """
    roots = [r for r in roots if r.requires_grad]
    leaves = [t for t in tensors if t._ctx is None and t.requires_grad]
    if not roots or not leaves:
        return {}
    out_of = {id(t._ctx): id(t) for t in tensors if t._ctx is not None}
    norms: dict[int, float] = {}

    def record(fn: Function, gy: Any, gxs: Any) -> None:
        norms[out_of[id(fn)]] = float(np.linalg.norm(gy))

    ones = [np.ones(r.shape, r.dtype) for r in roots]
    with on_op_backward(record):
        gs = grad(roots, leaves, ones, retain_graph=True, allow_unused=True)
    norms.update(
        (id(t), float(np.linalg.norm(g))) for t, g in zip(leaves, gs, strict=True) if g is not None
    )
    return norms


def node_ids(tensors: Sequence[Tensor]) -> tuple[dict[int, str], dict[int, str]]:
    """DOT ids in topological order: (op ids by ``id(fn)``, tensor ids by ``id(tensor)``)."""
    ops: dict[int, str] = {}
    ts: dict[int, str] = {}
    for t in tensors:
        if t._ctx is not None:
            ops[id(t._ctx)] = f"n{len(ops) + len(ts)}"
        ts[id(t)] = f"n{len(ops) + len(ts)}"
    return ops, ts


def op_label(fn: Function) -> str:
    """The op name and its key attributes, e.g. ``Conv2d k=5x5 s=1 p=0`` or ``Sum axis=(0,)``."""
    parts = [fn.name]
    for key, value in fn.label_attrs().items():
        if isinstance(value, np.generic):
            value = value.item()
        if value is None or value is False:
            continue
        if key in _ABBREV and isinstance(value, tuple):  # (5, 5) -> 5x5; stride (1, 1) -> 1
            same = key != "kernel" and len(set(value)) == 1
            text = str(value[0]) if same else "x".join(str(v) for v in value)
        elif isinstance(value, np.ndarray):
            text = f"array{value.shape}"
        else:
            text = repr(value)
        parts.append(f"{_ABBREV.get(key, key)}={text if len(text) <= 40 else text[:37] + '...'}")
    return " ".join(parts)


def _tensor_label(
    t: Tensor,
    title: str,
    kind: str,
    shapes: bool,
    dtypes: bool,
    norms: dict[int, float] | None,
    data: bool,
) -> str:
    lines = [title]
    info = " ".join(s for s, on in ((str(tuple(t.shape)), shapes), (str(t.dtype), dtypes)) if on)
    if info:
        lines.append(info)
    const = kind == "input" and t.size == 1 and not t.name
    if (data or const) and t.size <= 6:
        lines.append(np.array2string(t.numpy(), precision=4, separator=", "))
    elif data and t.size and t.dtype.kind in "fiub":
        lines.append(f"range [{t.numpy().min():.4g}, {t.numpy().max():.4g}]")
    if norms is not None and (t.requires_grad or t._ctx is not None):
        norm = norms.get(id(t))
        lines.append("no grad" if norm is None else f"|grad| = {norm:.4e}")
    # Escape backslashes from user text; "\n" between lines is a DOT escape for a line break.
    return "\\n".join(line.replace("\\", "\\\\") for line in lines)


def _build(
    roots: Sequence[Tensor],
    *,
    show_shapes: bool = True,
    show_dtypes: bool = True,
    show_grads: bool = False,
    show_data: bool = False,
    group_by_module: bool = True,
    rankdir: str = "TB",
    highlight: Iterable[Function] = (),
) -> tuple[graphviz.Digraph, int, int]:
    """Build the Digraph; return it with its node and edge counts."""
    gv = _graphviz()
    if rankdir not in ("TB", "LR", "BT", "RL"):
        raise ValueError(f"draw_graph: rankdir must be TB, LR, BT or RL, got {rankdir!r}")
    tensors = graph_tensors(*roots)
    op_ids, t_ids = node_ids(tensors)
    norms = grad_norms(roots, tensors) if show_grads else None
    red = {id(fn) for fn in highlight}
    root_ids = {id(r) for r in roots}

    # Which cluster (module path) each node goes in; () is the top level.
    param_path: dict[int, tuple[str, ...]] = {}
    if group_by_module:
        for t in tensors:
            fn = t._ctx
            for p in fn.parents if fn is not None else ():
                prefix = tuple(p.name.split(".")[:-1]) if p._ctx is None and p.name else ()
                if prefix and id(p) not in param_path:
                    ok = fn.scope[-len(prefix) :] == prefix
                    param_path[id(p)] = fn.scope if ok else prefix
    members: dict[tuple[str, ...], list[tuple[str, str, dict[str, str]]]] = {(): []}

    def add(path: tuple[str, ...], node: str, label: str, kind: str) -> None:
        for depth in range(1, len(path) + 1):
            members.setdefault(path[:depth], [])
        members[path].append((node, label, _STYLES[kind]))

    edges: list[tuple[str, str]] = []
    for k, t in enumerate(tensors):
        fn = t._ctx
        path = tuple(fn.scope) if fn is not None and group_by_module else ()
        if fn is not None:
            op = op_ids[id(fn)]
            add(path, op, op_label(fn), "failed" if id(fn) in red else "op")
            edges.extend((t_ids[id(p)], op) for p in fn.parents)
            edges.append((op, t_ids[id(t)]))
        if id(t) in root_ids:
            kind, title = "root", t.name or ("loss" if t.size == 1 else f"output t{k}")
        else:
            kind = "tensor" if fn is not None else "param" if t.requires_grad else "input"
            title = t.name or f"t{k}"
            path = param_path.get(id(t), path)
        label = _tensor_label(t, title, kind, show_shapes, show_dtypes, norms, show_data)
        add(path, t_ids[id(t)], label, kind)

    top = gv.Digraph(
        "tinygrad_cnn",
        graph_attr={"rankdir": rankdir, "ordering": "in", **_FONT, "fontsize": "11"},
        node_attr={**_FONT, "margin": "0.08,0.03"},
        edge_attr={"arrowsize": "0.6", "color": "#555555"},
    )
    graphs: dict[tuple[str, ...], graphviz.Digraph] = {(): top}
    for path, nodes in members.items():  # insertion order: parents before children
        if path:
            attrs = {"label": path[-1], **_CLUSTER}
            graphs[path] = gv.Digraph("cluster_" + ".".join(path), graph_attr=attrs)
        for node, label, style in nodes:
            graphs[path].node(node, gv.nohtml(label), **style)
    # Attach deepest clusters first, so each one is complete when its parent copies it in.
    for path in sorted((p for p in graphs if p), key=len, reverse=True):
        graphs[path[:-1]].subgraph(graphs[path])
    for tail, head in edges:
        top.edge(tail, head)
    return top, sum(len(n) for n in members.values()), len(edges)


def draw_graph(
    *roots: Tensor,
    show_shapes: bool = True,
    show_dtypes: bool = True,
    show_grads: bool = False,
    show_data: bool = False,
    group_by_module: bool = True,
    rankdir: str = "TB",
    highlight: Iterable[Function] = (),
) -> graphviz.Digraph:
    """The computation graph ending at ``roots`` as a ``graphviz.Digraph`` (no binary needed).

    Parameters
    ----------
    *roots : Tensor
        Usually the loss. Draw before ``backward()`` or after ``backward(retain_graph=True)``.
    show_shapes, show_dtypes, show_data : bool
        What tensor nodes show besides their name (data: values if tiny, else the range).
    show_grads : bool
        Show ``|grad|``, the L2 norm of the gradient of the (sum of the) roots, on every
        tensor that requires grad, or "no grad" where no gradient reaches it. The drawing runs
        a backward pass of its own for this; no ``.grad`` is touched. Draw before
        ``backward()`` or after ``backward(retain_graph=True)``.
    group_by_module : bool
        Draw each module's ops, outputs and parameters in a labelled (nested) cluster.
    rankdir : {"TB", "LR", "BT", "RL"}
        Direction of the data flow.
    highlight : iterable of Function
        Op nodes drawn in red (``AuditReport.draw`` marks failing ops this way).

    Returns
    -------
    graphviz.Digraph
        ``.source`` is the DOT text; ``render_graph`` writes it or an image.

    Examples
    --------
    >>> x = Tensor([1.0, 2.0], requires_grad=True)
    >>> print(draw_graph((x * x).sum()).source)  # doctest: +SKIP
    """
    return _build(
        roots, show_shapes=show_shapes, show_dtypes=show_dtypes, show_grads=show_grads,
        show_data=show_data, group_by_module=group_by_module, rankdir=rankdir,
        highlight=highlight,
    )[0]  # fmt: skip


def render_graph(roots: Tensor | Sequence[Tensor], path: str | Path, **kwargs: Any) -> Path:
    """Draw the graph ending at ``roots`` and write it to ``path``; return the path.

    The format follows the extension: ``.svg``, ``.png``, ``.pdf`` (need the Graphviz ``dot``
    program; ``GraphvizNotFoundError`` says how to install it) or ``.dot`` (the source, no
    program needed). The file is replaced atomically. ``kwargs`` go to :func:`draw_graph`.
    """
    roots = (roots,) if isinstance(roots, Tensor) else tuple(roots)
    return save_graph(draw_graph(*roots, **kwargs), path)


def save_graph(graph: graphviz.Digraph, path: str | Path) -> Path:
    """Write a drawn graph to ``path`` (format from the extension, as ``render_graph``)."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"render_graph: cannot tell the format of {path}; use one of {', '.join(FORMATS)}"
        )
    if fmt == "dot":
        data = graph.source.encode("utf-8")
    else:
        gv = _graphviz()
        try:
            data = graph.pipe(format=fmt)
        except gv.ExecutableNotFound:
            raise GraphvizNotFoundError(
                f"cannot render {path}: the Graphviz program 'dot' was not found on PATH; "
                + INSTALL_HINT
            ) from None
        except gv.CalledProcessError as e:
            err = (e.stderr or b"").decode(errors="replace").strip()
            raise RuntimeError(f"cannot render {path}: dot failed: {err}") from None
    with atomic_write(path) as f:
        f.write(data)
    return path


def plot_module(module: Module, x: Any, path: str | Path, t: Any = None, **kwargs: Any) -> Path:
    """Run ``module`` on ``x`` (its ``loss(x, t)`` when labels ``t`` are given) and draw the graph.

    With ``show_grads=True`` the norms are those of this batch's loss (needs ``t``).
    """
    if kwargs.get("show_grads") and t is None:
        raise ValueError("plot_module: show_grads=True needs labels t to compute a loss")
    root = module(x) if t is None else module.loss(x, t)
    return render_graph(root, path, **kwargs)


def explore(
    root: Tensor | Sequence[Tensor],
    path: str | os.PathLike,
    *,
    audit: AuditReport | None = None,
    title: str = "tinygrad_cnn graph",
) -> Path:
    """Write the interactive HTML explorer of the graph ending at ``root`` to ``path``.

    One self-contained page (no network when viewed): click nodes for their statistics, fold
    modules, search, and play the backward pass. Details in
    :func:`tinygrad_cnn.explore.explore`.

    Parameters
    ----------
    root : Tensor or sequence of Tensor
        Usually the loss; not a leaf (a leaf, or a result made under ``no_grad``, has no graph).
    path : str or os.PathLike
        The ``.html`` file to write; ``~`` is expanded and missing folders are created.
    audit : AuditReport, optional
        ``audit_graph(root)``'s report, to show each op's verdict in its panel.
    title : str
        The page title.

    Returns
    -------
    Path
        The file written.

    Examples
    --------
    >>> explore(net.loss(x, t), "graph.html")      # doctest: +SKIP
    """
    from .explore import explore as write_page

    return write_page(root, path, audit=audit, title=title)


def _graphviz() -> Any:
    try:
        import graphviz
    except ImportError as e:
        raise ImportError(
            "drawing graphs needs the graphviz Python package: pip install graphviz"
        ) from e
    return graphviz
