"""``Tensor``: an ndarray that remembers how it was made, so gradients can flow back."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .autograd import RemovableHandle, is_grad_enabled
from .backprop import backward as _backward
from .tracked import tracked_view

if TYPE_CHECKING:
    from .autograd import Function

Axis = int | tuple[int, ...] | None


class Tensor:
    """A NumPy array in a dynamic computation graph.

    Parameters
    ----------
    data : array_like
        Float arrays keep their dtype; Python scalars and lists become float32;
        integer arrays stay integer (useful for labels) but cannot require grad.
    requires_grad : bool
        Record operations on this tensor so ``backward`` can fill ``.grad``.
    name : str, optional
        Shown in graph renderings and error messages (parameters get dotted names).

    Examples
    --------
    >>> x = Tensor([1.0, 2.0], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad
    array([2., 4.], dtype=float32)
    """

    __slots__ = ("_data", "_view", "grad", "requires_grad", "name", "_ctx", "_version",
                 "_hooks", "__weakref__")  # fmt: skip
    # Make NumPy defer to our reflected operators: ``ndarray * Tensor`` gives a Tensor.
    __array_ufunc__ = None
    __hash__ = object.__hash__

    def __init__(self, data: Any, requires_grad: bool = False, name: str | None = None) -> None:
        if isinstance(data, Tensor):
            data = data._data
        if isinstance(data, np.ndarray | np.generic):
            arr = np.asarray(data)
        else:  # Python scalars and (nested) lists
            try:
                arr = np.asarray(data)
            except ValueError:  # ragged nesting
                raise TypeError(
                    f"Tensor: data must be numbers, lists of numbers or an ndarray, got a "
                    f"ragged {type(data).__name__} (rows of different lengths)"
                ) from None
            if arr.dtype.kind not in "biuf":
                raise TypeError(
                    f"Tensor: data must be numbers, lists of numbers or an ndarray, got "
                    f"{type(data).__name__} (dtype {arr.dtype})"
                )
            arr = arr.astype(np.float32)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"Tensor: unsupported dtype {arr.dtype}")
        if requires_grad and arr.dtype.kind != "f":
            raise TypeError(
                f"Tensor: only floating-point tensors can require grad, got dtype {arr.dtype}"
            )
        self._data: np.ndarray = arr
        self._view: np.ndarray | None = None  # what ``.data`` returns, made on first use
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self.name = name
        self._ctx: Function | None = None
        self._version = [0]  # bumped by in-place writes through ``.data`` (see tracked.py)
        self._hooks: _TensorHooks | None = None

    @property
    def data(self) -> np.ndarray:
        """The values, as a view that counts in-place writes (see ``tinygrad_cnn.tracked``).

        Backward refuses an op whose saved inputs were written since it ran, instead of
        returning a silently wrong gradient.
        """
        if self._view is None:
            self._view = tracked_view(self._data, self._version)
        return self._view

    @data.setter
    def data(self, value: Any) -> None:
        arr = value._data if isinstance(value, Tensor) else np.asarray(value)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"Tensor.data: unsupported dtype {arr.dtype}")
        self._data = arr.view(np.ndarray) if type(arr) is not np.ndarray else arr
        self._view = None

    # ----------------------------------------------------------------- properties
    @property
    def shape(self) -> tuple[int, ...]:
        return self._data.shape

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def size(self) -> int:
        return self._data.size

    @property
    def dtype(self) -> np.dtype:
        return self._data.dtype

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def op(self) -> Function | None:
        """The op that produced this tensor, or None for a leaf."""
        return self._ctx

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        body = np.array2string(
            self._data, precision=4, separator=", ", threshold=20, prefix="Tensor("
        )
        extra = [f"shape={self.shape}", f"dtype={self.dtype}"]
        if self.name:
            extra.insert(0, f"name={self.name!r}")
        if self._ctx is not None:
            extra.append(f"op={self._ctx.name}")
        elif self.requires_grad:
            extra.append("requires_grad=True")
        return f"Tensor({body}, {', '.join(extra)})"

    # ----------------------------------------------------------------- conversion
    def numpy(self) -> np.ndarray:
        """The underlying array itself (not a copy; writes through it are not tracked)."""
        return self._data

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """The values for NumPy (``np.asarray(t)``, ``np.argmax(t, axis=1)``, ``plt.plot(t)``).

        The array itself, like ``numpy()``, unless ``dtype`` or ``copy=True`` asks for a new
        one; ``copy=False`` with a ``dtype`` that needs a copy raises ``ValueError``, as NumPy
        does. The view is read-only (``np.array(t)`` copies; ``t.numpy()`` is the raw array).
        """
        arr = self._data
        if dtype is not None and np.dtype(dtype) != arr.dtype:
            if copy is False:
                raise ValueError(
                    f"Tensor.__array__: copy=False, but dtype {np.dtype(dtype)} needs a copy of "
                    f"the {arr.dtype} values"
                )
            return arr.astype(dtype)
        if copy:
            return arr.copy()
        view = arr.view()  # read-only: a write here would escape the in-place checks
        view.flags.writeable = False
        return view

    def __bool__(self) -> bool:
        """The truth of a one-element tensor (``if loss < 1:``); more elements are ambiguous."""
        if self.size != 1:
            raise ValueError(
                f"the truth value of a Tensor of shape {self.shape} ({self.size} elements) is "
                "ambiguous (as in `if a == b:` or `t in some_list`, since == is elementwise); "
                "use (a == b).all() or .any(), and `any(x is t for x in some_list)` for lists"
            )
        return bool(self._data)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __format__(self, spec: str) -> str:
        """``f"{loss:.4f}"`` formats a one-element tensor's value; no spec gives ``str``."""
        return format(self.item(), spec) if spec else str(self)

    def item(self) -> float | int:
        if self.size != 1:
            raise ValueError(f"item: tensor of shape {self.shape} has {self.size} elements, not 1")
        return self._data.item()

    def detach(self) -> Tensor:
        """A new leaf sharing this tensor's data, outside any graph."""
        return Tensor(self._data, requires_grad=False, name=self.name)

    def astype(self, dtype: Any) -> Tensor:
        """A leaf copy with another dtype (not differentiable)."""
        return Tensor(self._data.astype(dtype), name=self.name)

    def to(self, dtype: Any) -> Tensor:
        """This tensor as another float dtype, differentiably (the gradient comes back in
        this tensor's dtype). ``astype`` makes a leaf copy instead."""
        return F.cast(self, dtype)

    def zero_grad(self) -> None:
        self.grad = None

    # ----------------------------------------------------------------- autograd
    def backward(
        self, grad: Any = None, retain_graph: bool | None = None, create_graph: bool = False
    ) -> None:
        """Backpropagate from this tensor, accumulating into ``.grad`` of the leaves.

        Leaf gradients accumulate across calls (as in PyTorch): zero them between steps.
        The graph is freed afterwards unless ``retain_graph=True``. With ``create_graph=True``
        the gradients are computed with Tensor ops and ``.grad`` holds a ``Tensor`` that
        carries its own graph (differentiate it again, or read ``.grad.numpy()``); without
        it ``.grad`` is always a plain ndarray.
        """
        _backward(self, grad, retain_graph=retain_graph, create_graph=create_graph)

    def register_hook(self, hook: Callable[[np.ndarray], np.ndarray | None]) -> RemovableHandle:
        """Call ``hook(grad)`` whenever the gradient with respect to this tensor is computed.

        The hook sees the total gradient (an ndarray shaped like this tensor) before it is
        accumulated into ``.grad`` or passed on; returning an array replaces it. Hooks run in
        the order registered. Returns a handle whose ``remove()`` takes the hook away.

        Examples
        --------
        >>> h = x.register_hook(lambda g: print(np.linalg.norm(g)))  # doctest: +SKIP
        >>> h.remove()                                               # doctest: +SKIP
        """
        if not callable(hook):
            raise TypeError(f"register_hook: hook must be callable, got {type(hook).__name__}")
        if not self.requires_grad:
            raise RuntimeError(
                "register_hook: this tensor does not require grad, so no gradient will reach it"
            )
        hooks = self._hooks if self._hooks is not None else _TensorHooks()
        hooks.fns = (*hooks.fns, hook)
        self._hooks = hooks

        def remove() -> None:
            hooks.fns = tuple(h for h in hooks.fns if h is not hook)

        return RemovableHandle(remove)

    def retain_grad(self) -> None:
        """Keep this intermediate tensor's gradient in ``.grad`` after backward (a leaf
        keeps its gradient anyway). Like a leaf's, it accumulates across backward calls."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad: this tensor does not require grad")
        if self._ctx is None:
            return
        if self._hooks is None:
            self._hooks = _TensorHooks()
        self._hooks.retains_grad = True

    def _run_hooks(self, g: np.ndarray) -> np.ndarray:
        """Apply the registered hooks to the gradient ``g`` (called by backward)."""
        graph = isinstance(g, Tensor)  # create_graph: gradients are Tensors
        for hook in self._hooks.fns:  # type: ignore[union-attr]
            new = hook(g)
            if new is None:
                continue
            if not graph or not isinstance(new, Tensor):
                new = np.asarray(new._data if isinstance(new, Tensor) else new)
            if new.shape != self.shape:
                raise RuntimeError(
                    f"register_hook: a hook returned a gradient of shape {new.shape} for a "
                    f"tensor of shape {self.shape}"
                )
            if isinstance(new, Tensor):
                g = new
            else:
                new = new.astype(self.dtype, copy=False)
                g = Tensor(new) if graph else new
        return g

    # ----------------------------------------------------------------- operators
    def __add__(self, other: Any) -> Tensor:
        return F.add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return F.add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return F.sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return F.sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return F.mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return F.mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return F.div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return F.div(other, self)

    # In-place operators: ``p -= lr * p.grad`` updates ``p`` under ``no_grad()`` (an optimizer
    # step) or when it needs no gradient; on a leaf that requires grad, with recording on, it
    # would silently make a new tensor instead of updating the parameter, so it raises.
    def __iadd__(self, other: Any) -> Tensor:
        done = self._inplace("+=", np.add, other)
        return self + other if done is None else done

    def __isub__(self, other: Any) -> Tensor:
        done = self._inplace("-=", np.subtract, other)
        return self - other if done is None else done

    def __imul__(self, other: Any) -> Tensor:
        done = self._inplace("*=", np.multiply, other)
        return self * other if done is None else done

    def __itruediv__(self, other: Any) -> Tensor:
        done = self._inplace("/=", np.divide, other)
        return self / other if done is None else done

    def _inplace(self, symbol: str, ufunc: Any, other: Any) -> Tensor | None:
        """Update this tensor's array in place and return it, or None to compute a new tensor
        (an intermediate in a recorded graph)."""
        recording = self.requires_grad and is_grad_enabled()
        if recording and self._ctx is None:
            name = f" {self.name!r}" if self.name else ""
            raise RuntimeError(
                f"Tensor {symbol}: tensor{name} (shape {self.shape}) requires grad, so an "
                f"in-place {symbol} while recording would only make a new tensor and leave it "
                f"unchanged; update parameters inside `with no_grad():` (or use an optimizer)"
            )
        if recording:
            return None
        value = other._data if isinstance(other, Tensor) else other
        try:
            ufunc(self._data, value, out=self._data, casting="same_kind")
        except (ValueError, TypeError) as e:
            shape = getattr(value, "shape", ())
            raise ValueError(
                f"Tensor {symbol}: cannot update a tensor of shape {self.shape} {self.dtype} "
                f"in place with a value of shape {shape} ({e})"
            ) from None
        self._version[0] += 1
        return self

    def __neg__(self) -> Tensor:
        return F.neg(self)

    def __pow__(self, exponent: float) -> Tensor:
        return F.pow(self, exponent)

    def __rpow__(self, base: float) -> Tensor:
        return F.pow(base, self)

    def __abs__(self) -> Tensor:
        return F.abs(self)

    def __matmul__(self, other: Any) -> Tensor:
        return F.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return F.matmul(other, self)

    def __getitem__(self, index: Any) -> Tensor:
        return F.getitem(self, index)

    # ----------------------------------------------------------------- methods
    def sum(self, axis: Axis = None, keepdims: bool = False, **dim: Any) -> Tensor:
        return F.sum(self, **_axes(axis, keepdims, dim))

    def mean(self, axis: Axis = None, keepdims: bool = False, **dim: Any) -> Tensor:
        return F.mean(self, **_axes(axis, keepdims, dim))

    def max(self, axis: int | None = None, keepdims: bool = False, **dim: Any) -> Tensor:
        return F.max(self, **_axes(axis, keepdims, dim))

    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], tuple | list):
            shape = tuple(shape[0])
        return F.reshape(self, shape)

    def transpose(self, *axes: Any) -> Tensor:
        """``t.transpose(dim0, dim1)`` swaps two axes (PyTorch); ``t.transpose((2, 0, 1))``
        with one sequence permutes them (NumPy, like ``permute``); no argument reverses them."""
        if len(axes) == 1 and isinstance(axes[0], tuple | list):
            return F.transpose(self, tuple(axes[0]))
        if len(axes) == 2:
            a, b = axes
            if not all(isinstance(i, int | np.integer) and not isinstance(i, bool) for i in axes):
                raise TypeError(f"transpose: dim0 and dim1 must be ints, got {axes!r}")
            order = list(range(self.ndim))
            for i in axes:
                if not -self.ndim <= i < self.ndim:
                    raise ValueError(
                        f"transpose: axis {i} is out of range for a tensor of shape {self.shape}"
                    )
            order[a], order[b] = order[b], order[a]
            return F.transpose(self, tuple(order))
        return F.transpose(self, axes or None)

    def permute(self, *axes: Any) -> Tensor:
        """The axes in the given order: ``t.permute(0, 2, 3, 1)`` (NCHW -> NHWC)."""
        if len(axes) == 1 and isinstance(axes[0], tuple | list):
            axes = tuple(axes[0])
        return F.transpose(self, axes)

    # Comparisons give boolean tensors outside any graph (masks for ``where``).
    def __gt__(self, other: Any) -> Tensor:
        return Tensor(self._data > _value(other))

    def __ge__(self, other: Any) -> Tensor:
        return Tensor(self._data >= _value(other))

    def __lt__(self, other: Any) -> Tensor:
        return Tensor(self._data < _value(other))

    def __le__(self, other: Any) -> Tensor:
        return Tensor(self._data <= _value(other))

    # Elementwise, as in NumPy and PyTorch (``y.argmax(1) == t`` counts matches); hashing
    # stays by identity, so Tensors still work as dict keys and in sets.
    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return Tensor(_compare("==", np.equal, self, other))

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return Tensor(_compare("!=", np.not_equal, self, other))

    def all(self, axis: Any = None) -> Tensor:
        """Whether every element (along ``axis``) is true: a bool Tensor, no gradient."""
        return Tensor(np.all(self._data, axis=axis))

    def any(self, axis: Any = None) -> Tensor:
        """Whether any element (along ``axis``) is true: a bool Tensor, no gradient."""
        return Tensor(np.any(self._data, axis=axis))

    @property
    def T(self) -> Tensor:
        return F.transpose(self, None)

    def flatten(self, start_dim: int = 1) -> Tensor:
        return F.flatten(self, start_dim)

    def exp(self) -> Tensor:
        return F.exp(self)

    def log(self) -> Tensor:
        return F.log(self)

    def relu(self) -> Tensor:
        return F.relu(self)

    def sigmoid(self) -> Tensor:
        return F.sigmoid(self)

    def tanh(self) -> Tensor:
        return F.tanh(self)

    def abs(self) -> Tensor:
        return F.abs(self)

    def sqrt(self) -> Tensor:
        return F.sqrt(self)

    def sin(self) -> Tensor:
        return F.sin(self)

    def cos(self) -> Tensor:
        return F.cos(self)

    def erf(self) -> Tensor:
        return F.erf(self)

    def log1p(self) -> Tensor:
        return F.log1p(self)

    def square(self) -> Tensor:
        return F.square(self)

    def clip(self, min: float | None = None, max: float | None = None) -> Tensor:  # noqa: A002
        return F.clip(self, min, max)

    clamp = clip

    def where(self, cond: Any, other: Any) -> Tensor:
        """``self`` where ``cond`` is True, else ``other``: ``F.where(cond, self, other)``."""
        return F.where(cond, self, other)

    def minimum(self, other: Any) -> Tensor:
        return F.minimum(self, other)

    def maximum(self, other: Any) -> Tensor:
        return F.maximum(self, other)

    # Reductions and shape methods take functional's arguments (``axis``, or ``dim``).
    def min(self, axis: Axis = None, keepdims: bool = False, **dim: Any) -> Any:
        return F.min(self, **_axes(axis, keepdims, dim))

    def var(self, *args: Any, **kwargs: Any) -> Any:
        return F.var(self, *args, **kwargs)

    def std(self, *args: Any, **kwargs: Any) -> Any:
        return F.std(self, *args, **kwargs)

    def logsumexp(self, *args: Any, **kwargs: Any) -> Any:
        return F.logsumexp(self, *args, **kwargs)

    def norm(self, *args: Any, **kwargs: Any) -> Any:
        return F.norm(self, *args, **kwargs)

    def argmax(self, *args: Any, **kwargs: Any) -> Any:
        return F.argmax(self, *args, **kwargs)

    def argmin(self, *args: Any, **kwargs: Any) -> Any:
        return F.argmin(self, *args, **kwargs)

    def unsqueeze(self, *args: Any, **kwargs: Any) -> Any:
        return F.unsqueeze(self, *args, **kwargs)

    def squeeze(self, *args: Any, **kwargs: Any) -> Any:
        return F.squeeze(self, *args, **kwargs)

    def flip(self, *args: Any, **kwargs: Any) -> Any:
        return F.flip(self, *args, **kwargs)

    def split(self, *args: Any, **kwargs: Any) -> Any:
        return F.split(self, *args, **kwargs)

    def chunk(self, *args: Any, **kwargs: Any) -> Any:
        return F.chunk(self, *args, **kwargs)

    def broadcast_to(self, *args: Any, **kwargs: Any) -> Any:
        return F.broadcast_to(self, *args, **kwargs)

    def expand(self, *args: Any, **kwargs: Any) -> Any:
        return F.expand(self, *args, **kwargs)

    def plot(self, path: str, **kwargs: Any) -> Any:
        """Render the graph that produced this tensor (see ``tinygrad_cnn.viz.render_graph``)."""
        from .viz import render_graph

        return render_graph(self, path, **kwargs)

    def _repr_svg_(self) -> str | None:
        """Jupyter: show the graph of a non-leaf tensor inline."""
        if self._ctx is None:
            return None
        from .viz import draw_graph

        try:
            return draw_graph(self)._repr_image_svg_xml()
        except Exception:  # no ``dot`` binary: fall back to the text repr
            return None

    def _repr_html_(self) -> str | None:
        """Jupyter: the interactive graph explorer of a non-leaf tensor, in an iframe."""
        from .explore import notebook_html

        return notebook_html(self)


def _compare(op: str, fn: Any, a: Tensor, other: Any) -> np.ndarray:
    """Elementwise comparison; shapes that do not broadcast raise naming the operator."""
    b = _value(other)
    try:
        return fn(a._data, b)
    except ValueError:
        raise ValueError(
            f"Tensor {op}: shapes {a.shape} and {np.shape(b)} do not broadcast (== compares "
            "elementwise; for identity use `is`)"
        ) from None


def _value(x: Any) -> Any:
    return x._data if isinstance(x, Tensor) else x


def _axes(axis: Any, keepdims: bool, alias: dict[str, Any]) -> dict[str, Any]:
    """``axis``/``keepdims`` for a reduction, with PyTorch's ``dim``/``keepdim`` accepted."""
    numpy_args = {k: alias.pop(k) for k in ("out", "dtype") if k in alias}  # np.sum(t) passes
    given = sorted(k for k, v in numpy_args.items() if v is not None)
    if given:
        raise TypeError(
            f"reduction: a Tensor takes no {' or '.join(given)} argument (NumPy's np.sum/np.max "
            "pass them); reduce t.numpy() with NumPy for that"
        )
    unknown = sorted(set(alias) - {"dim", "keepdim"})
    if unknown:
        raise TypeError(f"reduction: unexpected keyword argument(s) {unknown}")
    if "dim" in alias:
        if axis is not None:
            raise TypeError("reduction: got both axis and its alias dim")
        axis = alias["dim"]
    keepdims = alias.get("keepdim", keepdims)
    return {"axis": axis, "keepdims": keepdims}


class _TensorHooks:
    """A tensor's gradient hooks and whether it retains its gradient."""

    __slots__ = ("fns", "retains_grad")

    def __init__(self) -> None:
        self.fns: tuple[Callable[[np.ndarray], Any], ...] = ()
        self.retains_grad = False


def as_tensor(x: Any, like: Tensor | None = None) -> Tensor:
    """Wrap ``x`` as a Tensor. Python scalars take ``like``'s float dtype (no silent upcast)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, int | float) and not isinstance(x, bool) and like is not None:
        dtype = like.dtype if like.dtype.kind == "f" else np.float32
        return Tensor(np.asarray(x, dtype=dtype))
    return Tensor(x)


from . import functional as F  # noqa: E402  (functional imports Tensor; import last)
