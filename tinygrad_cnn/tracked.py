"""``TrackedArray``: what ``Tensor.data`` returns, a view that counts in-place writes.

An op that saved an array for backward computes a wrong gradient if the array is changed
before backward runs (``y = (a * b).sum(); b.data[...] = 0``). Every write through
``tensor.data`` (item assignment, in-place operators, ufuncs with ``out=``, ``fill``,
``np.copyto`` and friends) bumps the tensor's version counter, and backward refuses an op
whose saved inputs changed version, as PyTorch does. The view is an ndarray in every other
respect; new arrays computed from it (``t.data * 2``, ``t.data.copy()``) are plain ndarrays.
Writes through other references to the same memory (the array you passed to ``Tensor``,
``tensor.numpy()``) are not seen.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: NumPy functions that write into their first argument.
_WRITERS = frozenset(
    f
    for f in (np.copyto, np.put, np.place, np.putmask, np.put_along_axis, np.fill_diagonal)
    if f is not None
)


def _bump(a: Any) -> None:
    version = getattr(a, "_version", None)
    if version is not None:
        version[0] += 1


def _plain(a: Any) -> Any:
    return a.view(np.ndarray) if isinstance(a, TrackedArray) else a


class TrackedArray(np.ndarray):
    """An ndarray view whose in-place writes increment ``_version[0]`` (a tensor's counter)."""

    _version: list[int] | None = None

    def __array_finalize__(self, obj: Any) -> None:
        # A view writes into the tensor's memory and shares its counter; a new array does not.
        self._version = getattr(obj, "_version", None) if self.base is not None else None

    def __setitem__(self, index: Any, value: Any) -> None:
        _bump(self)
        super().__setitem__(index, value)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        out = kwargs.get("out")
        if out is not None:
            for o in out:
                _bump(o)
            kwargs["out"] = tuple(_plain(o) for o in out)
        result = getattr(ufunc, method)(*(_plain(x) for x in inputs), **kwargs)
        if out is not None:  # hand back the caller's own objects (``a += 1`` rebinds ``a``)
            return out[0] if len(out) == 1 else tuple(out)
        return result

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        if func in _WRITERS and args:
            _bump(args[0])
        result = super().__array_function__(func, types, args, kwargs)
        if isinstance(result, TrackedArray) and result._version is None:
            return result.view(np.ndarray)
        return result

    def fill(self, value: Any) -> None:
        _bump(self)
        super().fill(value)

    def sort(self, *args: Any, **kwargs: Any) -> None:
        _bump(self)
        super().sort(*args, **kwargs)

    def partition(self, *args: Any, **kwargs: Any) -> None:
        _bump(self)
        super().partition(*args, **kwargs)

    def put(self, *args: Any, **kwargs: Any) -> None:
        _bump(self)
        super().put(*args, **kwargs)

    def copy(self, order: Any = "C") -> np.ndarray:
        return self.view(np.ndarray).copy(order)

    def astype(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return self.view(np.ndarray).astype(*args, **kwargs)

    def flatten(self, order: Any = "C") -> np.ndarray:
        return self.view(np.ndarray).flatten(order)

    def __reduce__(self) -> Any:
        return self.view(np.ndarray).__reduce__()

    def __repr__(self) -> str:
        return repr(self.view(np.ndarray))


def tracked_view(a: np.ndarray, version: list[int]) -> TrackedArray:
    """A view of ``a`` whose writes bump ``version[0]``."""
    v = a.view(TrackedArray)
    v._version = version
    return v


def written(a: np.ndarray) -> np.ndarray:
    """Count one write to ``a`` (e.g. a parameter's ``.data``) and return a plain view of it.

    For code that updates an array in place many times in a row (an optimizer step): one
    version bump, then NumPy at full speed on the plain view.
    """
    _bump(a)
    return a.view(np.ndarray) if isinstance(a, TrackedArray) else a
