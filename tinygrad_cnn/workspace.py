"""``workspace``: the caching allocator the hot ops take their big arrays from.

A training step then reuses the memory of the previous one instead of asking the OS for
fresh (page-faulting) memory every time.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import Any

import numpy as np


def _refcount(bufs: list[np.ndarray], i: int) -> int:
    return sys.getrefcount(bufs[i])


#: What ``_refcount`` reports for an array held by nothing but its list (measured, not assumed:
#: interpreters differ in how many temporary references a call makes).
_UNUSED = _refcount([np.empty(0)], 0)


class Workspace:
    """A small caching allocator: big arrays are reused from step to step instead of freed.

    A fresh multi-megabyte array costs page faults (the OS hands out zeroed pages on first
    touch), often more than the arithmetic that fills it. PyTorch avoids this with a caching
    allocator; here the hot ops ask ``workspace.empty`` for their outputs, scratch and saved
    arrays. The workspace keeps every array it hands out, and hands one out again only when it
    holds the last reference to it (CPython's reference count says so; a view keeps its base
    alive, so views count too). An output a user still holds, or an array saved by a graph
    not yet backpropagated, is therefore never overwritten: reuse is invisible.

    Arrays under ``min_bytes`` come from ``np.empty`` (small blocks are cheap). Pooled arrays
    stay below ``max_bytes`` in total: to make room, unused arrays of the shapes least recently
    asked for are dropped; when all are in use, a new array is simply not pooled.
    """

    def __init__(self, max_bytes: int = 512 << 20, min_bytes: int = 128 << 10) -> None:
        self.max_bytes, self.min_bytes = max_bytes, min_bytes
        # Needs exact reference counts: CPython with its GIL (not PyPy, not free-threaded).
        gil = getattr(sys, "_is_gil_enabled", lambda: True)()
        self.enabled = sys.implementation.name == "cpython" and gil
        self._pools: dict[tuple[tuple[int, ...], np.dtype], list[np.ndarray]] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.allocations = 0  # arrays this pool had to create (a steady state adds none)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """An uninitialised C-contiguous array, reused when a pooled one is unused."""
        dtype = np.dtype(dtype)
        nbytes = dtype.itemsize * math.prod(shape)
        if nbytes < self.min_bytes or not self.enabled:
            return np.empty(shape, dtype)
        key = (tuple(shape), dtype)
        with self._lock:
            bufs = self._pools.pop(key, [])
            self._pools[key] = bufs  # most recently asked for last
            for i in range(len(bufs)):
                if _refcount(bufs, i) == _UNUSED:
                    return bufs[i]
            buf = np.empty(shape, dtype)
            self.allocations += 1
            if self._bytes + nbytes > self.max_bytes:
                self._evict(self._bytes + nbytes - self.max_bytes)
            if self._bytes + nbytes <= self.max_bytes:
                bufs.append(buf)
                self._bytes += nbytes
            return buf

    def _evict(self, nbytes: int) -> None:
        """Drop unused arrays, least recently asked-for shapes first, until ``nbytes`` are freed."""
        for bufs in list(self._pools.values()):
            for i in reversed(range(len(bufs))):
                if nbytes <= 0:
                    return
                if _refcount(bufs, i) == _UNUSED:
                    nbytes -= bufs[i].nbytes
                    self._bytes -= bufs[i].nbytes
                    del bufs[i]

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        buf = self.empty(shape, dtype)
        buf.fill(0)
        return buf

    def empty_like(
        self, a: np.ndarray, shape: tuple[int, ...] | None = None, dtype: Any = None
    ) -> np.ndarray:
        """Like ``np.empty_like``: same memory order as ``a`` (channels-last stays so).

        ``shape`` (same number of dims) gives an array of another size in ``a``'s layout.
        """
        shape = a.shape if shape is None else shape
        dtype = a.dtype if dtype is None else dtype
        if a.flags.c_contiguous:
            return self.empty(shape, dtype)
        order = memory_order(a)
        buf = self.empty(tuple(shape[d] for d in order), dtype)
        return buf.transpose(np.argsort(order))  # back to the logical order of ``a``

    def clear(self) -> None:
        """Forget every pooled array (arrays still in use stay valid)."""
        with self._lock:
            self._pools.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the pool."""
        return self._bytes


def memory_order(a: np.ndarray) -> list[int]:
    """a's dims from outermost to innermost in memory: [0, 2, 3, 1] for a channels-last NCHW."""
    return sorted(range(a.ndim), key=lambda d: -abs(a.strides[d]))


#: The workspace the built-in ops allocate from.
workspace = Workspace()
