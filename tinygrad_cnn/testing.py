"""Gradient checking for any function built from Tensor ops — including your own ops.

``gradcheck`` compares backward against float64 central differences element by element
(thorough; for small inputs). ``check_vjp`` checks ``<u, J v> == <J^T u, v>`` for random u
and v with two evaluations of the function, whatever its size (cheap; for real nets).

Example
-------
>>> import numpy as np
>>> from tinygrad_cnn import Tensor
>>> from tinygrad_cnn.testing import gradcheck
>>> x = Tensor(np.random.rand(3, 4) + 0.5, requires_grad=True)
>>> gradcheck(lambda t: (t * t).log(), x)
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .autograd import enable_grad
from .backprop import grad
from .tensor import Tensor

Fn = Callable[..., Tensor]


def _prepare(inputs: Sequence[Any]) -> tuple[list[Any], list[int]]:
    """Float64 leaf copies of the differentiable inputs; other inputs pass through."""
    prepared: list[Any] = []
    diff: list[int] = []
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad:
            prepared.append(Tensor(x.numpy().astype(np.float64), requires_grad=True, name=x.name))
            diff.append(i)
        else:
            prepared.append(x)
    if not diff:
        raise ValueError("gradcheck: no input requires grad; pass Tensors with requires_grad=True")
    return prepared, diff


def _label(inputs: Sequence[Any], i: int) -> str:
    name = getattr(inputs[i], "name", None)
    return f"input {i}" + (f" ({name!r})" if name else "")


def _analytic(fn: Fn, xs: list[Any], diff: list[int], u: np.ndarray | None, seed: int):
    """Run fn and backward with a random upstream gradient; return (u, grads)."""
    out = fn(*xs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    if out.dtype != np.float64:
        raise AssertionError(f"gradcheck: float64 inputs gave a {out.dtype} output")
    if u is None:
        u = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(u)
    grads = []
    for i in diff:
        g = xs[i].grad
        if g is None:
            g = np.zeros_like(xs[i].numpy())
        if g.shape != xs[i].shape or g.dtype != np.float64:
            raise AssertionError(
                f"gradcheck: gradient of {_label(xs, i)} has shape {g.shape} and dtype {g.dtype}, "
                f"expected {xs[i].shape} float64"
            )
        grads.append(g)
    return u, grads


def _project(fn: Fn, xs: list[Any], u: np.ndarray) -> float:
    """``<u, fn(xs)>`` at shifted inputs. Recorded like any call (not under ``no_grad``), so a
    function that uses ``grad`` inside (a gradient penalty) evaluates the same way here."""
    return float(np.vdot(u, fn(*xs).numpy()))


def _central(fn: Fn, xs: list[Any], u: np.ndarray, flat: np.ndarray, k: int, step: float) -> float:
    """d<u, fn(xs)>/d flat[k] by a central difference (``flat`` is a view of one input)."""
    orig = flat[k]
    flat[k] = orig + step
    fp = _project(fn, xs, u)
    flat[k] = orig - step
    fm = _project(fn, xs, u)
    flat[k] = orig
    return (fp - fm) / (2 * step)


def gradcheck(
    fn: Fn,
    *inputs: Any,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    seed: int = 0,
    _numeric: Fn | None = None,
) -> bool:
    """Check ``fn``'s backward against float64 central differences for every input needing grad.

    Parameters
    ----------
    fn : callable
        Takes the inputs (in order) and returns a Tensor of any shape.
    *inputs : Tensor or other
        Tensors with ``requires_grad=True`` are checked (as float64 copies); anything else
        (labels, constants) is passed to ``fn`` unchanged.
    eps, rtol, atol : float
        Step of the central difference and the ``allclose`` tolerances.
    seed : int
        Seed of the random upstream gradient ``u``; the check compares ``J^T u``.

    Returns
    -------
    True, or raises ``AssertionError`` naming the input, the worst index and both values.
    """
    xs, diff = _prepare(inputs)
    before = [x.numpy().copy() if isinstance(x, Tensor) else None for x in xs]
    u, grads = _analytic(fn, xs, diff, None, seed)
    for x, old in zip(xs, before, strict=True):
        if old is not None and not np.array_equal(x.numpy(), old, equal_nan=True):
            raise AssertionError("gradcheck: fn or its backward modified an input in place")
    for i, g in zip(diff, grads, strict=True):
        x = xs[i].numpy()
        numeric = np.empty_like(x)
        flat, nflat = x.reshape(-1), numeric.reshape(-1)
        f = _numeric or fn
        for k in range(flat.size):
            nflat[k] = _central(f, xs, u, flat, k, eps)
        bad = np.abs(g - numeric) > atol + rtol * np.abs(numeric)
        # A step that carries some ReLU input across 0 (or swaps a max-pool winner) anywhere
        # in fn adds an error that shrinks with the step; a wrong gradient does not. Measure
        # the disagreeing elements again with smaller steps before calling them wrong.
        gflat = g.reshape(-1)
        for k in np.flatnonzero(bad.reshape(-1)):
            for step in (eps / 10, eps / 100):
                value = _central(f, xs, u, flat, int(k), step)
                if abs(gflat[k] - value) < abs(gflat[k] - nflat[k]):
                    nflat[k] = value
        bad = np.abs(g - numeric) > atol + rtol * np.abs(numeric)
        if bad.any():
            err = np.abs(g - numeric) - rtol * np.abs(numeric)
            worst = np.unravel_index(int(np.argmax(err)), x.shape)
            raise AssertionError(
                f"gradcheck: gradient of {_label(xs, i)} (shape {x.shape}) is wrong at index "
                f"{tuple(int(j) for j in worst)}: backward gives {float(g[worst])!r}, finite "
                f"differences give {float(numeric[worst])!r} ({int(bad.sum())} of {x.size} "
                f"elements outside atol={atol}, rtol={rtol})"
            )
    return True


def vjp_error(fn: Fn, *inputs: Any, eps: float = 1e-6, seed: int = 0) -> float:
    """Relative error of the dot-product test ``<u, J v>`` vs ``<J^T u, v>``, in float64.

    Costs one backward and two extra forward evaluations, whatever the input size. When the
    error is large it is measured again with steps ``eps/10`` and ``eps/100`` and the smallest
    is returned: finite differences that cross a kink (ReLU at 0, a max-pool tie) improve with
    a smaller step, a wrong gradient does not.
    """
    xs, diff = _prepare(inputs)
    u, grads = _analytic(fn, xs, diff, None, seed)
    rng = np.random.default_rng([seed, 1])  # independent of u's stream
    vs = [rng.standard_normal(xs[i].shape) for i in diff]
    rhs = float(sum(np.vdot(g, v) for g, v in zip(grads, vs, strict=True)))
    base = [xs[i].numpy() for i in diff]

    def directional(step: float) -> float:
        """``<u, J v>`` by a central difference of the given step."""
        values = []
        for sign in (1.0, -1.0):
            for i, x0, v in zip(diff, base, vs, strict=True):
                xs[i] = Tensor(x0 + sign * step * v)
            values.append(_project(fn, xs, u))
        return (values[0] - values[1]) / (2 * step)

    # A step that carries a ReLU input across 0 or swaps a max-pool winner adds an error that
    # shrinks with the step, while a wrong backward does not: keep the best of three steps.
    best = np.inf
    for step in (eps, eps / 10, eps / 100):
        lhs = directional(step)
        best = min(best, abs(lhs - rhs) / max(abs(lhs), abs(rhs), 1e-12))
        if best <= 1e-6:
            break
    return float(best)


def check_vjp(fn: Fn, *inputs: Any, eps: float = 1e-6, rtol: float = 1e-5, seed: int = 0) -> float:
    """Dot-product gradient test: assert ``<u, J v> ≈ <J^T u, v>`` for random u, v.

    Cheap at realistic sizes (a whole net at batch size 100). Returns the relative error;
    raises ``AssertionError`` when it exceeds ``rtol``.
    """
    err = vjp_error(fn, *inputs, eps=eps, seed=seed)
    if not err <= rtol:
        raise AssertionError(
            f"check_vjp: <u, J v> and <J^T u, v> differ by a relative {err:.3e} (> rtol={rtol})"
        )
    return err


def _swap_parameters(module: Any, new: Sequence[Tensor]) -> list[tuple[Any, str, Any]]:
    """Put ``new`` tensors in place of the module's parameters; return what to restore."""
    swapped = []
    for (name, _), tensor in zip(module.named_parameters(), new, strict=True):
        owner = module
        *path, attr = name.split(".")
        for part in path:
            owner = getattr(owner, part)
        swapped.append((owner, attr, getattr(owner, attr)))
        object.__setattr__(owner, attr, tensor)
    return swapped


def module_gradcheck(module: Any, loss_fn: Callable[[], Tensor], **kwargs: Any) -> bool:
    """``gradcheck`` of ``loss_fn()`` with respect to every parameter of ``module``.

    The parameters are replaced by float64 copies while the check runs and restored after.
    Keep the model tiny: every parameter element costs two evaluations.

    Examples
    --------
    >>> net = SimpleConvNet((1, 6, 6), {"filter_num": 2, "filter_size": 3}, 4, 3)
    >>> module_gradcheck(net, lambda: net.loss(x, t))  # doctest: +SKIP
    True
    """
    params = [p for _, p in module.named_parameters()]

    def fn(*ps: Tensor) -> Tensor:
        swapped = _swap_parameters(module, ps)
        try:
            return loss_fn()
        finally:
            for owner, attr, old in swapped:
                object.__setattr__(owner, attr, old)

    return gradcheck(fn, *params, **kwargs)


__all__ = ["gradcheck", "gradgradcheck", "check_vjp", "vjp_error", "module_gradcheck"]


def _same_first_order(
    fn: Fn, xs: list[Any], diff: list[int], u: np.ndarray, rtol: float, atol: float
) -> None:
    """The gradients that ``create_graph=True`` computes (with each op's ``backward_graph``)
    must equal the first-order ones (``backward``) before second derivatives mean anything."""
    with enable_grad():
        plain = grad(fn(*xs), [xs[i] for i in diff], u, allow_unused=True)
        graph = grad(fn(*xs), [xs[i] for i in diff], u, create_graph=True, allow_unused=True)
    for i, a, b in zip(diff, plain, graph, strict=True):
        b = None if b is None else b.numpy()
        if a is None or b is None:
            if (a is None) != (b is None) and np.any((a if b is None else b) != 0):
                raise AssertionError(
                    f"gradgradcheck: only one path gives a gradient for {_label(xs, i)}"
                )
            continue
        if not np.allclose(a, b, rtol=rtol, atol=atol):
            k = np.unravel_index(int(np.argmax(np.abs(a - b))), a.shape)
            raise AssertionError(
                f"gradgradcheck: a backward_graph disagrees with its backward at first order: "
                f"the gradient of {_label(xs, i)} at index {tuple(int(j) for j in k)} is "
                f"{float(a[k])!r} from backward but {float(b[k])!r} with create_graph=True"
            )


def gradgradcheck(
    fn: Fn,
    *inputs: Any,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    seed: int = 0,
) -> bool:
    """Check second derivatives: the gradient of ``fn``'s gradient against central differences
    of the first derivative, in float64.

    With a random upstream gradient ``u`` and random second directions ``w_i``, the scalar
    ``s(x, u) = sum_i <w_i, d<u, fn(x)>/dx_i>`` is built with ``grad(..., create_graph=True)``
    and checked by ``gradcheck`` with respect to every input that requires grad and to ``u``
    (so both the part that depends on ``x`` and the part linear in ``u`` are covered).

    Returns True, or raises ``AssertionError`` naming the input, the worst index and both
    values (input ``len(inputs)`` is ``u``).
    """
    xs, diff = _prepare(inputs)
    with enable_grad():
        y = fn(*xs)
    if not isinstance(y, Tensor):
        raise TypeError(f"gradgradcheck: fn must return a Tensor, got {type(y).__name__}")
    rng = np.random.default_rng([seed, 2])
    u = Tensor(rng.standard_normal(y.shape), requires_grad=True)
    ws = [rng.standard_normal(xs[i].shape) for i in diff]
    _same_first_order(fn, xs, diff, u.numpy(), rtol, atol)

    def first_derivative(*args: Any, graph: bool = True) -> Tensor:
        # gradcheck differentiates this with graph=True (the create_graph path under test) and
        # evaluates it at shifted points with graph=False (the first-order backward, which
        # gradcheck has proven), so a backward_graph that disagrees with backward fails.
        *given, uu = args
        with enable_grad():
            out = fn(*given)
            gs = grad(out, [given[i] for i in diff], uu, create_graph=graph, allow_unused=True)
        if all(g is None for g in gs):
            raise ValueError("gradgradcheck: fn does not depend on any input that requires grad")
        if not graph:
            value = sum(float(np.vdot(g, w)) for g, w in zip(gs, ws, strict=True) if g is not None)
            return Tensor(np.array(value, np.float64))
        total = None
        for g, w in zip(gs, ws, strict=True):
            if g is not None:
                total = (g * w).sum() if total is None else total + (g * w).sum()
        return total

    try:
        return gradcheck(
            first_derivative, *xs, u, eps=eps, rtol=rtol, atol=atol, seed=seed,
            _numeric=lambda *args: first_derivative(*args, graph=False),
        )  # fmt: skip
    except AssertionError as e:
        where = (
            str(e)
            .removeprefix("gradcheck: ")
            .replace(f"input {len(xs)} ", f"input {len(xs)} (the upstream gradient u) ")
        )
        raise AssertionError(f"gradgradcheck: second derivative wrong: {where}") from None


def __getattr__(name: str) -> Any:
    """``testing.check_layer`` / ``testing.check_network``: the checks for the book's own
    layers and networks live in ``tinygrad_cnn.book``."""
    if name in ("check_layer", "check_network"):
        from . import book

        return getattr(book, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
