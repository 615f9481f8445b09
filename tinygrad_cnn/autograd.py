"""The engine: grad mode, the ``Function`` base class and its registry, and backward.

A graph is made of tensors and the ``Function`` instances that produced them. A tensor points
to its creator through ``tensor._ctx``; a function points to its inputs through ``parents``.
Nothing points from a function back to its output, so a graph has no reference cycles and is
freed by reference counting alone as soon as the last tensor of it goes away.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from .workspace import memory_order, workspace  # noqa: F401  (ops import them here)

if TYPE_CHECKING:
    from .tensor import Tensor

F = TypeVar("F", bound=Callable[..., Any])

_grad_enabled = True
#: Names of the modules being called, outermost first; every recorded op keeps a copy.
_scope: tuple[str, ...] = ()


def is_grad_enabled() -> bool:
    """Return True when new operations are recorded for backward."""
    return _grad_enabled


class _GradMode:
    """Context manager and decorator that sets grad mode and restores it on exit."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._saved: list[bool] = []

    def __enter__(self) -> None:
        global _grad_enabled
        self._saved.append(_grad_enabled)
        _grad_enabled = self.enabled

    def __exit__(self, *exc: object) -> None:
        global _grad_enabled
        _grad_enabled = self._saved.pop()

    def __call__(self, fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _GradMode(self.enabled):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


@contextmanager
def module_scope(name: str) -> Iterator[None]:
    """Tag ops recorded inside the block with ``name`` (nested blocks nest), for rendering."""
    global _scope
    saved = _scope
    _scope = (*saved, name)
    try:
        yield
    finally:
        _scope = saved


def no_grad() -> _GradMode:
    """Disable graph recording, as ``with no_grad():`` or as ``@no_grad()``.

    Nests, and restores the previous mode even when the body raises.
    """
    return _GradMode(False)


def enable_grad() -> _GradMode:
    """Enable graph recording inside a ``no_grad`` region (context manager or decorator)."""
    return _GradMode(True)


class Function:
    """One differentiable operation. Subclasses are registered by name in ``Function.registry``.

    A subclass implements ``forward(*arrays) -> ndarray`` and ``backward(gy) -> grads`` on
    plain ndarrays. The instance itself is the context: ``forward`` stores on ``self`` what
    ``backward`` needs (arrays only, never tensors). ``backward`` returns one gradient per
    input, each with the shape of the output broadcast to that input's "same-shape" form (the
    engine reduces broadcasting), or ``None`` for inputs in ``needs_input_grad`` that are False.

    Keyword arguments given to ``apply`` become attributes (``self.stride`` etc.) and are
    listed by ``attrs()``, which the graph renderer shows.
    """

    registry: ClassVar[dict[str, type[Function]]] = {}
    #: Names of keyword attributes shown in graph labels; set by subclasses.
    attr_names: ClassVar[tuple[str, ...]] = ()

    parents: tuple[Tensor, ...]
    needs_input_grad: tuple[bool, ...]

    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if register:
            Function.registry[cls.__name__] = cls

    def __init__(self, **attrs: Any) -> None:
        self.kwargs = attrs  # what ``apply`` was given, so the op can be re-run (audit)
        for key, value in attrs.items():
            setattr(self, key, value)
        self.freed = False
        self.trace: str | None = None

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, gy: np.ndarray) -> tuple[np.ndarray | None, ...] | np.ndarray | None:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type(self).__name__

    def attrs(self) -> dict[str, Any]:
        """The key attributes of this op (for labels and error messages)."""
        return {k: getattr(self, k) for k in self.attr_names if hasattr(self, k)}

    def save(self, **arrays: Any) -> None:
        """Keep arrays for backward; dropped by ``free``."""
        self.saved = arrays

    def free(self) -> None:
        """Drop saved arrays and the links to the inputs once backward has used them."""
        self.saved = {}
        self.parents = ()
        self.freed = True

    @classmethod
    def apply(cls, *inputs: Any, **attrs: Any) -> Tensor:
        """Run the op on tensors (or array-likes), recording it when gradients are needed."""
        from .tensor import Tensor, as_tensor

        fn = cls(**attrs)
        first = next((t for t in inputs if isinstance(t, Tensor)), None)
        tensors = tuple(as_tensor(t, like=first) for t in inputs)
        # Under no_grad nothing needs a gradient, so ops skip saving arrays for backward.
        fn.needs_input_grad = tuple(_grad_enabled and t.requires_grad for t in tensors)
        fn.saved = {}
        out = fn.forward(*(t.data for t in tensors))
        requires_grad = any(fn.needs_input_grad)
        result = Tensor(out, requires_grad=requires_grad)
        if requires_grad:
            fn.parents = tensors
            fn.scope = _scope
            result._ctx = fn
        for hook in _creation_hooks:
            hook(fn, tensors, result)
        return result


#: Callables ``hook(fn, inputs, output)`` run after every op's forward, recorded or not
#: (used by anomaly mode).
_creation_hooks: list[Callable[[Function, tuple[Tensor, ...], Tensor], None]] = []
#: Callables ``hook(fn, grads)`` run after every op backward (used by anomaly mode).
_backward_hooks: list[Callable[[Function, tuple[np.ndarray | None, ...]], None]] = []


def unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``g`` down to ``shape``, undoing NumPy broadcasting (the adjoint of broadcast_to)."""
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        i + extra for i, n in enumerate(shape) if n == 1 and g.shape[i + extra] != 1
    )
    out = g.sum(axis=axes, keepdims=True) if axes else g
    if extra:
        out = out.reshape(out.shape[extra:])
    assert out.shape == shape, f"unbroadcast: cannot reduce {g.shape} to {shape}"
    return out


def toposort(root: Tensor) -> list[Tensor]:
    """Tensors of the graph ending at ``root``, inputs before outputs. Iterative, O(nodes)."""
    order: list[Tensor] = []
    visited: set[int] = {id(root)}
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


def backward(root: Tensor, grad: np.ndarray | None = None, retain_graph: bool = False) -> None:
    """Accumulate d(root)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

    Intermediate gradients live in a local dict and are dropped as soon as they are used.
    The graph's saved arrays are freed afterwards unless ``retain_graph`` is True.
    """
    if not root.requires_grad:
        raise RuntimeError(
            "backward: this tensor does not require grad and has no graph; create inputs "
            "with requires_grad=True (and not under no_grad())"
        )
    if root._ctx is not None and root._ctx.freed:
        raise RuntimeError(
            "backward: the graph was already freed by an earlier backward(); call "
            "backward(retain_graph=True) the first time to backpropagate twice"
        )
    if grad is None:
        if root.size != 1:
            raise RuntimeError(
                f"backward: grad can be omitted only for a scalar output, got shape {root.shape}; "
                "pass grad= with that shape"
            )
        gy = np.ones(root.shape, dtype=root.dtype)
    else:
        gy = np.asarray(grad.data if hasattr(grad, "_ctx") else grad)
        if gy.shape != root.shape:
            raise ValueError(f"backward: grad has shape {gy.shape}, expected {root.shape}")
        gy = gy.astype(root.dtype, copy=False)

    grads: dict[int, np.ndarray] = {id(root): gy}
    # The walk holds leaves but only (id, op) of intermediate tensors: an activation nobody
    # else holds is then freed as soon as the ops that used it are done (``free`` drops their
    # inputs), and its buffer serves the gradients still to come.
    walk = [(id(t), t._ctx, t if t._ctx is None else None) for t in reversed(toposort(root))]
    with no_grad():
        for key, ctx, leaf in walk:
            g = grads.pop(key, None)
            if leaf is not None:
                if g is not None and leaf.requires_grad:
                    _accumulate_leaf(leaf, g)
                continue
            if ctx.freed:
                raise RuntimeError(
                    f"backward: the graph through {ctx.name} was already freed by an earlier "
                    "backward(); use retain_graph=True"
                )
            if g is not None:
                if retain_graph:  # a float for graph drawings; the array itself is not kept
                    ctx.out_grad_norm = float(np.linalg.norm(g))
                _backward_op(ctx, g, grads)
            if not retain_graph:
                ctx.free()


def _backward_op(ctx: Function, gy: np.ndarray, grads: dict[int, np.ndarray]) -> None:
    """Run one op's backward and add its input gradients to ``grads`` (a function of its
    own, so that its locals, inputs included, are released when it returns)."""
    gxs = ctx.backward(gy)
    if not isinstance(gxs, tuple):
        gxs = (gxs,)
    for hook in _backward_hooks:
        hook(ctx, gxs)
    for parent, need, gx in zip(ctx.parents, ctx.needs_input_grad, gxs, strict=True):
        if not need or gx is None:
            continue
        gx = unbroadcast(gx, parent.shape)
        if gx.dtype != parent.dtype:
            gx = gx.astype(parent.dtype)
        prev = grads.get(id(parent))
        grads[id(parent)] = gx if prev is None else prev + gx


def _accumulate_leaf(leaf: Tensor, g: np.ndarray) -> None:
    """PyTorch semantics: the first gradient is copied in, later ones are added in place."""
    if leaf.grad is None:
        leaf.grad = workspace.empty(leaf.shape, leaf.dtype)
        np.copyto(leaf.grad, g, casting="unsafe")
    else:
        np.add(leaf.grad, g, out=leaf.grad)


@contextmanager
def _hooks(
    creation: Callable[..., None] | None = None, backward_hook: Callable[..., None] | None = None
) -> Iterator[None]:
    """Install engine hooks for the duration of a ``with`` block."""
    if creation is not None:
        _creation_hooks.append(creation)
    if backward_hook is not None:
        _backward_hooks.append(backward_hook)
    try:
        yield
    finally:
        if creation is not None:
            _creation_hooks.remove(creation)
        if backward_hook is not None:
            _backward_hooks.remove(backward_hook)
