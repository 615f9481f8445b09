"""Intra-op parallelism: the hot ops split big arrays across threads, by default.

NumPy releases the GIL inside ufunc loops, copies and BLAS calls, so Python threads working
on different slices of an array run at the same time. Two things make this pay:

- Memory-bound passes (ReLU, pooling, optimizer updates) get faster with a second core, but
  only if that core is free. A multi-threaded OpenBLAS keeps its idle workers spinning for a
  while after every GEMM, which takes exactly that core. So while one of our ops runs a GEMM,
  BLAS is pinned to one thread, and the op splits the GEMM into row blocks itself; BLAS gets
  the user's thread count back as soon as the op's GEMM is done.
- Some GEMMs OpenBLAS cannot split well: the conv weight gradient (30 x 57,600 x 26) is long
  only in its inner dimension. Split there, each thread computes a partial sum.

The ops use as many threads as the user's BLAS is set to use (``OPENBLAS_NUM_THREADS=1``
or ``threadpoolctl.threadpool_limits(1)`` keep everything on one thread); ``threads(n)``
sets another count for the ops of one thread. NumPy code of the user's own, outside our
ops, always runs with BLAS as the user set it.

Threads: one pool of worker threads serves the whole process. While one thread's op is
split across it, an op of another thread runs whole on its own thread (correct, just not
split). The BLAS pin is counted, so ops of several threads at once restore it exactly.
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

_workers: list[_Worker] = []
_lock = threading.Lock()  # guards _workers and the BLAS pin count
_pool = threading.Lock()  # held by the thread whose op is split across the workers now
_local = threading.local()  # .n: this thread's count from ``threads(n)``, else absent/None
_pins = 0  # ops inside a GEMM now (all threads); BLAS is on one thread while > 0
_saved: list[int] = []  # the user's BLAS thread counts, kept while _pins > 0
_blas: _Blas | None = None
_blas_known = False


def _forget_threads_after_fork() -> None:
    """A forked child has none of the parent's threads: start again with an empty pool,
    and give BLAS back the user's count if the fork came in the middle of a GEMM."""
    global _lock, _pool, _local, _pins
    _workers.clear()
    _lock, _pool, _local = threading.Lock(), threading.Lock(), threading.local()
    if _pins and _blas is not None:
        _blas.set(_saved)
    _pins = 0


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


class _Blas:
    """Get and set the thread counts of the BLAS libraries NumPy loaded.

    OpenBLAS is called directly (a C call, ~0.1 us), not through threadpoolctl's setter,
    which lets only one Python thread ever change OpenBLAS's count and would take that
    right away from the user's own ``threadpool_limits``.
    """

    def __init__(self, controller: Any) -> None:
        self.getters: list[Callable[[], int]] = []
        self.setters: list[Callable[[int], Any]] = []
        for lib in controller.lib_controllers:
            raw = _openblas_calls(lib) if lib.internal_api == "openblas" else None
            get, put = raw or (lib.get_num_threads, lib.set_num_threads)
            self.getters.append(get)
            self.setters.append(put)

    def get(self) -> list[int]:
        return [int(get()) for get in self.getters]

    def set(self, counts: int | list[int]) -> None:
        for i, put in enumerate(self.setters):
            put(counts if isinstance(counts, int) else counts[i])


def _openblas_calls(lib: Any) -> tuple[Callable[[], int], Callable[[int], Any]] | None:
    """OpenBLAS's own get/set functions, whatever prefix and suffix its build gave them."""
    for prefix in ("", "scipy_"):
        for suffix in ("", "64_", "_64"):
            get = getattr(lib.dynlib, f"{prefix}openblas_get_num_threads{suffix}", None)
            put = getattr(lib.dynlib, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                return get, put
    return None


def _blas_controller() -> Any:
    """threadpoolctl's controller of the BLAS libraries loaded, or None (threadpoolctl missing
    or no BLAS found)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    blas = ThreadpoolController().select(user_api="blas")
    return blas if blas.lib_controllers else None


def _find_blas() -> _Blas | None:
    """The BLAS we can pin (looked up once), or None: then the ops stay on one thread."""
    global _blas, _blas_known
    if not _blas_known:
        with _lock:
            if not _blas_known:
                controller = _blas_controller()
                _blas = None if controller is None else _Blas(controller)
                _blas_known = True
    return _blas


def _user_threads() -> int:
    """Threads the user's BLAS is set to use (the count kept aside while a GEMM pins it)."""
    blas = _blas if _blas_known else _find_blas()
    if blas is None:
        return 1
    counts = _saved if _pins else blas.get()
    return max(max(counts, default=1), 1)


def num_threads() -> int:
    """Threads this thread's ops split their work across now: ``n`` inside ``threads(n)``,
    else as many as the user's BLAS uses (1 without a BLAS that threadpoolctl can set)."""
    n = getattr(_local, "n", None)
    if n is not None:
        return n
    return _user_threads()


def _pin() -> None:
    """BLAS to one thread for a GEMM of ours (counted across threads)."""
    global _pins, _saved
    blas = _blas if _blas_known else _find_blas()
    if blas is None:
        return
    with _lock:
        if _pins == 0:
            _saved = blas.get()
            if any(c != 1 for c in _saved):
                blas.set(1)
        _pins += 1


def _unpin() -> None:
    global _pins
    if _blas is None:
        return
    with _lock:
        _pins -= 1
        if _pins == 0 and any(c != 1 for c in _saved):
            _blas.set(_saved)


@contextlib.contextmanager
def threads(n: int | None = None) -> Iterator[int]:
    """Within the block, this thread's ops split their work across ``n`` threads.

    Not needed for speed: outside any block the ops already use as many threads as NumPy's
    BLAS is set to use. Use ``threads(1)`` to keep a piece of work on one thread. Only
    tinygrad_cnn's ops are affected: NumPy code of your own in the block keeps BLAS's
    threads as they are (set those with threadpoolctl's ``threadpool_limits``).

    Parameters
    ----------
    n : int, optional
        Threads to use; by default as many as NumPy's BLAS is set to use (so
        ``OPENBLAS_NUM_THREADS=1`` keeps everything on one thread).

    Yields
    ------
    int
        The number of threads this thread's ops use.

    Without threadpoolctl (a dependency, normally installed) the ops run on one thread.
    Nested blocks keep the outer block's setting, so ``threads(1)`` around a loop keeps
    ``Trainer`` and ``accuracy`` inside it on one thread too. The setting is per thread.
    """
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"threads: n must be a positive int, got {n!r}")
    outer = getattr(_local, "n", None)
    if outer is not None:  # nested: the outer block decides
        yield outer
        return
    _local.n = 1 if _find_blas() is None else n or _user_threads()
    try:
        yield _local.n
    finally:
        _local.n = None


def bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (lo, hi) ranges that cover ``range(n)`` as evenly as possible."""
    edges = [n * k // parts for k in range(parts + 1)]
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True) if hi > lo]


def run(
    fn: Callable[[int, int], R],
    n: int,
    work: int,
    grain: int = 1,
    ranges: int | None = None,
    gemm: bool = False,
) -> list[R]:
    """Call ``fn(lo, hi)`` over ranges covering ``range(n)``; return the results in order.

    When the call's ``work`` (elements or multiply-adds) is at least ``MIN_WORK`` and this
    thread's ops use several threads (``num_threads()``), ``range(n)`` is cut into
    ``ranges`` pieces (default: one per thread), each at least ``grain`` long, and this
    thread and the workers take the next piece left until none is: a worker that wakes up
    late takes fewer. Otherwise ``fn(0, n)`` runs here. ``gemm=True`` pins BLAS to one
    thread while ``fn`` runs (``fn`` calls BLAS). ``fn`` must only write to disjoint slices
    of preallocated arrays (and must not allocate from the workspace); a ``run`` inside
    ``fn``, or one in another thread while the pool is busy, runs whole on its thread.
    """
    if gemm:
        _pin()
    try:
        if work >= MIN_WORK and n > 1:
            active = num_threads()
            parts = min(ranges or active, n // max(grain, 1))
            if active > 1 and parts > 1 and _pool.acquire(blocking=False):
                try:
                    return _split(fn, bounds(n, parts), active)
                finally:
                    _pool.release()
        return [fn(0, n)]
    finally:
        if gemm:
            _unpin()


def _split(fn: Callable[[int, int], R], pieces: list[tuple[int, int]], active: int) -> list[R]:
    """``fn`` over ``pieces``, taken by this thread and the workers; results in order."""
    results: list[Any] = [None] * len(pieces)
    counter = itertools.count()  # next() on it is atomic under the GIL

    def take() -> None:
        while (i := next(counter)) < len(pieces):
            results[i] = fn(*pieces[i])

    helpers = min(active - 1, len(pieces) - 1)
    with _lock:
        while len(_workers) < helpers:
            _workers.append(_Worker())
    workers = _workers[:helpers]
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
    passes finds its block still in the core's cache on the second. Arrays of one shape in
    different memory orders are split along the last one's outermost memory axis instead;
    arrays of different shapes (broadcasting) get one call.
    """
    views = flat(*arrays)
    if views is None:  # layouts differ (e.g. a gradient meeting a mask of another order)
        shape = arrays[0].shape
        if arrays[0].ndim and all(a.shape == shape for a in arrays):
            # blocks of the last array's outermost memory axis: it is written in runs
            along(memory_order(arrays[-1])[0], shape, lambda s: fn(*(a[s] for a in arrays)))
        else:
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
    work = a.size * b.shape[1]
    run(lambda lo, hi: np.matmul(a[lo:hi], b, out=out[lo:hi]), len(a), work, 16, gemm=True)
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
