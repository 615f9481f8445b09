"""Pictures of what a network learned: filters, mistakes, confusion matrix, activations.

Each ``plot_*`` function writes one picture, in the format its suffix names (``.png``,
``.svg`` or ``.pdf``; atomically, with matplotlib's object API and no pyplot state), and
returns the numbers behind it, so a test or a notebook can check them. matplotlib (the
``plot`` extra) is imported only when a picture is drawn. The network is observed from the
outside: batched inference in eval mode without a graph, and :func:`collect_activations`
through ``Module.register_forward_hook``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from . import functional as F
from .autograd import no_grad
from .io import atomic_write
from .nn import Module, ReLU
from .parallel import threads
from .tensor import Tensor

__all__ = [
    "filter_grid", "plot_filters", "plot_mistakes", "confusion_matrix", "plot_confusion",
    "plot_confusion_matrix", "collect_activations", "plot_activations", "picture_format",
]  # fmt: skip

DPI = 100
MISTAKE_COLUMNS = 8
#: The picture formats a ``path`` suffix may name.
FORMATS = ("png", "svg", "pdf")


def _figure(who: str, figsize: tuple[float, float]) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(f"{who} needs matplotlib: pip install 'tinygrad_cnn[plot]'") from None
    return Figure(figsize=figsize, layout="constrained")


def picture_format(who: str, path: str | Path) -> str:
    """The format that ``path``'s suffix names (one of :data:`FORMATS`), or a clear refusal."""
    kind = Path(path).suffix.lower().lstrip(".")
    if kind not in FORMATS:
        suffix = f"suffix .{kind}" if kind else "no suffix"
        raise ValueError(
            f"{who}: {str(path)!r} has {suffix}; the suffix names the format written: "
            ".png, .svg or .pdf"
        )
    return kind


def _save(who: str, fig: Any, path: str | Path) -> Path:
    path, kind = Path(path), picture_format(who, path)
    with atomic_write(path) as f:
        fig.savefig(f, format=kind, dpi=DPI)  # no bbox "tight": the size is figsize * DPI
    return path


def _array(who: str, name: str, a: Any) -> np.ndarray:
    a = a.numpy() if isinstance(a, Tensor) else np.asarray(a)
    if a.dtype == object or not np.issubdtype(a.dtype, np.number):
        raise TypeError(f"{who}: {name} must be a numeric array, got dtype {a.dtype}")
    return a


def _labels(who: str, name: str, t: Any, n: int, k: int | None = None) -> np.ndarray:
    """Integer labels (N,) in [0, K) from labels (N,) or one-hot rows (N, K).

    ``k`` None (K not known yet) checks only the shape: N rows, and at least two columns.
    """
    t = _array(who, name, t)
    width = t.shape[1] if t.ndim == 2 else None
    if t.ndim not in (1, 2) or len(t) != n or width is not None and width != (k or max(width, 2)):
        K = "K" if k is None else k
        raise ValueError(
            f"{who}: labels {name} of shape {t.shape} for {n} images; need integer labels "
            f"(N,) = ({n},) or one-hot rows (N, {K}) = ({n}, {K})"
        )
    if t.ndim == 2:
        return t.argmax(axis=1)
    if not np.issubdtype(t.dtype, np.integer):
        raise TypeError(f"{who}: labels {name} must be integers (or one-hot rows), got {t.dtype}")
    if k is not None and t.size and (t.min() < 0 or t.max() >= k):
        raise ValueError(
            f"{who}: {name} labels span [{t.min()}, {t.max()}], outside [0, {k}) for {k} classes"
        )
    return t.astype(np.int64, copy=False)


def _images(who: str, x: Any) -> np.ndarray:
    x = _array(who, "x", x)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or len(x) == 0:
        raise ValueError(
            f"{who}: x must be images (N, C, H, W) with N >= 1 and C 1 or 3, got {x.shape}"
        )
    return x


@contextmanager
def _eval_mode(who: str, net: Module) -> Iterator[None]:
    """Every sub-module in eval mode and no graph; each module's own mode restored after."""
    if not isinstance(net, Module):
        raise TypeError(f"{who}: net must be a Module, got {type(net).__name__}")
    modes = [(m, m.training) for _, m in net.named_modules()]
    net.eval()
    try:
        with no_grad(), threads():
            yield
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)


def _probabilities(who: str, net: Module, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Softmax probabilities (N, K) of ``net`` on ``x``, in batches."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{who}: batch_size must be a positive int, got {batch_size!r}")
    with _eval_mode(who, net):
        batches = (x[i : i + batch_size] for i in range(0, len(x), batch_size))
        parts = [F.softmax(net(xb)).numpy() for xb in batches]
    return np.concatenate(parts)


# --------------------------------------------------------------------------------- filters
def filter_grid(w: Any, columns: int | None = None) -> np.ndarray:
    """Tile filters (OC, C, KH, KW) into one image, each filter scaled to [0, 1] by itself.

    C is 1 (grey) or 3 (RGB). Tiles are separated (and the grid padded) by NaN, drawn blank.

    Returns
    -------
    ndarray, shape (rows*(KH+1)-1, columns*(KW+1)-1) for C=1, with a trailing axis 3 for C=3
    """
    w = _array("filter_grid", "w", w)
    if w.ndim != 4 or w.shape[1] not in (1, 3) or 0 in w.shape:
        raise ValueError(f"filter_grid: w must be filters (OC, C, KH, KW), C 1 or 3; got {w.shape}")
    oc, c, kh, kw = w.shape
    cols = columns or math.ceil(math.sqrt(oc))
    if not isinstance(cols, int) or cols < 1:
        raise ValueError(f"filter_grid: columns must be a positive int, got {columns!r}")
    rows = math.ceil(oc / cols)
    w = w.astype(np.float64)
    lo = w.min(axis=(1, 2, 3), keepdims=True)
    span = w.max(axis=(1, 2, 3), keepdims=True) - lo
    w = (w - lo) / np.where(span > 0, span, 1.0)  # a constant filter is drawn black
    tiles = np.full((rows * cols, kh + 1, kw + 1, c), np.nan)
    tiles[:oc, :kh, :kw] = w.transpose(0, 2, 3, 1)  # (OC, C, KH, KW) -> (OC, KH, KW, C)
    # (rows*cols, KH+1, KW+1, C) -> (rows, KH+1, cols, KW+1, C) -> (rows*(KH+1), cols*(KW+1), C)
    grid = tiles.reshape(rows, cols, kh + 1, kw + 1, c).transpose(0, 2, 1, 3, 4)
    grid = grid.reshape(rows * (kh + 1), cols * (kw + 1), c)[:-1, :-1]
    return grid[..., 0] if c == 1 else grid


def plot_filters(before: Any | None, after: Any, path: str | Path) -> dict[str, Any]:
    """Draw the first conv layer's filters (OC, C, KH, KW) before and after training.

    The picture is 1000 x 500 pixels (at 100 dpi): two grids side by side, or only the
    "after training" grid (on the right) when ``before`` is None (initial weights unknown).
    Returns ``{"before": grid or None, "after": grid, "tiles": OC}`` with the grids of
    :func:`filter_grid`.
    """
    picture_format("plot_filters", path)
    after = _array("plot_filters", "after", after)
    if before is not None:
        before = _array("plot_filters", "before", before)
        if before.shape != after.shape:
            raise ValueError(
                f"plot_filters: before {before.shape} and after {after.shape} differ in shape"
            )
    grids = {"before": None if before is None else filter_grid(before),
             "after": filter_grid(after)}  # fmt: skip
    fig = _figure("plot_filters", (10, 5))
    for ax, (name, grid) in zip(fig.subplots(1, 2), grids.items(), strict=True):
        ax.axis("off")
        if grid is not None:
            ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"{name} training ({len(after)} filters)")
    _save("plot_filters", fig, path)
    return {**grids, "tiles": len(after)}


# -------------------------------------------------------------------------------- mistakes
def plot_mistakes(
    net: Module, x: Any, t: Any, path: str | Path, n: int = 24, batch_size: int = 500
) -> dict[str, np.ndarray]:
    """Draw up to ``n`` misclassified images (N, C, H, W), the most confident mistakes first.

    Each tile is titled ``predicted (confidence) / true``, the confidence being the softmax
    probability of the predicted class. The PNG is 1000 pixels wide and 40 + 160 * rows
    high, rows = ceil(shown / 8) (at least 1).

    Returns
    -------
    dict
        ``indices`` (M,): every misclassified index, ascending; ``predicted``, ``true``,
        ``confidence`` (M,) for them; ``shown`` (<= n,): the indices drawn, in order.
    """
    picture_format("plot_mistakes", path)
    x = _images("plot_mistakes", x)
    _labels("plot_mistakes", "t", t, len(x))  # the shape, before the forward pass
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"plot_mistakes: n must be a positive int, got {n!r}")
    probs = _probabilities("plot_mistakes", net, x, batch_size)
    t = _labels("plot_mistakes", "t", t, len(x), probs.shape[1])
    pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(pred != t)
    conf = probs[wrong, pred[wrong]]
    shown = wrong[np.argsort(-conf, kind="stable")[:n]]
    rows = max(1, math.ceil(len(shown) / MISTAKE_COLUMNS))
    fig = _figure("plot_mistakes", (10, 0.4 + 1.6 * rows))
    fig.suptitle(f"{len(wrong)} of {len(x)} misclassified (predicted (confidence) / true)")
    axes = list(fig.subplots(rows, MISTAKE_COLUMNS, squeeze=False).flat)
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, shown, strict=False):
        img = x[i].transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
        ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray_r")
        ax.set_title(f"{pred[i]} ({probs[i, pred[i]]:.2f}) / {t[i]}", fontsize=9, color="red")
    _save("plot_mistakes", fig, path)
    return {"indices": wrong, "predicted": pred[wrong], "true": t[wrong], "confidence": conf,
            "shown": shown}  # fmt: skip


# ------------------------------------------------------------------------------- confusion
def confusion_matrix(true: Any, predicted: Any, num_classes: int = 10) -> np.ndarray:
    """Counts (K, K) int64: row = true class, column = predicted class.

    ``true`` and ``predicted`` are integer labels (N,) in [0, K) or one-hot rows (N, K),
    K = ``num_classes``.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(
            f"confusion_matrix: num_classes must be a positive int, got {num_classes!r}"
        )
    n = len(np.shape(true)) and len(true)
    true = _labels("confusion_matrix", "true", true, n, num_classes)
    predicted = _labels("confusion_matrix", "predicted", predicted, n, num_classes)
    counts = np.bincount(true * num_classes + predicted, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def plot_confusion_matrix(matrix: Any, path: str | Path) -> np.ndarray:
    """Draw a confusion matrix (K, K) of counts with each count written in its cell.

    The PNG is 600 x 550 pixels. Returns the matrix (int64).
    """
    picture_format("plot_confusion_matrix", path)
    m = _array("plot_confusion_matrix", "matrix", matrix)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.size == 0:
        raise ValueError(f"plot_confusion_matrix: matrix must be square (K, K), got {m.shape}")
    if not np.issubdtype(m.dtype, np.integer) or m.min() < 0:
        raise ValueError("plot_confusion_matrix: matrix must hold non-negative integer counts")
    m = m.astype(np.int64)
    k = len(m)
    fig = _figure("plot_confusion_matrix", (6, 5.5))
    ax = fig.subplots()
    image = ax.imshow(np.log1p(m), cmap="Blues")  # log: the diagonal dwarfs the mistakes
    top = float(np.log1p(m.max()))
    for (i, j), v in np.ndenumerate(m):  # one label per cell (K*K), not per pixel
        light = np.log1p(v) > 0.6 * top
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                color="white" if light else "black")  # fmt: skip
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    total = int(m.sum())
    acc = np.trace(m) / total if total else float("nan")
    ax.set_title(f"confusion matrix: {total} images, accuracy {acc:.4f}")
    fig.colorbar(image, ax=ax, label="log(1 + count)")
    _save("plot_confusion_matrix", fig, path)
    return m


def plot_confusion(
    net: Module, x: Any, t: Any, path: str | Path, num_classes: int = 10, batch_size: int = 500
) -> np.ndarray:
    """Predict ``x`` (N, C, H, W), count against labels ``t`` and draw the matrix (K, K)."""
    picture_format("plot_confusion", path)
    x = _images("plot_confusion", x)
    t = _labels("plot_confusion", "t", t, len(x), num_classes)
    pred = _probabilities("plot_confusion", net, x, batch_size).argmax(axis=1)
    return plot_confusion_matrix(confusion_matrix(t, pred, num_classes), path)


# ----------------------------------------------------------------------------- activations
def collect_activations(
    net: Module, x: Any, layer: type[Module] = ReLU, batch_size: int = 500
) -> dict[str, np.ndarray]:
    """Every ``layer`` module's output on ``x``, by module name, as flat float arrays.

    Runs in eval mode without a graph through ``Module.register_forward_hook``; the hooks
    are removed afterwards, also when the forward pass raises.
    """
    if not isinstance(net, Module):
        raise TypeError(f"collect_activations: net must be a Module, got {type(net).__name__}")
    x = _array("collect_activations", "x", x)
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"collect_activations: x must hold at least one sample, got {x.shape}")
    found: dict[str, list[np.ndarray]] = {}
    handles = []

    def hook_for(parts: list[np.ndarray]) -> Any:
        def hook(module: Module, inputs: tuple[Any, ...], output: Any) -> None:
            y = output.numpy() if isinstance(output, Tensor) else np.asarray(output)
            parts.append(y.ravel().copy())  # a copy: the engine may reuse the buffer

        return hook

    try:
        for name, m in net.named_modules():
            if isinstance(m, layer):
                found[name or type(m).__name__] = parts = []
                handles.append(m.register_forward_hook(hook_for(parts)))
        if not found:
            raise ValueError(f"collect_activations: the network has no {layer.__name__} module")
        with _eval_mode("collect_activations", net):
            for i in range(0, len(x), batch_size):
                net(x[i : i + batch_size])
    finally:
        for handle in handles:
            handle.remove()
    return {name: np.concatenate(parts) for name, parts in found.items() if parts}


def plot_activations(
    acts_first: Mapping[str, Any] | None,
    acts_last: Mapping[str, Any],
    path: str | Path,
    bins: int = 30,
    labels: tuple[str, str] = ("first epoch", "last epoch"),
) -> dict[str, dict[str, np.ndarray]]:
    """Histograms of each layer's activations at two moments, one column per layer.

    Both mappings need the same layer names (as from :func:`collect_activations`). A layer's
    two histograms share ``bins`` edges spanning all its values, so every activation is
    counted. ``acts_first`` None (the first moment unknown) leaves the top row empty. The
    picture is (100 + 300 * layers) x 550 pixels (at 100 dpi).

    Returns
    -------
    dict
        By layer: ``edges`` (bins + 1,), ``first`` (None without ``acts_first``) and ``last``
        counts (bins,).
    """
    picture_format("plot_activations", path)
    only_last = acts_first is None
    acts_first = acts_last if only_last else acts_first
    if set(acts_first) != set(acts_last) or not acts_first:
        raise ValueError(
            f"plot_activations: need the same non-empty layers at both moments, got "
            f"{sorted(acts_first)} and {sorted(acts_last)}"
        )
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"plot_activations: bins must be a positive int, got {bins!r}")
    out: dict[str, dict[str, np.ndarray]] = {}
    for name in acts_first:
        a = _array("plot_activations", name, acts_first[name]).ravel()
        b = _array("plot_activations", name, acts_last[name]).ravel()
        if a.size == 0 or b.size == 0 or not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise ValueError(f"plot_activations: layer {name!r} is empty or not finite")
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        edges = np.histogram_bin_edges(a, bins, range=(lo, hi if hi > lo else lo + 1))
        out[name] = {"edges": edges, "first": None if only_last else np.histogram(a, edges)[0],
                     "last": np.histogram(b, edges)[0]}  # fmt: skip
    fig = _figure("plot_activations", (1 + 3 * len(out), 5.5))
    axes = fig.subplots(2, len(out), squeeze=False)
    for j, (name, h) in enumerate(out.items()):
        for i, (key, label) in enumerate(zip(("first", "last"), labels, strict=True)):
            ax = axes[i, j]
            if h[key] is None:
                ax.axis("off")
                continue
            ax.stairs(h[key], h["edges"], fill=True, color=f"C{i}")
            ax.set_title(f"{name} ({label})", fontsize=9)
            ax.set_yscale("log")  # ReLU outputs pile up at exactly 0
        axes[1, j].set_xlabel("activation")
    _save("plot_activations", fig, path)
    return out
