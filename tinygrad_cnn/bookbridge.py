"""The bridge to the book's layers: their conventions, and ``as_function`` to use one as an op.

A book-style layer has ``forward(x)`` and ``backward(dout)`` on NumPy arrays and stores its
parameter gradients as ``dW``/``db`` (``dgamma``/``dbeta``); a loss layer has
``forward(x, t)`` and ``backward(dout=1)``. ``tinygrad_cnn.book`` checks such layers.
"""

from __future__ import annotations

import inspect
import os
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .autograd import Function
from .tensor import Tensor

__all__ = [
    "BOOK_PARAMS",
    "BookLayer",
    "LayerError",
    "as_function",
    "is_loss_layer",
    "layer_error",
    "layer_kind",
    "layer_kinks",
    "param_pairs",
    "user_frame",
    "windows_of",
]

#: The book's parameter -> gradient attribute names (``check_layer(params=...)`` overrides).
BOOK_PARAMS = {"W": "dW", "b": "db", "gamma": "dgamma", "beta": "dbeta"}


class LayerError(RuntimeError):
    """Your layer's own ``forward`` or ``backward`` raised; the message names the layer and
    the line of your file. ``phase`` is ``"forward"`` or ``"backward"``."""

    def __init__(self, message: str, phase: str = "forward") -> None:
        super().__init__(message)
        self.phase = phase


def _library_dirs() -> tuple[str, ...]:
    import copy

    dirs = [os.path.dirname(os.path.abspath(__file__)), os.path.dirname(np.__file__)]
    dirs.append(os.path.dirname(copy.__file__))  # the standard library
    return tuple(d + os.sep for d in dirs)


def user_frame(exc: BaseException) -> str | None:
    """``file:line`` of the innermost frame of ``exc``'s traceback in the user's code (not in
    tinygrad_cnn, NumPy or the standard library), or None."""
    skip = _library_dirs()
    frames = traceback.extract_tb(exc.__traceback__)
    for fr in reversed(frames):
        path = os.path.abspath(fr.filename)
        if not path.startswith(skip) and not fr.filename.startswith("<"):
            return f"{fr.filename}:{fr.lineno}"
    return None


def layer_error(who: str, what: str, exc: BaseException, phase: str) -> LayerError:
    """A :class:`LayerError` saying that ``what`` raised ``exc``, and where in the user's file."""
    where = user_frame(exc)
    at = f" at {where}" if where else ""
    return LayerError(f"{who}: {what} raised {type(exc).__name__}{at}: {exc}", phase)


def _required_positional(method: Callable[..., Any]) -> int:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ps = inspect.signature(method).parameters.values()
    return sum(p.kind in kinds and p.default is inspect.Parameter.empty for p in ps)


def _takes(method: Callable[..., Any], name: str) -> bool:
    return name in inspect.signature(method).parameters


def is_loss_layer(layer: Any) -> bool:
    """True for a layer whose ``forward`` takes ``(x, t)`` (the book's ``SoftmaxWithLoss``)."""
    for method in ("forward", "backward"):
        if not callable(getattr(layer, method, None)):
            raise TypeError(
                f"{type(layer).__name__}: a book-style layer needs forward(x) and "
                f"backward(dout); {method} is missing"
            )
    return _required_positional(layer.forward) >= 2


def param_pairs(layer: Any, params: Mapping[str, str] | None = None) -> dict[str, str]:
    """The layer's (parameter, gradient) attribute names, by the book's names or ``params``."""
    if params is None:
        return {
            p: g for p, g in BOOK_PARAMS.items() if isinstance(getattr(layer, p, None), np.ndarray)
        }
    missing = [p for p in params if not isinstance(getattr(layer, p, None), np.ndarray)]
    if missing:
        raise ValueError(
            f"{type(layer).__name__}: params names {missing}, which are not arrays of the layer"
        )
    return dict(params)


def windows_of(layer: Any) -> tuple[int, int, int, int] | None:
    """(KH, KW, stride, pad) of a pooling or convolution layer, from the book's attributes."""
    stride, pad = getattr(layer, "stride", None), getattr(layer, "pad", 0)
    if not isinstance(stride, int | np.integer) or not isinstance(pad, int | np.integer):
        return None
    if hasattr(layer, "pool_h") and hasattr(layer, "pool_w"):
        return int(layer.pool_h), int(layer.pool_w), int(stride), int(pad)
    W = getattr(layer, "W", None)
    if isinstance(W, np.ndarray) and W.ndim == 4:
        return int(W.shape[2]), int(W.shape[3]), int(stride), int(pad)
    return None


def layer_kind(layer: Any) -> str:
    """``relu``, ``dropout``, ``pool``, ``conv``, ``affine`` or ``""``: how to word a diagnosis."""
    name = type(layer).__name__.lower()
    if "relu" in name:
        return "relu"
    if "dropout" in name or hasattr(layer, "dropout_ratio"):
        return "dropout"
    if windows_of(layer) is not None:
        return "pool" if hasattr(layer, "pool_h") else "conv"
    W = getattr(layer, "W", None)
    return "affine" if isinstance(W, np.ndarray) and W.ndim == 2 else ""


def layer_kinks(layer: Any, x: np.ndarray, margin: float) -> np.ndarray | None:
    """Elements of ``x`` within ``margin`` of a kink of a ReLU- or max-pooling-like layer."""
    if "relu" in type(layer).__name__.lower():
        return np.abs(x) <= margin
    w = windows_of(layer)
    if w is None or not hasattr(layer, "pool_h") or x.ndim != 4:
        return None
    kh, kw, s, p = w
    pool = Function.registry["MaxPool2d"](kernel=(kh, kw), stride=(s, s), padding=(p, p))
    return pool.kinks(x, margin=margin)[0]  # the built-in op's rule for ties


def _forward(layer: Any, x: np.ndarray, t: Any, loss: bool, train_flg: bool) -> Any:
    if loss:
        return layer.forward(x, t)
    if _takes(layer.forward, "train_flg"):
        return layer.forward(x, train_flg=train_flg)
    return layer.forward(x)


def _backward(layer: Any, dout: Any, loss: bool) -> Any:
    if loss:
        return (
            layer.backward(1)
            if _required_positional(layer.backward) or _takes(layer.backward, "dout")
            else layer.backward()
        )
    return layer.backward(np.array(dout, copy=True))  # the book's Relu writes into dout


class BookLayer(Function, register=False):
    """A book-style layer as an op of our graphs: inputs ``(x, *params[, t])``.

    The instance ``as_function`` returns is a template: calling it applies the op. Each node
    keeps the layer's state after its forward (its cached arrays) and puts it back for its
    backward, so the node is self-contained. The call (on the layer's own parameter arrays)
    updates the layer as ``layer.forward`` would; a re-run of the node (the audit's float64
    copies) leaves the layer untouched and draws the same NumPy random numbers (dropout masks).
    """

    layer: Any
    names: tuple[str, ...]
    grads: tuple[str, ...]
    loss: bool
    train_flg: bool
    rng_state: Any
    live: list[bool] | None = None

    @property
    def name(self) -> str:
        return type(self.layer).__name__

    def __call__(self, x: Any, t: Any = None) -> Tensor:
        """Apply the layer: ``x`` (and labels ``t`` for a loss layer) -> output Tensor."""
        if self.loss and t is None:
            raise ValueError(f"{self.name}: a loss layer is called as fn(x, t)")
        inputs = [x, *self.params, *([t] if self.loss else [])]
        state = np.random.get_state()  # noqa: NPY002 (the book's global RNG)
        # The attrs (this list too) are shared by every re-run of the node: only the first
        # forward is the live one, whether or not the layer has parameters.
        return type(self).apply(*inputs, **{**self.attrs(), "rng_state": state, "live": [True]})

    def forward(self, x, *rest):
        layer, k = self.layer, len(self.names)
        ps, t = rest[:k], (rest[k] if self.loss else None)
        before = dict(vars(layer))
        live = getattr(self, "live", None)
        own = bool(live) and live[0]
        own = own and all(p is before.get(n) for n, p in zip(self.names, ps, strict=True))
        if live:
            live[0] = False
        saved = np.random.get_state()  # noqa: NPY002 (the book's global RNG)
        if not own and self.rng_state is not None:
            np.random.set_state(self.rng_state)  # the same dropout mask as the first run  # noqa: NPY002 (the book's global RNG)
        try:
            for n, p in zip(self.names, ps, strict=True):
                setattr(layer, n, p)
            y = np.asarray(_forward(layer, x, t, self.loss, self.train_flg))
        finally:
            self.ctx = dict(vars(layer))
            if not own:
                np.random.set_state(saved)  # noqa: NPY002 (the book's global RNG)
                vars(layer).clear()
                vars(layer).update(before)
        self.dtypes = (x.dtype, *(p.dtype for p in ps))
        return y.astype(x.dtype, copy=False)

    def backward(self, gy):
        layer = self.layer
        current = dict(vars(layer))
        vars(layer).clear()
        vars(layer).update(self.ctx)
        try:
            gx = _backward(layer, gy, self.loss)
            gx = np.asarray(gx) * gy if self.loss else gx
            gs = [getattr(layer, g, None) for g in self.grads]
        finally:
            vars(layer).clear()
            vars(layer).update(current)
        out = [
            None if g is None else np.asarray(g).astype(d, copy=False)
            for g, d in zip([gx, *gs], self.dtypes, strict=True)
        ]
        return (*out, None) if self.loss else tuple(out)

    def kinks(self, x, *rest, margin):
        mask = layer_kinks(self.layer, x, margin)
        return None if mask is None else [mask, *([None] * len(rest))]


def as_function(
    layer: Any,
    params: Mapping[str, str] | None = None,
    train_flg: bool = True,
    labels: Mapping[str, str] | None = None,
) -> BookLayer:
    """Wrap a book-style layer as a ``Function``: ``fn(x)`` (``fn(x, t)`` for a loss layer).

    Its parameters become leaf Tensors ``fn.params`` that share memory with the layer's
    arrays (named ``W``, ``b``..., or ``labels[name]``), so gradients reach them and an
    optimizer step updates the layer. ReLU- and max-pooling-like layers declare their kinks
    (``Function.kinks``), so ``audit_graph`` holds those elements fixed.

    Examples
    --------
    >>> fn = as_function(Affine(W, b))
    >>> loss = (fn(Tensor(x)) ** 2).sum(); loss.backward(); fn.params[0].grad.shape
    """
    pairs = param_pairs(layer, params)
    fn = BookLayer(
        layer=layer,
        names=tuple(pairs),
        grads=tuple(pairs.values()),
        loss=is_loss_layer(layer),
        train_flg=train_flg,
        rng_state=None,
    )
    labels = labels or {}
    fn.params = [
        Tensor(getattr(layer, p), requires_grad=True, name=labels.get(p, p)) for p in pairs
    ]
    return fn
