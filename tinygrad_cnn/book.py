"""For readers of *Deep Learning from Scratch*: check your own layers, and use them in our graphs.

A book-style layer has ``forward(x)`` and ``backward(dout)`` on NumPy arrays and stores its
parameter gradients as ``dW``/``db`` (``dgamma``/``dbeta``); a loss layer has
``forward(x, t)`` and ``backward(dout=1)``. A book-style network has ``params`` (a dict),
``layers`` (an ordered dict), ``last_layer``, ``loss(x, t)`` and ``gradient(x, t)``.

>>> report = check_layer(Affine(W, b), x)      # float64, central differences, random dout
>>> print(report)                              # one row per gradient, with a diagnosis
>>> check_network(net, x[:10], t[:10]).first_wrong
>>> y = as_function(Relu())(Tensor(x))         # an op of our graph: drawn, audited

The checks work on float64 deep copies of your objects and never modify them. Every call of
your ``forward`` starts from the same state (a fresh copy, the same NumPy global random state,
so a dropout mask is held fixed), and every ``backward`` gets its own copy of ``dout``.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np

from .bookbridge import (
    BOOK_PARAMS,
    BookLayer,
    LayerError,
    _backward,
    _forward,
    _takes,
    as_function,
    is_loss_layer,
    layer_error,
    layer_kind,
    layer_kinks,
    param_pairs,
    windows_of,
)
from .bookdiag import CATALOGUE, Diagnosis, Evidence, diagnose, overlap_counts
from .bookreport import GradientRow, LayerReport, NetworkReport
from .tensor import Tensor

__all__ = [
    "BOOK_PARAMS",
    "CATALOGUE",
    "BookLayer",
    "LayerError",
    "LayerReport",
    "NetworkReport",
    "as_function",
    "check_layer",
    "check_network",
    "is_loss_layer",
    "layer_kinks",
]


@contextmanager
def _random_kept(seed: int) -> Iterator[Callable[[], None]]:
    """Yield a function that reseeds NumPy's global RNG; its state is restored afterwards.

    BLAS runs on one thread inside: the checks make thousands of small products, which
    threads only slow down (10x on a loaded 2-core machine).
    """
    state = np.random.get_state()  # noqa: NPY002 (the book's global RNG)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # a dependency; without it BLAS keeps its threads
        limit: Any = nullcontext()
    else:
        limit = threadpool_limits(limits=1, user_api="blas")
    try:
        with limit:
            yield lambda: np.random.seed(seed)  # noqa: NPY002 (the book's global RNG)
    finally:
        np.random.set_state(state)  # noqa: NPY002 (the book's global RNG)


def _float64_copy(obj: Any, arrays: Iterable[np.ndarray], who: str) -> Any:
    """A deep copy of ``obj`` in which every array of ``arrays`` (wherever it is referenced,
    e.g. in both ``params`` and a layer) is one float64 copy."""
    memo = {id(a): np.array(a, np.float64, order="C") for a in arrays if a.dtype.kind == "f"}
    try:
        return copy.deepcopy(obj, memo)
    except Exception as e:
        raise TypeError(f"{who}: cannot copy {type(obj).__name__} to check it ({e})") from e


def _as_array(x: Any, who: str, what: str) -> np.ndarray:
    a = np.asarray(x.numpy() if isinstance(x, Tensor) else x)
    if a.dtype.kind not in "fiu" or a.ndim == 0:
        raise TypeError(f"{who}: {what} must be a numeric array, got {a.dtype} shape {a.shape}")
    return a


def _differences(f: Callable[[], float], a: np.ndarray, idx: np.ndarray, eps: float):
    """Central differences of ``f`` at ``a.flat[idx]`` (``a`` is shifted in place and
    restored), the band of one-sided differences and the rounding noise of each.

    Where the left and right differences disagree (a kink), they are taken again with a step
    ``eps / 10`` and the band spans all four: other kinks within ``eps`` (ReLU inputs just
    below 0 when a bias moves a whole channel) bend the one-sided differences at ``eps``.
    """
    f0 = f()
    out = np.empty((4, len(idx)))
    flat = a.reshape(-1)  # a view: a is contiguous (a float64 copy)

    def at(k: int, value: float) -> float:
        flat[k] = value
        try:
            return f()
        finally:
            flat[k] = orig

    for j, k in enumerate(idx):
        orig = flat[k]
        fp, fm = at(k, orig + eps), at(k, orig - eps)
        noise = 16 * np.finfo(np.float64).eps * (abs(fp) + abs(fm) + abs(f0)) / eps
        sides = [(f0 - fm) / eps, (fp - f0) / eps]
        if abs(sides[0] - sides[1]) > 1e-3 * max(map(abs, sides)) + noise:
            h = eps / 10
            sides += [(f0 - at(k, orig - h)) / h, (at(k, orig + h) - f0) / h]
            noise *= 10
        out[:, j] = (fp - fm) / (2 * eps), min(sides), max(sides), noise
    return out


def _sample(
    size: int,
    limit: int,
    rng: np.random.Generator,
    held: np.ndarray | None,
    rare: np.ndarray | None = None,
) -> np.ndarray:
    """Up to ``limit`` flat indices, none ``held``; half of them (if there are that many)
    among the ``rare`` elements, so a pattern told apart by them is seen when sampling."""
    free = ~held.reshape(-1) if held is not None else np.ones(size, bool)
    pool = np.flatnonzero(free)
    if len(pool) <= limit:
        return pool
    if rare is None:
        return np.sort(rng.choice(pool, limit, replace=False))
    few = np.flatnonzero(free & rare.reshape(-1))
    few = few if len(few) <= limit // 2 else rng.choice(few, limit // 2, replace=False)
    rest = np.setdiff1d(pool, few)
    return np.sort(np.concatenate([few, rng.choice(rest, limit - len(few), replace=False)]))


def _single_windows(shape: tuple[int, ...], windows: Any) -> np.ndarray | None:
    """Pixels of an (N, C, H, W) input covered by at most one window (rare where they overlap)."""
    if windows is None or len(shape) != 4:
        return None
    return np.broadcast_to(overlap_counts(shape, windows) <= 1, shape)


def _row(
    layer: str,
    name: str,
    param: str,
    target: np.ndarray,
    got: Any,
    fresh: Any,
    diffs,
    idx: np.ndarray,
    rtol: float,
    atol: float,
    **context: Any,
) -> GradientRow:
    numeric = np.full(target.shape, np.nan)
    numeric.reshape(-1)[idx] = diffs[0]
    ok = np.ones(target.shape, bool)
    error, worst, a_val, n_val, held = float("nan"), None, float("nan"), float("nan"), 0
    fits = isinstance(got, np.ndarray) and got.shape == target.shape
    if fits:
        central, left, right, noise = diffs
        a = got.reshape(-1)[idx].astype(np.float64)
        scale = float(np.abs(central).max(initial=0.0)) or 1.0
        tol = atol * scale + rtol * np.abs(central) + noise
        near = np.abs(a - central) <= tol
        kink = ~near & (a >= np.minimum(left, right) - tol) & (a <= np.maximum(left, right) + tol)
        ok.reshape(-1)[idx] = near | kink
        held = int(kink.sum())
        err = np.where(kink, 0.0, np.abs(a - central))
        big = max(float(np.abs(central).max(initial=0.0)), float(np.abs(a).max(initial=0.0)))
        error = float(err.max(initial=0.0) / (big or 1.0))  # 1.0 where the numeric one is 0
        j = int(np.argmax(err - tol)) if len(idx) else 0
        if len(idx):
            worst = tuple(int(i) for i in np.unravel_index(idx[j], target.shape))
            a_val, n_val = float(a[j]), float(central[j])
    ev = Evidence(name, param, target.shape, got, fresh, numeric, ok, **context)
    good = fits and bool(ok.all())
    return GradientRow(
        layer,
        name,
        tuple(target.shape),
        good,
        error,
        worst,
        a_val,
        n_val,
        len(idx),
        held,
        None if good else diagnose(ev),
    )


def check_layer(
    layer: Any,
    x: Any,
    t: Any = None,
    *,
    params: Mapping[str, str] | None = None,
    train_flg: bool = True,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    max_elements: int = 2048,
    seed: int = 0,
    name: str | None = None,
) -> LayerReport:
    """Check a book-style layer's ``dx`` and parameter gradients against central differences.

    Parameters
    ----------
    layer : object with ``forward``/``backward``
        A loss layer (``forward(x, t)``) is checked with ``dout=1``, others with a random dout.
    x : array (N, ...)
        The input; ``t`` the labels for a loss layer.
    params : dict, optional
        Parameter -> gradient attribute names; default :data:`BOOK_PARAMS` found on the layer.
    train_flg : bool
        Passed to a ``forward`` that takes it (Dropout, BatchNormalization).
    eps, rtol, atol : float
        Step and tolerances: element ok when ``|a - n| <= atol*max|n| + rtol*|n|`` (plus the
        rounding noise), or when ``a`` lies between the left and right differences (a kink).
    max_elements : int
        Arrays larger than this are checked at that many random elements.

    Returns
    -------
    LayerReport
        ``.ok``, ``.rows`` (dx first, then each parameter), ``print`` for the table.
    """
    options = {"eps": eps, "rtol": rtol, "atol": atol, "max_elements": max_elements}
    return _check(layer, None, x, t, params, train_flg, seed, name, **options)


def _check(
    layer: Any,
    primed: Any,
    x: Any,
    t: Any,
    params: Mapping[str, str] | None,
    train_flg: bool,
    seed: int,
    name: str | None,
    *,
    eps: float,
    rtol: float,
    atol: float,
    max_elements: int,
) -> LayerReport:
    """``check_layer``; ``primed`` is the same layer after a forward on other data (its caches
    may be stale), or None to make it here with a forward on random data."""
    lname = name or type(layer).__name__
    who = f"check_layer({lname})"
    loss = is_loss_layer(layer)
    x = _as_array(x, who, "x")
    if loss and t is None:
        raise ValueError(f"{who}: forward takes (x, t); pass the labels t")
    t = None if t is None else np.asarray(t)
    pairs = param_pairs(layer, params)
    base = _float64_copy(layer, [getattr(layer, p) for p in pairs], who)
    # A stream of its own: a dout equal to x (same seed) would hide a mask taken from dout.
    x64, rng = np.array(x, np.float64, order="C"), np.random.default_rng([seed, 0xB00C])

    with _random_kept(seed) as reseed:

        def run(xs: list[np.ndarray], dout: Any = None, start: Any = base) -> tuple[Any, ...]:
            # Finite differences start from a shallow copy (fast); backward from a deep one.
            lay, y = (copy.deepcopy(start) if dout is not None else copy.copy(start)), None
            try:
                for xi in xs:  # an earlier forward first, when probing for a stale cache
                    reseed()
                    y = _forward(lay, xi.copy(), t, loss, train_flg)
            except Exception as e:
                raise layer_error(who, "the layer's forward", e, "forward") from e
            if dout is None:
                return lay, y, None
            before = set(vars(lay))
            try:
                dx = _backward(lay, dout, loss)
            except Exception as e:
                raise layer_error(who, "the layer's backward", e, "backward") from e
            return lay, y, (dx, set(vars(lay)) - before)

        _, y, _ = run([x64])
        u = np.float64(1.0) if loss else rng.standard_normal(np.shape(y))
        fresh, _, (dx0, _) = run([x64], u)
        probe = rng.standard_normal(x.shape) * (float(x64.std()) or 1.0) + float(x64.mean())
        if primed is None:
            got, _, (dx, new_attrs) = run([probe, x64], u)
        else:
            got, _, (dx, new_attrs) = run([x64], u, primed)

        def f() -> float:
            return float(np.vdot(u, run([x64])[1]))

        held = layer_kinks(base, x64, 10 * eps)
        windows = windows_of(base)
        ctx = {
            "dout": None if loss else u,
            "batch": int(x.shape[0]),
            "windows": windows,
            "kind": layer_kind(base),
        }
        idx = _sample(x.size, max_elements, rng, held, _single_windows(x.shape, windows))
        diffs = _differences(f, x64, idx, eps)
        rows = [_row(lname, "dx", "x", x64, dx, dx0, diffs, idx, rtol, atol, **ctx)]
        for p, g in pairs.items():
            arr = getattr(base, p)
            idx = _sample(arr.size, max_elements, rng, None)
            hint = tuple(sorted(a for a in new_attrs if a.lower() == g.lower()))
            diffs = _differences(f, arr, idx, eps)
            got_g, fresh_g = getattr(got, g, None), getattr(fresh, g, None)
            rows.append(
                _row(
                    lname, g, p, arr, got_g, fresh_g, diffs, idx, rtol, atol, new_attrs=hint, **ctx
                )
            )
    header = (
        f"{who}: float64 central differences (eps={eps:g}), "
        f"{'dout=1 (loss layer)' if loss else 'random dout'}, input {x.shape}"
    )

    def draw() -> Any:
        from .bookreport import draw_layers

        return draw_layers([(lname, copy.deepcopy(base), rows)], x64, t)

    return LayerReport(lname, rows, header, draw)


_NETWORK_ATTRS = ("params", "layers", "loss", "gradient", "last_layer")


def _network_parts(network: Any, who: str) -> tuple[Mapping[str, np.ndarray], Mapping[str, Any]]:
    params, layers = getattr(network, "params", None), getattr(network, "layers", None)
    missing = [a for a in ("loss", "gradient") if not callable(getattr(network, a, None))]
    if not isinstance(params, Mapping) or not isinstance(layers, Mapping) or missing:
        raise TypeError(
            f"{who}: a book-style network needs params (a dict), layers (an ordered "
            f"dict), loss(x, t) and gradient(x, t); {type(network).__name__} has "
            f"{[a for a in _NETWORK_ATTRS if hasattr(network, a)]}"
        )
    return params, layers


def check_network(
    network: Any,
    x: Any,
    t: Any,
    *,
    samples: int = 24,
    max_elements: int = 64,
    train_flg: bool = True,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    seed: int = 0,
) -> NetworkReport:
    """Check a book-style network: ``gradient`` vs differences of ``loss``, then each layer.

    Every parameter's analytic gradient (``network.gradient(x, t)[key]``) is compared with
    central differences of ``network.loss`` at ``samples`` random elements; then
    :func:`check_layer` runs on each of ``network.layers`` in order, on the input it gets in
    the forward pass, and on ``last_layer``. Both checks run on a copy of the network that
    first ran forward on other data, so a layer that keeps a stale cache is caught.
    ``report.first_wrong`` names the first wrong layer. The book's SimpleConvNet on 10 MNIST
    images takes a few seconds.
    """
    who = f"check_network({type(network).__name__})"
    params, _ = _network_parts(network, who)
    arrays = [a for a in params.values() if isinstance(a, np.ndarray)]
    start = time.perf_counter()
    net, primed = _float64_copy(network, arrays, who), _float64_copy(network, arrays, who)
    x64, t = np.array(_as_array(x, who, "x"), np.float64, order="C"), np.asarray(t)
    rng = np.random.default_rng([seed, 0xB00C])
    flag = {"train_flg": train_flg} if _takes(net.loss, "train_flg") else {}
    with _random_kept(seed) as reseed:

        def call(obj: Any, method: str, data: np.ndarray) -> Any:
            reseed()
            try:
                return obj.loss(data, t, **flag) if method == "loss" else obj.gradient(data, t)
            except Exception as e:
                phase = "forward" if method == "loss" else "backward"
                raise layer_error(who, f"network.{method}", e, phase) from e

        def f() -> float:
            return float(call(net, "loss", x64))

        f()  # a forward that raises is reported as such, before backward runs
        fresh = call(net, "gradient", x64)
        try:  # forward on other data first: caches that are not refreshed stay stale
            call(primed, "loss", rng.standard_normal(x64.shape) * (x64.std() or 1) + x64.mean())
        except LayerError:
            primed = copy.deepcopy(net)  # the network cannot take that data: no probe
        grads, fresh = call(primed, "gradient", x64), _mapping(fresh)
        grads, rows = _mapping(grads), []
        for key, p in net.params.items():
            idx = _sample(p.size, samples, rng, None)
            got = grads.get(key)
            got = np.array(got, dtype=np.float64) if isinstance(got, np.ndarray) else got
            diffs = _differences(f, p, idx, eps)
            row = _row("network", key, key, p, got, fresh.get(key), diffs, idx, rtol, atol,
                       batch=len(x64), network=True)  # fmt: skip
            rows.append(_swapped(row, got, net.params))
        reports, h = [], x64
        options = {"eps": eps, "rtol": rtol, "atol": atol, "max_elements": max_elements}
        for lname, layer in net.layers.items():
            twin = primed.layers[lname]
            reports.append(_check(layer, twin, h, None, None, train_flg, seed, lname, **options))
            reseed()
            h = _forward(layer, h, None, False, train_flg)
        last = getattr(net, "last_layer", None)
        if last is not None:
            twin = primed.last_layer
            reports.append(_check(last, twin, h, t, None, train_flg, seed, "last_layer", **options))
    rows = _refer_to_layers(rows, net, reports)
    seconds = time.perf_counter() - start
    header = (
        f"{who}: input {x64.shape}, {samples} sampled elements per parameter, "
        f"float64 central differences (eps={eps:g})"
    )

    def draw() -> Any:
        from .bookreport import draw_layers

        layers = [
            (rep.layer, lay, rep.rows)
            for rep, lay in zip(
                reports, [*net.layers.values(), *([last] if last is not None else [])], strict=True
            )
        ]
        names = {id(a): k for k, a in net.params.items()}
        return draw_layers(layers, x64, t, names, rows)

    return NetworkReport(rows, reports, seconds, header, draw)


def _mapping(grads: Any) -> Mapping[str, Any]:
    return grads if isinstance(grads, Mapping) else {}


def _refer_to_layers(
    rows: list[GradientRow], net: Any, reports: list[LayerReport]
) -> list[GradientRow]:
    """A wrong parameter row takes the diagnosis of the layer gradient that belongs to the same
    array, when that layer's own check finds it wrong: the layer check sees the layer's dout,
    the network check only the loss (softmax-loss rows sum to 0, which hides a wrong axis)."""
    owner: dict[int, tuple[str, str]] = {}
    last = getattr(net, "last_layer", None)
    layers = [*net.layers.values(), *([last] if last is not None else [])]
    for rep, layer in zip(reports, layers, strict=True):
        for p, g in param_pairs(layer).items():
            owner.setdefault(id(getattr(layer, p)), (rep.layer, g))
    found = {(rep.layer, r.name): r for rep in reports for r in rep.rows}
    out = []
    for row in rows:
        lname, g = owner.get(id(net.params[row.name]), ("", ""))
        twin = found.get((lname, g))
        if not row.ok and twin is not None and twin.diagnosis is not None:
            d = twin.diagnosis
            why = f"{row.name} is {lname}.{g}, which its layer check finds wrong: {d.message}"
            row = dataclasses.replace(row, diagnosis=Diagnosis(d.code, why))
        out.append(row)
    return out


def _swapped(row: GradientRow, got: Any, params: Mapping[str, Any]) -> GradientRow:
    """Say so when a wrong-shaped gradient has another parameter's shape (keys swapped)."""
    if row.ok or not isinstance(got, np.ndarray) or got.shape == row.shape:
        return row
    owners = [k for k, a in params.items() if k != row.name and np.shape(a) == got.shape]
    if not owners:
        return row
    why = (
        f"{row.name} has {owners[0]}'s shape {got.shape} instead of {row.shape}: "
        f"keys swapped in gradient()? (grads['{row.name}'] must hold {row.name}'s gradient)"
    )
    return dataclasses.replace(row, diagnosis=Diagnosis("wrong-shape", why))
