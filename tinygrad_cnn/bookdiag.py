"""What is wrong with a gradient: a catalogue of typical bugs, told apart by the error's pattern.

``tinygrad_cnn.book.check_layer`` compares each gradient a book-style layer computes with
central differences and hands the two arrays (and the upstream gradient it used) to
:func:`diagnose`, which tries the patterns of :data:`CATALOGUE` in order and names the first
that fits. A pattern outside the catalogue is said to be unrecognised, with an error map.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["CATALOGUE", "Diagnosis", "Evidence", "diagnose", "error_map", "overlap_counts"]

#: Code -> what the bug is. Each entry is planted once in ``examples/book_layers/buggy.py``.
CATALOGUE: dict[str, str] = {
    "missing-gradient": "backward never stored the gradient (still None, or under another name)",
    "not-used": "the output does not depend on the parameter: the layer computes with a copy",
    "wrong-shape": "the gradient has the wrong shape (e.g. a reshape back to x's shape is missing)",
    "transposed": "weight gradient transposed, or a product taken in the wrong order",
    "bias-axis": "bias gradient summed over the wrong axis of dout",
    "stale-cache": "backward uses arrays cached by an earlier forward",
    "sign-flipped": "the gradient has the wrong sign",
    "batch-factor": "off by a factor equal to the batch size (a mean missing or doubled)",
    "constant-factor": "off by a constant factor (a scale missing in backward)",
    "first-sample-only": "only the first sample of the batch is right (dout[0] or x[0] used)",
    "window-overlap": "wrong exactly where windows overlap (col2im overwrites instead of adding)",
    "mask-inverted": "a ReLU/pooling mask is inverted: the gradient flows where it must not",
    "mask-wrong-array": "a mask or argmax is taken from the wrong array",
    "missing-mean": "dx off by the same amount in every sample: a mean term is missing "
    "(batch norm's - dmu / N)",
    "unrecognised": "a pattern outside the catalogue (see the error map)",
}


@dataclass(frozen=True)
class Diagnosis:
    """``code`` is a key of :data:`CATALOGUE`; ``message`` says it for this gradient."""

    code: str
    message: str


@dataclass
class Evidence:
    """What a pattern may look at, for one gradient ``name`` (``dx``, ``dW``...).

    ``numeric`` has the target's shape with NaN where no finite difference was taken;
    ``ok`` is False exactly at checked elements that failed. ``fresh`` is the gradient when
    forward ran once (no earlier forward), ``dout`` the upstream gradient backward got (None
    for a loss layer), ``windows`` ``(KH, KW, stride, pad)`` for a sliding-window layer,
    ``kind`` the layer's kind (``bookbridge.layer_kind``) for the wording, ``network`` True
    for a parameter of a network checked against ``network.loss``.
    """

    name: str
    param: str
    target_shape: tuple[int, ...]
    analytic: Any
    fresh: Any
    numeric: np.ndarray
    ok: np.ndarray
    dout: np.ndarray | None = None
    batch: int = 1
    windows: tuple[int, int, int, int] | None = None
    new_attrs: tuple[str, ...] = ()
    kind: str = ""
    network: bool = False

    @property
    def checked(self) -> np.ndarray:
        return ~np.isnan(self.numeric)


def _close(a: np.ndarray, b: np.ndarray, sel: np.ndarray | None = None) -> bool:
    """a ~ b where ``sel`` (both of the target's shape); loose enough for finite differences."""
    if a.shape != b.shape:
        return False
    if sel is not None:
        a, b = a[sel], b[sel]
    if a.size == 0:
        return False
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()), 1e-300)
    return bool(np.all(np.abs(a - b) <= 1e-4 * np.abs(b) + 1e-6 * scale))


def _axis_sums(dout: np.ndarray) -> list[tuple[tuple[int, ...], np.ndarray]]:
    """Every sum of ``dout`` over a non-empty, proper set of its axes."""
    return [
        (axes, dout.sum(axis=axes))
        for k in range(1, dout.ndim)
        for axes in itertools.combinations(range(dout.ndim), k)
    ]


def _bias_axis(ev: Evidence, a: np.ndarray) -> Diagnosis | None:
    if ev.dout is None or ev.dout.ndim < 2 or ev.name == "dx":
        return None
    sums, size = _axis_sums(ev.dout), int(np.prod(ev.target_shape))
    right = [
        ax
        for ax, s in sums
        if s.size == size and _close(s.reshape(ev.target_shape), ev.numeric, ev.checked)
    ]
    for axes, s in sums:  # flattened: the book's conv reshapes dout to (N*OH*OW, FN) first
        fits = s.size == a.size and np.allclose(a.reshape(-1), s.reshape(-1), 1e-6, 1e-9)
        if fits and axes not in right:
            should = f"over axes {right[0]}" if right else "over other axes"
            return Diagnosis(
                "bias-axis",
                f"{ev.name} is dout {ev.dout.shape} summed over axes {axes} (shape {a.shape}); "
                f"{ev.param}'s gradient is dout summed {should}, shape {ev.target_shape}",
            )
    return None


def _wrong_shape(ev: Evidence, a: np.ndarray) -> Diagnosis:
    target, sel = ev.target_shape, ev.checked
    if a.ndim == 2 and a.T.shape == target and _close(a.T, ev.numeric, sel):
        return Diagnosis(
            "transposed",
            f"{ev.name} has shape {a.shape}, the transpose of {ev.param}'s {target}, and its "
            f"transpose is right: the product is in the wrong order (x.T @ dout gives {target})",
        )
    found = _bias_axis(ev, a)
    if found is not None:
        return found
    if a.size == int(np.prod(target)) and _close(a.reshape(target), ev.numeric, sel):
        return Diagnosis(
            "wrong-shape",
            f"{ev.name} has shape {a.shape} but {ev.param} has {target}; the values are right: "
            f"reshape it back (e.g. dx.reshape(*self.original_x_shape))",
        )
    return Diagnosis("wrong-shape", f"{ev.name} has shape {a.shape}, expected {target}")


def _not_used(ev: Evidence, a: np.ndarray) -> Diagnosis | None:
    """The numeric gradient is exactly zero at every checked element, the analytic one not."""
    sel = ev.checked
    if ev.name == "dx" or not sel.any() or np.any(ev.numeric[sel]) or not np.any(a[sel]):
        return None
    if ev.network:
        return Diagnosis(
            "not-used",
            f"the loss does not depend on network.params['{ev.param}'] (numeric gradient 0 "
            f"everywhere) but {ev.name} is not 0: the layer does not use "
            f"network.params['{ev.param}'] - a copy (params['{ev.param}'].copy())?",
        )
    return Diagnosis(
        "not-used",
        f"the output does not depend on {ev.param} (numeric gradient 0 everywhere) but "
        f"{ev.name} is not 0: forward computes with another array than self.{ev.param} - a copy?",
    )


def _factor(ev: Evidence, a: np.ndarray) -> Diagnosis | None:
    sel = ev.checked
    n = ev.numeric[sel]
    if not np.any(n):
        return None
    c = float(np.vdot(a[sel], n) / np.vdot(n, n))
    if abs(c - 1) < 1e-3 or abs(c) < 1e-12 or not _close(a, c * np.nan_to_num(ev.numeric), sel):
        return None
    b = ev.batch  # a batch of 2 is not told apart from a factor 2 or 0.5
    if b > 2 and abs(c - b) < 1e-3 * b:
        return Diagnosis(
            "batch-factor",
            f"{ev.name} is {c:.6g} times too large, the batch size "
            f"{b}: the mean over the batch is missing (divide by batch_size)",
        )
    if b > 2 and abs(c * b - 1) < 1e-3:
        return Diagnosis(
            "batch-factor",
            f"{ev.name} is {b} times too small, the batch size: "
            "the mean over the batch is taken twice",
        )
    return Diagnosis(
        "constant-factor",
        f"{ev.name} is off by a constant factor {c:.6g} "
        "(a scale used in forward is missing in backward, or applied twice)",
    )


def _first_sample(ev: Evidence, a: np.ndarray) -> Diagnosis | None:
    if ev.batch < 2 or len(ev.target_shape) < 2 or ev.target_shape[0] != ev.batch:
        return None
    bad = ~ev.ok.reshape(ev.batch, -1).all(axis=1)  # (N,): a sample with a wrong element
    if not bad[0] and bad[1:].all():
        others = "the other sample" if ev.batch == 2 else f"all {ev.batch - 1} others"
        return Diagnosis(
            "first-sample-only",
            f"{ev.name} is right for sample 0 only and wrong for {others}: backward uses "
            "dout[0] (or x[0]) where it needs the whole batch",
        )
    return None


def overlap_counts(shape: tuple[int, ...], windows: tuple[int, int, int, int]) -> np.ndarray:
    """How many windows cover each pixel of an (N, C, H, W) input: (H, W)."""
    KH, KW, S, P = windows

    def counts(size: int, k: int) -> np.ndarray:
        starts = np.arange(0, size + 2 * P - k + 1, S) - P  # window starts in input coordinates
        pos = np.arange(size)
        return ((pos >= starts[:, None]) & (pos < starts[:, None] + k)).sum(axis=0)

    return np.outer(counts(shape[2], KH), counts(shape[3], KW))


def _overlap(ev: Evidence, a: np.ndarray) -> Diagnosis | None:
    if ev.windows is None or ev.name != "dx" or len(ev.target_shape) != 4:
        return None
    many = np.broadcast_to(overlap_counts(ev.target_shape, ev.windows) > 1, ev.target_shape)
    wrong = ~ev.ok
    if wrong.any() and not (wrong & ~many).any() and (ev.checked & ~many).any():
        return Diagnosis(
            "window-overlap",
            f"{ev.name} is right where one window covers a pixel "
            f"and wrong at {int(wrong.sum())} of {int((ev.checked & many).sum())} "
            "checked pixels that several windows cover: col2im must add (+=) "
            "overlapping windows, not overwrite (=)",
        )
    return None


def _same_shape_transposed(ev: Evidence, a: np.ndarray) -> Diagnosis | None:
    sel = ev.checked
    if ev.name == "dx":
        return None
    for perm in ([1, 0], [0, 1, 3, 2]):
        if a.ndim == len(perm) and _close(a.transpose(perm), ev.numeric, sel):
            return Diagnosis(
                "transposed",
                f"{ev.name} equals the right gradient with axes "
                f"transposed {tuple(perm)}: a transpose is missing or extra",
            )
    if sel.all() and _close(np.sort(a, axis=None), np.sort(ev.numeric, axis=None)):
        return Diagnosis(
            "transposed",
            f"{ev.name} holds the right values in the wrong places: "
            "a reshape without the transpose before it (or the product in the "
            "wrong order)",
        )
    return None


def _mask(ev: Evidence, a: np.ndarray) -> Diagnosis | None:
    """Right or zero everywhere, and zero where it must not be: a mask of ``dx`` (a parameter
    gradient has no mask, and one that is all zero is more likely summed to nothing)."""
    sel = ev.checked & ~ev.ok
    if ev.name != "dx" or ev.network or not sel.any():
        return None
    an, n = a[ev.checked], ev.numeric[ev.checked]
    tiny = 1e-9 * max(float(np.abs(an).max()), float(np.abs(n).max()), 1e-300)
    za, zn = np.abs(an) <= tiny, np.abs(n) <= tiny
    same = np.abs(an - n) <= 1e-4 * np.abs(n) + tiny * 1e3
    if not np.all(same | za | zn) or not np.any(za != zn):
        return None
    wrong = f"{int((za != zn).sum())} of {an.size} checked"
    if not np.any(same & ~za):  # never agree where the gradient flows: exact complement
        why = {
            "pool": "each window's gradient goes to another element than its maximum "
            "(argmin instead of argmax, or the argmax of another array)",
            "dropout": "the mask is inverted (the dropped elements get the gradient)",
        }.get(ev.kind, "the mask is inverted (x > 0 vs x <= 0)")
        return Diagnosis(
            "mask-inverted",
            f"{ev.name} is nonzero exactly where the right gradient is zero and vice versa: {why}",
        )
    why = {
        "pool": "the argmax comes from the wrong array or is indexed in the wrong order",
        "dropout": "backward must reuse forward's mask (self.mask), not draw a new one",
    }.get(ev.kind, "the mask comes from the wrong array (dout instead of x, or the output)")
    return Diagnosis(
        "mask-wrong-array",
        f"{ev.name} passes the gradient through the wrong elements ({wrong}): {why}",
    )


def _centering(ev: Evidence, a: np.ndarray) -> Diagnosis | None:
    """``dx`` off by the same amount in every sample, per feature: a mean term is missing."""
    b = ev.batch
    if ev.name != "dx" or b < 2 or len(ev.target_shape) < 2 or ev.target_shape[0] != b:
        return None
    sel, n = ev.checked.reshape(b, -1), np.nan_to_num(ev.numeric).reshape(b, -1)  # (N, F)
    d = np.where(sel, a.reshape(b, -1) - n, 0.0)
    count = sel.sum(axis=0)  # (F,): checked samples of each feature
    offset = d.sum(axis=0) / np.maximum(count, 1)  # (F,)
    scale = max(float(np.abs(a.reshape(b, -1)[sel]).max()), float(np.abs(n).max()), 1e-300)
    tol = 1e-4 * np.abs(n) + 1e-6 * scale
    seen = (count >= 2) & (np.abs(offset) > 1e-4 * scale)  # an offset two samples agree on
    if not seen.any() or np.any((np.abs(d - offset) > tol) & sel):
        return None
    full = count == b
    sums = np.abs(n[:, full].sum(axis=0))  # the right dx summed over the batch
    if full.any() and np.all(sums <= 1e-4 * scale * b):
        worst = float(np.abs(b * offset[full]).max())
        return Diagnosis(
            "missing-mean",
            f"{ev.name} is off by the same amount in every sample (per feature); the right "
            f"{ev.name} sums to 0 over the batch (the output does not move when a feature "
            f"moves equally in every sample), yours sums to up to {worst:.3g}: a mean term is "
            "missing, e.g. batch norm's dx = dxc - dmu / N",
        )
    return Diagnosis(
        "missing-mean",
        f"{ev.name} is off by the same amount in every sample (per feature): a term "
        "averaged over the batch is missing or wrong (e.g. batch norm's - dmu / N)",
    )


def _near_miss(ev: Evidence, a: np.ndarray) -> Diagnosis | None:
    """Off by less than 1e-3 of its largest element (the row's rel.err) wherever it is wrong:
    no bug of the catalogue, so say what else makes it."""
    sel, bad = ev.checked, ev.checked & ~ev.ok  # elements held on a kink are not counted
    if not bad.any():
        return None
    scale = max(float(np.abs(a[sel]).max()), float(np.abs(ev.numeric[sel]).max()), 1e-300)
    if float(np.abs(a[bad] - ev.numeric[bad]).max()) > 1e-3 * scale:
        return None
    return Diagnosis(
        "unrecognised",
        f"{ev.name} is close to right everywhere (rel.err below 1e-3) but above the "
        "tolerance: no bug of the catalogue; a small constant in forward that backward leaves "
        "out (the book's log(y + 1e-7), where a probability is below about 0.01), float32 "
        "arithmetic, or a tolerance (rtol) too tight for this layer",
    )


def diagnose(ev: Evidence) -> Diagnosis:
    """Name the first catalogue pattern that fits a wrong gradient."""
    a = ev.analytic
    if not isinstance(a, np.ndarray):
        hint = f"; backward stored {', '.join(ev.new_attrs)} instead" if ev.new_attrs else ""
        return Diagnosis(
            "missing-gradient",
            f"{ev.name} is {type(a).__name__} after backward, "
            f"expected an array of shape {ev.target_shape}{hint}",
        )
    if a.shape != ev.target_shape:
        return _wrong_shape(ev, a)
    found = _not_used(ev, a)
    if found is not None:
        return found
    fresh = ev.fresh
    if isinstance(fresh, np.ndarray) and fresh.shape == a.shape and not np.array_equal(fresh, a):
        if _close(fresh, ev.numeric, ev.checked):
            return Diagnosis(
                "stale-cache",
                f"{ev.name} is right when forward runs once but wrong "
                "after an earlier forward on other data: backward reads arrays "
                "cached by that earlier call (store them on every forward)",
            )
    if _close(-a, ev.numeric, ev.checked):
        return Diagnosis("sign-flipped", f"{ev.name} has the right size and the wrong sign")
    patterns: list[Callable[[Evidence, np.ndarray], Diagnosis | None]] = [
        _near_miss,
        _factor,
        _first_sample,
        _overlap,
        _bias_axis,
        _same_shape_transposed,
        _mask,
        _centering,
    ]
    for pattern in patterns:
        found = pattern(ev, a)
        if found is not None:
            return found
    return Diagnosis(
        "unrecognised",
        f"{ev.name}: this pattern is not in the catalogue; where it is wrong:\n" + error_map(ev),
    )


def error_map(ev: Evidence, rows: int = 12, cols: int = 48) -> str:
    """Where a gradient is wrong: '.' right, 'X' wrong, ' ' not checked (last two axes)."""
    wrong, checked = ~ev.ok, ev.checked
    if wrong.ndim == 0:
        return "X" if wrong else "."
    w2 = (
        wrong.reshape(-1, wrong.shape[-1])
        if wrong.ndim <= 2
        else wrong.any(axis=tuple(range(wrong.ndim - 2)))
    )
    c2 = (
        checked.reshape(w2.shape)
        if checked.ndim <= 2
        else checked.any(axis=tuple(range(checked.ndim - 2)))
    )
    rh, rw = -(-w2.shape[0] // rows), -(-w2.shape[1] // cols)  # block sizes (ceil)
    lines = []
    for i in range(0, w2.shape[0], rh):
        wb, cb = w2[i : i + rh], c2[i : i + rh]
        line = "".join(
            "X" if wb[:, j : j + rw].any() else "." if cb[:, j : j + rw].any() else " "
            for j in range(0, w2.shape[1], rw)
        )
        lines.append("    " + line)
    if ev.batch > 1 and wrong.ndim >= 2 and wrong.shape[0] == ev.batch:
        bad = np.flatnonzero(wrong.reshape(ev.batch, -1).any(axis=1))
        lines.append(f"    wrong in samples {bad.tolist()[:20]} of {ev.batch}")
    return "\n".join(lines)
