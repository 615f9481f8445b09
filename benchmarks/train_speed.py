"""Training speed of SimpleConvNet or DeepConvNet: tinygrad_cnn against PyTorch eager, interleaved.

One training step = batch gather + forward + backward + Adam update (lr 1e-3, batch 100,
float32), written as the plain user loop ``opt.zero_grad(); loss = net.loss(xb, tb);
loss.backward(); opt.step()`` with no context manager. SimpleConvNet is the book's ch. 7
config (conv 30x5x5, hidden 100, weight std 0.01); DeepConvNet the book's ch. 8 net (six 3x3
convs, dropout, He init). PyTorch runs the same layers from the same initial weights, in the
same batch order. Each measurement runs in its own process; tinygrad_cnn and PyTorch
processes alternate (ABAB..., then BABA...), so both see the same machine. Prints per-process
min and median ms/step, the ratios, evaluation throughput on 10,000 test images (no grad,
eval mode), the peak RSS of each training process and the BLAS in use.

    python benchmarks/train_speed.py                       # 3 process pairs x 200 steps
    python benchmarks/train_speed.py --model deepconvnet --procs 5 --steps 300
    python benchmarks/train_speed.py --threads-block       # ours inside threads(), to compare
    python benchmarks/train_speed.py --full                # the book's 20-epoch run (Trainer)
    python benchmarks/train_speed.py --full --torch        # the same recipe in PyTorch

Data: full MNIST from ``<repo>/../shared/data/mnist`` (or ``--data DIR``) when present,
else the bundled mini set. PyTorch (``pip install torch``) is optional: without it only
tinygrad_cnn is timed. Figures, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mnist"
BATCH, LR, STD = 100, 1e-3, 0.01
MODES = {
    "plain": "plain loop, no context manager",
    "threads-block": "timed loop and evaluation inside tinygrad_cnn.threads()",
    "one-thread": "timed loop and evaluation inside tinygrad_cnn.threads(1)",
}


# ----------------------------------------------------------------------------- environment
def blas() -> dict:
    """NumPy's BLAS as threadpoolctl sees it (library, version, kernel, threads)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {"internal_api": "unknown (pip install threadpoolctl)", "num_threads": 1}
    info = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    return info[0] if info else {"internal_api": "none found", "num_threads": 1}


def describe(info: dict) -> str:
    return (
        f"{info.get('internal_api')} {info.get('version', '')}, kernel "
        f"{info.get('architecture', '?')}, {info.get('num_threads')} threads "
        f"(OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')})"
    )


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB.

    Linux's VmHWM belongs to this program's memory alone; ``ru_maxrss`` is not used there,
    because a child started with fork + exec inherits the parent's peak in it (the parent here
    holds PyTorch and the test set, ~780 MB, which every worker would then report).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def load(data: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], str]:
    from tinygrad_cnn.data import load_mnist

    if data != "mini" and Path(data).is_dir():
        train, test = load_mnist(root=data, download=False)
        return train, test, f"MNIST from {data}"
    train, test = load_mnist(subset="mini")
    return train, test, "bundled mini MNIST (10,000 / 2,000)"


def test_set(x: np.ndarray, t: np.ndarray, n: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    """Exactly ``n`` test images (the mini set is tiled up to 10,000)."""
    if len(x) >= n:
        return x[:n], t[:n]
    reps = -(-n // len(x))
    return np.concatenate([x] * reps)[:n], np.concatenate([t] * reps)[:n]


def stats(times: list[float]) -> dict:
    ms = np.asarray(times) * 1e3
    return {"min": float(ms.min()), "median": float(np.median(ms)), "n": len(ms)}


def timed(step, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def endless(batches: Any) -> Iterator[tuple[np.ndarray, ...]]:
    """Batches of a BatchIterator epoch after epoch (each epoch drawing its own order)."""
    while True:
        yield from batches


def evals(evaluate, n: int) -> float:
    """Best images/s of three evaluations of ``n`` images."""
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        evaluate()
        best = max(best, n / (time.perf_counter() - start))
    return best


# ----------------------------------------------------------------------------- the networks
def make_net(model: str, seed: int) -> Any:
    """tinygrad_cnn's network: SimpleConvNet (book config) or DeepConvNet (He init)."""
    from tinygrad_cnn.models import DeepConvNet, SimpleConvNet

    if model == "deepconvnet":
        return DeepConvNet(seed=seed)
    return SimpleConvNet(weight_init_std=STD, seed=seed)


def torch_net(model: str, seed: int) -> tuple[Any, Any]:
    """The same network in PyTorch, layer by layer, from ``make_net(model, seed)``'s weights."""
    import torch

    torch.set_num_threads(int(blas()["num_threads"]))
    torch.manual_seed(seed)  # PyTorch's dropout masks
    tnn, layers = torch.nn, []
    ref = make_net(model, seed)
    named = [(name, m) for name, m in ref.named_modules() if name and "." not in name]
    top = [m for _, m in named]
    for i, (name, m) in enumerate(named):
        kind = type(m).__name__
        if kind == "Conv2d":
            oc, c, kh, kw = m.weight.shape
            layer, w = tnn.Conv2d(c, oc, (kh, kw), m.stride, m.padding), m.weight.data
        elif kind == "Linear":  # ours is (IN, OUT), PyTorch's (OUT, IN)
            layer, w = tnn.Linear(m.in_features, m.out_features), m.weight.data.T
        elif kind in ("ReLU", "Flatten"):
            layer = getattr(tnn, kind)()
        elif kind == "MaxPool2d":
            layer = tnn.MaxPool2d(m.kernel_size, m.stride, m.padding)
        elif kind == "Dropout":  # PyTorch's is inverted: scale the kept units by 1/(1-p)
            layer = tnn.Dropout(m.p)
        else:
            raise ValueError(f"torch_net: no PyTorch counterpart for layer {name} ({kind})")
        if kind in ("Conv2d", "Linear"):
            # Next to the book's dropout (DeepConvNet's, not inverted) the same function with
            # PyTorch's inverted one needs the weights times k = 1 - p of the dropout before
            # and the weights and bias times k of the dropout after.
            k_in, k_out = (_book_keep(top[j]) if 0 <= j < len(top) else 1.0 for j in (i - 1, i + 1))
            with torch.no_grad():
                layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w) * (k_in * k_out)))
                layer.bias.copy_(torch.from_numpy(m.bias.data * k_out))
        layers.append(layer)
    net = tnn.Sequential(*layers)
    return net, torch.optim.Adam(net.parameters(), lr=LR)


def _book_keep(m: Any) -> float:
    """1 - p for a dropout of the book's kind (scaled at test time), else 1."""
    return 1.0 - m.p if type(m).__name__ == "Dropout" and not m.inverted else 1.0


def check_copy(model: str, seed: int, x: np.ndarray) -> float:
    """Largest |logit difference| of the two frameworks on ``x`` in eval mode, relative to
    the largest logit; raises when it is beyond float32 rounding (weights copied wrong)."""
    import torch

    from tinygrad_cnn import no_grad

    ours = make_net(model, seed).eval()
    theirs = torch_net(model, seed)[0].eval()
    with no_grad():
        a = ours(x).numpy()
    with torch.no_grad():
        b = theirs(torch.from_numpy(x)).numpy()
    err, scale = float(np.abs(a - b).max()), float(np.abs(b).max())
    if not err <= 1e-4 * scale:  # relative: SimpleConvNet's first logits are about 1e-4
        raise AssertionError(f"{model}: logits differ by {err:.3g} (largest logit {scale:.3g})")
    return err / scale


def torch_accuracy(net, x: np.ndarray, t: np.ndarray, batch: int = 500) -> float:
    import torch

    X, T = torch.from_numpy(x), torch.from_numpy(t)
    correct, training = 0, net.training
    net.eval()
    with torch.no_grad():
        for i in range(0, len(X), batch):
            correct += int((net(X[i : i + batch]).argmax(1) == T[i : i + batch]).sum())
    net.train(training)
    return correct / len(X)


# ----------------------------------------------------------------------------- workers
def run_tinygrad(args: argparse.Namespace) -> dict:
    from tinygrad_cnn import threads
    from tinygrad_cnn.data import BatchIterator
    from tinygrad_cnn.optim import Adam
    from tinygrad_cnn.train import evaluate_accuracy

    (x, t), (xt, tt), _ = load(args.data)
    net = make_net(args.model, args.seed)
    opt = Adam(net.parameters(), lr=LR)
    batches = endless(BatchIterator(x, t, batch_size=BATCH, seed=args.seed))

    def step() -> None:  # what a user writes
        xb, tb = next(batches)
        opt.zero_grad()
        loss = net.loss(xb, tb)
        loss.backward()
        opt.step()

    xt, tt = test_set(xt, tt)
    n = 1 if args.mode == "one-thread" else None
    with contextlib.nullcontext() if args.mode == "plain" else threads(n):
        times = timed(step, args.warmup, args.steps)
        ev = evals(lambda: evaluate_accuracy(net, xt, tt, batch_size=args.eval_batch), len(xt))
    return {"step": stats(times), "eval_img_s": ev, "rss_mb": peak_rss_mb()}


def run_torch(args: argparse.Namespace) -> dict:
    import torch

    from tinygrad_cnn.data import BatchIterator

    (x, t), (xt, tt), _ = load(args.data)
    net, opt = torch_net(args.model, args.seed)
    X, T = torch.from_numpy(x), torch.from_numpy(t)
    batches = endless(BatchIterator(np.arange(len(x)), batch_size=BATCH, seed=args.seed))
    times = timed(lambda: torch_step(net, opt, X, T, next(batches)[0]), args.warmup, args.steps)
    xt, tt = test_set(xt, tt)
    ev = evals(lambda: torch_accuracy(net, xt, tt, args.eval_batch), len(xt))
    return {"step": stats(times), "eval_img_s": ev, "rss_mb": peak_rss_mb()}


def torch_step(net, opt, X, T, idx: np.ndarray) -> None:
    import torch

    idx = torch.from_numpy(idx)
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(net(X[idx]), T[idx])
    loss.backward()
    opt.step()


# ----------------------------------------------------------------------------- the full run
def full_run(args: argparse.Namespace) -> None:
    """The book's recipe through Trainer (or the same loop in PyTorch with ``--torch``)."""
    (x, t), (xt, tt), what = load(args.data)
    print(f"{args.model}; data: {what} ({len(x)} train, {len(xt)} test)")
    print(f"BLAS: {describe(blas())}")
    start = time.perf_counter()
    accs = full_torch(args, x, t, xt, tt) if args.torch else full_ours(args, x, t, xt, tt)
    wall = time.perf_counter() - start
    who = "PyTorch" if args.torch else "tinygrad_cnn Trainer"
    print(
        f"\n{args.epochs} epochs ({who}; training + per-epoch evaluation on all train and "
        f"test images): {wall:.1f} s = {wall / 60:.2f} min"
    )
    print("test accuracy per epoch: " + " ".join(f"{a:.4f}" for a in accs))
    print(f"final test accuracy: {accs[-1]:.4f}; peak RSS: {peak_rss_mb():.0f} MB")


def full_ours(args, x, t, xt, tt) -> list[float]:
    from tinygrad_cnn.train import Trainer

    trainer = Trainer(
        make_net(args.model, args.seed), x, t, xt, tt, epochs=args.epochs,
        mini_batch_size=BATCH, optimizer="Adam", optimizer_param={"lr": LR}, verbose=True,
        progress=False, seed=args.seed,
    )  # fmt: skip
    return trainer.train()["test_acc"]


def full_torch(args, x, t, xt, tt) -> list[float]:
    import torch

    from tinygrad_cnn.data import BatchIterator

    net, opt = torch_net(args.model, args.seed)
    X, T = torch.from_numpy(x), torch.from_numpy(t)
    it, accs = BatchIterator(np.arange(len(x)), batch_size=BATCH, seed=args.seed), []
    for epoch in range(args.epochs):
        for (idx,) in it:
            torch_step(net, opt, X, T, idx)
        train_acc, test_acc = torch_accuracy(net, x, t), torch_accuracy(net, xt, tt)
        accs.append(test_acc)
        print(f"epoch {epoch + 1:>2}/{args.epochs}  train acc {train_acc:.4f}  "
              f"test acc {test_acc:.4f}", flush=True)  # fmt: skip
    return accs


# ----------------------------------------------------------------------------- driver
def spawn(name: str, args: argparse.Namespace, seed: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--seed", str(seed)]
    for opt in ("steps", "warmup", "data", "eval_batch", "model"):
        cmd += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    cmd += [] if args.mode == "plain" else [f"--{args.mode}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["simpleconvnet", "deepconvnet"], default="simpleconvnet")
    p.add_argument("--procs", type=int, default=3, help="processes per framework (>= 3)")
    p.add_argument("--steps", type=int, default=200, help="timed steps per process")
    p.add_argument("--warmup", type=int, default=30, help="untimed steps first")
    p.add_argument("--eval-batch", type=int, default=500, help="batch size of evaluation")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="MNIST folder, or 'mini'")
    p.add_argument("--full", action="store_true", help="run the book's 20-epoch recipe")
    p.add_argument("--epochs", type=int, default=20, help="epochs of --full")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-torch", action="store_true", help="time tinygrad_cnn only")
    p.add_argument("--torch", action="store_true", help="with --full: run it in PyTorch")
    p.add_argument("--threads-block", action="store_true", help="ours inside threads()")
    p.add_argument("--one-thread", action="store_true", help="ours inside threads(1)")
    p.add_argument("--worker", choices=["tinygrad", "torch"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads_block and args.one_thread:
        p.error("--threads-block and --one-thread exclude each other")
    args.mode = "one-thread" if args.one_thread else "plain"
    args.mode = "threads-block" if args.threads_block else args.mode
    return args


def main() -> None:
    args = parse()
    if args.worker:
        print(json.dumps((run_tinygrad if args.worker == "tinygrad" else run_torch)(args)))
        return
    if args.full:
        return full_run(args)
    try:
        import torch

        has_torch = not args.no_torch
    except ImportError:
        has_torch = False
    _, (xt, _), what = load(args.data)
    print(f"{args.model}; data: {what}; batch {BATCH}; float32; {args.steps} steps after "
          f"{args.warmup}")  # fmt: skip
    print(f"tinygrad_cnn: {MODES[args.mode]}")
    print(f"NumPy {np.__version__}, BLAS: {describe(blas())}")
    if has_torch:
        print(f"PyTorch {torch.__version__} (threads set to NumPy's BLAS threads)")
        err = check_copy(args.model, args.seed, xt[:BATCH])
        print(f"weights copied: eval logits on {BATCH} test images differ by <= {err:.1e} x max")
    names = ["tinygrad", "torch"] if has_torch else ["tinygrad"]
    results: dict[str, list[dict]] = {n: [] for n in names}
    for i in range(args.procs):
        for name in names if i % 2 == 0 else names[::-1]:
            r = spawn(name, args, seed=args.seed + i)
            results[name].append(r)
            s = r["step"]
            print(
                f"  process {i + 1} {name:9s} median {s['median']:6.2f} ms  min {s['min']:6.2f} ms"
                f"  eval {r['eval_img_s']:8.0f} img/s  peak RSS {r['rss_mb']:5.0f} MB",
                flush=True,
            )
    print("\nover processes (median of per-process medians; min of per-process minima):")
    summary = {}
    for name in names:
        rs = results[name]
        med = float(np.median([r["step"]["median"] for r in rs]))
        best = float(min(r["step"]["min"] for r in rs))
        ev = float(np.median([r["eval_img_s"] for r in rs]))
        rss = max(r["rss_mb"] for r in rs)
        summary[name] = (med, best, ev, rss)
        print(f"  {name:9s} step median {med:6.2f} ms  min {best:6.2f} ms   "
              f"eval {ev:8.0f} img/s   peak RSS {rss:4.0f} MB")  # fmt: skip
    if has_torch:
        (m1, b1, e1, r1), (m2, b2, e2, r2) = summary["tinygrad"], summary["torch"]
        print(
            f"  ratio tinygrad_cnn / PyTorch: step median/median {m1 / m2:.2f}, min/min "
            f"{b1 / b2:.2f}; eval throughput {e1 / e2:.2f}x PyTorch's; peak RSS {r1 / r2:.2f}x"
        )


if __name__ == "__main__":
    main()
