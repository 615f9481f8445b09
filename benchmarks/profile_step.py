"""Where one training step's time goes: forward and backward of each op, optimizer, overhead.

Runs the plain user loop (``opt.zero_grad(); loss = net.loss(xb, tb); loss.backward();
opt.step()``, no context manager) on full MNIST batches of 100, the same step that
``train_speed.py`` times, and prints one row per op class: forward and backward ms per step
(median over the steps), calls per step, and the share of the step. Then the optimizer
step, ``zero_grad``, the batch gather, and the framework overhead: the rest of the step
(tensor and graph building, module calls, the backward walk and its gradient accumulation,
Python). Op times are exclusive: an op run inside another op's method counts for itself.

    python benchmarks/profile_step.py                              # SimpleConvNet, 200 steps
    python benchmarks/profile_step.py --model deepconvnet --steps 50
    python benchmarks/profile_step.py --by-layer                   # one row per op and layer

The op times come from wrapping ``forward`` and ``backward`` of every ``Function`` subclass,
in this process only (the package is not changed). The wrappers cost time too, so the step
is also timed without them, in alternating blocks of steps, and both step times are printed.
Figures, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_speed as ts  # noqa: E402  (the data, networks and step of the speed benchmark)

from tinygrad_cnn import Function, on_op_created, threads  # noqa: E402
from tinygrad_cnn.data import BatchIterator  # noqa: E402
from tinygrad_cnn.optim import Adam  # noqa: E402

#: The methods the engine calls on an op: ``Function.apply`` calls ``forward``, the backward
#: walk (``backprop._backward_op``) calls ``backward``.
METHODS = ("forward", "backward")


def all_ops() -> list[type[Function]]:
    """Every Function subclass, registered or not (subclasses of subclasses too)."""
    found, todo = [], list(Function.__subclasses__())
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


class OpTimer:
    """Exclusive wall time of each op's methods, per (op, layer) and method, for one step."""

    def __init__(self, by_layer: bool) -> None:
        self.by_layer = by_layer
        self.active = False  # record only inside the forward + backward of the loss
        self.step: defaultdict[tuple[str, str, str], float] = defaultdict(float)
        self.calls: Counter[tuple[str, str, str]] = Counter()
        self.where: defaultdict[str, set[str]] = defaultdict(set)
        self.inner: list[float] = []  # time of nested op calls, one entry per open call
        self.pending: dict[int, tuple[type, float]] = {}  # forwards not yet named by the hook

    def layer(self, scope: tuple[str, ...], name: str) -> str:
        if self.by_layer:
            return ".".join(scope[1:] or scope) or "no module"
        if scope:  # "conv1" -> "conv": the column shows which kinds of layer ran the op
            self.where[name].add(re.sub(r"\d+$", "", scope[-1]))
        return ""

    def record(self, name: str, scope: tuple[str, ...], method: str, seconds: float) -> None:
        key = (name, self.layer(scope, name), method)
        self.step[key] += seconds
        self.calls[key] += 1

    def wrap(self, cls: type, method: str) -> Callable[[], None]:
        """Time ``cls.method`` (defined in ``cls`` itself); returns the undo."""
        original = cls.__dict__[method]

        @functools.wraps(original)
        def timed(fn: Function, *args: Any, **kwargs: Any) -> Any:
            self.inner.append(0.0)
            start = time.perf_counter()
            try:
                return original(fn, *args, **kwargs)
            finally:
                total = time.perf_counter() - start
                own = total - self.inner.pop()
                if self.inner:
                    self.inner[-1] += total
                if self.active and method == "forward":  # the layer is known once applied
                    self.pending[id(fn)] = (type(fn), own)
                elif self.active:
                    self.record(type(fn).__name__, fn.scope, method, own)

        setattr(cls, method, timed)
        return lambda: setattr(cls, method, original)

    def created(self, fn: Function, inputs: tuple, output: Any) -> None:
        """The ``on_op_created`` hook: the op's scope (layer) is set, record its forward."""
        cls_own = self.pending.pop(id(fn), None)
        if cls_own is not None:
            self.record(cls_own[0].__name__, fn.scope, "forward", cls_own[1])

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        undo = [self.wrap(c, m) for c in all_ops() for m in METHODS if m in c.__dict__]
        try:
            with on_op_created(self.created):
                yield
        finally:
            for u in undo:
                u()


def profile(args: argparse.Namespace) -> tuple[dict[str, list[float]], list[dict], OpTimer]:
    """Steps in alternating blocks without and with the wrappers; per-step figures."""
    (x, t), _, _ = ts.load(args.data)
    net = ts.make_net(args.model, args.seed)
    opt = Adam(net.parameters(), lr=ts.LR)
    batches = ts.endless(BatchIterator(x, t, batch_size=ts.BATCH, seed=args.seed))
    timer = OpTimer(args.by_layer)
    parts: dict[str, list[float]] = defaultdict(list)
    per_step: list[dict] = []

    def step(wrapped: bool, keep: bool = True) -> None:  # the plain loop, with clocks
        t0 = time.perf_counter()
        xb, tb = next(batches)
        t1 = time.perf_counter()
        opt.zero_grad()
        t2 = time.perf_counter()
        timer.active = wrapped and keep
        loss = net.loss(xb, tb)
        loss.backward()
        timer.active = False
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if not keep:
            return
        if not wrapped:
            parts["unwrapped"].append(t4 - t0)
            return
        for name, dt in (("step", t4 - t0), ("gather", t1 - t0), ("zero_grad", t2 - t1),
                         ("optimizer", t4 - t3)):  # fmt: skip
            parts[name].append(dt)
        per_step.append(dict(timer.step))
        timer.step.clear()

    for _ in range(args.warmup):
        step(False)
    block = 10
    for done in range(0, args.steps, block):
        n = min(block, args.steps - done)
        for _ in range(n):
            step(False)
        with timer.installed():
            step(True, keep=False)  # the first call through fresh wrappers
            for _ in range(n):
                step(True)
    timer.calls = Counter({k: v / len(per_step) for k, v in timer.calls.items()})
    return parts, per_step, timer


def report(args: argparse.Namespace, parts: dict, per_step: list[dict], timer: OpTimer) -> None:
    ms = {k: np.asarray(v) * 1e3 for k, v in parts.items()}
    keys = sorted({k[:2] for s in per_step for k in s})

    def series(key: tuple[str, str], method: str) -> np.ndarray:
        return np.array([s.get((*key, method), 0.0) for s in per_step]) * 1e3

    fwd = {k: series(k, "forward") for k in keys}
    bwd = {k: series(k, "backward") for k in keys}
    ops_total = sum(fwd.values()) + sum(bwd.values())
    named = ms["gather"] + ms["zero_grad"] + ms["optimizer"]
    overhead = ms["step"] - ops_total - named
    step_med = float(np.median(ms["step"]))
    wrapped_calls = sum(v for k, v in timer.calls.items())
    print(f"step without wrappers: median {np.median(ms['unwrapped']):.2f} ms, min "
          f"{ms['unwrapped'].min():.2f} ms; with them: median {step_med:.2f} ms, min "
          f"{ms['step'].min():.2f} ms ({wrapped_calls:.0f} wrapped calls a step)")  # fmt: skip
    label = "op / layer" if args.by_layer else "op [layers]"
    print(f"\nms per step, median over {len(per_step)} steps; % of the wrapped step's median")
    print(f"{label:40s} {'calls':>5s} {'forward':>8s} {'backward':>8s} {'total':>8s} {'%':>6s}")
    rows = []
    for key in keys:
        name, layer = key
        tag = layer or ",".join(sorted(timer.where.get(name, ()))) or "no module"
        calls = timer.calls.get((*key, "forward"), 0) or timer.calls.get((*key, "backward"), 0)
        total = float(np.median(fwd[key] + bwd[key]))
        rows.append((total, f"{name} [{tag}]" if not args.by_layer else f"{name} / {tag}",
                     calls, float(np.median(fwd[key])), float(np.median(bwd[key]))))  # fmt: skip
    for name, series_ms in (("optimizer step (Adam)", ms["optimizer"]),
                            ("zero_grad", ms["zero_grad"]), ("batch gather", ms["gather"]),
                            ("framework overhead (the rest)", overhead)):  # fmt: skip
        rows.append((float(np.median(series_ms)), name, None, None, None))
    for total, name, calls, f, b in sorted(rows, key=lambda r: -r[0]):
        cols = "" if calls is None else f"{calls:5.0f} {f:8.3f} {b:8.3f}"
        print(f"{name[:40]:40s} {cols:>23s} {total:8.3f} {100 * total / step_med:5.1f}%")
    print(f"{'sum of op forwards / backwards':40s} {'':5s} "
          f"{np.median(sum(fwd.values())):8.3f} {np.median(sum(bwd.values())):8.3f} "
          f"{np.median(ops_total):8.3f} {100 * np.median(ops_total) / step_med:5.1f}%")  # fmt: skip
    print("(medians of per-step figures: the rows need not add up to exactly 100 %)")
    for name, layer in keys:  # an op whose backward never ran: the engine called another method
        f = timer.calls.get((name, layer, "forward"), 0)
        if f and not timer.calls.get((name, layer, "backward"), 0):
            print(f"note: {name} [{layer or '-'}] ran forward but its backward was never seen")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["simpleconvnet", "deepconvnet"], default="simpleconvnet")
    p.add_argument("--steps", type=int, default=200, help="profiled steps (and as many plain)")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    p.add_argument("--data", default=str(ts.DEFAULT_DATA), help="MNIST folder, or 'mini'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--by-layer", action="store_true", help="one row per op and layer")
    p.add_argument("--threads-block", action="store_true", help="run inside threads()")
    args = p.parse_args()
    _, _, what = ts.load(args.data)
    mode = "inside threads()" if args.threads_block else "plain loop, no context manager"
    print(f"{args.model}; {what}; batch {ts.BATCH}; Adam lr {ts.LR}; {mode}")
    print(f"NumPy {np.__version__}, BLAS: {ts.describe(ts.blas())}")
    with threads() if args.threads_block else contextlib.nullcontext():
        parts, per_step, timer = profile(args)
    report(args, parts, per_step, timer)


if __name__ == "__main__":
    main()
