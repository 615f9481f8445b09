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
    layer_kinks,
    param_pairs,
    windows_of,
)
from .bookdiag import CATALOGUE, Evidence, diagnose
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
    """Central, left and right differences of ``f`` at ``a.flat[idx]`` (``a`` is shifted in
    place and restored), and the rounding noise of each."""
    f0 = f()
    out = np.empty((4, len(idx)))
    flat = a.reshape(-1)  # a view: a is contiguous (a float64 copy)
    for j, k in enumerate(idx):
        orig = flat[k]
        flat[k] = orig + eps
        fp = f()
        flat[k] = orig - eps
        fm = f()
        flat[k] = orig
        noise = 16 * np.finfo(np.float64).eps * (abs(fp) + abs(fm) + abs(f0)) / eps
        out[:, j] = (fp - fm) / (2 * eps), (f0 - fm) / eps, (fp - f0) / eps, noise
    return out


def _sample(size: int, limit: int, rng: np.random.Generator, held: np.ndarray | None):
    pool = np.flatnonzero(~held.reshape(-1)) if held is not None else np.arange(size)
    return pool if len(pool) <= limit else np.sort(rng.choice(pool, limit, replace=False))


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
        error = float(err.max(initial=0.0) / max(scale, float(np.abs(a).max(initial=0.0))))
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

        def run(xs: list[np.ndarray], dout: Any = None) -> tuple[Any, Any, Any]:
            # Finite differences start from a shallow copy (fast); backward from a deep one.
            lay, y = (copy.deepcopy(base) if dout is not None else copy.copy(base)), None
            try:
                for xi in xs:  # an earlier forward first, when probing for a stale cache
                    reseed()
                    y = _forward(lay, xi.copy(), t, loss, train_flg)
                if dout is None:
                    return lay, y, None
                before = set(vars(lay))
                return lay, y, (_backward(lay, dout, loss), set(vars(lay)) - before)
            except Exception as e:
                raise LayerError(f"{who}: the layer raised {type(e).__name__}: {e}") from e

        _, y, _ = run([x64])
        u = np.float64(1.0) if loss else rng.standard_normal(np.shape(y))
        fresh, _, (dx0, _) = run([x64], u)
        probe = rng.standard_normal(x.shape) * (float(x64.std()) or 1.0) + float(x64.mean())
        got, _, (dx, new_attrs) = run([probe, x64], u)

        def f() -> float:
            return float(np.vdot(u, run([x64])[1]))

        held = layer_kinks(base, x64, 10 * eps)
        ctx = {"dout": None if loss else u, "batch": int(x.shape[0]), "windows": windows_of(base)}
        idx = _sample(x.size, max_elements, rng, held)
        rows = [
            _row(
                lname,
                "dx",
                "x",
                x64,
                dx,
                dx0,
                _differences(f, x64, idx, eps),
                idx,
                rtol,
                atol,
                **ctx,
            )
        ]
        for p, g in pairs.items():
            arr = getattr(base, p)
            idx = _sample(arr.size, max_elements, rng, None)
            hint = tuple(sorted(a for a in new_attrs if a.lower() == g.lower()))
            rows.append(
                _row(
                    lname,
                    g,
                    p,
                    arr,
                    getattr(got, g, None),
                    getattr(fresh, g, None),
                    _differences(f, arr, idx, eps),
                    idx,
                    rtol,
                    atol,
                    new_attrs=hint,
                    **ctx,
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
    the forward pass, and on ``last_layer``. ``report.first_wrong`` names the first wrong layer.
    The book's SimpleConvNet on 10 MNIST images takes about a second.
    """
    who = f"check_network({type(network).__name__})"
    params, _ = _network_parts(network, who)
    start = time.perf_counter()
    net = _float64_copy(network, [a for a in params.values() if isinstance(a, np.ndarray)], who)
    x64, t = np.array(_as_array(x, who, "x"), np.float64, order="C"), np.asarray(t)
    rng = np.random.default_rng([seed, 0xB00C])
    flag = {"train_flg": train_flg} if _takes(net.loss, "train_flg") else {}
    with _random_kept(seed) as reseed:

        def f() -> float:
            reseed()
            return float(net.loss(x64, t, **flag))

        reseed()
        grads = net.gradient(x64, t)
        grads = grads if isinstance(grads, Mapping) else {}
        rows = []
        for key, p in net.params.items():
            idx = _sample(p.size, samples, rng, None)
            got = grads.get(key)
            got = np.array(got, dtype=np.float64) if isinstance(got, np.ndarray) else got
            rows.append(
                _row(
                    "network",
                    key,
                    key,
                    p,
                    got,
                    None,
                    _differences(f, p, idx, eps),
                    idx,
                    rtol,
                    atol,
                    batch=len(x64),
                )
            )
        reports, h = [], x64
        options = {"eps": eps, "rtol": rtol, "atol": atol, "seed": seed, "train_flg": train_flg}
        for lname, layer in net.layers.items():
            reports.append(check_layer(layer, h, name=lname, max_elements=max_elements, **options))
            reseed()
            h = _forward(layer, h, None, False, train_flg)
        last = getattr(net, "last_layer", None)
        if last is not None:
            reports.append(check_layer(last, h, t, name="last_layer", **options))
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
