"""Forward+backward time of the hot ops, float32, and the same ops in PyTorch when installed.

Run ``python benchmarks/bench_ops.py [--reps 200] [--threads-block | --one-thread]``. Prints
the median (and min) time of one forward + backward per case and, when ``torch`` imports,
PyTorch's CPU time at the thread count NumPy's BLAS uses, with the ratio ours / PyTorch (below
1 means we are faster). Ours run as a user calls them, with no context manager; with
``--threads-block`` inside ``tinygrad_cnn.threads()``, with ``--one-thread`` inside
``threads(1)``, to compare. Figures, not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tinygrad_cnn  # noqa: E402
import tinygrad_cnn.functional as F  # noqa: E402
from tinygrad_cnn import Tensor  # noqa: E402


def timeit(fn: Callable[[], object], reps: int, warmup: int = 20) -> tuple[float, float]:
    """(median, min) wall time of ``fn`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3, float(np.min(times)) * 1e3


def blas_info() -> tuple[int, str]:
    """(threads, description) of the BLAS NumPy uses, from threadpoolctl when installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return os.cpu_count() or 1, "unknown BLAS (pip install threadpoolctl)"
    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            desc = (
                f"{lib.get('internal_api')} {lib.get('version')}, kernel "
                f"{lib.get('architecture')}, {lib['num_threads']} threads"
            )
            return lib["num_threads"], desc
    return os.cpu_count() or 1, "no BLAS found by threadpoolctl"


def ours(rng: np.random.Generator) -> list[tuple[str, Callable[[], None], str]]:
    """One closure per case: forward, then backward with a fixed random upstream gradient."""

    def arr(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32)

    def case(make: Callable[[list[Tensor]], Tensor], arrays: list, needs: list[bool], net=False):
        ts = [Tensor(a, requires_grad=n) for a, n in zip(arrays, needs, strict=True)]
        y = make(ts).data
        gy = arr(*y.shape)
        if net:  # inside a network the upstream gradient comes in the output's memory layout
            like = np.empty_like(y)  # same strides as y
            like[...] = gy
            gy = like

        def run() -> None:
            for t in ts:
                t.grad = None
            make(ts).backward(gy)

        return run

    x, w, b = arr(100, 1, 28, 28), 0.01 * arr(30, 1, 5, 5), arr(30)
    pool_in = arr(100, 30, 24, 24)
    # conv2d returns (N, C, H, W) views of (H, W, N, C) memory; the pool after it gets that
    pool_net = np.ascontiguousarray(pool_in.transpose(2, 3, 0, 1)).transpose(2, 3, 0, 1)
    conv = [x, w, b]
    conv3 = [arr(100, 32, 14, 14), 0.08 * arr(32, 32, 3, 3), arr(32)]  # He std for 3x3x32
    mm = [arr(100, 4320), 0.01 * arr(4320, 100)]
    return [  # (label, run, the PyTorch case it compares with)
        (CONV_NO_GX, case(lambda t: F.conv2d(*t), conv, [False, True, True]), CONV_NO_GX),
        (NET, case(lambda t: F.conv2d(*t), conv, [False, True, True], net=True), CONV_NO_GX),
        (CONV, case(lambda t: F.conv2d(*t), conv, [True, True, True]), CONV),
        (NET, case(lambda t: F.conv2d(*t), conv, [True, True, True], net=True), CONV),
        (CONV3, case(lambda t: F.conv2d(*t, padding=1), conv3, [True] * 3), CONV3),
        (NET, case(lambda t: F.conv2d(*t, padding=1), conv3, [True] * 3, net=True), CONV3),
        (POOL, case(lambda t: F.max_pool2d(t[0], 2), [pool_in], [True]), POOL),
        (POOL_NET, case(lambda t: F.max_pool2d(t[0], 2), [pool_net], [True], net=True), POOL),
        (MATMUL, case(lambda t: F.matmul(*t), mm, [True, True]), MATMUL),
    ]


CONV_NO_GX, CONV = "conv2d, x without grad", "conv2d, x with grad"
CONV3 = "conv2d 3x3/pad 1, 32->32 on 14x14, x with grad"
NET = "  gy in the output's memory layout (*)"
POOL, POOL_NET = "max_pool2d 2x2/2", "  input laid out as conv2d returns it (*)"
MATMUL = "matmul (100,4320)@(4320,100)"


def theirs(rng: np.random.Generator, threads: int) -> dict[str, Callable[[], None]] | None:
    """The same cases in PyTorch eager on the CPU, or None when torch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    tf = torch.nn.functional

    def arr(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape, dtype=np.float32)

    def case(make, arrays, needs):
        ts = [torch.tensor(a, requires_grad=n) for a, n in zip(arrays, needs, strict=True)]
        gy = torch.tensor(arr(*make(ts).shape))

        def run() -> None:
            for t in ts:
                t.grad = None
            make(ts).backward(gy)

        return run

    x, w, b = arr(100, 1, 28, 28), 0.01 * arr(30, 1, 5, 5), arr(30)
    pool_in = arr(100, 30, 24, 24)
    conv3 = [arr(100, 32, 14, 14), 0.08 * arr(32, 32, 3, 3), arr(32)]
    return {
        CONV_NO_GX: case(lambda t: tf.conv2d(*t), [x, w, b], [False, True, True]),
        CONV: case(lambda t: tf.conv2d(*t), [x, w, b], [True, True, True]),
        CONV3: case(lambda t: tf.conv2d(*t, padding=1), conv3, [True] * 3),
        POOL: case(lambda t: tf.max_pool2d(t[0], 2), [pool_in], [True]),
        MATMUL: case(lambda t: t[0] @ t[1], [arr(100, 4320), 0.01 * arr(4320, 100)], [True, True]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200, help="timed repetitions per case")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--threads-block", action="store_true", help="ours inside threads()")
    mode.add_argument("--one-thread", action="store_true", help="ours inside threads(1)")
    args = parser.parse_args()
    threads, desc = blas_info()
    print(f"NumPy {np.__version__}, BLAS: {desc}")
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    ref = theirs(np.random.default_rng(0), threads)
    if ref is None:
        print("torch not installed: PyTorch columns skipped (pip install torch)")
    else:
        import torch

        print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads")
    cases = ours(np.random.default_rng(0))
    # Ours first, PyTorch afterwards: a threads() block may pin every BLAS in the process to
    # one thread, which must not touch PyTorch's run.
    if args.threads_block or args.one_thread:
        with tinygrad_cnn.threads(1 if args.one_thread else None) as n:
            mine = [timeit(run, args.reps) for _, run, _ in cases]
        how = f"inside threads({1 if args.one_thread else ''}), {n} thread(s)"
    else:
        mine = [timeit(run, args.reps) for _, run, _ in cases]
        how = "no context manager"
    print(f"\nfloat32 forward + backward, ms over {args.reps} runs (median / min); "
          f"tinygrad_cnn: {how}")  # fmt: skip
    print(f"{'case':48s} {'tinygrad_cnn':>16s} {'PyTorch':>16s} {'ratio':>12s}")
    timed: dict[str, tuple[float, float]] = {}  # PyTorch's figures, each case timed once
    for (name, _, ref_name), (med, best) in zip(cases, mine, strict=True):
        line = f"{name:48s} {med:7.3f} / {best:6.3f}"
        if ref is not None:
            if ref_name not in timed:
                timed[ref_name] = timeit(ref[ref_name], args.reps)
            rmed, rbest = timed[ref_name]
            line += f" {rmed:7.3f} / {rbest:6.3f}   {med / rmed:4.2f} / {best / rbest:4.2f}"
        print(line)
    print("(*) as inside a network, where conv2d's output goes through ReLU and max_pool2d")
    print("ratio: ours / PyTorch, median / min (below 1: we are faster)")


if __name__ == "__main__":
    main()
