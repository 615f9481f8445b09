"""Function transforms built on ``grad``: ``vjp``, ``jvp``, ``hvp``, ``jacobian``, ``hessian``.

Each takes a function of Tensors and the point to evaluate it at, like
``torch.autograd.functional``. The inputs are copied into fresh leaves, so nothing of yours is
touched, and the results are ndarrays (Tensors with a graph when ``create_graph=True``).

>>> import numpy as np
>>> f = lambda x: (x**4 - 2 * x**2).sum()
>>> x = np.array([2.0])
>>> jacobian(f, x)                       # 4x^3 - 4x = 24
array([24.])
>>> hessian(f, x)                        # 12x^2 - 4 = 44
array([[44.]])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .backprop import grad
from .tensor import Tensor

__all__ = ["vjp", "jvp", "hvp", "jacobian", "hessian"]

Fn = Callable[..., Tensor]


def _leaves(op: str, inputs: Any) -> tuple[tuple[Tensor, ...], bool]:
    """Fresh float leaves requiring grad, and whether ``inputs`` was a single value."""
    single = not isinstance(inputs, tuple | list)
    items = (inputs,) if single else tuple(inputs)
    leaves = []
    for i, x in enumerate(items):
        arr = x.numpy() if isinstance(x, Tensor) else np.asarray(x)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"{op}: input {i} must be numeric, got dtype {arr.dtype}")
        if arr.dtype.kind != "f":
            arr = arr.astype(np.float32)
        leaves.append(Tensor(arr.copy(), requires_grad=True))
    return tuple(leaves), single


def _call(op: str, fn: Fn, xs: tuple[Tensor, ...]) -> Tensor:
    out = fn(*xs)
    if not isinstance(out, Tensor):
        raise TypeError(f"{op}: fn must return a Tensor, got {type(out).__name__}")
    return out


def _values(gs: Sequence[Any], xs: tuple[Tensor, ...], create_graph: bool) -> list[Any]:
    """None (an input fn does not use) becomes zeros; ndarrays unless create_graph."""
    out = []
    for g, x in zip(gs, xs, strict=True):
        if g is None:
            g = np.zeros(x.shape, x.dtype)
            out.append(Tensor(g) if create_graph else g)
        else:
            out.append(g if create_graph or not isinstance(g, Tensor) else g.numpy())
    return out


def _pack(values: list[Any], single: bool) -> Any:
    return values[0] if single else tuple(values)


def vjp(fn: Fn, inputs: Any, v: Any = None, create_graph: bool = False) -> tuple[Any, Any]:
    """``(fn(inputs), vᵀ J)``: the vector-Jacobian product at ``inputs``.

    Parameters
    ----------
    fn : callable
        Takes one Tensor per input, returns a Tensor.
    inputs : array_like or tuple of array_like
    v : array_like, optional
        Shaped like the output (may be omitted for a scalar output).
    create_graph : bool
        Return Tensors carrying a graph, to differentiate again.
    """
    xs, single = _leaves("vjp", inputs)
    y = _call("vjp", fn, xs)
    gs = grad(y, xs, v, create_graph=create_graph, allow_unused=True)
    out = y if create_graph else y.numpy()
    return out, _pack(_values(gs, xs, create_graph), single)


def jvp(fn: Fn, inputs: Any, v: Any, create_graph: bool = False) -> tuple[Any, Any]:
    """``(fn(inputs), J v)``: the Jacobian-vector product, by the double-vjp trick.

    ``g(u) = Jᵀ u`` is linear in ``u``, so its own vjp with ``v`` is ``J v``. Costs two
    backward passes; needs every op on the path to support ``create_graph``.
    """
    xs, single = _leaves("jvp", inputs)
    vs = (v,) if single else tuple(v)
    if len(vs) != len(xs):
        raise ValueError(f"jvp: got {len(vs)} tangents for {len(xs)} inputs")
    for i, (x, t) in enumerate(zip(xs, vs, strict=True)):
        if np.shape(t) != x.shape:
            raise ValueError(f"jvp: tangent {i} has shape {np.shape(t)}, input {i} {x.shape}")
    y = _call("jvp", fn, xs)
    u = Tensor(np.zeros(y.shape, y.dtype), requires_grad=True)  # a dummy cotangent
    gs = grad(y, xs, u, create_graph=True, allow_unused=True)
    used = [
        (g, np.asarray(getattr(t, "_data", t), x.dtype)) for g, t, x in zip(gs, vs, xs, strict=True)
    ]
    used = [(g, t) for g, t in used if g is not None and g.requires_grad]
    if not used:
        jv = np.zeros(y.shape, y.dtype)
        return (y if create_graph else y.numpy()), (Tensor(jv) if create_graph else jv)
    (jv,) = grad([g for g, _ in used], u, [t for _, t in used], create_graph=create_graph,
                 allow_unused=True)  # fmt: skip
    if jv is None:
        jv = np.zeros(y.shape, y.dtype)
        jv = Tensor(jv) if create_graph else jv
    return (y if create_graph else y.numpy()), jv


def hvp(fn: Fn, inputs: Any, v: Any, create_graph: bool = False) -> tuple[Any, Any]:
    """``(fn(inputs), H v)`` for a scalar ``fn``: the Hessian-vector product (``vᵀ H``, which
    is the same for a twice continuously differentiable ``fn``)."""
    xs, single = _leaves("hvp", inputs)
    vs = (v,) if single else tuple(v)
    if len(vs) != len(xs):
        raise ValueError(f"hvp: got {len(vs)} vectors for {len(xs)} inputs")
    y = _call("hvp", fn, xs)
    if y.size != 1:
        raise ValueError(f"hvp: fn must return a scalar, got shape {y.shape}")
    gs = grad(y, xs, create_graph=True, allow_unused=True)
    dot = None  # <grad f, v>, whose gradient is H v
    for g, x, t in zip(gs, xs, vs, strict=True):
        if g is not None:
            term = (g * np.asarray(getattr(t, "_data", t), x.dtype)).sum()
            dot = term if dot is None else dot + term
    if dot is None or not dot.requires_grad:
        hv = [np.zeros(x.shape, x.dtype) for x in xs]
        hv = [Tensor(h) for h in hv] if create_graph else hv
    else:
        hv = _values(grad(dot, xs, create_graph=create_graph, allow_unused=True), xs,
                     create_graph)  # fmt: skip
    return (y if create_graph else y.numpy()), _pack(list(hv), single)


def jacobian(fn: Fn, inputs: Any) -> Any:
    """The Jacobian of ``fn`` at ``inputs``, shape ``output.shape + input.shape`` (one per
    input). One backward pass per output element: for small outputs."""
    xs, single = _leaves("jacobian", inputs)
    y = _call("jacobian", fn, xs)
    jac = [np.zeros(y.shape + x.shape, x.dtype) for x in xs]
    for k in range(y.size):
        e = np.zeros(y.size, y.dtype)
        e[k] = 1
        gs = grad(y, xs, e.reshape(y.shape), retain_graph=True, allow_unused=True)
        for j, g in zip(jac, gs, strict=True):
            if g is not None:
                j.reshape(y.size, -1)[k] = np.asarray(g).reshape(-1)
    return _pack(jac, single)


def hessian(fn: Fn, inputs: Any) -> Any:
    """The Hessian of a scalar ``fn`` at one input: shape ``input.shape + input.shape``.
    One second backward pass per input element: for small inputs."""
    if isinstance(inputs, tuple | list):
        raise TypeError("hessian: pass one input (concatenate several into one array)")
    (x,), _ = _leaves("hessian", inputs)
    y = _call("hessian", fn, (x,))
    if y.size != 1:
        raise ValueError(f"hessian: fn must return a scalar, got shape {y.shape}")
    (g,) = grad(y, x, create_graph=True)
    h = np.zeros(x.shape + x.shape, x.dtype)
    if not g.requires_grad:  # the gradient does not depend on x: fn is affine
        return h
    for k in range(x.size):
        e = np.zeros(x.size, x.dtype)
        e[k] = 1
        (row,) = grad(g, x, e.reshape(x.shape), retain_graph=True, allow_unused=True)
        if row is not None:
            h.reshape(x.size, x.size)[k] = np.asarray(row).reshape(-1)
    return h
