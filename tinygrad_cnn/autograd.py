"""The engine's front half: grad mode, hooks, and the ``Function`` base class and its registry.

``backprop.py`` holds the other half, the backward walk (``backward`` and ``grad``).

A graph is made of tensors and the ``Function`` instances that produced them. A tensor points
to its creator through ``tensor._ctx``; a function points to its inputs through ``parents``.
Nothing points from a function back to its output, so a graph has no reference cycles and is
freed by reference counting alone as soon as the last tensor of it goes away.

Threads. Grad mode, the module scope and the op hooks are per thread, as in PyTorch: a
``no_grad()`` or an ``on_op_created`` hook in one thread never affects another. Tensors, graphs
and modules may be shared across threads for reading; two threads must not run ``backward``
through the same graph, nor update the same parameters, at the same time.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from .workspace import memory_order, workspace  # noqa: F401  (ops import them here)

if TYPE_CHECKING:
    from .tensor import Tensor

F = TypeVar("F", bound=Callable[..., Any])
Grads = tuple["np.ndarray | Tensor | None", ...]


class _HookList:
    """Callables registered in one thread; replaced, never mutated, so a walk over it is safe
    while a hook removes itself."""

    def __init__(self) -> None:
        self.created: tuple[Callable[..., Any], ...] = ()
        self.backward: tuple[Callable[..., Any], ...] = ()


class _ThreadState(threading.local):
    """Everything that changes the engine's behaviour; each thread sees its own."""

    def __init__(self) -> None:
        self.grad_enabled = True
        self.grad_stack: list[bool] = []  # modes to restore, one per entered _GradMode
        #: Names of the modules being called, outermost first; every recorded op keeps a copy.
        self.scope: tuple[str, ...] = ()
        self.hooks = _HookList()


_state = _ThreadState()


def is_grad_enabled() -> bool:
    """Return True when new operations are recorded for backward (in this thread)."""
    return _state.grad_enabled


class _GradMode:
    """Context manager and decorator that sets grad mode and restores it on exit.

    The mode to restore is kept on the entering thread's own stack, so one object may be
    entered by several threads (and nested) at once.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __enter__(self) -> None:
        state = _state
        state.grad_stack.append(state.grad_enabled)
        state.grad_enabled = self.enabled

    def __exit__(self, *exc: object) -> None:
        state = _state
        state.grad_enabled = state.grad_stack.pop()

    def __call__(self, fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _GradMode(self.enabled):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def no_grad() -> _GradMode:
    """Disable graph recording in this thread, as ``with no_grad():`` or as ``@no_grad()``.

    Nests, and restores the previous mode even when the body raises.
    """
    return _GradMode(False)


def enable_grad() -> _GradMode:
    """Enable graph recording inside a ``no_grad`` region (context manager or decorator)."""
    return _GradMode(True)


@contextmanager
def module_scope(name: str) -> Iterator[None]:
    """Tag ops recorded inside the block with ``name`` (nested blocks nest); ``Module`` uses it."""
    saved = _state.scope
    _state.scope = (*saved, name)
    try:
        yield
    finally:
        _state.scope = saved


# ----------------------------------------------------------------------------------- hooks
class RemovableHandle:
    """What registering a hook returns: ``handle.remove()`` takes the hook away again.

    Also a context manager that removes the hook on exit. ``remove`` may be called twice.
    """

    def __init__(self, remove: Callable[[], None]) -> None:
        self._remove: Callable[[], None] | None = remove

    def remove(self) -> None:
        if self._remove is not None:
            self._remove()
            self._remove = None

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def _register(hooks: _HookList, kind: str, hook: Callable[..., Any]) -> RemovableHandle:
    if not callable(hook):
        raise TypeError(f"on_op_{kind}: hook must be callable, got {type(hook).__name__}")
    setattr(hooks, kind, (*getattr(hooks, kind), hook))

    def remove() -> None:
        setattr(hooks, kind, tuple(h for h in getattr(hooks, kind) if h is not hook))

    return RemovableHandle(remove)


def on_op_created(hook: Callable[[Function, tuple[Tensor, ...], Tensor], None]) -> RemovableHandle:
    """Call ``hook(fn, inputs, output)`` after every op's forward in this thread.

    It runs for every op, recorded for backward or not (``output.op is None`` tells). An
    exception in the hook propagates out of the op call. Returns a handle: ``.remove()``.

    Examples
    --------
    >>> with on_op_created(lambda fn, xs, y: print(fn.name, y.shape)):  # doctest: +SKIP
    ...     net(x)
    """
    return _register(_state.hooks, "created", hook)


def on_op_backward(
    hook: Callable[[Function, Any, Grads], Grads | None],
) -> RemovableHandle:
    """Call ``hook(fn, grad_output, grad_inputs)`` after every op's backward in this thread.

    ``grad_inputs`` has one entry per input (None where no gradient is needed), before
    broadcasting is summed away. The hook may return a replacement tuple. Gradients are
    ndarrays, or Tensors during ``backward(create_graph=True)``. Returns a handle.
    """
    return _register(_state.hooks, "backward", hook)


# -------------------------------------------------------------------------------- Function
class Function:
    """One differentiable operation. Subclasses are registered by name in ``Function.registry``.

    A subclass implements ``forward(*arrays) -> ndarray`` and ``backward(gy) -> grads`` on
    plain ndarrays. The instance itself is the context: ``forward`` stores on ``self`` what
    ``backward`` needs (arrays only, never tensors). ``backward`` returns one gradient per
    input, each with the shape of the output broadcast to that input's "same-shape" form (the
    engine reduces broadcasting), or ``None`` for inputs in ``needs_input_grad`` that are False.

    Keyword arguments given to ``apply`` become attributes (``self.stride`` etc.); ``attrs()``
    returns them, so ``type(fn).apply(*inputs, **fn.attrs())`` runs the same op again.
    ``scope`` is the dotted path of the modules that were being called when the op ran; a
    ValueError or TypeError raised by ``forward`` inside a module names that path.
    """

    registry: ClassVar[dict[str, type[Function]]] = {}
    #: Names of the attributes worth showing in graph labels and reprs.
    attr_names: ClassVar[tuple[str, ...]] = ()

    parents: tuple[Tensor, ...]
    needs_input_grad: tuple[bool, ...]
    scope: tuple[str, ...] = ()

    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if register:
            # A user op named like a built-in one (``class ReLU(Function)``) is listed under its
            # qualified name instead of silently taking the built-in's place.
            taken = Function.registry.get(cls.__name__)
            builtin = taken is not None and taken.__module__.startswith("tinygrad_cnn.")
            key = cls.__name__
            if builtin and not cls.__module__.startswith("tinygrad_cnn."):
                key = f"{cls.__module__}.{cls.__qualname__}"
            Function.registry[key] = cls

    def __init__(self, **attrs: Any) -> None:
        self._attrs = attrs
        for key, value in attrs.items():
            setattr(self, key, value)
        self.freed = False

    def forward(self, *xs: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}: define forward(self, *arrays)")

    def backward(self, gy: np.ndarray) -> tuple[np.ndarray | None, ...] | np.ndarray | None:
        raise NotImplementedError(f"{type(self).__name__}: define backward(self, gy)")

    def backward_graph(self, gy: Tensor) -> Any:
        """The backward written with Tensor ops, used by ``create_graph=True`` (higher order).

        ``gy`` is a Tensor; the inputs are the Tensors ``self.parents``, and arrays saved by
        ``forward`` may be used as constants where the gradient is locally constant in them
        (a ReLU mask, a max-pool argmax). Return one Tensor (or None) per input, like
        ``backward``. An op without it can be differentiated once: its gradient is then a
        constant, and differentiating through it again raises an error naming the op.
        """
        raise NotImplementedError

    def kinks(self, *xs: np.ndarray, margin: float) -> list[np.ndarray | None] | None:
        """Where this op is not differentiable, for gradient checks on real data.

        Given the input arrays, return one boolean mask per input marking the elements within
        ``margin`` of a kink (ReLU at 0, a tie for a max), or None for an input without
        kinks; return None (the default) when the op is differentiable everywhere. The audit
        and the layer checks hold those elements fixed instead of reporting false alarms.
        """
        return None

    @property
    def name(self) -> str:
        return type(self).__name__

    def attrs(self) -> dict[str, Any]:
        """The keyword attributes the op was applied with (``stride``, ``axis``, ...)."""
        return dict(self._attrs)

    def label_attrs(self) -> dict[str, Any]:
        """The attributes worth showing in a label: ``attr_names`` of them, in that order."""
        return {k: getattr(self, k) for k in self.attr_names if hasattr(self, k)}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.label_attrs().items())
        return f"<{self.name}({inner})>"

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

        state = _state
        fn = cls(**attrs)
        first = next((t for t in inputs if isinstance(t, Tensor)), None)
        tensors = tuple(as_tensor(t, like=first) for t in inputs)
        # Under no_grad nothing needs a gradient, so ops skip saving arrays for backward.
        grad_on = state.grad_enabled
        fn.needs_input_grad = tuple(grad_on and t.requires_grad for t in tensors)
        fn.saved = {}
        try:
            out = fn.forward(*(t._data for t in tensors))
        except (ValueError, TypeError) as e:  # name the layer a shape error happened in
            if state.scope and e.args and isinstance(e.args[0], str):
                e.args = (f"{e.args[0]} (in module {'.'.join(state.scope)})", *e.args[1:])
            raise
        requires_grad = any(fn.needs_input_grad)
        result = Tensor(out, requires_grad=requires_grad)
        if requires_grad:
            fn.parents = tensors
            fn.scope = state.scope
            if fn.saved:  # versions of what backward reads, checked there
                fn._versions = [t._version[0] for t in tensors]
                fn._out_version = result._version
            result._ctx = fn
        hooks = state.hooks.created
        if hooks:
            for hook in hooks:
                hook(fn, tensors, result)
        return result


def reduced_axes(g_shape: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    """The axes to sum (keeping dims) so that a gradient of ``g_shape`` that came from
    broadcasting ``shape`` gets that shape back (leading axes first).

    Raises ``ValueError`` when ``g_shape`` cannot have come from broadcasting ``shape``.
    """
    extra = len(g_shape) - len(shape)
    if extra < 0 or any(n != 1 and m != n for n, m in zip(shape, g_shape[extra:], strict=True)):
        raise ValueError(f"cannot reduce a gradient of shape {g_shape} to shape {shape}")
    return tuple(range(extra)) + tuple(
        i + extra for i, n in enumerate(shape) if n == 1 and g_shape[i + extra] != 1
    )


def unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``g`` down to ``shape``, undoing NumPy broadcasting (the adjoint of broadcast_to).

    Raises ``ValueError`` when ``g`` cannot have come from broadcasting ``shape``.
    """
    if g.shape == shape:
        return g
    axes = reduced_axes(g.shape, shape)
    out = g.sum(axis=axes, keepdims=True) if axes else g
    return out.reshape(shape) if out.shape != shape else out
