"""The engine's back half: the backward walk behind ``Tensor.backward`` and ``grad``.

Gradients flow from the roots to the leaves in reverse topological order. Intermediate
gradients live in a local dict and are dropped as soon as they are used; leaves accumulate
into ``.grad`` (PyTorch semantics), and ``grad`` returns gradients without touching ``.grad``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .autograd import (
    Function,
    _state,
    enable_grad,
    no_grad,
    reduced_axes,
    unbroadcast,
    workspace,
)

if TYPE_CHECKING:
    from .tensor import Tensor


def toposort(root: Tensor) -> list[Tensor]:
    """Tensors of the graph ending at ``root``, inputs before outputs. Iterative, O(nodes)."""
    return toposort_many((root,))


def toposort_many(roots: tuple[Tensor, ...]) -> list[Tensor]:
    """Tensors of the graphs ending at ``roots``, inputs before outputs, each once."""
    order: list[Tensor] = []
    visited: set[int] = set()
    for root in roots:
        if id(root) in visited:
            continue
        visited.add(id(root))
        stack: list[tuple[Tensor, Iterator[Tensor]]] = [(root, _parents_iter(root))]
        while stack:
            node, it = stack[-1]
            for parent in it:
                if id(parent) not in visited:
                    visited.add(id(parent))
                    stack.append((parent, _parents_iter(parent)))
                    break
            else:
                stack.pop()
                order.append(node)
    return order


def _parents_iter(t: Tensor) -> Iterator[Tensor]:
    ctx = t._ctx
    return iter(ctx.parents) if ctx is not None else iter(())


def backward(
    root: Tensor, grad: Any = None, retain_graph: bool | None = None, create_graph: bool = False
) -> None:
    """Accumulate d(root)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

    Intermediate gradients live in a local dict and are dropped as soon as they are used
    (tensors that called ``retain_grad()`` keep theirs). The graph's saved arrays are freed
    afterwards unless ``retain_graph`` is True (it defaults to ``create_graph``). With
    ``create_graph=True`` the gradients are computed with Tensor ops, so they carry a graph of
    their own, and ``.grad`` holds a ``Tensor`` (see ``grad`` for details).
    """
    if not root.requires_grad:
        raise RuntimeError(
            "backward: this tensor does not require grad and has no graph; create inputs "
            "with requires_grad=True (and not under no_grad())"
        )
    keep = create_graph if retain_graph is None else bool(retain_graph)
    gy = _root_grad("backward", root, grad, create_graph)
    _run((root,), (gy,), keep, wanted=None, graph=create_graph)


def grad(
    outputs: Tensor | tuple[Tensor, ...] | list[Tensor],
    inputs: Tensor | tuple[Tensor, ...] | list[Tensor],
    grad_outputs: Any = None,
    *,
    retain_graph: bool | None = None,
    create_graph: bool = False,
    allow_unused: bool = False,
) -> tuple[Any, ...]:
    """Gradients of ``outputs`` with respect to ``inputs``, without touching any ``.grad``.

    Parameters
    ----------
    outputs : Tensor or sequence of Tensor
        What to differentiate; a non-scalar output needs its entry in ``grad_outputs``.
    inputs : Tensor or sequence of Tensor
        Leaves or intermediate tensors of the graph.
    grad_outputs : array or sequence, optional
        The upstream gradient of each output (ones for a scalar when None).
    retain_graph : bool, optional
        Keep the graph for another backward; defaults to ``create_graph``.
    create_graph : bool
        Compute the gradients with Tensor ops, so that they carry a graph of their own and
        can be differentiated again, to any order. Every built-in op supports it; a custom
        op supports it by defining ``backward_graph`` (otherwise differentiating through its
        gradient raises, naming the op).
    allow_unused : bool
        Return None for an input the outputs do not depend on, instead of raising.

    Returns
    -------
    tuple
        One gradient per input, shaped like it: ndarrays, or Tensors with ``create_graph``.

    Examples
    --------
    >>> x = Tensor([2.0], requires_grad=True)
    >>> (dy,) = grad(x**3, x, create_graph=True)   # 3 x^2 = 12, as a Tensor
    >>> (d2y,) = grad(dy, x)                       # 6 x = 12
    """
    outs = _as_tuple("grad", "outputs", outputs)
    ins = _as_tuple("grad", "inputs", inputs)
    if grad_outputs is None or not isinstance(grad_outputs, tuple | list):
        gos: tuple[Any, ...] = (
            (grad_outputs,) * len(outs) if grad_outputs is None else (grad_outputs,)
        )
    else:
        gos = tuple(grad_outputs)
    if len(gos) != len(outs):
        raise ValueError(f"grad: got {len(gos)} grad_outputs for {len(outs)} outputs")
    for i, t in enumerate(ins):
        if not t.requires_grad:
            raise RuntimeError(f"grad: input {i} (shape {t.shape}) does not require grad")
    for i, t in enumerate(outs):
        if not t.requires_grad:
            raise RuntimeError(f"grad: output {i} (shape {t.shape}) does not require grad")
    roots = tuple(_root_grad("grad", t, g, create_graph) for t, g in zip(outs, gos, strict=True))
    if not allow_unused:  # refuse before the walk frees the graph
        graph = toposort_many(outs)
        reachable = {id(t) for t in graph}
        for i, t in enumerate(ins):
            if id(t) not in reachable:
                freed = next((n._ctx for n in graph if n._ctx is not None and n._ctx.freed), None)
                if freed is not None:
                    raise RuntimeError(
                        f"grad: the graph through {freed.name} was already freed by an earlier "
                        "backward() or grad(); pass retain_graph=True to the first call"
                    )
                raise RuntimeError(
                    f"grad: input {i} (shape {t.shape}) was not used to compute the outputs; "
                    "pass allow_unused=True to get None for it"
                )
    wanted: dict[int, Any] = {id(t): None for t in ins}
    keep = create_graph if retain_graph is None else bool(retain_graph)
    _run(outs, roots, keep, wanted=wanted, graph=create_graph)
    result = tuple(wanted[id(t)] for t in ins)
    for i, (t, g) in enumerate(zip(ins, result, strict=True)):
        if g is None and not allow_unused:
            raise RuntimeError(
                f"grad: input {i} (shape {t.shape}) was not used to compute the outputs; "
                "pass allow_unused=True to get None for it"
            )
    return result


def _tensor_type() -> type[Tensor]:
    """``Tensor`` (imported on first use, as ``tensor`` imports this module)."""
    global _TENSOR
    if _TENSOR is None:
        from .tensor import Tensor

        _TENSOR = Tensor
    return _TENSOR


_TENSOR: type[Tensor] | None = None


def _as_tuple(op: str, what: str, x: Any) -> tuple[Tensor, ...]:
    Tensor = _tensor_type()
    xs = (x,) if isinstance(x, Tensor) else tuple(x)
    for i, t in enumerate(xs):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {what}[{i}] must be a Tensor, got {type(t).__name__}")
    return xs


def _root_grad(op: str, root: Tensor, grad: Any, graph: bool = False) -> Any:
    """The upstream gradient of ``root``: ones for a scalar, else ``grad`` checked. A Tensor
    when ``graph`` (a Tensor given as ``grad`` is kept, with its own graph)."""
    Tensor = _tensor_type()

    first = "backward(retain_graph=True)" if op == "backward" else "grad(..., retain_graph=True)"
    arg = "grad" if op == "backward" else "grad_outputs"
    if root._ctx is not None and root._ctx.freed:
        raise RuntimeError(
            f"{op}: the graph was already freed by an earlier backward() or grad(); call "
            f"{first} the first time to go through it twice"
        )
    if grad is None:
        if root.size != 1:
            raise RuntimeError(
                f"{op}: {arg} can be omitted only for a scalar output, got shape {root.shape}; "
                f"pass {arg} with that shape"
            )
        gy = np.ones(root.shape, dtype=root.dtype)
        return Tensor(gy) if graph else gy
    if graph and isinstance(grad, Tensor) and grad.dtype == root.dtype:
        if grad.shape != root.shape:
            raise ValueError(f"{op}: {arg} has shape {grad.shape}, expected {root.shape}")
        return grad
    gy = np.asarray(grad._data if isinstance(grad, Tensor) else grad)
    if gy.shape != root.shape:
        raise ValueError(f"{op}: {arg} has shape {gy.shape}, expected {root.shape}")
    if gy.dtype.kind not in "fiub":
        raise TypeError(f"{op}: {arg} must be numeric, got dtype {gy.dtype}")
    gy = gy.astype(root.dtype, copy=False)
    return Tensor(gy) if graph else gy


def _run(
    roots: tuple[Tensor, ...],
    root_grads: tuple[Any, ...],
    retain_graph: bool,
    wanted: dict[int, Any] | None,
    graph: bool = False,
) -> None:
    """The backward walk. With ``wanted`` (``grad``), the gradients of those tensors are put
    there and no ``.grad`` is touched; without it, leaves accumulate into ``.grad``. With
    ``graph`` the gradients are Tensors computed by recorded ops (``create_graph``)."""
    grads: dict[int, Any] = {}
    for r, g in zip(roots, root_grads, strict=True):
        grads[id(r)] = g if id(r) not in grads else grads[id(r)] + g
    # The walk holds leaves and tensors with hooks, but only (id, op) of other intermediate
    # tensors: an activation nobody else holds is then freed as soon as the ops that used it
    # are done (``free`` drops their inputs), and its buffer serves the gradients to come.
    walk = [
        (id(t), t._ctx, t if t._ctx is None or t._hooks is not None else None)
        for t in reversed(toposort_many(roots))
    ]
    op_hooks = _state.hooks.backward
    step, accumulate = (_graph_op, _accumulate_graph) if graph else (_backward_op, _accumulate)
    # ``.grad`` is written only once the whole walk has succeeded: a backward that raises
    # part way (a bad hook, a changed input) leaves every ``.grad`` as it was.
    done: list[tuple[Tensor, Any]] = []
    with enable_grad() if graph else no_grad():
        for key, ctx, t in walk:
            g = grads.pop(key, None)
            if t is not None and g is not None:
                if t._hooks is not None:
                    g = t._run_hooks(g)
                if wanted is not None:
                    if key in wanted:
                        wanted[key] = g
                elif ctx is None:
                    if t.requires_grad:
                        done.append((t, g))
                elif t._hooks is not None and t._hooks.retains_grad:
                    done.append((t, g))
            elif wanted is not None and g is not None and key in wanted:
                wanted[key] = g
            if ctx is None:
                continue
            if ctx.freed:
                raise RuntimeError(
                    f"backward: the graph through {ctx.name} was already freed by an earlier "
                    "backward(); use retain_graph=True"
                )
            if g is not None:
                step(ctx, g, grads, op_hooks)
            if not retain_graph:
                ctx.free()
        for t, g in done:
            accumulate(t, g)


def _backward_op(
    ctx: Function, gy: np.ndarray, grads: dict[int, np.ndarray], op_hooks: tuple
) -> None:
    """Run one op's backward and add its input gradients to ``grads`` (a function of its
    own, so that its locals, inputs included, are released when it returns)."""
    versions = getattr(ctx, "_versions", None)
    if versions is not None and (
        ctx._out_version[0] != 0 or [p._version[0] for p in ctx.parents] != versions
    ):
        _check_versions(ctx, versions)
    gxs = ctx.backward(gy)
    if type(gxs) is not tuple or len(gxs) != len(ctx.parents) or op_hooks:
        gxs = _one_per_input(ctx, "backward", gxs, gy, op_hooks)
    parents = ctx.parents
    for i, (parent, need, gx) in enumerate(zip(parents, ctx.needs_input_grad, gxs, strict=True)):
        if not need or gx is None:
            continue
        if not isinstance(gx, np.ndarray):
            gx = np.asarray(gx)
        if gx.shape != parent.shape:
            try:
                gx = unbroadcast(gx, parent.shape)
            except ValueError:
                raise RuntimeError(
                    f"{ctx.name}.backward returned a gradient of shape {gx.shape} for input "
                    f"{i}, whose shape is {parent.shape}"
                ) from None
        if gx.dtype != parent.dtype:
            gx = gx.astype(parent.dtype)
        prev = grads.get(id(parent))
        grads[id(parent)] = gx if prev is None else prev + gx


def _one_per_input(ctx: Function, method: str, gxs: Any, gy: Any, op_hooks: tuple) -> tuple:
    """An op's returned gradients as a tuple with one entry per input, after the hooks."""
    gxs = tuple(gxs) if isinstance(gxs, tuple | list) else (gxs,)
    if len(gxs) != len(ctx.parents):
        raise RuntimeError(
            f"{ctx.name}.{method} returned {len(gxs)} gradient(s) for {len(ctx.parents)} "
            "input(s); return one per input (None where needs_input_grad is False)"
        )
    return _run_op_hooks(op_hooks, ctx, gy, gxs) if op_hooks else gxs


def _run_op_hooks(hooks: tuple, ctx: Function, gy: Any, gxs: tuple[Any, ...]) -> tuple:
    """Let the ``on_op_backward`` hooks see (and maybe replace) an op's input gradients."""
    for hook in hooks:
        replaced = hook(ctx, gy, gxs)
        if replaced is None:
            continue
        replaced = tuple(replaced) if isinstance(replaced, tuple | list) else (replaced,)
        if len(replaced) != len(gxs):
            name = getattr(hook, "__qualname__", type(hook).__name__)
            raise RuntimeError(
                f"on_op_backward hook {name} returned {len(replaced)} gradient(s) for "
                f"{ctx.name}, which has {len(gxs)} input(s); return one per input or None"
            )
        gxs = replaced
    return gxs


def _graph_op(ctx: Function, gy: Tensor, grads: dict[int, Tensor], op_hooks: tuple) -> None:
    """``_backward_op`` for ``create_graph``: the op's ``backward_graph`` records new ops."""
    versions = getattr(ctx, "_versions", None)
    if versions is not None:
        _check_versions(ctx, versions)
    saved_scope, _state.scope = _state.scope, ctx.scope  # gradient ops join the op's module
    try:
        if type(ctx).backward_graph is Function.backward_graph:
            gxs = _first_order_only(ctx, gy)
        else:
            gxs = ctx.backward_graph(gy)
    finally:
        _state.scope = saved_scope
    gxs = _one_per_input(ctx, "backward_graph", gxs, gy, op_hooks)
    parents = ctx.parents
    for i, (parent, need, gx) in enumerate(zip(parents, ctx.needs_input_grad, gxs, strict=True)):
        if not need or gx is None:
            continue
        if not hasattr(gx, "_ctx"):
            raise RuntimeError(
                f"{ctx.name}.backward_graph returned a {type(gx).__name__} for input {i}; "
                "it must return Tensors computed with Tensor ops"
            )
        if gx.shape != parent.shape:
            try:
                axes = reduced_axes(gx.shape, parent.shape)
            except ValueError:
                raise RuntimeError(
                    f"{ctx.name}.backward_graph returned a gradient of shape {gx.shape} for "
                    f"input {i}, whose shape is {parent.shape}"
                ) from None
            gx = gx.sum(axis=axes, keepdims=True).reshape(parent.shape)
        if gx.dtype != parent.dtype:  # mixed precision, as in the first-order path
            gx = gx.to(parent.dtype)
        prev = grads.get(id(parent))
        grads[id(parent)] = gx if prev is None else prev + gx


def _first_order_only(ctx: Function, gy: Tensor) -> tuple[Any, ...]:
    """Gradients of an op without ``backward_graph``: its ndarray backward's values, wrapped in
    ops that raise if anything tries to differentiate through them."""
    gxs = ctx.backward(gy._data)
    if not isinstance(gxs, tuple):
        gxs = (gxs,)
    inputs = [p for p, need in zip(ctx.parents, ctx.needs_input_grad, strict=True) if need]
    return tuple(
        None if g is None else FirstOrderOnly.apply(gy, *inputs, value=np.asarray(g), op=ctx.name)
        for g in gxs
    )


class FirstOrderOnly(Function, register=False):
    """The gradient of an op that can be differentiated once only (it has no
    ``backward_graph``); differentiating through it raises an error naming that op."""

    value: np.ndarray
    op: str

    def forward(self, gy: np.ndarray, *inputs: np.ndarray) -> np.ndarray:
        return self.value

    def backward(self, gy: np.ndarray) -> Any:
        raise RuntimeError(
            f"{self.op} can be differentiated once but not twice: it has no backward_graph. "
            f"Define {self.op}.backward_graph(self, gy) with Tensor ops (see "
            "Function.backward_graph) to use it with create_graph=True"
        )


def _check_versions(ctx: Function, versions: list[int]) -> None:
    """Raise when an array that ``ctx`` saved for backward was changed in place since."""
    for i, (parent, v) in enumerate(zip(ctx.parents, versions, strict=True)):
        if parent._version[0] != v:
            name = f" {parent.name!r}" if parent.name else ""
            raise RuntimeError(
                f"backward: input {i} of {ctx.name} (tensor{name}, shape {parent.shape}) was "
                f"changed in place after {ctx.name} saved it for backward (version {v} -> "
                f"{parent._version[0]}), so its gradient would be wrong. Change it after "
                "backward(), or compute on a copy"
            )
    cell = ctx._out_version  # the output's counter; it was 0 when the op ran
    if cell[0] != 0:
        raise RuntimeError(
            f"backward: the output of {ctx.name} was changed in place after {ctx.name} saved "
            f"it for backward (version 0 -> {cell[0]}), so its gradient would be wrong"
        )


def _accumulate_graph(t: Tensor, g: Tensor) -> None:
    """``create_graph``: ``.grad`` becomes a Tensor with its graph (added to what was there)."""
    if t.grad is None:
        t.grad = g
    else:
        t.grad = g + t.grad  # an ndarray from an earlier backward is a constant here


def _accumulate(t: Tensor, g: np.ndarray) -> None:
    """PyTorch semantics: the first gradient is copied in, later ones are added in place."""
    if hasattr(t.grad, "_ctx"):  # a Tensor left by backward(create_graph=True): its values
        t.grad = t.grad.numpy() + g
        return
    if t.grad is None:
        t.grad = workspace.empty(t.shape, t.dtype)
        np.copyto(t.grad, g, casting="unsafe")
    else:
        np.add(t.grad, g, out=t.grad)
