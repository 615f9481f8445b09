"""First-order optimizers that update parameters in place.

A parameter is any object with ``.data`` (a floating ``np.ndarray``, updated in
place and never rebound), ``.grad`` (an array of the same shape and dtype, or
``None`` to skip the parameter this step) and ``.name`` (``str`` or ``None``).

Weight decay is plain L2 regularisation folded into the gradient,
``g = grad + weight_decay * data``, for every optimizer (so Adam here is not
AdamW); ``.grad`` itself is never modified.

State arrays and one scratch buffer per parameter are allocated with the
parameter's dtype on the first step that reaches it; updates then run through
in-place ufuncs only, so float32 stays float32 and no full-size temporaries are
made. Parameters narrower than float32 (float16) keep their state in float32
and are updated in float32, then rounded back: in float16 an ``eps`` such as
Adam's 1e-8 underflows to 0, and ``0 / 0`` would turn every parameter whose
gradient is zero into NaN. Hyperparameters are kept and used as Python floats: a 0-d float64 array
would upcast float32 math under NumPy 2's promotion rules.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from . import parallel
from .tracked import written

__all__ = [
    "Optimizer",
    "SGD",
    "Momentum",
    "Nesterov",
    "AdaGrad",
    "RMSprop",
    "Adam",
    "get_optimizer",
]

Params = Iterable[Any]
StateValue = np.ndarray | float | int
_UNIT_INTERVAL = ("momentum", "decay_rate", "beta1", "beta2")


def _hp(name: str, value: Any) -> float:
    """Validate hyperparameter ``name`` and return it as a Python float."""
    if isinstance(value, str | bytes) or np.ndim(value) != 0:
        raise TypeError(f"{name} must be a real number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if name in _UNIT_INTERVAL:
        ok, rule = 0.0 <= v < 1.0, "in [0, 1)"
    elif name == "eps":
        ok, rule = v > 0.0, "> 0"
    else:  # lr, weight_decay
        ok, rule = v >= 0.0 and math.isfinite(v), "finite and >= 0"
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {v}")
    return v


@functools.lru_cache(maxsize=16)
def compute_dtype(dtype: Any) -> np.dtype:
    """The dtype an optimizer keeps state and computes in for parameters of ``dtype``
    (float32 at least: float16 state would underflow)."""
    return np.promote_types(dtype, np.float32)


def _label(i: int, p: Any) -> str:
    name = getattr(p, "name", None)
    return f"parameter {i} ({name})" if name else f"parameter {i}"


class Optimizer:
    """Base class: parameter bookkeeping, weight decay and state (de)serialisation.

    Parameters
    ----------
    params : iterable of parameters
        Materialised to a list; must be non-empty and free of duplicates.
    lr : float
        Learning rate, ``>= 0``.
    weight_decay : float, default 0.0
        L2 coefficient; the update uses ``g + weight_decay * p`` as gradient.

    Notes
    -----
    Subclasses name their hyperparameters in ``hyperparams`` and their
    per-parameter state arrays in ``slots``, and implement ``_update``.
    """

    hyperparams: ClassVar[tuple[str, ...]] = ("lr", "weight_decay")
    slots: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Params, lr: float, weight_decay: float = 0.0) -> None:
        if hasattr(params, "data") and hasattr(params, "grad"):
            raise TypeError("params must be an iterable of parameters, e.g. [p], not a parameter")
        self.params: list[Any] = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        seen: dict[Any, int] = {}
        for i, p in enumerate(self.params):
            data = getattr(p, "data", None)
            if not isinstance(data, np.ndarray) or not np.issubdtype(data.dtype, np.floating):
                raise TypeError(f"{_label(i, p)} needs a floating-point ndarray as .data")
            # ``.data`` may be a fresh view on every access: compare the memory, not the object
            address = ("data", data.__array_interface__["data"][0]) if data.size else None
            for key in (id(p), address):
                if key is None:
                    continue
                if key in seen:
                    j = seen[key]
                    raise ValueError(f"{_label(i, p)} duplicates {_label(j, self.params[j])}")
                seen[key] = i
        self.lr = _hp("lr", lr)
        self.weight_decay = _hp("weight_decay", weight_decay)
        self.step_count = 0  # number of step() calls
        n = len(self.params)
        self._t = [0] * n  # updates applied to each parameter
        self.state: list[dict[str, np.ndarray]] = [{} for _ in range(n)]
        self._tmp: list[np.ndarray | None] = [None] * n  # scratch for the update
        self._gbuf: list[np.ndarray | None] = [None] * n  # holds g + wd * p

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.hyperparams)
        return f"{type(self).__name__}({hp}, params={len(self.params)})"

    def _state(self, i: int) -> dict[str, np.ndarray]:
        st = self.state[i]
        if not st:
            w = self.params[i].data
            st.update((s, np.zeros(w.shape, dtype=compute_dtype(w.dtype))) for s in self.slots)
        return st

    def step(self) -> None:
        """Apply one update to every parameter whose ``.grad`` is not None.

        Every gradient is checked first: a mis-shaped one raises ``ValueError`` naming its
        parameter before any parameter changes.
        """
        grads = [_values(p.grad) for p in self.params]  # a create_graph .grad is a Tensor
        for i, (p, g) in enumerate(zip(self.params, grads, strict=True)):
            w = p.data
            if g is not None and (
                not isinstance(g, np.ndarray | np.generic)
                or g.shape != w.shape
                or g.dtype != w.dtype
            ):
                got = f"{g.shape} {g.dtype}" if hasattr(g, "dtype") else type(g).__name__
                what = "" if hasattr(g, "dtype") else " (not an array)"
                raise ValueError(
                    f"{_label(i, p)}: grad is {got}{what}, data is {w.shape} {w.dtype}"
                )
        wd = float(self.weight_decay)
        for i, p in enumerate(self.params):
            if grads[i] is None:
                continue
            g, w = grads[i], written(p.data)  # one version bump, then plain NumPy
            ct = compute_dtype(w.dtype)
            narrow = ct != w.dtype  # float16: update a float32 copy, then round back
            wc = w.astype(ct) if narrow else w
            tmp = self._tmp[i]
            if tmp is None:
                tmp = self._tmp[i] = np.empty(w.shape, ct)
            if wd != 0.0:
                if self._gbuf[i] is None:
                    self._gbuf[i] = np.empty(w.shape, ct)
                g = np.multiply(wc, wd, out=self._gbuf[i])
                g += grads[i]
            elif narrow:
                g = g.astype(ct)
            self._t[i] += 1
            self._update_in_blocks(wc, g, self._state(i), tmp, self._t[i])
            if narrow:
                np.copyto(w, wc, casting="same_kind")
        self.step_count += 1

    def _update_in_blocks(
        self, w: np.ndarray, g: np.ndarray, st: dict[str, np.ndarray], tmp: np.ndarray, t: int
    ) -> None:
        """``_update`` on blocks of the flattened arrays, in parallel (``parallel.run``).

        Blocks of 64K elements keep the five arrays of a block in the core's cache.
        """
        names = list(st)

        def update(w: np.ndarray, g: np.ndarray, tmp: np.ndarray, *slots: np.ndarray) -> None:
            self._update(w, g, dict(zip(names, slots, strict=True)), tmp, t)

        parallel.elementwise(update, w, g, tmp, *st.values(), block=parallel.BLOCK // 2)

    def _update(
        self, w: np.ndarray, g: np.ndarray, st: dict[str, np.ndarray], tmp: np.ndarray, t: int
    ) -> None:
        """Update ``w`` in place from gradient ``g``; ``tmp`` is scratch, ``t`` is 1-based.

        Must be elementwise (no norms or sums over ``w``): split across threads, it is called
        on blocks of the flattened arrays.
        """
        raise NotImplementedError

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset gradients to None (default) or, with ``set_to_none=False``, to 0 in place."""
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad[...] = 0

    def state_dict(self) -> dict[str, StateValue]:
        """Return a flat snapshot of the optimizer, savable with ``np.savez``.

        Returns
        -------
        dict
            ``"step"``: int, number of ``step()`` calls. One plain Python
            float per hyperparameter, keyed by its name (``"lr"``,
            ``"weight_decay"``, ``"beta1"``, ...). Per parameter ``i``:
            ``"state.{i}.t"`` (int, updates applied to it) and
            ``"state.{i}.{slot}"`` (a copy of each state array, in the
            parameter's shape and dtype, float32 for float16 parameters; zeros
            if never updated).
        """
        d: dict[str, StateValue] = {"step": self.step_count}
        d.update((k, float(getattr(self, k))) for k in self.hyperparams)
        for i in range(len(self.params)):
            d[f"state.{i}.t"] = self._t[i]
            d.update((f"state.{i}.{s}", a.copy()) for s, a in self._state(i).items())
        return d

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a snapshot made by :meth:`state_dict`, hyperparameters included.

        Accepts the dict or the ``NpzFile`` returned by ``np.load``. Everything
        is validated before anything changes; arrays are copied in.

        Raises
        ------
        ValueError
            Parameter-count mismatch, missing or unexpected key, bad scalar, or
            a state array whose shape or dtype differs from its parameter's;
            the message names the entry.
        """
        if not hasattr(state, "keys"):
            raise TypeError(
                f"load_state_dict: state must be a dict (or NpzFile), got {type(state).__name__}"
            )
        n, keys = len(self.params), set(state.keys())
        idx = {k.split(".")[1] for k in keys if k.startswith("state.") and k.count(".") == 2}
        if len(idx) != n:
            raise ValueError(f"state_dict holds state for {len(idx)} parameters, expected {n}")
        want = {"step", *self.hyperparams}
        want.update(f"state.{i}.{s}" for i in range(n) for s in ("t", *self.slots))
        if missing := sorted(want - keys):
            raise ValueError(f"state_dict is missing entry {missing[0]!r}")
        if extra := sorted(keys - want):
            raise ValueError(f"state_dict has unexpected entry {extra[0]!r}")

        def integer(key: str) -> int:
            v = np.asarray(state[key])
            if v.ndim != 0 or v.dtype.kind not in "iu" or v < 0:
                raise ValueError(f"state_dict entry {key!r} must be a non-negative integer")
            return int(v)

        hyper = {}
        for k in self.hyperparams:
            v = np.asarray(state[k])
            if v.ndim != 0 or v.dtype.kind not in "iuf":
                raise ValueError(f"state_dict entry {k!r} must be a real scalar")
            try:
                hyper[k] = _hp(k, v)
            except ValueError as e:
                raise ValueError(f"state_dict entry {k!r}: {e}") from None
        counts = [integer(f"state.{i}.t") for i in range(n)]
        step = integer("step")
        arrays = {}
        for i, p in enumerate(self.params):
            w, ct = p.data, compute_dtype(p.data.dtype)
            for s in self.slots:
                key = f"state.{i}.{s}"
                a = arrays[i, s] = np.asarray(state[key])
                if a.shape != w.shape or a.dtype != ct:
                    raise ValueError(
                        f"state_dict entry {key!r} is {a.shape} {a.dtype}; "
                        f"{_label(i, p)} needs {w.shape} {ct}"
                    )
        for k, v in hyper.items():
            setattr(self, k, v)
        self.step_count, self._t = step, counts
        for (i, s), a in arrays.items():
            np.copyto(self._state(i)[s], a)


class SGD(Optimizer):
    """Stochastic gradient descent: ``p -= lr * g``."""

    def __init__(self, params: Params, lr: float = 0.01, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr, weight_decay)

    def _update(self, w, g, st, tmp, t):
        np.multiply(g, float(self.lr), out=tmp)
        w -= tmp


class Momentum(Optimizer):
    """Classical momentum: ``v = momentum * v - lr * g; p += v``, with ``v`` starting at 0."""

    hyperparams = ("lr", "momentum", "weight_decay")
    slots = ("v",)

    def __init__(
        self, params: Params, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0
    ) -> None:
        super().__init__(params, lr, weight_decay)
        self.momentum = _hp("momentum", momentum)

    def _update(self, w, g, st, tmp, t):
        v = st["v"]
        v *= float(self.momentum)
        np.multiply(g, float(self.lr), out=tmp)
        v -= tmp
        w += v


class Nesterov(Momentum):
    """Nesterov momentum, Sutskever/Bengio form (gradient evaluated at ``p``).

    With ``m = momentum`` and ``v`` the velocity from the previous step::

        p += m * m * v - (1 + m) * lr * g
        v  = m * v - lr * g

    computed as the equivalent ``v = m*v - lr*g; p += m*v - lr*g``. Some
    printings of the book's code apply ``m*m`` to the *updated* ``v``, which
    counts ``-lr*g`` twice; this class does not.
    """

    def _update(self, w, g, st, tmp, t):
        v, m = st["v"], float(self.momentum)
        v *= m
        np.multiply(g, float(self.lr), out=tmp)
        v -= tmp
        w -= tmp
        np.multiply(v, m, out=tmp)
        w += tmp


def _rms_step(w: np.ndarray, g: np.ndarray, h: np.ndarray, tmp: np.ndarray, lr, eps) -> None:
    """``w -= lr * g / (sqrt(h) + eps)`` in place, with ``tmp`` as scratch."""
    np.sqrt(h, out=tmp)
    tmp += eps
    np.divide(g, tmp, out=tmp)
    tmp *= lr
    w -= tmp


class AdaGrad(Optimizer):
    """AdaGrad: ``h += g * g; p -= lr * g / (sqrt(h) + eps)``, with ``h`` starting at 0."""

    hyperparams = ("lr", "eps", "weight_decay")
    slots = ("h",)

    def __init__(
        self, params: Params, lr: float = 0.01, eps: float = 1e-7, weight_decay: float = 0.0
    ) -> None:
        super().__init__(params, lr, weight_decay)
        self.eps = _hp("eps", eps)

    def _update(self, w, g, st, tmp, t):
        np.multiply(g, g, out=tmp)
        st["h"] += tmp
        _rms_step(w, g, st["h"], tmp, float(self.lr), float(self.eps))


class RMSprop(Optimizer):
    """RMSprop: ``h = d*h + (1 - d)*g*g; p -= lr * g / (sqrt(h) + eps)``, ``d = decay_rate``."""

    hyperparams = ("lr", "decay_rate", "eps", "weight_decay")
    slots = ("h",)

    def __init__(
        self,
        params: Params,
        lr: float = 0.01,
        decay_rate: float = 0.99,
        eps: float = 1e-7,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr, weight_decay)
        self.decay_rate, self.eps = _hp("decay_rate", decay_rate), _hp("eps", eps)

    def _update(self, w, g, st, tmp, t):
        h, d = st["h"], float(self.decay_rate)
        h *= d
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - d
        h += tmp
        _rms_step(w, g, h, tmp, float(self.lr), float(self.eps))


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction.

    With ``t`` the number of updates this parameter has received (from 1)::

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1**t);  v_hat = v / (1 - beta2**t)
        p -= lr * m_hat / (sqrt(v_hat) + eps)

    so ``eps`` is added outside the square root, to the bias-corrected
    ``sqrt(v_hat)``. The code evaluates the algebraically identical
    ``p -= (lr * sqrt(c2) / c1) * m / (sqrt(v) + eps * sqrt(c2))`` with
    ``c1 = 1 - beta1**t`` and ``c2 = 1 - beta2**t``, saving passes over memory.
    """

    hyperparams = ("lr", "beta1", "beta2", "eps", "weight_decay")
    slots = ("m", "v")

    def __init__(
        self,
        params: Params,
        lr: float = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr, weight_decay)
        self.beta1, self.beta2 = _hp("beta1", beta1), _hp("beta2", beta2)
        self.eps = _hp("eps", eps)

    def _update(self, w, g, st, tmp, t):
        b1, b2, m, v = float(self.beta1), float(self.beta2), st["m"], st["v"]
        m *= b1
        np.multiply(g, 1.0 - b1, out=tmp)
        m += tmp
        v *= b2
        np.multiply(g, g, out=tmp)
        tmp *= 1.0 - b2
        v += tmp
        root_c2 = math.sqrt(1.0 - b2**t)
        np.sqrt(v, out=tmp)
        tmp += float(self.eps) * root_c2
        np.divide(m, tmp, out=tmp)
        tmp *= float(self.lr) * root_c2 / (1.0 - b1**t)
        w -= tmp


_OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def _values(g: Any) -> Any:
    """A gradient as an array: the values of a Tensor ``.grad`` (``create_graph``), as is else."""
    return g.numpy() if hasattr(g, "_ctx") else g


def get_optimizer(name: str, params: Params, **kwargs: Any) -> Optimizer:
    """Build an optimizer by case-insensitive name.

    Parameters
    ----------
    name : str
        One of ``sgd, momentum, nesterov, adagrad, rmsprop, adam``.
    params : iterable of parameters
        Passed to the optimizer.
    **kwargs
        Hyperparameters accepted by that optimizer's constructor.

    Raises
    ------
    ValueError
        Unknown ``name``; the message lists the valid names.
    TypeError
        A keyword the chosen optimizer does not accept; the message names it.
    """
    cls = _OPTIMIZERS.get(str(name).strip().lower())
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(_OPTIMIZERS)}")
    accepted = list(inspect.signature(cls.__init__).parameters)[2:]  # drop self, params
    if bad := sorted(set(kwargs) - set(accepted)):
        raise TypeError(
            f"{cls.__name__} got unexpected keyword argument(s) {', '.join(bad)}; "
            f"accepted: {', '.join(accepted)}"
        )
    return cls(params, **kwargs)
