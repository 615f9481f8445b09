"""Training speed of SimpleConvNet: tinygrad_cnn against PyTorch eager, interleaved.

One training step = batch gather + forward + backward + Adam update (book config: conv 30x5x5,
hidden 100, batch 100, lr 1e-3, weight std 0.01, float32). Each measurement runs in its own
process; tinygrad_cnn and PyTorch processes alternate (ABAB..., then BABA...), so both see the
same machine. Prints per-process min and median ms/step, the ratios, evaluation throughput on
10,000 test images (no grad), the peak RSS of each training process and the BLAS in use.

    python benchmarks/train_speed.py                  # 3 process pairs x 200 steps
    python benchmarks/train_speed.py --procs 5 --steps 300
    python benchmarks/train_speed.py --full           # the book's 20-epoch run (Trainer)
    python benchmarks/train_speed.py --full --torch   # the same recipe in PyTorch

Data: full MNIST from ``<repo>/../shared/data/mnist`` (or ``--data DIR``) when present,
else the bundled mini set. PyTorch (``pip install torch``) is optional: without it only
tinygrad_cnn is timed. Figures, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mnist"
BATCH, LR, STD = 100, 1e-3, 0.01


# ----------------------------------------------------------------------------- environment
def blas() -> dict:
    """NumPy's BLAS as threadpoolctl sees it (library, version, kernel, threads)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {"internal_api": "unknown (pip install threadpoolctl)", "num_threads": 1}
    info = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
    return info[0] if info else {"internal_api": "none found", "num_threads": 1}


def peak_rss_mb() -> float:
    """Peak resident set size of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


# ----------------------------------------------------------------------------- workers
def run_tinygrad(args: argparse.Namespace) -> dict:
    from tinygrad_cnn.data import BatchIterator
    from tinygrad_cnn.nn import SimpleConvNet
    from tinygrad_cnn.optim import Adam
    from tinygrad_cnn.parallel import threads
    from tinygrad_cnn.train import evaluate_accuracy

    (x, t), (xt, tt), _ = load(args.data)
    net = SimpleConvNet(weight_init_std=STD, seed=args.seed)
    opt = Adam(net.parameters(), lr=LR)
    batches = iter(BatchIterator(x, t, batch_size=BATCH, seed=args.seed))

    def step() -> None:
        nonlocal batches
        try:
            xb, tb = next(batches)
        except StopIteration:
            batches = iter(BatchIterator(x, t, batch_size=BATCH, seed=args.seed))
            xb, tb = next(batches)
        opt.zero_grad()
        loss = net.loss(xb, tb)
        loss.backward()
        opt.step()

    xt, tt = test_set(xt, tt)
    evals = []
    with threads(1 if args.one_thread else None):  # the ops split work across BLAS's threads
        times = timed(step, args.warmup, args.steps)
        for _ in range(3):
            start = time.perf_counter()
            evaluate_accuracy(net, xt, tt, batch_size=args.eval_batch)
            evals.append(len(xt) / (time.perf_counter() - start))
    return {"step": stats(times), "eval_img_s": max(evals), "rss_mb": peak_rss_mb()}


def torch_net(seed: int):
    """The same network in PyTorch, starting from SimpleConvNet(seed)'s weights."""
    import torch

    from tinygrad_cnn.nn import SimpleConvNet

    torch.set_num_threads(int(blas()["num_threads"]))
    ref = SimpleConvNet(weight_init_std=STD, seed=seed)
    nn = torch.nn
    net = nn.Sequential(
        nn.Conv2d(1, 30, 5), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
        nn.Linear(4320, 100), nn.ReLU(), nn.Linear(100, 10),
    )  # fmt: skip
    with torch.no_grad():
        for layer, mine in zip(
            (net[0], net[4], net[6]), (ref.conv1, ref.fc1, ref.fc2), strict=True
        ):
            w = mine.weight.data if layer is net[0] else mine.weight.data.T  # ours: (IN, OUT)
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            layer.bias.copy_(torch.from_numpy(mine.bias.data))
    return net, torch.optim.Adam(net.parameters(), lr=LR)


def torch_batches(n: int, seed: int):
    """Endless batch indices, the same order as tinygrad_cnn's BatchIterator(seed=seed)."""
    import torch

    from tinygrad_cnn.data import BatchIterator

    it = BatchIterator(np.arange(n), batch_size=BATCH, seed=seed)
    while True:
        for (idx,) in it:
            yield torch.from_numpy(idx)


def torch_step(net, opt, X, T, idx) -> None:
    import torch

    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(net(X[idx]), T[idx])
    loss.backward()
    opt.step()


def torch_accuracy(net, x: np.ndarray, t: np.ndarray, batch: int = 500) -> float:
    import torch

    X, T = torch.from_numpy(x), torch.from_numpy(t)
    correct = 0
    with torch.no_grad():
        for i in range(0, len(X), batch):
            correct += int((net(X[i : i + batch]).argmax(1) == T[i : i + batch]).sum())
    return correct / len(X)


def run_torch(args: argparse.Namespace) -> dict:
    import torch

    (x, t), (xt, tt), _ = load(args.data)
    net, opt = torch_net(args.seed)
    X, T = torch.from_numpy(x), torch.from_numpy(t)
    batches = torch_batches(len(x), args.seed)
    times = timed(lambda: torch_step(net, opt, X, T, next(batches)), args.warmup, args.steps)
    xt, tt = test_set(xt, tt)
    evals = []
    for _ in range(3):
        start = time.perf_counter()
        torch_accuracy(net, xt, tt, args.eval_batch)
        evals.append(len(xt) / (time.perf_counter() - start))
    return {"step": stats(times), "eval_img_s": max(evals), "rss_mb": peak_rss_mb()}


def timed(step, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


# ----------------------------------------------------------------------------- the full run
def full_run(args: argparse.Namespace) -> None:
    from tinygrad_cnn.nn import SimpleConvNet
    from tinygrad_cnn.train import Trainer

    start = time.perf_counter()
    (x, t), (xt, tt), what = load(args.data)
    loaded = time.perf_counter() - start
    print(f"data: {what} ({len(x)} train, {len(xt)} test), loaded in {loaded:.1f} s")
    print(f"BLAS: {describe(blas())}")
    net = SimpleConvNet(weight_init_std=STD, seed=args.seed)
    trainer = Trainer(
        net, x, t, xt, tt, epochs=args.epochs, mini_batch_size=BATCH, optimizer="Adam",
        optimizer_param={"lr": LR}, verbose=True, progress=False, seed=args.seed,
    )  # fmt: skip
    start = time.perf_counter()
    hist = trainer.train()
    wall = time.perf_counter() - start
    print(
        f"\n{args.epochs} epochs (training + per-epoch evaluation on all train and test "
        f"images): {wall:.1f} s = {wall / 60:.2f} min"
    )
    print("test accuracy per epoch: " + " ".join(f"{a:.4f}" for a in hist["test_acc"]))
    print(f"final test accuracy: {hist['test_acc'][-1]:.4f}")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


def full_run_torch(args: argparse.Namespace) -> None:
    """The same recipe in PyTorch eager (same init, batch order, evaluation), for comparison."""
    import torch

    (x, t), (xt, tt), what = load(args.data)
    print(f"PyTorch {torch.__version__}; data: {what}")
    net, opt = torch_net(args.seed)
    X, T = torch.from_numpy(x), torch.from_numpy(t)
    batches, per_epoch, accs = torch_batches(len(x), args.seed), -(-len(x) // BATCH), []
    start = time.perf_counter()
    for epoch in range(args.epochs):
        net.train()
        for _ in range(per_epoch):
            torch_step(net, opt, X, T, next(batches))
        net.eval()
        train_acc, test_acc = torch_accuracy(net, x, t), torch_accuracy(net, xt, tt)
        accs.append(test_acc)
        print(
            f"epoch {epoch + 1:>2}/{args.epochs}  train acc {train_acc:.4f}  "
            f"test acc {test_acc:.4f}",
            flush=True,
        )
    wall = time.perf_counter() - start
    print(f"\n{args.epochs} epochs (PyTorch, same evaluation): {wall:.1f} s = {wall / 60:.2f} min")
    print("test accuracy per epoch: " + " ".join(f"{a:.4f}" for a in accs))
    print(f"final test accuracy: {accs[-1]:.4f}")


# ----------------------------------------------------------------------------- driver
def describe(info: dict) -> str:
    return (
        f"{info.get('internal_api')} {info.get('version', '')}, kernel "
        f"{info.get('architecture', '?')}, {info.get('num_threads')} threads "
        f"(OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')})"
    )


def worker(args: argparse.Namespace) -> None:
    result = (run_tinygrad if args.worker == "tinygrad" else run_torch)(args)
    print(json.dumps(result))


def spawn(name: str, args: argparse.Namespace, seed: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--seed", str(seed)]
    for opt in ("steps", "warmup", "data", "eval_batch"):
        cmd += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    cmd += ["--one-thread"] if args.one_thread else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", type=int, default=3, help="processes per framework (>= 3)")
    p.add_argument("--steps", type=int, default=200, help="timed steps per process")
    p.add_argument("--warmup", type=int, default=30, help="untimed steps first")
    p.add_argument("--eval-batch", type=int, default=500, help="batch size of evaluation")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="MNIST folder, or 'mini'")
    p.add_argument("--full", action="store_true", help="run the book's 20-epoch recipe")
    p.add_argument("--epochs", type=int, default=20, help="epochs of --full")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-torch", action="store_true", help="time tinygrad_cnn only")
    p.add_argument(
        "--one-thread", action="store_true",
        help="tinygrad_cnn without parallel.threads() (ops as single NumPy calls, BLAS threaded)",
    )  # fmt: skip
    p.add_argument("--torch", action="store_true", help="with --full: run it in PyTorch")
    p.add_argument("--worker", choices=["tinygrad", "torch"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.full:
        return full_run_torch(args) if args.torch else full_run(args)

    try:
        import torch

        has_torch = not args.no_torch
    except ImportError:
        has_torch = False
    import numpy

    _, (xt, _), what = load(args.data)
    print(f"data: {what}; batch {BATCH}; float32; {args.steps} steps after {args.warmup}")
    print(f"NumPy {numpy.__version__}, BLAS: {describe(blas())}")
    if has_torch:
        print(f"PyTorch {torch.__version__} (threads set to NumPy's BLAS threads)")
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
        summary[name] = (med, best, ev)
        print(
            f"  {name:9s} step median {med:6.2f} ms  min {best:6.2f} ms   "
            f"eval {ev:8.0f} img/s   peak RSS {rss:4.0f} MB"
        )
    if has_torch:
        (m1, b1, e1), (m2, b2, e2) = summary["tinygrad"], summary["torch"]
        print(
            f"  ratio tinygrad_cnn / PyTorch: median/median {m1 / m2:.2f}, min/min {b1 / b2:.2f}"
            f"; eval throughput {e1 / e2:.2f}x PyTorch's"
        )


if __name__ == "__main__":
    main()
