"""Intra-op parallelism: the hot ops split big arrays across threads inside ``threads()``.

NumPy releases the GIL inside ufunc loops, copies and BLAS calls, so Python threads working
on different slices of an array run at the same time. Two things make this pay:

- Memory-bound passes (ReLU, pooling, optimizer updates) get faster with a second core, but
  only if that core is free. A multi-threaded OpenBLAS keeps its idle workers spinning for a
  while after every GEMM, which takes exactly that core. Inside ``threads()`` BLAS is therefore
  set to one thread, and the ops split their GEMMs into row blocks themselves.
- Some GEMMs OpenBLAS cannot split well: the conv weight gradient (30 x 57,600 x 26) is long
  only in its inner dimension. Split there, each thread computes a partial sum.

Outside ``threads()`` (the default) every op runs as one NumPy call and BLAS keeps its own
threads. ``Trainer``, ``evaluate_accuracy`` and the CLI enter ``threads()`` themselves. Enter
it once around a long piece of work: for a moment after entering, an OpenBLAS worker may
still be spinning from the multi-threaded GEMMs before it.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np

from .workspace import memory_order

R = TypeVar("R")

#: Work (elements or multiply-adds) below which ``run`` stays on one thread: handing a
#: range to a worker costs about 10-20 us.
MIN_WORK = 1 << 16
#: Elements ``elementwise`` gives each pass at a time (fits a core's cache).
BLOCK = 1 << 17

#: Threads the ops may use right now (1 outside ``threads()``), and the thread that entered
#: ``threads()``: only its ops split work (other threads, and the workers, run theirs whole).
_active = 1
_owner: int | None = None
_busy = False  # the owner is inside ``run``: a nested ``run`` runs whole
_workers: list[_Worker] = []
_lock = threading.Lock()


def _forget_threads_after_fork() -> None:
    """A forked child has none of the parent's threads: start again from one thread."""
    global _active, _owner, _busy, _lock
    _workers.clear()
    _active, _owner, _busy, _lock = 1, None, False, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads_after_fork)


class _Worker:
    """A daemon thread that runs one call at a time, handed over through queues.

    Each job carries a number, so a result left behind by an interrupted caller (Ctrl-C
    while waiting) is recognised as stale and skipped by the next one.
    """

    def __init__(self) -> None:
        self.todo: queue.SimpleQueue[tuple[int, Callable[[], Any]]] = queue.SimpleQueue()
        self.done: queue.SimpleQueue[tuple[int, bool, Any]] = queue.SimpleQueue()
        self.jobs = 0
        threading.Thread(target=self._loop, name="tinygrad_cnn-worker", daemon=True).start()

    def _loop(self) -> None:
        while True:
            job, fn = self.todo.get()
            try:
                result = (job, True, fn())
            except BaseException as e:  # re-raised in the calling thread
                result = (job, False, e)
            del fn  # hold nothing between jobs: the workspace reuses arrays nobody holds
            self.done.put(result)
            del result

    def submit(self, fn: Callable[[], Any]) -> int:
        self.jobs += 1
        self.todo.put((self.jobs, fn))
        return self.jobs

    def result(self, job: int) -> Any:
        while True:
            done, ok, value = self.done.get()
            if done == job:
                break
        if not ok:
            raise value
        return value


def num_threads() -> int:
    """Threads the ops split their work across now: 1 outside ``threads()``."""
    return _active


def _blas_controller() -> Any:
    """threadpoolctl's controller of the BLAS libraries loaded, or None (threadpoolctl missing
    or no BLAS found)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    blas = ThreadpoolController().select(user_api="blas")
    return blas if blas.lib_controllers else None


@contextlib.contextmanager
def threads(n: int | None = None) -> Iterator[int]:
    """Within the block, split the hot ops across ``n`` threads and run BLAS on one.

    Parameters
    ----------
    n : int, optional
        Threads to use; by default as many as NumPy's BLAS is set to use (so
        ``OPENBLAS_NUM_THREADS=1`` keeps everything on one thread). ``n=1`` changes nothing.

    Yields
    ------
    int
        The number of threads this thread's ops use. BLAS gets its thread count back on exit.

    Without threadpoolctl (a dependency, normally installed) the block runs on one thread.
    Nested blocks keep the outer block's setting, so ``threads(1)`` around a loop keeps
    ``Trainer`` and ``accuracy`` inside it on one thread too. The setting is process-wide
    (BLAS has one thread count), but only the thread that entered the block splits its ops.
    """
    global _active, _owner
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"threads: n must be a positive int, got {n!r}")
    me = threading.get_ident()
    with _lock:  # claim the block, or find it taken
        claimed = _owner is None
        if claimed:
            _owner = me
    if not claimed:  # nested (the outer block decides), or another thread's block
        yield _active if _owner == me else 1
        return
    try:
        blas = _blas_controller() if n != 1 else None
        n = 1 if blas is None else n or max(c.num_threads for c in blas.lib_controllers)
        with _lock:
            while len(_workers) < n - 1:
                _workers.append(_Worker())
        with blas.limit(limits=1) if n > 1 else contextlib.nullcontext():
            _active = n
            try:
                yield n
            finally:
                _active = 1
    finally:
        _owner = None


def bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (lo, hi) ranges that cover ``range(n)`` as evenly as possible."""
    edges = [n * k // parts for k in range(parts + 1)]
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True) if hi > lo]


def run(
    fn: Callable[[int, int], R], n: int, work: int, grain: int = 1, ranges: int | None = None
) -> list[R]:
    """Call ``fn(lo, hi)`` over ranges covering ``range(n)``; return the results in order.

    When ``threads()`` is active and the call's ``work`` (elements or multiply-adds) is at
    least ``MIN_WORK``, ``range(n)`` is cut into ``ranges`` pieces (default: one per thread),
    each at least ``grain`` long, and this thread and the workers take the next piece left
    until none is: a worker that wakes up late takes fewer. Otherwise ``fn(0, n)`` runs here.
    ``fn`` must only write to disjoint slices of preallocated arrays (and must not allocate
    from the workspace); a ``run`` inside ``fn`` runs whole on its thread.
    """
    global _busy
    parts = min(ranges or _active, n // max(grain, 1)) if work >= MIN_WORK else 1
    if parts <= 1 or _active == 1 or _busy or threading.get_ident() != _owner:
        return [fn(0, n)]
    _busy = True
    try:
        return _split(fn, bounds(n, parts))
    finally:
        _busy = False


def _split(fn: Callable[[int, int], R], pieces: list[tuple[int, int]]) -> list[R]:
    """``fn`` over ``pieces``, taken by this thread and the workers; results in order."""
    results: list[Any] = [None] * len(pieces)
    counter = itertools.count()  # next() on it is atomic under the GIL

    def take() -> None:
        while (i := next(counter)) < len(pieces):
            results[i] = fn(*pieces[i])

    workers = _workers[: min(_active - 1, len(pieces) - 1)]
    jobs = [w.submit(take) for w in workers]
    error: BaseException | None = None
    try:
        take()
    except BaseException as e:
        error = e
    for worker, job in zip(workers, jobs, strict=True):  # wait for all, then raise
        try:
            worker.result(job)
        except BaseException as e:
            error = error or e
    if error is not None:
        raise error
    return results


def flat(*arrays: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """1-D views of arrays that share one shape and a dense memory order, else None.

    Elementwise work on such arrays can be split into ranges of their memory.
    """
    shape, order = arrays[0].shape, memory_order(arrays[0])
    views = []
    for a in arrays:
        if a.shape != shape:
            return None
        t = a.transpose(order)
        if not t.flags.c_contiguous:
            return None
        views.append(t.reshape(-1))
    return tuple(views)


def elementwise(fn: Callable[..., Any], *arrays: np.ndarray, block: int | None = None) -> None:
    """Run ``fn(*arrays)`` (in-place or ``out=`` work, elementwise) over ranges of memory.

    The ranges are ``block`` (default ``BLOCK``) elements long, so an ``fn`` that makes several
    passes finds its block still in the core's cache on the second. Falls back to one call
    when the arrays do not share a dense memory order.
    """
    views = flat(*arrays)
    if views is None:
        fn(*arrays)
        return
    n = views[0].size
    run(lambda lo, hi: fn(*(v[lo:hi] for v in views)), n, n, ranges=-(-n // (block or BLOCK)))


def along(axis: int, shape: tuple[int, ...], fn: Callable[[tuple[slice, ...]], None]) -> None:
    """``fn(s)`` for index tuples ``s`` that select blocks of ``axis`` of an array of ``shape``,
    across threads (``fn`` writes only what ``s`` selects)."""

    def block(lo: int, hi: int) -> None:
        fn((slice(None),) * axis + (slice(lo, hi),))

    run(block, shape[axis], math.prod(shape))


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a @ b`` for 2-D a (M, K) and b (K, N), in blocks of rows of ``a`` across threads."""
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), np.result_type(a, b))
    run(lambda lo, hi: np.matmul(a[lo:hi], b, out=out[lo:hi]), len(a), a.size * b.shape[1], 16)
    return out


def copyto(dst: np.ndarray, src: np.ndarray) -> None:
    """``np.copyto(dst, src)`` for arrays of one shape, in blocks of dst's outermost memory axis.

    The copy may change the memory order (a transposing copy), as between layouts of ops.
    """
    if dst.ndim == 0 or dst.shape != src.shape:
        np.copyto(dst, src)
        return

    def block(s: tuple[slice, ...]) -> None:
        np.copyto(dst[s], src[s])

    along(memory_order(dst)[0], dst.shape, block)
